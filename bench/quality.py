#!/usr/bin/env python3
"""Quality per bit: QStream's QSF types vs llama.cpp's quant types on the same F32 source.

1. Writes an F32 GGUF from the source GGUF (llama_model_quantize, ftype ALL_F32), then
   llama.cpp's Q8_0, Q4_0, Q4_1, Q4_K_M, Q3_K_M, Q2_K from that F32 file.
2. Converts the same F32 GGUF with `qstream convert` to 8bit, 4bit (block 32/64/128),
   4bit_sym, 3bit, 2bit, 2bit_outlier (0.5% and 1%) and the q4_m/q3_m/q2_m presets, each
   without and with calibration (`--imatrix`, statistics collected once with
   `--calibrate --calib-chunks 16` on a calibration text that is NOT the evaluation text),
   and a few of them with GPTQ error feedback (`--gptq --hessian`, same calibration run).
3. Measures perplexity of every file by llama.cpp's method (llama.cpp files through
   bench/perplexity_llamacpp.py, QSF files through `qstream perplexity`), prints a table
   (type, file MB, whole-file bits/weight = bytes·8/n_params, ppl) and plots size vs ppl.

Results are cached in WORK/results.json (delete an entry to re-measure it).

usage: python3 bench/quality.py [--src GGUF] [--work DIR] [--chunks N] [--only SUBSTR,...]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_PARAMS = 134_515_008  # SmolLM2-135M (qstream convert reports it)
EVAL = "/usr/share/common-licenses/GPL-3"
# Calibration text: other licenses, disjoint from the evaluation text.
CALIB = ["Apache-2.0", "MPL-2.0", "GFDL-1.3", "Artistic", "CC0-1.0"]

LLAMA_TYPES = ["Q8_0", "Q4_1", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]
# name -> extra `qstream convert` args; each is measured without and with the imatrix
QSF_TYPES = {
    "8bit": ["--quant", "8bit"],
    "4bit B32": ["--quant", "4bit", "--block-size", "32"],
    "4bit B64": ["--quant", "4bit", "--block-size", "64"],
    "4bit_sym": ["--quant", "4bit_sym"],
    "3bit": ["--quant", "3bit"],
    "2bit": ["--quant", "2bit"],
    "2bit_outlier 0.5%": ["--quant", "2bit_outlier", "--outlier-frac", "0.005"],
    "2bit_outlier 0.5% per-tensor": ["--quant", "2bit_outlier", "--outlier-frac", "0.005", "--outlier-alloc", "tensor"],
    "2bit_outlier 1%": ["--quant", "2bit_outlier", "--outlier-frac", "0.01"],
    "4bit B64+e8": ["--quant", "4bit+e8", "--block-size", "64"],
    "4bit_sym+e8": ["--quant", "4bit_sym+e8"],
    "3bit+e8": ["--quant", "3bit+e8"],
    "2bit+e8": ["--quant", "2bit+e8"],
    "2bit_outlier 0.5%+e8": ["--quant", "2bit_outlier+e8", "--outlier-frac", "0.005"],
    "2bit_outlier 0.5%+e8 per-tensor": ["--quant", "2bit_outlier+e8", "--outlier-frac", "0.005", "--outlier-alloc",
                                        "tensor"],
    "2bit_outlier 1%+e8": ["--quant", "2bit_outlier+e8", "--outlier-frac", "0.01"],
    "q4_m": ["--quant", "q4_m"],
    "q3_m": ["--quant", "q3_m"],
    "q2_m": ["--quant", "q2_m"],
}
# GPTQ error feedback (`--gptq`): run with the imatrix and the Hessian file only
GPTQ_TYPES = {
    "q4_m": ["--quant", "q4_m"],
    "q3_m": ["--quant", "q3_m"],
    "q2_m": ["--quant", "q2_m"],
    "4bit_sym+e8": ["--quant", "4bit_sym+e8"],
    "3bit+e8": ["--quant", "3bit+e8"],
    "2bit+e8": ["--quant", "2bit+e8"],
    "2bit_outlier 0.5%+e8": ["--quant", "2bit_outlier+e8", "--outlier-frac", "0.005"],
    "2bit_outlier 1%+e8": ["--quant", "2bit_outlier+e8", "--outlier-frac", "0.01"],
}
# `--extra`: rows of earlier experiments (docs/quality.md, history sections)
EXTRA_TYPES = {
    "4bit B128": ["--quant", "4bit", "--block-size", "128"],
    "2bit_outlier 2%+e8": ["--quant", "2bit_outlier+e8", "--outlier-frac", "0.02"],
    # incoherence rotation (randomized Hadamard on the input dimension, `--rotate`)
    "2bit rot": ["--quant", "2bit", "--rotate"],
    "4bit B64+e8 rot": ["--quant", "4bit+e8", "--block-size", "64", "--rotate"],
    "3bit+e8 rot": ["--quant", "3bit+e8", "--rotate"],
    "3bit+e8 rot16": ["--quant", "3bit+e8", "--rotate", "16"],
    "2bit+e8 rot": ["--quant", "2bit+e8", "--rotate"],
    # the presets before 2026-11-30 (3/2-bit on ffn_up, q4 B64 attention)
    "q3_m (old)": ["--quant", "q3_m", "--tensor-type", "ffn_up=3bit:32", "--tensor-type", "attn_q=4bit:64", "--tensor-type", "attn_k=4bit:64", "--tensor-type", "attn_output=4bit:64"],
    "q2_m (old)": ["--quant", "q2_m", "--tensor-type", "ffn_gate=3bit:32", "--tensor-type", "ffn_up=2bit_outlier:32",
                   "--tensor-type", "attn_q=4bit:64", "--tensor-type", "attn_k=4bit:64", "--tensor-type", "attn_output=4bit:64"],
    # q2_m retune candidate (before 2026-11-30): the 2-bit tensor on ffn_down (as llama.cpp's Q2_K)
    "q2_m down2 gate/up q4 B64": ["--quant", "q2_m", "--tensor-type", "ffn_gate=4bit:64", "--tensor-type",
                                  "ffn_up=4bit:64", "--tensor-type", "ffn_down=2bit_outlier:32", "--tensor-type", "attn_q=4bit:64", "--tensor-type", "attn_k=4bit:64", "--tensor-type", "attn_output=4bit:64"],
}
EXTRA_GPTQ_TYPES = {
    "q2_m (old)": EXTRA_TYPES["q2_m (old)"],
    "q2_m down2": ["--quant", "q2_m", "--tensor-type", "ffn_gate=3bit:32", "--tensor-type", "ffn_up=3bit:32",
                   "--tensor-type", "ffn_down=2bit_outlier:32", "--tensor-type", "attn_q=4bit:64", "--tensor-type", "attn_k=4bit:64", "--tensor-type", "attn_output=4bit:64"],
    "q2_m down2 gate/up q4 B64": EXTRA_TYPES["q2_m down2 gate/up q4 B64"],
}
# (llama.cpp type, QSF rows that may be paired with it: the targets)
PAIRINGS = [
    ("Q4_0", ["4bit_sym", "4bit_sym+e8"]),
    ("Q4_K_M", ["4bit B64", "4bit B64+e8", "q4_m"]),
    ("Q3_K_M", ["3bit", "3bit+e8", "q3_m"]),
    ("Q2_K", ["2bit_outlier 0.5%", "2bit_outlier 1%", "2bit_outlier 0.5%+e8", "2bit_outlier 1%+e8", "q2_m"]),
]
BEGIN, END = "<!-- quality.py: begin -->", "<!-- quality.py: end -->"


def run(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def llama_quantize(src, dst, ftype, threads):
    import ctypes
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_" + ftype)
    p.allow_requantize = True
    p.nthread = threads
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) != 0:
        raise RuntimeError(f"llama_model_quantize {ftype} failed")


def parse_ppl(out):
    m = re.search(r"perplexity: ([0-9.]+|NaN|nan|inf)", out)
    if not m:
        raise RuntimeError("no perplexity in output:\n" + out)
    return float(m.group(1))  # NaN is recorded (a broken file must show up in the table)


def tables(rows, key_sfx, a):
    """The generated part of docs/quality.md: every row, the issue's pairings, the outlier share."""
    by = {k[:-len(key_sfx)]: v for k, v in rows}
    mb = lambda v: f"{v['bytes'] / 1e6:.1f}"  # noqa: E731
    bpw = lambda v: f"{v['bytes'] * 8 / N_PARAMS:.2f}"  # noqa: E731
    chunks = a.chunks or "all"
    out = [f"Generated by `python3 bench/quality.py{' --chunks ' + str(a.chunks) if a.chunks else ''}` "
           f"({time.strftime('%Y-%m-%d')}; GPL-3, ctx 256, {chunks} chunks; QStream with "
           f"`--act-bits {a.act_bits}`; convert s = wall time of `qstream convert`, {a.threads} threads).", "",
           "| file | MB | bits/weight | perplexity | convert s |", "|---|---|---|---|---|"]
    for name, v in by.items():
        out.append(f"| {name} | {mb(v)} | {bpw(v)} | {v['ppl']:.2f} | {v.get('convert_s', '')} |")
    out += ["", "**Pairings** (the issue's targets): llama.cpp's type against the best QSF file of each family "
            "at equal or smaller size (Δ = perplexity change relative to llama.cpp's).", "",
            "| llama.cpp | MB | ppl | QSF family | best QSF file ≤ its size | MB | ppl | Δ |", "|---|---|---|---|---|---|---|---|"]
    for lt, cands in PAIRINGS:
        lv = by.get("llama.cpp " + lt)
        if not lv:
            continue
        for fam in ["", " +imatrix", " +imatrix +gptq"]:
            fit = [(by[n]["ppl"], n) for c in cands for n in ["qstream " + c + fam]
                   if n in by and by[n]["bytes"] <= lv["bytes"]]
            if not fit:
                continue
            ppl, n = min(fit)
            out.append(f"| {lt} | {mb(lv)} | {lv['ppl']:.2f} | {fam.strip() or 'uncalibrated'} | {n[8:]} | "
                       f"{mb(by[n])} | {ppl:.2f} | {100 * (ppl / lv['ppl'] - 1):+.1f}% |")
    f32 = by.get("llama.cpp F32")
    if f32:
        out += ["", f"**2bit_outlier's increase over F32 ({f32['ppl']:.2f}) as a share of plain 2bit's** "
                "(target ≤ 50%):", "", "| 2bit_outlier file | ppl | plain 2bit file | ppl | share |", "|---|---|---|---|---|"]
        for fam in ["", " +imatrix", " +imatrix +gptq"]:
            for o, base in [("2bit_outlier 0.5%", "2bit"), ("2bit_outlier 0.5% per-tensor", "2bit"),
                            ("2bit_outlier 1%", "2bit"), ("2bit_outlier 0.5%+e8", "2bit+e8"),
                            ("2bit_outlier 0.5%+e8 per-tensor", "2bit+e8"), ("2bit_outlier 1%+e8", "2bit+e8")]:
                ov, bv = by.get("qstream " + o + fam), by.get("qstream " + base + fam)
                if ov and bv:
                    share = (ov["ppl"] - f32["ppl"]) / (bv["ppl"] - f32["ppl"])
                    out.append(f"| {o}{fam} | {ov['ppl']:.2f} | {base}{fam} | {bv['ppl']:.2f} | {100 * share:.0f}% |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=os.path.expanduser("~/.cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--work", default="/tmp/qstream-quality")
    ap.add_argument("--qstream", default=os.path.join(ROOT, "target/release/qstream"))
    ap.add_argument("--chunks", type=int, default=0, help="perplexity chunks (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--act-bits", default="8",
                    help="QStream activation precision for every perplexity (default 8: llama.cpp's own "
                         "activation scheme, so both families' weights are compared under the same "
                         "activation rounding; docs/quality.md was measured so)")
    ap.add_argument("--only", default="", help="comma-separated substrings of the names to run")
    ap.add_argument("--no-calib", action="store_true", help="skip the calibrated variants")
    ap.add_argument("--extra", action="store_true", help="also the rows of earlier experiments (EXTRA_TYPES)")
    ap.add_argument("--plot", default=os.path.join(ROOT, "docs/quality.png"), help="PNG to write ('' = none)")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs/quality.md"),
                    help=f"markdown file whose part between {BEGIN} and {END} is replaced by the tables "
                         "('' = print only)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    res_path = os.path.join(a.work, "results.json")
    results = json.load(open(res_path)) if os.path.exists(res_path) else {}
    only = [s for s in a.only.split(",") if s]
    want = lambda name: not only or any(s in name for s in only)  # noqa: E731

    def save():
        with open(res_path, "w") as f:
            json.dump(results, f, indent=1)

    key_sfx = f" @{a.chunks or 'all'}"
    f32 = os.path.join(a.work, "f32.gguf")
    try:
        import llama_cpp  # noqa: F401

        have_llama = True
    except ImportError:
        have_llama = False
    if not os.path.exists(f32) and not have_llama:
        # Without llama-cpp-python: QSF files straight from the source GGUF (`qstream convert`
        # dequantizes it to the same f32 values the F32 GGUF holds); llama.cpp rows come from
        # the cache only.
        print("llama_cpp not importable: converting QSF from --src, llama.cpp rows from the cache",
              file=sys.stderr)
        f32 = a.src
    elif not os.path.exists(f32):
        llama_quantize(a.src, f32, "ALL_F32", a.threads)

    # llama.cpp family
    for t in ["F32"] + LLAMA_TYPES if have_llama else []:
        name = "llama.cpp " + t
        if not want(name) or name + key_sfx in results:
            continue
        path = f32 if t == "F32" else os.path.join(a.work, t + ".gguf")
        if not os.path.exists(path):
            llama_quantize(f32, path, "MOSTLY_" + t, a.threads)
        cmd = [sys.executable, os.path.join(ROOT, "bench/perplexity_llamacpp.py"), path, "-f", EVAL, "-c", "256",
               "-t", str(a.threads)]
        if a.chunks:
            cmd += ["--chunks", str(a.chunks)]
        ppl = parse_ppl(run(cmd).stdout)
        results[name + key_sfx] = {"family": "llama.cpp", "type": t, "bytes": os.path.getsize(path), "ppl": ppl}
        save()

    # qstream family
    imatrix = os.path.join(a.work, "calib.imatrix")
    hessian = os.path.join(a.work, "calib.hessian")
    qsf_types = dict(QSF_TYPES, **EXTRA_TYPES) if a.extra else QSF_TYPES
    gptq_types = dict(GPTQ_TYPES, **EXTRA_GPTQ_TYPES) if a.extra else GPTQ_TYPES
    variants = [("", [], qsf_types)] if a.no_calib else [
        ("", [], qsf_types),
        (" +imatrix", ["--imatrix", imatrix], qsf_types),
        (" +imatrix +gptq", ["--imatrix", imatrix, "--gptq", "--hessian", hessian], gptq_types),
    ]
    if a.extra and not a.no_calib:
        variants.append((" +imatrix +gptq act-order",
                         ["--imatrix", imatrix, "--gptq", "--gptq-act-order", "--hessian", hessian], gptq_types))
    for sfx, extra, types in variants:
        for t, args in types.items():
            name = "qstream " + t + sfx
            if not want(name) or name + key_sfx in results:
                continue
            gptq = "--gptq" in extra
            if extra and (not os.path.exists(imatrix) or (gptq and not os.path.exists(hessian))):
                # one calibration run (16 chunks of 256 tokens) writes both files
                calib = os.path.join(a.work, "calib.txt")
                with open(calib, "w") as f:
                    for c in CALIB:
                        f.write(open("/usr/share/common-licenses/" + c).read())
                run([a.qstream, "convert", f32, "-o", os.path.join(a.work, "calib.qsf"), "--quant", "8bit",
                     "--quiet", "--threads", str(a.threads), "--calibrate", calib, "--calib-chunks", "16",
                     "--imatrix", imatrix] + (["--gptq", "--hessian", hessian] if gptq else []))
            out = os.path.join(a.work, re.sub(r"[^a-z0-9]+", "_", (t + sfx).lower()) + ".qsf")
            t0 = time.perf_counter()
            run([a.qstream, "convert", f32, "-o", out, "--quiet", "--threads", str(a.threads)] + args + extra)
            secs = time.perf_counter() - t0
            cmd = [a.qstream, "perplexity", out, "-f", EVAL, "-c", "256", "--threads", str(a.threads),
                   "--act-bits", str(a.act_bits)]
            if a.chunks:
                cmd += ["--chunks", str(a.chunks)]
            ppl = parse_ppl(run(cmd).stdout)
            results[name + key_sfx] = {"family": "qstream" + sfx, "type": t, "bytes": os.path.getsize(out),
                                       "ppl": ppl, "convert_s": round(secs, 2)}
            os.remove(out)
            save()

    rows = [(k, v) for k, v in results.items() if k.endswith(key_sfx)]
    rows.sort(key=lambda kv: (kv[1]["family"], kv[1]["bytes"]))
    md = tables(rows, key_sfx, a)
    print(md)
    if a.doc:
        doc = open(a.doc).read()
        if BEGIN not in doc or END not in doc:
            raise SystemExit(f"{a.doc} has no {BEGIN} ... {END} section")
        head, rest = doc.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        with open(a.doc, "w") as f:
            f.write(head + BEGIN + "\n" + md + END + tail)
        print("updated:", a.doc, file=sys.stderr)

    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 6))
        f32 = [v["ppl"] for _, v in rows if v["type"] == "F32"]
        if f32:
            ax.axhline(f32[0], color="gray", linestyle="--", linewidth=0.8, label=f"F32 ({f32[0]:.2f})")
        # the per-tensor allocation rows are a comparison of one lever, not a file type to pick
        rows = [(k, v) for k, v in rows if v["type"] != "F32" and "per-tensor" not in v["type"]]
        fams = sorted({v["family"] for _, v in rows})
        for fam, marker in zip(fams, "osD^v"):
            pts = sorted((v["bytes"] / 1e6, v["ppl"], v["type"]) for _, v in rows if v["family"] == fam)
            pts = [p for p in pts if p[1] < 120]  # uncalibrated 2-bit files (ppl in the thousands) are off-scale
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, linestyle="", label=fam)
            for x, y, t in pts:
                ax.annotate(t, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel(f"perplexity (GPL-3, ctx 256, {a.chunks or 'all'} chunks)")
        ax.set_yscale("log")
        ax.set_title("SmolLM2-135M: size vs perplexity (lower-left is better; ppl > 120 not shown)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        print("plot:", a.plot, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""QStream vs llama.cpp (through llama-cpp-python) on this machine, in one run.

Builds nothing: needs `target/release/qstream` (cargo build --release -p qstream-cli) and
`pip install llama-cpp-python`.

Throughput (pp = prompt processing, tg = token generation), for every (gguf, qsf) pair and
thread count, repetitions alternate llama.cpp, QStream, llama.cpp, QStream, ... so both see the
same machine state:

* llama.cpp: one `Llama` object per (model, threads), driven through the low-level C API
  (`llama_decode` + `llama_batch_get_one`, logits read with `llama_get_logits_ith`, greedy argmax
  in numpy), not `Llama.eval`/`__call__`, so no Python sampling/bookkeeping is timed.
  pp: the KV cache is cleared, then one `llama_decode` of the P-token prompt is timed.
  tg: cache cleared, prompt[0] decoded (untimed), then N single-token decodes are timed, each
  token being the argmax of the previous logits. This is exactly what `qstream bench` does.
* QStream: `qstream bench QSF -p P -n N -t T -r 1 --json --act-bits A` as a subprocess per
  repetition, for each activation precision A in --act-bits (16 = the default, 8 = llama.cpp's
  own Q8_1 activation scheme); its own in-process timers; its model load is not in the figure.
Both use the same prompt tokens (the xorshift sequence `qstream bench` uses).

Time to first token from process start (--ttft): whole processes, alternated A B A B:
`qstream run QSF -p Hello -n 1 --temp 0 -t T` vs `python3 -c <load GGUF with llama_cpp,
tokenize "Hello", decode, greedy-pick one token>`; wall time from fork to exit (os.wait4), so it
includes the Python interpreter start and `import llama_cpp` (~a fixed cost that a native
llama-cli would not pay; reported separately as the `python3 -c "import llama_cpp"` floor).

Prints medians over repetitions and QStream/llama.cpp ratios (> 1 = QStream faster). --json FILE
writes every run.
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_GGUF = os.path.expanduser("~/.cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_QSF = os.path.expanduser("~/.cache/qstream/smollm2-135m-q4_1.qsf")


def bench_prompt(n, n_vocab):
    """The deterministic pseudo-random prompt of `qstream bench` (xorshift64, same seed)."""
    mask = (1 << 64) - 1
    s = 0x9E3779B97F4A7C15
    out = []
    for _ in range(max(n, 1)):
        s ^= (s << 13) & mask
        s ^= s >> 7
        s ^= (s << 17) & mask
        out.append(s % n_vocab)
    return out


class LlamaCppBench:
    """pp/tg timing of one GGUF at one thread count through llama.cpp's C API."""

    PATH = "llama_decode + llama_batch_get_one (C API via ctypes), numpy argmax"

    def __init__(self, gguf, threads, n_prompt, n_gen):
        import llama_cpp
        import numpy as np

        self.lc, self.np = llama_cpp, np
        self.llm = llama_cpp.Llama(
            model_path=gguf,
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=n_prompt + n_gen + 8,
            n_batch=max(n_prompt, 512),  # one llama_decode call takes the whole prompt
            verbose=False,
        )
        self.ctx = self.llm._ctx.ctx
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.n_vocab = self.llm.n_vocab()
        self.n_prompt, self.n_gen = n_prompt, n_gen
        self.prompt = bench_prompt(n_prompt, self.n_vocab)
        self.prompt_arr = (llama_cpp.llama_token * len(self.prompt))(*self.prompt)
        self.one = (llama_cpp.llama_token * 1)()
        # warm-up as qstream bench: 8 prompt tokens, page in the weights, size the buffers
        self._clear()
        self._decode(self.prompt_arr, min(8, len(self.prompt)))
        self._clear()

    def _clear(self):
        self.lc.llama_memory_clear(self.mem, True)

    def _decode(self, arr, n):
        rc = self.lc.llama_decode(self.ctx, self.lc.llama_batch_get_one(arr, n))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _argmax(self):
        p = self.lc.llama_get_logits_ith(self.ctx, -1)
        return int(self.np.ctypeslib.as_array(p, shape=(self.n_vocab,)).argmax())

    def run_once(self):
        pp = tg = None
        if self.n_prompt > 0:
            self._clear()
            t = time.perf_counter()
            self._decode(self.prompt_arr, self.n_prompt)
            pp = self.n_prompt / (time.perf_counter() - t)
        if self.n_gen > 0:
            self._clear()
            self.one[0] = self.prompt[0]
            self._decode(self.one, 1)
            tok = 0
            t = time.perf_counter()
            for _ in range(self.n_gen):
                self.one[0] = tok
                self._decode(self.one, 1)
                tok = self._argmax()
            tg = self.n_gen / (time.perf_counter() - t)
        return pp, tg

    def close(self):
        self.llm.close()


def qstream_once(exe, qsf, threads, n_prompt, n_gen, act_bits=None):
    cmd = [exe, "bench", qsf, "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads), "-r", "1", "--json"]
    if act_bits:
        cmd += ["--act-bits", str(act_bits)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    line = [l for l in r.stdout.splitlines() if l.strip().startswith("{")]
    if not line:
        raise RuntimeError(f"no JSON from {' '.join(cmd)}: {r.stdout[-500:]}")
    d = json.loads(line[-1])
    return (d["pp_tok_s"] if n_prompt > 0 else None), (d["tg_tok_s"] if n_gen > 0 else None)


def time_process(cmd):
    """Wall seconds from fork to exit, user+sys CPU seconds, peak RSS (MiB) of one whole process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[:3]}... exited {p.returncode}: {err[-1000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


LLAMA_TTFT = r"""
import sys, llama_cpp, numpy as np
gguf, t = sys.argv[1], int(sys.argv[2])
llm = llama_cpp.Llama(model_path=gguf, n_threads=t, n_threads_batch=t, n_ctx=64, verbose=False)
toks = llm.tokenize(b"Hello", add_bos=True, special=False)
arr = (llama_cpp.llama_token * len(toks))(*toks)
assert llama_cpp.llama_decode(llm._ctx.ctx, llama_cpp.llama_batch_get_one(arr, len(toks))) == 0
tok = int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),)).argmax())
sys.stdout.write(llm.detokenize([tok]).decode(errors="replace"))
"""


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else float("nan")


def spread(v):
    v = [x for x in v if x is not None]
    return (min(v), max(v)) if v else (float("nan"), float("nan"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", action="append", metavar="GGUF:QSF",
                    help=f"model pair (repeatable); default {DEFAULT_GGUF}:{DEFAULT_QSF}")
    ap.add_argument("-t", "--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-r", "--reps", type=int, default=5, help="repetitions per engine (default 5)")
    ap.add_argument("--qstream", default=os.path.join(ROOT, "target", "release", "qstream"))
    ap.add_argument("--ttft", action="store_true", help="also time first token from process start")
    ap.add_argument("--ttft-runs", type=int, default=7)
    ap.add_argument("--ttft-threads", type=int, default=0, help="threads for --ttft (0 = all cores)")
    ap.add_argument("--bandwidth", type=float, default=0.0,
                    help="measured memory bandwidth in GB/s (bench/stream_triad.sh): prints the decode roofline")
    ap.add_argument("--json", metavar="FILE", help="write all runs as JSON")
    ap.add_argument("--act-bits", default="16",
                    help="QStream activation precisions to run, comma-separated (16 = default, 8 = llama.cpp's "
                         "Q8_1 scheme); each is alternated with the same llama.cpp runs (default 16)")
    a = ap.parse_args()
    acts = [int(x) for x in a.act_bits.split(",") if x.strip()]

    pairs = []
    for p in a.pair or [f"{DEFAULT_GGUF}:{DEFAULT_QSF}"]:
        if ":" not in p:
            ap.error(f"--pair {p!r}: expected GGUF:QSF")
        g, q = p.rsplit(":", 1)
        for f in (g, q):
            if not os.path.isfile(f):
                ap.error(f"{f}: not found")
        pairs.append((g, q))
    if not os.access(a.qstream, os.X_OK):
        ap.error(f"{a.qstream}: not built (cargo build --release -p qstream-cli)")
    threads = [int(x) for x in a.threads.split(",") if x.strip()]
    # Snapshot the binary: the shared target/ may be rebuilt while this runs.
    import hashlib
    import shutil
    import tempfile

    snap_dir = tempfile.mkdtemp(prefix="qstream-bench-")
    snap = os.path.join(snap_dir, "qstream")
    shutil.copy2(a.qstream, snap)
    with open(snap, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    src = a.qstream
    a.qstream = snap

    import llama_cpp

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"llama-cpp-python {llama_cpp.__version__}")
    print(f"llama.cpp path: {LlamaCppBench.PATH}")
    print(f"QStream path: {src} (snapshot sha256 {digest}, repo HEAD {rev or '?'}{' + uncommitted changes' if dirty else ''}) "
          f"bench -r 1 --json (subprocess per repetition)")
    print(f"pp{a.n_prompt} / tg{a.n_gen}, {a.reps} alternating repetitions, medians (min-max)")
    print("load average at start: %.2f %.2f %.2f (other processes compete for the cores when > 0)\n" % os.getloadavg())

    results = {"qstream_sha256": digest, "repo_head": rev, "n_prompt": a.n_prompt, "n_gen": a.n_gen, "reps": a.reps, "throughput": [], "ttft": []}
    rows = []
    for gguf, qsf in pairs:
        bpt = None
        try:
            sys.path.insert(0, HERE)
            from qsf_bytes import decode_bytes

            bpt = decode_bytes(qsf)["decode_bytes_per_token"]
        except Exception as e:  # informative only
            print(f"(bytes/token unavailable: {e})")
        for t in threads:
            lb = LlamaCppBench(gguf, t, a.n_prompt, a.n_gen)
            qstream_once(a.qstream, qsf, t, min(a.n_prompt, 8), min(a.n_gen, 2))  # warm-up (page cache)
            runs = {"llama_pp": [], "llama_tg": []}
            for act in acts:
                runs[f"qstream_pp_{act}"], runs[f"qstream_tg_{act}"] = [], []
            for r in range(a.reps):
                pp, tg = lb.run_once()
                runs["llama_pp"].append(pp)
                runs["llama_tg"].append(tg)
                msg = f"llama.cpp pp {pp or 0:.1f} tg {tg or 0:.1f}"
                for act in acts:
                    pp, tg = qstream_once(a.qstream, qsf, t, a.n_prompt, a.n_gen, act)
                    runs[f"qstream_pp_{act}"].append(pp)
                    runs[f"qstream_tg_{act}"].append(tg)
                    msg += f" | qstream act{act} pp {pp or 0:.1f} tg {tg or 0:.1f}"
                print(f"  [{os.path.basename(qsf)} t={t} rep {r + 1}/{a.reps}] {msg}", file=sys.stderr)
            lb.close()
            for act in acts:
                row = {"gguf": gguf, "qsf": qsf, "threads": t, "act_bits": act, "bytes_per_token": bpt,
                       "runs": {"llama_pp": runs["llama_pp"], "llama_tg": runs["llama_tg"],
                                "qstream_pp": runs[f"qstream_pp_{act}"], "qstream_tg": runs[f"qstream_tg_{act}"]}}
                results["throughput"].append(row)
                rows.append(row)

    print("| model | act bits | threads | test | llama.cpp t/s | QStream t/s | QStream/llama.cpp |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        name = f"{os.path.basename(row['qsf'])} | {row['act_bits']}"
        for test, n in (("pp", a.n_prompt), ("tg", a.n_gen)):
            if n <= 0:
                continue
            l, q = row["runs"][f"llama_{test}"], row["runs"][f"qstream_{test}"]
            lm, qm = med(l), med(q)
            row[f"{test}_median"] = {"llama": lm, "qstream": qm, "ratio": qm / lm}
            print(f"| {name} | {row['threads']} | {test}{n} | {lm:.1f} ({spread(l)[0]:.1f}-{spread(l)[1]:.1f}) "
                  f"| {qm:.1f} ({spread(q)[0]:.1f}-{spread(q)[1]:.1f}) | {qm / lm:.3f} |")

    if a.bandwidth > 0:
        print(f"\ndecode roofline at {a.bandwidth:.1f} GB/s (weight bytes per token / bandwidth):")
        for row in rows:
            if row["bytes_per_token"] and a.n_gen > 0:
                roof = a.bandwidth * 1e9 / row["bytes_per_token"]
                tgm = row["tg_median"]
                row["roofline_tok_s"] = roof
                print(f"  {os.path.basename(row['qsf'])} act{row['act_bits']} t={row['threads']}: "
                      f"{row['bytes_per_token'] / 1e6:.2f} MB/token -> {roof:.1f} tok/s; "
                      f"llama.cpp {tgm['llama'] / roof:.0%}, QStream {tgm['qstream'] / roof:.0%} of it")

    if a.ttft:
        print(f"\ntime to first token from process start (whole processes, {a.ttft_runs} alternating runs, "
              f"wall s median (min-max), threads {a.ttft_threads or 'all'}):")
        print("| model | QStream s | llama_cpp (python) s | python+import floor s | QStream/llama_cpp time |")
        print("|---|---|---|---|---|")
        tt = a.ttft_threads or os.cpu_count()
        for gguf, qsf in pairs:
            qcmd = [a.qstream, "run", qsf, "-p", "Hello", "-n", "1", "--temp", "0", "-t", str(a.ttft_threads)]
            lcmd = [sys.executable, "-c", LLAMA_TTFT, gguf, str(tt)]
            fcmd = [sys.executable, "-c", "import llama_cpp, numpy"]
            for c in (qcmd, lcmd, fcmd):  # warm-up: page cache, .pyc
                time_process(c)
            qs, ls, fs = [], [], []
            for _ in range(a.ttft_runs):
                qs.append(time_process(qcmd))
                ls.append(time_process(lcmd))
                fs.append(time_process(fcmd))
            qw, lw, fw = [x[0] for x in qs], [x[0] for x in ls], [x[0] for x in fs]
            ratios = [q / l for q, l in zip(qw, lw)]
            results["ttft"].append({"gguf": gguf, "qsf": qsf, "qstream": qs, "llama_cpp": ls, "import_floor": fs,
                                    "qstream_cmd": qcmd, "llama_cmd": lcmd[:2] + ["<script>"] + lcmd[3:]})
            print(f"| {os.path.basename(qsf)} | {med(qw):.3f} ({min(qw):.3f}-{max(qw):.3f}) "
                  f"| {med(lw):.3f} ({min(lw):.3f}-{max(lw):.3f}) | {med(fw):.3f} "
                  f"| {med(ratios):.3f} (pairwise median) |")
            print(f"  peak RSS MiB: QStream {med([x[2] for x in qs]):.0f}, llama_cpp python {med([x[2] for x in ls]):.0f}")

    print("\nload average at end: %.2f %.2f %.2f" % os.getloadavg())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    shutil.rmtree(snap_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

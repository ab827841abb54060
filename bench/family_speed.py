#!/usr/bin/env python3
"""Speed of non-Llama families at SmolLM2-135M's size, with random weights.

For each family (default: llama gemma2 phi), takes the tiny fixture's HF folder
(tests/fixtures/tiny/<family>), scales every dimension to SmolLM2-135M's (hidden 576,
30 layers, 9 heads of 64, 3 KV heads — 9 for Phi, which has no GQA — MLP 1536, vocab 49152),
fills the tensors with random weights (numpy, seed 0; nothing is kept), converts the folder
with `qstream convert --quant 4bit`, and runs `qstream bench`. Prints decode and prompt
tok/s, the file size, and decode tok/s × weight bytes (the per-weight-byte speed the
families are compared on: a family may not be slower per byte than the Llama path). Every
family gets a tied LM head (as SmolLM2), so each token reads the whole file.

    python3 bench/family_speed.py [--qstream target/release/qstream] [--threads 2]
        [--families llama gemma2 phi] [--n-gen 64] [--n-prompt 128]
"""

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tiny")

# fixture dimension -> SmolLM2-135M dimension
DIMS = {64: 576, 32: 192, 16: 64, 128: 1536, 512: 49152}
LAYERS = 30


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def write_safetensors(path, tensors):
    """tensors: list of (name, shape); writes f32 random data (norm weights near 1)."""
    rng = np.random.default_rng(0)
    header, offset = {}, 0
    for name, shape in tensors:
        nbytes = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape in tensors:
            is_norm = "norm" in name or "ln_" in name or "layernorm" in name
            if is_norm and name.endswith("weight"):
                # gemma stores w with (1 + w) applied: keep both near 1
                base = 0.0 if "gemma" in path else 1.0
                a = base + 0.05 * rng.standard_normal(shape, dtype=np.float32)
            else:
                a = 0.02 * rng.standard_normal(shape, dtype=np.float32)
            f.write(a.astype("<f4").tobytes())


def scaled_folder(family, out):
    src = os.path.join(FIXTURES, family)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(src):
        if f not in ("model.safetensors", "reference.safetensors", "reference.json"):
            shutil.copy(os.path.join(src, f), out)
    cfg = json.load(open(os.path.join(src, "config.json")))
    mha = cfg.get("num_key_value_heads", cfg.get("num_attention_heads")) == cfg.get(
        "num_attention_heads"
    )
    dims = dict(DIMS)
    if mha:
        dims[64] = 576  # q and k/v are all 9 heads of 64
    for k in ("hidden_size", "n_embd"):
        if k in cfg:
            cfg[k] = 576
    for k in ("num_hidden_layers", "n_layer"):
        if k in cfg:
            cfg[k] = LAYERS
    for k in ("num_attention_heads", "n_head"):
        if k in cfg:
            cfg[k] = 9
    if "num_key_value_heads" in cfg:
        cfg["num_key_value_heads"] = 9 if mha else 3
    if "head_dim" in cfg:
        cfg["head_dim"] = 64
    for k in ("intermediate_size", "n_inner"):
        if k in cfg and cfg[k]:
            cfg[k] = 1536
    cfg["vocab_size"] = 49152
    for k in ("max_position_embeddings", "n_positions"):
        if k in cfg:
            cfg[k] = 2048
    if "query_pre_attn_scalar" in cfg:
        cfg["query_pre_attn_scalar"] = 64
    if cfg.get("sliding_window"):
        cfg["sliding_window"] = 4096  # as wide as the bench's context: same work as full
    if "layer_types" in cfg:
        cfg["layer_types"] = [cfg["layer_types"][i % len(cfg["layer_types"])] for i in range(LAYERS)]
    # tied head everywhere (as SmolLM2): every token reads the whole file, so tok/s × bytes
    # compares the families per weight byte read
    cfg["tie_word_embeddings"] = True
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)

    hdr = read_header(os.path.join(src, "model.safetensors"))
    tensors = []
    layer_re = re.compile(r"^(.*?\b(?:layers|h)\.)(\d+)(\..*)$")
    for name, meta in hdr.items():
        if name == "__metadata__" or name == "lm_head.weight":
            continue
        shape = [dims.get(d, d) for d in meta["shape"]]
        if "c_attn" in name:  # gpt2 fused [in, 3·out]
            shape = [dims.get(d, d) if d != 192 else 1728 for d in meta["shape"]]
        m = layer_re.match(name)
        if m:
            if m.group(2) != "0":
                continue
            for i in range(LAYERS):
                tensors.append((f"{m.group(1)}{i}{m.group(3)}", shape))
        else:
            tensors.append((name, shape))
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qstream", default=os.path.join(ROOT, "target", "release", "qstream"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--families", nargs="+", default=["llama", "gemma2", "phi"])
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--quant", default="4bit")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="qstream-family-speed-") as tmp:
        for fam in a.families:
            folder = os.path.join(tmp, fam)
            scaled_folder(fam, folder)
            qsf = os.path.join(tmp, f"{fam}.qsf")
            subprocess.run(
                [a.qstream, "convert", folder, "-o", qsf, "--quant", a.quant, "--threads", str(a.threads)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            shutil.rmtree(folder)
            out = subprocess.run(
                [a.qstream, "bench", qsf, "-t", str(a.threads), "-p", str(a.n_prompt),
                 "-n", str(a.n_gen), "--json"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            size = os.path.getsize(qsf)
            os.remove(qsf)
            b = json.loads(out)
            rows.append((fam, size, b))
            print(f"{fam}: {size / 1e6:.1f} MB, pp {b['pp_tok_s']:.1f} tok/s, "
                  f"tg {b['tg_tok_s']:.1f} ± {b['tg_sd']:.1f} tok/s", flush=True)
    base = rows[0][1] * rows[0][2]["tg_tok_s"]
    print("\n| family | MB | pp tok/s | tg tok/s | tg tok/s × bytes (rel. to first) |")
    print("|---|---|---|---|---|")
    for fam, size, b in rows:
        rel = size * b["tg_tok_s"] / base
        print(f"| {fam} | {size / 1e6:.1f} | {b['pp_tok_s']:.1f} | {b['tg_tok_s']:.1f} | {rel:.3f} |")


if __name__ == "__main__":
    sys.exit(main())

"""Convert a GGUF file or HuggingFace model folder to QSF, then try the result.

    python examples-py/convert.py [SRC] [DST.qsf] [--quant 4bit] [--compress]

SRC defaults to ~/.cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf, DST to SRC's name with
.qsf. quant: keep, f32, f16, bf16, 8bit, 4bit, 4bit_sym, 3bit, 2bit, *_outlier, mxfp4.
"""

import argparse
import os

import qstream

ap = argparse.ArgumentParser(description="Convert a model to QSF.")
ap.add_argument("src", nargs="?",
                default=os.path.expanduser("~/.cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf"))
ap.add_argument("dst", nargs="?", default=None)
ap.add_argument("--quant", default="4bit")
ap.add_argument("--block-size", type=int, default=32)
ap.add_argument("--compress", action="store_true")
args = ap.parse_args()

dst = args.dst or os.path.splitext(args.src.rstrip("/"))[0] + f"-{args.quant}.qsf"


def progress(done: int, total: int, name: str) -> None:
    if done == total or done % 20 == 0:
        print(f"  [{done}/{total}] {name}")


report = qstream.convert(args.src, dst, quant=args.quant, block_size=args.block_size,
                         compress=args.compress, progress=progress)
print(f"wrote {dst}: {report['file_bytes'] / 1e6:.1f} MB, "
      f"{report['bits_per_weight']:.2f} bits/weight, {report['seconds']:.2f} s, types {report['types']}")

meta = qstream.info(dst)
print(f"{meta['arch']}, {meta['n_layer']} layers, format v{meta['format_version']}, "
      f"compressed={meta['compressed']}")

with qstream.Model(dst) as model:
    ids = model.tokenize("Hello")
    out = model.generate_ids(ids, max_tokens=8, temperature=0)
    print(f"greedy continuation of {ids}: {out} -> {model.detokenize(out)!r}")

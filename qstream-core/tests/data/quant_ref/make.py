#!/usr/bin/env python3
"""Regenerate the ggml reference blocks used by tests/quant_error_budget.rs.

Writes input.f32 (40 blocks of 32 little-endian f32 inputs) and, for each of Q8_0, Q4_0
and Q4_1 (QStream's q8, q4_sym and q4 with block 32):
  <name>.q.bin    the blocks packed by gguf-py's reference quantizer (bit-exact with ggml),
  <name>.deq.f32  gguf-py's dequantization of those blocks.
Run from anywhere: `python3 make.py` (needs numpy and gguf >= 0.10).
"""
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

HERE = os.path.dirname(os.path.abspath(__file__))
N_BLOCKS = 40


def inputs() -> np.ndarray:
    rng = np.random.default_rng(20240601)
    blocks = []
    blocks.append(np.zeros(32))                                   # all zero
    blocks.append(np.full(32, 0.75))                              # constant
    blocks.append(np.arange(32) - 15.5)                           # ramp
    blocks.append(np.arange(32) * 0.5)                            # exact ties for q4_1
    blocks.append(np.linspace(-8, 7, 32))                         # q4_0 grid-ish
    blocks.append(-np.abs(rng.standard_normal(32)))               # negative max
    blocks.append(rng.standard_normal(32) * 1e-6)                 # tiny (subnormal f16 scale)
    blocks.append(rng.standard_normal(32) * 3e4)                  # large
    b = rng.standard_normal(32) * 0.02
    b[7] = 1.5                                                    # one spike
    blocks.append(b)
    while len(blocks) < N_BLOCKS:
        scale = 10 ** rng.uniform(-3, 1)
        blocks.append(rng.standard_normal(32) * scale + rng.uniform(-1, 1) * scale)
    return np.stack(blocks).astype(np.float32)


def main() -> None:
    x = inputs()
    x.astype("<f4").tofile(os.path.join(HERE, "input.f32"))
    for name, qt in (("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1)):
        q = quantize(x, qt)
        deq = dequantize(q, qt).astype(np.float32)
        q.astype(np.uint8).tofile(os.path.join(HERE, f"{name}.q.bin"))
        deq.astype("<f4").tofile(os.path.join(HERE, f"{name}.deq.f32"))
        print(name, q.shape, deq.shape)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Build the GGUF importer's test data with the `gguf` Python package (llama.cpp's own).

Writes, next to this script:
  quant_types.gguf.bin  a small GGUF v3 file ("llama" arch, tiny gpt2 vocabulary) holding tensors of
                        every type the importer dequantizes (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1
                        Q2_K Q3_K Q4_K Q5_K Q6_K MXFP4). Named .gguf.bin because *.gguf is git-ignored.
  quant_refs.bin        gguf.quants.dequantize() of every tensor, little-endian f32, concatenated.
  quant_refs.json       manifest: tensor name, ggml type, GGUF dims, offset/len (in f32s) in quant_refs.bin.
  smollm2_samples.json  if the real SmolLM2 GGUF is present: first 256 dequantized values of 3 tensors.

Types gguf can quantize are quantized from random normals; K-quants (which gguf's Python cannot
quantize) get random block bytes with finite fp16 super-block scales (any such bytes are a valid block).
Run: python3 make_refs.py   (deterministic: fixed seed)
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(1234)


def fp16_bytes(n, lo=1e-3, hi=0.2):
    """n random finite positive fp16 values as bytes (shape (n, 2))."""
    v = rng.uniform(lo, hi, size=n).astype(np.float16)
    return v.view(np.uint8).reshape(n, 2)


def kquant_blocks(qtype, n_blocks):
    block, size = GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    # Put finite fp16 values where each layout keeps its super-block scales.
    if qtype == T.Q2_K:  # scales[16] qs[64] d dmin
        b[:, 80:82] = fp16_bytes(n_blocks)
        b[:, 82:84] = fp16_bytes(n_blocks)
    elif qtype in (T.Q4_K, T.Q5_K):  # d dmin scales[12] ...
        b[:, 0:2] = fp16_bytes(n_blocks)
        b[:, 2:4] = fp16_bytes(n_blocks)
    elif qtype == T.Q3_K:  # hmask[32] qs[64] scales[12] d
        b[:, 108:110] = fp16_bytes(n_blocks)
    elif qtype == T.Q6_K:  # ql[128] qh[64] scales[16] d
        b[:, 208:210] = fp16_bytes(n_blocks)
    return b


def build():
    path = os.path.join(HERE, "quant_types.gguf.bin")
    w = gguf.GGUFWriter(path, "llama")
    # Minimal llama hyper-parameters so GgufModel::open accepts the file.
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(16)
    w.add_uint32("test.nested_marker", 7)
    w.add_array("test.nested", [[1, 2], [3, 4, 5]])
    # Tiny byte-level BPE vocabulary.
    tokens = ["<|endoftext|>", "a", "b", "c", "Ġ", "ab", "Ġa", "abc", "<|im_end|>"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 1, 1, 1, 1, 1, 1, 1, 3])
    w.add_token_merges(["a b", "Ġ a", "ab c"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_chat_template("{{ messages }}")

    manifest = []
    refs = []
    offset = 0

    def add(name, qtype, ne):
        """Tensor `name` of GGUF dims `ne` (ne[0] contiguous) and type `qtype`."""
        nonlocal offset
        shape = tuple(reversed(ne))  # numpy order
        n = int(np.prod(ne))
        if qtype in (T.F32, T.F16, T.BF16):
            x = rng.standard_normal(n).astype(np.float32).reshape(shape)
            if qtype == T.F32:
                data = x
            elif qtype == T.F16:
                data = x.astype(np.float16)
            else:
                data = gguf.quants.quantize(x, T.BF16)
            raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        elif qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
            block, _ = GGML_QUANT_SIZES[qtype]
            raw = kquant_blocks(qtype, n // block).reshape(-1)
        else:
            x = (rng.standard_normal(n) * 0.5).astype(np.float32).reshape(shape)
            raw = gguf.quants.quantize(x, qtype).reshape(-1)
        byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
        raw = raw.reshape(byte_shape)
        if qtype == T.F32:
            w.add_tensor(name, raw.view(np.float32).reshape(shape))
        elif qtype == T.F16:
            w.add_tensor(name, raw.view(np.float16).reshape(shape))
        else:
            w.add_tensor(name, raw, raw_shape=byte_shape, raw_dtype=qtype)
        ref = gguf.quants.dequantize(raw, qtype).astype(np.float32).reshape(-1)
        assert ref.size == n
        manifest.append({"name": name, "type": qtype.name, "ne": list(ne), "offset": offset, "len": n})
        refs.append(ref)
        offset += n

    add("token_embd.weight", T.F16, [64, 9])
    add("blk.0.attn_norm.weight", T.F32, [64])
    add("blk.0.attn_q.weight", T.Q4_1, [64, 64])
    add("blk.0.attn_q.bias", T.F32, [64])
    add("blk.0.attn_k.weight", T.Q4_0, [64, 32])
    add("blk.0.attn_v.weight", T.Q8_0, [64, 32])
    add("blk.0.attn_output.weight", T.BF16, [64, 64])
    add("blk.0.ffn_gate.weight", T.Q5_0, [64, 128])
    add("blk.0.ffn_up.weight", T.Q5_1, [64, 128])
    add("blk.0.ffn_down.weight", T.MXFP4, [128, 64])
    add("blk.0.ffn_norm.weight", T.F32, [64])
    add("output_norm.weight", T.F32, [64])
    add("test.q2_k.weight", T.Q2_K, [512, 3])
    add("test.q3_k.weight", T.Q3_K, [512, 3])
    add("test.q4_k.weight", T.Q4_K, [512, 3])
    add("test.q5_k.weight", T.Q5_K, [256, 5])
    add("test.q6_k.weight", T.Q6_K, [512, 3])
    add("test.exps.weight", T.Q8_0, [32, 3, 2])  # 3-D: 2 experts of 3x32

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    np.concatenate(refs).astype("<f4").tofile(os.path.join(HERE, "quant_refs.bin"))
    with open(os.path.join(HERE, "quant_refs.json"), "w") as f:
        json.dump({"file": "quant_types.gguf.bin", "gguf_version": gguf.__name__, "tensors": manifest}, f, indent=1)
    print(f"wrote {path} ({os.path.getsize(path)} bytes), {offset} reference values")


def smollm2_samples():
    path = os.path.expanduser("~/.cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print("SmolLM2 GGUF absent; skipping its samples", file=sys.stderr)
        return
    r = gguf.GGUFReader(path)
    want = ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"]
    out = []
    for t in r.tensors:
        if t.name in want:
            v = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
            out.append({
                "name": t.name,
                "type": t.tensor_type.name,
                "ne": [int(d) for d in t.shape],
                # hex bit patterns keep the comparison bit-exact
                "first": [f"{int(b):08x}" for b in v[:256].view(np.uint32)],
                "last": [f"{int(b):08x}" for b in v[-64:].view(np.uint32)],
            })
    with open(os.path.join(HERE, "smollm2_samples.json"), "w") as f:
        json.dump(out, f, indent=0)
    print(f"wrote samples of {len(out)} SmolLM2 tensors")


if __name__ == "__main__":
    build()
    smollm2_samples()

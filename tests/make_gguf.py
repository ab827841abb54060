#!/usr/bin/env python3
"""Write a GGUF of every dense tiny fixture, the way llama.cpp's convert_hf_to_gguf.py does.

    python3 tests/make_gguf.py OUT_DIR [NAME ...]

needs `pip install gguf numpy safetensors` (no torch, no transformers). For each fixture
folder tests/fixtures/tiny/<name> it writes OUT_DIR/<name>.gguf with F32 tensors:

- tensor names from gguf-py's own TensorNameMap (the table llama.cpp's converter uses);
- the converter's value changes: llama / mistral / granite q and k rows permuted
  (`LlamaModel.permute`), gemma / gemma2 / gemma3 RMSNorm scales stored as 1 + w, gpt2
  Conv1D weights transposed to [out, in], phi3's fused gate_up_proj kept as `ffn_up`;
- llama3 RoPE scaling as the `rope_freqs` tensor (LlamaModel.generate_extra_tensors),
  phi3 longrope as `rope_factors_long` / `rope_factors_short` + original context length;
- the `{arch}.*` metadata each converter class writes (Phi2Model, Phi3MiniModel, GemmaModel,
  Gemma2Model, Gemma3Model, GPT2Model, StarCoder2Model, Olmo2Model, GraniteModel, ...);
  where llama.cpp does not store a fact and hard-codes it instead, the standard gguf-py key
  is written so the file describes the fixture: `attention.sliding_window` for mistral /
  starcoder2, `attention.sliding_window_pattern` (per-layer bools) for gemma3, and gptj
  (which llama.cpp cannot convert) uses the MODEL_ARCH.GPTJ names and generic keys;
- the tokenizer like `_set_vocab_gpt2`: byte-level BPE (`tokenizer.ggml.model = "gpt2"`),
  tokens in id order, CONTROL type for the special added tokens, merges, bos/eos/pad ids,
  add_bos and the chat template via gguf.SpecialVocab.

Also OUT_DIR/llama_spm.gguf: the llama weights with the SentencePiece vocabulary of
tests/fixtures/gguf/spm_vocab.json (`tokenizer.ggml.model = "llama"`, scores and token types
as `_set_vocab_sentencepiece` writes them; made by tests/fixtures/gguf/make_spm_vocab.py).
"""
import json
import math
import os
import sys

import numpy as np
import gguf
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "fixtures", "tiny")
DENSE = ["llama", "mistral", "qwen2", "qwen3", "phi", "phi3", "gemma", "gemma2",
         "gemma3_text", "gpt2", "gptj", "olmo2", "starcoder2", "granite"]
ARCH = {
    "llama": gguf.MODEL_ARCH.LLAMA, "mistral": gguf.MODEL_ARCH.LLAMA,  # MistralForCausalLM → LlamaModel
    "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3, "phi": gguf.MODEL_ARCH.PHI2,
    "phi3": gguf.MODEL_ARCH.PHI3, "gemma": gguf.MODEL_ARCH.GEMMA, "gemma2": gguf.MODEL_ARCH.GEMMA2,
    "gemma3_text": gguf.MODEL_ARCH.GEMMA3, "gpt2": gguf.MODEL_ARCH.GPT2, "gptj": gguf.MODEL_ARCH.GPTJ,
    "olmo2": gguf.MODEL_ARCH.OLMO2, "starcoder2": gguf.MODEL_ARCH.STARCODER2,
    "granite": gguf.MODEL_ARCH.GRANITE,
}


def permute(w, n_head, n_head_kv):
    """LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def rope_params(c):
    rp = c.get("rope_parameters") or c.get("rope_scaling") or {}
    return rp.get("full_attention", rp)


def write_vocab(w, d, n_vocab):
    """TextModel._set_vocab_gpt2 for the fixtures' byte-level BPE tokenizer.json."""
    tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    rev = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok["added_tokens"]}
    tokens, types = [], []
    for i in range(n_vocab):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif i in rev:
            tokens.append(rev[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    sv = gguf.SpecialVocab(d, load_merges=True, n_vocab=n_vocab)
    sv.add_to_gguf(w)


def write_spm_vocab(w, d):
    """_set_vocab_sentencepiece from a dumped SentencePiece model (pieces, scores, types)."""
    v = json.load(open(os.path.join(HERE, "fixtures", "gguf", "spm_vocab.json"), encoding="utf-8"))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(v["pieces"])
    w.add_token_scores(v["scores"])
    w.add_token_types(v["types"])
    w.add_bos_token_id(v["bos_id"])
    w.add_eos_token_id(v["eos_id"])
    w.add_unk_token_id(v["unk_id"])
    w.add_pad_token_id(v["pad_id"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)


def convert(name, out_path, spm=False):
    d = os.path.join(TINY, name)
    c = json.load(open(os.path.join(d, "config.json")))
    arch = ARCH[name]
    hp = lambda *ks, default=None: next((c[k] for k in ks if c.get(k) is not None), default)
    n_layer = hp("num_hidden_layers", "n_layer")
    n_embd = hp("hidden_size", "n_embd")
    n_head = hp("num_attention_heads", "n_head")
    n_head_kv = hp("num_key_value_heads", default=n_head)
    head_dim = hp("head_dim", default=n_embd // n_head)
    n_ff = hp("intermediate_size", "n_inner", default=4 * n_embd)
    n_ctx = hp("max_position_embeddings", "n_positions", "n_ctx")
    n_vocab = c["vocab_size"]
    rp = rope_params(c)
    theta = rp.get("rope_theta", c.get("rope_theta", 10000.0))

    w = gguf.GGUFWriter(out_path, gguf.MODEL_ARCH_NAMES[arch])
    w.add_block_count(n_layer)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_head_count(n_head)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if name == "gpt2":  # GPT2Model
        w.add_feed_forward_length(4 * n_embd)
        w.add_layer_norm_eps(c["layer_norm_epsilon"])
    elif name == "phi":  # Phi2Model
        rot = rp.get("partial_rotary_factor", c.get("partial_rotary_factor", 1.0))
        w.add_feed_forward_length(4 * n_embd)
        w.add_head_count_kv(n_head)
        w.add_layer_norm_eps(c["layer_norm_eps"])
        w.add_rope_dimension_count(int(rot * n_embd) // n_head)
        w.add_rope_freq_base(theta)
        w.add_add_bos_token(False)
    elif name == "gptj":  # MODEL_ARCH.GPTJ: generic keys
        w.add_feed_forward_length(n_ff)
        w.add_head_count_kv(n_head)
        w.add_layer_norm_eps(c["layer_norm_epsilon"])
        w.add_rope_dimension_count(c["rotary_dim"])
        w.add_rope_freq_base(theta)
    elif name == "phi3":  # Phi3MiniModel
        w.add_rope_scaling_orig_ctx_len(c["original_max_position_embeddings"])
        w.add_feed_forward_length(n_ff)
        w.add_head_count_kv(n_head_kv)
        w.add_layer_norm_rms_eps(c["rms_norm_eps"])
        w.add_rope_dimension_count(int(rp.get("partial_rotary_factor", 1.0) * n_embd) // n_head)
        w.add_rope_freq_base(theta)
        w.add_sliding_window(c.get("sliding_window") or 0)
        scale = n_ctx / c["original_max_position_embeddings"]
        w.add_rope_scaling_attn_factors(
            math.sqrt(1 + math.log(scale) / math.log(c["original_max_position_embeddings"])) if scale > 1 else 1.0)
    else:  # TextModel.set_gguf_parameters and the family's additions
        w.add_feed_forward_length(n_ff)
        w.add_head_count_kv(n_head_kv)
        w.add_rope_freq_base(theta)
        if c.get("rms_norm_eps") is not None:
            w.add_layer_norm_rms_eps(c["rms_norm_eps"])
        if c.get("norm_epsilon") is not None:
            w.add_layer_norm_eps(c["norm_epsilon"])
        if "head_dim" in c:
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        if rp.get("rope_type") == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(rp["factor"])
        if name in ("llama", "mistral", "granite"):  # LlamaModel
            w.add_vocab_size(n_vocab)
            w.add_rope_dimension_count(head_dim)
        if name in ("mistral", "starcoder2") and c.get("sliding_window"):
            w.add_sliding_window(c["sliding_window"])
        if name == "gemma2":  # Gemma2Model
            w.add_attn_logit_softcapping(c["attn_logit_softcapping"])
            w.add_final_logit_softcapping(c["final_logit_softcapping"])
            w.add_sliding_window(c["sliding_window"])
        if name == "gemma3_text":  # Gemma3Model
            rpa = c.get("rope_parameters") or {}
            if (local := rpa.get("sliding_attention", {}).get("rope_theta")) is not None:
                w.add_rope_freq_base_swa(local)
            if c.get("final_logit_softcapping"):
                w.add_final_logit_softcapping(c["final_logit_softcapping"])
            w.add_sliding_window(c["sliding_window"])
            w.add_sliding_window_pattern([t == "sliding_attention" for t in c["layer_types"]])
        if name == "granite":  # GraniteModel
            w.add_attention_scale(c["attention_multiplier"])
            w.add_embedding_scale(c["embedding_multiplier"])
            w.add_residual_scale(c["residual_multiplier"])
            w.add_logit_scale(c["logits_scaling"])

    if spm:
        write_spm_vocab(w, d)
    else:
        write_vocab(w, d, n_vocab)

    tmap = gguf.get_tensor_name_map(arch, n_layer)
    tensors = load_file(os.path.join(d, "model.safetensors"))
    for hf_name, t in tensors.items():
        t = t.astype(np.float32)
        if name == "gpt2" and hf_name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if name in ("llama", "mistral", "granite"):
            if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                t = permute(t, n_head, n_head)
            if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                t = permute(t, n_head, n_head_kv)
        if name in ("gemma", "gemma2", "gemma3_text") and hf_name.endswith("norm.weight"):
            t = t + np.float32(1)
        if name == "gpt2" and hf_name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            t = np.ascontiguousarray(t.T)
        g = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if g is None:
            raise SystemExit(f"{name}: no GGUF name for {hf_name}")
        w.add_tensor(g, t)

    # Configuration carried as tensors.
    if rp.get("rope_type") == "llama3":  # LlamaModel.generate_extra_tensors
        base = theta
        dim = head_dim
        freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        factor = rp["factor"]
        low, high = rp["low_freq_factor"], rp["high_freq_factor"]
        old = rp["original_max_position_embeddings"]
        low_wl, high_wl = old / low, old / high
        factors = []
        for f in freqs:
            wl = 2 * math.pi / f
            if wl < high_wl:
                factors.append(1)
            elif wl > low_wl:
                factors.append(factor)
            else:
                smooth = (old / wl - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        w.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                     np.array(factors, dtype=np.float32))
    if rp.get("rope_type") in ("longrope", "su"):  # Phi3MiniModel.generate_extra_tensors
        w.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight",
                     np.array(rp["long_factor"], dtype=np.float32))
        w.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight",
                     np.array(rp["short_factor"], dtype=np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    names = sys.argv[2:] or DENSE + ["llama_spm"]
    for n in names:
        if n == "llama_spm":
            convert("llama", os.path.join(out, "llama_spm.gguf"), spm=True)
        else:
            convert(n, os.path.join(out, f"{n}.gguf"))
        print(f"wrote {os.path.join(out, n + '.gguf')}")


if __name__ == "__main__":
    main()

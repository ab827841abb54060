"""Generate tiny deterministic Llama test models (for the bad-input corpus and the fuzz seeds).

    python3 make_tiny.py OUT_DIR

writes OUT_DIR/tiny_llama.gguf (GGUF v3: F32 norms, F16 / Q8_0 / Q4_0 matrices, the tiny Llama
fixture's byte-level BPE vocabulary) and OUT_DIR/hf_seed.bin (`[u16 len][config.json]
[model.safetensors]`, the safetensors_hf fuzz target's input format).
"""
import json, os, struct, sys
import numpy as np
import gguf
from safetensors.numpy import save

here = os.path.dirname(os.path.abspath(__file__))
fixture = os.path.join(here, "../../../../tests/fixtures/tiny/llama")
out = sys.argv[1] if len(sys.argv) > 1 else here
rng = np.random.default_rng(1234)
tok = json.load(open(os.path.join(fixture, "tokenizer.json")))
V, E, H, KV, HD, FF, L = 512, 32, 2, 1, 16, 64, 1

def w(*shape):
    return (rng.standard_normal(shape) * 0.05).astype(np.float32)

tensors = {"token_embd.weight": w(V, E), "output_norm.weight": np.ones(E, np.float32)}
for i in range(L):
    p = f"blk.{i}."
    tensors.update({
        p + "attn_norm.weight": np.ones(E, np.float32), p + "ffn_norm.weight": np.ones(E, np.float32),
        p + "attn_q.weight": w(H * HD, E), p + "attn_k.weight": w(KV * HD, E), p + "attn_v.weight": w(KV * HD, E),
        p + "attn_output.weight": w(E, H * HD), p + "ffn_gate.weight": w(FF, E), p + "ffn_up.weight": w(FF, E),
        p + "ffn_down.weight": w(E, FF),
    })

wr = gguf.GGUFWriter(os.path.join(out, "tiny_llama.gguf"), "llama")
wr.add_block_count(L); wr.add_context_length(128); wr.add_embedding_length(E); wr.add_feed_forward_length(FF)
wr.add_head_count(H); wr.add_head_count_kv(KV); wr.add_rope_freq_base(10000.0); wr.add_layer_norm_rms_eps(1e-6)
wr.add_vocab_size(V); wr.add_rope_dimension_count(HD)
inv = {v: k for k, v in tok["model"]["vocab"].items()}
for a in tok["added_tokens"]:
    inv[a["id"]] = a["content"]
wr.add_tokenizer_model("gpt2"); wr.add_tokenizer_pre("default")
wr.add_token_list([inv[i] for i in range(V)])
wr.add_token_types([3 if i < 3 else 1 for i in range(V)])
wr.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
wr.add_bos_token_id(1); wr.add_eos_token_id(2); wr.add_pad_token_id(0)
Q = gguf.GGMLQuantizationType
for name, t in tensors.items():
    if t.ndim == 1:
        wr.add_tensor(name, t)
    elif name.endswith(("attn_q.weight", "ffn_up.weight")):
        wr.add_tensor(name, gguf.quants.quantize(t, Q.Q8_0), raw_dtype=Q.Q8_0)
    elif name.endswith(("attn_k.weight", "ffn_down.weight")):
        wr.add_tensor(name, gguf.quants.quantize(t, Q.Q4_0), raw_dtype=Q.Q4_0)
    else:
        wr.add_tensor(name, t.astype(np.float16))
wr.write_header_to_file(); wr.write_kv_data_to_file(); wr.write_tensors_to_file(); wr.close()

# HF seed: same shapes, HF names, bf16-free f16 weights
hf = {"model.embed_tokens.weight": tensors["token_embd.weight"], "model.norm.weight": tensors["output_norm.weight"],
      "lm_head.weight": w(V, E)}
names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
         "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
for i in range(L):
    for k, v in names.items():
        hf[f"model.layers.{i}.{v}.weight"] = tensors[f"blk.{i}.{k}.weight"]
hf = {k: v.astype(np.float16) for k, v in hf.items()}
cfg = json.load(open(os.path.join(fixture, "config.json")))
cfg.update(hidden_size=E, num_attention_heads=H, num_key_value_heads=KV, head_dim=HD, intermediate_size=FF,
           num_hidden_layers=L, dtype="float16")
cfg_bytes = json.dumps(cfg).encode()
with open(os.path.join(out, "hf_seed.bin"), "wb") as f:
    f.write(struct.pack("<H", len(cfg_bytes)) + cfg_bytes + save(hf))

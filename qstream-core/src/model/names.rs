//! Canonical tensor names inside QSF files (GGUF's naming, without `.weight`).
//!
//! Global tensors: `token_embd` (embedding section), `output_norm`, `output_norm.bias`,
//! `output`, `output.bias` (final section), `pos_embd` (learned positions).
//! Per layer (layer section `i`, names without the `blk.i.` prefix): `attn_norm`,
//! `attn_q`, `attn_k`, `attn_v`, `attn_output`, `attn_qkv` (fused), `attn_q_norm`,
//! `attn_k_norm`, `ffn_norm`, `ffn_gate`, `ffn_up`, `ffn_down`, `post_attention_norm`,
//! `post_ffw_norm`, biases as `<name>.bias`; MoE: `ffn_gate_inp` (router),
//! `ffn_gate_exps`/`ffn_up_exps`/`ffn_down_exps` (experts stacked along the row axis,
//! shape `[n_expert * rows, cols]`), `ffn_gate_shexp`/`ffn_up_shexp`/`ffn_down_shexp`.
//!
//! Shapes are `[rows, cols]` row-major with `rows` = output features (PyTorch
//! `nn.Linear.weight` layout); 1-D tensors are `[n]`.

pub const TOKEN_EMBD: &str = "token_embd";
pub const POS_EMBD: &str = "pos_embd";
pub const OUTPUT_NORM: &str = "output_norm";
pub const OUTPUT: &str = "output";

pub const ATTN_NORM: &str = "attn_norm";
pub const ATTN_Q: &str = "attn_q";
pub const ATTN_K: &str = "attn_k";
pub const ATTN_V: &str = "attn_v";
pub const ATTN_OUT: &str = "attn_output";
pub const ATTN_QKV: &str = "attn_qkv";
pub const ATTN_Q_NORM: &str = "attn_q_norm";
pub const ATTN_K_NORM: &str = "attn_k_norm";
pub const FFN_NORM: &str = "ffn_norm";
pub const FFN_GATE: &str = "ffn_gate";
pub const FFN_UP: &str = "ffn_up";
pub const FFN_DOWN: &str = "ffn_down";
/// norm of the attention output before the residual add (Gemma 2/3, OLMo 2)
pub const POST_ATTN_NORM: &str = "post_attention_norm";
/// norm of the MLP output before the residual add (Gemma 2/3, OLMo 2)
pub const POST_FFW_NORM: &str = "post_ffw_norm";

/// Split a global name `blk.{i}.{rest}` into `(i, rest)`.
pub fn split_layer(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let dot = rest.find('.')?;
    let idx = rest[..dot].parse().ok()?;
    Some((idx, &rest[dot + 1..]))
}

/// The global name of layer tensor `name` in layer `i`.
pub fn layer_name(i: usize, name: &str) -> String {
    format!("blk.{i}.{name}")
}

/// The original QStream tensor-type id for a layer tensor name (docs/qsf.md), or 0xFFFF.
pub fn original_kind(name: &str) -> u16 {
    match name {
        ATTN_Q => 0,
        ATTN_K => 1,
        ATTN_V => 2,
        ATTN_OUT => 3,
        FFN_GATE => 4,
        FFN_UP => 5,
        FFN_DOWN => 6,
        ATTN_NORM => 7,
        "attn_norm.bias" => 8,
        FFN_NORM => 9,
        "ffn_norm.bias" => 10,
        "attn_q.bias" => 11,
        "attn_k.bias" => 12,
        "attn_v.bias" => 13,
        "attn_output.bias" => 14,
        "ffn_gate.bias" => 15,
        "ffn_up.bias" => 16,
        "ffn_down.bias" => 17,
        ATTN_QKV => 18,
        "attn_qkv.bias" => 19,
        "ffn_gate_inp" => 21,
        "ffn_gate_inp.bias" => 22,
        _ => 0xFFFF,
    }
}

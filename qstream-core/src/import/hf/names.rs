//! HuggingFace tensor names → canonical QSF names (GGUF style, see `model::names`).
//!
//! The importer first groups quantized pieces into *logical* tensors (`X.qweight/qzeros/scales`
//! → `X.weight`, `X.weight` + `X.weight_scale_inv` → `X.weight`, `X_blocks` + `X_scales` → `X`),
//! then [`map_name`] turns each logical HF name into one or more [`Mapped`] pieces of canonical
//! tensors. Choices made here:
//!
//! - **Dense layers**: `model.layers.N.self_attn.{q,k,v,o}_proj` → `blk.N.attn_{q,k,v,output}`,
//!   `input_layernorm` → `attn_norm`, `post_attention_layernorm` → `ffn_norm` (but
//!   `post_attention_norm` in gemma2/gemma3/olmo2, whose `post_attention_layernorm` normalises
//!   the attention *output*), `pre_feedforward_layernorm` → `ffn_norm`,
//!   `post_feedforward_layernorm` → `post_ffw_norm`, `mlp.{gate,up,down}_proj` →
//!   `ffn_{gate,up,down}`, `self_attn.{q,k}_norm` → `attn_{q,k}_norm`; biases as `<name>.bias`.
//! - **MoE experts are stacked** (`model::names`): per-expert HF tensors
//!   `mlp.experts.E.{gate,up,down}_proj` (qwen2_moe, qwen3_moe, deepseek) and mixtral's
//!   `block_sparse_moe.experts.E.{w1,w3,w2}` become `blk.N.ffn_{gate,up,down}_exps`, shape
//!   `[n_expert · rows, cols]`, expert E occupying rows `E·rows .. (E+1)·rows`. Routers
//!   (`mlp.gate`, `block_sparse_moe.gate`, `mlp.router`) → `ffn_gate_inp[.bias]`; shared experts
//!   (`mlp.shared_expert[s].*`) → `ffn_{gate,up,down}_shexp`; qwen2_moe's `shared_expert_gate`
//!   → `ffn_gate_inp_shexp`; deepseek-v3's `mlp.gate.e_score_correction_bias` → `exp_probs_b`.
//! - **gpt-oss fused experts**: `mlp.experts.gate_up_proj` (float: `[E, hidden, 2·inter]`,
//!   `x @ W` layout; MXFP4: decoded `[E, 2·inter, hidden]`) is split into `ffn_gate_exps`
//!   (even output columns) and `ffn_up_exps` (odd), both `[E·inter, hidden]`;
//!   `mlp.experts.down_proj` → `ffn_down_exps` `[E·hidden, inter]`; the `*_bias` tensors
//!   `[E, n]` → `ffn_{gate,up,down}_exps.bias` `[E·n]` split the same way. `self_attn.sinks` →
//!   `attn_sinks`.
//! - **Fused attention / MLP**: phi3 `qkv_proj` and gpt2 `c_attn` stay fused as `attn_qkv`
//!   (rows q, then k, then v); phi3 `gate_up_proj` is split into `ffn_gate` (first half of the
//!   rows) and `ffn_up` (second half).
//! - **Plain MLPs**: `fc1`/`fc_in`/`c_fc` → `ffn_up`, `fc2`/`fc_out`/`c_proj` → `ffn_down`.
//! - **gpt2 Conv1D** weights (`c_attn`, `c_proj`, `c_fc`) are stored `[in, out]` and are
//!   transposed to `[out, in]`.
//! - **deepseek MLA**: `q_a_proj` → `attn_q_a`, `q_a_layernorm` → `attn_q_a_norm`, `q_b_proj`
//!   → `attn_q_b`, `kv_a_proj_with_mqa` → `attn_kv_a_mqa`, `kv_a_layernorm` →
//!   `attn_kv_a_norm`, `kv_b_proj` → `attn_kv_b` (llama.cpp's names).
//! - Anything else is kept under a sanitized name (`blk.N.<hf rest>` or `<hf name>`, `.weight`
//!   dropped, characters outside `[A-Za-z0-9._-]` replaced by `_`) rather than failing.
//!   Buffers that are not weights (`rotary_emb.inv_freq`, gpt2 `attn.bias`/`attn.masked_bias`)
//!   are skipped.

use crate::model::config::Arch;

/// Which rows of a decoded `[rows, cols]` matrix a piece contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowSel {
    /// every row
    All,
    /// rows `start .. start + len`
    Range(usize, usize),
    /// rows `start, start + step, ...`
    Stride(usize, usize),
}

impl RowSel {
    /// Number of selected rows out of `rows`, or `None` if the selection does not fit.
    pub fn count(self, rows: usize) -> Option<usize> {
        match self {
            RowSel::All => Some(rows),
            RowSel::Range(s, l) => (s + l <= rows).then_some(l),
            RowSel::Stride(s, k) => {
                if k == 0 || s >= rows.max(1) {
                    None
                } else {
                    Some((rows - s).div_ceil(k))
                }
            }
        }
    }

    /// The selected row indices.
    pub fn rows(self, rows: usize) -> Box<dyn Iterator<Item = usize>> {
        match self {
            RowSel::All => Box::new(0..rows),
            RowSel::Range(s, l) => Box::new(s..(s + l).min(rows)),
            RowSel::Stride(s, k) => Box::new((s..rows).step_by(k.max(1))),
        }
    }
}

/// One piece of a canonical tensor, taken from a logical HF tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// canonical QSF name
    pub canonical: String,
    /// position among the pieces of the same canonical tensor (the expert index when stacking)
    pub order: usize,
    /// `Some(e)`: take slice `e` of the logical tensor's first axis
    pub expert: Option<usize>,
    /// transpose the (sliced) 2-D matrix
    pub transpose: bool,
    /// rows of the (sliced, transposed) matrix to keep
    pub rows: RowSel,
}

fn one(canonical: String) -> Vec<Mapped> {
    vec![Mapped {
        canonical,
        order: 0,
        expert: None,
        transpose: false,
        rows: RowSel::All,
    }]
}

/// Replace characters outside `[A-Za-z0-9._-]` by `_`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Split `…layers.N.rest` / `transformer.h.N.rest` into `(N, rest)`.
fn split_layer(name: &str) -> Option<(usize, &str)> {
    for marker in ["layers.", "transformer.h.", "h."] {
        let mut search = 0;
        while let Some(pos) = name[search..].find(marker) {
            let at = search + pos;
            // the marker must start the name or follow a dot
            if at == 0 || name.as_bytes()[at - 1] == b'.' {
                let rest = &name[at + marker.len()..];
                if let Some(dot) = rest.find('.') {
                    if let Ok(n) = rest[..dot].parse::<usize>() {
                        return Some((n, &rest[dot + 1..]));
                    }
                }
            }
            search = at + marker.len();
        }
    }
    None
}

/// Split a trailing `.weight` / `.bias` off: `(stem, "" | ".bias")`; other names are their own stem.
fn split_suffix(rest: &str) -> (&str, &'static str) {
    if let Some(s) = rest.strip_suffix(".weight") {
        (s, "")
    } else if let Some(s) = rest.strip_suffix(".bias") {
        (s, ".bias")
    } else {
        (rest, "")
    }
}

/// Map a logical HF tensor name to canonical pieces.
///
/// `shape` is the logical shape; `experts_in_out` is true when a 3-D fused expert tensor is
/// stored `[E, in, out]` (gpt-oss float checkpoints) rather than `[E, out, in]` (MXFP4).
/// Returns an empty list for buffers that are not weights.
pub fn map_name(arch: Arch, name: &str, shape: &[usize], experts_in_out: bool) -> Vec<Mapped> {
    // Global tensors.
    let global = match name {
        "model.embed_tokens.weight"
        | "transformer.wte.weight"
        | "model.language_model.embed_tokens.weight"
        | "transformer.word_embeddings.weight" => Some("token_embd"),
        "transformer.wpe.weight" => Some("pos_embd"),
        "model.norm.weight"
        | "transformer.ln_f.weight"
        | "model.final_layernorm.weight"
        | "model.language_model.norm.weight" => Some("output_norm"),
        "model.norm.bias" | "transformer.ln_f.bias" | "model.final_layernorm.bias" => {
            Some("output_norm.bias")
        }
        "lm_head.weight" => Some("output"),
        "lm_head.bias" => Some("output.bias"),
        _ => None,
    };
    if let Some(g) = global {
        return one(g.to_string());
    }
    let Some((layer, rest)) = split_layer(name) else {
        if name.ends_with("rotary_emb.inv_freq") {
            return Vec::new();
        }
        let (stem, suffix) = split_suffix(name);
        return one(sanitize(&format!("{stem}{suffix}")));
    };
    let blk = |n: &str| format!("blk.{layer}.{n}");
    let (stem, suffix) = split_suffix(rest);

    // Buffers, not weights.
    if stem.ends_with("rotary_emb.inv_freq")
        || (arch == Arch::Gpt2 && (rest == "attn.bias" || rest == "attn.masked_bias"))
    {
        return Vec::new();
    }

    // Per-expert tensors: mlp.experts.E.x / block_sparse_moe.experts.E.wN
    for prefix in [
        "mlp.experts.",
        "block_sparse_moe.experts.",
        "feed_forward.experts.",
    ] {
        if let Some(r) = stem.strip_prefix(prefix) {
            if let Some(dot) = r.find('.') {
                if let Ok(e) = r[..dot].parse::<usize>() {
                    let which = match &r[dot + 1..] {
                        "gate_proj" | "w1" => Some("ffn_gate_exps"),
                        "up_proj" | "w3" => Some("ffn_up_exps"),
                        "down_proj" | "w2" => Some("ffn_down_exps"),
                        _ => None,
                    };
                    if let Some(w) = which {
                        return vec![Mapped {
                            canonical: blk(&format!("{w}{suffix}")),
                            order: e,
                            expert: None,
                            transpose: false,
                            rows: RowSel::All,
                        }];
                    }
                }
            }
        }
    }

    // gpt-oss fused expert tensors (3-D weights, 2-D biases, leading axis = expert).
    if let Some(r) = rest.strip_prefix("mlp.experts.") {
        let n_exp = shape.first().copied().unwrap_or(0);
        let is_weight = shape.len() == 3;
        let transpose = is_weight && experts_in_out;
        let pieces = |canon: &str, sel: RowSel| -> Vec<Mapped> {
            (0..n_exp)
                .map(|e| Mapped {
                    canonical: blk(canon),
                    order: e,
                    expert: Some(e),
                    transpose,
                    rows: sel,
                })
                .collect()
        };
        match r {
            "gate_up_proj" | "gate_up_proj_bias" => {
                let b = if r.ends_with("_bias") { ".bias" } else { "" };
                let mut v = pieces(&format!("ffn_gate_exps{b}"), RowSel::Stride(0, 2));
                v.extend(pieces(&format!("ffn_up_exps{b}"), RowSel::Stride(1, 2)));
                return v;
            }
            "down_proj" => return pieces("ffn_down_exps", RowSel::All),
            "down_proj_bias" => return pieces("ffn_down_exps.bias", RowSel::All),
            _ => {}
        }
    }

    let gemma_like_post = matches!(arch, Arch::Gemma2 | Arch::Gemma3 | Arch::Olmo2);
    let conv1d = arch == Arch::Gpt2;
    let base: Option<&str> = match stem {
        "self_attn.q_proj" | "attn.q_proj" | "attention.wq" => Some("attn_q"),
        "self_attn.k_proj" | "attn.k_proj" | "attention.wk" => Some("attn_k"),
        "self_attn.v_proj" | "attn.v_proj" | "attention.wv" => Some("attn_v"),
        "self_attn.o_proj" | "attn.out_proj" | "self_attn.dense" | "attn.c_proj"
        | "attention.wo" => Some("attn_output"),
        "self_attn.qkv_proj" | "attn.c_attn" => Some("attn_qkv"),
        "self_attn.q_norm" | "self_attn.q_layernorm" => Some("attn_q_norm"),
        "self_attn.k_norm" | "self_attn.k_layernorm" => Some("attn_k_norm"),
        "self_attn.sinks" => Some("attn_sinks"),
        "self_attn.q_a_proj" => Some("attn_q_a"),
        "self_attn.q_a_layernorm" => Some("attn_q_a_norm"),
        "self_attn.q_b_proj" => Some("attn_q_b"),
        "self_attn.kv_a_proj_with_mqa" => Some("attn_kv_a_mqa"),
        "self_attn.kv_a_layernorm" => Some("attn_kv_a_norm"),
        "self_attn.kv_b_proj" => Some("attn_kv_b"),
        "input_layernorm" | "ln_1" => Some("attn_norm"),
        "post_attention_layernorm" if gemma_like_post => Some("post_attention_norm"),
        "post_attention_layernorm" | "pre_feedforward_layernorm" | "ln_2" => Some("ffn_norm"),
        "post_feedforward_layernorm" => Some("post_ffw_norm"),
        "mlp.gate_proj" => Some("ffn_gate"),
        "mlp.up_proj" | "mlp.fc1" | "mlp.fc_in" | "mlp.c_fc" => Some("ffn_up"),
        "mlp.down_proj" | "mlp.fc2" | "mlp.fc_out" | "mlp.c_proj" => Some("ffn_down"),
        "mlp.gate" | "block_sparse_moe.gate" | "mlp.router" => Some("ffn_gate_inp"),
        "mlp.gate.e_score_correction_bias" => Some("exp_probs_b"),
        "mlp.shared_expert.gate_proj" | "mlp.shared_experts.gate_proj" => Some("ffn_gate_shexp"),
        "mlp.shared_expert.up_proj" | "mlp.shared_experts.up_proj" => Some("ffn_up_shexp"),
        "mlp.shared_expert.down_proj" | "mlp.shared_experts.down_proj" => Some("ffn_down_shexp"),
        "mlp.shared_expert_gate" => Some("ffn_gate_inp_shexp"),
        _ => None,
    };
    if stem == "mlp.gate_up_proj" && suffix.is_empty() && shape.len() == 2 {
        // phi3: rows [0, n/2) are the gate, [n/2, n) the up projection.
        let half = shape[0] / 2;
        return vec![
            Mapped {
                canonical: blk("ffn_gate"),
                order: 0,
                expert: None,
                transpose: false,
                rows: RowSel::Range(0, half),
            },
            Mapped {
                canonical: blk("ffn_up"),
                order: 0,
                expert: None,
                transpose: false,
                rows: RowSel::Range(half, half),
            },
        ];
    }
    match base {
        Some(b) => {
            let transpose = conv1d
                && suffix.is_empty()
                && shape.len() == 2
                && matches!(
                    stem,
                    "attn.c_attn" | "attn.c_proj" | "mlp.c_fc" | "mlp.c_proj"
                );
            vec![Mapped {
                canonical: blk(&format!("{b}{suffix}")),
                order: 0,
                expert: None,
                transpose,
                rows: RowSel::All,
            }]
        }
        None => one(blk(&sanitize(&format!("{stem}{suffix}")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(arch: Arch, n: &str, shape: &[usize]) -> Vec<String> {
        map_name(arch, n, shape, true)
            .into_iter()
            .map(|m| m.canonical)
            .collect()
    }

    #[test]
    fn llama_names() {
        let a = Arch::Llama;
        assert_eq!(
            names(a, "model.embed_tokens.weight", &[8, 4]),
            ["token_embd"]
        );
        assert_eq!(names(a, "lm_head.weight", &[8, 4]), ["output"]);
        assert_eq!(names(a, "model.norm.weight", &[4]), ["output_norm"]);
        assert_eq!(
            names(a, "model.layers.12.self_attn.o_proj.weight", &[4, 4]),
            ["blk.12.attn_output"]
        );
        assert_eq!(
            names(a, "model.layers.0.self_attn.q_proj.bias", &[4]),
            ["blk.0.attn_q.bias"]
        );
        assert_eq!(
            names(a, "model.layers.1.post_attention_layernorm.weight", &[4]),
            ["blk.1.ffn_norm"]
        );
        assert_eq!(
            names(
                Arch::Gemma2,
                "model.layers.1.post_attention_layernorm.weight",
                &[4]
            ),
            ["blk.1.post_attention_norm"]
        );
        assert!(names(a, "model.layers.0.self_attn.rotary_emb.inv_freq", &[4]).is_empty());
        assert_eq!(
            names(a, "model.layers.0.self_attn.weird(thing).weight", &[4]),
            ["blk.0.self_attn.weird_thing_"]
        );
    }

    #[test]
    fn experts_and_fused() {
        let m = map_name(
            Arch::Mixtral,
            "model.layers.1.block_sparse_moe.experts.3.w3.weight",
            &[4, 4],
            true,
        );
        assert_eq!(m[0].canonical, "blk.1.ffn_up_exps");
        assert_eq!(m[0].order, 3);
        let m = map_name(
            Arch::GptOss,
            "model.layers.0.mlp.experts.gate_up_proj",
            &[2, 4, 8],
            true,
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].canonical, "blk.0.ffn_gate_exps");
        assert_eq!(
            (m[1].expert, m[1].rows, m[1].transpose),
            (Some(1), RowSel::Stride(0, 2), true)
        );
        assert_eq!(m[2].canonical, "blk.0.ffn_up_exps");
        let m = map_name(
            Arch::Phi3,
            "model.layers.0.mlp.gate_up_proj.weight",
            &[8, 4],
            true,
        );
        assert_eq!(m[1].rows, RowSel::Range(4, 4));
        let m = map_name(
            Arch::Gpt2,
            "transformer.h.0.attn.c_attn.weight",
            &[4, 12],
            true,
        );
        assert!(m[0].transpose);
        assert_eq!(m[0].canonical, "blk.0.attn_qkv");
        let m = map_name(
            Arch::Starcoder2,
            "model.layers.0.mlp.c_fc.weight",
            &[8, 4],
            true,
        );
        assert!(!m[0].transpose);
    }

    #[test]
    fn row_selection() {
        assert_eq!(RowSel::Stride(1, 2).count(8), Some(4));
        assert_eq!(
            RowSel::Stride(1, 2).rows(8).collect::<Vec<_>>(),
            [1, 3, 5, 7]
        );
        assert_eq!(RowSel::Range(4, 5).count(8), None);
    }
}

//! Gemma 2: Gemma plus norms before *and after* both blocks (sandwich), attention scores
//! soft-capped (`attn_logit_softcapping`) and final logits too (`final_logit_softcapping`),
//! softmax scale `query_pre_attn_scalar^-0.5`, sliding-window attention on the layers
//! `layer_types` marks (default: even layers).

use crate::model::decoder::{sliding_layers, Wiring};
use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    let mut s = super::gemma::spec(c)?.wiring(Wiring::Sandwich);
    let scale = c
        .extra_f32("query_pre_attn_scalar")
        .unwrap_or(c.head_dim as f32)
        .powf(-0.5);
    let sliding = sliding_layers(c, |i| i % 2 == 0)?;
    let cap = c.extra_f32("attn_logit_softcapping").filter(|v| *v > 0.0);
    for (l, slide) in s.layers.iter_mut().zip(sliding) {
        l.attn.scale = scale;
        l.attn.softcap = cap;
        l.attn.window = if slide { c.sliding_window } else { None };
    }
    s.final_softcap = c.extra_f32("final_logit_softcapping").filter(|v| *v > 0.0);
    Ok(s)
}

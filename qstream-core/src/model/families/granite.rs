//! Granite (3.x dense): the Llama block with multipliers — embeddings ×
//! `embedding_multiplier`, softmax scale `attention_multiplier` (instead of
//! `head_dim^-0.5`), each block's output × `residual_multiplier` before the residual add,
//! logits ÷ `logits_scaling`.

use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    let mut s = FamilySpec::llama_like(c);
    s.embd_scale = c.extra_f32("embedding_multiplier").unwrap_or(1.0);
    s.logit_scale = 1.0 / c.extra_f32("logits_scaling").unwrap_or(1.0);
    let residual = c.extra_f32("residual_multiplier").unwrap_or(1.0);
    let attn = c.extra_f32("attention_multiplier");
    for l in &mut s.layers {
        l.residual_scale = residual;
        if let Some(a) = attn {
            l.attn.scale = a;
        }
    }
    Ok(s)
}

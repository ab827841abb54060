//! Gemma (1): embeddings × √d, RMSNorm with `1 + w`, GeGLU (tanh GELU), head_dim ≠ d/n_head
//! (from the config), tied LM head.

use crate::model::blocks::NormKind;
use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    let mut s = FamilySpec::llama_like(c);
    s.norm = NormKind::RmsPlusOne;
    s.embd_scale = (c.n_embd as f32).sqrt();
    Ok(s)
}

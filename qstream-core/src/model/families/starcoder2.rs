//! StarCoder2: LayerNorm with bias, pre-norm blocks, biases on every projection
//! (`use_bias`), plain tanh-GELU MLP (`c_fc`/`c_proj`), sliding-window attention on every
//! layer, tied LM head.

use crate::model::blocks::NormKind;
use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    let mut s = FamilySpec::llama_like(c);
    s.norm = NormKind::Layer;
    for l in &mut s.layers {
        l.gated = false;
    }
    Ok(s)
}

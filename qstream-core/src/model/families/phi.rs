//! Phi-1 / 1.5 / 2: one LayerNorm (with bias) feeds attention and MLP in parallel, both added
//! to the residual; partial rotary (the config's `rope.dim` < head_dim, NeoX pairs within
//! it); biases on q/k/v, `dense` and the plain gelu_new MLP (`fc1`/`fc2`); final LayerNorm;
//! LM head with bias. `qk_layernorm` adds per-head LayerNorms on q and k.

use crate::model::blocks::NormKind;
use crate::model::decoder::Wiring;
use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    let mut s = FamilySpec::llama_like(c).wiring(Wiring::Parallel);
    s.norm = NormKind::Layer;
    for l in &mut s.layers {
        l.gated = false;
    }
    Ok(s)
}

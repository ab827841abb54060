//! Phi-3 / 3.5: the Llama block with a fused `attn_qkv` (split into zero-copy row views at
//! bind time), `gate_up_proj` split by the importer, longrope ("su") scaling and an optional
//! sliding window on every layer.

use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    Ok(FamilySpec::llama_like(c))
}

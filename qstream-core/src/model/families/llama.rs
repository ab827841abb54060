//! Llama 1/2/3 (llama3 RoPE scaling), SmolLM, Mistral (sliding window), Qwen2 (q/k/v
//! biases), Qwen3 (per-head q/k RMSNorm): RMSNorm pre-norm blocks, SwiGLU, GQA, NeoX RoPE —
//! the base description itself.

use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    Ok(FamilySpec::llama_like(c))
}

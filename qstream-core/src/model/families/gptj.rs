//! GPT-J: the parallel block (one LayerNorm feeds attention and MLP), interleaved rotary on
//! the first `rotary_dim` values of each head, no attention biases, plain gelu_new MLP with
//! biases (`fc_in`/`fc_out`), final LayerNorm, LM head with bias.

use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c` (Phi's composition; the config carries the interleaved,
/// partial RoPE and the absent q/k/v biases).
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    super::phi::spec(c)
}

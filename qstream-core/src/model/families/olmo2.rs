//! OLMo 2: no pre-norms — the attention and MLP read the residual stream as it is and their
//! outputs are RMS-normalised (`post_attention_norm`, `post_ffw_norm`) before the residual
//! add; q and k are RMS-normalised over the whole projection (`n_head · head_dim`), not per
//! head.

use crate::model::blocks::attention::QkNorm;
use crate::model::decoder::Wiring;
use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    let mut s = FamilySpec::llama_like(c).wiring(Wiring::PostNorm);
    for l in &mut s.layers {
        l.attn.qk_norm = QkNorm::Whole;
    }
    Ok(s)
}

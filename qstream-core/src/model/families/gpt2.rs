//! GPT-2: learned absolute positions (`pos_embd`), LayerNorm with bias, fused `c_attn`
//! (`attn_qkv`, Conv1D weights transposed by the importer) with bias, plain gelu_new MLP with
//! biases, no RoPE, tied LM head. `scale_attn_weights = false` drops the `head_dim^-0.5`;
//! `scale_attn_by_inverse_layer_idx` divides layer `i`'s scores by `i + 1`.

use crate::model::blocks::NormKind;
use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    let mut s = FamilySpec::llama_like(c);
    s.norm = NormKind::Layer;
    s.pos_embd = true;
    let flag = |k: &str| c.extra.get(k).and_then(|v| v.as_bool());
    let scaled = flag("scale_attn_weights").unwrap_or(true);
    let by_layer = flag("scale_attn_by_inverse_layer_idx").unwrap_or(false);
    for (i, l) in s.layers.iter_mut().enumerate() {
        l.gated = false;
        l.attn.rope = None;
        if !scaled {
            l.attn.scale = 1.0;
        }
        if by_layer {
            l.attn.scale /= (i + 1) as f32;
        }
    }
    Ok(s)
}

//! Gemma 3 (text): the Gemma 2 sandwich with per-head q/k RMSNorms (`1 + w`), no soft-caps
//! unless the config sets them, a sliding pattern (`layer_types`, else every
//! `sliding_window_pattern`-th layer global) and two rotary tables: global layers use the
//! config's RoPE (with its scaling), sliding layers `rope_local_base_freq` (default 10 000)
//! without scaling.

use crate::model::blocks::attention::QkNorm;
use crate::model::config::RopeConfig;
use crate::model::decoder::sliding_layers;
use crate::model::{FamilySpec, ModelConfig};
use crate::Result;

/// The family description of `c`.
pub fn spec(c: &ModelConfig) -> Result<FamilySpec> {
    let mut s = super::gemma2::spec(c)?;
    let pattern = c
        .extra
        .get("sliding_window_pattern")
        .or(c.extra.get("_sliding_window_pattern"))
        .and_then(|v| v.as_u64())
        .filter(|&p| p > 0)
        .unwrap_or(6) as usize;
    let sliding = sliding_layers(c, |i| (i + 1) % pattern != 0)?;
    if let Some(global) = &c.rope {
        s.ropes = vec![
            global.clone(),
            RopeConfig {
                theta: c.extra_f32("rope_local_base_freq").unwrap_or(10000.0),
                scaling: None,
                ..global.clone()
            },
        ];
    }
    for (l, slide) in s.layers.iter_mut().zip(sliding) {
        l.attn.qk_norm = QkNorm::PerHead;
        l.attn.window = if slide { c.sliding_window } else { None };
        if slide && l.attn.rope.is_some() {
            l.attn.rope = Some(1);
        }
    }
    Ok(s)
}

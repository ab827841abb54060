//! `{arch}.*` metadata (+ the tensor list) → [`ModelConfig`], per architecture, with
//! llama.cpp's key names (gguf-py `constants.py`, `convert_hf_to_gguf.py`).
//!
//! The result is meant to equal what the HuggingFace importer derives from the same model's
//! `config.json` (`import::hf::config`), so a model runs the same from either source:
//!
//! | GGUF | canonical |
//! |---|---|
//! | `general.architecture` `phi2`, `gemma3`, ... | [`Arch::Phi`], [`Arch::Gemma3`], ... |
//! | `attention.layer_norm_epsilon` / `layer_norm_rms_epsilon` | `norm` + `norm_eps` |
//! | `rope.dimension_count`, `rope.freq_base` | `rope.dim`, `rope.theta` |
//! | `rope.scaling.{type,factor,original_context_length,yarn_*}` | `rope.scaling` |
//! | tensor `rope_freqs` (llama3 scaling, per-frequency divisors) | [`RopeScaling::Llama3`], reconstructed and checked |
//! | tensors `rope_factors_short/long` (phi3) | [`RopeScaling::LongRope`] |
//! | `rope.freq_base_swa` (gemma3 local layers) | `extra.rope_local_base_freq` |
//! | `attention.sliding_window`, `attention.sliding_window_pattern` | `sliding_window`, `extra.layer_types` (gemma2/3) |
//! | `attn_logit_softcapping`, `final_logit_softcapping` | `extra.*` under the same names |
//! | granite `embedding_scale`, `residual_scale`, `attention.scale`, `logit_scale` | `extra.embedding_multiplier`, `residual_multiplier`, `attention_multiplier`, `logits_scaling` |
//! | gemma2/3 `attention.scale` or llama.cpp's rule (27B: `n_embd / n_head`, else `head_dim`) | `extra.query_pre_attn_scalar` |
//!
//! Architecture facts llama.cpp hard-codes rather than stores (norm kind, activation, gated
//! or plain MLP, RoPE pairing) come from the architecture, as in llama.cpp's graph builders.
//! `feed_forward_length` is taken from the `ffn_down` tensor when present: llama.cpp's gpt2
//! and phi2 converters write `4 · n_embd` whatever the model's real width.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::parse::{GgufFile, MetaValue};
use super::vocab::Vocab;
use crate::model::config::{
    Activation, Arch, ModelConfig, MoeConfig, NormType, RopeConfig, RopeScaling, RopeStyle,
};
use crate::{Error, Result};

/// GGUF `general.architecture` values this importer reads.
pub const SUPPORTED: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "phi2",
    "phi3",
    "gemma",
    "gemma2",
    "gemma3",
    "gpt2",
    "gptj",
    "olmo2",
    "starcoder2",
    "granite",
];

/// The architecture a GGUF `general.architecture` names.
pub fn arch_of(name: &str) -> Result<Arch> {
    Ok(match name {
        "llama" => Arch::Llama,
        "mistral" => Arch::Mistral,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        "phi2" => Arch::Phi,
        "phi3" => Arch::Phi3,
        "gemma" => Arch::Gemma,
        "gemma2" => Arch::Gemma2,
        "gemma3" => Arch::Gemma3,
        "gpt2" => Arch::Gpt2,
        "gptj" => Arch::Gptj,
        "olmo2" => Arch::Olmo2,
        "starcoder2" => Arch::Starcoder2,
        "granite" => Arch::Granite,
        other => {
            return Err(Error::UnsupportedArch(format!(
                "GGUF architecture {other:?} (supported: {})",
                SUPPORTED.join(", ")
            )))
        }
    })
}

/// llama.cpp's converter permutes the q/k rows of these architectures
/// (`LlamaModel.permute`) for its "NORM" (adjacent-pair) RoPE.
pub fn permutes_qk(arch: Arch) -> bool {
    matches!(
        arch,
        Arch::Llama | Arch::Mistral | Arch::Mixtral | Arch::Granite
    )
}

/// llama.cpp's converter stores these architectures' RMSNorm scales as `1 + w`.
pub fn norms_plus_one(arch: Arch) -> bool {
    matches!(arch, Arch::Gemma | Arch::Gemma2 | Arch::Gemma3)
}

/// Typed metadata access for one architecture prefix.
pub(crate) struct Meta<'a> {
    pub f: &'a GgufFile,
    pub arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn get(&self, k: &str) -> Option<&MetaValue> {
        self.f.get(&self.key(k))
    }

    fn bad(&self, k: &str, v: &MetaValue) -> Error {
        Error::corrupt(format!("GGUF: {} = {v:?}", self.key(k)))
    }

    pub fn uint(&self, k: &str) -> Result<Option<usize>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&x| x <= u32::MAX as u64)
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.bad(k, v)),
        }
    }

    pub fn need(&self, k: &str) -> Result<usize> {
        self.uint(k)?
            .ok_or_else(|| Error::corrupt(format!("GGUF: missing {}", self.key(k))))
    }

    pub fn float(&self, k: &str) -> Result<Option<f32>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.bad(k, v)),
        }
    }

    fn str(&self, k: &str) -> Option<&str> {
        self.get(k).and_then(MetaValue::as_str)
    }
}

/// What [`build`] needs to know about the tensors.
pub(crate) struct TensorFacts<'a> {
    /// canonical GGUF name (`.weight` dropped) → canonical shape `[rows, cols]` / `[n]`
    pub shapes: &'a HashMap<String, Vec<usize>>,
    /// f32 values of a small tensor (rope factor tables)
    pub load: &'a dyn Fn(&str) -> Result<Vec<f32>>,
}

fn extra_f32(extra: &mut serde_json::Map<String, Value>, key: &str, v: Option<f32>) {
    if let Some(v) = v {
        extra.insert(key.into(), json!(v as f64));
    }
}

/// Hyper-parameters from `{arch}.*` metadata and the tensor list.
pub(crate) fn build(
    f: &GgufFile,
    arch_name: &str,
    t: &TensorFacts,
    vocab: Option<&Vocab>,
) -> Result<ModelConfig> {
    let mut arch = arch_of(arch_name)?;
    let m = Meta { f, arch: arch_name };
    let has = |n: &str| t.shapes.contains_key(n);
    let shape = |n: &str| t.shapes.get(n);

    let n_layer = m.need("block_count")?;
    let n_embd = m.need("embedding_length")?;
    let n_head = m.need("attention.head_count")?;
    let n_head_kv = m.uint("attention.head_count_kv")?.unwrap_or(n_head);
    if n_head == 0 {
        return Err(Error::corrupt("GGUF: attention.head_count is 0"));
    }
    let head_dim = m.uint("attention.key_length")?.unwrap_or(n_embd / n_head);
    // The MLP width the weights have (ffn_down is [n_embd, n_ff] in every family).
    let n_ff = match shape("blk.0.ffn_down") {
        Some(s) if s.len() == 2 => s[1],
        _ => m.need("feed_forward_length")?,
    };
    let n_vocab = match m.uint("vocab_size")? {
        Some(v) => v,
        None => vocab
            .map(|v| v.tokens.len())
            .or_else(|| shape("token_embd").and_then(|s| s.first().copied()))
            .unwrap_or(0),
    };

    let layer_norm = matches!(arch, Arch::Phi | Arch::Gpt2 | Arch::Gptj | Arch::Starcoder2);
    let norm_eps = if layer_norm {
        m.float("attention.layer_norm_epsilon")?.unwrap_or(1e-5)
    } else {
        m.float("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5)
    };
    let act = match arch {
        Arch::Phi | Arch::Gpt2 | Arch::Gptj => Activation::GeluTanh,
        Arch::Gemma | Arch::Gemma2 | Arch::Gemma3 | Arch::Starcoder2 => Activation::GeluTanh,
        _ => Activation::Silu,
    };
    let gated_mlp = !matches!(arch, Arch::Phi | Arch::Gpt2 | Arch::Gptj | Arch::Starcoder2);

    let mut extra = serde_json::Map::new();
    if let Some(ft) = f.get("general.file_type").and_then(MetaValue::as_u64) {
        extra.insert("gguf_file_type".into(), ft.into());
    }

    // RoPE.
    let rope = if arch == Arch::Gpt2 {
        None
    } else {
        let theta = m.float("rope.freq_base")?.unwrap_or(10000.0);
        let dim = m.uint("rope.dimension_count")?.unwrap_or(head_dim);
        let style = if arch == Arch::Gptj {
            RopeStyle::Interleaved
        } else {
            // llama-family q/k rows are un-permuted at import (see `super`), so every other
            // family rotates halves (HF rotate_half, GGUF NEOX).
            RopeStyle::Neox
        };
        let orig = m.uint("rope.scaling.original_context_length")?;
        let mut scaling = match m.str("rope.scaling.type") {
            None | Some("none") => None,
            Some("linear") => Some(RopeScaling::Linear {
                factor: m.float("rope.scaling.factor")?.unwrap_or(1.0),
            }),
            Some("yarn") => Some(RopeScaling::Yarn {
                factor: m.float("rope.scaling.factor")?.unwrap_or(1.0),
                original_max_position_embeddings: orig.ok_or_else(|| {
                    Error::corrupt("GGUF: yarn rope scaling without original_context_length")
                })?,
                beta_fast: m.float("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                beta_slow: m.float("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                mscale: None,
                mscale_all_dim: None,
                truncate: None,
            }),
            // phi3: the factors are tensors (below).
            Some("longrope") => None,
            Some(other) => {
                return Err(Error::UnsupportedArch(format!(
                    "GGUF rope scaling type {other:?}"
                )))
            }
        };
        if has("rope_factors_long") || has("rope_factors_short") {
            let long = (t.load)("rope_factors_long")?;
            let short = (t.load)("rope_factors_short")?;
            if long.len() != dim / 2 || short.len() != dim / 2 {
                return Err(Error::corrupt(format!(
                    "GGUF: rope_factors_long/short have {}/{} entries for {} rotary dims",
                    long.len(),
                    short.len(),
                    dim
                )));
            }
            scaling = Some(RopeScaling::LongRope {
                short_factor: short,
                long_factor: long,
                original_max_position_embeddings: orig.ok_or_else(|| {
                    Error::corrupt(
                        "GGUF: longrope factors without rope.scaling.original_context_length",
                    )
                })?,
            });
        }
        if has("rope_freqs") {
            if scaling.is_some() {
                return Err(Error::UnsupportedArch(
                    "GGUF: rope_freqs together with another rope scaling".into(),
                ));
            }
            let factors = (t.load)("rope_freqs")?;
            scaling = llama3_from_factors(&factors, theta, dim, orig)?;
        }
        if arch == Arch::Gemma3 {
            extra_f32(
                &mut extra,
                "rope_local_base_freq",
                Some(m.float("rope.freq_base_swa")?.unwrap_or(10000.0)),
            );
        }
        Some(RopeConfig {
            theta,
            dim,
            style,
            scaling,
        })
    };

    let sliding_window = m.uint("attention.sliding_window")?.filter(|&w| w > 0);

    // Family extras, under config.json's names.
    match arch {
        Arch::Gemma2 | Arch::Gemma3 => {
            extra_f32(
                &mut extra,
                "attn_logit_softcapping",
                m.float("attn_logit_softcapping")?.filter(|&c| c > 0.0),
            );
            extra_f32(
                &mut extra,
                "final_logit_softcapping",
                m.float("final_logit_softcapping")?.filter(|&c| c > 0.0),
            );
            // llama.cpp: f_attention_scale = 1/sqrt(n_embd/n_head) for the 27B models
            // (46 / 62 layers), 1/sqrt(head_dim) otherwise, unless attention.scale says.
            let big =
                (arch == Arch::Gemma2 && n_layer == 46) || (arch == Arch::Gemma3 && n_layer == 62);
            let scalar = match m.float("attention.scale")? {
                Some(s) if s > 0.0 => 1.0 / (s as f64 * s as f64),
                _ if big => (n_embd / n_head) as f64,
                _ => head_dim as f64,
            };
            extra.insert("query_pre_attn_scalar".into(), json!(scalar));
            if sliding_window.is_some() {
                let sliding = sliding_layers(&m, arch, n_layer)?;
                let types: Vec<Value> = sliding
                    .iter()
                    .map(|&s| {
                        json!(if s {
                            "sliding_attention"
                        } else {
                            "full_attention"
                        })
                    })
                    .collect();
                extra.insert("layer_types".into(), Value::Array(types));
            }
        }
        Arch::Granite => {
            extra_f32(
                &mut extra,
                "embedding_multiplier",
                m.float("embedding_scale")?,
            );
            extra_f32(
                &mut extra,
                "residual_multiplier",
                m.float("residual_scale")?,
            );
            extra_f32(
                &mut extra,
                "attention_multiplier",
                m.float("attention.scale")?,
            );
            extra_f32(&mut extra, "logits_scaling", m.float("logit_scale")?);
        }
        _ => {}
    }

    // Mixtral-style llama files carry expert counts.
    let n_expert = m.uint("expert_count")?.unwrap_or(0);
    let moe = if n_expert > 0 {
        if arch == Arch::Llama || arch == Arch::Mistral {
            arch = Arch::Mixtral;
        } else {
            return Err(Error::UnsupportedArch(format!(
                "GGUF: {arch_name} with {n_expert} experts"
            )));
        }
        Some(MoeConfig {
            n_expert,
            n_expert_used: m.uint("expert_used_count")?.unwrap_or(2),
            expert_ff: m.uint("expert_feed_forward_length")?.unwrap_or(n_ff),
            norm_topk_prob: true,
            n_shared_expert: 0,
            shared_expert_ff: 0,
        })
    } else {
        None
    };

    let (mut bos, mut eos_ids, mut pad, mut add_bos) = (None, Vec::new(), None, false);
    if let Some(v) = vocab {
        bos = v.bos;
        pad = v.pad;
        add_bos = v.add_bos;
        let extra = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>"]
            .into_iter()
            .filter_map(|t| v.find(t));
        for id in [v.eos, v.eot].into_iter().flatten().chain(extra) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    }
    let config = ModelConfig {
        arch,
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
        n_vocab,
        n_ctx_train: m.uint("context_length")?.unwrap_or(4096),
        norm: if layer_norm {
            NormType::LayerNorm
        } else {
            NormType::RmsNorm
        },
        norm_eps,
        act,
        gated_mlp,
        rope,
        tie_embeddings: !has("output"),
        qkv_bias: has("blk.0.attn_q.bias") || has("blk.0.attn_qkv.bias"),
        qk_norm: has("blk.0.attn_q_norm"),
        sliding_window,
        moe,
        bos_token_id: bos,
        eos_token_ids: eos_ids,
        pad_token_id: pad,
        add_bos,
        extra,
    };
    config.validate()?;
    Ok(config)
}

/// Which layers use the sliding window: `attention.sliding_window_pattern` as a per-layer
/// bool array or as a period `n` (layer `i` slides unless `i % n == n − 1`, llama.cpp's
/// `set_swa_pattern`), else llama.cpp's fixed periods (gemma2: 2, gemma3: 6).
fn sliding_layers(m: &Meta, arch: Arch, n_layer: usize) -> Result<Vec<bool>> {
    let period =
        |n: usize| -> Vec<bool> { (0..n_layer).map(|i| n == 0 || i % n < n - 1).collect() };
    match m.get("attention.sliding_window_pattern") {
        None => Ok(period(if arch == Arch::Gemma2 { 2 } else { 6 })),
        Some(MetaValue::Array(a)) => {
            if a.len() != n_layer {
                return Err(Error::corrupt(format!(
                    "GGUF: {} has {} entries for {n_layer} layers",
                    m.key("attention.sliding_window_pattern"),
                    a.len()
                )));
            }
            a.iter()
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| m.bad("attention.sliding_window_pattern", v))
                })
                .collect()
        }
        Some(v) => match v.as_u64() {
            Some(n) if n <= n_layer as u64 + 1 => Ok(period(n as usize)),
            _ => Err(m.bad("attention.sliding_window_pattern", v)),
        },
    }
}

/// Per-frequency divisors of llama3 scaling (what llama.cpp's converter stores as
/// `rope_freqs`): `base_i / scaled_i` for the `dim / 2` frequencies.
pub fn llama3_factors(s: &RopeScaling, theta: f32, dim: usize) -> Option<Vec<f64>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    } = s
    else {
        return None;
    };
    let (factor, low, high) = (
        *factor as f64,
        *low_freq_factor as f64,
        *high_freq_factor as f64,
    );
    let old = *original_max_position_embeddings as f64;
    Some(
        (0..dim / 2)
            .map(|i| {
                let base = 1.0 / (theta as f64).powf((2 * i) as f64 / dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / base;
                if wavelen < old / high {
                    1.0
                } else if wavelen > old / low {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }
            })
            .collect(),
    )
}

/// Rebuild llama3 scaling parameters from llama.cpp's `rope_freqs` divisors.
///
/// Only the band edges `orig / high` and `orig / low` (wavelengths) matter, so the result is
/// normalised to `low_freq_factor = 1` (Meta's value): `factor` is the largest divisor, and
/// the transition band `smooth(x) = a·x + b` in `x = 1 / wavelength` gives `orig = −a/b`,
/// `high = orig·(1 − b)/a`. With fewer than two transition frequencies the edges are not
/// determined by the table; then `original_context_length` (or Meta's 8192) with low 1 /
/// high 4 is tried. Either way the parameters must reproduce every divisor within 1e-4, or
/// the file is refused.
fn llama3_from_factors(
    f: &[f32],
    theta: f32,
    dim: usize,
    orig_hint: Option<usize>,
) -> Result<Option<RopeScaling>> {
    if f.len() != dim / 2 || f.iter().any(|x| !x.is_finite() || *x <= 0.0) {
        return Err(Error::corrupt(format!(
            "GGUF: rope_freqs has {} entries for {dim} rotary dims, or a non-positive one",
            f.len()
        )));
    }
    let factor = f.iter().fold(0f64, |a, &x| a.max(x as f64));
    if (factor - 1.0).abs() < 1e-6 && f.iter().all(|&x| (x as f64 - 1.0).abs() < 1e-6) {
        return Ok(None);
    }
    let x_of = |i: usize| {
        let base = 1.0 / (theta as f64).powf((2 * i) as f64 / dim as f64);
        base / (2.0 * std::f64::consts::PI)
    };
    let mids: Vec<usize> = (0..f.len())
        .filter(|&i| {
            let v = f[i] as f64;
            v > 1.0 + 1e-5 && v < factor * (1.0 - 1e-5)
        })
        .collect();
    let candidate = if mids.len() >= 2 {
        let s = |i: usize| (1.0 / f[i] as f64 - 1.0 / factor) / (1.0 - 1.0 / factor);
        let (i0, i1) = (mids[0], mids[mids.len() - 1]);
        let a = (s(i1) - s(i0)) / (x_of(i1) - x_of(i0));
        let b = s(i0) - a * x_of(i0);
        let orig = (-a / b).round();
        if !(1.0..1e12).contains(&orig) {
            None
        } else {
            Some(RopeScaling::Llama3 {
                factor: factor as f32,
                low_freq_factor: (orig * -b / a) as f32,
                high_freq_factor: (orig * (1.0 - b) / a) as f32,
                original_max_position_embeddings: orig as usize,
            })
        }
    } else {
        Some(RopeScaling::Llama3 {
            factor: factor as f32,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: orig_hint.unwrap_or(8192),
        })
    };
    if let Some(c) = candidate {
        if let Some(g) = llama3_factors(&c, theta, dim) {
            if g.iter()
                .zip(f)
                .all(|(&a, &b)| ((a - b as f64) / a).abs() < 1e-4)
            {
                return Ok(Some(c));
            }
        }
    }
    Err(Error::UnsupportedArch(
        "GGUF: rope_freqs that no llama3 scaling reproduces".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_round_trip() {
        for (theta, dim, factor, low, high, orig) in [
            (10000.0f32, 16usize, 8.0f32, 1.0f32, 4.0f32, 64usize),
            (500000.0, 128, 8.0, 1.0, 4.0, 8192),
            (500000.0, 64, 32.0, 1.0, 4.0, 8192),
            (10000.0, 32, 4.0, 2.0, 8.0, 128),
        ] {
            let s = RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: orig,
            };
            let f: Vec<f32> = llama3_factors(&s, theta, dim)
                .unwrap()
                .into_iter()
                .map(|x| x as f32)
                .collect();
            let back = llama3_from_factors(&f, theta, dim, None).unwrap().unwrap();
            let g = llama3_factors(&back, theta, dim).unwrap();
            for (a, b) in g.iter().zip(&f) {
                assert!(
                    ((a - *b as f64) / a).abs() < 1e-5,
                    "{theta} {dim}: {a} vs {b}"
                );
            }
            if let RopeScaling::Llama3 { factor: bf, .. } = back {
                assert!((bf - factor).abs() < 1e-5);
            }
        }
        // All ones: no scaling; garbage: refused.
        assert_eq!(llama3_from_factors(&[1.0; 8], 1e4, 16, None).unwrap(), None);
        assert!(
            llama3_from_factors(&[1.0, 3.0, 1.0, 5.0, 1.0, 2.0, 9.0, 1.0], 1e4, 16, None).is_err()
        );
        assert!(llama3_from_factors(&[1.0; 7], 1e4, 16, None).is_err());
    }
}

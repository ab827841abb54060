//! `config.json` (+ `generation_config.json`, `tokenizer_config.json`) → [`ModelConfig`].
//!
//! Field names differ per architecture (`hidden_size` / `n_embd`, `rms_norm_eps` /
//! `layer_norm_epsilon` / `norm_epsilon`, ...); each getter takes the list of aliases. RoPE
//! settings are read from `rope_parameters` (transformers ≥ 5) or from the older top-level
//! `rope_theta` / `rope_scaling` / `partial_rotary_factor`. JSON `null` counts as absent.
//! Architecture-specific values the engine may need (soft-caps, multipliers, `layer_types`,
//! MLA ranks, ...) are copied into `ModelConfig::extra` under their config.json names.

use serde_json::{Map, Value};

use crate::model::config::{
    Activation, Arch, ModelConfig, MoeConfig, NormType, RopeConfig, RopeScaling, RopeStyle,
};
use crate::{Error, Result};

/// A JSON object with typed, error-reporting getters; `file` names it in messages.
pub struct Json<'a> {
    pub file: &'a str,
    pub map: &'a Map<String, Value>,
}

impl<'a> Json<'a> {
    fn get(&self, keys: &[&str]) -> Option<(&'a str, &'a Value)> {
        keys.iter().find_map(|k| match self.map.get_key_value(*k) {
            Some((k, v)) if !v.is_null() => Some((k.as_str(), v)),
            _ => None,
        })
    }

    fn bad(&self, key: &str, want: &str, v: &Value) -> Error {
        Error::corrupt(format!(
            "{}: field `{key}` must be {want}, found {v}",
            self.file
        ))
    }

    /// First present alias as an unsigned integer.
    pub fn opt_usize(&self, keys: &[&str]) -> Result<Option<usize>> {
        match self.get(keys) {
            None => Ok(None),
            Some((k, v)) => v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| self.bad(k, "an unsigned integer", v)),
        }
    }

    /// Required unsigned integer.
    pub fn usize(&self, keys: &[&str]) -> Result<usize> {
        self.opt_usize(keys)?.ok_or_else(|| {
            Error::corrupt(format!(
                "{}: missing field `{}`",
                self.file,
                keys.join("` / `")
            ))
        })
    }

    /// First present alias as a number.
    pub fn opt_f64(&self, keys: &[&str]) -> Result<Option<f64>> {
        match self.get(keys) {
            None => Ok(None),
            Some((k, v)) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(k, "a number", v)),
        }
    }

    /// First present alias as a bool.
    pub fn opt_bool(&self, keys: &[&str]) -> Result<Option<bool>> {
        match self.get(keys) {
            None => Ok(None),
            Some((k, v)) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(k, "true or false", v)),
        }
    }

    /// First present alias as a string.
    pub fn opt_str(&self, keys: &[&str]) -> Result<Option<&'a str>> {
        match self.get(keys) {
            None => Ok(None),
            Some((k, v)) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(k, "a string", v)),
        }
    }

    /// A nested object.
    pub fn opt_obj(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.get(&[key]) {
            None => Ok(None),
            Some((k, v)) => v
                .as_object()
                .map(Some)
                .ok_or_else(|| self.bad(k, "an object", v)),
        }
    }

    /// Token ids: a single integer or a list of integers.
    pub fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let Some((k, v)) = self.get(&[key]) else {
            return Ok(Vec::new());
        };
        let one = |x: &Value| {
            x.as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| self.bad(k, "a token id or a list of token ids", v))
        };
        match v {
            Value::Array(a) => a.iter().map(one).collect(),
            x => Ok(vec![one(x)?]),
        }
    }
}

/// Architecture defaults for `tie_word_embeddings` when config.json does not say.
fn default_tied(arch: Arch) -> bool {
    matches!(
        arch,
        Arch::Gemma | Arch::Gemma2 | Arch::Gemma3 | Arch::Gpt2 | Arch::Starcoder2
    )
}

/// Map an HF activation name.
pub fn activation(arch: Arch, name: &str) -> Result<Activation> {
    Ok(match name {
        "silu" | "swish" | "swiglu" => Activation::Silu,
        "gelu" | "gelu_exact" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python_tanh" | "gelu_tanh" => {
            Activation::GeluTanh
        }
        "relu" => Activation::Relu,
        other => {
            return Err(Error::UnsupportedArch(format!(
                "{}: activation `{other}` is not supported",
                arch.name()
            )))
        }
    })
}

/// Parse a RoPE parameter object (`rope_parameters`, `rope_scaling`, or one entry of a
/// per-layer-type `rope_parameters`) into (theta, partial factor, scaling).
fn rope_scaling(p: &Json, max_pos: usize, top: &Json) -> Result<Option<RopeScaling>> {
    let kind = p.opt_str(&["rope_type", "type"])?.unwrap_or("default");
    let factor = || -> Result<f32> {
        p.opt_f64(&["factor"])?.map(|f| f as f32).ok_or_else(|| {
            Error::corrupt(format!("{}: rope scaling `{kind}` needs `factor`", p.file))
        })
    };
    let orig = || -> Result<usize> {
        Ok(p.opt_usize(&["original_max_position_embeddings"])?
            .or(top.opt_usize(&["original_max_position_embeddings"])?)
            .unwrap_or(max_pos))
    };
    let floats = |key: &str| -> Result<Vec<f32>> {
        match p.map.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_f64().map(|f| f as f32).ok_or_else(|| {
                        Error::corrupt(format!("{}: `{key}` must be a list of numbers", p.file))
                    })
                })
                .collect(),
            _ => Err(Error::corrupt(format!(
                "{}: longrope scaling needs `{key}`",
                p.file
            ))),
        }
    };
    Ok(match kind {
        "default" | "none" => None,
        "linear" => Some(RopeScaling::Linear { factor: factor()? }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: p.opt_f64(&["low_freq_factor"])?.unwrap_or(1.0) as f32,
            high_freq_factor: p.opt_f64(&["high_freq_factor"])?.unwrap_or(4.0) as f32,
            original_max_position_embeddings: orig()?,
        }),
        "yarn" => Some(RopeScaling::Yarn {
            factor: factor()?,
            original_max_position_embeddings: orig()?,
            beta_fast: p.opt_f64(&["beta_fast"])?.unwrap_or(32.0) as f32,
            beta_slow: p.opt_f64(&["beta_slow"])?.unwrap_or(1.0) as f32,
            mscale: p.opt_f64(&["mscale"])?.map(|x| x as f32),
            mscale_all_dim: p.opt_f64(&["mscale_all_dim"])?.map(|x| x as f32),
            truncate: p.opt_bool(&["truncate"])?,
        }),
        "longrope" | "su" => Some(RopeScaling::LongRope {
            short_factor: floats("short_factor")?,
            long_factor: floats("long_factor")?,
            original_max_position_embeddings: orig()?,
        }),
        other => {
            return Err(Error::UnsupportedArch(format!(
                "{}: rope scaling type `{other}` is not supported",
                p.file
            )))
        }
    })
}

/// Keys copied verbatim from config.json into `ModelConfig::extra` when present.
const EXTRA_KEYS: &[&str] = &[
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "query_pre_attn_scalar",
    "layer_types",
    "sliding_window_pattern",
    "_sliding_window_pattern",
    "embedding_multiplier",
    "attention_multiplier",
    "residual_multiplier",
    "logits_scaling",
    "swiglu_alpha",
    "swiglu_limit",
    "kv_lora_rank",
    "q_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "first_k_dense_replace",
    "moe_layer_freq",
    "n_group",
    "topk_group",
    "topk_method",
    "scoring_func",
    "routed_scaling_factor",
    "decoder_sparse_step",
    "mlp_only_layers",
    "rope_interleave",
    "rope_parameters",
    "rope_scaling",
    "rope_local_base_freq",
    "partial_rotary_factor",
    "rotary_dim",
    "max_window_layers",
    "use_sliding_window",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "qk_layernorm",
    "attention_bias",
    "mlp_bias",
    "use_bias",
    "router_aux_loss_coef",
];

/// Build a [`ModelConfig`] from parsed config.json (and the optional generation config).
/// `arch` was resolved from `model_type` by the caller.
pub fn model_config(
    arch: Arch,
    model_type: &str,
    cfg: &Map<String, Value>,
    gen: Option<&Map<String, Value>>,
) -> Result<ModelConfig> {
    let c = Json {
        file: "config.json",
        map: cfg,
    };
    let n_layer = c.usize(&["num_hidden_layers", "n_layer", "num_layers"])?;
    let n_embd = c.usize(&["hidden_size", "n_embd", "d_model"])?;
    let n_head = c.usize(&["num_attention_heads", "n_head"])?;
    if n_head == 0 {
        return Err(Error::corrupt("config.json: num_attention_heads is 0"));
    }
    let n_head_kv = c
        .opt_usize(&["num_key_value_heads", "n_head_kv", "num_kv_heads"])?
        .unwrap_or(n_head);
    let is_mla = matches!(arch, Arch::DeepseekV2 | Arch::DeepseekV3);
    let head_dim = if is_mla {
        // MLA: q/k heads are nope + rope dims (v_head_dim is in `extra`).
        c.usize(&["qk_nope_head_dim"])? + c.usize(&["qk_rope_head_dim"])?
    } else {
        c.opt_usize(&["head_dim"])?.unwrap_or(n_embd / n_head)
    };
    let n_ff = match c.opt_usize(&["intermediate_size", "n_inner", "ffn_dim"])? {
        Some(f) => f,
        None if matches!(arch, Arch::Gpt2 | Arch::Gptj) => 4 * n_embd,
        None => c.usize(&["intermediate_size"])?,
    };
    let n_vocab = c.usize(&["vocab_size"])?;
    let n_ctx_train = c
        .opt_usize(&[
            "max_position_embeddings",
            "n_positions",
            "n_ctx",
            "seq_length",
        ])?
        .unwrap_or(2048);
    let layer_norm = matches!(arch, Arch::Phi | Arch::Gpt2 | Arch::Gptj | Arch::Starcoder2);
    let norm_eps = c
        .opt_f64(&[
            "rms_norm_eps",
            "layer_norm_eps",
            "layer_norm_epsilon",
            "norm_epsilon",
            "norm_eps",
        ])?
        .unwrap_or(if layer_norm { 1e-5 } else { 1e-6 }) as f32;
    // gemma's `hidden_activation` overrides `hidden_act` in transformers.
    let act_keys: &[&str] = if matches!(arch, Arch::Gemma | Arch::Gemma2 | Arch::Gemma3) {
        &["hidden_activation", "hidden_act"]
    } else {
        &["hidden_act", "activation_function", "hidden_activation"]
    };
    let default_act = match arch {
        Arch::Gpt2 | Arch::Gptj | Arch::Phi => "gelu_new",
        Arch::Gemma | Arch::Gemma2 | Arch::Gemma3 | Arch::Starcoder2 => "gelu_pytorch_tanh",
        _ => "silu",
    };
    let act = activation(arch, c.opt_str(act_keys)?.unwrap_or(default_act))?;
    let gated_mlp = !matches!(arch, Arch::Phi | Arch::Gpt2 | Arch::Gptj | Arch::Starcoder2);

    let mut extra = Map::new();
    extra.insert("model_type".into(), Value::String(model_type.to_string()));
    for k in EXTRA_KEYS {
        if let Some(v) = cfg.get(*k) {
            if !v.is_null() {
                extra.insert((*k).to_string(), v.clone());
            }
        }
    }

    // RoPE.
    let rope = if arch == Arch::Gpt2 {
        None
    } else {
        let rp = c.opt_obj("rope_parameters")?;
        // gemma3: per-layer-type parameters; global (full attention) goes into `rope`,
        // the sliding layers' theta into extra.rope_local_base_freq.
        let per_type = rp
            .and_then(|m| m.get("full_attention"))
            .and_then(|v| v.as_object());
        let local = rp
            .and_then(|m| m.get("sliding_attention"))
            .and_then(|v| v.as_object())
            .and_then(|m| m.get("rope_theta"))
            .and_then(|v| v.as_f64());
        if let Some(t) = local {
            extra.insert("rope_local_base_freq".into(), serde_json::json!(t));
        }
        let params_map = per_type.or(rp).or(c.opt_obj("rope_scaling")?);
        let empty = Map::new();
        let p = Json {
            file: "config.json (rope parameters)",
            map: params_map.unwrap_or(&empty),
        };
        let theta = p
            .opt_f64(&["rope_theta"])?
            .or(c.opt_f64(&["rope_theta", "rotary_emb_base"])?)
            .unwrap_or(10000.0) as f32;
        let partial = p
            .opt_f64(&["partial_rotary_factor"])?
            .or(c.opt_f64(&["partial_rotary_factor"])?)
            .unwrap_or(1.0);
        let dim = if is_mla {
            c.usize(&["qk_rope_head_dim"])?
        } else if let Some(rd) = c.opt_usize(&["rotary_dim"])? {
            rd
        } else {
            ((head_dim as f64) * partial).round() as usize
        };
        // Scaling comes from rope_parameters (v5) or rope_scaling (v4).
        let scaling = match params_map {
            Some(_) => rope_scaling(&p, n_ctx_train, &c)?,
            None => None,
        };
        let style = if matches!(arch, Arch::Gptj | Arch::DeepseekV2 | Arch::DeepseekV3) {
            RopeStyle::Interleaved
        } else {
            RopeStyle::Neox
        };
        Some(RopeConfig {
            theta,
            dim,
            style,
            scaling,
        })
    };

    let tie_embeddings = c
        .opt_bool(&["tie_word_embeddings"])?
        .unwrap_or_else(|| default_tied(arch));

    let qkv_bias = match arch {
        Arch::Qwen2 | Arch::Qwen2Moe => {
            c.opt_bool(&["qkv_bias", "attention_bias"])?.unwrap_or(true)
        }
        Arch::Phi | Arch::Gpt2 => true,
        Arch::Starcoder2 => c.opt_bool(&["use_bias"])?.unwrap_or(true),
        _ => c
            .opt_bool(&["attention_bias", "qkv_bias", "bias"])?
            .unwrap_or(false),
    };
    let qk_norm = matches!(
        arch,
        Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3 | Arch::Olmo2
    ) || c.opt_bool(&["qk_layernorm"])?.unwrap_or(false);

    let sliding_window = {
        let w = c.opt_usize(&["sliding_window"])?.filter(|&w| w > 0);
        match arch {
            Arch::Qwen2 | Arch::Qwen2Moe | Arch::Qwen3 | Arch::Qwen3Moe => {
                if c.opt_bool(&["use_sliding_window"])?.unwrap_or(false) {
                    w
                } else {
                    None
                }
            }
            _ => w,
        }
    };

    let n_expert = c.opt_usize(&["num_local_experts", "num_experts", "n_routed_experts"])?;
    let moe = match n_expert {
        Some(n) if n > 0 => {
            let used = c.usize(&["num_experts_per_tok", "num_experts_per_token", "top_k"])?;
            let expert_ff = match arch {
                Arch::Mixtral | Arch::GptOss => c.usize(&["intermediate_size"])?,
                _ => c.usize(&["moe_intermediate_size", "intermediate_size"])?,
            };
            let (n_shared, shared_ff) = if let Some(sf) = c
                .opt_usize(&["shared_expert_intermediate_size"])?
                .filter(|&x| x > 0)
            {
                (1, sf)
            } else {
                let ns = c.opt_usize(&["n_shared_experts"])?.unwrap_or(0);
                (ns, ns * expert_ff)
            };
            let norm_default = !matches!(arch, Arch::Qwen2Moe | Arch::DeepseekV2);
            Some(MoeConfig {
                n_expert: n,
                n_expert_used: used,
                expert_ff,
                norm_topk_prob: c.opt_bool(&["norm_topk_prob"])?.unwrap_or(norm_default),
                n_shared_expert: n_shared,
                shared_expert_ff: shared_ff,
            })
        }
        _ => None,
    };

    // Special token ids: generation_config.json wins, config.json fills in.
    let g = gen.map(|m| Json {
        file: "generation_config.json",
        map: m,
    });
    let mut eos: Vec<u32> = match &g {
        Some(g) => g.ids("eos_token_id")?,
        None => Vec::new(),
    };
    for id in c.ids("eos_token_id")? {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    let first = |key: &str| -> Result<Option<u32>> {
        if let Some(g) = &g {
            if let Some(&id) = g.ids(key)?.first() {
                return Ok(Some(id));
            }
        }
        Ok(c.ids(key)?.first().copied())
    };

    Ok(ModelConfig {
        arch,
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
        n_vocab,
        n_ctx_train,
        norm: if layer_norm {
            NormType::LayerNorm
        } else {
            NormType::RmsNorm
        },
        norm_eps,
        act,
        gated_mlp,
        rope,
        tie_embeddings,
        qkv_bias,
        qk_norm,
        sliding_window,
        moe,
        bos_token_id: first("bos_token_id")?,
        eos_token_ids: eos,
        pad_token_id: first("pad_token_id")?,
        add_bos: false,
        extra,
    })
}

//! Model hyper-parameters: the metadata JSON stored in every QSF file.
//!
//! Importers (GGUF, HuggingFace) fill a [`ModelConfig`]; the QSF writer stores it as JSON;
//! the engine reads it back. Every field a forward pass needs lives here.

use serde::{Deserialize, Serialize};

/// Model architecture family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Phi,
    Phi3,
    Gemma,
    Gemma2,
    Gemma3,
    Gpt2,
    Gptj,
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    DeepseekV2,
    DeepseekV3,
    GptOss,
    Olmo2,
    Starcoder2,
    Granite,
}

impl Arch {
    /// Lowercase name as used in GGUF/HF metadata.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Phi => "phi",
            Arch::Phi3 => "phi3",
            Arch::Gemma => "gemma",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
            Arch::Gpt2 => "gpt2",
            Arch::Gptj => "gptj",
            Arch::Mixtral => "mixtral",
            Arch::Qwen2Moe => "qwen2_moe",
            Arch::Qwen3Moe => "qwen3_moe",
            Arch::DeepseekV2 => "deepseek_v2",
            Arch::DeepseekV3 => "deepseek_v3",
            Arch::GptOss => "gpt_oss",
            Arch::Olmo2 => "olmo2",
            Arch::Starcoder2 => "starcoder2",
            Arch::Granite => "granite",
        }
    }

    /// The original QStream header's architecture id (docs/qsf.md).
    pub fn header_id(self) -> u32 {
        match self {
            Arch::Gpt2 => 0,
            Arch::Llama => 1,
            Arch::Mistral => 2,
            Arch::Phi | Arch::Phi3 => 3,
            Arch::Gptj => 4,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Qwen2Moe | Arch::Qwen3Moe => 5,
            Arch::Gemma | Arch::Gemma2 | Arch::Gemma3 => 6,
            Arch::Mixtral => 8,
            Arch::DeepseekV2 | Arch::DeepseekV3 => 9,
            Arch::GptOss => 10,
            Arch::Olmo2 | Arch::Starcoder2 | Arch::Granite => 128,
        }
    }

    /// Parse a GGUF `general.architecture` / HF `model_type` name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "phi" | "phi2" => Arch::Phi,
            "phi3" => Arch::Phi3,
            "gemma" => Arch::Gemma,
            "gemma2" => Arch::Gemma2,
            "gemma3" | "gemma3_text" => Arch::Gemma3,
            "gpt2" => Arch::Gpt2,
            "gptj" => Arch::Gptj,
            "mixtral" => Arch::Mixtral,
            "qwen2_moe" | "qwen2moe" => Arch::Qwen2Moe,
            "qwen3_moe" | "qwen3moe" => Arch::Qwen3Moe,
            "deepseek_v2" | "deepseek2" => Arch::DeepseekV2,
            "deepseek_v3" => Arch::DeepseekV3,
            "gpt_oss" | "gpt-oss" => Arch::GptOss,
            "olmo2" => Arch::Olmo2,
            "starcoder2" => Arch::Starcoder2,
            "granite" => Arch::Granite,
            _ => return None,
        })
    }
}

/// Normalisation layer kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NormType {
    #[default]
    RmsNorm,
    LayerNorm,
}

/// MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Silu,
    /// exact erf GELU
    Gelu,
    /// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`)
    GeluTanh,
    Relu,
}

/// How rotary dimensions are paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// rotate-half: dimension i pairs with i + d/2 (HF Llama, GGUF "NEOX").
    #[default]
    Neox,
    /// interleaved: dimension 2i pairs with 2i+1 (GPT-J, GGUF "NORM").
    Interleaved,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    Linear {
        factor: f32,
    },
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    Yarn {
        factor: f32,
        original_max_position_embeddings: usize,
        #[serde(default = "default_beta_fast")]
        beta_fast: f32,
        #[serde(default = "default_beta_slow")]
        beta_slow: f32,
        #[serde(default)]
        mscale: Option<f32>,
        #[serde(default)]
        mscale_all_dim: Option<f32>,
        #[serde(default)]
        truncate: Option<bool>,
    },
    LongRope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
        original_max_position_embeddings: usize,
    },
}

fn default_beta_fast() -> f32 {
    32.0
}
fn default_beta_slow() -> f32 {
    1.0
}

/// Rotary position embedding settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeConfig {
    pub theta: f32,
    /// number of rotated dimensions per head (≤ head_dim)
    pub dim: usize,
    #[serde(default)]
    pub style: RopeStyle,
    #[serde(default)]
    pub scaling: Option<RopeScaling>,
}

/// Mixture-of-experts settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoeConfig {
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// intermediate size of one expert
    pub expert_ff: usize,
    /// renormalise the top-k routing weights to sum to 1
    pub norm_topk_prob: bool,
    #[serde(default)]
    pub n_shared_expert: usize,
    #[serde(default)]
    pub shared_expert_ff: usize,
}

/// Everything the engine needs to run a model. Serialized as the QSF metadata JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layer: usize,
    /// hidden size
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// MLP intermediate size
    pub n_ff: usize,
    pub n_vocab: usize,
    /// context length the model was trained for
    pub n_ctx_train: usize,
    #[serde(default)]
    pub norm: NormType,
    pub norm_eps: f32,
    #[serde(default)]
    pub act: Activation,
    /// gated MLP (gate/up/down) vs plain (up/down)
    #[serde(default = "yes")]
    pub gated_mlp: bool,
    #[serde(default)]
    pub rope: Option<RopeConfig>,
    /// output head shares the token embedding
    #[serde(default)]
    pub tie_embeddings: bool,
    /// q/k/v projections carry biases
    #[serde(default)]
    pub qkv_bias: bool,
    /// per-head RMSNorm on q and k (Qwen3)
    #[serde(default)]
    pub qk_norm: bool,
    /// attention window (keys k with q − window < k ≤ q); None = full attention
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub moe: Option<MoeConfig>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// end-of-sequence ids (EOS and end-of-turn tokens); generation stops on any
    #[serde(default)]
    pub eos_token_ids: Vec<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// prepend BOS when tokenizing a prompt
    #[serde(default)]
    pub add_bos: bool,
    /// architecture-specific extras (soft-caps, multipliers, ...), free-form
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

impl ModelConfig {
    /// Check internal consistency; returns a description of the first problem.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::corrupt(format!("model config: {m}")));
        if self.n_layer == 0 || self.n_layer > 4096 {
            return bad(format!("n_layer {}", self.n_layer));
        }
        if self.n_embd == 0 || self.n_embd > 1 << 20 || self.n_vocab == 0 || self.n_vocab > 1 << 24
        {
            return bad(format!("n_embd {} n_vocab {}", self.n_embd, self.n_vocab));
        }
        if self.n_head == 0 || self.n_head_kv == 0 || !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "n_head {} n_head_kv {}",
                self.n_head, self.n_head_kv
            ));
        }
        if self.head_dim == 0 || self.head_dim > 4096 {
            return bad(format!("head_dim {}", self.head_dim));
        }
        if let Some(r) = &self.rope {
            if r.dim > self.head_dim || r.dim % 2 != 0 {
                return bad(format!("rope dim {} head_dim {}", r.dim, self.head_dim));
            }
        }
        Ok(())
    }

    /// A float from `extra`, if present.
    pub fn extra_f32(&self, key: &str) -> Option<f32> {
        self.extra
            .get(key)
            .and_then(|v| v.as_f64())
            .map(|v| v as f32)
    }
}

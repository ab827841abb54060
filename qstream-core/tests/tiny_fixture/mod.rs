//! Loads the tiny HuggingFace fixtures (`tests/fixtures/tiny/<arch>`) and their
//! transformers reference outputs for the engine tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use qstream_core::engine::{Model, ModelParams};
use qstream_core::import::TokenizerData;
use qstream_core::model::config::{RopeConfig, RopeScaling, RopeStyle};
use qstream_core::model::{Arch, ModelConfig};
use qstream_core::tensor::Tensor;
use safetensors::SafeTensors;
use serde_json::Value;

/// The fixture folder of `name` (`llama`, `mistral`, ...).
pub fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny")
        .join(name)
}

/// transformers' outputs for a fixture.
pub struct Reference {
    pub input_ids: Vec<u32>,
    /// `[input_ids.len()][vocab]`
    pub logits: Vec<f32>,
    pub gen_ids: Vec<u32>,
    /// `[gen_ids.len()][vocab]`
    pub gen_logits: Vec<f32>,
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn ids(st: &SafeTensors, name: &str) -> Vec<u32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

pub fn reference(name: &str) -> Reference {
    let bytes = std::fs::read(dir(name).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    Reference {
        input_ids: ids(&st, "input_ids"),
        logits: f32s(&st, "logits"),
        gen_ids: ids(&st, "gen_ids"),
        gen_logits: f32s(&st, "gen_logits"),
    }
}

/// HF `config.json` → [`ModelConfig`] for the Llama family.
fn config(hf: &Value) -> ModelConfig {
    let u = |k: &str| hf[k].as_u64().unwrap_or_else(|| panic!("config {k}")) as usize;
    let arch = Arch::from_name(hf["model_type"].as_str().unwrap()).unwrap();
    let n_head = u("num_attention_heads");
    let head_dim = hf["head_dim"]
        .as_u64()
        .map_or(u("hidden_size") / n_head, |v| v as usize);
    let rp = &hf["rope_parameters"];
    let scaling = match rp["rope_type"].as_str() {
        Some("llama3") => Some(RopeScaling::Llama3 {
            factor: rp["factor"].as_f64().unwrap() as f32,
            low_freq_factor: rp["low_freq_factor"].as_f64().unwrap() as f32,
            high_freq_factor: rp["high_freq_factor"].as_f64().unwrap() as f32,
            original_max_position_embeddings: rp["original_max_position_embeddings"]
                .as_u64()
                .unwrap() as usize,
        }),
        Some("linear") => Some(RopeScaling::Linear {
            factor: rp["factor"].as_f64().unwrap() as f32,
        }),
        Some("default") | None => None,
        Some(other) => panic!("rope type {other}"),
    };
    let use_window = hf["use_sliding_window"].as_bool().unwrap_or(true);
    ModelConfig {
        arch,
        n_layer: u("num_hidden_layers"),
        n_embd: u("hidden_size"),
        n_head,
        n_head_kv: u("num_key_value_heads"),
        head_dim,
        n_ff: u("intermediate_size"),
        n_vocab: u("vocab_size"),
        n_ctx_train: u("max_position_embeddings"),
        norm: Default::default(),
        norm_eps: hf["rms_norm_eps"].as_f64().unwrap() as f32,
        act: Default::default(),
        gated_mlp: true,
        rope: Some(RopeConfig {
            theta: rp["rope_theta"].as_f64().unwrap() as f32,
            dim: head_dim,
            style: RopeStyle::Neox,
            scaling,
        }),
        tie_embeddings: hf["tie_word_embeddings"].as_bool().unwrap_or(false),
        qkv_bias: arch == Arch::Qwen2 || hf["attention_bias"].as_bool().unwrap_or(false),
        qk_norm: arch == Arch::Qwen3,
        sliding_window: if use_window {
            hf["sliding_window"].as_u64().map(|v| v as usize)
        } else {
            None
        },
        moe: None,
        bos_token_id: hf["bos_token_id"].as_u64().map(|v| v as u32),
        eos_token_ids: hf["eos_token_id"]
            .as_u64()
            .map(|v| v as u32)
            .into_iter()
            .collect(),
        pad_token_id: hf["pad_token_id"].as_u64().map(|v| v as u32),
        add_bos: false,
        extra: Default::default(),
    }
}

/// HF tensor name → canonical name.
fn canonical(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd".into(),
        "model.norm.weight" => return "output_norm".into(),
        "lm_head.weight" => return "output".into(),
        _ => {}
    }
    let rest = hf
        .strip_prefix("model.layers.")
        .unwrap_or_else(|| panic!("tensor {hf}"));
    let (i, rest) = rest.split_once('.').unwrap();
    let (module, suffix) = rest.rsplit_once('.').unwrap();
    let base = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        m => panic!("module {m}"),
    };
    match suffix {
        "weight" => format!("blk.{i}.{base}"),
        "bias" => format!("blk.{i}.{base}.bias"),
        s => panic!("suffix {s}"),
    }
}

/// The fixture's config, tokenizer and f32 tensors under canonical names.
pub fn parts(name: &str) -> (ModelConfig, TokenizerData, HashMap<String, Tensor>) {
    let d = dir(name);
    let hf: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    let cfg = config(&hf);
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = HashMap::new();
    for (hf_name, view) in st.tensors() {
        let name = canonical(&hf_name);
        let data = f32s(&st, &hf_name);
        tensors.insert(
            name.clone(),
            Tensor::from_f32(&name, view.shape().to_vec(), &data),
        );
    }
    let tok = TokenizerData {
        tokenizer_json: std::fs::read_to_string(d.join("tokenizer.json")).unwrap(),
        chat_template: std::fs::read_to_string(d.join("chat_template.jinja")).ok(),
        special_tokens: vec![],
    };
    (cfg, tok, tensors)
}

/// The fixture as an engine model.
pub fn model(name: &str, n_threads: usize) -> Arc<Model> {
    let (cfg, tok, tensors) = parts(name);
    Model::from_parts(
        cfg,
        tok,
        tensors,
        &ModelParams {
            n_threads,
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

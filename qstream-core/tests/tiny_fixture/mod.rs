//! Loads the tiny HuggingFace fixtures (`tests/fixtures/tiny/<arch>`) and their
//! transformers reference outputs for the engine tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use qstream_core::engine::{Model, ModelParams};
use qstream_core::import::hf::HfModel;
use qstream_core::import::ModelSource;
use qstream_core::import::TokenizerData;
use qstream_core::model::ModelConfig;
use qstream_core::tensor::Tensor;
use safetensors::SafeTensors;

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

/// The fixture's config, tokenizer and f32 tensors under canonical names, read by the
/// real HuggingFace importer (`import::hf::HfModel`).
pub fn parts(name: &str) -> (ModelConfig, TokenizerData, HashMap<String, Tensor>) {
    let src = HfModel::open(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut tensors = HashMap::new();
    for t in src.tensors() {
        let data = src
            .load_f32(&t.name)
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        tensors.insert(
            t.name.clone(),
            Tensor::from_f32(&t.name, t.shape.clone(), &data),
        );
    }
    (src.config().clone(), src.tokenizer().clone(), tensors)
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

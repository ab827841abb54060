//! Fuzz the HuggingFace folder importer. Input: `[config_len u16][config.json][model.safetensors]`;
//! the folder also gets the tiny Llama fixture's tokenizer files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qstream_core::import::hf::HfModel;
use qstream_core::import::ModelSource;

const TOKENIZER: &str = include_str!("../../tests/fixtures/tiny/llama/tokenizer.json");
const TOKENIZER_CONFIG: &str = include_str!("../../tests/fixtures/tiny/llama/tokenizer_config.json");

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let (config, st) = rest.split_at(n.min(rest.len()));
    let dir = std::env::temp_dir().join(format!("qstream-fuzz-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), st).unwrap();
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), TOKENIZER_CONFIG).unwrap();
    if let Ok(m) = HfModel::open(&dir) {
        let names: Vec<String> = m.tensors().iter().map(|t| t.name.clone()).collect();
        for n in names {
            let _ = m.load_f32(&n);
        }
    }
});

//! Fuzz the GGUF importer: open, then decode every tensor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qstream_core::import::gguf::GgufModel;
use qstream_core::import::ModelSource;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("qstream-fuzz-gguf-{}.gguf", std::process::id()));
    std::fs::write(&path, data).unwrap();
    if let Ok(m) = GgufModel::open(&path) {
        let names: Vec<String> = m.tensors().iter().map(|t| t.name.clone()).collect();
        for n in names {
            let _ = m.load_f32(&n);
            let _ = m.load_native(&n);
        }
    }
});

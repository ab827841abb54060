//! Tokenizers synthesised from GGUF vocabularies vs transformers' GGUF loader.
//!
//! Reference ids: tests/data/tokenizer/make_smollm2_ids.py ran
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)` on the SmolLM2 GGUF (byte-level BPE)
//! and on a tiny SentencePiece-style GGUF it builds with gguf-py (tiny_spm.gguf.bin).

mod common;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use qstream_core::import::gguf::GgufModel;
use qstream_core::import::ModelSource;

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tokenizer")
        .join(p)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Check every case in `golden` against the tokenizer built from `gguf`.
fn check(gguf: &Path, golden: &str) {
    let m = GgufModel::open(gguf).unwrap();
    let json = &m.tokenizer().tokenizer_json;
    let tok = tokenizers::Tokenizer::from_str(json).unwrap();
    // The engine's wrapper (BOS handling from the config) must agree too.
    let wrapped = qstream_core::tokenizer::Tokenizer::from_data(m.tokenizer(), m.config()).unwrap();
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data(golden)).unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        let want_special = ids(&c["ids_add_special"]);
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        if got != want {
            failures.push(format!("encode {text:?}: got {got:?}, want {want:?}"));
            continue;
        }
        let got = tok.encode(text, true).unwrap().get_ids().to_vec();
        if got != want_special {
            failures.push(format!(
                "encode+special {text:?}: got {got:?}, want {want_special:?}"
            ));
        }
        let got = wrapped.encode(text, true).unwrap();
        if got != want_special {
            failures.push(format!(
                "wrapper encode {text:?}: got {got:?}, want {want_special:?}"
            ));
        }
        for (skip, key) in [(false, "decode"), (true, "decode_skip_special")] {
            let got = tok.decode(&want, skip).unwrap();
            let want_text = c[key].as_str().unwrap();
            if got != want_text {
                failures.push(format!("{key} {text:?}: got {got:?}, want {want_text:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_gguf_tokenizer_matches_transformers() {
    // skipped with a note when absent; a failure in CI or with QSTREAM_SMOLLM2_GGUF set
    let Some(p) = common::smollm2::gguf_path() else {
        return;
    };
    check(&p, "smollm2_ids.json");
}

#[test]
fn sentencepiece_gguf_tokenizer_matches_transformers() {
    check(&data("tiny_spm.gguf.bin"), "tiny_spm_ids.json");
}

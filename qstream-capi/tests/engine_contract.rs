//! Issue 25 (b) through the C ABI: the sampler never reads stale logits after a truncate,
//! sampling and conversion parameters are checked by core's one rule set (before any
//! work), and a refused RAM budget is a typed status.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::null_mut;

use qstream::status::*;
use qstream::*;

const OK: i32 = QS_STATUS_OK as i32;
const INVALID: i32 = QS_STATUS_INVALID_ARGUMENT as i32;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny/llama")
}

fn last_error() -> String {
    // SAFETY: NUL-terminated, owned by this thread.
    unsafe { CStr::from_ptr(qs_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn prompt() -> Vec<u32> {
    let s = std::fs::read_to_string(fixture_dir().join("reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The tiny fixture as an f32 QSF in `dir`.
fn tiny_qsf(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.qsf");
    let mut p = qs_convert_default_params();
    p.quant_type = qs_quant_type::QS_QUANT_F32 as u32;
    let (src, dst) = (cpath(&fixture_dir()), cpath(&path));
    // SAFETY: valid NUL-terminated paths and params.
    let st = unsafe { qs_convert(src.as_ptr(), dst.as_ptr(), &p, None, null_mut()) };
    assert_eq!(st, OK, "{}", last_error());
    path
}

#[test]
fn sampler_after_truncate_uses_the_new_last_token() {
    let dir = tempfile::tempdir().unwrap();
    let qsf = cpath(&tiny_qsf(dir.path()));
    let ids = prompt();
    // SAFETY: valid arguments; handles freed once at the end.
    unsafe {
        let mp = qs_model_default_params();
        let cp = qs_context_default_params();
        let (mut m, mut c, mut fresh) = (null_mut(), null_mut(), null_mut());
        assert_eq!(
            qs_model_load(qsf.as_ptr(), &mp, &mut m),
            OK,
            "{}",
            last_error()
        );
        assert_eq!(qs_context_new(m, &cp, &mut c), OK);
        assert_eq!(qs_context_new(m, &cp, &mut fresh), OK);
        let mut sp = qs_sampling_default_params();
        sp.temperature = 0.0;
        let mut s = null_mut();
        assert_eq!(qs_sampler_new(&sp, &mut s), OK);

        // reference: a context holding only the first 10 tokens
        assert_eq!(qs_context_decode(fresh, ids.as_ptr(), 10), OK);
        let (mut want, mut got) = (0u32, 0u32);
        assert_eq!(qs_sampler_sample(s, fresh, &mut want), OK);
        let mut lp = std::ptr::null();
        let mut nv = 0usize;
        assert_eq!(qs_context_logits(fresh, &mut lp, &mut nv), OK);
        let want_logits = std::slice::from_raw_parts(lp, nv).to_vec();

        // the whole prompt, then truncated to 10: before the fix this sampled from the
        // logits of the removed position 23
        assert_eq!(qs_context_decode(c, ids.as_ptr(), ids.len()), OK);
        let mut stale = 0u32;
        assert_eq!(qs_sampler_sample(s, c, &mut stale), OK);
        assert_eq!(qs_context_truncate(c, 10), OK);
        assert_eq!(qs_sampler_sample(s, c, &mut got), OK, "{}", last_error());
        assert_eq!(got, want);
        assert_eq!(qs_context_n_past(c), 10);
        assert_eq!(qs_context_logits(c, &mut lp, &mut nv), OK);
        let got_logits = std::slice::from_raw_parts(lp, nv);
        let d = got_logits
            .iter()
            .zip(&want_logits)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(d <= 1e-5, "logits after truncate differ by {d}");

        qs_sampler_free(s);
        qs_context_free(fresh);
        qs_context_free(c);
        qs_model_free(m);
    }
}

#[test]
fn sampling_params_follow_core_rules() {
    // Before: the C API accepted top_p = 0 and any repeat penalty.
    let mut bad = Vec::new();
    let mut sp = qs_sampling_default_params();
    sp.top_p = 0.0;
    bad.push(sp);
    let mut sp = qs_sampling_default_params();
    sp.repeat_penalty = -1.0;
    bad.push(sp);
    let mut sp = qs_sampling_default_params();
    sp.repeat_penalty = 0.0;
    bad.push(sp);
    let mut sp = qs_sampling_default_params();
    sp.min_p = 1.5;
    bad.push(sp);
    for sp in bad {
        let mut s = null_mut();
        // SAFETY: valid pointers.
        let st = unsafe { qs_sampler_new(&sp, &mut s) };
        assert_eq!(
            st, INVALID,
            "top_p {} repeat {}",
            sp.top_p, sp.repeat_penalty
        );
        assert!(s.is_null());
    }
    let sp = qs_sampling_default_params();
    let mut s = null_mut();
    // SAFETY: valid pointers; freed once.
    unsafe {
        assert_eq!(qs_sampler_new(&sp, &mut s), OK);
        qs_sampler_free(s);
    }
}

#[test]
fn convert_params_follow_core_rules_before_any_work() {
    // Before: outlier_frac was checked against [0, 1) here and [0, 0.5) in core, after the
    // source was opened, so a missing source hid the bad argument (NOT_FOUND).
    let dir = tempfile::tempdir().unwrap();
    let src = cpath(&dir.path().join("does-not-exist.gguf"));
    let dst = cpath(&dir.path().join("out.qsf"));
    for frac in [0.7f32, 0.5, -0.1, f32::NAN] {
        let mut p = qs_convert_default_params();
        p.outlier_frac = frac;
        // SAFETY: valid NUL-terminated paths and params.
        let st = unsafe { qs_convert(src.as_ptr(), dst.as_ptr(), &p, None, null_mut()) };
        assert_eq!(st, INVALID, "outlier_frac {frac}: {}", last_error());
        assert!(last_error().contains("outlier"), "{}", last_error());
    }
    let mut p = qs_convert_default_params();
    p.block_size = 48;
    // SAFETY: as above.
    let st = unsafe { qs_convert(src.as_ptr(), dst.as_ptr(), &p, None, null_mut()) };
    assert_eq!(st, INVALID, "{}", last_error());
    // a valid request on the missing file: NOT_FOUND
    let p = qs_convert_default_params();
    // SAFETY: as above.
    let st = unsafe { qs_convert(src.as_ptr(), dst.as_ptr(), &p, None, null_mut()) };
    assert_eq!(st, QS_STATUS_NOT_FOUND as i32, "{}", last_error());
}

#[test]
fn ram_budget_maps_to_budget_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let qsf = cpath(&tiny_qsf(dir.path()));
    let mut mp = qs_model_default_params();
    mp.ram_budget_bytes = 1000;
    let mut m = null_mut();
    // SAFETY: valid arguments.
    let st = unsafe { qs_model_load(qsf.as_ptr(), &mp, &mut m) };
    assert_eq!(st, QS_STATUS_BUDGET_EXCEEDED as i32, "{}", last_error());
    assert!(m.is_null());
}

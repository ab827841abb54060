//! The C ABI called through the rlib: NULL arguments, buffer sizing, file errors,
//! params versioning, and greedy generation against the transformers reference of the
//! tiny llama fixture.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use qstream::status::*;
use qstream::*;

const OK: i32 = QS_STATUS_OK as i32;
const NULL_ARG: i32 = QS_STATUS_NULL_ARGUMENT as i32;
const INVALID: i32 = QS_STATUS_INVALID_ARGUMENT as i32;
const TOO_SMALL: i32 = QS_STATUS_BUFFER_TOO_SMALL as i32;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny/llama")
}

/// The tiny llama fixture converted to QSF (f32) in a temporary directory of its own; the
/// directory and everything a test writes into it are removed on drop. Converting the tiny
/// fixture takes milliseconds, so every test gets a fresh copy.
struct TinyQsf {
    dir: tempfile::TempDir,
    path: PathBuf,
}

fn tiny_qsf() -> TinyQsf {
    let dir = tempfile::Builder::new()
        .prefix("qs_capi_api_")
        .tempdir()
        .unwrap();
    let path = dir.path().join("tiny.qsf");
    let src = CString::new(fixture_dir().to_str().unwrap()).unwrap();
    let dst = CString::new(path.to_str().unwrap()).unwrap();
    let mut p = qs_convert_default_params();
    p.quant_type = qs_quant_type::QS_QUANT_F32 as u32;
    // SAFETY: valid NUL-terminated paths and params.
    let st = unsafe { qs_convert(src.as_ptr(), dst.as_ptr(), &p, None, null_mut()) };
    assert_eq!(st, OK, "{}", last_error());
    TinyQsf { dir, path }
}

fn reference() -> serde_json::Value {
    let s = std::fs::read_to_string(fixture_dir().join("reference.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn ids(v: &serde_json::Value, key: &str) -> Vec<u32> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
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

struct Loaded {
    m: *mut qs_model,
    c: *mut qs_context,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: handles from load(), freed once.
        unsafe {
            qs_context_free(self.c);
            qs_model_free(self.m);
        }
    }
}

/// Load `qsf` with a context; `qsf` must outlive the returned handles.
fn load(qsf: &TinyQsf) -> Loaded {
    let path = cpath(&qsf.path);
    let mp = qs_model_default_params();
    let cp = qs_context_default_params();
    let mut m = null_mut();
    let mut c = null_mut();
    // SAFETY: valid arguments.
    unsafe {
        assert_eq!(
            qs_model_load(path.as_ptr(), &mp, &mut m),
            OK,
            "{}",
            last_error()
        );
        assert_eq!(qs_context_new(m, &cp, &mut c), OK, "{}", last_error());
    }
    Loaded { m, c }
}

#[test]
fn version_and_status_names() {
    // SAFETY: static strings.
    let v = unsafe { CStr::from_ptr(qs_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    assert_eq!(qs_abi_version(), QS_ABI_VERSION);
    let name = |s: i32| {
        unsafe { CStr::from_ptr(qs_status_str(s)) }
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(name(0), "QS_STATUS_OK");
    assert_eq!(name(204), "QS_STATUS_CORRUPT");
    assert_eq!(name(900), "QS_STATUS_PANIC");
    assert_eq!(name(12345), "QS_STATUS_UNKNOWN");
    for c in qs_status_code::ALL {
        assert_eq!(qs_status_code::from_i32(c as i32), Some(c));
        assert_eq!(name(c as i32), c.name().trim_end_matches('\0'));
    }
    // SAFETY: static strings
    let q = unsafe { CStr::from_ptr(qs_quant_type_name(qs_quant_type::QS_QUANT_Q4_SYM as u32)) };
    assert_eq!(q.to_str().unwrap(), "q4_sym");
    assert!(qs_quant_type_name(1).is_null());
    assert_eq!(qs_log_set(None, null_mut(), 99), INVALID);
}

#[test]
fn missing_corrupt_and_foreign_files() {
    let mp = qs_model_default_params();
    let mut m = null_mut();
    let t = tiny_qsf();
    let dir = t.dir.path();
    // SAFETY: valid arguments throughout.
    unsafe {
        let missing = cpath(&dir.join("does-not-exist.qsf"));
        assert_eq!(
            qs_model_load(missing.as_ptr(), &mp, &mut m),
            QS_STATUS_NOT_FOUND as i32
        );
        assert!(m.is_null());
        assert!(
            last_error().contains("does-not-exist.qsf"),
            "{}",
            last_error()
        );

        // truncated copy → a 2xx file/format code
        let bytes = std::fs::read(&t.path).unwrap();
        for cut in [16usize, 200, bytes.len() / 2, bytes.len() - 8] {
            let p = dir.join(format!("trunc_{cut}.qsf"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let st = qs_model_load(cpath(&p).as_ptr(), &mp, &mut m);
            assert!(
                (200..300).contains(&st),
                "cut {cut}: status {st} ({})",
                last_error()
            );
            assert!(m.is_null());
        }
        // not a QSF file
        let p = dir.join("foreign.qsf");
        std::fs::write(&p, vec![0x5Au8; 4096]).unwrap();
        assert_eq!(
            qs_model_load(cpath(&p).as_ptr(), &mp, &mut m),
            QS_STATUS_BAD_MAGIC as i32
        );
    }
}

#[test]
fn null_arguments() {
    let t = tiny_qsf();
    let l = load(&t);
    let path = cpath(&t.path);
    let mp = qs_model_default_params();
    let cp = qs_context_default_params();
    let sp = qs_sampling_default_params();
    let gp = qs_generate_default_params();
    let vp = qs_convert_default_params();
    let mut m = null_mut();
    let mut c = null_mut();
    let mut s = null_mut();
    let mut n = 0usize;
    let mut tok = 0u32;
    let mut buf = [0 as c_char; 64];
    let mut toks = [0u32; 64];
    let text = b"hi".as_ptr().cast::<c_char>();
    let one = [1u32];
    let msg = qs_chat_message {
        role: c"user".as_ptr(),
        content: c"hi".as_ptr(),
    };
    let bad_msg = qs_chat_message {
        role: null(),
        content: c"hi".as_ptr(),
    };
    // SAFETY: every call passes NULL for exactly one required pointer; the rest is valid.
    unsafe {
        let cases: Vec<(&str, i32)> = vec![
            ("load path", qs_model_load(null(), &mp, &mut m)),
            ("load params", qs_model_load(path.as_ptr(), null(), &mut m)),
            ("load out", qs_model_load(path.as_ptr(), &mp, null_mut())),
            ("ctx model", qs_context_new(null(), &cp, &mut c)),
            ("ctx params", qs_context_new(l.m, null(), &mut c)),
            ("ctx out", qs_context_new(l.m, &cp, null_mut())),
            (
                "tok model",
                qs_tokenize(null(), text, 2, true, toks.as_mut_ptr(), 64, &mut n),
            ),
            (
                "tok text",
                qs_tokenize(l.m, null(), 2, true, toks.as_mut_ptr(), 64, &mut n),
            ),
            (
                "tok out",
                qs_tokenize(l.m, text, 2, true, null_mut(), 64, &mut n),
            ),
            (
                "tok out_len",
                qs_tokenize(l.m, text, 2, true, toks.as_mut_ptr(), 64, null_mut()),
            ),
            (
                "detok model",
                qs_detokenize(null(), one.as_ptr(), 1, buf.as_mut_ptr(), 64, &mut n),
            ),
            (
                "detok tokens",
                qs_detokenize(l.m, null(), 1, buf.as_mut_ptr(), 64, &mut n),
            ),
            (
                "detok out",
                qs_detokenize(l.m, one.as_ptr(), 1, null_mut(), 64, &mut n),
            ),
            (
                "detok out_len",
                qs_detokenize(l.m, one.as_ptr(), 1, buf.as_mut_ptr(), 64, null_mut()),
            ),
            (
                "piece model",
                qs_token_to_piece(null(), 1, buf.as_mut_ptr(), 64, &mut n),
            ),
            (
                "piece out",
                qs_token_to_piece(l.m, 1, null_mut(), 64, &mut n),
            ),
            (
                "piece out_len",
                qs_token_to_piece(l.m, 1, buf.as_mut_ptr(), 64, null_mut()),
            ),
            ("decode ctx", qs_context_decode(null_mut(), one.as_ptr(), 1)),
            ("decode tokens", qs_context_decode(l.c, null(), 1)),
            (
                "logits ctx",
                qs_context_logits(null_mut(), &mut null(), &mut n),
            ),
            ("logits out", qs_context_logits(l.c, null_mut(), &mut n)),
            ("logits n", qs_context_logits(l.c, &mut null(), null_mut())),
            ("reset", qs_context_reset(null_mut())),
            ("truncate", qs_context_truncate(null_mut(), 0)),
            ("cancel", qs_context_cancel(null())),
            ("ctx model out", qs_context_model(l.c, null_mut())),
            ("ctx model ctx", qs_context_model(null(), &mut m)),
            ("sampler params", qs_sampler_new(null(), &mut s)),
            ("sampler out", qs_sampler_new(&sp, null_mut())),
            (
                "sample sampler",
                qs_sampler_sample(null_mut(), l.c, &mut tok),
            ),
            (
                "gen ctx",
                qs_generate(null_mut(), text, 2, &gp, None, null_mut(), null_mut()),
            ),
            (
                "gen prompt",
                qs_generate(l.c, null(), 2, &gp, None, null_mut(), null_mut()),
            ),
            (
                "gen params",
                qs_generate(l.c, text, 2, null(), None, null_mut(), null_mut()),
            ),
            (
                "gent ctx",
                qs_generate_tokens(
                    null_mut(),
                    one.as_ptr(),
                    1,
                    &gp,
                    None,
                    null_mut(),
                    null_mut(),
                ),
            ),
            (
                "gent tokens",
                qs_generate_tokens(l.c, null(), 1, &gp, None, null_mut(), null_mut()),
            ),
            (
                "gent params",
                qs_generate_tokens(l.c, one.as_ptr(), 1, null(), None, null_mut(), null_mut()),
            ),
            (
                "chat model",
                qs_chat_apply_template(null(), &msg, 1, true, buf.as_mut_ptr(), 64, &mut n),
            ),
            (
                "chat msgs",
                qs_chat_apply_template(l.m, null(), 1, true, buf.as_mut_ptr(), 64, &mut n),
            ),
            (
                "chat role",
                qs_chat_apply_template(l.m, &bad_msg, 1, true, buf.as_mut_ptr(), 64, &mut n),
            ),
            (
                "chat out",
                qs_chat_apply_template(l.m, &msg, 1, true, null_mut(), 64, &mut n),
            ),
            (
                "chat out_len",
                qs_chat_apply_template(l.m, &msg, 1, true, buf.as_mut_ptr(), 64, null_mut()),
            ),
            (
                "convert src",
                qs_convert(null(), path.as_ptr(), &vp, None, null_mut()),
            ),
            (
                "convert dst",
                qs_convert(path.as_ptr(), null(), &vp, None, null_mut()),
            ),
            (
                "convert params",
                qs_convert(path.as_ptr(), path.as_ptr(), null(), None, null_mut()),
            ),
        ];
        for (what, st) in &cases {
            assert_eq!(*st, NULL_ARG, "{what}: {st}");
        }
        // sampler with a NULL context / NULL output
        assert_eq!(qs_sampler_new(&sp, &mut s), OK);
        assert_eq!(qs_sampler_sample(s, null_mut(), &mut tok), NULL_ARG);
        assert_eq!(qs_sampler_sample(s, l.c, null_mut()), NULL_ARG);
        qs_sampler_free(s);
        assert!(m.is_null() && c.is_null());
        // getters on NULL
        assert_eq!(qs_model_n_vocab(null()), 0);
        assert!(qs_model_arch(null()).is_null());
        assert_eq!(qs_model_bos(null()), QS_TOKEN_NULL);
        assert_eq!(qs_context_n_past(null()), 0);
        // free(NULL) is a no-op
        qs_model_free(null_mut());
        qs_context_free(null_mut());
        qs_sampler_free(null_mut());
    }
}

#[test]
fn buffers_report_needed_size() {
    let t = tiny_qsf();
    let l = load(&t);
    let text = "Hello world, this is a test";
    let mut n = 0usize;
    // SAFETY: valid arguments; buffers sized as passed.
    unsafe {
        // sizing call
        let st = qs_tokenize(
            l.m,
            text.as_ptr().cast(),
            text.len(),
            true,
            null_mut(),
            0,
            &mut n,
        );
        assert_eq!(st, TOO_SMALL);
        assert!(n > 2);
        let need = n;
        let mut small = vec![0u32; need - 1];
        assert_eq!(
            qs_tokenize(
                l.m,
                text.as_ptr().cast(),
                text.len(),
                true,
                small.as_mut_ptr(),
                need - 1,
                &mut n
            ),
            TOO_SMALL
        );
        assert_eq!(n, need);
        let mut toks = vec![0u32; need];
        assert_eq!(
            qs_tokenize(
                l.m,
                text.as_ptr().cast(),
                text.len(),
                true,
                toks.as_mut_ptr(),
                need,
                &mut n
            ),
            OK
        );
        assert_eq!(n, need);

        // detokenize: needed = bytes + NUL
        assert_eq!(
            qs_detokenize(l.m, toks.as_ptr(), need, null_mut(), 0, &mut n),
            TOO_SMALL
        );
        let need_bytes = n;
        let mut buf = vec![0 as c_char; need_bytes];
        assert_eq!(
            qs_detokenize(
                l.m,
                toks.as_ptr(),
                need,
                buf.as_mut_ptr(),
                need_bytes - 1,
                &mut n
            ),
            TOO_SMALL
        );
        assert_eq!(n, need_bytes);
        assert_eq!(
            qs_detokenize(
                l.m,
                toks.as_ptr(),
                need,
                buf.as_mut_ptr(),
                need_bytes,
                &mut n
            ),
            OK
        );
        assert_eq!(n, need_bytes - 1);
        let s = CStr::from_ptr(buf.as_ptr()).to_str().unwrap();
        assert_eq!(s.len(), n);
        assert!(s.contains("Hello world"), "{s:?}");

        // chat template
        let msg = qs_chat_message {
            role: c"user".as_ptr(),
            content: c"hi there".as_ptr(),
        };
        assert_eq!(
            qs_chat_apply_template(l.m, &msg, 1, true, null_mut(), 0, &mut n),
            TOO_SMALL
        );
        let mut buf = vec![0 as c_char; n];
        assert_eq!(
            qs_chat_apply_template(l.m, &msg, 1, true, buf.as_mut_ptr(), buf.len(), &mut n),
            OK
        );
        let s = CStr::from_ptr(buf.as_ptr()).to_str().unwrap();
        assert!(s.contains("hi there"), "{s:?}");

        // piece
        assert_eq!(
            qs_token_to_piece(l.m, toks[1], null_mut(), 0, &mut n),
            TOO_SMALL
        );
        assert!(n >= 1);
        // out of range / bad arguments
        let nv = qs_model_n_vocab(l.m);
        assert_eq!(nv, 512);
        assert_eq!(qs_token_to_piece(l.m, nv, null_mut(), 0, &mut n), INVALID);
        let bad = [nv];
        assert_eq!(qs_context_decode(l.c, bad.as_ptr(), 1), INVALID);
        assert_eq!(qs_context_decode(l.c, toks.as_ptr(), 0), INVALID);
        // invalid UTF-8
        let bytes = [0xffu8, 0xfe];
        let st = qs_tokenize(l.m, bytes.as_ptr().cast(), 2, true, null_mut(), 0, &mut n);
        assert_eq!(st, QS_STATUS_INVALID_UTF8 as i32);
    }
}

#[test]
fn params_struct_size_is_checked() {
    let t = tiny_qsf();
    let l = load(&t);
    let mut c = null_mut();
    // SAFETY: valid arguments.
    unsafe {
        let mut cp = qs_context_default_params();
        cp.struct_size = 0;
        assert_eq!(qs_context_new(l.m, &cp, &mut c), INVALID);
        cp.struct_size = 1000;
        assert_eq!(qs_context_new(l.m, &cp, &mut c), INVALID);
        // an older caller that only knows the first two fields gets defaults for the rest
        cp = qs_context_default_params();
        cp.struct_size = 8;
        cp.n_ctx = 32;
        cp.kv_type = 77; // beyond struct_size: ignored
        assert_eq!(qs_context_new(l.m, &cp, &mut c), OK, "{}", last_error());
        assert_eq!(qs_context_n_ctx(c), 32);
        // context full leaves the state unchanged
        let many = [1u32; 33];
        assert_eq!(
            qs_context_decode(c, many.as_ptr(), 33),
            QS_STATUS_CONTEXT_FULL as i32
        );
        assert_eq!(qs_context_n_past(c), 0);
        qs_context_free(c);
        let mut cp = qs_context_default_params();
        cp.kv_type = 9;
        assert_eq!(qs_context_new(l.m, &cp, &mut c), INVALID);
    }
}

extern "C" fn collect(userdata: *mut c_void, piece: *const c_char, len: usize, token: u32) -> bool {
    // SAFETY: userdata is the Vec passed by the test; piece is NUL-terminated of len bytes.
    unsafe {
        let v = &mut *(userdata as *mut (Vec<u32>, String));
        v.0.push(token);
        assert_eq!(CStr::from_ptr(piece).to_bytes().len(), len);
        v.1.push_str(
            std::str::from_utf8(std::slice::from_raw_parts(piece.cast::<u8>(), len)).unwrap(),
        );
    }
    true
}

#[test]
fn greedy_generation_matches_transformers() {
    let r = reference();
    let prompt = ids(&r, "input_ids");
    let want = ids(&r, "greedy_ids");
    let t = tiny_qsf();
    let l = load(&t);
    // SAFETY: valid arguments.
    unsafe {
        let mut sp = qs_sampling_default_params();
        sp.temperature = 0.0;
        let mut gp = qs_generate_default_params();
        gp.max_tokens = want.len() as u32;
        gp.sampling = &sp;
        gp.stop_on_eos = false;
        let mut got: (Vec<u32>, String) = (Vec::new(), String::new());
        let mut res = qs_generate_result {
            struct_size: std::mem::size_of::<qs_generate_result>() as u32,
            ..std::mem::zeroed()
        };
        let st = qs_generate_tokens(
            l.c,
            prompt.as_ptr(),
            prompt.len(),
            &gp,
            Some(collect),
            (&mut got as *mut (Vec<u32>, String)).cast(),
            &mut res,
        );
        assert_eq!(st, OK, "{}", last_error());
        assert_eq!(got.0, want);
        assert_eq!(res.n_generated as usize, want.len());
        assert_eq!(res.n_prompt as usize, prompt.len());
        assert_eq!(res.stop_reason, qs_stop_reason::QS_STOP_MAX_TOKENS as u32);

        // the step API gives the same tokens
        assert_eq!(qs_context_reset(l.c), OK);
        let mut s = null_mut();
        assert_eq!(qs_sampler_new(&sp, &mut s), OK);
        let mut tok = 0u32;
        assert_eq!(
            qs_sampler_sample(s, l.c, &mut tok),
            INVALID,
            "no logits before decode"
        );
        assert_eq!(qs_context_decode(l.c, prompt.as_ptr(), prompt.len()), OK);
        let mut step = Vec::new();
        for _ in 0..want.len() {
            assert_eq!(qs_sampler_sample(s, l.c, &mut tok), OK);
            step.push(tok);
            assert_eq!(qs_context_decode(l.c, &tok, 1), OK);
        }
        qs_sampler_free(s);
        assert_eq!(step, want);
        assert_eq!(qs_context_n_past(l.c), prompt.len() + want.len());
        let mut lp: *const f32 = null();
        let mut nv = 0usize;
        assert_eq!(qs_context_logits(l.c, &mut lp, &mut nv), OK);
        assert_eq!(nv, 512);

        // stop early from the callback
        extern "C" fn stop_after_one(_: *mut c_void, _: *const c_char, _: usize, _: u32) -> bool {
            false
        }
        assert_eq!(qs_context_reset(l.c), OK);
        let st = qs_generate_tokens(
            l.c,
            prompt.as_ptr(),
            prompt.len(),
            &gp,
            Some(stop_after_one),
            null_mut(),
            &mut res,
        );
        assert_eq!(st, OK);
        assert_eq!(res.stop_reason, qs_stop_reason::QS_STOP_CALLBACK as u32);
        assert_eq!(res.n_generated, 1);
    }
}

#[test]
fn model_metadata() {
    let t = tiny_qsf();
    let l = load(&t);
    // SAFETY: valid handle.
    unsafe {
        assert_eq!(
            CStr::from_ptr(qs_model_arch(l.m)).to_str().unwrap(),
            "llama"
        );
        assert_eq!(qs_model_n_layer(l.m), 2);
        assert_eq!(qs_model_n_embd(l.m), 64);
        assert_eq!(qs_model_n_head(l.m), 4);
        assert_eq!(qs_model_n_head_kv(l.m), 2);
        assert!(qs_model_n_params(l.m) > 0);
        assert!(qs_model_file_size(l.m) >= std::fs::metadata(&t.path).unwrap().len() - 1);
        assert_eq!(qs_model_quant_type(l.m), qs_quant_type::QS_QUANT_F32 as u32);
        assert!((qs_model_bits_per_weight(l.m) - 32.0).abs() < 0.5);
        // the model handle can go before the context
        let c = l.c;
        qs_model_free(l.m);
        std::mem::forget(l);
        let t = [1u32, 2];
        assert_eq!(qs_context_decode(c, t.as_ptr(), 2), OK);
        qs_context_free(c);
    }
}

extern "C" fn cancel_from_callback(
    userdata: *mut c_void,
    _: *const c_char,
    _: usize,
    _: u32,
) -> bool {
    let ctx = userdata as *const qs_context;
    // SAFETY: the context running this generation; cancel is allowed from callbacks, and any
    // other call on it reports BUSY instead of aliasing the running session.
    unsafe {
        assert_eq!(qs_context_cancel(ctx), OK);
        assert_eq!(
            qs_context_reset(ctx as *mut qs_context),
            QS_STATUS_BUSY as i32
        );
    }
    true
}

#[test]
fn cancel_and_busy_from_callback() {
    let r = reference();
    let prompt = ids(&r, "input_ids");
    let t = tiny_qsf();
    let l = load(&t);
    // SAFETY: valid arguments.
    unsafe {
        let mut gp = qs_generate_default_params();
        gp.max_tokens = 50;
        gp.stop_on_eos = false;
        let mut res: qs_generate_result = std::mem::zeroed();
        res.struct_size = std::mem::size_of::<qs_generate_result>() as u32;
        let st = qs_generate_tokens(
            l.c,
            prompt.as_ptr(),
            prompt.len(),
            &gp,
            Some(cancel_from_callback),
            l.c.cast(),
            &mut res,
        );
        assert_eq!(st, OK, "{}", last_error());
        assert_eq!(res.stop_reason, qs_stop_reason::QS_STOP_CANCELLED as u32);
        assert_eq!(res.n_generated, 1);
        // the context is usable again afterwards
        assert_eq!(qs_context_reset(l.c), OK);
    }
}

/// `outlier_per_tensor` selects the per-tensor outlier budget; the default spreads the same
/// total over the tensors (the CLI's `--outlier-alloc`).
#[test]
fn convert_outlier_allocation() {
    use qstream_core::format::{LoadOptions, QsfFile};
    use qstream_core::quant::outlier::{count_for, OutlierView};
    let dir = tempfile::Builder::new()
        .prefix("qs_capi_outliers_")
        .tempdir()
        .unwrap();
    let src = CString::new(fixture_dir().to_str().unwrap()).unwrap();
    let mut counts = Vec::new();
    for per_tensor in [false, true] {
        let path = dir.path().join(format!("o{per_tensor}.qsf"));
        let dst = CString::new(path.to_str().unwrap()).unwrap();
        let mut p = qs_convert_default_params();
        assert!(!p.outlier_per_tensor);
        p.quant_type = qs_quant_type::QS_QUANT_Q2_OUTLIER as u32;
        p.outlier_frac = 0.02;
        p.outlier_per_tensor = per_tensor;
        // SAFETY: valid NUL-terminated paths and params.
        let st = unsafe { qs_convert(src.as_ptr(), dst.as_ptr(), &p, None, null_mut()) };
        assert_eq!(st, OK, "{}", last_error());
        let f = QsfFile::open(&path, &LoadOptions::default()).unwrap();
        let mut per: Vec<(String, usize, usize)> = f
            .all_tensors()
            .unwrap()
            .into_iter()
            .filter(|(_, t)| t.qtype.is_outlier())
            .map(|(name, t)| {
                let v =
                    OutlierView::parse(t.qtype, t.block, t.bytes(), t.rows(), t.cols()).unwrap();
                (name, v.n_outliers(), t.numel())
            })
            .collect();
        per.sort();
        counts.push(per);
    }
    let (global, own) = (&counts[0], &counts[1]);
    assert!(own.iter().all(|(_, k, n)| *k == count_for(0.02, *n)));
    let total = |c: &[(String, usize, usize)]| c.iter().map(|x| x.1).sum::<usize>();
    assert_eq!(total(global), total(own));
    assert_ne!(global, own, "the default spread nothing");
}

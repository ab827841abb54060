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
        // a size that was never published (the first two fields only) is refused
        cp = qs_context_default_params();
        cp.struct_size = 8;
        assert_eq!(qs_context_new(l.m, &cp, &mut c), INVALID);
        assert!(last_error().contains("published"), "{}", last_error());
        cp = qs_context_default_params();
        cp.n_ctx = 32;
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
        cp.kv_type = 99;
        assert_eq!(qs_context_new(l.m, &cp, &mut c), INVALID);
        // the first release's 20-byte struct (up to kv_type) is still a published version:
        // type_k / type_v default to kv_type; a size ending after type_k alone is not
        let mut cp = qs_context_default_params();
        cp.type_k = 77; // beyond the old version: must be ignored there
        cp.struct_size = 20;
        assert_eq!(qs_context_new(l.m, &cp, &mut c), OK, "{}", last_error());
        qs_context_free(c);
        cp.struct_size = 24;
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

/// A `struct_size` that ends inside a field (here: half of `progress_cb`, which would be
/// called as a torn function pointer) is refused; only published sizes are accepted.
#[test]
fn struct_size_must_be_a_published_version() {
    let t = tiny_qsf();
    let path = cpath(&t.path);
    let mut m = null_mut();
    extern "C" fn never(_: *mut c_void, _: usize, _: usize, _: *const c_char) -> bool {
        panic!("a torn progress callback was called");
    }
    let full = std::mem::size_of::<qs_model_params>();
    let cb_at = std::mem::offset_of!(qs_model_params, progress_cb);
    // SAFETY: valid arguments; the struct is fully readable whatever struct_size says.
    unsafe {
        for size in [4, 5, 8, cb_at, cb_at + 4, full - 4, full + 8] {
            let mut mp = qs_model_default_params();
            mp.progress_cb = Some(never);
            mp.struct_size = size as u32;
            assert_eq!(
                qs_model_load(path.as_ptr(), &mp, &mut m),
                INVALID,
                "struct_size {size} accepted"
            );
            assert!(m.is_null());
            assert!(last_error().contains("struct_size"), "{}", last_error());
        }
        let mp = qs_model_default_params();
        assert_eq!(
            qs_model_load(path.as_ptr(), &mp, &mut m),
            OK,
            "{}",
            last_error()
        );
        qs_model_free(m);

        // qs_convert_params has three published versions: 24 bytes (up to n_threads), 28
        // (outlier_per_tensor) and the full struct; older callers get defaults for the rest
        let src = CString::new(fixture_dir().to_str().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (size, ok) in [
            (24usize, true),
            (28, true),
            (26, false),
            (32, false),
            (20, false),
        ] {
            let dst = cpath(&dir.path().join(format!("v{size}.qsf")));
            let mut p = qs_convert_default_params();
            p.quant_type = qs_quant_type::QS_QUANT_Q8 as u32;
            p.struct_size = size as u32;
            p.preset = 77; // beyond the older versions: must be ignored there
            let st = qs_convert(src.as_ptr(), dst.as_ptr(), &p, None, null_mut());
            assert_eq!(st == OK, ok, "size {size}: {st} {}", last_error());
        }
    }
}

struct Counter {
    pieces: usize,
}

extern "C" fn count_pieces(ud: *mut c_void, _: *const c_char, _: usize, _: u32) -> bool {
    // SAFETY: userdata is the test's Counter.
    unsafe { (*(ud as *mut Counter)).pieces += 1 };
    true
}

/// `qs_generate` checks every argument (params, sampling params, stop strings and the
/// output struct) before it tokenizes, decodes or streams anything.
#[test]
fn generate_checks_every_argument_before_any_work() {
    let t = tiny_qsf();
    let l = load(&t);
    let prompt = b"hello world";
    // SAFETY: valid pointers; the invalid parts are the ones under test.
    unsafe {
        let run = |gp: &qs_generate_params, res: *mut qs_generate_result| {
            let mut n = Counter { pieces: 0 };
            let st = qs_generate(
                l.c,
                prompt.as_ptr().cast(),
                prompt.len(),
                gp,
                Some(count_pieces),
                (&mut n as *mut Counter).cast(),
                res,
            );
            (st, n.pieces, qs_context_n_past(l.c))
        };
        let gp = qs_generate_default_params();
        // a bad output struct: refused before the prompt was decoded or a token streamed
        for size in [0u32, 3, 20, 1000] {
            let mut res: qs_generate_result = std::mem::zeroed();
            res.struct_size = size;
            assert_eq!(
                run(&gp, &mut res),
                (INVALID, 0, 0),
                "out struct_size {size}"
            );
            assert!(last_error().contains("out_result"), "{}", last_error());
        }
        // bad sampling params
        let mut sp = qs_sampling_default_params();
        sp.struct_size = 6;
        let mut g2 = gp;
        g2.sampling = &sp;
        assert_eq!(run(&g2, null_mut()), (INVALID, 0, 0));
        let mut sp2 = qs_sampling_default_params();
        sp2.temperature = f32::NAN;
        g2.sampling = &sp2;
        assert_eq!(run(&g2, null_mut()), (INVALID, 0, 0));
        // a NULL stop string
        let stops = [c"x".as_ptr(), null()];
        let mut g3 = gp;
        g3.stop_strings = stops.as_ptr();
        g3.n_stop_strings = 2;
        assert_eq!(run(&g3, null_mut()), (NULL_ARG, 0, 0));
        // bad generate params
        let mut g4 = gp;
        g4.struct_size = 12;
        assert_eq!(run(&g4, null_mut()), (INVALID, 0, 0));
        // the same checks for the token form
        let mut res: qs_generate_result = std::mem::zeroed();
        res.struct_size = 5;
        let ids = [5u32, 6, 7];
        let st = qs_generate_tokens(l.c, ids.as_ptr(), 3, &gp, None, null_mut(), &mut res);
        assert_eq!((st, qs_context_n_past(l.c)), (INVALID, 0));
        // and a valid call works
        let mut gp = gp;
        gp.max_tokens = 3;
        let mut res: qs_generate_result = std::mem::zeroed();
        res.struct_size = std::mem::size_of::<qs_generate_result>() as u32;
        let (st, pieces, n_past) = run(&gp, &mut res);
        assert_eq!(st, OK, "{}", last_error());
        assert!(
            n_past > 0 && res.n_generated == 3 && pieces == 3,
            "{n_past} {pieces}"
        );
    }
}

static LOG_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A log callback that calls back into the library: a failing call (which logs) and
/// `qs_log_set` itself, restoring the default.
extern "C" fn reentrant_log(_: *mut c_void, rec: *const qs_log_record) {
    LOG_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: the record is valid during the call; the calls below are valid API use.
    unsafe {
        assert!((*rec).message_len > 0);
        let mut m = null_mut();
        assert_eq!(qs_model_load(null(), null(), &mut m), NULL_ARG);
        assert_eq!(
            qs_log_set(None, null_mut(), qs_log_level_value::QS_LOG_WARN as u32),
            OK
        );
    }
}

/// The log callback runs with no library lock held: it may call the library, including
/// `qs_log_set` (before, the callback ran under the logger's lock and this deadlocked).
#[test]
fn log_callback_may_call_the_library() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: a valid callback; the failing call logs at debug level.
        unsafe {
            assert_eq!(
                qs_log_set(
                    Some(reentrant_log),
                    null_mut(),
                    qs_log_level_value::QS_LOG_DEBUG as u32
                ),
                OK
            );
            let mut m = null_mut();
            assert_eq!(qs_model_load(null(), null(), &mut m), NULL_ARG);
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the log callback deadlocked");
    assert!(LOG_CALLS.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    // SAFETY: an invalid level is refused with a status, not a panic
    assert_eq!(qs_log_set(None, null_mut(), 99), INVALID);
}

fn tensor_types(path: &Path) -> Vec<(String, qstream_core::quant::QuantType, usize)> {
    use qstream_core::format::{LoadOptions, QsfFile};
    let f = QsfFile::open(path, &LoadOptions::default()).unwrap();
    let mut v: Vec<_> = f
        .all_tensors()
        .unwrap()
        .into_iter()
        .filter(|(_, t)| t.rows() > 1)
        .map(|(n, t)| (n, t.qtype, t.block))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `qs_convert_params` expresses what `qstream convert` can: presets, per-role overrides,
/// rotation, calibration (imatrix) and GPTQ, each checked before any work.
#[test]
fn convert_presets_overrides_and_calibration() {
    use qstream_core::convert::Preset;
    use qstream_core::quant::QuantType;
    let dir = tempfile::tempdir().unwrap();
    let src = CString::new(fixture_dir().to_str().unwrap()).unwrap();
    let out = |name: &str| dir.path().join(name);
    let conv = |p: &qs_convert_params, name: &str| {
        let dst = cpath(&out(name));
        // SAFETY: valid paths and params.
        unsafe { qs_convert(src.as_ptr(), dst.as_ptr(), p, None, null_mut()) }
    };
    // presets: every matrix gets the preset's plan
    for (preset, plan) in [
        (qs_preset::QS_PRESET_Q4_M, Preset::Q4M),
        (qs_preset::QS_PRESET_Q3_M, Preset::Q3M),
        (qs_preset::QS_PRESET_Q2_M, Preset::Q2M),
        (qs_preset::QS_PRESET_EMBD_Q8, Preset::EmbdQ8(QuantType::Q3)),
    ] {
        let mut p = qs_convert_default_params();
        p.preset = preset as u32;
        p.quant_type = qs_quant_type::QS_QUANT_Q3 as u32;
        let name = format!("{preset:?}.qsf");
        assert_eq!(conv(&p, &name), OK, "{}", last_error());
        let types = tensor_types(&out(&name));
        assert!(types.len() >= 14, "{types:?}");
        for (n, t, b) in &types {
            let want = match plan {
                // the other matrices: quant_type with block_size, as without the preset
                Preset::EmbdQ8(q) if n != "token_embd" && n != "output" => (q, 32),
                _ => plan.plan(n),
            };
            assert_eq!((*t, *b), want, "{preset:?} {n}");
        }
    }
    // Q4_M: ffn_down q8, attn_q q4 with blocks of 64
    let q4m = tensor_types(&out("QS_PRESET_Q4_M.qsf"));
    assert!(q4m
        .iter()
        .any(|(n, t, _)| n.ends_with("ffn_down") && *t == QuantType::Q8));
    assert!(q4m
        .iter()
        .any(|(n, t, b)| n.ends_with("attn_q") && (*t, *b) == (QuantType::Q4, 64)));
    // per-role overrides before the type
    let roles = [
        qs_tensor_type {
            role: c"ffn_down".as_ptr(),
            quant_type: qs_quant_type::QS_QUANT_Q8 as u32,
            block_size: 0,
        },
        qs_tensor_type {
            role: c"attn_v".as_ptr(),
            quant_type: qs_quant_type::QS_QUANT_Q4 as u32,
            block_size: 64,
        },
    ];
    let mut p = qs_convert_default_params();
    p.quant_type = qs_quant_type::QS_QUANT_Q2 as u32;
    p.tensor_types = roles.as_ptr();
    p.n_tensor_types = 2;
    assert_eq!(conv(&p, "roles.qsf"), OK, "{}", last_error());
    for (n, t, b) in tensor_types(&out("roles.qsf")) {
        let want = if n.ends_with("ffn_down") {
            (QuantType::Q8, 32)
        } else if n.ends_with("attn_v") {
            (QuantType::Q4, 64)
        } else if n == "token_embd" || n == "output" || n.contains("attn") || n.contains("ffn") {
            (QuantType::Q2, 32)
        } else {
            continue;
        };
        assert_eq!((t, b), want, "{n}");
    }
    // calibration: the imatrix is written and changes the quantized weights
    let text = out("calib.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog while free software runs. ".repeat(60),
    )
    .unwrap();
    let text_c = cpath(&text);
    let im = cpath(&out("calib.imatrix"));
    let hess = cpath(&out("calib.hess"));
    let mut p = qs_convert_default_params();
    p.quant_type = qs_quant_type::QS_QUANT_Q2 as u32;
    assert_eq!(conv(&p, "plain.qsf"), OK, "{}", last_error());
    p.calibration_path = text_c.as_ptr();
    p.imatrix_path = im.as_ptr();
    p.calib_ctx = 16;
    p.calib_chunks = 4;
    assert_eq!(conv(&p, "calib.qsf"), OK, "{}", last_error());
    assert!(out("calib.imatrix").is_file());
    let plain = std::fs::read(out("plain.qsf")).unwrap();
    let calib = std::fs::read(out("calib.qsf")).unwrap();
    assert_eq!(plain.len(), calib.len());
    assert_ne!(plain, calib, "the calibration changed nothing");
    // reading the imatrix back gives the same file as calibrating
    let mut r = qs_convert_default_params();
    r.quant_type = qs_quant_type::QS_QUANT_Q2 as u32;
    r.imatrix_path = im.as_ptr();
    assert_eq!(conv(&r, "reread.qsf"), OK, "{}", last_error());
    assert_eq!(std::fs::read(out("reread.qsf")).unwrap(), calib);
    // GPTQ with calibration, writing the second moments; then from the saved moments
    p.gptq = true;
    p.hessian_path = hess.as_ptr();
    assert_eq!(conv(&p, "gptq.qsf"), OK, "{}", last_error());
    assert!(out("calib.hess").is_file());
    assert_ne!(std::fs::read(out("gptq.qsf")).unwrap(), calib);
    let mut g = qs_convert_default_params();
    g.quant_type = qs_quant_type::QS_QUANT_Q2 as u32;
    g.gptq = true;
    g.hessian_path = hess.as_ptr();
    assert_eq!(conv(&g, "gptq2.qsf"), OK, "{}", last_error());
    // rotation is recorded in the file and changes the weights
    let mut rp = qs_convert_default_params();
    rp.quant_type = qs_quant_type::QS_QUANT_Q2 as u32;
    rp.rotate = 64;
    assert_eq!(conv(&rp, "rot.qsf"), OK, "{}", last_error());
    assert_ne!(std::fs::read(out("rot.qsf")).unwrap(), plain);

    // invalid combinations are refused before any output exists
    let bad = |f: &dyn Fn(&mut qs_convert_params), name: &str| {
        let mut p = qs_convert_default_params();
        f(&mut p);
        let st = conv(&p, name);
        assert!(!out(name).exists(), "{name} written");
        (st, last_error())
    };
    let (st, e) = bad(&|p| p.gptq = true, "b1.qsf");
    assert_eq!(st, INVALID, "{e}");
    assert!(e.contains("gptq"), "{e}");
    assert_eq!(bad(&|p| p.gptq_act_order = true, "b2.qsf").0, INVALID);
    assert_eq!(bad(&|p| p.rotate = 3, "b3.qsf").0, INVALID);
    assert_eq!(bad(&|p| p.preset = 9, "b4.qsf").0, INVALID);
    assert_eq!(bad(&|p| p.outlier_frac = 0.7, "b5.qsf").0, INVALID);
    let bad_role = [qs_tensor_type {
        role: c"ffn_up".as_ptr(),
        quant_type: qs_quant_type::QS_QUANT_Q4 as u32,
        block_size: 48,
    }];
    let (st, e) = bad(
        &|p| {
            p.tensor_types = bad_role.as_ptr();
            p.n_tensor_types = 1;
        },
        "b6.qsf",
    );
    assert_eq!(st, INVALID, "{e}");
    let (st, _) = bad(&|p| p.n_tensor_types = 1, "b7.qsf");
    assert_eq!(st, NULL_ARG);
    let (st, _) = bad(
        &|p| {
            p.preset = qs_preset::QS_PRESET_EMBD_Q8 as u32;
            p.quant_type = qs_quant_type::QS_QUANT_F16 as u32;
        },
        "b8.qsf",
    );
    assert_eq!(st, INVALID);
}

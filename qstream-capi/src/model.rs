//! `qs_model`: loading, metadata getters, tokenizer and chat template.

use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use qstream_core::chat::ChatMessage;
use qstream_core::engine::{Model, ModelInfo, ModelParams};
use qstream_core::ErrorKind;

use crate::ffi::{self, Versioned};
use crate::log::{log, LogLevel};
use crate::status::*;

/// A token id.
#[allow(non_camel_case_types)]
pub type qs_token = u32;

/// "No token" (returned by `qs_model_bos` / `qs_model_eos` when the model has none).
pub const QS_TOKEN_NULL: qs_token = u32::MAX;

/// Progress callback: `done` of `total` steps, `what` a NUL-terminated description valid
/// during the call. Return false to cancel (the call then returns `QS_STATUS_CANCELLED`).
#[allow(non_camel_case_types)]
pub type qs_progress_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        done: usize,
        total: usize,
        what: *const c_char,
    ) -> bool,
>;

/// Options for `qs_model_load`. Get one from `qs_model_default_params()`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qs_model_params {
    /// `sizeof(qs_model_params)`; set by `qs_model_default_params()`.
    pub struct_size: u32,
    /// Memory-map the file (zero copy) instead of reading it. Default true.
    pub use_mmap: bool,
    /// Verify every checksum while loading. Default false.
    pub check_crc: bool,
    /// Worker threads of the model's pool; 0 = all cores. Default 0.
    pub n_threads: u32,
    /// Refuse to load (`QS_STATUS_BUDGET_EXCEEDED`) when the weights take more bytes than
    /// this; 0 = no limit. Default 0.
    pub ram_budget_bytes: u64,
    /// Called before (0/1) and after (1/1) loading; return false to cancel. May be NULL.
    pub progress_cb: qs_progress_cb,
    /// Passed to `progress_cb`.
    pub progress_userdata: *mut c_void,
}

// SAFETY: repr(C), starts with `struct_size: u32`; every field is valid for any byte
// pattern a C caller can write through the declared types.
unsafe impl Versioned for qs_model_params {
    /// One published version (the first release).
    fn sizes() -> &'static [usize] {
        &[std::mem::size_of::<qs_model_params>()]
    }

    fn default_value() -> Self {
        qs_model_params {
            struct_size: std::mem::size_of::<qs_model_params>() as u32,
            use_mmap: true,
            check_crc: false,
            n_threads: 0,
            ram_budget_bytes: 0,
            progress_cb: None,
            progress_userdata: std::ptr::null_mut(),
        }
    }
}

/// A loaded model (opaque). Immutable and shared: every function taking
/// `const qs_model *` may be called from any thread concurrently.
#[allow(non_camel_case_types)]
pub struct qs_model {
    pub(crate) model: Arc<Model>,
    pub(crate) info: ModelInfo,
    pub(crate) poisoned: AtomicBool,
}

/// Run `f` on a model handle behind the panic boundary.
pub(crate) fn with_model(
    func: &str,
    m: *const qs_model,
    f: impl FnOnce(&qs_model) -> CResult,
) -> qs_status {
    // SAFETY: the caller passes NULL or a live handle from qs_model_load.
    let m = unsafe { m.as_ref() };
    let poison = || {
        if let Some(m) = m {
            m.poisoned.store(true, Ordering::SeqCst)
        }
    };
    boundary(func, poison, || {
        let m = m.ok_or_else(|| Fail::null("model"))?;
        if m.poisoned.load(Ordering::SeqCst) {
            return Err(Fail::new(
                QS_STATUS_PANIC,
                "model handle is poisoned by an earlier panic",
            ));
        }
        f(m)
    })
}

/// Getter version of [`with_model`]: `fallback` on any failure.
fn get<T>(func: &str, m: *const qs_model, fallback: T, f: impl FnOnce(&qs_model) -> T) -> T {
    // SAFETY: the caller passes NULL or a live handle from qs_model_load.
    let m = unsafe { m.as_ref() };
    boundary_value(
        func,
        fallback,
        || {
            if let Some(m) = m {
                m.poisoned.store(true, Ordering::SeqCst)
            }
        },
        || {
            let m = m.ok_or_else(|| Fail::null("model"))?;
            if m.poisoned.load(Ordering::SeqCst) {
                return Err(Fail::new(QS_STATUS_PANIC, "model handle is poisoned"));
            }
            Ok(f(m))
        },
    )
}

/// Default model options (see the field comments of `qs_model_params`).
#[no_mangle]
pub extern "C" fn qs_model_default_params() -> qs_model_params {
    qs_model_params::default_value()
}

pub(crate) fn progress(
    cb: qs_progress_cb,
    ud: *mut c_void,
    done: usize,
    total: usize,
    what: &str,
) -> bool {
    match cb {
        None => true,
        Some(cb) => {
            let c = CString::new(what.replace('\0', " ")).unwrap_or_default();
            // SAFETY: host-provided callback with its own userdata; `c` outlives the call.
            unsafe { cb(ud, done, total, c.as_ptr()) }
        }
    }
}

/// Load a QSF model from the NUL-terminated `path`. On success `*out_model` receives a
/// handle to free with `qs_model_free`. Errors: NOT_FOUND, IO, BAD_MAGIC,
/// UNSUPPORTED_VERSION, CORRUPT, CHECKSUM, UNSUPPORTED_ARCH/QUANT, OUT_OF_MEMORY,
/// BUDGET_EXCEEDED, CANCELLED.
///
/// # Safety
/// `path` NUL-terminated; `params` a valid params struct; `out_model` writable.
#[no_mangle]
pub unsafe extern "C" fn qs_model_load(
    path: *const c_char,
    params: *const qs_model_params,
    out_model: *mut *mut qs_model,
) -> qs_status {
    boundary(
        "qs_model_load",
        || {},
        || {
            // SAFETY: argument contracts documented above.
            let path = unsafe { ffi::path(path, "path") }?;
            let p = unsafe { ffi::params(params, "params") }?;
            let out = unsafe { ffi::out(out_model, "out_model") }?;
            let mp = ModelParams {
                use_mmap: p.use_mmap,
                n_threads: p.n_threads as usize,
                ram_budget: (p.ram_budget_bytes > 0).then_some(p.ram_budget_bytes),
                verify_checksums: p.check_crc,
                ..Default::default()
            };
            let what = format!("load {}", path.display());
            if !progress(p.progress_cb, p.progress_userdata, 0, 1, &what) {
                return Err(Fail::new(
                    QS_STATUS_CANCELLED,
                    "cancelled by the progress callback",
                ));
            }
            let model = Model::load(&path, &mp).map_err(|e| {
                let mut f = Fail::from(e);
                f.msg = format!("{}: {}", path.display(), f.msg);
                f
            })?;
            if !progress(p.progress_cb, p.progress_userdata, 1, 1, &what) {
                return Err(Fail::new(
                    QS_STATUS_CANCELLED,
                    "cancelled by the progress callback",
                ));
            }
            let info = model.info();
            log(
                LogLevel::Info,
                "qstream::model",
                &format!(
                    "loaded {} ({}, {} params, {:.2} bits/weight)",
                    path.display(),
                    info.arch.name(),
                    info.n_params,
                    info.bits_per_weight
                ),
            );
            *out = Box::into_raw(Box::new(qs_model {
                model,
                info,
                poisoned: AtomicBool::new(false),
            }));
            Ok(())
        },
    )
}

/// Release a model handle. Contexts created from it stay valid (they hold their own
/// reference; the weights are freed with the last one). NULL is a no-op.
///
/// # Safety
/// `model` NULL or a handle from `qs_model_load`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn qs_model_free(model: *mut qs_model) {
    if model.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: produced by Box::into_raw in qs_model_load; freed once (caller contract).
        drop(unsafe { Box::from_raw(model) });
    }));
}

/// Architecture name ("llama", "qwen2", ...): a static string, never freed. NULL when
/// `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_arch(model: *const qs_model) -> *const c_char {
    get("qs_model_arch", model, std::ptr::null(), |m| {
        ffi::static_cstr(m.info.arch.name())
    })
}

/// Vocabulary size (logits per position); 0 when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_n_vocab(model: *const qs_model) -> u32 {
    get("qs_model_n_vocab", model, 0, |m| m.info.n_vocab as u32)
}

/// Training context length in tokens; 0 when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_n_ctx_train(model: *const qs_model) -> u32 {
    get("qs_model_n_ctx_train", model, 0, |m| {
        m.info.n_ctx_train as u32
    })
}

/// Embedding width; 0 when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_n_embd(model: *const qs_model) -> u32 {
    get("qs_model_n_embd", model, 0, |m| m.info.n_embd as u32)
}

/// Number of layers; 0 when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_n_layer(model: *const qs_model) -> u32 {
    get("qs_model_n_layer", model, 0, |m| m.info.n_layer as u32)
}

/// Attention heads; 0 when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_n_head(model: *const qs_model) -> u32 {
    get("qs_model_n_head", model, 0, |m| m.info.n_head as u32)
}

/// Key/value heads; 0 when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_n_head_kv(model: *const qs_model) -> u32 {
    get("qs_model_n_head_kv", model, 0, |m| m.info.n_head_kv as u32)
}

/// Number of weight values over all tensors; 0 when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_n_params(model: *const qs_model) -> u64 {
    get("qs_model_n_params", model, 0, |m| m.info.n_params)
}

/// Size of the model file in bytes; 0 when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_file_size(model: *const qs_model) -> u64 {
    get("qs_model_file_size", model, 0, |m| m.info.file_bytes)
}

/// Tensor bits per weight value; 0 when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_bits_per_weight(model: *const qs_model) -> f64 {
    get("qs_model_bits_per_weight", model, 0.0, |m| {
        m.info.bits_per_weight
    })
}

/// The most common tensor storage type (a `QS_QUANT_*` value); `QS_QUANT_KEEP` when
/// `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_quant_type(model: *const qs_model) -> u32 {
    get(
        "qs_model_quant_type",
        model,
        crate::convert::QS_QUANT_KEEP,
        |m| {
            m.info
                .quant_types
                .first()
                .map_or(crate::convert::QS_QUANT_KEEP, |(t, _)| t.id() as u32)
        },
    )
}

/// Beginning-of-sequence id, or `QS_TOKEN_NULL`.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_bos(model: *const qs_model) -> qs_token {
    get("qs_model_bos", model, QS_TOKEN_NULL, |m| {
        m.model.tokenizer().bos().unwrap_or(QS_TOKEN_NULL)
    })
}

/// The first end-of-sequence id, or `QS_TOKEN_NULL`.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_eos(model: *const qs_model) -> qs_token {
    get("qs_model_eos", model, QS_TOKEN_NULL, |m| {
        m.model
            .config()
            .eos_token_ids
            .first()
            .copied()
            .or_else(|| m.model.tokenizer().eos_ids().first().copied())
            .unwrap_or(QS_TOKEN_NULL)
    })
}

/// Whether the model has a chat template; false when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_has_chat_template(model: *const qs_model) -> bool {
    get("qs_model_has_chat_template", model, false, |m| {
        m.model.tokenizer().chat_template().is_some()
    })
}

/// Whether `token` ends generation (EOS or end-of-turn); false when `model` is NULL.
///
/// # Safety
/// `model` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_model_is_eos(model: *const qs_model, token: qs_token) -> bool {
    get("qs_model_is_eos", model, false, |m| {
        m.model.config().eos_token_ids.contains(&token) || m.model.tokenizer().is_eos(token)
    })
}

/// Text → token ids. `text` is UTF-8 of `text_len` bytes (NULL allowed when 0).
/// `add_special` adds BOS (and what the tokenizer's post-processor adds). Writes up to
/// `capacity` ids to `out_tokens` (NULL allowed when `capacity` is 0) and the count to
/// `*out_len`; if they do not fit returns `QS_STATUS_BUFFER_TOO_SMALL` with the needed
/// count in `*out_len`.
///
/// # Safety
/// Pointers valid for the given lengths.
#[no_mangle]
pub unsafe extern "C" fn qs_tokenize(
    model: *const qs_model,
    text: *const c_char,
    text_len: usize,
    add_special: bool,
    out_tokens: *mut qs_token,
    capacity: usize,
    out_len: *mut usize,
) -> qs_status {
    with_model("qs_tokenize", model, |m| {
        // SAFETY: argument contracts documented above.
        let text = unsafe { ffi::text(text, text_len, "text") }?;
        if out_len.is_null() {
            return Err(Fail::null("out_len"));
        }
        let ids = m.model.tokenizer().encode(text, add_special)?;
        unsafe { ffi::write_slice(&ids, out_tokens, capacity, out_len) }
    })
}

/// Token ids → UTF-8 text, NUL-terminated, special tokens included. On success
/// `*out_len` = text bytes (without the NUL); `QS_STATUS_BUFFER_TOO_SMALL` puts the
/// needed capacity (text + NUL) in `*out_len`.
///
/// # Safety
/// Pointers valid for the given lengths.
#[no_mangle]
pub unsafe extern "C" fn qs_detokenize(
    model: *const qs_model,
    tokens: *const qs_token,
    n_tokens: usize,
    out_text: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> qs_status {
    with_model("qs_detokenize", model, |m| {
        // SAFETY: argument contracts documented above.
        let ids = unsafe { ffi::slice(tokens, n_tokens, "tokens") }?;
        if out_len.is_null() {
            return Err(Fail::null("out_len"));
        }
        let n_vocab = m.info.n_vocab;
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Fail::invalid(format!("token id {bad} ≥ n_vocab {n_vocab}")));
        }
        let s = m.model.tokenizer().decode(ids, false)?;
        unsafe { ffi::write_text(&s, out_text, capacity, out_len) }
    })
}

/// The display text of one token (as `qs_detokenize` of that single id), NUL-terminated,
/// same buffer rules. A token holding part of a UTF-8 character yields U+FFFD; stream
/// with `qs_generate` or detokenize whole sequences to avoid that.
///
/// # Safety
/// Pointers valid for the given lengths.
#[no_mangle]
pub unsafe extern "C" fn qs_token_to_piece(
    model: *const qs_model,
    token: qs_token,
    out_text: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> qs_status {
    with_model("qs_token_to_piece", model, |m| {
        if out_len.is_null() {
            return Err(Fail::null("out_len"));
        }
        if token as usize >= m.info.n_vocab {
            return Err(Fail::invalid(format!(
                "token id {token} ≥ n_vocab {}",
                m.info.n_vocab
            )));
        }
        let s = m.model.tokenizer().decode(&[token], false)?;
        // SAFETY: argument contracts documented above.
        unsafe { ffi::write_text(&s, out_text, capacity, out_len) }
    })
}

/// One chat message: NUL-terminated UTF-8 `role` ("system", "user", "assistant") and
/// `content`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qs_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

/// Render `messages` with the model's chat template into `out` (NUL-terminated; buffer
/// rules as `qs_detokenize`). `add_generation_prompt` appends the assistant header.
/// `QS_STATUS_INVALID_ARGUMENT` when the model has no template or the template fails.
///
/// # Safety
/// `messages` points to `n_messages` messages with valid strings.
#[no_mangle]
pub unsafe extern "C" fn qs_chat_apply_template(
    model: *const qs_model,
    messages: *const qs_chat_message,
    n_messages: usize,
    add_generation_prompt: bool,
    out: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> qs_status {
    with_model("qs_chat_apply_template", model, |m| {
        // SAFETY: argument contracts documented above.
        let msgs = unsafe { ffi::slice(messages, n_messages, "messages") }?;
        if out_len.is_null() {
            return Err(Fail::null("out_len"));
        }
        let mut v = Vec::with_capacity(msgs.len());
        for (i, msg) in msgs.iter().enumerate() {
            let role = unsafe { ffi::cstr(msg.role, &format!("messages[{i}].role")) }?;
            let content = unsafe { ffi::cstr(msg.content, &format!("messages[{i}].content")) }?;
            v.push(ChatMessage::new(role, content));
        }
        let s = m
            .model
            .apply_chat_template(&v, add_generation_prompt)
            .map_err(|e| {
                if e.kind() == ErrorKind::InvalidArgument {
                    Fail::invalid(e.to_string())
                } else {
                    Fail::from(e)
                }
            })?;
        unsafe { ffi::write_text(&s, out, capacity, out_len) }
    })
}

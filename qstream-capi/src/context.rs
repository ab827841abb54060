//! `qs_context` (a session: KV cache + logits), `qs_sampler`, and `qs_generate`.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use qstream_core::engine::{
    CancelHandle, GenerateParams, Model, Session, SessionParams, StopReason,
};
use qstream_core::kv::KvType;
use qstream_core::sampling::{Sampler, SamplingParams};

use crate::ffi::{self, Versioned};
use crate::model::{qs_model, qs_token, with_model};
use crate::status::*;

/// KV cache element types (`qs_context_params.kv_type`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum qs_kv_type {
    /// 32-bit floats (exact).
    QS_KV_F32 = 0,
    /// IEEE half precision (half the memory).
    QS_KV_F16 = 1,
    /// bfloat16.
    QS_KV_BF16 = 2,
    /// Symmetric 8-bit blocks of 32 values (8.5 bits per value).
    QS_KV_Q8 = 3,
    /// Asymmetric 4-bit blocks of 32 (5 bits per value).
    QS_KV_Q4 = 4,
    /// Asymmetric 3-bit blocks of 32 (4 bits per value).
    QS_KV_Q3 = 5,
    /// Asymmetric 2-bit blocks of 32 (3 bits per value).
    QS_KV_Q2 = 6,
    /// Logarithmic 8-bit code (sign + 7-bit inverse magnitude, IntLLM's QINS; 8.5 bits).
    QS_KV_QINS8 = 7,
    /// `QS_KV_Q8` after a randomized Hadamard rotation along head_dim.
    QS_KV_Q8H = 8,
    /// `QS_KV_Q4` after a randomized Hadamard rotation along head_dim.
    QS_KV_Q4H = 9,
    /// `QS_KV_Q3` after a randomized Hadamard rotation along head_dim.
    QS_KV_Q3H = 10,
    /// `QS_KV_Q2` after a randomized Hadamard rotation along head_dim.
    QS_KV_Q2H = 11,
}

/// The core type of a `QS_KV_*` code (`what` names the field in the error).
pub(crate) fn kv_type_of(code: u32, what: &str) -> Result<KvType, Fail> {
    KvType::from_code(code)
        .ok_or_else(|| Fail::invalid(format!("{what} {code} is not a QS_KV_* value")))
}

/// Options for `qs_context_new`. Get one from `qs_context_default_params()`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qs_context_params {
    /// `sizeof(qs_context_params)`; set by `qs_context_default_params()`.
    pub struct_size: u32,
    /// Context size in tokens; 0 = the model's training context capped at 4096. Default 0.
    pub n_ctx: u32,
    /// Most tokens per forward pass during prompt processing; 0 = 512. Default 0.
    pub n_batch: u32,
    /// Threads for this context's forward passes; 0 = the model's pool. Default 0.
    pub n_threads: u32,
    /// KV cache element type, a `QS_KV_*` value. Default `QS_KV_F32`.
    pub kv_type: u32,
    /// Element type of the cached keys, a `QS_KV_*` value; -1 = `kv_type`. Default -1.
    pub type_k: i32,
    /// Element type of the cached values, a `QS_KV_*` value; -1 = `kv_type`. Default -1.
    pub type_v: i32,
}

// SAFETY: repr(C), starts with `struct_size: u32`, plain integers.
unsafe impl Versioned for qs_context_params {
    fn default_value() -> Self {
        qs_context_params {
            struct_size: std::mem::size_of::<qs_context_params>() as u32,
            n_ctx: 0,
            n_batch: 0,
            n_threads: 0,
            kv_type: qs_kv_type::QS_KV_F32 as u32,
            type_k: -1,
            type_v: -1,
        }
    }
}

/// Sampling options. Get one from `qs_sampling_default_params()` (temperature 0.7,
/// top-k 40, top-p 0.9, seed 42); set `temperature = 0` for greedy decoding.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qs_sampling_params {
    /// `sizeof(qs_sampling_params)`; set by `qs_sampling_default_params()`.
    pub struct_size: u32,
    /// Softmax temperature; 0 = greedy (argmax). Default 0.7.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off. Default 40.
    pub top_k: u32,
    /// Nucleus mass; 1 = off. Default 0.9.
    pub top_p: f32,
    /// Drop tokens below `min_p × p_max`; 0 = off. Default 0.
    pub min_p: f32,
    /// Repetition penalty (llama.cpp semantics); 1 = off. Default 1.
    pub repeat_penalty: f32,
    /// Subtracted once from every token present in the window; 0 = off. Default 0.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the window; 0 = off. Default 0.
    pub frequency_penalty: f32,
    /// Penalty window in tokens; 0 = none. Default 64.
    pub repeat_last_n: u32,
    /// PRNG seed: same seed, same tokens. Default 42.
    pub seed: u64,
}

// SAFETY: repr(C), starts with `struct_size: u32`, plain numbers.
unsafe impl Versioned for qs_sampling_params {
    fn default_value() -> Self {
        let d = SamplingParams::default();
        qs_sampling_params {
            struct_size: std::mem::size_of::<qs_sampling_params>() as u32,
            temperature: d.temperature,
            top_k: d.top_k as u32,
            top_p: d.top_p,
            min_p: d.min_p,
            repeat_penalty: d.repeat_penalty,
            presence_penalty: d.presence_penalty,
            frequency_penalty: d.frequency_penalty,
            repeat_last_n: d.repeat_last_n as u32,
            seed: d.seed,
        }
    }
}

impl qs_sampling_params {
    fn to_core(self) -> CResult<SamplingParams> {
        let finite = [
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("min_p", self.min_p),
            ("repeat_penalty", self.repeat_penalty),
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ];
        for (name, v) in finite {
            if !v.is_finite() {
                return Err(Fail::invalid(format!("sampling.{name} is {v}")));
            }
        }
        if self.temperature < 0.0
            || !(0.0..=1.0).contains(&self.top_p)
            || !(0.0..=1.0).contains(&self.min_p)
        {
            return Err(Fail::invalid(format!(
                "sampling: temperature {} must be ≥ 0, top_p {} and min_p {} in [0, 1]",
                self.temperature, self.top_p, self.min_p
            )));
        }
        Ok(SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k as usize,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_last_n: self.repeat_last_n as usize,
            seed: self.seed,
        })
    }
}

/// Default sampling options (see the field comments).
#[no_mangle]
pub extern "C" fn qs_sampling_default_params() -> qs_sampling_params {
    qs_sampling_params::default_value()
}

/// Default context options (see the field comments).
#[no_mangle]
pub extern "C" fn qs_context_default_params() -> qs_context_params {
    qs_context_params::default_value()
}

struct CtxInner {
    session: Session,
    /// NUL-terminated copy of the current streamed piece (reused, grows only).
    piece: Vec<u8>,
}

/// One conversation (opaque): KV cache, last logits. One thread at a time; many contexts
/// may share a model. Holds its own reference to the model.
#[allow(non_camel_case_types)]
pub struct qs_context {
    model: Arc<Model>,
    cancel: CancelHandle,
    poisoned: AtomicBool,
    /// set while a call uses `inner`; a second concurrent call gets `QS_STATUS_BUSY`
    busy: AtomicBool,
    inner: UnsafeCell<CtxInner>,
}

// SAFETY: `inner` is only accessed by the call that acquired `busy`; everything else is
// atomic or immutable (`Model` is Sync, `Session` is Send).
unsafe impl Sync for qs_context {}

/// Run `f` with exclusive access to a context, behind the panic boundary.
fn with_ctx(
    func: &str,
    ctx: *const qs_context,
    f: impl FnOnce(&mut CtxInner) -> CResult,
) -> qs_status {
    // SAFETY: NULL or a live handle from qs_context_new (caller contract).
    let c = unsafe { ctx.as_ref() };
    let Some(c) = c else {
        return finish(func, Err(Fail::null("ctx")));
    };
    if c.poisoned.load(Ordering::SeqCst) {
        return finish(
            func,
            Err(Fail::new(
                QS_STATUS_PANIC,
                "context is poisoned by an earlier panic",
            )),
        );
    }
    if c.busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return finish(
            func,
            Err(Fail::new(
                QS_STATUS_BUSY,
                "context is in use by another call (one thread at a time)",
            )),
        );
    }
    let st = boundary(
        func,
        || c.poisoned.store(true, Ordering::SeqCst),
        || {
            // SAFETY: `busy` was acquired above, so this is the only reference to `inner`.
            let inner = unsafe { &mut *c.inner.get() };
            f(inner)
        },
    );
    c.busy.store(false, Ordering::Release);
    st
}

/// Create a context on `model`. It keeps the model alive: `qs_model_free` may be called
/// before `qs_context_free`.
///
/// # Safety
/// `model` live; `params` valid; `out_ctx` writable.
#[no_mangle]
pub unsafe extern "C" fn qs_context_new(
    model: *const qs_model,
    params: *const qs_context_params,
    out_ctx: *mut *mut qs_context,
) -> qs_status {
    with_model("qs_context_new", model, |m| {
        // SAFETY: argument contracts documented above.
        let p = unsafe { ffi::params(params, "params") }?;
        let out = unsafe { ffi::out(out_ctx, "out_ctx") }?;
        let kv_type = kv_type_of(p.kv_type, "params->kv_type")?;
        let pick = |t: i32, what: &str| match t {
            -1 => Ok(None),
            t if t >= 0 => kv_type_of(t as u32, what).map(Some),
            t => Err(Fail::invalid(format!(
                "{what} {t} is not -1 or a QS_KV_* value"
            ))),
        };
        let type_k = pick(p.type_k, "params->type_k")?;
        let type_v = pick(p.type_v, "params->type_v")?;
        let mut session = Session::new(
            m.model.clone(),
            &SessionParams {
                n_ctx: p.n_ctx as usize,
                kv_type,
                type_k,
                type_v,
                n_threads: p.n_threads as usize,
            },
        )?;
        if p.n_batch > 0 {
            session.set_batch_size(p.n_batch as usize);
        }
        let cancel = session.cancel_handle();
        *out = Box::into_raw(Box::new(qs_context {
            model: m.model.clone(),
            cancel,
            poisoned: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            inner: UnsafeCell::new(CtxInner {
                session,
                piece: Vec::with_capacity(64),
            }),
        }));
        Ok(())
    })
}

/// Free a context (NULL is a no-op). Must not race with another call on it.
///
/// # Safety
/// `ctx` NULL or a handle from `qs_context_new`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn qs_context_free(ctx: *mut qs_context) {
    if ctx.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: produced by Box::into_raw in qs_context_new; freed once.
        drop(unsafe { Box::from_raw(ctx) });
    }));
}

/// Append `n_tokens` ids to the context and compute the logits of the last one.
/// `QS_STATUS_CONTEXT_FULL` (nothing changed) when they do not fit;
/// `QS_STATUS_INVALID_ARGUMENT` for `n_tokens == 0` or an id ≥ n_vocab.
///
/// # Safety
/// `tokens` points to `n_tokens` ids.
#[no_mangle]
pub unsafe extern "C" fn qs_context_decode(
    ctx: *mut qs_context,
    tokens: *const qs_token,
    n_tokens: usize,
) -> qs_status {
    with_ctx("qs_context_decode", ctx, |c| {
        // SAFETY: argument contract.
        let ids = unsafe { ffi::slice(tokens, n_tokens, "tokens") }?;
        if ids.is_empty() {
            return Err(Fail::invalid("n_tokens is 0"));
        }
        c.session.decode(ids)?;
        Ok(())
    })
}

/// Logits of the last decoded token: `*out_logits` points to `*out_n_vocab` floats owned
/// by the context, valid until the next call that changes it (decode, generate, reset,
/// free). Zeros before the first decode.
///
/// # Safety
/// Output pointers writable.
#[no_mangle]
pub unsafe extern "C" fn qs_context_logits(
    ctx: *mut qs_context,
    out_logits: *mut *const f32,
    out_n_vocab: *mut usize,
) -> qs_status {
    with_ctx("qs_context_logits", ctx, |c| {
        // SAFETY: argument contract.
        let lp = unsafe { ffi::out(out_logits, "out_logits") }?;
        let np = unsafe { ffi::out(out_n_vocab, "out_n_vocab") }?;
        let l = c.session.logits();
        *lp = l.as_ptr();
        *np = l.len();
        Ok(())
    })
}

/// Forget everything in the context (KV cache and logits).
///
/// # Safety
/// `ctx` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_context_reset(ctx: *mut qs_context) -> qs_status {
    with_ctx("qs_context_reset", ctx, |c| {
        c.session.reset();
        Ok(())
    })
}

/// Keep only the first `n` positions (no-op when `n ≥ n_past`). Logits are stale until
/// the next decode.
///
/// # Safety
/// `ctx` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_context_truncate(ctx: *mut qs_context, n: usize) -> qs_status {
    with_ctx("qs_context_truncate", ctx, |c| {
        c.session.truncate(n);
        Ok(())
    })
}

/// Tokens currently in the context (0 when `ctx` is NULL or busy).
///
/// # Safety
/// `ctx` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_context_n_past(ctx: *const qs_context) -> usize {
    let mut n = 0;
    with_ctx("qs_context_n_past", ctx, |c| {
        n = c.session.n_past();
        Ok(())
    });
    n
}

/// Context capacity in tokens (0 when `ctx` is NULL or busy).
///
/// # Safety
/// `ctx` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_context_n_ctx(ctx: *const qs_context) -> usize {
    let mut n = 0;
    with_ctx("qs_context_n_ctx", ctx, |c| {
        n = c.session.n_ctx();
        Ok(())
    });
    n
}

/// Ask the `qs_generate` running on `ctx` to stop after the current token (its result
/// then reports `QS_STOP_CANCELLED`). Callable from any thread while another thread uses
/// the context; only sets an atomic flag (async-signal-safe for a valid `ctx`). A cancel
/// issued while no generation runs is cleared by the next `qs_generate`.
///
/// # Safety
/// `ctx` NULL or live (not freed concurrently).
#[no_mangle]
pub unsafe extern "C" fn qs_context_cancel(ctx: *const qs_context) -> qs_status {
    // SAFETY: NULL or live (caller contract); only the atomic cancel flag is touched.
    match unsafe { ctx.as_ref() } {
        Some(c) => {
            c.cancel.cancel();
            QS_STATUS_OK as qs_status
        }
        None => finish("qs_context_cancel", Err(Fail::null("ctx"))),
    }
}

/// The model of a context (borrowed pointer is not given out; this returns a new handle
/// to free with `qs_model_free`).
///
/// # Safety
/// `ctx` live; `out_model` writable.
#[no_mangle]
pub unsafe extern "C" fn qs_context_model(
    ctx: *const qs_context,
    out_model: *mut *mut qs_model,
) -> qs_status {
    // SAFETY: NULL or live (caller contract); `model` is immutable.
    let c = unsafe { ctx.as_ref() };
    boundary(
        "qs_context_model",
        || {},
        || {
            let c = c.ok_or_else(|| Fail::null("ctx"))?;
            let out = unsafe { ffi::out(out_model, "out_model") }?;
            let model = c.model.clone();
            let info = model.info();
            *out = Box::into_raw(Box::new(qs_model {
                model,
                info,
                poisoned: AtomicBool::new(false),
            }));
            Ok(())
        },
    )
}

/// A sampler (opaque): sampling settings + seeded PRNG. One thread at a time.
#[allow(non_camel_case_types)]
pub struct qs_sampler {
    sampler: Sampler,
    poisoned: bool,
}

/// Create a sampler from `params`.
///
/// # Safety
/// `params` valid; `out_sampler` writable.
#[no_mangle]
pub unsafe extern "C" fn qs_sampler_new(
    params: *const qs_sampling_params,
    out_sampler: *mut *mut qs_sampler,
) -> qs_status {
    boundary(
        "qs_sampler_new",
        || {},
        || {
            // SAFETY: argument contracts.
            let p = unsafe { ffi::params(params, "params") }?.to_core()?;
            let out = unsafe { ffi::out(out_sampler, "out_sampler") }?;
            *out = Box::into_raw(Box::new(qs_sampler {
                sampler: Sampler::new(&p),
                poisoned: false,
            }));
            Ok(())
        },
    )
}

/// Sample the next token from `ctx`'s last logits (penalties look at the context's
/// tokens). `QS_STATUS_INVALID_ARGUMENT` before the first decode. Does not decode the
/// token: pass it to `qs_context_decode` to continue.
///
/// # Safety
/// `sampler`, `ctx` live; `out_token` writable.
#[no_mangle]
pub unsafe extern "C" fn qs_sampler_sample(
    sampler: *mut qs_sampler,
    ctx: *mut qs_context,
    out_token: *mut qs_token,
) -> qs_status {
    // SAFETY: NULL or live, used by one thread at a time (caller contract).
    let Some(s) = (unsafe { sampler.as_mut() }) else {
        return finish("qs_sampler_sample", Err(Fail::null("sampler")));
    };
    if s.poisoned {
        return finish(
            "qs_sampler_sample",
            Err(Fail::new(QS_STATUS_PANIC, "sampler is poisoned")),
        );
    }
    let mut reached = false;
    let mut done = false;
    let st = with_ctx("qs_sampler_sample", ctx, |c| {
        let out = unsafe { ffi::out(out_token, "out_token") }?;
        if c.session.n_past() == 0 {
            return Err(Fail::invalid("no logits yet: decode a prompt first"));
        }
        reached = true;
        *out = s.sampler.sample(c.session.logits(), c.session.tokens());
        done = true;
        Ok(())
    });
    if reached && !done {
        // the sampler panicked mid-update
        s.poisoned = true;
    }
    st
}

/// Free a sampler (NULL is a no-op).
///
/// # Safety
/// `sampler` NULL or a handle from `qs_sampler_new`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn qs_sampler_free(sampler: *mut qs_sampler) {
    if sampler.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: produced by Box::into_raw in qs_sampler_new; freed once.
        drop(unsafe { Box::from_raw(sampler) });
    }));
}

/// Why `qs_generate` stopped (`qs_generate_result.stop_reason`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum qs_stop_reason {
    /// `max_tokens` generated, or the context is full.
    QS_STOP_MAX_TOKENS = 0,
    /// An end-of-sequence token was sampled (it is reported to the callback with an
    /// empty piece).
    QS_STOP_EOS = 1,
    /// A stop string appeared (it is not part of the streamed text).
    QS_STOP_STRING = 2,
    /// The callback returned false.
    QS_STOP_CALLBACK = 3,
    /// `qs_context_cancel` was called.
    QS_STOP_CANCELLED = 4,
}

/// Options for `qs_generate`. Get one from `qs_generate_default_params()`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qs_generate_params {
    /// `sizeof(qs_generate_params)`; set by `qs_generate_default_params()`.
    pub struct_size: u32,
    /// Most tokens to generate. Default 256.
    pub max_tokens: u32,
    /// Sampling options; NULL = `qs_sampling_default_params()`. Default NULL.
    pub sampling: *const qs_sampling_params,
    /// `n_stop_strings` NUL-terminated UTF-8 strings that end generation; NULL when
    /// `n_stop_strings` is 0. Default none.
    pub stop_strings: *const *const c_char,
    pub n_stop_strings: usize,
    /// Stop at the model's end-of-sequence tokens. Default true.
    pub stop_on_eos: bool,
    /// `qs_generate` (text prompt) only: add BOS etc. when the context is empty.
    /// Default true.
    pub add_special: bool,
}

// SAFETY: repr(C), starts with `struct_size: u32`; pointers are validated when used.
unsafe impl Versioned for qs_generate_params {
    fn default_value() -> Self {
        qs_generate_params {
            struct_size: std::mem::size_of::<qs_generate_params>() as u32,
            max_tokens: 256,
            sampling: std::ptr::null(),
            stop_strings: std::ptr::null(),
            n_stop_strings: 0,
            stop_on_eos: true,
            add_special: true,
        }
    }
}

/// Default generation options (see the field comments).
#[no_mangle]
pub extern "C" fn qs_generate_default_params() -> qs_generate_params {
    qs_generate_params::default_value()
}

/// Outcome of `qs_generate`. Set `struct_size = sizeof(qs_generate_result)` before the
/// call; the library writes at most that many bytes.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qs_generate_result {
    pub struct_size: u32,
    /// A `QS_STOP_*` value.
    pub stop_reason: u32,
    /// Prompt tokens decoded by this call.
    pub n_prompt: u32,
    /// Tokens sampled (including an EOS that ended generation).
    pub n_generated: u32,
    /// Seconds spent on the prompt.
    pub prompt_secs: f64,
    /// Seconds spent generating.
    pub gen_secs: f64,
}

// SAFETY: repr(C), starts with `struct_size: u32`, plain numbers.
unsafe impl Versioned for qs_generate_result {
    fn default_value() -> Self {
        qs_generate_result {
            struct_size: std::mem::size_of::<qs_generate_result>() as u32,
            stop_reason: 0,
            n_prompt: 0,
            n_generated: 0,
            prompt_secs: 0.0,
            gen_secs: 0.0,
        }
    }
}

/// Streaming callback: `piece` is `len` bytes of new UTF-8 text (NUL-terminated for
/// convenience; may be empty while a character or a possible stop string is incomplete),
/// `token` the sampled id. Return false to stop. It must not call functions on the same
/// context except `qs_context_cancel` (they return `QS_STATUS_BUSY`).
#[allow(non_camel_case_types)]
pub type qs_piece_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        piece: *const c_char,
        len: usize,
        token: qs_token,
    ) -> bool,
>;

fn run_generate(
    c: &mut CtxInner,
    prompt: &[u32],
    p: &qs_generate_params,
    cb: qs_piece_cb,
    userdata: *mut c_void,
    out: *mut qs_generate_result,
) -> CResult {
    let sampling = if p.sampling.is_null() {
        SamplingParams::default()
    } else {
        // SAFETY: non-null pointer supplied by the caller's params.
        unsafe { ffi::params(p.sampling, "params->sampling") }?.to_core()?
    };
    // SAFETY: array of `n_stop_strings` pointers (caller contract).
    let stops_raw =
        unsafe { ffi::slice(p.stop_strings, p.n_stop_strings, "params->stop_strings") }?;
    let mut stop_strings = Vec::with_capacity(stops_raw.len());
    for (i, &s) in stops_raw.iter().enumerate() {
        // SAFETY: each entry NUL-terminated (caller contract).
        stop_strings
            .push(unsafe { ffi::cstr(s, &format!("params->stop_strings[{i}]")) }?.to_string());
    }
    let gp = GenerateParams {
        max_tokens: p.max_tokens as usize,
        sampling,
        stop_strings,
        stop_on_eos: p.stop_on_eos,
    };
    let CtxInner { session, piece } = c;
    let r = session.generate(prompt, &gp, &mut |t| match cb {
        None => true,
        Some(cb) => {
            piece.clear();
            piece.extend_from_slice(t.piece.as_bytes());
            piece.push(0);
            // SAFETY: host callback with its own userdata; `piece` is NUL-terminated and
            // lives until the call returns.
            unsafe { cb(userdata, piece.as_ptr().cast(), t.piece.len(), t.id) }
        }
    })?;
    let stop = match r.stop_reason {
        StopReason::MaxTokens => qs_stop_reason::QS_STOP_MAX_TOKENS,
        StopReason::Eos => qs_stop_reason::QS_STOP_EOS,
        StopReason::StopString => qs_stop_reason::QS_STOP_STRING,
        StopReason::Callback => qs_stop_reason::QS_STOP_CALLBACK,
        StopReason::Cancelled => qs_stop_reason::QS_STOP_CANCELLED,
    };
    let res = qs_generate_result {
        struct_size: 0,
        stop_reason: stop as u32,
        n_prompt: r.n_prompt as u32,
        n_generated: r.tokens.len() as u32,
        prompt_secs: r.prompt_secs,
        gen_secs: r.gen_secs,
    };
    // SAFETY: NULL or a writable result struct (caller contract).
    unsafe { ffi::write_versioned(out, res, "out_result") }
}

/// Tokenize `prompt` (UTF-8, `prompt_len` bytes; may be empty to continue from the
/// context's last logits), decode it, then sample up to `params->max_tokens` tokens,
/// streaming each to `cb` (NULL = no streaming). `out_result` may be NULL. The last
/// sampled token is not decoded into the context. `QS_STATUS_CONTEXT_FULL` when the
/// prompt does not fit.
///
/// # Safety
/// Pointers valid as documented; `cb` must not unwind (no C++ exceptions).
#[no_mangle]
pub unsafe extern "C" fn qs_generate(
    ctx: *mut qs_context,
    prompt: *const c_char,
    prompt_len: usize,
    params: *const qs_generate_params,
    cb: qs_piece_cb,
    userdata: *mut c_void,
    out_result: *mut qs_generate_result,
) -> qs_status {
    with_ctx("qs_generate", ctx, |c| {
        // SAFETY: argument contracts.
        let text = unsafe { ffi::text(prompt, prompt_len, "prompt") }?;
        let p = unsafe { ffi::params(params, "params") }?;
        let ids = if text.is_empty() {
            Vec::new()
        } else {
            let add = p.add_special && c.session.n_past() == 0;
            c.session.model().tokenizer().encode(text, add)?
        };
        run_generate(c, &ids, &p, cb, userdata, out_result)
    })
}

/// As `qs_generate` with a prompt of token ids (`n_tokens` may be 0 to continue).
///
/// # Safety
/// As `qs_generate`.
#[no_mangle]
pub unsafe extern "C" fn qs_generate_tokens(
    ctx: *mut qs_context,
    tokens: *const qs_token,
    n_tokens: usize,
    params: *const qs_generate_params,
    cb: qs_piece_cb,
    userdata: *mut c_void,
    out_result: *mut qs_generate_result,
) -> qs_status {
    with_ctx("qs_generate_tokens", ctx, |c| {
        // SAFETY: argument contracts.
        let ids = unsafe { ffi::slice(tokens, n_tokens, "tokens") }?;
        let p = unsafe { ffi::params(params, "params") }?;
        run_generate(c, ids, &p, cb, userdata, out_result)
    })
}

#[cfg(test)]
pub(crate) fn test_with_ctx(ctx: *mut qs_context, f: impl FnOnce() -> CResult) -> qs_status {
    with_ctx("qs_test_panic", ctx, |_| f())
}

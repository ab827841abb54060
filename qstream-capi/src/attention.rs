//! `qs_attn_cache`: a standalone KV cache with attention for other engines (no model).

use std::sync::Mutex;

use qstream_core::kv::{AttentionCache, AttentionParams};

use crate::context::kv_type_of;
use crate::ffi::{self, Versioned};
use crate::status::*;

/// Options for `qs_attn_cache_new`. Get one from `qs_attn_cache_default_params()` and set
/// at least `head_dim`, `n_kv_heads`, `n_q_heads` and `capacity`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qs_attn_cache_params {
    /// `sizeof(qs_attn_cache_params)`; set by `qs_attn_cache_default_params()`.
    pub struct_size: u32,
    /// Values per head vector (a multiple of 32, at most 512, for the quantized types).
    /// Default 0 (must be set).
    pub head_dim: u32,
    /// Key/value heads. Default 0 (must be set).
    pub n_kv_heads: u32,
    /// Query heads, a multiple of `n_kv_heads`; query head `h` reads KV head
    /// `h / (n_q_heads / n_kv_heads)`. Default 0 (must be set).
    pub n_q_heads: u32,
    /// Positions the cache holds (allocated up front). Default 0 (must be set).
    pub capacity: u32,
    /// Element type of the keys, a `QS_KV_*` value. Default `QS_KV_F32`.
    pub type_k: u32,
    /// Element type of the values, a `QS_KV_*` value. Default `QS_KV_F32`.
    pub type_v: u32,
}

// SAFETY: repr(C), starts with `struct_size: u32`, plain integers.
unsafe impl Versioned for qs_attn_cache_params {
    fn default_value() -> Self {
        qs_attn_cache_params {
            struct_size: std::mem::size_of::<qs_attn_cache_params>() as u32,
            head_dim: 0,
            n_kv_heads: 0,
            n_q_heads: 0,
            capacity: 0,
            type_k: 0,
            type_v: 0,
        }
    }
}

/// A standalone KV cache + attention object (opaque). One thread at a time: a call that
/// finds it in use by another thread returns `QS_STATUS_BUSY`.
#[allow(non_camel_case_types)]
pub struct qs_attn_cache {
    inner: Mutex<AttentionCache>,
}

/// Defaults for `qs_attn_cache_new` (sizes 0, K and V `QS_KV_F32`).
#[no_mangle]
pub extern "C" fn qs_attn_cache_default_params() -> qs_attn_cache_params {
    qs_attn_cache_params::default_value()
}

fn with_cache(
    func: &str,
    cache: *const qs_attn_cache,
    f: impl FnOnce(&mut AttentionCache) -> CResult,
) -> qs_status {
    boundary(
        func,
        || {},
        || {
            // SAFETY: the caller passes NULL or a live handle from `qs_attn_cache_new`.
            let c = unsafe { cache.as_ref() }.ok_or_else(|| Fail::null("cache"))?;
            let mut g = match c.inner.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(Fail::new(
                        QS_STATUS_BUSY,
                        "cache is in use by another call (one thread at a time)",
                    ))
                }
                Err(std::sync::TryLockError::Poisoned(_)) => {
                    return Err(Fail::new(
                        QS_STATUS_PANIC,
                        "cache is unusable after a panic in an earlier call",
                    ))
                }
            };
            f(&mut g)
        },
    )
}

/// Create an empty cache of `capacity` positions, K and V each in its own `QS_KV_*` type.
/// Free it with `qs_attn_cache_free`. `QS_STATUS_INVALID_ARGUMENT` for a zero size,
/// `n_q_heads` not a multiple of `n_kv_heads`, an unknown type, or a `head_dim` a
/// quantized type cannot take; `QS_STATUS_OUT_OF_MEMORY` when it cannot be allocated.
///
/// # Safety
/// `params` valid (see `struct_size`); `out_cache` writable.
#[no_mangle]
pub unsafe extern "C" fn qs_attn_cache_new(
    params: *const qs_attn_cache_params,
    out_cache: *mut *mut qs_attn_cache,
) -> qs_status {
    boundary(
        "qs_attn_cache_new",
        || {},
        || {
            // SAFETY: argument contracts documented above.
            let p = unsafe { ffi::params(params, "params") }?;
            let out = unsafe { ffi::out(out_cache, "out_cache") }?;
            let ap = AttentionParams {
                head_dim: p.head_dim as usize,
                n_kv_heads: p.n_kv_heads as usize,
                n_q_heads: p.n_q_heads as usize,
                capacity: p.capacity as usize,
                k_type: kv_type_of(p.type_k, "params->type_k")?,
                v_type: kv_type_of(p.type_v, "params->type_v")?,
            };
            let c = AttentionCache::new(&ap)?;
            *out = Box::into_raw(Box::new(qs_attn_cache {
                inner: Mutex::new(c),
            }));
            Ok(())
        },
    )
}

/// Free a cache (NULL is a no-op). Must not race with another call on it.
///
/// # Safety
/// `cache` NULL or a handle from `qs_attn_cache_new`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn qs_attn_cache_free(cache: *mut qs_attn_cache) {
    if cache.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: produced by Box::into_raw in qs_attn_cache_new; freed once.
        drop(unsafe { Box::from_raw(cache) });
    }));
}

/// Append the keys and values of `n_tokens` positions. `k` and `v` are row-major float
/// arrays `[n_tokens][n_kv_heads][head_dim]`, read during the call only (the cache keeps
/// its own, possibly quantized, copy). `QS_STATUS_INVALID_ARGUMENT` (nothing appended)
/// when they do not fit in the remaining capacity.
///
/// # Safety
/// `cache` live; `k` and `v` each hold `n_tokens · n_kv_heads · head_dim` floats.
#[no_mangle]
pub unsafe extern "C" fn qs_attn_cache_append(
    cache: *const qs_attn_cache,
    k: *const f32,
    v: *const f32,
    n_tokens: usize,
) -> qs_status {
    with_cache("qs_attn_cache_append", cache, |c| {
        let n = n_tokens
            .checked_mul(c.params().n_kv_heads * c.params().head_dim)
            .ok_or_else(|| Fail::invalid(format!("n_tokens {n_tokens} is too large")))?;
        // SAFETY: the caller guarantees `n` floats at `k` and at `v`.
        let k = unsafe { ffi::slice(k, n, "k") }?;
        let v = unsafe { ffi::slice(v, n, "v") }?;
        Ok(c.append(k, v, n_tokens)?)
    })
}

/// Attention of `n_tokens` queries against the cache. `q` and `out` are row-major float
/// arrays `[n_tokens][n_q_heads][head_dim]` (the caller owns both; they must not overlap).
/// The queries are the last `n_tokens` cached positions (append their K/V first): with
/// `causal`, query `i` sees positions `0 ..= len − n_tokens + i`; without, every cached
/// position. `scale` multiplies the scores; 0 means `1/sqrt(head_dim)`. Softmax is f32;
/// quantized K/V are read in the integer domain without a dequantized copy.
/// `QS_STATUS_INVALID_ARGUMENT` when `n_tokens` exceeds the cached positions.
///
/// # Safety
/// `cache` live; `q` holds and `out` has room for `n_tokens · n_q_heads · head_dim` floats.
#[no_mangle]
pub unsafe extern "C" fn qs_attn_cache_attend(
    cache: *const qs_attn_cache,
    q: *const f32,
    n_tokens: usize,
    causal: bool,
    scale: f32,
    out: *mut f32,
) -> qs_status {
    with_cache("qs_attn_cache_attend", cache, |c| {
        let n = n_tokens
            .checked_mul(c.params().n_q_heads * c.params().head_dim)
            .ok_or_else(|| Fail::invalid(format!("n_tokens {n_tokens} is too large")))?;
        // SAFETY: the caller guarantees `n` floats at `q`.
        let q = unsafe { ffi::slice(q, n, "q") }?;
        if n > 0 && out.is_null() {
            return Err(Fail::null("out"));
        }
        let out: &mut [f32] = if n == 0 {
            &mut []
        } else {
            // SAFETY: non-null; the caller guarantees room for `n` floats, not overlapping `q`.
            unsafe { std::slice::from_raw_parts_mut(out, n) }
        };
        let scale = if scale == 0.0 { None } else { Some(scale) };
        Ok(c.attend(q, n_tokens, causal, scale, out)?)
    })
}

/// Keep the first `n_tokens` positions and drop the rest (`n_tokens` ≤ the cached count).
///
/// # Safety
/// `cache` live.
#[no_mangle]
pub unsafe extern "C" fn qs_attn_cache_truncate(
    cache: *const qs_attn_cache,
    n_tokens: usize,
) -> qs_status {
    with_cache("qs_attn_cache_truncate", cache, |c| {
        Ok(c.truncate(n_tokens)?)
    })
}

/// Cached positions (0 for NULL or a cache in use by another thread).
///
/// # Safety
/// `cache` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_attn_cache_len(cache: *const qs_attn_cache) -> usize {
    let mut n = 0;
    with_cache("qs_attn_cache_len", cache, |c| {
        n = c.len();
        Ok(())
    });
    n
}

/// Bytes the cache holds for K and V (its full capacity; 0 for NULL or a cache in use by
/// another thread).
///
/// # Safety
/// `cache` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qs_attn_cache_memory_bytes(cache: *const qs_attn_cache) -> usize {
    let mut n = 0;
    with_cache("qs_attn_cache_memory_bytes", cache, |c| {
        n = c.memory_bytes();
        Ok(())
    });
    n
}

//! QStream C ABI (`libqstream`): the functions and types declared in `include/qstream.h`.
//!
//! The header is generated from this crate by cbindgen (`tests/header_current.rs`
//! compares it; `QSTREAM_BLESS=1 cargo test -p qstream-capi --test header_current`
//! rewrites it). The conventions (status codes, ownership, buffers, thread safety) are
//! documented in the header's top comment (`cbindgen.toml`).
//!
//! Layout: [`status`] (codes, last error, panic boundary), [`ffi`] (argument helpers),
//! [`log`], [`model`] (loading, getters, tokenizer, chat template), [`context`] (contexts,
//! samplers, generation), [`convert`], [`attention`] (the standalone KV cache + attention).
#![allow(clippy::missing_safety_doc)]

pub mod attention;
pub mod context;
pub mod convert;
pub mod ffi;
pub mod log;
pub mod model;
pub mod status;

use std::ffi::{c_char, c_void};

pub use attention::*;
pub use context::*;
pub use convert::*;
pub use log::{qs_log_cb, qs_log_level, qs_log_level_value, qs_log_record};
pub use model::*;
pub use status::{qs_status, qs_status_code};

use status::{finish, Fail};

/// ABI version: bumped on every incompatible change; also the SONAME suffix
/// (`libqstream.so.0`). Compare `qs_abi_version()` with `QS_ABI_VERSION` at start-up.
pub const QS_ABI_VERSION: u32 = 0;

/// Library version ("0.1.0"): a static string, never freed.
#[no_mangle]
pub extern "C" fn qs_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// ABI version of the loaded library (equal to `QS_ABI_VERSION` of a matching header).
#[no_mangle]
pub extern "C" fn qs_abi_version() -> u32 {
    QS_ABI_VERSION
}

/// Static name of a status code ("QS_STATUS_CORRUPT"); "QS_STATUS_UNKNOWN" for a value
/// that is not a `QS_STATUS_*`. Never freed.
#[no_mangle]
pub extern "C" fn qs_status_str(status: qs_status) -> *const c_char {
    match qs_status_code::from_i32(status) {
        Some(c) => c.name().as_ptr().cast(),
        None => c"QS_STATUS_UNKNOWN".as_ptr(),
    }
}

/// Detailed message of the last failing call on the calling thread (with path, offset or
/// tensor name where known); "" when none. Valid until this thread's next failing call
/// or `qs_clear_last_error`. Successful calls do not clear it.
#[no_mangle]
pub extern "C" fn qs_last_error_message() -> *const c_char {
    // no finish(): a failure here must not replace the message being asked for
    std::panic::catch_unwind(status::last_error_ptr).unwrap_or(c"".as_ptr())
}

/// Clear the calling thread's last error message.
#[no_mangle]
pub extern "C" fn qs_clear_last_error() {
    status::clear_last_error()
}

/// Route log messages at `min_level` (a `QS_LOG_*` value) or above to `cb` (NULL =
/// stderr, the default, with `QS_LOG_WARN`). Global and thread-safe: returns once
/// callbacks running on other threads have returned, so the old `userdata` may then be
/// freed. `cb` runs with no library lock held and may call any function, `qs_log_set`
/// included (messages logged by calls made inside `cb` are dropped).
/// `QS_STATUS_INVALID_ARGUMENT` for an unknown level.
#[no_mangle]
pub extern "C" fn qs_log_set(
    cb: qs_log_cb,
    userdata: *mut c_void,
    min_level: qs_log_level,
) -> qs_status {
    status::boundary(
        "qs_log_set",
        || {},
        || {
            if min_level > qs_log_level_value::QS_LOG_OFF as u32 {
                return Err(Fail::invalid(format!(
                    "min_level {min_level} is not a QS_LOG_* value"
                )));
            }
            log::set(cb, userdata, min_level);
            Ok(())
        },
    )
}

/// Set the activation precision of the integer kernels for the whole process: 16 (the
/// default: next tokens agree with the exact f32 path) or 8 (llama.cpp's `Q8_1` scheme:
/// faster, lower next-token agreement; measured in docs/benchmarks.md). Overrides the environment
/// variable `QSTREAM_ACT_BITS`. Global: applies to decodes started afterwards; must not race
/// with running decodes. `QS_STATUS_INVALID_ARGUMENT` for any other value.
#[no_mangle]
pub extern "C" fn qs_set_act_bits(bits: u32) -> qs_status {
    match qstream_core::kernels::ActBits::from_bits(bits) {
        Some(b) => {
            qstream_core::kernels::set_act_bits(b);
            status::QS_STATUS_OK as qs_status
        }
        None => finish(
            "qs_set_act_bits",
            Err(Fail::invalid(format!("bits {bits}: expected 8 or 16"))),
        ),
    }
}

/// The activation precision in use (8 or 16; see `qs_set_act_bits`).
#[no_mangle]
pub extern "C" fn qs_act_bits() -> u32 {
    qstream_core::kernels::act_bits().bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::ptr;

    use qstream_core::engine::Session;
    use status::{QS_STATUS_OK, QS_STATUS_PANIC};

    fn last_error() -> String {
        // SAFETY: a NUL-terminated string owned by this thread.
        unsafe { CStr::from_ptr(qs_last_error_message()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn act_bits_set_and_rejected() {
        let before = qs_act_bits();
        assert_eq!(qs_set_act_bits(8), QS_STATUS_OK as qs_status);
        assert_eq!(qs_act_bits(), 8);
        assert_ne!(qs_set_act_bits(12), QS_STATUS_OK as qs_status);
        assert!(
            last_error().contains("expected 8 or 16"),
            "{}",
            last_error()
        );
        assert_eq!(qs_act_bits(), 8);
        assert_eq!(qs_set_act_bits(before), QS_STATUS_OK as qs_status);
    }

    /// A test-only export that panics inside the boundary.
    #[no_mangle]
    extern "C" fn qs_test_panic(with: bool) -> qs_status {
        status::boundary(
            "qs_test_panic",
            || {},
            || {
                if with {
                    panic!("boom from the test export");
                }
                Ok(())
            },
        )
    }

    #[test]
    fn panic_maps_to_status_and_message() {
        assert_eq!(qs_test_panic(false), QS_STATUS_OK as i32);
        assert_eq!(qs_test_panic(true), QS_STATUS_PANIC as i32);
        let m = last_error();
        assert!(m.contains("boom from the test export"), "{m}");
        // the host survives and later calls work
        assert_eq!(qs_test_panic(false), QS_STATUS_OK as i32);
    }

    /// A sampler in use by one call answers a second one with BUSY instead of handing out
    /// a second `&mut` to its state.
    #[test]
    fn sampler_busy_guard() {
        use status::{QS_STATUS_BUSY, QS_STATUS_NULL_ARGUMENT};
        let sp = qs_sampling_default_params();
        let mut s = ptr::null_mut();
        // SAFETY: valid arguments; `s` is freed once at the end.
        unsafe {
            assert_eq!(qs_sampler_new(&sp, &mut s), QS_STATUS_OK as qs_status);
            let mut inner = QS_STATUS_OK as qs_status;
            let st = context::test_with_sampler(s, || {
                let mut tok = 0;
                inner = qs_sampler_sample(s, ptr::null_mut(), &mut tok);
            });
            assert_eq!(st, QS_STATUS_OK as qs_status);
            assert_eq!(inner, QS_STATUS_BUSY as qs_status);
            assert!(
                last_error().contains("sampler is in use"),
                "{}",
                last_error()
            );
            // released afterwards: the next call gets to the (NULL) context check
            let mut tok = 0;
            assert_eq!(
                qs_sampler_sample(s, ptr::null_mut(), &mut tok),
                QS_STATUS_NULL_ARGUMENT as qs_status
            );
            // a panic while the sampler is held poisons it
            let st = context::test_with_sampler(s, || panic!("mid-sample panic"));
            assert_eq!(st, QS_STATUS_PANIC as qs_status);
            assert_eq!(
                qs_sampler_sample(s, ptr::null_mut(), &mut tok),
                QS_STATUS_PANIC as qs_status
            );
            qs_sampler_free(s);
        }
    }

    #[test]
    fn panic_poisons_context() {
        // a real context on the tiny llama fixture (converted in-process)
        let dir = tempfile::Builder::new()
            .prefix("qs_capi_panic_")
            .tempdir()
            .unwrap();
        let qsf = dir.path().join("tiny.qsf");
        let src =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny/llama");
        let p = qstream_core::convert::ConvertParams {
            quant: qstream_core::convert::QuantChoice::Type(qstream_core::quant::QuantType::F32),
            ..Default::default()
        };
        qstream_core::convert::convert(&src, &qsf, &p, &mut |_| true).unwrap();
        let path = std::ffi::CString::new(qsf.to_str().unwrap()).unwrap();
        let mut m = ptr::null_mut();
        let mp = qs_model_default_params();
        // SAFETY: valid arguments.
        unsafe {
            assert_eq!(
                qs_model_load(path.as_ptr(), &mp, &mut m),
                0,
                "{}",
                last_error()
            );
            let cp = qs_context_default_params();
            let mut c = ptr::null_mut();
            assert_eq!(qs_context_new(m, &cp, &mut c), 0);
            let ids = [1u32, 2, 3];
            assert_eq!(qs_context_decode(c, ids.as_ptr(), 3), 0);
            // panic while holding the context
            let st = context::test_with_ctx(c, || panic!("mid-update panic"));
            assert_eq!(st, QS_STATUS_PANIC as i32);
            // every later call on the context reports the poison
            assert_eq!(
                qs_context_decode(c, ids.as_ptr(), 1),
                QS_STATUS_PANIC as i32
            );
            assert!(last_error().contains("poisoned"));
            assert_eq!(qs_context_reset(c), QS_STATUS_PANIC as i32);
            // other handles are unaffected
            let mut c2 = ptr::null_mut();
            assert_eq!(qs_context_new(m, &cp, &mut c2), 0);
            assert_eq!(qs_context_decode(c2, ids.as_ptr(), 3), 0);
            qs_context_free(c2);
            qs_context_free(c);
            qs_model_free(m);
        }
        drop(dir);
        let _ = std::mem::size_of::<Session>();
    }
}

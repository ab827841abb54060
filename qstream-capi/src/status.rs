//! Status codes, the per-thread last-error message and the panic boundary.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use qstream_core::{Error, ErrorKind};

use crate::log::{log, LogLevel};

/// Return type of every fallible function: one of the `QS_STATUS_*` values
/// ([`qs_status_code`]). An integer typedef so the ABI does not depend on enum width.
#[allow(non_camel_case_types)]
pub type qs_status = i32;

/// Named status values. Numbers are grouped by area and never reused: 0 success,
/// 1xx argument, 2xx file/format, 3xx resources, 4xx runtime, 9xx panic/internal.
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum qs_status_code {
    /// Success.
    QS_STATUS_OK = 0,
    /// A required pointer argument was NULL.
    QS_STATUS_NULL_ARGUMENT = 100,
    /// An argument is out of range or malformed (bad token id, unknown enum value,
    /// bad `struct_size`, tokenizer error, model without chat template, ...).
    QS_STATUS_INVALID_ARGUMENT = 101,
    /// An output buffer is too small; the needed size was written to `*out_len`.
    QS_STATUS_BUFFER_TOO_SMALL = 102,
    /// A text argument is not valid UTF-8.
    QS_STATUS_INVALID_UTF8 = 103,
    /// The file does not exist.
    QS_STATUS_NOT_FOUND = 200,
    /// Any other I/O error.
    QS_STATUS_IO = 201,
    /// The file is not a QSF (or GGUF / HF) file.
    QS_STATUS_BAD_MAGIC = 202,
    /// The file's format version is newer than this library.
    QS_STATUS_UNSUPPORTED_VERSION = 203,
    /// The file is structurally invalid (truncated, bad offsets or shapes).
    QS_STATUS_CORRUPT = 204,
    /// A checksum did not match.
    QS_STATUS_CHECKSUM = 205,
    /// An allocation failed.
    QS_STATUS_OUT_OF_MEMORY = 300,
    /// The context window cannot hold the tokens (nothing was changed).
    QS_STATUS_CONTEXT_FULL = 301,
    /// The weights exceed `qs_model_params.ram_budget_bytes`.
    QS_STATUS_BUDGET_EXCEEDED = 302,
    /// The operation was cancelled (a progress callback returned false).
    QS_STATUS_CANCELLED = 400,
    /// The model architecture is not supported.
    QS_STATUS_UNSUPPORTED_ARCH = 401,
    /// A tensor / quantization type is not supported.
    QS_STATUS_UNSUPPORTED_QUANT = 402,
    /// The context is in use by another call (another thread, or a callback re-entering).
    QS_STATUS_BUSY = 403,
    /// A panic was caught inside the library; the handle involved is poisoned and every
    /// later call on it returns this code.
    QS_STATUS_PANIC = 900,
    /// An internal invariant did not hold (a bug).
    QS_STATUS_INTERNAL = 901,
}

pub use qs_status_code::*;

impl qs_status_code {
    /// Every code, for `qs_status_str` and tests.
    pub const ALL: [qs_status_code; 20] = [
        QS_STATUS_OK,
        QS_STATUS_NULL_ARGUMENT,
        QS_STATUS_INVALID_ARGUMENT,
        QS_STATUS_BUFFER_TOO_SMALL,
        QS_STATUS_INVALID_UTF8,
        QS_STATUS_NOT_FOUND,
        QS_STATUS_IO,
        QS_STATUS_BAD_MAGIC,
        QS_STATUS_UNSUPPORTED_VERSION,
        QS_STATUS_CORRUPT,
        QS_STATUS_CHECKSUM,
        QS_STATUS_OUT_OF_MEMORY,
        QS_STATUS_CONTEXT_FULL,
        QS_STATUS_BUDGET_EXCEEDED,
        QS_STATUS_CANCELLED,
        QS_STATUS_UNSUPPORTED_ARCH,
        QS_STATUS_UNSUPPORTED_QUANT,
        QS_STATUS_BUSY,
        QS_STATUS_PANIC,
        QS_STATUS_INTERNAL,
    ];

    /// Total conversion from an integer (unknown values → `None`); never a transmute.
    pub fn from_i32(v: i32) -> Option<qs_status_code> {
        Self::ALL.iter().copied().find(|c| *c as i32 == v)
    }

    /// The code's name as a static NUL-terminated string.
    pub fn name(self) -> &'static str {
        match self {
            QS_STATUS_OK => "QS_STATUS_OK\0",
            QS_STATUS_NULL_ARGUMENT => "QS_STATUS_NULL_ARGUMENT\0",
            QS_STATUS_INVALID_ARGUMENT => "QS_STATUS_INVALID_ARGUMENT\0",
            QS_STATUS_BUFFER_TOO_SMALL => "QS_STATUS_BUFFER_TOO_SMALL\0",
            QS_STATUS_INVALID_UTF8 => "QS_STATUS_INVALID_UTF8\0",
            QS_STATUS_NOT_FOUND => "QS_STATUS_NOT_FOUND\0",
            QS_STATUS_IO => "QS_STATUS_IO\0",
            QS_STATUS_BAD_MAGIC => "QS_STATUS_BAD_MAGIC\0",
            QS_STATUS_UNSUPPORTED_VERSION => "QS_STATUS_UNSUPPORTED_VERSION\0",
            QS_STATUS_CORRUPT => "QS_STATUS_CORRUPT\0",
            QS_STATUS_CHECKSUM => "QS_STATUS_CHECKSUM\0",
            QS_STATUS_OUT_OF_MEMORY => "QS_STATUS_OUT_OF_MEMORY\0",
            QS_STATUS_CONTEXT_FULL => "QS_STATUS_CONTEXT_FULL\0",
            QS_STATUS_BUDGET_EXCEEDED => "QS_STATUS_BUDGET_EXCEEDED\0",
            QS_STATUS_CANCELLED => "QS_STATUS_CANCELLED\0",
            QS_STATUS_UNSUPPORTED_ARCH => "QS_STATUS_UNSUPPORTED_ARCH\0",
            QS_STATUS_UNSUPPORTED_QUANT => "QS_STATUS_UNSUPPORTED_QUANT\0",
            QS_STATUS_BUSY => "QS_STATUS_BUSY\0",
            QS_STATUS_PANIC => "QS_STATUS_PANIC\0",
            QS_STATUS_INTERNAL => "QS_STATUS_INTERNAL\0",
        }
    }
}

/// An error on its way to C: a status and a message for `qs_last_error_message`.
#[derive(Debug)]
pub struct Fail {
    pub status: qs_status_code,
    pub msg: String,
}

impl Fail {
    pub fn new(status: qs_status_code, msg: impl Into<String>) -> Fail {
        Fail {
            status,
            msg: msg.into(),
        }
    }
    pub fn null(what: &str) -> Fail {
        Fail::new(QS_STATUS_NULL_ARGUMENT, format!("{what} is NULL"))
    }
    pub fn invalid(msg: impl Into<String>) -> Fail {
        Fail::new(QS_STATUS_INVALID_ARGUMENT, msg)
    }
}

/// The status an engine error maps to.
pub fn status_of(kind: ErrorKind) -> qs_status_code {
    match kind {
        ErrorKind::InvalidArgument => QS_STATUS_INVALID_ARGUMENT,
        ErrorKind::NotFound => QS_STATUS_NOT_FOUND,
        ErrorKind::Io => QS_STATUS_IO,
        ErrorKind::BadMagic => QS_STATUS_BAD_MAGIC,
        ErrorKind::UnsupportedVersion => QS_STATUS_UNSUPPORTED_VERSION,
        ErrorKind::Corrupt => QS_STATUS_CORRUPT,
        ErrorKind::Checksum => QS_STATUS_CHECKSUM,
        ErrorKind::OutOfMemory => QS_STATUS_OUT_OF_MEMORY,
        ErrorKind::BudgetExceeded => QS_STATUS_BUDGET_EXCEEDED,
        ErrorKind::ContextFull => QS_STATUS_CONTEXT_FULL,
        ErrorKind::Cancelled => QS_STATUS_CANCELLED,
        ErrorKind::UnsupportedArch => QS_STATUS_UNSUPPORTED_ARCH,
        ErrorKind::UnsupportedQuant => QS_STATUS_UNSUPPORTED_QUANT,
        ErrorKind::Internal => QS_STATUS_INTERNAL,
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::new(status_of(e.kind()), e.to_string())
    }
}

/// Result inside the library.
pub type CResult<T = ()> = Result<T, Fail>;

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Record `msg` as this thread's last error.
pub fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

/// Clear this thread's last error.
pub fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

/// Pointer to this thread's last error message ("" when none).
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| match e.borrow().as_ref() {
        Some(c) => c.as_ptr(),
        None => c"".as_ptr(),
    })
}

/// Turn a result into a status, recording the message of a failure.
pub fn finish(func: &str, r: CResult) -> qs_status {
    match r {
        Ok(()) => QS_STATUS_OK as qs_status,
        Err(f) => {
            let msg = format!("{func}: {}", f.msg);
            log(LogLevel::Debug, "qstream::capi", &msg);
            set_last_error(&msg);
            f.status as qs_status
        }
    }
}

/// Text of a panic payload.
pub fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Run `f` behind the panic boundary. A panic becomes [`QS_STATUS_PANIC`] with the panic
/// message as last error, and `on_panic` runs (it poisons the handle involved).
pub fn boundary(func: &str, on_panic: impl FnOnce(), f: impl FnOnce() -> CResult) -> qs_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => finish(func, r),
        Err(p) => {
            on_panic();
            let msg = format!("{func}: panic: {}", panic_message(p.as_ref()));
            log(LogLevel::Error, "qstream::capi", &msg);
            set_last_error(&msg);
            QS_STATUS_PANIC as qs_status
        }
    }
}

/// As [`boundary`] for infallible getters: returns `fallback` on failure or panic.
pub fn boundary_value<T>(
    func: &str,
    fallback: T,
    on_panic: impl FnOnce(),
    f: impl FnOnce() -> CResult<T>,
) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            finish(func, Err(e));
            fallback
        }
        Err(p) => {
            on_panic();
            let msg = format!("{func}: panic: {}", panic_message(p.as_ref()));
            log(LogLevel::Error, "qstream::capi", &msg);
            set_last_error(&msg);
            fallback
        }
    }
}

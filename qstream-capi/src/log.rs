//! Logging: messages go to a host callback set with `qs_log_set`, or to stderr.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Log severity (`QS_LOG_*`), passed as `uint32_t`.
#[allow(non_camel_case_types)]
pub type qs_log_level = u32;

/// Named log levels.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum qs_log_level_value {
    /// Fine detail (every failing call is logged at this level).
    QS_LOG_DEBUG = 0,
    /// Progress (model loaded, ...).
    QS_LOG_INFO = 1,
    /// Something unexpected that did not fail the call.
    QS_LOG_WARN = 2,
    /// A caught panic or another serious problem.
    QS_LOG_ERROR = 3,
    /// Log nothing (only as `min_level`).
    QS_LOG_OFF = 4,
}

/// Internal alias.
pub use qs_log_level_value as LogLevel;
#[allow(non_upper_case_globals)]
impl LogLevel {
    pub const Debug: LogLevel = LogLevel::QS_LOG_DEBUG;
    pub const Info: LogLevel = LogLevel::QS_LOG_INFO;
    pub const Error: LogLevel = LogLevel::QS_LOG_ERROR;
}

/// One log message, valid only during the callback. Strings are UTF-8 and NOT
/// NUL-terminated.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct qs_log_record {
    /// `sizeof(qs_log_record)` as known to the library; fields may be appended.
    pub struct_size: u32,
    /// A `QS_LOG_*` value.
    pub level: qs_log_level,
    /// Where the message comes from, e.g. "qstream::capi".
    pub target: *const c_char,
    pub target_len: usize,
    /// The message.
    pub message: *const c_char,
    pub message_len: usize,
}

/// Log callback: `userdata` first, then the record (valid only during the call).
#[allow(non_camel_case_types)]
pub type qs_log_cb =
    Option<unsafe extern "C" fn(userdata: *mut c_void, record: *const qs_log_record)>;

struct LogState {
    cb: qs_log_cb,
    userdata: usize,
    min_level: u32,
    /// callbacks running now (on any thread)
    in_flight: usize,
}

static STATE: Mutex<LogState> = Mutex::new(LogState {
    cb: None,
    userdata: 0,
    min_level: qs_log_level_value::QS_LOG_WARN as u32,
    in_flight: 0,
});
/// Signalled when `in_flight` drops.
static IDLE: Condvar = Condvar::new();

thread_local! {
    /// Whether this thread is inside the host's log callback.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

fn state() -> MutexGuard<'static, LogState> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Install `cb` (None = stderr) for messages at `min_level` or above. Waits until callbacks
/// running on other threads have returned, so the old `userdata` may be freed afterwards;
/// called from inside the callback it does not wait (the caller's own callback is running).
pub fn set(cb: qs_log_cb, userdata: *mut c_void, min_level: u32) {
    let mut s = state();
    s.cb = cb;
    s.userdata = userdata as usize;
    s.min_level = min_level;
    if IN_CALLBACK.with(Cell::get) {
        return;
    }
    while s.in_flight > 0 {
        s = IDLE.wait(s).unwrap_or_else(|e| e.into_inner());
    }
}

/// Emit a message. The host's callback runs with no lock held, so it may call any
/// function of the library (messages those calls log while it runs are dropped, which
/// keeps a failing call inside the callback from recursing).
pub fn log(level: LogLevel, target: &str, msg: &str) {
    if IN_CALLBACK.with(Cell::get) {
        return;
    }
    let (cb, userdata) = {
        let mut s = state();
        if (level as u32) < s.min_level {
            return;
        }
        match s.cb {
            Some(cb) => {
                s.in_flight += 1;
                (cb, s.userdata)
            }
            None => {
                drop(s);
                let name = match level {
                    LogLevel::QS_LOG_DEBUG => "debug",
                    LogLevel::QS_LOG_INFO => "info",
                    LogLevel::QS_LOG_WARN => "warn",
                    _ => "error",
                };
                eprintln!("[qstream {name}] {msg}");
                return;
            }
        }
    };
    let rec = qs_log_record {
        struct_size: std::mem::size_of::<qs_log_record>() as u32,
        level: level as u32,
        target: target.as_ptr().cast(),
        target_len: target.len(),
        message: msg.as_ptr().cast(),
        message_len: msg.len(),
    };
    IN_CALLBACK.with(|c| c.set(true));
    // SAFETY: the host registered `cb` with `qs_log_set`; `rec` and the strings it points
    // to live until the call returns; `set` waits for this call before `userdata` can be
    // replaced and freed.
    unsafe { cb(userdata as *mut c_void, &rec) };
    IN_CALLBACK.with(|c| c.set(false));
    let mut s = state();
    s.in_flight -= 1;
    drop(s);
    IDLE.notify_all();
}

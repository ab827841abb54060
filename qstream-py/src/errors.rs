//! Exception hierarchy and the panic boundary.
//!
//! Every exception derives from `qstream.QStreamError` and carries `.code`, the same number
//! the C API returns as `qs_status` for that failure (see `qstream-capi/src/status.rs`), so
//! the Rust, C and Python surfaces agree. Classes that correspond to a built-in failure also
//! derive from the built-in (`FileNotFoundError`, `OSError`, `ValueError`, `MemoryError`), so
//! idiomatic `except FileNotFoundError:` works.
//!
//! The classes are defined in Python source (multiple inheritance from built-ins is simplest
//! there) when the extension module is initialised.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};
use qstream_core::{Error, ErrorKind};

/// C status codes (`qs_status_code` in qstream-capi).
pub mod code {
    pub const INVALID_ARGUMENT: i32 = 101;
    pub const NOT_FOUND: i32 = 200;
    pub const IO: i32 = 201;
    pub const BAD_MAGIC: i32 = 202;
    pub const UNSUPPORTED_VERSION: i32 = 203;
    pub const CORRUPT: i32 = 204;
    pub const CHECKSUM: i32 = 205;
    pub const OUT_OF_MEMORY: i32 = 300;
    pub const CONTEXT_FULL: i32 = 301;
    pub const BUDGET_EXCEEDED: i32 = 302;
    pub const CANCELLED: i32 = 400;
    pub const UNSUPPORTED_ARCH: i32 = 401;
    pub const UNSUPPORTED_QUANT: i32 = 402;
    pub const BUSY: i32 = 403;
    pub const PANIC: i32 = 900;
    pub const INTERNAL: i32 = 901;
}

const CLASSES_PY: &str = r#"
class QStreamError(Exception):
    """Base class of every QStream error. ``code`` is the C API's ``qs_status`` value."""
    code = 901

class InvalidArgumentError(QStreamError, ValueError):
    """A bad argument (option value, token id, tokenizer input, missing chat template)."""
    code = 101

class ClosedError(QStreamError, ValueError):
    """The model (or stream) was closed with ``close()``."""
    code = 101

class QStreamFileNotFoundError(QStreamError, FileNotFoundError):
    """The file does not exist (``.filename`` is the path)."""
    code = 200

class QStreamOSError(QStreamError, OSError):
    """Any other I/O failure."""
    code = 201

class FormatError(QStreamError):
    """The file is not a valid QSF/GGUF/HF model: bad magic (202), corrupt structure (204), checksum (205)."""
    code = 204

class UnsupportedError(QStreamError):
    """Unsupported format version (203), architecture (401) or tensor type (402)."""
    code = 402

class QStreamMemoryError(QStreamError, MemoryError):
    """Out of memory (300) or the weights exceed the ``budget`` given to ``Model`` (302)."""
    code = 300

class ContextFullError(QStreamError):
    """The context window cannot hold the tokens."""
    code = 301

class CancelledError(QStreamError):
    """The operation was cancelled."""
    code = 400

class BusyError(QStreamError):
    """The object is in use by another thread."""
    code = 403

class InternalError(QStreamError):
    """A bug inside QStream (901), or a Rust panic caught at the boundary (900)."""
    code = 901
"#;

/// Names of the classes [`CLASSES_PY`] defines, in definition order.
pub const CLASS_NAMES: [&str; 12] = [
    "QStreamError",
    "InvalidArgumentError",
    "ClosedError",
    "QStreamFileNotFoundError",
    "QStreamOSError",
    "FormatError",
    "UnsupportedError",
    "QStreamMemoryError",
    "ContextFullError",
    "CancelledError",
    "BusyError",
    "InternalError",
];

static CLASSES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Bound<'_, PyDict>> {
    let d = CLASSES.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
        let globals = PyDict::new(py);
        globals.set_item("__name__", "qstream")?;
        globals.set_item("__builtins__", py.import("builtins")?)?;
        let code = std::ffi::CString::new(CLASSES_PY)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        py.run(&code, Some(&globals), None)?;
        Ok(globals.unbind())
    })?;
    Ok(d.bind(py))
}

/// Add the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let d = classes(m.py())?;
    for name in CLASS_NAMES {
        if let Some(cls) = d.get_item(name)? {
            m.add(name, cls)?;
        }
    }
    Ok(())
}

/// Why a call failed, before it is turned into a Python exception (built without the GIL).
#[derive(Debug)]
pub enum Fail {
    /// An engine error.
    Core(Error),
    /// A panic caught at the boundary.
    Panic(String),
    /// The object was closed.
    Closed(&'static str),
    /// Used by another thread at the same time.
    Busy(&'static str),
    /// A bad argument detected by the bindings.
    Arg(String),
    /// A Python exception (e.g. KeyboardInterrupt from a signal check).
    Py(PyErr),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Core(e)
    }
}

impl From<PyErr> for Fail {
    fn from(e: PyErr) -> Self {
        Fail::Py(e)
    }
}

/// Class name and code for an engine error.
fn class_of(e: &Error) -> (&'static str, i32) {
    match e.kind() {
        ErrorKind::InvalidArgument => ("InvalidArgumentError", code::INVALID_ARGUMENT),
        ErrorKind::NotFound => ("QStreamFileNotFoundError", code::NOT_FOUND),
        ErrorKind::Io => ("QStreamOSError", code::IO),
        ErrorKind::BadMagic => ("FormatError", code::BAD_MAGIC),
        ErrorKind::UnsupportedVersion => ("UnsupportedError", code::UNSUPPORTED_VERSION),
        ErrorKind::Corrupt => ("FormatError", code::CORRUPT),
        ErrorKind::Checksum => ("FormatError", code::CHECKSUM),
        ErrorKind::OutOfMemory => ("QStreamMemoryError", code::OUT_OF_MEMORY),
        ErrorKind::BudgetExceeded => ("QStreamMemoryError", code::BUDGET_EXCEEDED),
        ErrorKind::ContextFull => ("ContextFullError", code::CONTEXT_FULL),
        ErrorKind::Cancelled => ("CancelledError", code::CANCELLED),
        ErrorKind::UnsupportedArch => ("UnsupportedError", code::UNSUPPORTED_ARCH),
        ErrorKind::UnsupportedQuant => ("UnsupportedError", code::UNSUPPORTED_QUANT),
        ErrorKind::Internal => ("InternalError", code::INTERNAL),
    }
}

fn make(py: Python<'_>, class: &str, code: i32, args: Bound<'_, pyo3::types::PyTuple>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = classes(py)?
            .get_item(class)?
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err(class.to_string()))?;
        let exc = cls.call1(args)?;
        exc.setattr("code", code)?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

impl Fail {
    /// The Python exception for this failure.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        use pyo3::types::PyTuple;
        let one = |s: String| {
            // a 1-tuple of a str; allocation failure leaves an empty tuple (never panics)
            PyTuple::new(py, [s]).unwrap_or_else(|_| PyTuple::empty(py))
        };
        match self {
            Fail::Py(e) => e,
            Fail::Panic(msg) => make(
                py,
                "InternalError",
                code::PANIC,
                one(format!("panic inside qstream: {msg}")),
            ),
            Fail::Closed(what) => make(
                py,
                "ClosedError",
                code::INVALID_ARGUMENT,
                one(format!("{what} is closed")),
            ),
            Fail::Busy(what) => make(
                py,
                "BusyError",
                code::BUSY,
                one(format!("{what} is in use by another thread")),
            ),
            Fail::Arg(msg) => make(py, "InvalidArgumentError", code::INVALID_ARGUMENT, one(msg)),
            Fail::Core(e) => {
                let (class, c) = class_of(&e);
                let msg = e.to_string();
                let args = match &e {
                    // OSError(errno, strerror, filename) sets .errno/.strerror/.filename
                    Error::NotFound { path } => (2i32, msg, path.display().to_string())
                        .into_pyobject(py)
                        .map(|t| t.into_any()),
                    Error::Io { path, source } => (
                        source.raw_os_error().unwrap_or(0),
                        msg,
                        path.display().to_string(),
                    )
                        .into_pyobject(py)
                        .map(|t| t.into_any()),
                    _ => Ok(one(msg).into_any()),
                };
                match args.and_then(|a| a.cast_into::<PyTuple>().map_err(PyErr::from)) {
                    Ok(t) => make(py, class, c, t),
                    Err(e) => e,
                }
            }
        }
    }
}

/// Message of a panic payload.
pub fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run `f`, turning a panic into [`Fail::Panic`]: no panic crosses into Python.
pub fn guard<T>(f: impl FnOnce() -> Result<T, Fail>) -> Result<T, Fail> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(Fail::Panic(panic_message(p.as_ref()))),
    }
}

/// `guard` with the GIL released, converting the failure to a Python exception.
pub fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, Fail> + Send,
) -> PyResult<T> {
    py.detach(|| guard(f)).map_err(|e| e.into_pyerr(py))
}

/// `guard` with the GIL held, converting the failure to a Python exception.
pub fn attached<T>(py: Python<'_>, f: impl FnOnce() -> Result<T, Fail>) -> PyResult<T> {
    guard(f).map_err(|e| e.into_pyerr(py))
}

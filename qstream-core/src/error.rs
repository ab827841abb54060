//! Error type shared by every part of the engine.
//!
//! [`Error`] carries context (path, offset, tensor name); [`ErrorKind`] is the coarse
//! class the C API maps to a status code and the Python package to an exception class.

use std::path::PathBuf;

/// Coarse error class; stable, used by the C and Python bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A caller passed a bad argument (bad option value, out-of-range id, ...).
    InvalidArgument,
    /// A file does not exist.
    NotFound,
    /// Any other I/O failure.
    Io,
    /// The file is not of the expected format (wrong magic).
    BadMagic,
    /// The file's format version is newer than this reader understands.
    UnsupportedVersion,
    /// The file is structurally invalid (bad offset, size, shape, truncated ...).
    Corrupt,
    /// A checksum did not match.
    Checksum,
    /// An allocation failed.
    OutOfMemory,
    /// The weights exceed the RAM budget the caller set (`ModelParams::ram_budget`).
    BudgetExceeded,
    /// The context window is full.
    ContextFull,
    /// The operation was cancelled.
    Cancelled,
    /// The model architecture is not supported.
    UnsupportedArch,
    /// A tensor or quantization type is not supported.
    UnsupportedQuant,
    /// A bug: an invariant did not hold.
    Internal,
}

/// Every error QStream returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{}: file not found", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: bad magic (not a {what} file)")]
    BadMagic { what: &'static str },
    #[error("unsupported {what} version {found} (this reader supports up to {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("corrupt file: {0}")]
    Corrupt(String),
    #[error("checksum mismatch in {what}: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        what: String,
        stored: u32,
        computed: u32,
    },
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("weights take {needed} bytes, the RAM budget is {budget}")]
    BudgetExceeded { needed: u64, budget: u64 },
    #[error("context full: {needed} tokens needed but the context holds {n_ctx}")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("cancelled")]
    Cancelled,
    #[error("unsupported architecture: {0}")]
    UnsupportedArch(String),
    #[error("unsupported tensor type: {0}")]
    UnsupportedQuant(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The coarse class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Io { .. } => ErrorKind::Io,
            Error::BadMagic { .. } => ErrorKind::BadMagic,
            Error::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::Checksum { .. } => ErrorKind::Checksum,
            Error::OutOfMemory(_) => ErrorKind::OutOfMemory,
            Error::BudgetExceeded { .. } => ErrorKind::BudgetExceeded,
            Error::ContextFull { .. } => ErrorKind::ContextFull,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::UnsupportedArch(_) => ErrorKind::UnsupportedArch,
            Error::UnsupportedQuant(_) => ErrorKind::UnsupportedQuant,
            Error::Tokenizer(_) => ErrorKind::InvalidArgument,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// An I/O error on `path`, mapping "not found" to [`Error::NotFound`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path }
        } else {
            Error::Io { path, source }
        }
    }

    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(msg: impl Into<String>) -> Self {
        Error::Corrupt(msg.into())
    }
}

/// `Result` with QStream's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

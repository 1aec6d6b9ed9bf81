//! Error types shared by the whole library.
//!
//! Parsers work over byte slices and report a [`ParseError`] that names the
//! field and byte offset; the I/O layer wraps it with the file path. Every
//! error that reaches the command line names the file (and tensor, key or
//! field) it is about.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An error found while parsing bytes, without knowing which file they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Which field was being read, e.g. `tensor_infos[3].dims[1]` or `metadata["general.alignment"]`.
    pub field: String,
    /// Byte offset in the input where the field starts (or where reading failed).
    pub offset: u64,
    /// What is wrong.
    pub msg: String,
}

impl ParseError {
    pub fn new(field: impl Into<String>, offset: u64, msg: impl Into<String>) -> Self {
        ParseError { field: field.into(), offset, msg: msg.into() }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {}): {}", self.field, self.offset, self.msg)
    }
}

impl std::error::Error for ParseError {}

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a named file.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A file's bytes do not follow its format.
    #[error("{}: invalid {format}: {source}", path.display())]
    Parse {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: ParseError,
    },
    /// A well-formed input that cannot be used for the requested job
    /// (missing tensor, shape mismatch, unsupported architecture, ...).
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },
    /// A bad command-line argument or combination of options.
    #[error("{0}")]
    Usage(String),
    /// Input data that ggufkit understands but does not support.
    #[error("{0}")]
    Unsupported(String),
    /// A non-finite weight was found.
    #[error("tensor '{tensor}' row {row}: non-finite value ({value}) in {source_name}")]
    NonFinite { source_name: String, tensor: String, row: u64, value: f32 },
    /// Something wrong with one tensor's data or conversion (the message
    /// starts with what follows the tensor's name: a row, or a colon).
    #[error("tensor '{tensor}' {message}")]
    Tensor { tensor: String, message: String },
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, op: &'static str, source: io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), op, source }
    }
    pub fn parse(path: impl AsRef<Path>, format: &'static str, source: ParseError) -> Self {
        Error::Parse { path: path.as_ref().to_path_buf(), format, source }
    }
    pub fn input(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Input { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    /// The process exit code for this error (2; Ctrl-C and SIGTERM end the
    /// process with 130 from the signal handler, after removing the
    /// temporary outputs, see [`crate::fileio::install_signal_handlers`]).
    pub fn exit_code(&self) -> u8 {
        2
    }

    /// This error as it concerns tensor `name` (rows from `row`, when known):
    /// a context-free message gets the tensor as context; an error that
    /// already names its file or tensor is kept as it is.
    pub fn in_tensor(self, name: &str, row: Option<u64>) -> Error {
        match self {
            Error::Other(m) => Error::Tensor {
                tensor: name.to_string(),
                message: match row {
                    Some(r) => format!("rows from {r}: {m}"),
                    None => format!(": {m}"),
                },
            },
            e => e,
        }
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>, op: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::io(path, op, e))
    }
}

//! ggufkit: a pure-Rust GGUF toolkit.
//!
//! The library does all the work; the `ggufkit` binary is a thin command-line
//! layer over it. See `README.md` for the commands and `formats/` for the
//! format notes and the data tables that drive conversion and templates.
pub mod commands;
pub mod convert;
pub mod error;
pub mod fileio;
pub mod gguf;
pub mod hf;
pub mod imatrix;
pub mod infer;
pub mod lora;
pub mod modelfile;
pub mod pack;
pub mod pipeline;
pub mod policy;
pub mod progress;
pub mod quant;
pub mod shape;
pub mod target;
pub mod tokenize;

pub use error::{Error, Result};

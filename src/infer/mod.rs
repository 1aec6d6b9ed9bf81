//! The forward pass and what is built on it: `ggufkit eval` (perplexity and
//! KL divergence as llama-perplexity computes them) and `ggufkit imatrix`
//! (the importance matrix as llama-imatrix computes it).
//!
//! ```text
//! metadata ──▶ arch::Config ─┐
//! TensorSource ──▶ weights ──┴▶ forward::Model ──▶ logits ──▶ eval
//!                                   └── MatmulHook ──▶ imatrix::Collector
//! ```
//!
//! The model comes from any [`crate::pipeline::TensorSource`]: a GGUF file
//! (each stored type computed as llama.cpp computes it) or a Hugging Face
//! directory converted on the fly, LoRA adapters merged (all f32).

pub mod arch;
pub mod argsort;
pub mod eval;
pub mod forward;
pub mod imatrix;
pub mod moe;
pub mod ops;
pub mod source;
pub mod text;
pub mod weights;

pub use eval::{Chunks, EvalOptions, EvalReport, Reference};
pub use forward::{ForwardOptions, MatmulHook, Model};
pub use weights::Precision;

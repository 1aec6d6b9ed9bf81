//! The library side of the commands that work on one or two GGUF files as
//! they are: `inspect` (a file's metadata and tensors), `edit` (metadata
//! changes, tensors streamed unchanged through the engine) and `diff`
//! (tensor-by-tensor comparison). The commands that produce models
//! (`convert`, `quantize`, `merge`, `pack`) live with their concern
//! (`convert/`, `policy/`, `lora/`, `pack/`) and write through
//! [`crate::pipeline`].
pub mod diff;
pub mod edit;
pub mod inspect;

//! Opening what `eval` and `imatrix` evaluate: a GGUF file, or a Hugging
//! Face directory converted on the fly (with PEFT LoRA adapters merged), as
//! `convert` / `merge` would write it at f32.

use std::path::{Path, PathBuf};

use crate::convert::OutType;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Metadata};
use crate::lora::AdapterSpec;
use crate::pack::PackModel;
use crate::pipeline::{GgufSource, TensorSource};
use crate::progress::Progress;

use super::forward::{ForwardOptions, Model};
use super::weights::Precision;

/// An opened model.
pub enum ModelInput {
    Gguf(GgufFile),
    Hf { dir: PathBuf, model: Box<dyn PackModel> },
}

impl ModelInput {
    /// A `.gguf` file or a Hugging Face directory (`adapters` only for a directory).
    pub fn open(path: &Path, adapters: &[AdapterSpec], progress: &dyn Progress) -> Result<ModelInput> {
        if path.is_dir() {
            let stem = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
            let model = crate::pack::open_model(path, adapters, OutType::F32, &stem, None, progress)?;
            return Ok(ModelInput::Hf { dir: path.to_path_buf(), model });
        }
        if !adapters.is_empty() {
            return Err(Error::usage(format!(
                "{}: --lora applies to a Hugging Face directory; for a GGUF, merge first (ggufkit merge)",
                path.display()
            )));
        }
        Ok(ModelInput::Gguf(GgufFile::open(path)?))
    }

    pub fn path(&self) -> &Path {
        match self {
            ModelInput::Gguf(f) => f.path(),
            ModelInput::Hf { dir, .. } => dir,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            ModelInput::Gguf(f) => &f.header.metadata,
            ModelInput::Hf { model, .. } => model.metadata(),
        }
    }

    /// The files read (for refusing to write onto them).
    pub fn inputs(&self) -> Vec<&Path> {
        match self {
            ModelInput::Gguf(f) => vec![f.path()],
            ModelInput::Hf { model, .. } => model.inputs(),
        }
    }

    /// Runs `f` with the model ready to evaluate.
    pub fn with_model<R>(&self, opts: ForwardOptions, f: impl FnOnce(&Model) -> Result<R>) -> Result<R> {
        match self {
            ModelInput::Gguf(file) => {
                let src = GgufSource::new(file);
                let m = Model::new(&file.header.metadata, &src as &dyn TensorSource, Precision::AsStored, opts)?;
                f(&m)
            }
            ModelInput::Hf { model, .. } => {
                let m = Model::new(model.metadata(), model.source(), Precision::F32, opts)?;
                f(&m)
            }
        }
    }
}

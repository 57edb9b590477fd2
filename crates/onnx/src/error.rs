//! Errors of the ONNX layer. Each names the file or tensor involved and what to do.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No ONNX Runtime shared library was found.
    #[error(
        "ONNX Runtime library not found (looked in: {}); run `python3 onnx/setup.py` to fetch it into the models directory, or set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.31 or later",
        .looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    RuntimeMissing {
        /// The places searched.
        looked: Vec<PathBuf>,
    },
    /// The library exists but could not be loaded or initialised.
    #[error("cannot load ONNX Runtime from {path}: {detail}")]
    RuntimeLoad {
        /// The library file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A model file is missing.
    #[error("{path}: model file missing; run `python3 onnx/setup.py` (models directory: {models_dir})")]
    ModelMissing {
        /// The missing file.
        path: PathBuf,
        /// The models directory in use (`METARAG_MODELS` changes it).
        models_dir: PathBuf,
    },
    /// A tokenizer could not be loaded or failed on an input.
    #[error("tokenizer {path}: {detail}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// ONNX Runtime reported an error.
    #[error("{model}: {context}: {detail}")]
    Ort {
        /// The model file.
        model: PathBuf,
        /// What we were doing.
        context: &'static str,
        /// ONNX Runtime's message.
        detail: String,
    },
    /// The graph does not follow the expected contract (names, types, shapes).
    #[error("{model}: graph does not follow the {contract} contract: {detail}")]
    Contract {
        /// The model file.
        model: PathBuf,
        /// Which contract.
        contract: &'static str,
        /// What is wrong (expected vs got).
        detail: String,
    },
    /// An argument is out of range.
    #[error("invalid input: {0}")]
    Input(String),
    /// A pipeline (or an index built with it) names an embedder this build cannot load.
    #[error("unknown embedder {model:?}: this build embeds with {supported} (384 dims)")]
    UnknownEmbedder {
        /// The embedder the pipeline names.
        model: String,
        /// The one this build has.
        supported: &'static str,
    },
}

impl From<Error> for metarag_core::Error {
    fn from(e: Error) -> Self {
        metarag_core::Error::Model(Box::new(e))
    }
}

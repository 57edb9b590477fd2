//! Typed errors of the index crate; every message names the index directory or the data.

use std::path::PathBuf;

/// Result alias for the index crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while opening, writing or searching an index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the index could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The directory is not a metarag index (or not the expected version).
    #[error("{path}: {detail}")]
    NotAnIndex {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The index was built with other settings than the ones asked for.
    #[error("{path}: {detail}")]
    Mismatch {
        /// The index directory.
        path: PathBuf,
        /// Expected vs got.
        detail: String,
    },
    /// The lexical index (tantivy) failed.
    #[error("lexical index {path}: {detail}")]
    Lexical {
        /// The lexical index directory.
        path: PathBuf,
        /// tantivy's message.
        detail: String,
    },
    /// The vector store (Qdrant) failed.
    #[error("vector store {store}: {detail}")]
    Vector {
        /// Which store (directory or server URL).
        store: String,
        /// The engine's message.
        detail: String,
    },
    /// The embedder returned another number of vectors than it was given texts.
    #[error("the embedder returned {vectors} vectors for {texts} texts")]
    EmbedderCount {
        /// Texts given.
        texts: usize,
        /// Vectors returned.
        vectors: usize,
    },
    /// A query could not be run as asked.
    #[error("query: {0}")]
    Query(String),
    /// A pipeline stage (loading, chunking, embedding) failed.
    #[error(transparent)]
    Core(#[from] metarag_core::Error),
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

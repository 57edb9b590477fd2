//! Typed errors of the core crate. Every message carries the data needed to act on it.

use std::path::PathBuf;

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in loading, splitting and chunking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file holds no text at all (zero bytes, only whitespace, or an image-only PDF).
    #[error("{path}: empty document: {detail}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// Why it counts as empty.
        detail: String,
    },
    /// The file looks like binary data, not a document.
    #[error("{path}: binary file ({detail}); expected text, Markdown, HTML or PDF")]
    Binary {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        detail: String,
    },
    /// The file is not valid UTF-8.
    #[error("{path}: invalid UTF-8 at byte {offset}; convert the file to UTF-8 first")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The PDF could not be parsed (corrupt, truncated, encrypted, or the parser panicked).
    #[error("{path}: cannot extract PDF text: {detail}")]
    Pdf {
        /// The file.
        path: PathBuf,
        /// What the PDF parser reported.
        detail: String,
    },
    /// Extraction made no progress (parsing, or one page) within the time limit.
    #[error("{path}: gave up after {seconds} s without progress (time limit; raise it with --file-timeout)")]
    Timeout {
        /// The file.
        path: PathBuf,
        /// The limit that was hit.
        seconds: u64,
    },
    /// The file type is not supported, or support was left out of this build.
    #[error("{path}: unsupported document type: {detail}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Which type and why.
        detail: String,
    },
    /// A model-backed stage (scorer, judge, embedder) failed. The model crate's own error is
    /// the source (e.g. `metarag_onnx::Error`, reachable with `downcast_ref`), not a string.
    #[error("model: {0}")]
    Model(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A chunker returned a span that is not a valid piece of the document's text (out of
    /// bounds, not on a character boundary, or out of order): a bug in that chunker.
    #[error("{doc}: chunk {index} has an invalid span {start}..{end} (text of {len} bytes)")]
    BadSpan {
        /// The document's id.
        doc: String,
        /// The chunk's position.
        index: usize,
        /// Its start.
        start: usize,
        /// Its end.
        end: usize,
        /// The text's length in bytes.
        len: usize,
    },
}

impl Error {
    /// Wraps a model error (any error type, kept as the source), or a message.
    ///
    /// ```
    /// use metarag_core::Error;
    /// let io = std::io::Error::other("graph missing");
    /// let e = Error::model(io);
    /// assert_eq!(e.to_string(), "model: graph missing");
    /// assert!(std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()));
    /// assert_eq!(Error::model("empty prompt").to_string(), "model: empty prompt");
    /// ```
    pub fn model(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Model(e.into())
    }
}

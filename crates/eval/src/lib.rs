//! metarag-eval: QA datasets and metrics for comparing chunkers and retrievers.
//!
//! - [`Dataset`]: a corpus directory plus questions with gold answer spans (the SQuAD dev
//!   corpus built by `onnx/squad.py`, or your own in the same JSONL format).
//! - [`squad`]: SQuAD JSON files converted to that format (bring your own SQuAD-style data).
//! - [`retrieval`]: recall@k, MRR@10 and nDCG@10 of ranked chunks, where a chunk is relevant
//!   when its span covers a gold answer span of the question's document.
//! - [`answers`]: exact match and token F1 (official SQuAD normalisation), ECE.
//! - [`bench`]: the benchmark runner's plan, caches, answer tally, reports and plots (the
//!   model- and index-bound half is `metarag bench`).
//!
//! ```
//! use metarag_eval::retrieval::{Judged, RetrievalMetrics};
//!
//! // question 1: first relevant chunk at rank 2; question 2: none in the list
//! let runs = vec![Judged::new(vec![false, true, false]), Judged::new(vec![false; 3])];
//! let m = RetrievalMetrics::from_runs(&runs);
//! assert_eq!(m.recall_at(1), 0.0);
//! assert_eq!(m.recall_at(5), 0.5);
//! assert!((m.mrr10 - 0.25).abs() < 1e-12);
//! ```

pub mod answers;
pub mod bench;
pub mod dataset;
pub mod retrieval;
pub mod squad;

pub use answers::{AnswerMetrics, AnswerRecord};
pub use dataset::{AnswerSpan, Dataset, Question};
pub use retrieval::{Judged, RetrievalMetrics};

/// Errors of dataset reading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line of the questions file is invalid.
    #[error("{path}:{line}: {detail}")]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

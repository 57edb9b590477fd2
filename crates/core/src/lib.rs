//! metarag-core: documents, loaders, sentence splitting and the chunkers.
//!
//! The main types: [`Document`] (text plus provenance), [`Chunk`] (a byte span into it),
//! the loaders ([`load::load_path`]), the [`split::SentenceSplitter`] trait with the rule-based
//! [`split::RuleSplitter`], and the chunkers in [`chunk`]: perplexity minima
//! ([`chunk::PplChunker`]), margin sampling ([`chunk::MarginChunker`]), semantic breakpoints
//! ([`chunk::SemanticChunker`]), sentences and fixed token windows, plus
//! [`chunk::merge`] (dynamic merging to a target size). Model-backed stages are traits
//! ([`model`]), so everything here tests with deterministic fakes ([`testing`]).
//!
//! ```
//! use metarag_core::{Document, chunk::{Chunker, PplChunker, PplConfig}};
//! use metarag_core::split::{RuleSplitter, SentenceSplitter};
//! use metarag_core::testing::FakeScorer;
//!
//! let doc = Document::from_text("d", "Cats purr. Cats nap. Stocks fell. Bonds rose.");
//! let chunker = PplChunker::new(FakeScorer::default(), PplConfig::default());
//! let chunks = chunker.chunk(&doc, &RuleSplitter::default().split(&doc.text))?;
//! // Chunks are byte spans that tile the document.
//! assert!(metarag_core::tiles(&chunks.chunks.iter().map(|c| c.span.clone()).collect::<Vec<_>>(), doc.text.len()));
//! # Ok::<(), metarag_core::Error>(())
//! ```

pub mod answer;
mod atomic;
pub mod chunk;
mod document;
mod error;
pub mod fusion;
pub mod load;
pub mod model;
pub mod pipeline;
pub mod split;
/// Deterministic fakes of the model traits, for tests and examples (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use atomic::write_atomic;
pub use document::{Chunk, DocKind, Document, tiles};
pub use error::{Error, Result};
pub use split::SentenceSplitter;

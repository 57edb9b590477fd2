//! Chunkers: turn a document's sentences into chunks (byte spans).
//!
//! Every chunker takes the document and its sentence spans (from a
//! [`SentenceSplitter`](crate::split::SentenceSplitter)) and returns a [`Chunked`]: chunks
//! whose spans tile the document (unless an overlap mode is on) and, where the method has
//! one, a score per sentence.
//!
//! - [`PplChunker`]: perplexity minima (Meta-Chunking's PPL chunking),
//! - [`MarginChunker`]: margin sampling with an instruction model,
//! - [`SemanticChunker`]: embedding-similarity breakpoints (percentile threshold),
//! - [`SentenceChunker`] and [`FixedChunker`]: baselines,
//! - [`merge()`](fn@merge): dynamic merging of consecutive chunks up to a target size,
//! - [`chunk_document`]: split → chunk → merge, the one path every caller takes (ingest,
//!   `metarag chunk`, the server, the Python package).
//!
//! ```
//! use metarag_core::chunk::{Chunker, SentenceChunker, merge, Words};
//! use metarag_core::{Document, split::{RuleSplitter, SentenceSplitter}};
//!
//! let doc = Document::from_text("d", "One two. Three four. Five six.");
//! let sentences = RuleSplitter::default().split(&doc.text);
//! let chunked = SentenceChunker.chunk(&doc, &sentences)?;
//! assert_eq!(chunked.chunks.len(), 3);
//! let spans: Vec<_> = chunked.chunks.iter().map(|c| c.span.clone()).collect();
//! let merged = merge(&doc.text, &spans, 4, &Words);
//! assert_eq!(merged, vec![0..20, 20..30]);
//! # Ok::<(), metarag_core::Error>(())
//! ```

mod baseline;
mod document;
mod margin;
mod merge;
mod ppl;
mod semantic;
#[cfg(test)]
mod tests;

use std::ops::Range;

use serde::{Deserialize, Serialize};

pub use baseline::{FixedChunker, SentenceChunker};
pub use document::{Chunking, chunk_document};
pub use margin::{MarginChunker, MarginConfig, MarginPrompt};
pub use merge::{Chars, ChunkSizer, TokenSizer, Words, merge};
pub use ppl::{BoundaryRule, PplChunker, PplConfig, ppl_boundaries};
pub use semantic::{GroupEmbedding, SemanticChunker, SemanticConfig, percentile};

use crate::{Chunk, Document, Result};

/// The result of chunking one document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Chunked {
    /// The chunks, in document order.
    pub chunks: Vec<Chunk>,
    /// One score per input sentence where the method has one (PPL: mean NLL in nats;
    /// margin: `P("2") - P("1")`, NaN for the first sentence; semantic: cosine distance to
    /// the next sentence group, NaN for the last). Empty for the baselines.
    pub sentence_scores: Vec<f32>,
}

/// One chunking method. Implementations are cheap to share across threads.
pub trait Chunker: Send + Sync {
    /// Chunks `doc`, whose sentences are `sentences` (spans that tile `doc.text`).
    fn chunk(&self, doc: &Document, sentences: &[Range<usize>]) -> Result<Chunked>;
}

impl<T: Chunker + ?Sized> Chunker for &T {
    fn chunk(&self, doc: &Document, sentences: &[Range<usize>]) -> Result<Chunked> {
        (**self).chunk(doc, sentences)
    }
}
impl<T: Chunker + ?Sized> Chunker for Box<T> {
    fn chunk(&self, doc: &Document, sentences: &[Range<usize>]) -> Result<Chunked> {
        (**self).chunk(doc, sentences)
    }
}
impl<T: Chunker + ?Sized> Chunker for std::sync::Arc<T> {
    fn chunk(&self, doc: &Document, sentences: &[Range<usize>]) -> Result<Chunked> {
        (**self).chunk(doc, sentences)
    }
}

/// Turns the indices of boundary sentences (each ends its chunk) into chunk spans.
///
/// With `overlap`, the boundary sentence is repeated at the start of the next chunk.
pub(crate) fn spans_from_boundaries(
    sentences: &[Range<usize>],
    boundaries: &[usize],
    overlap: bool,
) -> Vec<Range<usize>> {
    let mut spans = Vec::with_capacity(boundaries.len() + 1);
    let Some(last) = sentences.last() else {
        return spans;
    };
    let mut first = 0usize;
    for &b in boundaries {
        if b + 1 >= sentences.len() || b < first {
            continue;
        }
        spans.push(sentences[first].start..sentences[b].end);
        first = if overlap { b } else { b + 1 };
    }
    spans.push(sentences[first].start..last.end);
    spans
}

/// Numbers spans as chunks.
pub(crate) fn to_chunks(spans: Vec<Range<usize>>) -> Vec<Chunk> {
    spans.into_iter().enumerate().map(|(index, span)| Chunk { index, span }).collect()
}

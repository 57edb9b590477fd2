//! Semantic-similarity chunking (the LlamaIndex `SemanticSplitterNodeParser` baseline):
//! embed each sentence with its neighbours, cut where the cosine distance between
//! consecutive groups exceeds a percentile of all distances.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{Chunked, Chunker, spans_from_boundaries, to_chunks};
use crate::model::SentenceEmbedder;
use crate::{Document, Error, Result};

/// Settings of [`SemanticChunker`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemanticConfig {
    /// Sentences on each side joined to a sentence before embedding (default 1).
    pub buffer: usize,
    /// Breakpoint percentile of the distances, 0–100 (default 95).
    pub percentile: f32,
    /// Sentence groups handed to the embedder per call (default 1024). The embedder makes its
    /// own model batches, longest texts together, so a larger call pads less.
    pub batch: usize,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        SemanticConfig { buffer: 1, percentile: 95.0, batch: 1024 }
    }
}

/// The `p`-th percentile (0–100) with linear interpolation between order statistics (the
/// numpy default). NaN for an empty slice.
///
/// ```
/// assert_eq!(metarag_core::chunk::percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
/// ```
pub fn percentile(values: &[f32], p: f32) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    let mut v: Vec<f32> = values.to_vec();
    v.sort_by(f32::total_cmp);
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f32;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f32)
}

/// Semantic breakpoint chunker over a [`SentenceEmbedder`].
///
/// ```
/// use metarag_core::chunk::{Chunker, SemanticChunker, SemanticConfig};
/// use metarag_core::testing::FakeEmbedder;
/// use metarag_core::Document;
///
/// let doc = Document::from_text("d", "Cats purr. Cats nap. Bonds fell. Bonds rose.");
/// let cfg = SemanticConfig { buffer: 0, percentile: 50.0, ..Default::default() };
/// let out = SemanticChunker::new(FakeEmbedder::default(), cfg)
///     .chunk(&doc, &[0..10, 10..20, 20..32, 32..44])?;
/// assert_eq!(out.chunks.len(), 2);
/// # Ok::<(), metarag_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SemanticChunker<E> {
    embedder: E,
    config: SemanticConfig,
}

impl<E: SentenceEmbedder> SemanticChunker<E> {
    /// A chunker over `embedder`.
    pub fn new(embedder: E, config: SemanticConfig) -> Self {
        SemanticChunker { embedder, config }
    }
}

impl<E: SentenceEmbedder> Chunker for SemanticChunker<E> {
    fn chunk(&self, doc: &Document, sentences: &[Range<usize>]) -> Result<Chunked> {
        let n = sentences.len();
        if n < 2 {
            return Ok(Chunked {
                chunks: to_chunks(spans_from_boundaries(sentences, &[], false)),
                sentence_scores: vec![f32::NAN; n],
            });
        }
        let b = self.config.buffer;
        // Each group is a contiguous span of the document: sentences i-b ..= i+b.
        let groups: Vec<&str> = (0..n)
            .map(|i| {
                let lo = i.saturating_sub(b);
                let hi = (i + b).min(n - 1);
                doc.text[sentences[lo].start..sentences[hi].end].trim()
            })
            .collect();
        let mut vectors = Vec::with_capacity(n);
        for batch in groups.chunks(self.config.batch.max(1)) {
            let out = self.embedder.embed(batch)?;
            if out.len() != batch.len() {
                return Err(Error::model(format!(
                    "{}: embedder returned {} vectors for {} texts",
                    doc.id,
                    out.len(),
                    batch.len()
                )));
            }
            vectors.extend(out);
        }
        let distances: Vec<f32> =
            vectors.windows(2).map(|w| 1.0 - w[0].iter().zip(&w[1]).map(|(a, b)| a * b).sum::<f32>()).collect();
        let threshold = percentile(&distances, self.config.percentile);
        let boundaries: Vec<usize> =
            distances.iter().enumerate().filter(|&(_, &d)| d > threshold).map(|(i, _)| i).collect();
        let mut scores = distances;
        scores.push(f32::NAN);
        Ok(Chunked { chunks: to_chunks(spans_from_boundaries(sentences, &boundaries, false)), sentence_scores: scores })
    }
}

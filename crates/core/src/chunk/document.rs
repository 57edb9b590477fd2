//! One document through split → chunk → merge: the path every caller takes.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::{ChunkSizer, Chunker, merge};
use crate::split::SentenceSplitter;
use crate::{Document, Result};

/// A document cut into chunks, with the sentences and scores the cut was made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunking {
    /// Byte spans of the chunks, after merging, in order.
    pub spans: Vec<Range<usize>>,
    /// Byte spans of the sentences: they tile the text.
    pub sentences: Vec<Range<usize>>,
    /// One score per sentence where the method has one (see [`Chunked`](super::Chunked));
    /// empty for the baselines.
    pub sentence_scores: Vec<f32>,
    /// Time spent splitting into sentences.
    pub split_time: Duration,
    /// Time spent chunking and merging.
    pub chunk_time: Duration,
}

impl Chunking {
    /// The scores of the sentences inside `span`, in order (empty for methods without scores).
    ///
    /// ```
    /// use metarag_core::chunk::Chunking;
    /// let c = Chunking {
    ///     spans: vec![0..10, 10..30],
    ///     sentences: vec![0..4, 4..10, 10..20, 20..30],
    ///     sentence_scores: vec![1.0, 2.0, 3.0, 4.0],
    ///     ..Chunking::default()
    /// };
    /// assert_eq!(c.scores_in(&(10..30)), &[3.0, 4.0]);
    /// ```
    pub fn scores_in(&self, span: &Range<usize>) -> &[f32] {
        if self.sentence_scores.len() != self.sentences.len() {
            return &[];
        }
        let first = self.sentences.partition_point(|s| s.start < span.start);
        let last = self.sentences.partition_point(|s| s.end <= span.end);
        &self.sentence_scores[first..last.max(first)]
    }
}

/// Splits `doc` into sentences, chunks them and, with `merge_to` = (target, sizer), merges
/// consecutive chunks up to the target.
///
/// ```
/// use metarag_core::chunk::{SentenceChunker, Words, chunk_document};
/// use metarag_core::{Document, split::RuleSplitter};
///
/// let doc = Document::from_text("d", "One two. Three four. Five six.");
/// let c = chunk_document(&doc, &RuleSplitter::default(), &SentenceChunker, Some((4, &Words)))?;
/// assert_eq!(c.spans, vec![0..20, 20..30]);
/// assert_eq!(c.sentences.len(), 3);
/// # Ok::<(), metarag_core::Error>(())
/// ```
pub fn chunk_document(
    doc: &Document,
    splitter: &dyn SentenceSplitter,
    chunker: &dyn Chunker,
    merge_to: Option<(usize, &dyn ChunkSizer)>,
) -> Result<Chunking> {
    let t = Instant::now();
    let sentences = splitter.split(&doc.text);
    let split_time = t.elapsed();
    let t = Instant::now();
    let chunked = chunker.chunk(doc, &sentences)?;
    let mut spans: Vec<Range<usize>> = chunked.chunks.into_iter().map(|c| c.span).collect();
    if let Some((target, sizer)) = merge_to {
        spans = merge(&doc.text, &spans, target, sizer);
    }
    Ok(Chunking { spans, sentences, sentence_scores: chunked.sentence_scores, split_time, chunk_time: t.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{PplChunker, PplConfig, Words};
    use crate::split::RuleSplitter;
    use crate::testing::FakeScorer;

    #[test]
    fn spans_tile_and_scores_follow_their_sentences() {
        let text = "The cat sat. The cat sat again. Quantum chromodynamics binds quarks. Gluons carry it. \
                    The cat slept.";
        let doc = Document::from_text("d", text);
        let scorer = FakeScorer;
        let chunker = PplChunker::new(&scorer, PplConfig::default());
        for merge_to in [None, Some((6, &Words as &dyn ChunkSizer))] {
            let c = chunk_document(&doc, &RuleSplitter::default(), &chunker, merge_to).unwrap();
            assert_eq!(c.spans.first().map(|s| s.start), Some(0));
            assert_eq!(c.spans.last().map(|s| s.end), Some(text.len()));
            assert!(c.spans.windows(2).all(|w| w[0].end == w[1].start));
            assert_eq!(c.sentence_scores.len(), c.sentences.len());
            let per_chunk: usize = c.spans.iter().map(|s| c.scores_in(s).len()).sum();
            assert_eq!(per_chunk, c.sentences.len(), "every sentence's score lands in exactly one chunk");
        }
    }
}

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
/// consecutive chunks up to the target. Every span returned is checked to be a
/// piece of the text on character boundaries, in order (a chunker that breaks this is an
/// [`Error::BadSpan`](crate::Error::BadSpan), never a panic when a caller slices the text).
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
    check_spans(doc, &spans)?;
    Ok(Chunking { spans, sentences, sentence_scores: chunked.sentence_scores, split_time, chunk_time: t.elapsed() })
}

/// Spans are in bounds, on character boundaries, and each starts at or after the
/// previous one's start.
fn check_spans(doc: &Document, spans: &[Range<usize>]) -> Result<()> {
    let mut previous = 0;
    for (index, s) in spans.iter().enumerate() {
        if s.start > s.end || s.start < previous || doc.text.get(s.clone()).is_none() {
            return Err(crate::Error::BadSpan {
                doc: doc.id.clone(),
                index,
                start: s.start,
                end: s.end,
                len: doc.text.len(),
            });
        }
        previous = s.start;
    }
    Ok(())
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

    /// A chunker that cuts inside a multi-byte character.
    struct Broken;

    impl Chunker for Broken {
        fn chunk(&self, _doc: &Document, _sentences: &[Range<usize>]) -> Result<crate::chunk::Chunked> {
            let chunks = vec![crate::Chunk { index: 0, span: 0..1 }, crate::Chunk { index: 1, span: 1..3 }];
            Ok(crate::chunk::Chunked { chunks, sentence_scores: vec![] })
        }
    }

    #[test]
    fn a_span_off_a_character_boundary_is_an_error_not_a_panic() {
        let doc = Document::from_text("d", "é!");
        let e = chunk_document(&doc, &RuleSplitter::default(), &Broken, None).unwrap_err();
        assert!(matches!(e, crate::Error::BadSpan { index: 0, start: 0, end: 1, len: 3, .. }), "{e}");
        assert!(e.to_string().contains("chunk 0 has an invalid span 0..1"), "{e}");
    }
}

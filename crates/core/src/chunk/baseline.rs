//! Baseline chunkers: one chunk per sentence, and fixed token windows.

use std::ops::Range;

use super::{Chunked, Chunker, to_chunks};
use crate::model::{TOKEN_PIECE_BYTES, TokenOffsets, token_pieces};
use crate::{Document, Error, Result};

/// One chunk per sentence.
///
/// ```
/// use metarag_core::chunk::{Chunker, SentenceChunker};
/// let doc = metarag_core::Document::from_text("d", "A. B.");
/// assert_eq!(SentenceChunker.chunk(&doc, &[0..2, 2..5])?.chunks.len(), 2);
/// # Ok::<(), metarag_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SentenceChunker;

impl Chunker for SentenceChunker {
    fn chunk(&self, _doc: &Document, sentences: &[Range<usize>]) -> Result<Chunked> {
        Ok(Chunked { chunks: to_chunks(sentences.to_vec()), sentence_scores: Vec::new() })
    }
}

/// Fixed windows of `size` tokens, ignoring sentences. Window edges fall on token starts, so
/// the spans still tile the text.
///
/// ```
/// use metarag_core::chunk::{Chunker, FixedChunker};
/// use metarag_core::testing::FakeTokens;
/// let doc = metarag_core::Document::from_text("d", "one two three four five");
/// let out = FixedChunker::new(FakeTokens, 2)?.chunk(&doc, &[])?;
/// let texts: Vec<_> = out.chunks.iter().map(|c| &doc.text[c.span.clone()]).collect();
/// assert_eq!(texts, ["one two", " three four", " five"]);
/// # Ok::<(), metarag_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FixedChunker<T> {
    tokens: T,
    size: usize,
}

impl<T: TokenOffsets> FixedChunker<T> {
    /// Windows of `size` tokens (`size` >= 1).
    pub fn new(tokens: T, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::Config("fixed chunk size must be at least 1 token".into()));
        }
        Ok(FixedChunker { tokens, size })
    }
}

impl<T: TokenOffsets> Chunker for FixedChunker<T> {
    fn chunk(&self, doc: &Document, _sentences: &[Range<usize>]) -> Result<Chunked> {
        let text = &doc.text;
        if text.is_empty() {
            return Ok(Chunked::default());
        }
        // Every `size`-th token start, read piece by piece: a huge text never has all its
        // tokens in memory (the pieces are the whole text unless it is over 256 KiB).
        let mut cuts = Vec::new();
        let mut n = 0usize;
        token_pieces(&self.tokens, text, TOKEN_PIECE_BYTES, |offsets| {
            for r in offsets {
                if n > 0 && n.is_multiple_of(self.size) && r.start < text.len() && text.is_char_boundary(r.start) {
                    cuts.push(r.start);
                }
                n += 1;
            }
        })?;
        cuts.dedup();
        let mut spans = Vec::with_capacity(cuts.len() + 1);
        let mut start = 0;
        for c in cuts {
            if c > start {
                spans.push(start..c);
                start = c;
            }
        }
        spans.push(start..text.len());
        Ok(Chunked { chunks: to_chunks(spans), sentence_scores: Vec::new() })
    }
}

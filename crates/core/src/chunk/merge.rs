//! Dynamic merging: greedily join consecutive chunks while the merged size stays within a
//! target (Meta-Chunking's second stage).

use std::ops::Range;

use crate::model::TokenOffsets;

/// Measures a piece of text in some unit (words, characters, tokens).
pub trait ChunkSizer: Send + Sync {
    /// The size of `text`.
    fn size(&self, text: &str) -> usize;
}

/// Whitespace-separated words (the reference's unit for English).
#[derive(Debug, Clone, Copy, Default)]
pub struct Words;
impl ChunkSizer for Words {
    fn size(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}

/// Unicode scalar values, whitespace excluded (the reference's unit for Chinese counts
/// characters).
#[derive(Debug, Clone, Copy, Default)]
pub struct Chars;
impl ChunkSizer for Chars {
    fn size(&self, text: &str) -> usize {
        text.chars().filter(|c| !c.is_whitespace()).count()
    }
}

/// Model tokens, through any [`TokenOffsets`]. A tokenizer failure counts as one token per
/// byte, which only makes merging more conservative.
#[derive(Debug, Clone)]
pub struct TokenSizer<T>(pub T);
impl<T: TokenOffsets> ChunkSizer for TokenSizer<T> {
    fn size(&self, text: &str) -> usize {
        self.0.token_offsets(text).map_or(text.len(), |t| t.len())
    }
}

/// Joins consecutive `spans` (which tile a text) while the sum of their sizes stays
/// `<= target`. A span already over the target stays on its own; nothing is dropped and no
/// empty span is produced, so the output tiles the same text.
///
/// ```
/// use metarag_core::chunk::{merge, Words};
/// let text = "a b. c d. e f g h.";
/// assert_eq!(merge(text, &[0..4, 4..9, 9..18], 4, &Words), vec![0..9, 9..18]);
/// ```
pub fn merge(text: &str, spans: &[Range<usize>], target: usize, sizer: &dyn ChunkSizer) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    let mut current: Option<(Range<usize>, usize)> = None;
    for span in spans.iter().filter(|s| s.end > s.start) {
        let size = sizer.size(&text[span.clone()]);
        current = match current.take() {
            Some((cur, cur_size)) if cur_size + size <= target && cur.end == span.start => {
                Some((cur.start..span.end, cur_size + size))
            }
            Some((cur, _)) => {
                out.push(cur);
                Some((span.clone(), size))
            }
            None => Some((span.clone(), size)),
        };
    }
    if let Some((cur, _)) = current {
        out.push(cur);
    }
    out
}

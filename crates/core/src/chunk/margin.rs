//! Margin-sampling chunking (Meta-Chunking, MSP): an instruction model judges, sentence by
//! sentence, whether the next sentence belongs to the current chunk.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{Chunked, Chunker, to_chunks};
use crate::model::MarginJudge;
use crate::{Document, Result};

/// Settings of [`MarginChunker`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarginConfig {
    /// Initial θ (default 0): merge when the margin is above it.
    pub threshold: f32,
    /// Adapt θ to the mean of the last `window` margins once that many exist (default on).
    pub adaptive: bool,
    /// How many recent margins the adaptive θ averages (default 5, as the reference).
    pub window: usize,
}

impl Default for MarginConfig {
    fn default() -> Self {
        MarginConfig { threshold: 0.0, adaptive: true, window: 5 }
    }
}

/// Which judge prompt a margin chunker's model reads.
///
/// `Exact` is Meta-Chunking's prompt: it quotes the chunk three times (chunk + sentence,
/// chunk, chunk + sentence), so each step recomputes the growing chunk twice. `Cached` shows
/// the chunk once, then the candidate sentence, then a short question, so consecutive steps
/// share everything up to the end of the chunk and each step only runs the sentence just
/// merged, the candidate and a few tokens of template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarginPrompt {
    /// The paper's prompt (the chunk three times).
    #[default]
    Exact,
    /// The chunk once, then the sentence, then the question (cache-friendly).
    Cached,
}

impl MarginPrompt {
    /// The name used in pipeline files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            MarginPrompt::Exact => "exact",
            MarginPrompt::Cached => "cached",
        }
    }

    /// True for the default (pipeline files leave it out).
    pub fn is_default(&self) -> bool {
        *self == MarginPrompt::default()
    }
}

/// Margin-sampling chunker: for each next sentence, asks the [`MarginJudge`] for
/// `P("2") - P("1")` given the WHOLE current chunk; merges when the margin exceeds θ.
///
/// ```
/// use metarag_core::chunk::{Chunker, MarginChunker, MarginConfig};
/// use metarag_core::testing::FakeJudge;
/// use metarag_core::Document;
///
/// let doc = Document::from_text("d", "cats purr. cats nap. stocks fell.");
/// let out = MarginChunker::new(FakeJudge, MarginConfig::default())
///     .chunk(&doc, &[0..10, 10..20, 20..33])?;
/// assert_eq!(out.chunks.len(), 2);
/// # Ok::<(), metarag_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MarginChunker<J> {
    judge: J,
    config: MarginConfig,
}

impl<J: MarginJudge> MarginChunker<J> {
    /// A chunker over `judge`.
    pub fn new(judge: J, config: MarginConfig) -> Self {
        MarginChunker { judge, config }
    }
}

impl<J: MarginJudge> Chunker for MarginChunker<J> {
    fn chunk(&self, doc: &Document, sentences: &[Range<usize>]) -> Result<Chunked> {
        let Some(first) = sentences.first() else {
            return Ok(Chunked::default());
        };
        let c = &self.config;
        let mut theta = c.threshold;
        let mut margins: Vec<f32> = Vec::with_capacity(sentences.len());
        let mut scores = vec![f32::NAN];
        let mut spans = Vec::new();
        let mut current: Vec<&str> = vec![&doc.text[first.clone()]];
        let mut start = first.start;
        for s in &sentences[1..] {
            let next = &doc.text[s.clone()];
            let m = self.judge.margin(&current, next)?;
            scores.push(m);
            if m > theta {
                current.push(next);
            } else {
                spans.push(start..s.start);
                start = s.start;
                current.clear();
                current.push(next);
            }
            margins.push(m);
            if c.adaptive && c.window > 0 && margins.len() >= c.window {
                let recent = &margins[margins.len() - c.window..];
                theta = recent.iter().sum::<f32>() / c.window as f32;
            }
        }
        spans.push(start..sentences[sentences.len() - 1].end);
        Ok(Chunked { chunks: to_chunks(spans), sentence_scores: scores })
    }
}

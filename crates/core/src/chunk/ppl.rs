//! Perplexity chunking (Meta-Chunking, PPL): boundaries at local minima of the per-sentence
//! mean NLL curve.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{Chunked, Chunker, spans_from_boundaries, to_chunks};
use crate::model::SentenceScorer;
use crate::{Document, Error, Result};

/// Which neighbours of a local minimum must rise by at least θ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoundaryRule {
    /// The reference code's rule (default): a strict local minimum where EITHER neighbour is
    /// at least θ higher, plus the plateau case `s[i-1] - s[i] >= θ` with `s[i+1] == s[i]`.
    #[default]
    Either,
    /// The paper's formula: `min(s[i-1], s[i+1]) - s[i] > θ`.
    Both,
}

/// Settings of [`PplChunker`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PplConfig {
    /// θ in nats. Smaller gives more, shorter chunks. Default 0.
    pub threshold: f32,
    /// Boundary rule, default [`BoundaryRule::Either`].
    pub rule: BoundaryRule,
    /// Adaptive θ: once 100 minima have been recorded, θ becomes the smallest recorded drop.
    pub adaptive: bool,
    /// Repeat each boundary sentence at the start of the next chunk.
    pub overlap: bool,
}

impl Default for PplConfig {
    fn default() -> Self {
        PplConfig { threshold: 0.0, rule: BoundaryRule::Either, adaptive: false, overlap: false }
    }
}

/// Indices of boundary sentences of a score curve (each boundary ends its chunk).
///
/// The first and last sentence are never boundaries; NaN scores never are.
///
/// ```
/// use metarag_core::chunk::{ppl_boundaries, BoundaryRule};
/// let s = [3.0, 1.0, 2.0, 2.5, 0.5, 4.0];
/// assert_eq!(ppl_boundaries(&s, 0.0, BoundaryRule::Either, false), vec![1, 4]);
/// assert_eq!(ppl_boundaries(&s, 1.2, BoundaryRule::Both, false), vec![4]);
/// ```
pub fn ppl_boundaries(scores: &[f32], threshold: f32, rule: BoundaryRule, adaptive: bool) -> Vec<usize> {
    let mut theta = threshold;
    let mut drops: Vec<f32> = Vec::new();
    let mut out = Vec::new();
    for i in 1..scores.len().saturating_sub(1) {
        let (prev, cur, next) = (scores[i - 1], scores[i], scores[i + 1]);
        let found = match rule {
            BoundaryRule::Either => {
                if cur < prev && cur < next {
                    (prev - cur >= theta || next - cur >= theta).then(|| (prev - cur).min(next - cur))
                } else if cur < prev && cur == next {
                    (prev - cur >= theta).then_some(prev - cur)
                } else {
                    None
                }
            }
            BoundaryRule::Both => {
                let drop = prev.min(next) - cur;
                (drop > theta).then_some(drop)
            }
        };
        if let Some(drop) = found {
            out.push(i);
            if adaptive {
                drops.push(drop);
            }
        }
        if adaptive && drops.len() >= 100 {
            theta = drops.iter().copied().fold(f32::INFINITY, f32::min);
        }
    }
    out
}

/// Perplexity chunker: scores every sentence with a [`SentenceScorer`] (conditioned on all
/// text before it) and cuts after sentences at local minima of the curve.
///
/// ```
/// use metarag_core::chunk::{Chunker, PplChunker, PplConfig};
/// use metarag_core::testing::FakeScorer;
/// use metarag_core::Document;
///
/// let doc = Document::from_text("d", "a b. a b. x y. x y.");
/// let sentences = vec![0..4, 4..9, 9..14, 14..19];
/// let out = PplChunker::new(FakeScorer::default(), PplConfig::default()).chunk(&doc, &sentences)?;
/// assert_eq!(out.sentence_scores.len(), 4);
/// # Ok::<(), metarag_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PplChunker<S> {
    scorer: S,
    config: PplConfig,
}

impl<S: SentenceScorer> PplChunker<S> {
    /// A chunker over `scorer`.
    pub fn new(scorer: S, config: PplConfig) -> Self {
        PplChunker { scorer, config }
    }

    /// The settings.
    pub fn config(&self) -> &PplConfig {
        &self.config
    }
}

impl<S: SentenceScorer> Chunker for PplChunker<S> {
    fn chunk(&self, doc: &Document, sentences: &[Range<usize>]) -> Result<Chunked> {
        if sentences.is_empty() {
            return Ok(Chunked::default());
        }
        let pieces: Vec<&str> = sentences.iter().map(|s| &doc.text[s.clone()]).collect();
        let scores = self.scorer.score_sentences(&pieces)?;
        if scores.len() != sentences.len() {
            return Err(Error::model(format!(
                "{}: scorer returned {} scores for {} sentences",
                doc.id,
                scores.len(),
                sentences.len()
            )));
        }
        let c = &self.config;
        let boundaries = ppl_boundaries(&scores, c.threshold, c.rule, c.adaptive);
        Ok(Chunked {
            chunks: to_chunks(spans_from_boundaries(sentences, &boundaries, c.overlap)),
            sentence_scores: scores,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_rule_matches_reference_cases() {
        // strict minimum, one side high enough
        assert_eq!(ppl_boundaries(&[2.0, 1.0, 1.1], 0.5, BoundaryRule::Either, false), vec![1]);
        // neither side high enough
        assert!(ppl_boundaries(&[1.2, 1.0, 1.1], 0.5, BoundaryRule::Either, false).is_empty());
        // plateau: left drop counts
        assert_eq!(ppl_boundaries(&[2.0, 1.0, 1.0, 3.0], 0.5, BoundaryRule::Either, false), vec![1]);
        // ends are never boundaries
        assert!(ppl_boundaries(&[0.0, 5.0, 0.0], 0.0, BoundaryRule::Either, false).is_empty());
        // NaN never is
        assert!(ppl_boundaries(&[2.0, f32::NAN, 3.0], 0.0, BoundaryRule::Either, false).is_empty());
    }

    #[test]
    fn both_rule_is_strict_on_both_sides() {
        assert!(ppl_boundaries(&[2.0, 1.0, 1.5], 0.5, BoundaryRule::Both, false).is_empty());
        assert_eq!(ppl_boundaries(&[2.0, 1.0, 1.6], 0.5, BoundaryRule::Both, false), vec![1]);
        // plateau is not a boundary under the paper's formula at θ = 0
        assert!(ppl_boundaries(&[2.0, 1.0, 1.0, 3.0], 0.0, BoundaryRule::Both, false).is_empty());
    }

    #[test]
    fn adaptive_threshold_rises_to_smallest_recorded_drop() {
        // 100 minima with drop 1.0, then minima with drop 0.5: with a fixed θ = 0 all are
        // kept; adaptively θ becomes 1.0 after the 100th and the small drops are ignored.
        let mut s = Vec::new();
        for _ in 0..100 {
            s.extend([3.0, 2.0]);
        }
        s.extend([3.0, 3.0]);
        for _ in 0..10 {
            s.extend([2.5, 2.0]);
        }
        s.push(2.5);
        let fixed = ppl_boundaries(&s, 0.0, BoundaryRule::Either, false);
        let adaptive = ppl_boundaries(&s, 0.0, BoundaryRule::Either, true);
        assert_eq!(fixed.len(), 110);
        assert_eq!(adaptive.len(), 100);
    }

    #[test]
    fn overlap_repeats_the_boundary_sentence() {
        let sentences = vec![0..2, 2..4, 4..6, 6..8];
        assert_eq!(spans_from_boundaries(&sentences, &[1], false), vec![0..4, 4..8]);
        assert_eq!(spans_from_boundaries(&sentences, &[1], true), vec![0..4, 2..8]);
    }
}

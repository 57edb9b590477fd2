//! Deterministic fakes of the model-backed traits, for fast tests and doc examples.
//!
//! They are NOT models: their numbers follow simple word-overlap rules so tests can predict
//! them. The product always uses the real models of `metarag-onnx`.
//!
//! ```
//! use metarag_core::model::SentenceScorer;
//! use metarag_core::testing::FakeScorer;
//! let s = FakeScorer::default().score_sentences(&["cats purr.", " cats purr."])?;
//! assert!(s[1] < s[0]); // repeated words are less surprising
//! # Ok::<(), metarag_core::Error>(())
//! ```

use std::collections::HashSet;
use std::ops::Range;

use crate::Result;
use crate::model::{MarginJudge, SentenceEmbedder, SentenceScorer, TokenOffsets};

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// Fake scorer: a word costs 1 nat if it appeared earlier in the document, 4 nats if not.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeScorer;

impl SentenceScorer for FakeScorer {
    fn score_sentences(&self, pieces: &[&str]) -> Result<Vec<f32>> {
        let mut seen = HashSet::new();
        Ok(pieces
            .iter()
            .map(|p| {
                let ws: Vec<String> = words(p).collect();
                if ws.is_empty() {
                    return f32::NAN;
                }
                let total: f32 = ws.iter().map(|w| if seen.contains(w) { 1.0 } else { 4.0 }).sum();
                seen.extend(ws.iter().cloned());
                total / ws.len() as f32
            })
            .collect())
    }
}

/// Fake judge: margin = 2·(share of the next sentence's words found in the chunk) − 0.5,
/// clamped to [-1, 1].
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeJudge;

impl MarginJudge for FakeJudge {
    fn margin(&self, chunk: &[&str], next: &str) -> Result<f32> {
        let seen: HashSet<String> = chunk.iter().flat_map(|c| words(c)).collect();
        let ws: Vec<String> = words(next).collect();
        if ws.is_empty() {
            return Ok(1.0);
        }
        let frac = ws.iter().filter(|w| seen.contains(*w)).count() as f32 / ws.len() as f32;
        Ok((2.0 * frac - 0.5).clamp(-1.0, 1.0))
    }
}

/// Fake embedder: a normalised bag of words hashed into `dims` buckets (FNV-1a).
#[derive(Debug, Clone, Copy)]
pub struct FakeEmbedder {
    /// Vector size.
    pub dims: usize,
}

impl Default for FakeEmbedder {
    fn default() -> Self {
        FakeEmbedder { dims: 256 }
    }
}

impl SentenceEmbedder for FakeEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let dims = self.dims.max(1);
                let mut v = vec![0f32; dims];
                for w in words(t) {
                    let h = w
                        .bytes()
                        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
                    v[(h % dims as u64) as usize] += 1.0;
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                v
            })
            .collect())
    }
}

/// Fake tokenizer: each token is a run of non-whitespace with the whitespace before it
/// attached (like byte-level BPE's leading-space tokens).
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeTokens;

impl TokenOffsets for FakeTokens {
    fn token_offsets(&self, text: &str) -> Result<Vec<Range<usize>>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut start = 0;
        let mut in_word = false;
        for (i, c) in text.char_indices() {
            let ws = c.is_whitespace();
            if ws && in_word {
                out.push(start..i);
                start = i;
            }
            in_word = !ws;
        }
        if start < text.len() {
            out.push(start..text.len());
        }
        Ok(out)
    }
}

/// A [`ModelProvider`](crate::pipeline::ModelProvider) over the fakes: every pipeline builds
/// and runs in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeModels {
    /// The fake scorer (PPL).
    pub scorer: FakeScorer,
    /// The fake embedder (semantic).
    pub embedder: FakeEmbedder,
    /// The fake tokenizer (fixed, merging by tokens).
    pub tokens: FakeTokens,
}

impl crate::pipeline::ModelProvider for FakeModels {
    fn scorer(&self) -> Result<&dyn SentenceScorer> {
        Ok(&self.scorer)
    }
    fn judge(&self, _: crate::chunk::MarginPrompt) -> Result<Box<dyn MarginJudge + '_>> {
        Ok(Box::new(FakeJudge))
    }
    fn embedder(&self) -> Result<&dyn SentenceEmbedder> {
        Ok(&self.embedder)
    }
    fn tokens(&self) -> Result<&dyn TokenOffsets> {
        Ok(&self.tokens)
    }
}

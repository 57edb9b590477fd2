//! [`Candidate`]: one decoded answer with the log-probabilities that scored it.

use serde::{Deserialize, Serialize};

/// Why decoding of a candidate stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// A stop token or stop sequence was produced.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// Constrained decoding had no allowed continuation left (the span ends the context).
    Exhausted,
}

/// Where an extractive candidate was copied from: context chunk `chunk` (its index in the
/// prompt's chunk list), tokens `tokens` of that chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanSource {
    /// Index of the chunk in [`crate::template::Prompt::chunks`].
    pub chunk: usize,
    /// Token range inside the chunk's tokens.
    pub tokens: std::ops::Range<usize>,
}

/// One sampled answer path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Row index (also the sampling stream of the seed).
    pub index: usize,
    /// The answer tokens (stop token excluded).
    pub tokens: Vec<u32>,
    /// The decoded answer text, trimmed.
    pub text: String,
    /// Log-probability of each answer token under the model, as sampled (for a masked
    /// decoder: the log-probability at the step the position was unmasked).
    pub logprobs: Vec<f32>,
    /// Log-probabilities of the closing tokens (stop token and/or template suffix) when the
    /// candidate was rescored with them; empty otherwise.
    pub suffix_logprobs: Vec<f32>,
    /// Why decoding stopped.
    pub finish: Finish,
    /// For extractive candidates: the chunk span it copies.
    pub source: Option<SpanSource>,
}

impl Candidate {
    /// Mean log-probability per token over the answer and the rescored closing tokens
    /// (`-inf` for an empty candidate).
    pub fn mean_logprob(&self) -> f64 {
        let n = self.logprobs.len() + self.suffix_logprobs.len();
        if n == 0 {
            return f64::NEG_INFINITY;
        }
        self.logprobs.iter().chain(&self.suffix_logprobs).map(|&x| f64::from(x)).sum::<f64>() / n as f64
    }

    /// Log-probability of the whole path: its tokens and the rescored closing tokens (`-inf`
    /// for an empty candidate).
    pub fn logprob(&self) -> f64 {
        if self.logprobs.is_empty() && self.suffix_logprobs.is_empty() {
            return f64::NEG_INFINITY;
        }
        self.logprobs.iter().chain(&self.suffix_logprobs).map(|&x| f64::from(x)).sum()
    }

    /// `exp(mean log-probability)`: the inverse perplexity of the path, in `[0, 1]` (RPC's
    /// `p_i`).
    pub fn inverse_perplexity(&self) -> f64 {
        self.mean_logprob().exp()
    }
}

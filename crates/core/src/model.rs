//! The model-backed stage traits. Implementations with real models live in `metarag-onnx`;
//! deterministic fakes for fast tests live in [`crate::testing`].

use std::ops::Range;

use crate::Result;

/// Scores each sentence of a document by the mean negative log-likelihood (nats) of its
/// tokens, conditioned on all the text before it (the PPL chunker's signal).
///
/// `pieces` are consecutive slices of one document; each is tokenized on its own and the
/// token sequences are concatenated, so scores do not depend on how neighbours tokenize.
/// The document's first token has no prediction and is left out of the first mean. A piece
/// with no scored token gets `f32::NAN`.
pub trait SentenceScorer: Send + Sync {
    /// One mean NLL per piece.
    fn score_sentences(&self, pieces: &[&str]) -> Result<Vec<f32>>;
}

/// The margin-sampling judge: given the current chunk (as its consecutive pieces) and the
/// next sentence, returns `P("2") - P("1")` ("keep together" minus "split") from the
/// instruction model's next-token distribution.
pub trait MarginJudge: Send + Sync {
    /// The margin, in `[-1, 1]`.
    fn margin(&self, chunk: &[&str], next: &str) -> Result<f32>;
}

/// Embeds texts into L2-normalised vectors (cosine similarity = dot product).
pub trait SentenceEmbedder: Send + Sync {
    /// One vector per text, all of the same dimension.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}

/// Splits text into tokens with byte offsets (for fixed token windows and token sizing).
pub trait TokenOffsets: Send + Sync {
    /// Byte ranges of the tokens of `text`, in order.
    fn token_offsets(&self, text: &str) -> Result<Vec<Range<usize>>>;
}

macro_rules! forward_impls {
    ($tr:ident, $($m:ident($($a:ident: $t:ty),*) -> $r:ty);*) => {
        impl<T: $tr + ?Sized> $tr for &T {
            $(fn $m(&self, $($a: $t),*) -> $r { (**self).$m($($a),*) })*
        }
        impl<T: $tr + ?Sized> $tr for Box<T> {
            $(fn $m(&self, $($a: $t),*) -> $r { (**self).$m($($a),*) })*
        }
        impl<T: $tr + ?Sized> $tr for std::sync::Arc<T> {
            $(fn $m(&self, $($a: $t),*) -> $r { (**self).$m($($a),*) })*
        }
    };
}
forward_impls!(SentenceScorer, score_sentences(pieces: &[&str]) -> Result<Vec<f32>>);
forward_impls!(MarginJudge, margin(chunk: &[&str], next: &str) -> Result<f32>);
forward_impls!(SentenceEmbedder, embed(texts: &[&str]) -> Result<Vec<Vec<f32>>>);
forward_impls!(TokenOffsets, token_offsets(text: &str) -> Result<Vec<Range<usize>>>);

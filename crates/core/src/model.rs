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

/// The most bytes [`token_pieces`] gives a tokenizer at once, unless told otherwise (256 KiB:
/// tokenizing costs some 50 bytes of memory per byte of text).
pub const TOKEN_PIECE_BYTES: usize = 256 << 10;

/// Tokenizes `text` piece by piece, calling `each` with every piece's token offsets (relative
/// to `text`, in order), so that a 200 MB document never has all its tokens in memory at once.
/// A piece holds at most `piece_bytes` and ends after a newline (else after a space, else on a
/// character boundary); a text no longer than `piece_bytes` is one piece, tokenized exactly
/// as by [`TokenOffsets::token_offsets`].
///
/// ```
/// use metarag_core::model::token_pieces;
/// use metarag_core::testing::FakeTokens;
/// let mut starts = Vec::new();
/// token_pieces(&FakeTokens, "one two\nthree four", 10, |t| starts.extend(t.iter().map(|r| r.start)))?;
/// assert_eq!(starts, [0, 3, 7, 8, 13]); // pieces "one two\n" and "three four"
/// # Ok::<(), metarag_core::Error>(())
/// ```
pub fn token_pieces<T: TokenOffsets + ?Sized>(
    tokens: &T,
    text: &str,
    piece_bytes: usize,
    mut each: impl FnMut(&[Range<usize>]),
) -> Result<()> {
    let piece_bytes = piece_bytes.max(4); // room for one character
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + piece_bytes).min(text.len());
        if end < text.len() {
            let window = &text.as_bytes()[start..end];
            end = match window.iter().rposition(|&b| b == b'\n').or_else(|| window.iter().rposition(|&b| b == b' ')) {
                Some(i) => start + i + 1,
                None => (start + 1..=end).rev().find(|&e| text.is_char_boundary(e)).unwrap_or(end),
            };
        }
        let mut offsets = tokens.token_offsets(&text[start..end])?;
        for r in &mut offsets {
            *r = r.start + start..r.end + start;
        }
        each(&offsets);
        start = end;
    }
    Ok(())
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

/// Sentinel tokens of a fill-in-the-middle model (arXiv 2207.14255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FimTokens {
    /// Marks the prefix (`<PRE>`).
    pub prefix: u32,
    /// Marks the suffix (`<SUF>`).
    pub suffix: u32,
    /// Marks the middle, after which the model writes the infill (`<MID>`).
    pub middle: u32,
}

/// The token side of a generator: text to ids and back.
pub trait Vocabulary: Send + Sync {
    /// Token ids of `text` (no special tokens added; special-token text is recognised).
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Text of `ids` (special tokens skipped).
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Size of the logits rows.
    fn vocab_size(&self) -> usize;
    /// Id of a token given by its exact text, if the vocabulary has it.
    fn token_id(&self, token: &str) -> Option<u32>;
}

/// A causal language model for decoding: a prompt is run once ([`CausalModel::prefill`]),
/// then forked into a batch of rows that all continue it ([`CausalModel::fork`]) and are
/// advanced one token per row per forward ([`CausalModel::step`]).
///
/// Logits are `f32` rows of [`Vocabulary::vocab_size`] entries, unnormalised.
pub trait CausalModel: Vocabulary {
    /// A computed prompt: its KV cache and the logits after its last token.
    type Prefix: Send + Sync;
    /// Rows that continue a prefix, decoded together.
    type Batch: Send;
    /// Runs `prompt` (non-empty) once.
    fn prefill(&self, prompt: &[u32]) -> Result<Self::Prefix>;
    /// The logits after the prefix's last token.
    fn prefix_logits<'a>(&self, prefix: &'a Self::Prefix) -> &'a [f32];
    /// `n` rows that each continue `prefix` (the prefix is shared, not recomputed).
    fn fork(&self, prefix: &Self::Prefix, n: usize) -> Result<Self::Batch>;
    /// Appends `tokens[r]` to row `r` and returns the next-token logits of every row,
    /// row-major (`rows × vocab`).
    fn step(&self, batch: &mut Self::Batch, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Makes the batch the rows `keep` in that order: a subset, a reordering, or copies (a row
    /// named twice is duplicated, so two candidates that shared a state can diverge).
    fn retain(&self, batch: &mut Self::Batch, keep: &[usize]) -> Result<()>;
    /// Log-probabilities of each token of each continuation after `prefix` (batched; the
    /// first token is scored by the prefix's logits).
    fn continuation_logprobs(&self, prefix: &Self::Prefix, continuations: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
    /// Tokens that end an answer (end of turn, end of text).
    fn stop_tokens(&self) -> Vec<u32>;
    /// The FIM sentinels, when the model was trained for fill-in-the-middle.
    fn fim_tokens(&self) -> Option<FimTokens> {
        None
    }
}

/// A masked-diffusion denoiser (the masked-denoiser contract of DESIGN.md): given rows that
/// contain [`MaskedDenoiser::mask_id`] tokens, predicts every position at once. It is
/// time-agnostic: no time input.
pub trait MaskedDenoiser: Vocabulary {
    /// The mask token.
    fn mask_id(&self) -> u32;
    /// Logits for every position of every row (rows of equal length), row-major
    /// `rows × len × vocab`.
    fn denoise(&self, rows: &[Vec<u32>]) -> Result<Vec<f32>>;

    /// Logits of the answer slots only, for the rows `prefix + slots[i] + suffix` (slots of
    /// equal length): row-major `slots × slot_len × vocab`. The default runs
    /// [`MaskedDenoiser::denoise`] on the whole rows and keeps the slot positions; a denoiser
    /// that reads the prompt once (a block-diffusion model over a cached prefix) overrides it.
    fn denoise_slots(&self, prefix: &[u32], slots: &[Vec<u32>], suffix: &[u32]) -> Result<Vec<f32>> {
        let (n, len) = (slots.len(), slots.first().map_or(0, Vec::len));
        if n == 0 || len == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<Vec<u32>> = slots.iter().map(|s| [prefix, s, suffix].concat()).collect();
        let width = rows[0].len();
        let logits = self.denoise(&rows)?;
        let vocab = logits.len() / (n * width);
        if vocab == 0 || logits.len() != n * width * vocab || rows.iter().any(|r| r.len() != width) {
            return Err(crate::Error::model(format!(
                "denoiser returned {} logits for {n} rows of {width} tokens (slots of equal length needed)",
                logits.len()
            )));
        }
        let mut out = Vec::with_capacity(n * len * vocab);
        for r in 0..n {
            let from = (r * width + prefix.len()) * vocab;
            out.extend_from_slice(&logits[from..from + len * vocab]);
        }
        Ok(out)
    }
}

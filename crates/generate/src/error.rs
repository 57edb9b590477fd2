//! Typed errors of the generation crate.

/// Result alias for the generation crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while building prompts, decoding and aggregating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model failed (the message names the model and the operation).
    #[error(transparent)]
    Model(#[from] metarag_core::Error),
    /// A decoding option is out of range.
    #[error("invalid decoding option: {0}")]
    Config(String),
    /// The prompt does not fit the model's window even without context.
    #[error(
        "the question and template need {needed} tokens but the window is {window}; shorten the question or raise --max-prompt"
    )]
    PromptTooLong {
        /// Tokens the prompt needs without any context chunk.
        needed: usize,
        /// The prompt budget.
        window: usize,
    },
    /// Logits rows of the wrong size came back from the model.
    #[error("model returned {got} logits, expected {expected}")]
    Logits {
        /// Number received.
        got: usize,
        /// Number expected.
        expected: usize,
    },
}

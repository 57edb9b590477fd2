//! metarag-generate: answers by infilling. Infill templates over retrieved chunks
//! ([`template`]), a causal decoder that forks one computed prefix into N candidates decoded
//! as one batch ([`causal`]), extractive decoding constrained to spans of the context
//! ([`constrain`]), a masked-diffusion decoder ([`masked`]), float64 sampling with Mirostat
//! ([`sample`]), and RPC / vote / lowest-perplexity aggregation ([`aggregate`]).
//!
//! Models come in as the `metarag_core::model` traits (`CausalModel`, `MaskedDenoiser`):
//! the real ones are in `metarag-onnx`, scripted ones for tests in [`testing`].

pub mod aggregate;
mod candidate;
pub mod causal;
pub mod constrain;
mod error;
pub mod masked;
pub mod qa;
pub mod sample;
pub mod template;
/// Scripted fakes of the model traits, for tests and examples (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use candidate::{Candidate, Finish, SpanSource};
pub use error::{Error, Result};

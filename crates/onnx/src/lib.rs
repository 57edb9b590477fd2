//! metarag-onnx: the models, run by ONNX Runtime. The only crate that uses `ort` and
//! `tokenizers`.
//!
//! - [`RuntimeOptions`]: where the models and the ONNX Runtime library are, thread count;
//!   the library is found automatically ([`runtime::ort_library_candidates`]) and a missing
//!   one is a clear [`Error::RuntimeMissing`], never a panic.
//! - [`CausalLm`]: per-token log-probabilities, batched; long documents scored through the
//!   KV cache in windows with consistent positions ([`LmConfig`]); prompt-prefix caching.
//!   It implements [`metarag_core::model::SentenceScorer`] (PPL chunking).
//! - [`LmMarginJudge`]: margin sampling over the chat template
//!   ([`metarag_core::model::MarginJudge`]).
//! - [`Embedder`]: MiniLM sentence embeddings ([`metarag_core::model::SentenceEmbedder`]).
//! - [`Models`]: the models a pipeline needs, loaded once; the pipeline's
//!   [`metarag_core::pipeline::ModelProvider`] ([`registry`]).
//!
//! ```no_run
//! use metarag_core::model::SentenceScorer;
//! use metarag_onnx::{CausalLm, LmConfig, RuntimeOptions};
//!
//! let opts = RuntimeOptions::default().with_threads(2);
//! let lm = CausalLm::load(&opts, LmConfig::default())?;
//! let scores = lm.score_sentences(&["The cat sat.", " It purred.", " Stocks fell."])?;
//! assert_eq!(scores.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod embed;
mod error;
mod generate;
mod graph;
mod kv;
mod lm;
mod margin;
mod masked;
mod math;
pub mod registry;
pub mod runtime;
mod tokens;

pub use embed::{EMBEDDER_FUSED_FILE, EMBEDDER_INT8_FILE, Embedder, MINILM_DIR};
pub use error::{Error, Result};
pub use generate::{LmBatch, LmPrefix};
pub use lm::{CausalLm, DECODER_FILE, FIM_FILE, INFILL_DIR, INT8_FILE, KvCache, LmConfig, SMOLLM2_DIR};
pub use margin::{JudgeConfig, LmMarginJudge};
pub use masked::{BlockDenoiser, DENOISER_FILE, MASKED_DIR, MASKED_FILE, MaskedLm, SYNTHETIC_DENOISER_DIR};
pub use registry::{EMBEDDER_ID, Models, query_embedder, runtime};
pub use runtime::{RuntimeOptions, models_dir};
pub use tokens::TokenizerFile;

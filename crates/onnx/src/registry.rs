//! The real models behind a pipeline: [`Models`] loads what a [`Pipeline`] needs (causal LM,
//! embedder, tokenizer) once and is its [`ModelProvider`]; [`query_embedder`] is the embedder
//! that may search an index, refusing one built with an embedder this build cannot load.
//!
//! ```no_run
//! use metarag_core::pipeline::Pipeline;
//! use metarag_onnx::{Models, RuntimeOptions};
//!
//! let pipeline = Pipeline::from_toml("[chunker]\nmethod = \"ppl\"\n", "inline".as_ref())?;
//! let models = Models::load(&pipeline, &RuntimeOptions::default(), false, false, 1)?;
//! let doc = metarag_core::Document::from_text("d", "The cat sat. It purred. Stocks fell sharply.");
//! let chunking = pipeline.chunk_document(&models, &doc)?;
//! assert_eq!(chunking.spans.last().map(|s| s.end), Some(doc.text.len()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use metarag_core::chunk::{ChunkSizer, Chunker, MarginPrompt};
use metarag_core::model::{MarginJudge, SentenceEmbedder, SentenceScorer, TokenOffsets};
use metarag_core::pipeline::{ChunkerConfig, MergeConfig, MergeUnit, ModelProvider, Pipeline};

use crate::{CausalLm, Embedder, Error, JudgeConfig, LmConfig, LmMarginJudge, Result, RuntimeOptions, TokenizerFile};

/// The embedder this build can load (the id a pipeline's `[embedder] model` must name).
pub const EMBEDDER_ID: &str = "all-minilm-l6-v2-int8";

/// Threads (given, or all cores) and the ONNX Runtime options for them and a models directory.
pub fn runtime(threads: Option<usize>, models: Option<&std::path::Path>) -> (usize, RuntimeOptions) {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let mut opts = RuntimeOptions::default().with_threads(threads);
    if let Some(m) = models {
        opts = opts.with_models_dir(m);
    }
    (threads, opts)
}

/// The models a pipeline needs, loaded once.
pub struct Models {
    /// The causal LM (PPL and margin chunking).
    pub lm: Option<Arc<CausalLm>>,
    /// The sentence embedder (semantic chunking, ingest, dense search).
    pub embedder: Option<Arc<Embedder>>,
    /// The semantic chunker's embedder (at the pipeline's `[scorer] precision`; several
    /// sessions).
    pub chunk_embedder: Option<Arc<Embedder>>,
    /// The SmolLM2 tokenizer (fixed chunks, token counts, merging by tokens).
    pub tokenizer: Option<Arc<TokenizerFile>>,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("lm", &self.lm.is_some())
            .field("embedder", &self.embedder.is_some())
            .field("chunk_embedder", &self.chunk_embedder.is_some())
            .field("tokenizer", &self.tokenizer.is_some())
            .finish()
    }
}

impl Models {
    /// Loads what `pipeline` needs; `embed` forces the embedder (ingest, dense search), `tokens`
    /// the SmolLM2 tokenizer (token counts); the LM gets `lm_sessions` sessions (one per
    /// document chunked at once). A pipeline naming another embedder than [`EMBEDDER_ID`] is
    /// refused ([`Error::UnknownEmbedder`]).
    pub fn load(
        pipeline: &Pipeline,
        opts: &RuntimeOptions,
        embed: bool,
        tokens: bool,
        lm_sessions: usize,
    ) -> Result<Self> {
        let c = &pipeline.chunker;
        let need_lm = matches!(c, ChunkerConfig::Ppl { .. } | ChunkerConfig::Margin { .. });
        let need_tok = tokens
            || matches!(c, ChunkerConfig::Fixed { .. })
            || pipeline.merge.as_ref().is_some_and(|m| m.unit == MergeUnit::Tokens);
        let need_embed = embed || matches!(c, ChunkerConfig::Semantic { .. });
        // Settings first: an unknown embedder is refused before any model loads.
        if need_embed {
            check_embedder(pipeline)?;
        }
        let lm = if need_lm {
            let cfg = LmConfig {
                window: pipeline.scorer.window,
                max_context: pipeline.scorer.max_context,
                ..LmConfig::default()
            };
            Some(Arc::new(CausalLm::load_precision(opts, cfg, pipeline.scorer.precision)?.with_sessions(lm_sessions)?))
        } else {
            None
        };
        // Semantic chunking embeds many short sentences: its own embedder, at the pipeline's
        // precision, with one single-thread session per thread (Embedder::with_sessions). The
        // index's vectors and queries keep one fp32 session on all threads.
        let chunk_embedder = if matches!(c, ChunkerConfig::Semantic { .. }) {
            let e = Embedder::load_precision(opts, pipeline.scorer.precision)?.with_sessions(opts.intra_threads)?;
            Some(Arc::new(e))
        } else {
            None
        };
        let embedder = if embed { Some(Arc::new(query_embedder(pipeline, opts)?)) } else { None };
        let tokenizer = if need_tok { Some(Arc::new(TokenizerFile::smollm2(opts)?)) } else { None };
        Ok(Models { lm, embedder, chunk_embedder, tokenizer })
    }

    /// The chunker of `config`, over these models.
    pub fn chunker(&self, config: &ChunkerConfig) -> metarag_core::Result<Box<dyn Chunker + '_>> {
        config.build(self)
    }

    /// The sizer of a merge step.
    pub fn sizer(&self, merge: &MergeConfig) -> metarag_core::Result<Box<dyn ChunkSizer + '_>> {
        merge.sizer(self)
    }

    fn missing(what: &str) -> metarag_core::Error {
        metarag_core::Error::Config(format!("internal: the pipeline needs the {what}, which was not loaded"))
    }
}

/// The embedder of `pipeline` (what its index was embedded with, and so what its queries must
/// be embedded with): [`EMBEDDER_ID`], or [`Error::UnknownEmbedder`].
pub fn query_embedder(pipeline: &Pipeline, opts: &RuntimeOptions) -> Result<Embedder> {
    check_embedder(pipeline)?;
    Embedder::load(opts)
}

/// [`Error::UnknownEmbedder`] unless `pipeline` names the embedder this build has.
fn check_embedder(pipeline: &Pipeline) -> Result<()> {
    let model = &pipeline.embedder.model;
    if model != EMBEDDER_ID {
        return Err(Error::UnknownEmbedder { model: model.clone(), supported: EMBEDDER_ID });
    }
    Ok(())
}

impl ModelProvider for Models {
    fn scorer(&self) -> metarag_core::Result<&dyn SentenceScorer> {
        Ok(self.lm.as_deref().ok_or_else(|| Models::missing("causal LM"))?)
    }

    fn judge(&self, prompt: MarginPrompt) -> metarag_core::Result<Box<dyn MarginJudge + '_>> {
        let lm = self.lm.as_deref().ok_or_else(|| Models::missing("causal LM"))?;
        let config = JudgeConfig { prompt, ..JudgeConfig::default() };
        Ok(Box::new(LmMarginJudge::new(lm, config).map_err(metarag_core::Error::model)?))
    }

    fn embedder(&self) -> metarag_core::Result<&dyn SentenceEmbedder> {
        Ok(self.embedder.as_deref().ok_or_else(|| Models::missing("embedder"))?)
    }

    fn chunk_embedder(&self) -> metarag_core::Result<&dyn SentenceEmbedder> {
        match &self.chunk_embedder {
            Some(e) => Ok(e.as_ref()),
            None => self.embedder(),
        }
    }

    fn tokens(&self) -> metarag_core::Result<&dyn TokenOffsets> {
        Ok(self.tokenizer.as_deref().ok_or_else(|| Models::missing("tokenizer"))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_embedder_is_refused_before_anything_loads() {
        let p = Pipeline::from_toml("[embedder]\nmodel = \"bge-small\"\ndims = 384\n", "inline".as_ref()).unwrap();
        // A models directory that does not exist: the id check comes first.
        let opts = RuntimeOptions::default().with_models_dir("/nonexistent");
        let e = query_embedder(&p, &opts).unwrap_err().to_string();
        assert!(e.contains("\"bge-small\"") && e.contains(EMBEDDER_ID), "{e}");
        let e = Models::load(&p, &opts, true, false, 1).unwrap_err().to_string();
        assert!(e.contains("\"bge-small\""), "{e}");
        // Nothing needed, nothing loaded.
        let fixed = Pipeline::from_toml("[chunker]\nmethod = \"sentence\"\n", "inline".as_ref()).unwrap();
        let m = Models::load(&fixed, &opts, false, false, 1).unwrap();
        assert!(m.lm.is_none() && m.embedder.is_none() && m.chunk_embedder.is_none() && m.tokenizer.is_none());
        assert!(m.scorer().is_err());
    }
}

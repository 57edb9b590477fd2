//! Turning a declarative [`Pipeline`] into runnable stages with the real models.

use std::sync::Arc;

use anyhow::{Context, bail};
use metarag_core::chunk::{ChunkSizer, Chunker};
use metarag_core::model::{MarginJudge, SentenceEmbedder, SentenceScorer, TokenOffsets};
use metarag_core::pipeline::{ChunkerConfig, MergeConfig, MergeUnit, ModelProvider, Pipeline};
use metarag_onnx::{CausalLm, Embedder, JudgeConfig, LmConfig, LmMarginJudge, RuntimeOptions, TokenizerFile};

/// The embedder this build can load.
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
    /// The SmolLM2 tokenizer (fixed chunks, token counts, merging by tokens).
    pub tokenizer: Option<Arc<TokenizerFile>>,
}

impl Models {
    /// Loads what `pipeline` needs; `embed` forces the embedder (ingest, dense search), `tokens`
    /// the SmolLM2 tokenizer (token counts); the LM gets `lm_sessions` sessions (one per
    /// document chunked at once).
    pub fn load(
        pipeline: &Pipeline,
        opts: &RuntimeOptions,
        embed: bool,
        tokens: bool,
        lm_sessions: usize,
    ) -> anyhow::Result<Self> {
        let c = &pipeline.chunker;
        let need_lm = matches!(c, ChunkerConfig::Ppl { .. } | ChunkerConfig::Margin { .. });
        let need_tok = tokens
            || matches!(c, ChunkerConfig::Fixed { .. })
            || pipeline.merge.as_ref().is_some_and(|m| m.unit == MergeUnit::Tokens);
        let need_embed = embed || matches!(c, ChunkerConfig::Semantic { .. });
        let lm = if need_lm {
            let cfg = LmConfig {
                window: pipeline.scorer.window,
                max_context: pipeline.scorer.max_context,
                ..LmConfig::default()
            };
            let lm = CausalLm::load(opts, cfg).and_then(|lm| lm.with_sessions(lm_sessions));
            Some(Arc::new(lm.context("loading the causal LM")?))
        } else {
            None
        };
        let embedder = if need_embed {
            if pipeline.embedder.model != EMBEDDER_ID {
                bail!(
                    "unknown embedder {:?}: this build embeds with {EMBEDDER_ID} (384 dims)",
                    pipeline.embedder.model
                );
            }
            Some(Arc::new(Embedder::load(opts).context("loading the embedder")?))
        } else {
            None
        };
        let tokenizer = if need_tok {
            Some(Arc::new(TokenizerFile::smollm2(opts).context("loading the tokenizer")?))
        } else {
            None
        };
        Ok(Models { lm, embedder, tokenizer })
    }

    /// The chunker of `config`, over these models.
    pub fn chunker(&self, config: &ChunkerConfig) -> anyhow::Result<Box<dyn Chunker + '_>> {
        Ok(config.build(self)?)
    }

    /// The sizer of a merge step.
    pub fn sizer(&self, merge: &MergeConfig) -> anyhow::Result<Box<dyn ChunkSizer + '_>> {
        Ok(merge.sizer(self)?)
    }

    fn missing(what: &str) -> metarag_core::Error {
        metarag_core::Error::Config(format!("internal: the pipeline needs the {what}, which was not loaded"))
    }
}

impl ModelProvider for Models {
    fn scorer(&self) -> metarag_core::Result<&dyn SentenceScorer> {
        Ok(self.lm.as_deref().ok_or_else(|| Models::missing("causal LM"))?)
    }

    fn judge(&self) -> metarag_core::Result<Box<dyn MarginJudge + '_>> {
        let lm = self.lm.as_deref().ok_or_else(|| Models::missing("causal LM"))?;
        Ok(Box::new(LmMarginJudge::new(lm, JudgeConfig::default()).map_err(metarag_core::Error::model)?))
    }

    fn embedder(&self) -> metarag_core::Result<&dyn SentenceEmbedder> {
        Ok(self.embedder.as_deref().ok_or_else(|| Models::missing("embedder"))?)
    }

    fn tokens(&self) -> metarag_core::Result<&dyn TokenOffsets> {
        Ok(self.tokenizer.as_deref().ok_or_else(|| Models::missing("tokenizer"))?)
    }
}

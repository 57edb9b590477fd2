//! Turning a declarative [`Pipeline`] into runnable stages with the real models.

use std::sync::Arc;

use anyhow::{Context, bail};
use metarag_core::chunk::{
    BoundaryRule, Chars, ChunkSizer, Chunker, FixedChunker, MarginChunker, MarginConfig, PplChunker, PplConfig,
    SemanticChunker, SemanticConfig, SentenceChunker, TokenSizer, Words,
};
use metarag_core::pipeline::{ChunkerConfig, MergeConfig, MergeUnit, Pipeline, PplRule};
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
        let missing = || anyhow::anyhow!("internal: the model for the {} chunker is not loaded", config.name());
        Ok(match config {
            ChunkerConfig::Ppl { threshold, rule, adaptive, overlap } => {
                let lm = self.lm.as_deref().ok_or_else(missing)?;
                let rule = match rule {
                    PplRule::Either => BoundaryRule::Either,
                    PplRule::Both => BoundaryRule::Both,
                };
                Box::new(PplChunker::new(
                    lm,
                    PplConfig { threshold: *threshold, rule, adaptive: *adaptive, overlap: *overlap },
                ))
            }
            ChunkerConfig::Margin { threshold } => {
                let lm = self.lm.as_deref().ok_or_else(missing)?;
                let judge = LmMarginJudge::new(lm, JudgeConfig::default())?;
                Box::new(MarginChunker::new(judge, MarginConfig { threshold: *threshold, ..MarginConfig::default() }))
            }
            ChunkerConfig::Semantic { percentile } => {
                let e = self.embedder.as_deref().ok_or_else(missing)?;
                Box::new(SemanticChunker::new(
                    e,
                    SemanticConfig { percentile: *percentile, ..SemanticConfig::default() },
                ))
            }
            ChunkerConfig::Sentence => Box::new(SentenceChunker),
            ChunkerConfig::Fixed { size } => {
                Box::new(FixedChunker::new(self.tokenizer.as_deref().ok_or_else(missing)?, *size)?)
            }
        })
    }

    /// The sizer of a merge step.
    pub fn sizer(&self, merge: &MergeConfig) -> anyhow::Result<Box<dyn ChunkSizer + '_>> {
        Ok(match merge.unit {
            MergeUnit::Words => Box::new(Words),
            MergeUnit::Chars => Box::new(Chars),
            MergeUnit::Tokens => Box::new(TokenSizer(
                self.tokenizer.as_deref().ok_or_else(|| anyhow::anyhow!("internal: tokenizer not loaded"))?,
            )),
        })
    }
}

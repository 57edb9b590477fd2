//! Declarative pipelines: which chunker (with its parameters), how chunks are merged, how the
//! scorer windows the text and which embedder indexes them. A pipeline round-trips through
//! TOML (`pipelines/*.toml`); `metarag ingest --pipeline FILE` reads one and the index
//! directory keeps a copy in `metarag.toml`.
//!
//! ```
//! use metarag_core::pipeline::{ChunkerConfig, Pipeline};
//!
//! let p: Pipeline = toml::from_str(r#"
//!     [chunker]
//!     method = "ppl"
//!     threshold = 0.5
//!
//!     [merge]
//!     target = 200
//! "#).unwrap();
//! assert!(matches!(p.chunker, ChunkerConfig::Ppl { threshold, .. } if threshold == 0.5));
//! assert_eq!(p.embedder.dims, 384);
//! assert_eq!(toml::from_str::<Pipeline>(&p.to_toml()).unwrap(), p);
//! ```
//!
//! A pipeline builds its own stages from a [`ModelProvider`] (the real models in the
//! `metarag` library, fakes in tests):
//!
//! ```
//! use metarag_core::pipeline::Pipeline;
//! use metarag_core::testing::FakeModels;
//! use metarag_core::{Document, split::RuleSplitter};
//!
//! let p = Pipeline::from_toml("[chunker]\nmethod = \"ppl\"\n[merge]\ntarget = 6\n", "inline".as_ref())?;
//! let doc = Document::from_text("d", "The cat sat. The cat sat again. Quarks bind. Gluons carry it.");
//! let c = p.chunk_document(&FakeModels::default(), &doc)?;
//! assert_eq!(c.spans.first().map(|s| s.start), Some(0));
//! assert_eq!(c.spans.last().map(|s| s.end), Some(doc.text.len()));
//! # Ok::<(), metarag_core::Error>(())
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chunk::{
    BoundaryRule, Chars, ChunkSizer, Chunker, Chunking, FixedChunker, GroupEmbedding, MarginChunker, MarginConfig,
    MarginPrompt, PplChunker, PplConfig, SemanticChunker, SemanticConfig, SentenceChunker, TokenSizer, Words,
};
use crate::model::{MarginJudge, SentenceEmbedder, SentenceScorer, TokenOffsets};
use crate::split::RuleSplitter;
use crate::{Document, Error, Result};

/// Where a pipeline's model-backed stages come from: the `metarag` library implements it over
/// the real models (loaded for the pipeline), [`crate::testing::FakeModels`] over fakes. A
/// model the provider did not load is an error naming it.
pub trait ModelProvider {
    /// The sentence scorer of PPL chunking (the causal LM, windowed by [`ScorerConfig`]).
    fn scorer(&self) -> Result<&dyn SentenceScorer>;
    /// The split-or-keep judge of margin chunking, reading `prompt`.
    fn judge(&self, prompt: MarginPrompt) -> Result<Box<dyn MarginJudge + '_>>;
    /// The sentence embedder of the index's vectors (ingest, queries).
    fn embedder(&self) -> Result<&dyn SentenceEmbedder>;
    /// The embedder semantic chunking runs (another precision than the vectors' when
    /// [`ScorerConfig::precision`] asks for one); by default [`ModelProvider::embedder`].
    fn chunk_embedder(&self) -> Result<&dyn SentenceEmbedder> {
        self.embedder()
    }
    /// Token offsets (fixed-size chunks, merging by tokens).
    fn tokens(&self) -> Result<&dyn TokenOffsets>;
}

impl ChunkerConfig {
    /// The chunker these settings describe, over `models`.
    pub fn build<'a>(&self, models: &'a dyn ModelProvider) -> Result<Box<dyn Chunker + 'a>> {
        Ok(match self {
            ChunkerConfig::Ppl { threshold, rule, adaptive, overlap } => {
                let rule = match rule {
                    PplRule::Either => BoundaryRule::Either,
                    PplRule::Both => BoundaryRule::Both,
                };
                let config = PplConfig { threshold: *threshold, rule, adaptive: *adaptive, overlap: *overlap };
                Box::new(PplChunker::new(models.scorer()?, config))
            }
            ChunkerConfig::Margin { threshold, prompt } => Box::new(MarginChunker::new(
                models.judge(*prompt)?,
                MarginConfig { threshold: *threshold, ..MarginConfig::default() },
            )),
            ChunkerConfig::Semantic { percentile, groups } => Box::new(SemanticChunker::new(
                models.chunk_embedder()?,
                SemanticConfig { percentile: *percentile, groups: *groups, ..SemanticConfig::default() },
            )),
            ChunkerConfig::Sentence => Box::new(SentenceChunker),
            ChunkerConfig::Fixed { size } => Box::new(FixedChunker::new(models.tokens()?, *size)?),
        })
    }
}

impl MergeConfig {
    /// The sizer of this merge step's unit, over `models`.
    pub fn sizer<'a>(&self, models: &'a dyn ModelProvider) -> Result<Box<dyn ChunkSizer + 'a>> {
        Ok(match self.unit {
            MergeUnit::Words => Box::new(Words),
            MergeUnit::Chars => Box::new(Chars),
            MergeUnit::Tokens => Box::new(TokenSizer(models.tokens()?)),
        })
    }
}

/// A whole ingestion pipeline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pipeline {
    /// How documents are cut into chunks.
    pub chunker: ChunkerConfig,
    /// Optional merging of consecutive chunks up to a size.
    pub merge: Option<MergeConfig>,
    /// How the causal LM windows long documents (PPL and margin chunkers).
    pub scorer: ScorerConfig,
    /// The embedder used for dense retrieval (and the semantic chunker).
    pub embedder: EmbedderConfig,
}

impl Pipeline {
    /// Reads a pipeline file; errors name the file and the problem.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_toml(&text, path)
    }

    /// Parses pipeline TOML read from `origin` (named in errors).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(format!("{}: invalid pipeline: {e}", origin.display())))
    }

    /// Cuts `doc` with this pipeline's chunker and merge step over `models`: sentences by the
    /// rule-based splitter, then [`crate::chunk::chunk_document`].
    pub fn chunk_document(&self, models: &dyn ModelProvider, doc: &Document) -> Result<Chunking> {
        let chunker = self.chunker.build(models)?;
        let sizer = self.merge.as_ref().map(|m| m.sizer(models)).transpose()?;
        let merge_to = self.merge.as_ref().zip(sizer.as_deref()).map(|(m, s)| (m.target, s));
        crate::chunk::chunk_document(doc, &RuleSplitter::default(), chunker.as_ref(), merge_to)
    }

    /// The pipeline as TOML (what `from_file` reads back).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// The chunking method and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum ChunkerConfig {
    /// Perplexity minima of the causal LM (Meta-Chunking PPL).
    Ppl {
        /// θ: minimum depth of a minimum, in nats.
        #[serde(default)]
        threshold: f32,
        /// `either` (reference code) or `both` (paper's formula).
        #[serde(default)]
        rule: PplRule,
        /// Adapt θ to the smallest recorded drop once 100 minima exist.
        #[serde(default)]
        adaptive: bool,
        /// Repeat each boundary sentence at the start of the next chunk (the chunks then
        /// overlap instead of tiling the text).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        overlap: bool,
    },
    /// Margin sampling with the instruction model.
    Margin {
        /// Starting threshold on P("2") − P("1").
        #[serde(default)]
        threshold: f32,
        /// The judge's prompt: "exact" (Meta-Chunking's, the default) or "cached" (the chunk
        /// once, then the sentence and the question: each step reuses the chunk's KV cache).
        #[serde(default, skip_serializing_if = "MarginPrompt::is_default")]
        prompt: MarginPrompt,
    },
    /// Embedding-similarity breakpoints.
    Semantic {
        /// Breakpoint percentile of the sentence distances.
        #[serde(default = "default_percentile")]
        percentile: f32,
        /// How a sentence group's vector is made: "mean" (embed each sentence once, average
        /// the group's vectors; the default) or "joined" (embed the group's text).
        #[serde(default)]
        groups: GroupEmbedding,
    },
    /// One chunk per sentence.
    Sentence,
    /// Fixed windows of `size` SmolLM2 tokens.
    Fixed {
        /// Tokens per chunk.
        #[serde(default = "default_fixed_size")]
        size: usize,
    },
}

fn default_percentile() -> f32 {
    95.0
}
fn default_fixed_size() -> usize {
    128
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig::Ppl { threshold: 0.0, rule: PplRule::Either, adaptive: false, overlap: false }
    }
}

impl ChunkerConfig {
    /// The method's name as written in pipeline files.
    pub fn name(&self) -> &'static str {
        match self {
            ChunkerConfig::Ppl { .. } => "ppl",
            ChunkerConfig::Margin { .. } => "margin",
            ChunkerConfig::Semantic { .. } => "semantic",
            ChunkerConfig::Sentence => "sentence",
            ChunkerConfig::Fixed { .. } => "fixed",
        }
    }
}

/// The PPL boundary rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PplRule {
    /// A local minimum with EITHER neighbour at least θ higher.
    #[default]
    Either,
    /// Both neighbours more than θ higher.
    Both,
}

/// Merging of consecutive chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    /// Largest merged chunk, in `unit`s.
    pub target: usize,
    /// Unit of `target`.
    #[serde(default)]
    pub unit: MergeUnit,
}

/// Unit of a merge target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeUnit {
    /// Whitespace-separated words.
    #[default]
    Words,
    /// SmolLM2 tokens.
    Tokens,
    /// Non-whitespace characters.
    Chars,
}

/// Windowing and precision of the causal LM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScorerConfig {
    /// Tokens per forward pass.
    pub window: usize,
    /// Most tokens kept in the KV cache.
    pub max_context: usize,
    /// The graphs the chunkers run (`precision = "int8"` in a pipeline file): the causal LM of
    /// PPL and margin chunking, and the semantic chunker's embedder (an index's vectors are
    /// always embedded in fp32). fp32 is not written out, so pipelines and index fingerprints
    /// from before this field are unchanged.
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig { window: 256, max_context: 512, precision: Precision::Fp32 }
    }
}

/// Which build of the causal LM scores sentences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The converted fp32 graph (what the oracle tests check).
    #[default]
    Fp32,
    /// SmoothQuant + dynamic int8 MatMuls (`model-int8.onnx` of each model): ~2.1x faster PPL
    /// chunking on AVX-512 CPUs, 97.3% of boundaries identical to fp32 on six SQuAD dev
    /// articles; for semantic chunking, the embedder's int8 graph.
    Int8,
}

impl Precision {
    /// Whether this is [`Precision::Fp32`] (the default, left out when serialized).
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }
}

/// The embedding model of an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// Model id (a directory of the models directory).
    pub model: String,
    /// Vector dimension.
    pub dims: usize,
    /// Texts per forward pass.
    pub batch: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig { model: "all-minilm-l6-v2-int8".into(), dims: 384, batch: 32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_round_trips() {
        for c in [
            ChunkerConfig::default(),
            ChunkerConfig::Margin { threshold: 0.1, prompt: MarginPrompt::Cached },
            ChunkerConfig::Margin { threshold: 0.0, prompt: MarginPrompt::Exact },
            ChunkerConfig::Semantic { percentile: 90.0, groups: GroupEmbedding::Joined },
            ChunkerConfig::Semantic { percentile: 90.0, groups: GroupEmbedding::Mean },
            ChunkerConfig::Sentence,
            ChunkerConfig::Fixed { size: 64 },
        ] {
            let p = Pipeline {
                chunker: c,
                merge: Some(MergeConfig { target: 100, unit: MergeUnit::Tokens }),
                ..Pipeline::default()
            };
            assert_eq!(toml::from_str::<Pipeline>(&p.to_toml()).unwrap(), p);
        }
    }

    #[test]
    fn every_method_builds_from_a_provider_and_tiles_the_text() {
        let models = crate::testing::FakeModels::default();
        let text = "The cat sat on the mat. The cat sat again. Quantum chromodynamics binds quarks. \
                    Gluons carry the strong force. The cat slept. It was a long day for the cat.";
        let doc = Document::from_text("d", text);
        for c in [
            ChunkerConfig::default(),
            ChunkerConfig::Ppl { threshold: 0.0, rule: PplRule::Both, adaptive: false, overlap: false },
            ChunkerConfig::Margin { threshold: 0.0, prompt: MarginPrompt::Exact },
            ChunkerConfig::Semantic { percentile: 50.0, groups: GroupEmbedding::Mean },
            ChunkerConfig::Sentence,
            ChunkerConfig::Fixed { size: 4 },
        ] {
            for merge in [None, Some(MergeConfig { target: 8, unit: MergeUnit::Tokens })] {
                let p = Pipeline { chunker: c.clone(), merge, ..Pipeline::default() };
                let got = p.chunk_document(&models, &doc).unwrap();
                assert!(crate::tiles(&got.spans, text.len()), "{} does not tile: {:?}", c.name(), got.spans);
            }
        }
    }

    /// A provider that loaded nothing.
    struct Nothing;

    impl ModelProvider for Nothing {
        fn scorer(&self) -> Result<&dyn SentenceScorer> {
            Err(Error::Config("no causal LM loaded".into()))
        }
        fn judge(&self, _: MarginPrompt) -> Result<Box<dyn MarginJudge + '_>> {
            Err(Error::Config("no causal LM loaded".into()))
        }
        fn embedder(&self) -> Result<&dyn SentenceEmbedder> {
            Err(Error::Config("no embedder loaded".into()))
        }
        fn tokens(&self) -> Result<&dyn TokenOffsets> {
            Err(Error::Config("no tokenizer loaded".into()))
        }
    }

    #[test]
    fn a_missing_model_is_an_error_and_the_baselines_need_none() {
        assert!(ChunkerConfig::Sentence.build(&Nothing).is_ok());
        assert!(MergeConfig { target: 5, unit: MergeUnit::Words }.sizer(&Nothing).is_ok());
        let e = ChunkerConfig::Semantic { percentile: 95.0, groups: GroupEmbedding::Joined }
            .build(&Nothing)
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("invalid configuration: no embedder loaded"));
        assert!(ChunkerConfig::default().build(&Nothing).is_err());
        assert!(MergeConfig { target: 5, unit: MergeUnit::Tokens }.sizer(&Nothing).is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = toml::from_str::<Pipeline>("[chunker]\nmethod = \"ppl\"\nthreshhold = 1").unwrap_err();
        assert!(e.to_string().contains("threshhold"), "{e}");
        let e = toml::from_str::<Pipeline>("[chunker]\nmethod = \"nope\"").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn shipped_pipelines_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Pipeline::from_file(&p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 1);
    }
}

//! A pipeline's ingest stages, built from its declarative form over a
//! [`ModelProvider`] and owned: what [`crate::ingest`] needs, in three lines of library code.
//!
//! With the real models (`metarag_onnx::Models`), from a TOML file to search results:
//!
//! ```
//! use metarag_core::pipeline::Pipeline;
//! use metarag_index::{BuiltStages, Index, IngestOptions, Mode, Query, Silent, StoreConfig, ingest};
//! use metarag_onnx::{Models, RuntimeOptions};
//!
//! let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
//! let pipeline = Pipeline::from_file(&root.join("pipelines/default.toml"))?;
//! let models = Models::load(&pipeline, &RuntimeOptions::default().with_threads(2), true, true, 1)?;
//! let stages = BuiltStages::build(&pipeline, &models, Default::default())?;
//!
//! let dir = std::env::temp_dir().join(format!("metarag-doc-index-{}", std::process::id()));
//! let mut index = Index::create_or_open(&dir, &pipeline, &StoreConfig::Embedded)?;
//! let files = vec![root.join("examples/corpus/washington-1790.txt")];
//! let report = ingest(&mut index, &files, &stages.stages(), &IngestOptions::default(), &Silent)?;
//! assert_eq!((report.ingested, report.failed.len()), (1, 0));
//!
//! let embedder = models.embedder.clone().expect("loaded for ingest");
//! let index = index.with_embedder(embedder);
//! let hits = index.search(&Query::new("How large was the loan completed in Holland?").k(3).mode(Mode::Hybrid))?;
//! assert!(hits.iter().any(|h| h.record.text.contains("Holland")));
//! # drop(index);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use metarag_core::chunk::{ChunkSizer, Chunker};
use metarag_core::load::{FileLoader, LoadOptions};
use metarag_core::pipeline::{ModelProvider, Pipeline};
use metarag_core::split::RuleSplitter;

use crate::Result;
use crate::ingest::Stages;

/// The stages of one pipeline (loader, splitter, chunker, merge, embedder, token counter),
/// borrowing its models from the provider.
pub struct BuiltStages<'m> {
    loader: FileLoader,
    splitter: RuleSplitter,
    chunker: Box<dyn Chunker + 'm>,
    merge: Option<(usize, Box<dyn ChunkSizer + 'm>)>,
    embedder: &'m dyn metarag_core::model::SentenceEmbedder,
    embed_batch: usize,
    tokens: Option<&'m dyn metarag_core::model::TokenOffsets>,
}

impl std::fmt::Debug for BuiltStages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltStages").field("merge", &self.merge.as_ref().map(|m| m.0)).finish()
    }
}

impl<'m> BuiltStages<'m> {
    /// Builds `pipeline`'s stages over `models` (which must hold its embedder: an ingest
    /// embeds every chunk); files are read with `load`. The token counter is used when the
    /// provider has one.
    pub fn build(pipeline: &Pipeline, models: &'m dyn ModelProvider, load: LoadOptions) -> Result<Self> {
        Ok(BuiltStages {
            loader: FileLoader::new(load),
            splitter: RuleSplitter::default(),
            chunker: pipeline.chunker.build(models)?,
            merge: match &pipeline.merge {
                Some(m) => Some((m.target, m.sizer(models)?)),
                None => None,
            },
            embedder: models.embedder()?,
            embed_batch: pipeline.embedder.batch,
            tokens: models.tokens().ok(),
        })
    }

    /// The stages, for [`crate::ingest`].
    pub fn stages(&self) -> Stages<'_> {
        Stages {
            loader: &self.loader,
            splitter: &self.splitter,
            chunker: self.chunker.as_ref(),
            merge: self.merge.as_ref().map(|(target, sizer)| (*target, sizer.as_ref())),
            embedder: self.embedder,
            embed_batch: self.embed_batch,
            tokens: self.tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metarag_core::testing::FakeModels;

    #[test]
    fn builds_every_stage_the_pipeline_names() {
        let p = Pipeline::from_toml("[chunker]\nmethod = \"ppl\"\n[merge]\ntarget = 50\n", "inline".as_ref()).unwrap();
        let models = FakeModels::default();
        let built = BuiltStages::build(&p, &models, LoadOptions::default()).unwrap();
        let s = built.stages();
        assert_eq!(s.merge.map(|m| m.0), Some(50));
        assert_eq!(s.embed_batch, p.embedder.batch);
        let none = Pipeline::from_toml("[chunker]\nmethod = \"sentence\"\n", "inline".as_ref()).unwrap();
        assert!(BuiltStages::build(&none, &models, LoadOptions::default()).unwrap().stages().merge.is_none());
    }
}

//! One opened index with everything it answers with: the query embedder, the pipeline's
//! models (loaded when first needed) and the answer model (loaded by the first question).
//! `metarag serve`, the command line and the Python package are thin layers over it.
//!
//! ```no_run
//! use metarag_engine::{AskOptions, Engine};
//! use metarag_onnx::RuntimeOptions;
//!
//! let engine = Engine::open("idx".as_ref(), RuntimeOptions::default())?;
//! let asked = engine.ask("What does the narrator ask to be called?", &AskOptions { samples: 4, ..AskOptions::default() })?;
//! for c in &asked.answer.citations {
//!     println!("[{}] {}", c.number, c.id);
//! }
//! let chunking = engine.chunk(&metarag_core::Document::from_text("note", "One sentence. Another one."))?;
//! assert_eq!(chunking.spans.last().map(|s| s.end), Some(26));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use metarag_core::Document;
pub use metarag_core::chunk::Chunking;
use metarag_generate::aggregate::Method;
use metarag_generate::qa::Answer;
use metarag_index::{Index, Mode, Query, SearchHit};
use metarag_onnx::RuntimeOptions;
use serde::Serialize;

use crate::generator::{AnswerModel, Decoder, GenerateOptions, Generator, Infill, context};
use metarag_onnx::Models;

/// What went wrong, sorted by whose fault it is (a server maps them to 400, 503 and 500).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request's settings are invalid (a bad `samples`, an unknown method, ...).
    #[error("{0:#}")]
    Settings(anyhow::Error),
    /// A model could not be loaded (not set up, files missing).
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
    /// Searching, chunking or decoding failed.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl EngineError {
    fn failed(e: impl Into<anyhow::Error>) -> Self {
        EngineError::Failed(e.into())
    }
}

/// How to answer a question: `metarag ask`'s options that a caller usually sets; everything
/// else is at `ask`'s defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AskOptions {
    /// Chunks retrieved (hybrid) into the prompt.
    pub k: usize,
    /// Candidate answers decoded together (one batch over the shared prompt).
    pub samples: usize,
    /// How the candidates are aggregated.
    pub aggregate: Method,
    /// Only spans copied from the retrieved chunks (true) or free text.
    pub extractive: bool,
    /// Sampling seed: the same seed, question and index give the same answer.
    pub seed: u64,
}

impl Default for AskOptions {
    fn default() -> Self {
        AskOptions { k: 2, samples: 8, aggregate: Method::Rpc, extractive: true, seed: 0 }
    }
}

/// An answer and the chunks it was given.
#[derive(Debug, Serialize)]
pub struct Asked {
    /// The question as asked.
    pub question: String,
    /// The answer, its confidence, citations and candidates.
    #[serde(flatten)]
    pub answer: Answer,
    /// Ids (`path#chunk`) of the retrieved chunks, best first.
    pub retrieved: Vec<String>,
}

/// An index opened for search, with the models that chunk and answer with it.
pub struct Engine {
    index: Index,
    opts: RuntimeOptions,
    models: Mutex<Option<Arc<Models>>>,
    generator: Mutex<Option<Arc<Generator>>>,
    /// `ask`'s decoding options at their defaults (a request sets a few).
    defaults: GenerateOptions,
}

/// Opens the index at `dir` for searching in `mode`: with the query embedder unless the mode
/// is bm25, refusing an index embedded by a model this build cannot load.
pub fn open_index(dir: &Path, mode: Mode, opts: &RuntimeOptions) -> anyhow::Result<Index> {
    let index = Index::open(dir)?;
    if mode == Mode::Bm25 {
        return Ok(index);
    }
    let embedder = metarag_onnx::query_embedder(&index.config().pipeline, opts)
        .with_context(|| format!("{}: cannot embed queries for this index", dir.display()))?;
    Ok(index.with_embedder(Arc::new(embedder)))
}

impl Engine {
    /// Opens the index at `dir` with its query embedder; refuses a directory that is not an
    /// index or one embedded by a model this build cannot load.
    pub fn open(dir: &Path, opts: RuntimeOptions) -> anyhow::Result<Self> {
        let index = open_index(dir, Mode::Hybrid, &opts)?;
        let defaults = GenerateOptions::default();
        Ok(Engine { index, opts, models: Mutex::new(None), generator: Mutex::new(None), defaults })
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The index, for writing (ingest).
    pub fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    /// The runtime options models are loaded with.
    pub fn runtime_options(&self) -> &RuntimeOptions {
        &self.opts
    }

    /// Searches the index.
    pub fn search(&self, query: &Query) -> Result<Vec<SearchHit>, EngineError> {
        self.index.search(query).map_err(EngineError::failed)
    }

    /// The models of the index's pipeline, loaded by the first call.
    pub fn models(&self) -> Result<Arc<Models>, EngineError> {
        let mut slot = self.models.lock().map_err(|_| EngineError::failed(anyhow::anyhow!("a poisoned lock")))?;
        if let Some(m) = slot.as_ref() {
            return Ok(Arc::clone(m));
        }
        let m = Arc::new(
            Models::load(&self.index.config().pipeline, &self.opts, false, false, 1)
                .map_err(|e| EngineError::Unavailable(e.into()))?,
        );
        *slot = Some(Arc::clone(&m));
        Ok(m)
    }

    /// The answer model (the causal infiller), loaded by the first call.
    fn generator(&self) -> Result<Arc<Generator>, EngineError> {
        let mut slot = self.generator.lock().map_err(|_| EngineError::failed(anyhow::anyhow!("a poisoned lock")))?;
        if let Some(g) = slot.as_ref() {
            return Ok(Arc::clone(g));
        }
        let g = Arc::new(
            Generator::load(Decoder::Causal, AnswerModel::Infill, &self.opts).map_err(EngineError::Unavailable)?,
        );
        *slot = Some(Arc::clone(&g));
        Ok(g)
    }

    /// Cuts `doc` as ingest would with this index's pipeline.
    pub fn chunk(&self, doc: &Document) -> Result<Chunking, EngineError> {
        let models = self.models()?;
        self.index.config().pipeline.chunk_document(models.as_ref(), doc).map_err(|e| EngineError::Failed(e.into()))
    }

    /// Answers `question` from the `options.k` best chunks (hybrid search), citing them.
    pub fn ask(&self, question: &str, options: &AskOptions) -> Result<Asked, EngineError> {
        if question.trim().is_empty() {
            return Err(EngineError::Settings(anyhow::anyhow!("the question is empty")));
        }
        if !(1..=20).contains(&options.k) || !(1..=64).contains(&options.samples) {
            return Err(EngineError::Settings(anyhow::anyhow!(
                "k must be in 1..=20 and samples in 1..=64 (got k {}, samples {})",
                options.k,
                options.samples
            )));
        }
        let infill = if options.extractive { Infill::Extractive } else { Infill::Free };
        let mut args = self.defaults.clone();
        args.samples = options.samples;
        args.seed = options.seed;
        args.config(infill, options.aggregate).map_err(EngineError::Settings)?;
        let hits = self.search(&Query::new(question).k(options.k).mode(Mode::Hybrid))?;
        let chunks = context(&hits);
        let generator = self.generator()?;
        let cfg = generator.config(&args, infill, options.aggregate).map_err(EngineError::Settings)?;
        let answer = generator.ask(question, &chunks, &cfg).map_err(EngineError::Failed)?;
        Ok(Asked { question: question.to_string(), answer, retrieved: chunks.into_iter().map(|c| c.id).collect() })
    }
}

//! `metarag._native`: the Python extension module (PyO3, stable ABI 3.9+). The Python package
//! `metarag` (crates/python/python/metarag) re-exports it; see its `__init__.py` and the
//! type stubs `_native.pyi` for the documented interface.
//!
//! ```text
//! import metarag
//! index = metarag.Index.create("idx")
//! index.ingest(["examples/corpus"], progress=True)
//! for hit in index.search("who is Ishmael", k=3):
//!     print(hit.score, hit.path, hit.text[:60])
//! ```
//!
//! Everything here is a thin layer over metarag-engine's [`Engine`] (the same code as the CLI
//! and `metarag serve`): the GIL is released while models and the index work, and
//! every error becomes a `metarag.MetaragError` (or `IndexNotFoundError`) carrying the path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use metarag_core::Document;
use metarag_core::load::{LoadOptions, load_path};
use metarag_core::pipeline::Pipeline;
use metarag_engine::{AskOptions, Engine, EngineError, IngestSettings, Models, RuntimeOptions};
use metarag_index::{CONFIG_FILE, Index as RawIndex, Mode, Query, StoreConfig};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

mod results;
use results::{Answer, Chunk, Citation, Hit, IngestReport, chunks_of};

/// The Python exception for a failure: `metarag._errors.<kind>(message, path)`.
fn raise(py: Python<'_>, kind: &str, message: String, path: Option<&Path>) -> PyErr {
    let path = path.map(|p| p.display().to_string());
    let made = py
        .import("metarag._errors")
        .and_then(|m| m.getattr(kind))
        .and_then(|class| class.call1((message.clone(), path)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyRuntimeError::new_err(message),
    }
}

fn failed(py: Python<'_>, e: impl std::fmt::Display, path: Option<&Path>) -> PyErr {
    raise(py, "MetaragError", format!("{e:#}").trim_end().to_string(), path)
}

fn engine_error(py: Python<'_>, e: EngineError, path: &Path) -> PyErr {
    match e {
        EngineError::Settings(e) => raise(py, "SettingsError", format!("{e:#}"), Some(path)),
        EngineError::Unavailable(e) => raise(py, "ModelUnavailableError", format!("{e:#}"), Some(path)),
        EngineError::Failed(e) => failed(py, e, Some(path)),
    }
}

/// ONNX Runtime options for an optional thread count and models directory.
fn runtime(threads: Option<usize>, models: Option<PathBuf>) -> (usize, RuntimeOptions) {
    metarag_engine::runtime(threads, models.as_deref())
}

/// A pipeline from JSON (the shape of a pipeline TOML file), the TOML text of a file, or the
/// built-in default.
fn pipeline_from(py: Python<'_>, json: Option<&str>, file: Option<PathBuf>) -> PyResult<Pipeline> {
    if let Some(file) = file {
        return Pipeline::from_file(&file).map_err(|e| raise(py, "SettingsError", e.to_string(), Some(&file)));
    }
    let text = json.unwrap_or("");
    if text.is_empty() {
        return toml_default(py);
    }
    serde_json::from_str(text).map_err(|e| raise(py, "SettingsError", format!("invalid pipeline: {e}"), None))
}

fn toml_default(py: Python<'_>) -> PyResult<Pipeline> {
    Pipeline::from_toml(metarag_engine::DEFAULT_PIPELINE, Path::new("pipelines/default.toml"))
        .map_err(|e| failed(py, e, None))
}

/// Models by (pipeline, threads, models directory): `chunk` loads them once per setting.
static MODELS: Mutex<Option<HashMap<String, Arc<Models>>>> = Mutex::new(None);

fn models_for(pipeline: &Pipeline, threads: usize, opts: &RuntimeOptions) -> anyhow::Result<Arc<Models>> {
    let key = format!("{}\n{threads}\n{:?}", pipeline.to_toml(), opts.models_dir);
    let mut cache = MODELS.lock().map_err(|_| anyhow::anyhow!("a poisoned lock"))?;
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(m) = cache.get(&key) {
        return Ok(Arc::clone(m));
    }
    let m = Arc::new(Models::load(pipeline, opts, false, false, 1)?);
    cache.insert(key, Arc::clone(&m));
    Ok(m)
}

/// Chunks a text or a file (`path`) with a pipeline (JSON, or a TOML `pipeline_file`).
#[pyfunction]
#[pyo3(signature = (text=None, path=None, pipeline_json=None, pipeline_file=None, threads=None, models=None))]
fn chunk(
    py: Python<'_>,
    text: Option<String>,
    path: Option<PathBuf>,
    pipeline_json: Option<&str>,
    pipeline_file: Option<PathBuf>,
    threads: Option<usize>,
    models: Option<PathBuf>,
) -> PyResult<Vec<Chunk>> {
    let pipeline = pipeline_from(py, pipeline_json, pipeline_file)?;
    let (threads, opts) = runtime(threads, models);
    let doc = match (text, &path) {
        (Some(t), None) => Document::from_text("text", t),
        (None, Some(p)) => {
            metarag_core::load::quiet_pdf_panics();
            py.detach(|| load_path(p, &LoadOptions::default())).map_err(|e| failed(py, e, Some(p)))?
        }
        _ => return Err(raise(py, "SettingsError", "give exactly one of text and path".into(), None)),
    };
    let out = py.detach(|| -> Result<Vec<Chunk>, (bool, anyhow::Error)> {
        let models = models_for(&pipeline, threads, &opts).map_err(|e| (true, e))?;
        let chunking = pipeline.chunk_document(models.as_ref(), &doc).map_err(|e| (false, e.into()))?;
        Ok(chunks_of(&doc, &chunking))
    });
    out.map_err(|(loading, e)| {
        if loading {
            raise(py, "ModelUnavailableError", format!("{e:#}"), None)
        } else {
            failed(py, e, path.as_deref())
        }
    })
}

/// A metarag index directory (tantivy BM25 + embedded Qdrant vectors), opened for search.
#[pyclass(frozen, module = "metarag")]
struct Index {
    dir: PathBuf,
    threads: usize,
    opts: RuntimeOptions,
    /// None once closed (and for the moment an ingest holds the index for writing).
    engine: RwLock<Option<Engine>>,
}

impl Index {
    fn load(py: Python<'_>, dir: PathBuf, threads: Option<usize>, models: Option<PathBuf>) -> PyResult<Self> {
        if !dir.join(CONFIG_FILE).is_file() {
            return Err(raise(
                py,
                "IndexNotFoundError",
                format!(
                    "{}: not a metarag index (no {CONFIG_FILE}); make one with metarag.Index.create or `metarag ingest`",
                    dir.display()
                ),
                Some(&dir),
            ));
        }
        let (threads, opts) = runtime(threads, models);
        let engine = py.detach(|| Engine::open(&dir, opts.clone())).map_err(|e| failed(py, e, Some(&dir)))?;
        Ok(Index { dir, threads, opts, engine: RwLock::new(Some(engine)) })
    }

    fn with_engine<T: Send>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&Engine) -> Result<T, EngineError> + Send,
    ) -> PyResult<T> {
        let out = py.detach(|| {
            let guard = self.engine.read().map_err(|_| None)?;
            let engine = guard.as_ref().ok_or(None)?;
            work(engine).map_err(Some)
        });
        out.map_err(|e| match e {
            Some(e) => engine_error(py, e, &self.dir),
            None => raise(py, "MetaragError", format!("{}: the index is closed", self.dir.display()), Some(&self.dir)),
        })
    }
}

#[pymethods]
impl Index {
    /// Opens the index in `dir` for search.
    #[staticmethod]
    #[pyo3(signature = (dir, *, threads=None, models=None))]
    fn open(py: Python<'_>, dir: PathBuf, threads: Option<usize>, models: Option<PathBuf>) -> PyResult<Self> {
        Index::load(py, dir, threads, models)
    }

    /// Creates an empty index in `dir` (or opens the one there, switching it to `pipeline`).
    #[staticmethod]
    #[pyo3(signature = (dir, *, pipeline_json=None, pipeline_file=None, threads=None, models=None))]
    fn create(
        py: Python<'_>,
        dir: PathBuf,
        pipeline_json: Option<&str>,
        pipeline_file: Option<PathBuf>,
        threads: Option<usize>,
        models: Option<PathBuf>,
    ) -> PyResult<Self> {
        let pipeline = pipeline_from(py, pipeline_json, pipeline_file)?;
        py.detach(|| RawIndex::create_or_open(&dir, &pipeline, &StoreConfig::Embedded).map(drop))
            .map_err(|e| failed(py, e, Some(&dir)))?;
        Index::load(py, dir, threads, models)
    }

    /// The index directory.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The pipeline the index chunks and embeds with, as TOML.
    #[getter]
    fn pipeline(&self, py: Python<'_>) -> PyResult<String> {
        self.with_engine(py, |e| Ok(e.index().config().pipeline.to_toml()))
    }

    /// Documents in the index.
    #[getter]
    fn documents(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_engine(py, |e| Ok(e.index().manifest().documents.len()))
    }

    /// Chunks in the index.
    #[getter]
    fn chunks(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_engine(py, |e| Ok(e.index().manifest().chunks()))
    }

    /// Ingests files, folders and glob patterns with the index's pipeline.
    #[pyo3(signature = (paths, *, progress=false, prune=false, file_timeout=60))]
    fn ingest(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        progress: bool,
        prune: bool,
        file_timeout: u64,
    ) -> PyResult<IngestReport> {
        let inputs: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let settings =
            IngestSettings { threads: self.threads, progress, prune, file_timeout, ..IngestSettings::default() };
        let cancel = AtomicBool::new(false);
        let work = || -> anyhow::Result<metarag_engine::Ingested> {
            let mut slot = self.engine.write().map_err(|_| anyhow::anyhow!("a poisoned lock"))?;
            let pipeline = match slot.take() {
                Some(e) => e.index().config().pipeline.clone(),
                None => anyhow::bail!("the index is closed"),
            };
            // The reader is closed while a writer holds the stores, then opened again.
            let result = RawIndex::create_or_open(&self.dir, &pipeline, &StoreConfig::Embedded)
                .map_err(anyhow::Error::from)
                .and_then(|mut writer| {
                    metarag_engine::ingest_inputs(&mut writer, &inputs, &self.opts, &settings, Some(&cancel))
                });
            match Engine::open(&self.dir, self.opts.clone()) {
                Ok(engine) => *slot = Some(engine),
                Err(e) if result.is_ok() => return Err(e.context("reopening the index after the ingest")),
                Err(_) => {}
            }
            result
        };
        // The ingest runs on its own thread while this one, the interpreter's, waits with the
        // GIL released and looks for signals: Ctrl-C stops starting files, what is in flight
        // is written and committed, then KeyboardInterrupt is raised (a rerun continues).
        let mut interrupted = None;
        let out = std::thread::scope(|scope| {
            let worker = scope.spawn(work);
            while !worker.is_finished() {
                py.detach(|| std::thread::sleep(Duration::from_millis(50)));
                if interrupted.is_none()
                    && let Err(e) = py.check_signals()
                {
                    cancel.store(true, Ordering::Relaxed);
                    interrupted = Some(e);
                }
            }
            worker.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the ingest thread panicked")))
        });
        let done = out.map_err(|e| failed(py, e, Some(&self.dir)))?;
        if let Some(e) = interrupted {
            return Err(e);
        }
        let json = serde_json::to_string(&done).map_err(|e| failed(py, e, Some(&self.dir)))?;
        let r = done.report;
        Ok(IngestReport {
            files: r.files,
            ingested: r.ingested,
            unchanged: r.unchanged,
            failed: r.failed.into_iter().map(|(p, e)| (p.display().to_string(), e)).collect(),
            pruned: r.pruned,
            chunks: r.chunks,
            recovered: r.recovered,
            skipped_binary: done.skipped_binary,
            seconds: r.seconds,
            json,
        })
    }

    /// Searches the index: `mode` is "hybrid" (BM25 + dense, fused), "bm25" or "dense".
    #[pyo3(signature = (query, k=5, *, mode="hybrid", path_prefix=None, kinds=None, candidates=20))]
    #[allow(clippy::too_many_arguments, reason = "a Python signature: keyword arguments with defaults")]
    fn search(
        &self,
        py: Python<'_>,
        query: String,
        k: usize,
        mode: &str,
        path_prefix: Option<String>,
        kinds: Option<Vec<String>>,
        candidates: usize,
    ) -> PyResult<Vec<Hit>> {
        let mode = match mode {
            "hybrid" => Mode::Hybrid,
            "bm25" => Mode::Bm25,
            "dense" => Mode::Dense,
            other => {
                return Err(raise(
                    py,
                    "SettingsError",
                    format!("unknown search mode {other:?}: expected hybrid, bm25 or dense"),
                    None,
                ));
            }
        };
        if query.trim().is_empty() || k == 0 || candidates == 0 {
            return Err(raise(py, "SettingsError", "the query must not be empty and k, candidates ≥ 1".into(), None));
        }
        let mut q = Query::new(query).k(k).mode(mode).candidates(candidates);
        if let Some(p) = path_prefix {
            q = q.path_prefix(p);
        }
        for kind in kinds.unwrap_or_default() {
            q = q.kind(kind);
        }
        let hits = self.with_engine(py, |e| e.search(&q))?;
        Ok(hits.into_iter().map(Hit::from).collect())
    }

    /// Answers a question from the index with citations.
    #[pyo3(signature = (question, *, samples=8, k=2, aggregate="rpc", extractive=true, seed=0))]
    #[allow(clippy::too_many_arguments, reason = "a Python signature: keyword arguments with defaults")]
    fn ask(
        &self,
        py: Python<'_>,
        question: String,
        samples: usize,
        k: usize,
        aggregate: &str,
        extractive: bool,
        seed: u64,
    ) -> PyResult<Answer> {
        let aggregate = aggregate.parse().map_err(|e| raise(py, "SettingsError", format!("aggregate: {e}"), None))?;
        let options = AskOptions { k, samples, aggregate, extractive, seed };
        let asked = self.with_engine(py, |e| e.ask(&question, &options))?;
        let json = serde_json::to_string(&asked).map_err(|e| failed(py, e, Some(&self.dir)))?;
        let citations = asked
            .answer
            .citations
            .iter()
            .map(|c| Citation {
                number: c.number,
                id: c.id.clone(),
                path: c.path.clone(),
                start: c.span.as_ref().map(|s| s.start),
                end: c.span.as_ref().map(|s| s.end),
            })
            .collect();
        Ok(Answer {
            question: asked.question,
            text: asked.answer.text,
            confidence: asked.answer.confidence,
            grounded: asked.answer.grounded,
            citations,
            retrieved: asked.retrieved,
            json,
        })
    }

    /// Cuts a text with the index's own pipeline, as ingest would.
    fn chunk(&self, py: Python<'_>, text: String) -> PyResult<Vec<Chunk>> {
        let doc = Document::from_text("text", text);
        let chunking = self.with_engine(py, |e| e.chunk(&doc))?;
        Ok(chunks_of(&doc, &chunking))
    }

    /// Releases the index (its stores' locks and the models); later calls raise.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            if let Ok(mut slot) = self.engine.write() {
                slot.take();
            }
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!("Index({:?})", self.dir.display().to_string())
    }
}

/// The extension module.
#[pymodule(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(chunk, m)?)?;
    m.add_class::<Index>()?;
    m.add_class::<Chunk>()?;
    m.add_class::<Hit>()?;
    m.add_class::<Answer>()?;
    m.add_class::<Citation>()?;
    m.add_class::<IngestReport>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

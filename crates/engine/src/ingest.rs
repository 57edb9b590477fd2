//! Ingest as the command line and the Python package run it: inputs (files, folders, glob
//! patterns) expanded, the pipeline's models loaded, documents chunked in parallel with a
//! progress bar, and the index written resumably.
//!
//! ```no_run
//! use metarag_engine::ingest::{IngestSettings, ingest_inputs, DEFAULT_PIPELINE};
//! use metarag_index::{Index, StoreConfig};
//!
//! let pipeline = toml::from_str(DEFAULT_PIPELINE)?;
//! let mut index = Index::create_or_open(std::path::Path::new("idx"), &pipeline, &StoreConfig::Embedded)?;
//! let opts = metarag_onnx::RuntimeOptions::default();
//! let done = ingest_inputs(&mut index, &["examples/corpus".into()], &opts, &IngestSettings::default(), None)?;
//! assert!(done.report.failed.is_empty());
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use metarag_core::load::{LoadOptions, is_probably_binary, quiet_pdf_panics};
use metarag_core::pipeline::Pipeline;
use metarag_index::{FileOutcome, Index, IngestObserver, IngestOptions, StoreConfig, ingest};
use metarag_onnx::{Models, RuntimeOptions};

/// The pipeline used when neither --pipeline nor an existing index says otherwise
/// (`pipelines/default.toml`).
pub const DEFAULT_PIPELINE: &str = include_str!("../../../pipelines/default.toml");

/// Walks the inputs: files as given, folders recursively (sorted, hidden entries skipped).
pub fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            out.push(dir.to_path_buf()); // reported when loading
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Expands the inputs: files as given, folders walked (sorted; hidden entries skipped; files
/// that look binary and have no document extension skipped), glob patterns matched.
/// Returns the files and the number of skipped binary files.
pub fn expand_inputs(inputs: &[String]) -> anyhow::Result<(Vec<PathBuf>, usize)> {
    fn hidden(p: &Path) -> bool {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
    }
    fn binary(p: &Path) -> bool {
        let known = p.extension().and_then(|e| e.to_str()).and_then(metarag_core::DocKind::from_extension).is_some();
        if known {
            return false;
        }
        let mut buf = vec![0u8; 8192];
        let n = std::fs::File::open(p).and_then(|mut f| std::io::Read::read(&mut f, &mut buf)).unwrap_or(0);
        n > 0 && is_probably_binary(&buf[..n]).is_some()
    }
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut walked = Vec::new();
    for input in inputs {
        if input.contains(['*', '?', '[']) && !Path::new(input).exists() {
            let matches = glob::glob(input).with_context(|| format!("{input}: invalid glob pattern"))?;
            let mut n = 0;
            for m in matches {
                let p = m.with_context(|| format!("{input}: cannot read a match"))?;
                n += 1;
                if p.components().any(|c| hidden(Path::new(c.as_os_str()))) {
                    continue;
                }
                if p.is_dir() {
                    walked.extend(collect_files(&[p]));
                } else {
                    walked.push(p);
                }
            }
            if n == 0 {
                anyhow::bail!("{input}: the pattern matches no file");
            }
        } else {
            let p = PathBuf::from(input);
            if p.is_dir() {
                walked.extend(collect_files(&[p]));
            } else {
                out.push(p); // named explicitly: loaded (and reported) whatever it is
            }
        }
    }
    for p in walked {
        if binary(&p) {
            skipped += 1;
        } else {
            out.push(p);
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(metarag_index::document_id(p)));
    Ok((out, skipped))
}

struct Bar<'a> {
    bar: ProgressBar,
    /// Set by someone else (the Python package on Ctrl-C) to stop starting files.
    cancel: Option<&'a std::sync::atomic::AtomicBool>,
    files: AtomicUsize,
    total: AtomicUsize,
    chunks: AtomicU64,
    tokens: AtomicU64,
    started: Mutex<Instant>,
}

impl IngestObserver for Bar<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn start(&self, files: usize, bytes: u64) {
        self.total.store(files, Ordering::Relaxed);
        self.bar.set_length(bytes.max(1));
        if let Ok(mut s) = self.started.lock() {
            *s = Instant::now();
        }
    }
    fn file(&self, path: &Path, bytes: u64, outcome: &FileOutcome) {
        let done = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let FileOutcome::Ingested { tokens, .. } = outcome {
            self.tokens.fetch_add(*tokens, Ordering::Relaxed);
        }
        if let FileOutcome::Failed { error } = outcome {
            self.bar.suspend(|| eprintln!("error: {error}"));
        }
        let secs = self.started.lock().map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0).max(1e-3);
        self.bar.inc(bytes);
        self.bar.set_message(format!(
            "{done}/{} files, {} chunks, {:.0} tok/s  {}",
            self.total.load(Ordering::Relaxed),
            self.chunks.load(Ordering::Relaxed),
            self.tokens.load(Ordering::Relaxed) as f64 / secs,
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
    }
    fn committed(&self, _docs: usize, chunks: usize) {
        self.chunks.fetch_add(chunks as u64, Ordering::Relaxed);
    }
}

/// The pipeline an ingest into `index_dir` uses: the `explicit` file, else the index's own
/// pipeline, else [`DEFAULT_PIPELINE`] for a new index.
pub fn resolve_pipeline(index_dir: &Path, explicit: Option<&Path>) -> anyhow::Result<Pipeline> {
    if let Some(p) = explicit {
        return Ok(Pipeline::from_file(p)?);
    }
    if index_dir.join(metarag_index::CONFIG_FILE).is_file() {
        return Ok(Index::open(index_dir)?.config().pipeline.clone());
    }
    toml::from_str(DEFAULT_PIPELINE).context("the built-in default pipeline")
}

/// Ingests `files` into the embedded index at `index_dir` with `pipeline`, after removing the
/// documents that are not among `corpus` (a superset of `files`): `bench`'s corpus index, where
/// `files` are the documents of the questions asked and `corpus` the dataset's. The same corpus
/// reached by another path (the models directory found from another working directory) thus
/// replaces its documents instead of doubling them, and a `--limit` run keeps the others.
pub fn ingest_files(
    files: &[PathBuf],
    corpus: &[PathBuf],
    index_dir: &Path,
    pipeline: &Pipeline,
    opts: &RuntimeOptions,
    threads: usize,
    quiet: bool,
) -> anyhow::Result<metarag_index::IngestReport> {
    let job = IngestJob::default();
    let mut index = Index::create_or_open(index_dir, pipeline, &job.store)?;
    let keep: HashSet<String> = corpus.iter().chain(files).map(|f| metarag_index::document_id(f)).collect();
    let other: Vec<String> = index.manifest().documents.keys().filter(|d| !keep.contains(*d)).cloned().collect();
    index.remove_documents(&other).with_context(|| {
        format!("{}: removing {} documents of another corpus path", index_dir.display(), other.len())
    })?;
    let mut report = run_ingest(&mut index, files, pipeline, opts, threads, quiet, &job)?;
    report.pruned += other.len();
    Ok(report)
}

/// How [`ingest_inputs`] runs: `metarag ingest`'s options for an already opened index.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Threads for ONNX Runtime and documents in parallel.
    pub threads: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Remove the documents whose files are not among the inputs any more.
    pub prune: bool,
    /// Give up on a PDF that makes no progress for this many seconds.
    pub file_timeout: u64,
    /// Most documents per committed batch.
    pub batch_docs: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        // The job's defaults, so the limits are set in one place.
        let job = IngestJob::default();
        IngestSettings {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: false,
            prune: job.prune,
            file_timeout: job.file_timeout,
            batch_docs: job.batch_docs,
        }
    }
}

/// What [`ingest_inputs`] did.
#[derive(Debug, serde::Serialize)]
pub struct Ingested {
    /// The ingest report: files, chunks, failures (each with its path), per-stage times.
    pub report: metarag_index::IngestReport,
    /// Files in folders skipped because they look binary.
    pub skipped_binary: usize,
}

/// Ingests `inputs` (files, folders, glob patterns, as `metarag ingest` takes them) into
/// `index` with the index's own pipeline. A file that fails is reported in the report with
/// its path and the others are ingested; an interrupted run is recovered by the next one.
pub fn ingest_inputs(
    index: &mut Index,
    inputs: &[String],
    opts: &RuntimeOptions,
    settings: &IngestSettings,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Ingested> {
    quiet_pdf_panics();
    let (files, skipped_binary) = expand_inputs(inputs)?;
    let pipeline = index.config().pipeline.clone();
    let job = IngestJob {
        cancel,
        file_timeout: settings.file_timeout,
        batch_docs: settings.batch_docs,
        prune: settings.prune,
        ..IngestJob::default()
    };
    let report = run_ingest(index, &files, &pipeline, opts, settings.threads, !settings.progress, &job)?;
    Ok(Ingested { report, skipped_binary })
}

/// How one ingest runs (`metarag ingest`'s options); [`Default`]: the embedded store, 60 s
/// per PDF, 32 documents per batch.
#[derive(Debug)]
pub struct IngestJob<'a> {
    /// Stop starting files once set (the Python package sets it on Ctrl-C).
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
    /// Where the vectors go.
    pub store: StoreConfig,
    /// Give up on a PDF that makes no progress for this many seconds.
    pub file_timeout: u64,
    /// Most documents per committed batch.
    pub batch_docs: usize,
    /// Remove the documents whose files are not among the inputs any more.
    pub prune: bool,
    /// LM sessions (documents chunked at once); default: one per thread for margin chunking,
    /// else one.
    pub lm_sessions: Option<usize>,
    /// Ingest only this part of the inputs (several workers, one server).
    pub shard: Option<metarag_index::ingest::Shard>,
}

impl Default for IngestJob<'_> {
    fn default() -> Self {
        IngestJob {
            cancel: None,
            store: StoreConfig::Embedded,
            file_timeout: 60,
            batch_docs: 32,
            prune: false,
            lm_sessions: None,
            shard: None,
        }
    }
}

/// Ingests `files` into the opened `index` with `pipeline` on `threads` threads, with a
/// progress bar on stderr unless `quiet`. A file that fails is reported in the report with its
/// path and the others are ingested.
pub fn run_ingest(
    index: &mut Index,
    files: &[PathBuf],
    pipeline: &Pipeline,
    opts: &RuntimeOptions,
    threads: usize,
    quiet: bool,
    job: &IngestJob<'_>,
) -> anyhow::Result<metarag_index::IngestReport> {
    // Documents are chunked `threads` at a time: one LM session each.
    // Margin judging gains from a session per document; PPL scoring does not (see chunk).
    let margin = matches!(pipeline.chunker, metarag_core::pipeline::ChunkerConfig::Margin { .. });
    let sessions = job.lm_sessions.unwrap_or(if margin { files.len() } else { 1 }).clamp(1, threads.max(1));
    let models = Models::load(pipeline, opts, true, true, sessions)?;
    let load = LoadOptions { pdf_timeout: Duration::from_secs(job.file_timeout), ..LoadOptions::default() };
    let built = metarag_index::BuiltStages::build(pipeline, &models, load)?;
    let stages = built.stages();
    let options =
        IngestOptions { batch_docs: job.batch_docs, prune: job.prune, shard: job.shard, ..IngestOptions::default() };
    let bar = ProgressBar::new(1);
    if quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {binary_bytes}/{binary_total_bytes} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let observer = Bar {
        bar,
        cancel: job.cancel,
        files: AtomicUsize::new(0),
        total: AtomicUsize::new(0),
        chunks: AtomicU64::new(0),
        tokens: AtomicU64::new(0),
        started: Mutex::new(Instant::now()),
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("starting the thread pool")?;
    let report = pool.install(|| ingest(index, files, &stages, &options, &observer))?;
    observer.bar.finish_and_clear();
    Ok(report)
}

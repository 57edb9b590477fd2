//! `metarag ingest`: files and folders into an index (lexical + vectors), resumably.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use metarag_core::load::{LoadOptions, is_probably_binary, quiet_pdf_panics};
use metarag_core::pipeline::Pipeline;
use metarag_index::{FileOutcome, Index, IngestObserver, IngestOptions, StoreConfig, ingest};
use metarag_onnx::RuntimeOptions;

use metarag_onnx::Models;

/// The pipeline used when neither --pipeline nor an existing index says otherwise.
pub const DEFAULT_PIPELINE: &str = include_str!("../../pipelines/default.toml");

/// Arguments of `metarag ingest`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
EXAMPLES:
  metarag ingest examples/corpus --index idx          # embedded index in ./idx, no server
  metarag ingest 'docs/**/*.md' --index idx --prune   # a glob; drop files that are gone
  metarag ingest docs --index idx --pipeline pipelines/semantic.toml
  metarag ingest docs --index idx --qdrant-url http://localhost:6334
  metarag ingest docs --index idx2 --qdrant-url http://qdrant:6334 --shard 2/2   # a second worker

Re-running the same command is cheap: unchanged files (same bytes, same pipeline) are skipped
and changed files replace their old chunks. An interrupted ingest (Ctrl-C, kill -9, power cut
after the last commit) is recovered the next time: the documents of the batch in flight are
removed from both stores and written again, so the index ends as if never interrupted.

Exit status: 0 when every input was ingested, 2 when some files failed (each is reported with
its path; the others are ingested), 1 on a fatal error.")]
pub struct IngestArgs {
    /// Files, folders (walked recursively; hidden entries skipped) or quoted glob patterns.
    #[arg(required = true, value_name = "PATHS")]
    paths: Vec<String>,
    /// Index directory (created if missing).
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// Pipeline file (TOML, see pipelines/). Default: the index's own pipeline, or
    /// pipelines/default.toml for a new index.
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// Store vectors in a Qdrant server or cluster (gRPC URL, e.g. http://localhost:6334)
    /// instead of the embedded engine. The server then does BM25 (sparse vectors) and fusion.
    #[arg(long, value_name = "URL")]
    qdrant_url: Option<String>,
    /// Collection name on the Qdrant server.
    #[arg(long, default_value = "metarag", requires = "qdrant_url")]
    collection: String,
    /// Remove from the index the documents whose files are not among the inputs any more.
    #[arg(long)]
    prune: bool,
    /// Check at the end that both stores hold exactly the chunks the manifest lists.
    #[arg(long)]
    verify: bool,
    /// Ingest only part PART of COUNT of the documents (by a hash of their paths; --prune
    /// only among them): run `--shard 1/2` and `--shard 2/2` in two processes or on two machines
    /// against one --qdrant-url collection to split the work; together they write what one
    /// ingest would.
    #[arg(long, value_name = "PART/COUNT")]
    shard: Option<metarag_index::ingest::Shard>,
    /// Print the ingest report (per-stage times, failures) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Threads for ONNX Runtime and for documents in parallel (default: all cores). With
    /// several files margin chunking runs one LM session per document in flight, the threads split
    /// between them (~0.6 GB more memory per extra session).
    #[arg(long)]
    threads: Option<usize>,
    /// LM sessions (PPL / margin chunking); default: margin one per document in flight, up
    /// to --threads; PPL one. 1 keeps memory lowest.
    #[arg(long, value_name = "N")]
    lm_sessions: Option<usize>,
    /// Give up on a PDF that makes no progress (parsing it, or one page) for this many seconds
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    file_timeout: u64,
    /// Most documents per committed batch.
    #[arg(long, default_value_t = 32, value_name = "N")]
    batch_docs: usize,
    /// Models directory (default: $METARAG_MODELS, else models/ of the checkout).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
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
                    walked.extend(crate::chunk::collect_files(&[p]));
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
                walked.extend(crate::chunk::collect_files(&[p]));
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

fn resolve_pipeline(args: &IngestArgs) -> anyhow::Result<Pipeline> {
    if let Some(p) = &args.pipeline {
        return Ok(Pipeline::from_file(p)?);
    }
    if args.index.join(metarag_index::CONFIG_FILE).is_file() {
        return Ok(Index::open(&args.index)?.config().pipeline.clone());
    }
    toml::from_str(DEFAULT_PIPELINE).context("the built-in default pipeline")
}

/// Ingests `files` into the embedded-or-server index at `index_dir` with `pipeline`; shared by
/// `ingest` and `bench`.
pub fn ingest_files(
    files: &[PathBuf],
    index_dir: &Path,
    pipeline: &Pipeline,
    opts: &RuntimeOptions,
    threads: usize,
    quiet: bool,
) -> anyhow::Result<metarag_index::IngestReport> {
    let job = Job {
        cancel: None,
        store: StoreConfig::Embedded,
        file_timeout: 60,
        batch_docs: 32,
        prune: false,
        lm_sessions: None,
        shard: None,
    };
    let mut index = Index::create_or_open(index_dir, pipeline, &job.store)?;
    run_ingest(&mut index, files, pipeline, opts, threads, quiet, &job)
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
        IngestSettings {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: false,
            prune: false,
            file_timeout: 60,
            batch_docs: 32,
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
    let job = Job {
        cancel,
        store: StoreConfig::Embedded,
        file_timeout: settings.file_timeout,
        batch_docs: settings.batch_docs,
        prune: settings.prune,
        lm_sessions: None,
        shard: None,
    };
    let report = run_ingest(index, &files, &pipeline, opts, settings.threads, !settings.progress, &job)?;
    Ok(Ingested { report, skipped_binary })
}

struct Job<'a> {
    /// Stop starting files once set (the Python package sets it on Ctrl-C).
    cancel: Option<&'a std::sync::atomic::AtomicBool>,
    store: StoreConfig,
    file_timeout: u64,
    batch_docs: usize,
    prune: bool,
    lm_sessions: Option<usize>,
    shard: Option<metarag_index::ingest::Shard>,
}

fn run_ingest(
    index: &mut Index,
    files: &[PathBuf],
    pipeline: &Pipeline,
    opts: &RuntimeOptions,
    threads: usize,
    quiet: bool,
    job: &Job<'_>,
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

pub fn run(args: &IngestArgs) -> anyhow::Result<ExitCode> {
    quiet_pdf_panics();
    let (threads, opts) = metarag_onnx::runtime(args.threads, args.models.as_deref());
    let pipeline = resolve_pipeline(args)?;
    let store = match &args.qdrant_url {
        Some(url) => StoreConfig::Server { url: url.clone(), collection: args.collection.clone() },
        None => StoreConfig::Embedded,
    };
    let (files, skipped_binary) = expand_inputs(&args.paths)?;
    let job = Job {
        cancel: None,
        store,
        file_timeout: args.file_timeout,
        batch_docs: args.batch_docs,
        prune: args.prune,
        lm_sessions: args.lm_sessions,
        shard: args.shard,
    };
    let recovered = metarag_index::manifest::Manifest::load(&args.index).map_or(0, |m| m.pending.len());
    let mut index = Index::create_or_open(&args.index, &pipeline, &job.store)?;
    let report = run_ingest(&mut index, &files, &pipeline, &opts, threads, args.quiet, &job)?;
    let verified = if args.verify { Some(index.verify()?) } else { None };

    let m = index.manifest();
    if args.json {
        let v = serde_json::json!({
            "report": report,
            "recovered": recovered,
            "skipped_binary": skipped_binary,
            "index": { "dir": args.index, "documents": m.documents.len(), "chunks": m.chunks(), "verified": verified },
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    }
    if recovered > 0 {
        eprintln!("recovered an interrupted ingest: {recovered} documents of the unfinished batch were written again");
    }
    if skipped_binary > 0 {
        eprintln!("skipped {skipped_binary} binary files found in folders");
    }
    if let Some(s) = args.shard {
        eprintln!("shard {}/{}: {} files of the inputs belong to other parts", s.part, s.of, report.other_shards);
    }
    eprintln!(
        "ingested {} of {} files ({} chunks), {} unchanged, {} failed, {} pruned in {:.1} s; {}: {} documents, {} chunks{}",
        report.ingested,
        report.files,
        report.chunks,
        report.unchanged,
        report.failed.len(),
        report.pruned,
        report.seconds,
        args.index.display(),
        m.documents.len(),
        m.chunks(),
        if verified.is_some() { " (verified)" } else { "" }
    );
    Ok(if report.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

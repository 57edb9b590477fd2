//! `metarag ingest`: files and folders into an index (lexical + vectors), resumably.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use metarag_core::load::quiet_pdf_panics;
use metarag_engine::ingest::{IngestJob, expand_inputs, resolve_pipeline, run_ingest};
use metarag_index::{Index, StoreConfig};

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

pub fn run(args: &IngestArgs) -> anyhow::Result<ExitCode> {
    quiet_pdf_panics();
    let (threads, opts) = metarag_onnx::runtime(args.threads, args.models.as_deref());
    let pipeline = resolve_pipeline(&args.index, args.pipeline.as_deref())?;
    let store = match &args.qdrant_url {
        Some(url) => StoreConfig::Server { url: url.clone(), collection: args.collection.clone() },
        None => StoreConfig::Embedded,
    };
    let (files, skipped_binary) = expand_inputs(&args.paths)?;
    let job = IngestJob {
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

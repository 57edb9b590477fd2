//! `metarag bench`: retrieval quality of chunkers × retrieval modes on a QA dataset.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use metarag_core::model::SentenceEmbedder;
use metarag_core::pipeline::Pipeline;
use metarag_eval::retrieval::{Judged, RetrievalMetrics, is_relevant};
use metarag_eval::{Dataset, Question};
use metarag_index::{Index, Mode, Query};
use metarag_onnx::{Embedder, RuntimeOptions};
use serde::Serialize;

/// Arguments of `metarag bench`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
EXAMPLES:
  metarag bench --dataset squad-dev --out runs/squad             # PPL chunks, all three modes
  metarag bench --dataset squad-dev --chunkers ppl,fixed --limit 500 --out runs/quick
  metarag bench --dataset my-data/ --retrieval hybrid --out runs/mine

`--dataset squad-dev` is SQuAD v1.1 dev (48 Wikipedia articles, each ONE document; 10,565
questions), built by `python3 onnx/squad.py` into the models directory (run automatically when
missing). A directory PATH holds corpus/ and questions.jsonl (format: metarag-eval's docs).

Each chunker's pipeline is pipelines/bench-<name>.toml. Its index is built once under
OUT/index-<name>-<fingerprint>/ and reused by later runs (ingest skips unchanged files).
A retrieved chunk is relevant when its byte span covers a gold answer span; reported per mode:
recall@1..10 and MRR@10. With --limit N only the first N questions are asked and only their
documents are indexed.")]
pub struct BenchArgs {
    /// `squad-dev` or a dataset directory.
    #[arg(long, default_value = "squad-dev")]
    dataset: String,
    /// Ask only the first N questions (and index only their documents).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Chunkers to compare (each reads pipelines/bench-<name>.toml).
    #[arg(long, value_delimiter = ',', default_value = "ppl")]
    chunkers: Vec<String>,
    /// Retrieval modes.
    #[arg(long, value_delimiter = ',', default_value = "bm25,dense,hybrid")]
    retrieval: Vec<Mode>,
    /// RRF constant k for hybrid retrieval.
    #[arg(long, default_value_t = 60.0)]
    rrf_k: f32,
    /// RRF weights "BM25,DENSE" for hybrid retrieval (default 1,1).
    #[arg(long, value_name = "W1,W2", value_parser = crate::search::parse_weights)]
    weights: Option<[f32; 2]>,
    /// Output directory (report.json, report.md, cached indexes).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Models directory (default: $METARAG_MODELS, else models/ of the checkout).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// No progress bars.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Serialize)]
struct ChunkerRun {
    chunker: String,
    pipeline: Pipeline,
    index: PathBuf,
    documents: usize,
    chunks: u64,
    mean_chunk_words: f64,
    ingest_seconds: f64,
    chunking_seconds: f64,
    modes: Vec<ModeRun>,
}

#[derive(Debug, Serialize)]
struct ModeRun {
    mode: Mode,
    metrics: RetrievalMetrics,
    search_seconds: f64,
}

fn dataset_dir(name: &str, opts: &RuntimeOptions) -> anyhow::Result<PathBuf> {
    if name != "squad-dev" {
        return Ok(PathBuf::from(name));
    }
    let models = opts.models_dir.clone();
    let dir = models.join("datasets/squad-dev");
    if !dir.join("questions.jsonl").is_file() {
        eprintln!("building the SQuAD dev corpus (python3 onnx/squad.py) ...");
        let script = crate::setup::checkout().join("onnx/squad.py");
        let st = std::process::Command::new("python3")
            .arg(&script)
            .arg("--models")
            .arg(&models)
            .status()
            .with_context(|| format!("running python3 {}", script.display()))?;
        if !st.success() {
            bail!("python3 {} failed ({st})", script.display());
        }
    }
    Ok(dir)
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let (threads, opts) = crate::pipeline::runtime(args.threads, args.models.as_deref());
    let dir = dataset_dir(&args.dataset, &opts)?;
    let mut data = Dataset::load(&dir)?;
    if let Some(n) = args.limit {
        data.questions.truncate(n);
    }
    let docs: BTreeSet<String> = data.questions.iter().map(|q| q.doc.clone()).collect();
    let files: Vec<PathBuf> = docs.iter().map(|d| data.corpus.join(d)).collect();
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create", args.out.display()))?;
    eprintln!("{}: {} questions over {} documents", dir.display(), data.questions.len(), files.len());

    // Questions are embedded once and shared by every chunker and mode.
    let embedder = Arc::new(Embedder::load(&opts)?);
    let t = Instant::now();
    let texts: Vec<&str> = data.questions.iter().map(|q| q.question.as_str()).collect();
    let mut qvecs = Vec::with_capacity(texts.len());
    for b in texts.chunks(64) {
        qvecs.extend(embedder.embed(b)?);
    }
    let embed_seconds = t.elapsed().as_secs_f64();

    let mut runs = Vec::new();
    for name in &args.chunkers {
        let pfile = crate::setup::checkout().join(format!("pipelines/bench-{name}.toml"));
        let pipeline = Pipeline::from_file(&pfile)
            .with_context(|| format!("chunker {name:?}: no pipeline (expected {})", pfile.display()))?;
        let fp = metarag_index::IndexConfig {
            format: 1,
            store: metarag_index::StoreConfig::Embedded,
            pipeline: pipeline.clone(),
        }
        .pipeline_fingerprint();
        let index_dir = args.out.join(format!("index-{name}-{fp}"));
        let t = Instant::now();
        let report = crate::ingest::ingest_files(&files, &index_dir, &pipeline, &opts, threads, args.quiet)?;
        let ingest_seconds = t.elapsed().as_secs_f64();
        if !report.failed.is_empty() {
            bail!("{} documents failed to ingest: {:?}", report.failed.len(), report.failed);
        }
        let index = Index::open(&index_dir)?;
        let chunks = index.manifest().chunks();
        let ids = index.vectors().ids()?;
        let words: usize = index.vectors().get(&ids)?.iter().map(|r| r.text.split_whitespace().count()).sum();
        let mut modes = Vec::new();
        for &mode in &args.retrieval {
            let t = Instant::now();
            let mut judged = Vec::with_capacity(data.questions.len());
            for (q, v) in data.questions.iter().zip(&qvecs) {
                let query = Query::new(q.question.clone()).k(10).mode(mode).fusion(args.rrf_k, args.weights);
                let hits = index.search_with_vector(&query, Some(v))?;
                judged.push(judge(q, &hits));
            }
            let metrics = RetrievalMetrics::from_runs(&judged);
            eprintln!(
                "{name:>9} {mode:?}: recall@5 {:.3}  MRR@10 {:.3}  ({} questions)",
                metrics.recall_at(5),
                metrics.mrr10,
                metrics.questions
            );
            modes.push(ModeRun { mode, metrics, search_seconds: t.elapsed().as_secs_f64() });
        }
        runs.push(ChunkerRun {
            chunker: name.clone(),
            pipeline,
            index: index_dir,
            documents: index.manifest().documents.len(),
            chunks,
            mean_chunk_words: words as f64 / chunks.max(1) as f64,
            ingest_seconds,
            chunking_seconds: report.stages.chunk.seconds,
            modes,
        });
    }
    let report = serde_json::json!({
        "dataset": dir, "questions": data.questions.len(), "documents": files.len(),
        "question_embedding_seconds": embed_seconds, "rrf_k": args.rrf_k, "rrf_weights": args.weights,
        "runs": runs,
    });
    let json_path = args.out.join("report.json");
    metarag_index::manifest::write_atomic(&json_path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    let md = markdown(&runs, data.questions.len(), &dir);
    metarag_index::manifest::write_atomic(&args.out.join("report.md"), md.as_bytes())?;
    print!("{md}");
    eprintln!("wrote {} and report.md", json_path.display());
    Ok(ExitCode::SUCCESS)
}

fn judge(q: &Question, hits: &[metarag_index::SearchHit]) -> Judged {
    Judged::new(
        hits.iter()
            .map(|h| {
                let file = Path::new(&h.record.path).file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
                is_relevant(q, &file, h.record.start, h.record.end)
            })
            .collect(),
    )
}

fn markdown(runs: &[ChunkerRun], questions: usize, dir: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Retrieval on {} ({questions} questions)\n", dir.display());
    let _ =
        writeln!(s, "| chunker | chunks | mean words | chunking s | mode | recall@1 | recall@5 | recall@10 | MRR@10 |");
    let _ = writeln!(s, "|---|---:|---:|---:|---|---:|---:|---:|---:|");
    for r in runs {
        for m in &r.modes {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:?} | {:.3} | {:.3} | {:.3} | {:.3} |",
                r.chunker,
                r.chunks,
                r.mean_chunk_words,
                r.chunking_seconds,
                m.mode,
                m.metrics.recall_at(1),
                m.metrics.recall_at(5),
                m.metrics.recall_at(10),
                m.metrics.mrr10
            );
        }
    }
    s
}

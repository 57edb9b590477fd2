//! `metarag search`: query an index by BM25, dense vectors, or both fused.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use metarag_index::{Mode, Query, SearchHit};
use metarag_onnx::RuntimeOptions;

/// Retrieval mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Lexical BM25 (tantivy, English stemming).
    Bm25,
    /// Dense cosine similarity of all-MiniLM-L6-v2 embeddings.
    Dense,
    /// Both, fused by reciprocal rank fusion.
    Hybrid,
}

/// Arguments of `metarag search`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
EXAMPLES:
  metarag search --index idx 'who is Ishmael'
  metarag search --index idx 'release codename' --mode bm25 -k 3
  metarag search --index idx 'price of Louisiana' --path examples/corpus --kind text --json

Hybrid takes the best --candidates chunks of each retriever and fuses them with reciprocal rank
fusion: score = Σ w / (k + rank), k = --rrf-k (5). Scores are BM25 scores in bm25 mode, cosine
similarities in dense mode and RRF scores in hybrid mode.")]
pub struct SearchArgs {
    /// Index directory (made by `metarag ingest`).
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// The query.
    #[arg(required = true, value_name = "QUERY")]
    query: Vec<String>,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Retrieval mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Hybrid)]
    mode: ModeArg,
    /// Only chunks of files under this path (whole components: `docs` matches `docs/a.md`).
    #[arg(long, value_name = "PREFIX")]
    path: Option<String>,
    /// Only chunks of this document kind (text, markdown, html, pdf); repeatable.
    #[arg(long, value_name = "KIND")]
    kind: Vec<String>,
    /// Candidates per retriever before fusion (hybrid).
    #[arg(long, default_value_t = metarag_index::DEFAULT_CANDIDATES)]
    candidates: usize,
    /// RRF constant k (small: a retriever's first hits count most; the paper's 60 measured
    /// worse on SQuAD-style QA, see `metarag_core::fusion::Rrf`).
    #[arg(long, default_value_t = metarag_core::fusion::Rrf::default().k)]
    rrf_k: f32,
    /// RRF weights "BM25,DENSE" (default 1,1).
    #[arg(long, value_name = "W1,W2", value_parser = metarag_engine::bench::parse_weights)]
    weights: Option<[f32; 2]>,
    /// JSON output (one array of hits).
    #[arg(long)]
    json: bool,
    /// Threads for the query embedder.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Models directory (default: $METARAG_MODELS, else models/ of the checkout).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Bm25 => Mode::Bm25,
            ModeArg::Dense => Mode::Dense,
            ModeArg::Hybrid => Mode::Hybrid,
        }
    }
}

/// A short excerpt of `text` around the first query word found in it (whitespace collapsed).
pub fn snippet(text: &str, query: &str, width: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let lower = flat.to_lowercase();
    let at = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .filter_map(|w| lower.find(&w.to_lowercase()))
        .min()
        .unwrap_or(0);
    let mut start = at.saturating_sub(width / 3);
    while !flat.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + width).min(flat.len());
    while !flat.is_char_boundary(end) {
        end += 1;
    }
    format!("{}{}{}", if start > 0 { "…" } else { "" }, &flat[start..end], if end < flat.len() { "…" } else { "" })
}

pub fn run(args: &SearchArgs) -> anyhow::Result<ExitCode> {
    let text = args.query.join(" ");
    let mode = Mode::from(args.mode);
    let mut opts = RuntimeOptions::default().with_threads(args.threads.max(1));
    if let Some(m) = &args.models {
        opts = opts.with_models_dir(m);
    }
    let index = metarag_engine::open_index(&args.index, mode, &opts)?;
    let mut q = Query::new(text.clone())
        .k(args.k)
        .mode(mode)
        .candidates(args.candidates)
        .fusion(args.rrf_k, args.weights.map(metarag_index::HybridWeights::from));
    if let Some(p) = &args.path {
        q = q.path_prefix(p.clone());
    }
    for k in &args.kind {
        q = q.kind(k.clone());
    }
    let hits = index.search(&q)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&hits)?)?;
    } else {
        print_hits(&hits, &text)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_hits(hits: &[SearchHit], query: &str) -> std::io::Result<()> {
    if hits.is_empty() {
        outln!("no results")?;
    }
    for (i, h) in hits.iter().enumerate() {
        let ranks = match (h.bm25_rank, h.dense_rank) {
            (Some(b), Some(d)) => format!("  (bm25 #{b}, dense #{d})"),
            (Some(b), None) => format!("  (bm25 #{b})"),
            (None, Some(d)) => format!("  (dense #{d})"),
            (None, None) => String::new(),
        };
        outln!(
            "{:>2}. {:.4}  {} #{} [{}..{}]{ranks}\n    {}",
            i + 1,
            h.score,
            h.record.path,
            h.record.chunk,
            h.record.start,
            h.record.end,
            snippet(&h.record.text, query, 200)
        )?;
    }
    Ok(())
}

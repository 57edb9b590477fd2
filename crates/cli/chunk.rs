//! `metarag chunk`: documents in, chunks out (JSONL or text).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use metarag_core::chunk::{
    BoundaryRule, Chars, ChunkSizer, Chunked, Chunker, FixedChunker, MarginChunker, MarginConfig, PplChunker,
    PplConfig, SemanticChunker, SemanticConfig, SentenceChunker, TokenSizer, Words, merge,
};
use metarag_core::load::{LoadOptions, load_path, quiet_pdf_panics};
use metarag_core::split::{RuleSplitter, SentenceSplitter};
use metarag_core::{Chunk, Document};
use metarag_onnx::{CausalLm, Embedder, JudgeConfig, LmConfig, LmMarginJudge, RuntimeOptions, TokenizerFile};
use rayon::prelude::*;
use serde::Serialize;

/// How to chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Perplexity minima of the causal LM (Meta-Chunking PPL).
    Ppl,
    /// Margin sampling: the instruction model judges "split" vs "keep" per sentence.
    Margin,
    /// Embedding-similarity breakpoints (percentile threshold, buffer 1).
    Semantic,
    /// One chunk per sentence.
    Sentence,
    /// Fixed windows of --size tokens.
    Fixed,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per chunk.
    Jsonl,
    /// Human-readable blocks.
    Text,
}

/// Unit of --merge-to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Unit {
    /// Whitespace-separated words (the reference's unit for English).
    Words,
    /// SmolLM2 tokens.
    Tokens,
    /// Non-whitespace characters (the reference's unit for Chinese).
    Chars,
}

/// PPL boundary rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Rule {
    /// Local minimum with EITHER neighbour at least θ higher (reference code).
    Either,
    /// Both neighbours more than θ higher (paper's formula).
    Both,
}

/// Arguments of `metarag chunk`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
EXAMPLES:
  metarag chunk examples/                         # PPL meta-chunks as JSONL
  metarag chunk report.pdf --merge-to 200         # then merge up to 200 words
  metarag chunk notes.md --method margin --format text
  metarag chunk a.txt --method semantic --scores  # with per-sentence scores

Exit status: 0 when every input was chunked, 2 when some inputs failed (each is reported on
stderr with its path; the others are still chunked), 1 on a fatal error.")]
pub struct ChunkArgs {
    /// Files or folders to chunk (folders are walked; hidden files are skipped).
    #[arg(required = true, value_name = "PATHS")]
    paths: Vec<PathBuf>,
    /// Chunking method.
    #[arg(long, value_enum, default_value_t = Method::Ppl)]
    method: Method,
    /// θ: PPL minimum depth in nats (default 0), or the margin method's starting threshold
    /// (default 0).
    #[arg(long, value_name = "θ", allow_hyphen_values = true)]
    threshold: Option<f32>,
    /// PPL boundary rule.
    #[arg(long, value_enum, default_value_t = Rule::Either)]
    rule: Rule,
    /// PPL: adapt θ to the smallest recorded drop once 100 minima exist.
    #[arg(long)]
    adaptive: bool,
    /// PPL: repeat each boundary sentence at the start of the next chunk.
    #[arg(long)]
    overlap: bool,
    /// Merge consecutive chunks up to this size (see --merge-unit).
    #[arg(long, value_name = "N")]
    merge_to: Option<usize>,
    /// Unit of --merge-to.
    #[arg(long, value_enum, default_value_t = Unit::Words)]
    merge_unit: Unit,
    /// Tokens per chunk for --method fixed.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Breakpoint percentile for --method semantic.
    #[arg(long, default_value_t = 95.0)]
    percentile: f32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Include per-sentence scores (NLL, margin or distance) with each chunk.
    #[arg(long)]
    scores: bool,
    /// Write to this file instead of stdout (written to a temporary file, then renamed).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Threads for ONNX Runtime and for documents in parallel (default: all cores). With
    /// several files margin chunking runs one LM session per document in flight, the threads split
    /// between them (~0.6 GB more memory per extra session).
    #[arg(long)]
    threads: Option<usize>,
    /// LM sessions (PPL / margin); default: margin one per document in flight, up to
    /// --threads; PPL one. 1 keeps memory lowest.
    #[arg(long, value_name = "N")]
    lm_sessions: Option<usize>,
    /// Tokens per forward pass when scoring.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Most tokens kept in the KV cache: the document's first 4 (attention sinks) and the
    /// most recent ones. Each sentence is conditioned on at least max-context − window
    /// tokens before it. Larger is closer to "everything before it" and slower (1024: ~15%).
    #[arg(long, default_value_t = 512)]
    max_context: usize,
    /// Give up on a PDF that makes no progress (parsing it, or one page) for this many seconds
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    file_timeout: u64,
    /// Models directory (default: $METARAG_MODELS, else models/ of the checkout).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

/// One output record.
#[derive(Debug, Serialize)]
struct Record<'a> {
    doc: &'a str,
    chunk: usize,
    start: usize,
    end: usize,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sentences: Option<Vec<SentenceScore>>,
}

#[derive(Debug, Serialize)]
struct SentenceScore {
    start: usize,
    end: usize,
    score: Option<f32>,
}

/// The models a method needs, loaded once.
struct Models {
    lm: Option<Arc<CausalLm>>,
    embedder: Option<Arc<Embedder>>,
    tokenizer: Option<Arc<TokenizerFile>>,
}

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

/// The models `args.method` needs; the LM gets `lm_sessions` sessions (one per document
/// chunked at once).
fn load_models(args: &ChunkArgs, opts: &RuntimeOptions, lm_sessions: usize) -> anyhow::Result<Models> {
    let need_lm = matches!(args.method, Method::Ppl | Method::Margin);
    let need_tok = args.method == Method::Fixed || (args.merge_to.is_some() && args.merge_unit == Unit::Tokens);
    let lm = if need_lm {
        let cfg = LmConfig { window: args.window, max_context: args.max_context, ..LmConfig::default() };
        let lm = CausalLm::load(opts, cfg).and_then(|lm| lm.with_sessions(lm_sessions));
        Some(Arc::new(lm.context("loading the causal LM")?))
    } else {
        None
    };
    let embedder = if args.method == Method::Semantic {
        Some(Arc::new(Embedder::load(opts).context("loading the embedder")?))
    } else {
        None
    };
    let tokenizer =
        if need_tok { Some(Arc::new(TokenizerFile::smollm2(opts).context("loading the tokenizer")?)) } else { None };
    Ok(Models { lm, embedder, tokenizer })
}

/// Chunks one document with the method of `args`.
fn chunk_document(
    args: &ChunkArgs,
    models: &Models,
    doc: &Document,
    sentences: &[std::ops::Range<usize>],
) -> metarag_core::Result<Chunked> {
    let missing = || metarag_core::Error::Config("model not loaded".into());
    match args.method {
        Method::Ppl => {
            let lm = models.lm.as_deref().ok_or_else(missing)?;
            let cfg = PplConfig {
                threshold: args.threshold.unwrap_or(0.0),
                rule: match args.rule {
                    Rule::Either => BoundaryRule::Either,
                    Rule::Both => BoundaryRule::Both,
                },
                adaptive: args.adaptive,
                overlap: args.overlap,
            };
            PplChunker::new(lm, cfg).chunk(doc, sentences)
        }
        Method::Margin => {
            let lm = models.lm.as_deref().ok_or_else(missing)?;
            let judge = LmMarginJudge::new(lm, JudgeConfig::default())?;
            let cfg = MarginConfig { threshold: args.threshold.unwrap_or(0.0), ..MarginConfig::default() };
            MarginChunker::new(judge, cfg).chunk(doc, sentences)
        }
        Method::Semantic => {
            let e = models.embedder.as_deref().ok_or_else(missing)?;
            let cfg = SemanticConfig { percentile: args.percentile, ..SemanticConfig::default() };
            SemanticChunker::new(e, cfg).chunk(doc, sentences)
        }
        Method::Sentence => SentenceChunker.chunk(doc, sentences),
        Method::Fixed => {
            FixedChunker::new(models.tokenizer.as_deref().ok_or_else(missing)?, args.size)?.chunk(doc, sentences)
        }
    }
}

/// Loads, splits, chunks and (optionally) merges one file; returns its output lines.
fn process(args: &ChunkArgs, models: &Models, load: &LoadOptions, path: &Path) -> Result<(Vec<String>, usize), String> {
    let doc = load_path(path, load).map_err(|e| e.to_string())?;
    let sentences = RuleSplitter::default().split(&doc.text);
    let chunked = chunk_document(args, models, &doc, &sentences).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut chunks = chunked.chunks;
    if let Some(target) = args.merge_to {
        let sizer: Box<dyn ChunkSizer> = match args.merge_unit {
            Unit::Words => Box::new(Words),
            Unit::Chars => Box::new(Chars),
            Unit::Tokens => match &models.tokenizer {
                Some(t) => Box::new(TokenSizer(Arc::clone(t))),
                None => return Err(format!("{}: tokenizer not loaded", path.display())),
            },
        };
        let spans: Vec<_> = chunks.iter().map(|c| c.span.clone()).collect();
        chunks = merge(&doc.text, &spans, target, sizer.as_ref())
            .into_iter()
            .enumerate()
            .map(|(index, span)| Chunk { index, span })
            .collect();
    }
    let n = chunks.len();
    let lines = chunks
        .iter()
        .map(|c| {
            let text = &doc.text[c.span.clone()];
            let sentences = (args.scores && !chunked.sentence_scores.is_empty()).then(|| {
                // Sentences are sorted: jump to the chunk's first one instead of scanning all.
                let first = sentences.partition_point(|s| s.start < c.span.start);
                sentences[first..]
                    .iter()
                    .zip(&chunked.sentence_scores[first..])
                    .take_while(|(s, _)| s.end <= c.span.end)
                    .map(|(s, &score)| SentenceScore {
                        start: s.start,
                        end: s.end,
                        score: score.is_finite().then_some(score),
                    })
                    .collect()
            });
            match args.format {
                Format::Jsonl => serde_json::to_string(&Record {
                    doc: &doc.id,
                    chunk: c.index,
                    start: c.span.start,
                    end: c.span.end,
                    text,
                    sentences,
                })
                .unwrap_or_default(),
                Format::Text => {
                    let mut s =
                        format!("=== {} #{} [{}..{}]\n{}\n", doc.id, c.index, c.span.start, c.span.end, text.trim());
                    if let Some(sc) = sentences {
                        let v: Vec<String> =
                            sc.iter().map(|x| x.score.map_or("-".into(), |v| format!("{v:.3}"))).collect();
                        s.push_str(&format!("    scores: {}\n", v.join(" ")));
                    }
                    s
                }
            }
        })
        .collect();
    Ok((lines, n))
}

pub fn run(args: &ChunkArgs) -> anyhow::Result<ExitCode> {
    quiet_pdf_panics();
    let (threads, opts) = crate::pipeline::runtime(args.threads, args.models.as_deref());
    let files = collect_files(&args.paths);
    // Margin judging gains from a session per document (57.5 s vs 62.5 s for two files on
    // 2 cores); PPL scoring does not (22.4 s vs 20.4 s on examples/), so it keeps one.
    let per_doc = if args.method == Method::Margin { files.len() } else { 1 };
    let sessions = args.lm_sessions.unwrap_or(per_doc).clamp(1, threads.max(1));
    let models = load_models(args, &opts, sessions)?;
    let load = LoadOptions { pdf_timeout: Duration::from_secs(args.file_timeout), ..LoadOptions::default() };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("starting the thread pool")?;

    let (mut sink, tmp): (Box<dyn Write>, Option<PathBuf>) = match &args.output {
        Some(path) => {
            let tmp = path.with_extension("partial");
            let f = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
            (Box::new(std::io::BufWriter::new(f)), Some(tmp))
        }
        None => (Box::new(std::io::BufWriter::new(std::io::stdout().lock())), None),
    };

    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(files.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files  {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (mut ok, mut chunks, mut failures) = (0usize, 0usize, Vec::new());
    // Documents in parallel, output in input order, a bounded batch at a time.
    for batch in files.chunks(threads * 4) {
        let results: Vec<_> = pool.install(|| {
            batch
                .par_iter()
                .map(|p| {
                    let r = process(args, &models, &load, p);
                    bar.inc(1);
                    r
                })
                .collect()
        });
        for r in results {
            match r {
                Ok((lines, n)) => {
                    ok += 1;
                    chunks += n;
                    for l in lines {
                        writeln!(sink, "{l}").context("writing output")?;
                    }
                }
                Err(msg) => {
                    bar.suspend(|| eprintln!("error: {msg}"));
                    failures.push(msg);
                }
            }
        }
        bar.set_message(format!("{chunks} chunks"));
    }
    bar.finish_and_clear();
    sink.flush().context("writing output")?;
    drop(sink);
    if let (Some(tmp), Some(out)) = (tmp, &args.output) {
        std::fs::rename(&tmp, out).with_context(|| format!("{}: cannot write", out.display()))?;
    }
    eprintln!(
        "chunked {ok} of {} files into {chunks} chunks in {:.1} s ({} failed)",
        files.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

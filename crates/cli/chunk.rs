//! `metarag chunk`: documents in, chunks out (JSONL or text).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use metarag_core::chunk::{ChunkSizer, Chunker, GroupEmbedding, MarginPrompt, chunk_document};
use metarag_core::load::{LoadOptions, load_path, quiet_pdf_panics};
use metarag_core::pipeline::{ChunkerConfig, MergeConfig, MergeUnit, Pipeline, PplRule, Precision, ScorerConfig};
use metarag_core::split::RuleSplitter;
use rayon::prelude::*;
use serde::Serialize;

use metarag_onnx::Models;

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

/// Value of --semantic-groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Groups {
    /// Embed each group's joined text.
    Joined,
    /// Embed each sentence once; a group's vector is the mean of its sentences'.
    Mean,
}

/// Value of --precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// The converted fp32 graph (what the oracle tests check).
    Fp32,
    /// model-int8.onnx (of the LM, or of the embedder): SmoothQuant + dynamic int8 MatMuls.
    Int8,
}

/// Value of --margin-prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Prompt {
    /// Meta-Chunking's prompt (the chunk three times).
    Exact,
    /// The chunk once, then the sentence and the question: each step reuses the chunk's cache.
    Cached,
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
  metarag chunk docs/ --pipeline pipelines/default.toml   # cut exactly as ingest cuts them

Exit status: 0 when every input was chunked, 2 when some inputs failed (each is reported on
stderr with its path; the others are still chunked), 1 on a fatal error.")]
pub struct ChunkArgs {
    /// Files or folders to chunk (folders are walked; hidden files are skipped).
    #[arg(required = true, value_name = "PATHS")]
    paths: Vec<PathBuf>,
    /// Pipeline file (TOML, as `ingest --pipeline` takes; see pipelines/): its chunker, merge
    /// step and scorer settings replace the method options below.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "method", "threshold", "rule", "adaptive", "overlap", "merge_to", "merge_unit", "size", "percentile",
        "semantic_groups", "margin_prompt", "window", "max_context", "precision",
    ])]
    pipeline: Option<PathBuf>,
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
    /// --method semantic: how a sentence group (the sentence and one neighbour on each side)
    /// becomes a vector: `mean` embeds every sentence once and averages the group's vectors;
    /// `joined` embeds the group's text (LlamaIndex's way, about 3x the model work).
    #[arg(long, value_enum, default_value_t = Groups::Mean)]
    semantic_groups: Groups,
    /// --method margin: the judge's prompt. `exact` is the paper's, which quotes the growing
    /// chunk three times; `cached` shows it once, then the sentence, then the question, so
    /// each step reuses the chunk's KV cache and runs only the new sentences: ~3.7x faster,
    /// same retrieval recall on SQuAD, but about half its boundaries differ from exact's.
    #[arg(long, value_enum, default_value_t = Prompt::Exact)]
    margin_prompt: Prompt,
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
    /// The graphs the chunker runs. PPL / margin: the causal LM's; `int8` (SmoothQuant + dynamic
    /// int8, written by onnx/setup.py): PPL chunking 2.1-2.2x faster than fp32 on an AVX-512
    /// Xeon (less on AVX2 CPUs without VNNI), 97.3% of its boundaries identical to fp32's on six
    /// SQuAD dev articles. Semantic: the embedder's; `int8`: 1.6x faster than fp32 (AVX-512), 91-97% of
    /// fp32's chunk ends. An index's vectors are always fp32.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    precision: PrecisionArg,
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

/// The pipeline of `args`: the --pipeline file, or one made of the method options.
fn pipeline_of(args: &ChunkArgs) -> anyhow::Result<Pipeline> {
    if let Some(file) = &args.pipeline {
        return Ok(Pipeline::from_file(file)?);
    }
    let threshold = args.threshold.unwrap_or(0.0);
    let chunker = match args.method {
        Method::Ppl => ChunkerConfig::Ppl {
            threshold,
            rule: match args.rule {
                Rule::Either => PplRule::Either,
                Rule::Both => PplRule::Both,
            },
            adaptive: args.adaptive,
            overlap: args.overlap,
        },
        Method::Margin => ChunkerConfig::Margin {
            threshold,
            prompt: match args.margin_prompt {
                Prompt::Exact => MarginPrompt::Exact,
                Prompt::Cached => MarginPrompt::Cached,
            },
        },
        Method::Semantic => ChunkerConfig::Semantic {
            percentile: args.percentile,
            groups: match args.semantic_groups {
                Groups::Joined => GroupEmbedding::Joined,
                Groups::Mean => GroupEmbedding::Mean,
            },
        },
        Method::Sentence => ChunkerConfig::Sentence,
        Method::Fixed => ChunkerConfig::Fixed { size: args.size },
    };
    let merge = args.merge_to.map(|target| MergeConfig {
        target,
        unit: match args.merge_unit {
            Unit::Words => MergeUnit::Words,
            Unit::Tokens => MergeUnit::Tokens,
            Unit::Chars => MergeUnit::Chars,
        },
    });
    let precision = match args.precision {
        PrecisionArg::Fp32 => Precision::Fp32,
        PrecisionArg::Int8 => Precision::Int8,
    };
    let scorer = ScorerConfig { window: args.window, max_context: args.max_context, precision };
    Ok(Pipeline { chunker, merge, scorer, ..Pipeline::default() })
}

/// The stages of one run, built once.
struct Stages<'a> {
    chunker: Box<dyn Chunker + 'a>,
    merge: Option<(usize, Box<dyn ChunkSizer + 'a>)>,
}

/// Loads and chunks one file; returns its output lines.
fn process(
    args: &ChunkArgs,
    stages: &Stages<'_>,
    load: &LoadOptions,
    path: &Path,
) -> Result<(Vec<String>, usize), String> {
    let doc = load_path(path, load).map_err(|e| e.to_string())?;
    let merge_to = stages.merge.as_ref().map(|(t, s)| (*t, s.as_ref()));
    let chunking = chunk_document(&doc, &RuleSplitter::default(), stages.chunker.as_ref(), merge_to)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let chunks = &chunking.spans;
    let n = chunks.len();
    let lines = chunks
        .iter()
        .enumerate()
        .map(|(index, span)| {
            let text = &doc.text[span.clone()];
            let sentences = (args.scores && !chunking.sentence_scores.is_empty()).then(|| {
                // Sentences are sorted: jump to the chunk's first one instead of scanning all.
                let first = chunking.sentences.partition_point(|s| s.start < span.start);
                chunking.sentences[first..]
                    .iter()
                    .zip(&chunking.sentence_scores[first..])
                    .take_while(|(s, _)| s.end <= span.end)
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
                    chunk: index,
                    start: span.start,
                    end: span.end,
                    text,
                    sentences,
                })
                .unwrap_or_default(),
                Format::Text => {
                    let mut s = format!("=== {} #{} [{}..{}]\n{}\n", doc.id, index, span.start, span.end, text.trim());
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
    let (threads, opts) = metarag_onnx::runtime(args.threads, args.models.as_deref());
    let files = metarag_engine::ingest::collect_files(&args.paths);
    let pipeline = pipeline_of(args)?;
    // Margin judging gains from a session per document (57.5 s vs 62.5 s for two files on
    // 2 cores); PPL scoring does not (22.4 s vs 20.4 s on examples/), so it keeps one.
    let margin = matches!(pipeline.chunker, ChunkerConfig::Margin { .. });
    let per_doc = if margin { files.len() } else { 1 };
    let sessions = args.lm_sessions.unwrap_or(per_doc).clamp(1, threads.max(1));
    let models = Models::load(&pipeline, &opts, false, false, sessions)?;
    let stages = Stages {
        chunker: models.chunker(&pipeline.chunker)?,
        merge: pipeline.merge.as_ref().map(|m| Ok::<_, anyhow::Error>((m.target, models.sizer(m)?))).transpose()?,
    };
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
                    let r = process(args, &stages, &load, p);
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

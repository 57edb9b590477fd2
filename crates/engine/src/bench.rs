//! `metarag bench` as a library: builds (or reuses) one index per chunker configuration
//! over a QA dataset, searches every question in every retrieval mode, optionally answers
//! them with the answer model, and writes the report (`metarag_eval::bench` has the
//! model-free half: plan, judging, caches, tallies, report types and plots).
//!
//! ```no_run
//! # #[cfg(feature = "clap")] {
//! use clap::Parser as _;
//!
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     bench: metarag_engine::bench::BenchOptions,
//! }
//! let cli = Cli::parse_from(["bench", "--dataset", "squad-dev", "--limit", "50", "--out", "runs/quick"]);
//! let (report, markdown) = metarag_engine::bench::run(&cli.bench, ".".as_ref())?;
//! println!("{markdown}");
//! # }
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
#[cfg(feature = "clap")]
use clap::builder::TypedValueParser as _;
use metarag_core::model::SentenceEmbedder;
use metarag_core::pipeline::Pipeline;
use metarag_eval::bench::{self, AnswerContext, BenchReport, ChunkerRun, ModeRun, PplCurve, StageLog, StepsPoint};
use metarag_eval::retrieval::{Judged, RetrievalMetrics};
use metarag_eval::{Dataset, Question};
use metarag_index::{Index, Mode, Query};
use metarag_onnx::{Embedder, RuntimeOptions};

mod answer;
use answer::answer_questions;

/// Parses RRF weights `BM25,DENSE` (two non-negative numbers) for a command line.
pub fn parse_weights(s: &str) -> Result<[f32; 2], String> {
    let v: Vec<f32> =
        s.split(',').map(|x| x.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|e| format!("{s:?}: {e}"))?;
    match v[..] {
        [a, b] if a >= 0.0 && b >= 0.0 => Ok([a, b]),
        _ => Err(format!("{s:?}: expected two non-negative numbers, e.g. 1,0.5")),
    }
}

/// What `metarag bench` runs (its arguments).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(
    feature = "clap",
    command(after_long_help = "\
EXAMPLES:
  metarag bench --dataset squad-dev --limit 200 --out runs/squad # all 5 chunkers x 3 modes
  metarag bench --dataset squad-dev --chunkers ppl,fixed --limit 500 --out runs/quick
  metarag bench --dataset my-data/ --retrieval hybrid --out runs/mine
  metarag bench --dataset squad-dev --chunkers ppl,sentence --out runs/full   # all 10,565 questions
  metarag bench --pipeline my.toml --chunkers ppl --generate --answer-limit 100 --out runs/qa
  metarag bench --chunkers sentence --generate --answer-context gold --out runs/qa  # reader ceiling

`--dataset squad-dev` is SQuAD v1.1 dev (48 Wikipedia articles, each ONE document; 10,565
questions), built by `python3 onnx/squad.py` into the models directory (run automatically when
missing). A directory PATH holds corpus/ (one document per file) and questions.jsonl, one
question per line:
  {\"id\": \"q1\", \"question\": \"…\", \"doc\": \"<file in corpus/>\",
   \"answers\": [{\"text\": \"…\", \"start\": 120, \"end\": 131}]}   (UTF-8 byte offsets into doc)
A FILE.json in SQuAD layout (v1.1 or v2.0) is converted into OUT/dataset-<stem>/ first: one
document per article (paragraphs joined by a blank line), answers as byte spans.

Each chunker's pipeline is pipelines/bench-<name>.toml (--pipeline FILE adds any other). Its
index is built once under OUT/index-<name>-<fingerprint>/ and reused by later runs (ingest
skips unchanged files and drops documents that are not the dataset's, e.g. the same corpus
under another path); question vectors and the perplexity curve are cached in OUT too, so a
rerun only does what changed. A retrieved chunk is relevant when its byte span covers a gold
answer span; reported per mode: recall@1..10, MRR@10, nDCG@10. With --limit N only the first N
questions are asked and only their documents are indexed.

OUT gets report.json (everything, incl. wall time and peak memory per stage), report.md, and
SVG plots: chunk_lengths (histogram per chunker), ppl_curve (the first question's document
under the first PPL pipeline, with its chunk boundaries), recall_at_k, accuracy_vs_samples
(--generate: EM with the first N of the same candidates, per aggregation), stage_times.
With --generate, OUT/answers.jsonl has every question's candidates and answers; the decodes are
also kept in OUT/answer-cache-<key>.jsonl (key: index, context retrieval, decoding settings,
seed, models, the decoders' revision), appended as each question is done, so a rerun or an
interrupted run decodes only the questions it does not have yet.")
)]
pub struct BenchOptions {
    /// `squad-dev`, a dataset directory (corpus/ + questions.jsonl) or a SQuAD JSON file.
    #[cfg_attr(feature = "clap", arg(long, default_value = "squad-dev"))]
    pub dataset: String,
    /// Ask only the first N questions (and index only their documents).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub limit: Option<usize>,
    /// Chunkers to compare (each reads pipelines/bench-<name>.toml): ppl, margin, semantic,
    /// fixed, sentence; also margin-cached, semantic-mean, ppl-int8 and semantic-int8
    /// (variants). Default: the first five, unless --pipeline is given.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    pub chunkers: Vec<String>,
    /// Also compare the pipeline in FILE (named after the file); repeatable.
    #[cfg_attr(feature = "clap", arg(long = "pipeline", value_name = "FILE"))]
    pub pipelines: Vec<PathBuf>,
    /// Retrieval modes.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ',', default_value = "bm25,dense,hybrid"))]
    pub retrieval: Vec<Mode>,
    /// RRF constant k for hybrid retrieval.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = metarag_core::fusion::Rrf::default().k))]
    pub rrf_k: f32,
    /// RRF weights "BM25,DENSE" for hybrid retrieval (default 1,1).
    #[cfg_attr(feature = "clap", arg(long, value_name = "W1,W2", value_parser = parse_weights))]
    pub weights: Option<[f32; 2]>,
    /// Output directory (report.json, report.md, cached indexes).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub out: PathBuf,
    /// Threads (default: all cores).
    #[cfg_attr(feature = "clap", arg(long))]
    pub threads: Option<usize>,
    /// Models directory (default: $METARAG_MODELS, else models/ of the checkout).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub models: Option<PathBuf>,
    /// No progress bars.
    #[cfg_attr(feature = "clap", arg(short, long))]
    pub quiet: bool,
    /// Also answer the questions (retrieved context from the first chunker's index) and report
    /// exact match, token F1 and calibration (ECE) per infill mode × aggregation.
    #[cfg_attr(feature = "clap", arg(long))]
    pub generate: bool,
    /// Answer only N of the asked questions, spread evenly over them (generation is the slow
    /// part).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub answer_limit: Option<usize>,
    /// Infill modes to compare (with --generate).
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_delimiter = ',', default_value = "extractive,free"))]
    pub infill: Vec<crate::Infill>,
    /// Aggregations to compare on the same candidates (with --generate).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ',', default_value = "rpc,vote,ppl", value_parser = crate::generator::parse_method))]
    pub aggregate: Vec<metarag_generate::aggregate::Method>,
    /// Retrieval mode that supplies the context (with --generate).
    #[cfg_attr(feature = "clap", arg(long, default_value = "hybrid"))]
    pub answer_retrieval: Mode,
    /// Chunks retrieved as context (with --generate).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2))]
    pub context_k: usize,
    /// Context of the answers (with --generate): the retrieved chunks, or the gold passage
    /// alone (the paragraph that holds the question's first gold answer): the reader's own
    /// ceiling, with retrieval taken out.
    #[cfg_attr(feature = "clap", arg(long, default_value = "retrieved", value_parser = clap::builder::PossibleValuesParser::new(["retrieved", "gold"])
        .try_map(|s| s.parse::<AnswerContext>())))]
    pub answer_context: AnswerContext,
    /// Masked decoder: answer the same questions again with each of these --steps values and
    /// plot exact match against them (accuracy_vs_steps.svg), e.g. 2,5,10,20.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ',', value_name = "STEPS"))]
    pub steps_sweep: Vec<usize>,
    /// Decoding options of the answers (with --generate).
    #[cfg_attr(feature = "clap", command(flatten))]
    pub decoding: crate::GenerateOptions,
}

fn dataset_dir(name: &str, opts: &RuntimeOptions, out: &Path, checkout: &Path) -> anyhow::Result<PathBuf> {
    if name != "squad-dev" {
        let path = PathBuf::from(name);
        if path.is_file() {
            return squad_json(&path, out);
        }
        return Ok(path);
    }
    let models = opts.models_dir.clone();
    let dir = models.join("datasets/squad-dev");
    if !dir.join("questions.jsonl").is_file() {
        eprintln!("building the SQuAD dev corpus (python3 onnx/squad.py) ...");
        let script = checkout.join("onnx/squad.py");
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

/// A SQuAD JSON file converted (once, while it is unchanged) into OUT/dataset-<stem>/.
fn squad_json(path: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let stamp = serde_json::json!({
        "source": std::fs::canonicalize(path)?, "size": meta.len(),
        "modified_ns": modified.map(|d| d.as_nanos() as u64), "converter": 1,
    })
    .to_string();
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "squad".into());
    let dir = out.join(format!("dataset-{stem}"));
    let stamp_path = dir.join("source.json");
    if std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) && dir.join("questions.jsonl").is_file() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let s = metarag_eval::squad::convert(path, &dir)?;
    eprintln!(
        "{}: {} articles, {} questions ({} unanswerable skipped, {} answer starts moved) -> {}",
        path.display(),
        s.articles,
        s.questions,
        s.unanswerable,
        s.shifted.len(),
        dir.display()
    );
    metarag_index::manifest::write_atomic(&stamp_path, stamp.as_bytes())?;
    Ok(dir)
}

/// Runs the benchmark `args` describes (`checkout`: the source tree, for pipelines/ and
/// onnx/squad.py); writes OUT/report.json, report.md and the plots, and returns the report
/// and its markdown.
pub fn run(args: &BenchOptions, checkout: &Path) -> anyhow::Result<(BenchReport, String)> {
    let (threads, opts) = metarag_onnx::runtime(args.threads, args.models.as_deref());
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create", args.out.display()))?;
    let mut log = StageLog::default();
    let (dir, data, corpus) = log.run("dataset", || {
        let dir = dataset_dir(&args.dataset, &opts, &args.out, checkout)?;
        let mut data = Dataset::load(&dir)?;
        let all: BTreeSet<String> = data.questions.iter().map(|q| q.doc.clone()).collect();
        let corpus: Vec<PathBuf> = all.iter().map(|d| data.corpus.join(d)).collect();
        if let Some(n) = args.limit {
            data.questions.truncate(n);
        }
        anyhow::Ok((dir, data, corpus))
    })?;
    let docs: BTreeSet<String> = data.questions.iter().map(|q| q.doc.clone()).collect();
    let files: Vec<PathBuf> = docs.iter().map(|d| data.corpus.join(d)).collect();
    eprintln!("{}: {} questions over {} documents", dir.display(), data.questions.len(), files.len());

    // Questions are embedded once and shared by every chunker and mode.
    let t = Instant::now();
    let qvecs = log.run("embed questions", || {
        let texts: Vec<&str> = data.questions.iter().map(|q| q.question.as_str()).collect();
        let cache = bench::vectors_path(&args.out, metarag_onnx::EMBEDDER_ID, &texts);
        if let Some(v) = bench::read_vectors(&cache, texts.len()) {
            return Ok(v);
        }
        let embedder = Arc::new(Embedder::load(&opts)?);
        let mut qvecs = Vec::with_capacity(texts.len());
        for b in texts.chunks(64) {
            qvecs.extend(embedder.embed(b)?);
        }
        bench::write_vectors(&cache, &qvecs)?;
        anyhow::Ok(qvecs)
    })?;
    let embed_seconds = t.elapsed().as_secs_f64();
    let mut lengths: Vec<(String, Vec<f64>)> = Vec::new();
    let mut curve = None;

    let mut runs = Vec::new();
    for planned in bench::plan(checkout, &args.chunkers, &args.pipelines)? {
        let (name, pfile) = (&planned.name, &planned.file);
        let pipeline = Pipeline::from_file(pfile)
            .with_context(|| format!("configuration {name:?}: cannot load the pipeline {}", pfile.display()))?;
        let fp = metarag_index::IndexConfig {
            format: 1,
            store: metarag_index::StoreConfig::Embedded,
            pipeline: pipeline.clone(),
        }
        .pipeline_fingerprint();
        let index_dir = args.out.join(format!("index-{name}-{fp}"));
        let t = Instant::now();
        let report = log.run(format!("index {name}"), || {
            crate::ingest::ingest_files(&files, &corpus, &index_dir, &pipeline, &opts, threads, args.quiet)
        })?;
        let ingest_seconds = t.elapsed().as_secs_f64();
        if !report.failed.is_empty() {
            bail!("{} documents failed to ingest: {:?}", report.failed.len(), report.failed);
        }
        let index = Index::open(&index_dir)?;
        let chunks = index.manifest().chunks();
        let ids = index.vectors().ids()?;
        let mut chunk_words: Vec<f64> =
            index.vectors().get(&ids)?.iter().map(|r| r.text.split_whitespace().count() as f64).collect();
        chunk_words.sort_by(f64::total_cmp);
        let words: f64 = chunk_words.iter().sum();
        lengths.push((name.clone(), chunk_words));
        let is_ppl = matches!(pipeline.chunker, metarag_core::pipeline::ChunkerConfig::Ppl { .. });
        if let (None, true, Some(q)) = (&curve, is_ppl, data.questions.first()) {
            let doc = data.corpus.join(&q.doc);
            curve = log
                .run(format!("ppl curve {name}"), || ppl_curve(&doc, &pipeline, &opts, &args.out, &fp))
                .map_err(|e| eprintln!("warning: no perplexity curve: {e:#}"))
                .ok();
        }
        let mut modes = Vec::new();
        for &mode in &args.retrieval {
            let t = Instant::now();
            let judged = log.run(format!("search {name} {}", mode_name(mode)), || {
                let mut judged = Vec::with_capacity(data.questions.len());
                for (q, v) in data.questions.iter().zip(&qvecs) {
                    let query = Query::new(q.question.clone())
                        .k(10)
                        .mode(mode)
                        .fusion(args.rrf_k, args.weights.map(metarag_index::HybridWeights::from));
                    let hits = index.search_with_vector(&query, Some(v))?;
                    judged.push(judge(q, &hits));
                }
                anyhow::Ok(judged)
            })?;
            let metrics = RetrievalMetrics::from_runs(&judged);
            eprintln!(
                "{name:>9} {mode:?}: recall@5 {:.3}  MRR@10 {:.3}  ({} questions)",
                metrics.recall_at(5),
                metrics.mrr10,
                metrics.questions
            );
            modes.push(ModeRun { mode: mode_name(mode), metrics, search_seconds: t.elapsed().as_secs_f64() });
        }
        runs.push(ChunkerRun {
            chunker: name.clone(),
            pipeline,
            index: index_dir,
            documents: index.manifest().documents.len(),
            chunks,
            mean_chunk_words: words / chunks.max(1) as f64,
            ingest_seconds,
            chunking_seconds: report.stages.chunk.seconds,
            modes,
        });
    }
    let answers = if args.generate {
        let first = runs.first().context("--generate needs at least one chunker")?;
        Some(log.run("answer", || answer_questions(args, &data, &qvecs, &first.index, &opts, "answers.jsonl"))?)
    } else {
        None
    };
    // The same questions again at each --steps-sweep step count (masked decoder).
    let mut steps_curve = Vec::new();
    if let (Some(main), false) = (&answers, args.steps_sweep.is_empty()) {
        if args.decoding.decoder != crate::Decoder::Masked {
            bail!("--steps-sweep needs --decoder masked");
        }
        let first = runs.first().context("--generate needs at least one chunker")?;
        for &steps in &args.steps_sweep {
            let report = if args.decoding.steps == Some(steps) {
                None
            } else {
                let mut sweep = args.clone();
                sweep.decoding.steps = Some(steps);
                let name = format!("answers-steps-{steps}.jsonl");
                Some(log.run(format!("answer steps={steps}"), || {
                    answer_questions(&sweep, &data, &qvecs, &first.index, &opts, &name)
                })?)
            };
            let r = report.as_ref().unwrap_or(main);
            let of = |v: &[(String, f64)], m: &str| v.iter().find(|(x, _)| x == m).map(|(_, c)| *c);
            steps_curve.extend(r.runs.iter().map(|run| StepsPoint {
                steps,
                infill: run.infill.clone(),
                method: run.method,
                em: run.metrics.em,
                f1: run.metrics.f1,
                committed_per_step: of(&r.committed_per_step, &run.infill),
                decoded_per_step: of(&r.decoded_per_step, &run.infill),
                decode_seconds: of(&r.decode_seconds, &run.infill),
            }));
        }
    }
    let mut report = BenchReport {
        dataset: dir,
        questions: data.questions.len(),
        documents: files.len(),
        question_embedding_seconds: embed_seconds,
        rrf_k: args.rrf_k,
        rrf_weights: args.weights,
        runs,
        answers,
        steps_curve,
        stages: log.stages,
        ppl_curve: curve,
        plots: Vec::new(),
    };
    let (plots, failed) = bench::plots::draw_all(&args.out, &report, &lengths);
    for e in failed {
        eprintln!("warning: {e}");
    }
    report.plots = plots.iter().filter_map(|p| p.file_name()).map(|f| f.to_string_lossy().into_owned()).collect();
    let md = report.write(&args.out)?;
    Ok((report, md))
}

fn judge(q: &Question, hits: &[metarag_index::SearchHit]) -> Judged {
    bench::judge(q, hits.iter().map(|h| (h.record.path.as_str(), h.record.start, h.record.end)))
}

fn infill_name(infill: crate::Infill) -> String {
    format!("{infill:?}").to_lowercase()
}

fn mode_name(mode: Mode) -> String {
    format!("{mode:?}").to_lowercase()
}

/// Scores `doc` with `pipeline`'s chunker (cached in OUT/ppl-curve-<fingerprint>-<doc>.json).
fn ppl_curve(doc: &Path, pipeline: &Pipeline, opts: &RuntimeOptions, out: &Path, fp: &str) -> anyhow::Result<PplCurve> {
    use metarag_core::split::SentenceSplitter;
    let name = doc.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let cache = out.join(format!("ppl-curve-{fp}-{name}.json"));
    if let Some(c) = std::fs::read(&cache).ok().and_then(|b| serde_json::from_slice::<PplCurve>(&b).ok()) {
        return Ok(c);
    }
    let text = std::fs::read_to_string(doc).with_context(|| format!("{}: cannot read", doc.display()))?;
    let models = metarag_onnx::Models::load(pipeline, opts, false, false, 1)?;
    let chunker = models.chunker(&pipeline.chunker)?;
    let document = metarag_core::Document::from_text(name.clone(), text);
    let sentences = metarag_core::split::RuleSplitter::default().split(&document.text);
    let chunked = chunker.chunk(&document, &sentences)?;
    let boundaries =
        chunked.chunks.iter().skip(1).filter_map(|c| sentences.iter().position(|s| s.start == c.span.start)).collect();
    let curve = PplCurve { document: name, scores: chunked.sentence_scores, boundaries };
    bench::write_atomic(&cache, serde_json::to_string(&curve)?.as_bytes())?;
    Ok(curve)
}

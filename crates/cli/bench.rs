//! `metarag bench`: retrieval quality of chunkers × retrieval modes on a QA dataset.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use metarag_core::model::SentenceEmbedder;
use metarag_core::pipeline::Pipeline;
use metarag_eval::retrieval::{Judged, RetrievalMetrics, is_relevant};
use metarag_eval::{Dataset, Question};
use metarag_index::{Index, Mode, Query};
use metarag_onnx::{Embedder, RuntimeOptions};
use serde::Serialize;

/// Arguments of `metarag bench`.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = "\
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
skips unchanged files); question vectors and the perplexity curve are cached in OUT too, so a
rerun only does what changed. A retrieved chunk is relevant when its byte span covers a gold
answer span; reported per mode: recall@1..10, MRR@10, nDCG@10. With --limit N only the first N
questions are asked and only their documents are indexed.

OUT gets report.json (everything, incl. wall time and peak memory per stage), report.md, and
SVG plots: chunk_lengths (histogram per chunker), ppl_curve (the first question's document
under the first PPL pipeline, with its chunk boundaries), recall_at_k, accuracy_vs_samples
(--generate: EM with the first N of the same candidates, per aggregation), stage_times.
With --generate, OUT/answers.jsonl has every question's candidates and answers; the decodes are
also kept in OUT/answer-cache-<key>.jsonl (key: index, context retrieval, decoding settings,
seed, models), appended as each question is done, so a rerun or an interrupted run decodes only
the questions it does not have yet.")]
pub struct BenchArgs {
    /// `squad-dev`, a dataset directory (corpus/ + questions.jsonl) or a SQuAD JSON file.
    #[arg(long, default_value = "squad-dev")]
    dataset: String,
    /// Ask only the first N questions (and index only their documents).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Chunkers to compare (each reads pipelines/bench-<name>.toml): ppl, margin, semantic,
    /// fixed, sentence. Default: all five, unless --pipeline is given.
    #[arg(long, value_delimiter = ',')]
    chunkers: Vec<String>,
    /// Also compare the pipeline in FILE (named after the file); repeatable.
    #[arg(long = "pipeline", value_name = "FILE")]
    pipelines: Vec<PathBuf>,
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
    /// Also answer the questions (retrieved context from the first chunker's index) and report
    /// exact match, token F1 and calibration (ECE) per infill mode × aggregation.
    #[arg(long)]
    generate: bool,
    /// Answer only N of the asked questions, spread evenly over them (generation is the slow
    /// part).
    #[arg(long, value_name = "N")]
    answer_limit: Option<usize>,
    /// Infill modes to compare (with --generate).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "extractive,free")]
    infill: Vec<crate::ask::InfillArg>,
    /// Aggregations to compare on the same candidates (with --generate).
    #[arg(long, value_delimiter = ',', default_value = "rpc,vote,ppl", value_parser = crate::ask::parse_method)]
    aggregate: Vec<metarag_generate::aggregate::Method>,
    /// Retrieval mode that supplies the context (with --generate).
    #[arg(long, default_value = "hybrid")]
    answer_retrieval: Mode,
    /// Chunks retrieved as context (with --generate).
    #[arg(long, default_value_t = 2)]
    context_k: usize,
    /// Context of the answers (with --generate): the retrieved chunks, or the gold passage
    /// alone (the paragraph that holds the question's first gold answer): the reader's own
    /// ceiling, with retrieval taken out.
    #[arg(long, value_enum, default_value_t = AnswerContext::Retrieved)]
    answer_context: AnswerContext,
    /// Masked decoder: answer the same questions again with each of these --steps values and
    /// plot exact match against them (accuracy_vs_steps.svg), e.g. 2,5,10,20.
    #[arg(long, value_delimiter = ',', value_name = "STEPS")]
    steps_sweep: Vec<usize>,
    #[command(flatten)]
    decoding: crate::ask::GenerateArgs,
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

/// Wall time and peak resident memory of one bench stage.
#[derive(Debug, Clone, Serialize)]
struct StageTime {
    stage: String,
    seconds: f64,
    /// Peak resident set (MiB) while the stage ran: the process high-water mark, reset before
    /// the stage through /proc/self/clear_refs (Linux); without the reset it is the peak so far.
    peak_rss_mib: Option<f64>,
}

#[derive(Debug, Default)]
struct StageLog {
    stages: Vec<StageTime>,
}

impl StageLog {
    fn run<T>(&mut self, stage: impl Into<String>, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        // "5" resets the peak RSS counter of this process (Linux >= 4.0).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let t = Instant::now();
        let out = f()?;
        self.stages.push(StageTime {
            stage: stage.into(),
            seconds: t.elapsed().as_secs_f64(),
            peak_rss_mib: peak_rss_mib(),
        });
        Ok(out)
    }
}

/// VmHWM of /proc/self/status in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn dataset_dir(name: &str, opts: &RuntimeOptions, out: &Path) -> anyhow::Result<PathBuf> {
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

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let (threads, opts) = crate::pipeline::runtime(args.threads, args.models.as_deref());
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create", args.out.display()))?;
    let mut log = StageLog::default();
    let (dir, data) = log.run("dataset", || {
        let dir = dataset_dir(&args.dataset, &opts, &args.out)?;
        let mut data = Dataset::load(&dir)?;
        if let Some(n) = args.limit {
            data.questions.truncate(n);
        }
        Ok((dir, data))
    })?;
    let docs: BTreeSet<String> = data.questions.iter().map(|q| q.doc.clone()).collect();
    let files: Vec<PathBuf> = docs.iter().map(|d| data.corpus.join(d)).collect();
    eprintln!("{}: {} questions over {} documents", dir.display(), data.questions.len(), files.len());

    // Questions are embedded once and shared by every chunker and mode.
    let t = Instant::now();
    let qvecs = log.run("embed questions", || {
        let texts: Vec<&str> = data.questions.iter().map(|q| q.question.as_str()).collect();
        let cache = args.out.join(format!("question-vectors-{}.f32", text_key(&texts)));
        if let Some(v) = read_vectors(&cache, texts.len()) {
            return Ok(v);
        }
        let embedder = Arc::new(Embedder::load(&opts)?);
        let mut qvecs = Vec::with_capacity(texts.len());
        for b in texts.chunks(64) {
            qvecs.extend(embedder.embed(b)?);
        }
        write_vectors(&cache, &qvecs)?;
        Ok(qvecs)
    })?;
    let embed_seconds = t.elapsed().as_secs_f64();
    let mut lengths: Vec<(String, Vec<f64>)> = Vec::new();
    let mut curve = None;

    let mut runs = Vec::new();
    let mut configs: Vec<(String, PathBuf)> = Vec::new();
    let chunkers = if args.chunkers.is_empty() && args.pipelines.is_empty() {
        ALL_CHUNKERS.iter().map(|c| c.to_string()).collect()
    } else {
        args.chunkers.clone()
    };
    for name in chunkers {
        let file = crate::setup::checkout().join(format!("pipelines/bench-{name}.toml"));
        configs.push((name, file));
    }
    for file in &args.pipelines {
        let name = file.file_stem().map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned());
        if configs.iter().any(|(n, _)| *n == name) {
            bail!("two configurations are named {name:?} ({}): rename the file", file.display());
        }
        configs.push((name, file.clone()));
    }
    for (name, pfile) in &configs {
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
            crate::ingest::ingest_files(&files, &index_dir, &pipeline, &opts, threads, args.quiet)
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
                Ok(judged)
            })?;
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
        if args.decoding.decoder != crate::ask::DecoderArg::Masked {
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
            steps_curve.extend(r.runs.iter().map(|run| StepsPoint {
                steps,
                infill: run.infill.clone(),
                method: run.method,
                em: run.metrics.em,
                f1: run.metrics.f1,
                committed_per_step: r.committed_per_step.iter().find(|(m, _)| *m == run.infill).map(|(_, c)| *c),
                decoded_per_step: r.decoded_per_step.iter().find(|(m, _)| *m == run.infill).map(|(_, c)| *c),
                decode_seconds: r.decode_seconds.iter().find(|(m, _)| *m == run.infill).map(|(_, s)| *s),
            }));
        }
    }
    let plots = draw_plots(&args.out, &runs, &lengths, curve.as_ref(), answers.as_ref(), &steps_curve, &log.stages);
    let report = serde_json::json!({
        "dataset": dir, "questions": data.questions.len(), "documents": files.len(),
        "question_embedding_seconds": embed_seconds, "rrf_k": args.rrf_k, "rrf_weights": args.weights,
        "runs": runs, "answers": answers, "steps_curve": steps_curve, "stages": log.stages, "ppl_curve": curve,
        "plots": plots.iter().filter_map(|p| p.file_name()).map(|f| f.to_string_lossy().into_owned()).collect::<Vec<_>>(),
    });
    let json_path = args.out.join("report.json");
    metarag_index::manifest::write_atomic(&json_path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    let mut md = markdown(&runs, data.questions.len(), &dir);
    if let Some(a) = &answers {
        md.push_str(&answers_markdown(a));
    }
    if !steps_curve.is_empty() {
        md.push_str(&steps_markdown(&steps_curve));
    }
    md.push_str(&stages_markdown(&log.stages, &plots));
    metarag_index::manifest::write_atomic(&args.out.join("report.md"), md.as_bytes())?;
    {
        use std::io::Write as _;
        std::io::stdout().lock().write_all(md.as_bytes())?;
    }
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
    let _ = writeln!(
        s,
        "| chunker | chunks | mean words | chunking s | mode | recall@1 | recall@5 | recall@10 | MRR@10 | nDCG@10 |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in runs {
        for m in &r.modes {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:?} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                r.chunker,
                r.chunks,
                r.mean_chunk_words,
                r.chunking_seconds,
                m.mode,
                m.metrics.recall_at(1),
                m.metrics.recall_at(5),
                m.metrics.recall_at(10),
                m.metrics.mrr10,
                m.metrics.ndcg10
            );
        }
    }
    s
}

#[derive(Debug, Serialize)]
struct AnswerRun {
    infill: String,
    method: metarag_generate::aggregate::Method,
    metrics: metarag_eval::AnswerMetrics,
}

/// One point of the accuracy-vs-steps curve (`--steps-sweep`).
#[derive(Debug, Serialize)]
struct StepsPoint {
    steps: usize,
    infill: String,
    method: metarag_generate::aggregate::Method,
    em: f64,
    f1: f64,
    committed_per_step: Option<f64>,
    decoded_per_step: Option<f64>,
    decode_seconds: Option<f64>,
}

fn steps_markdown(points: &[StepsPoint]) -> String {
    let mut s = String::from(
        "\n# Accuracy vs denoising steps (masked decoder, same questions)\n\n| steps | infill | aggregation | EM | F1 | slot tokens per step | decoded per step | decode s |\n|---:|---|---|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.3} | {:.2} | {:.2} | {:.1} |",
            p.steps,
            p.infill,
            p.method,
            p.em,
            p.f1,
            p.committed_per_step.unwrap_or(f64::NAN),
            p.decoded_per_step.unwrap_or(f64::NAN),
            p.decode_seconds.unwrap_or(f64::NAN)
        );
    }
    s
}

/// Where the answers' context comes from (`--answer-context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum AnswerContext {
    /// The top --context-k chunks of --answer-retrieval.
    Retrieved,
    /// The gold passage alone.
    Gold,
}

#[derive(Debug, Serialize)]
struct AnswerReport {
    /// "causal" or "masked".
    decoder: String,
    /// --steps of the masked decoder (None: one token per step).
    steps: Option<usize>,
    /// Mean model calls per question, per infill mode (decodes cached before this was kept are
    /// left out).
    forwards_per_question: Vec<(String, f64)>,
    /// Masked decoder: mean slot tokens committed per candidate per step, per infill mode.
    committed_per_step: Vec<(String, f64)>,
    /// Masked decoder: the same without the end padding an end token implies.
    decoded_per_step: Vec<(String, f64)>,
    questions: usize,
    samples: usize,
    seed: u64,
    context: AnswerContext,
    context_retrieval: Mode,
    context_k: usize,
    /// Share of answered questions whose context holds a gold answer span.
    context_has_answer: f64,
    runs: Vec<AnswerRun>,
    /// Decoding seconds per infill mode (all questions; a reused decode counts the seconds
    /// it took when it was made).
    decode_seconds: Vec<(String, f64)>,
    /// Question × mode decodes reused from the answer cache.
    cached: usize,
    /// The answer cache of this configuration.
    cache: PathBuf,
    /// Aggregation seconds (all methods, all questions).
    aggregate_seconds: f64,
    /// EM / F1 with only the first N candidates of the same decode (what N samples would give:
    /// every candidate has its own random stream), N = 1, 2, 4, … up to --samples.
    samples_curve: Vec<SamplesCurve>,
}

#[derive(Debug, Serialize)]
struct SamplesCurve {
    infill: String,
    method: metarag_generate::aggregate::Method,
    points: Vec<SamplesPoint>,
}

#[derive(Debug, Serialize)]
struct SamplesPoint {
    samples: usize,
    em: f64,
    f1: f64,
}

/// Answers the first `--answer-limit` questions from the index at `index_dir`: one decode per
/// question and infill mode, aggregated by every method on the same candidates. Per-question
/// results go to OUT/answers.jsonl.
fn answer_questions(
    args: &BenchArgs,
    data: &Dataset,
    qvecs: &[Vec<f32>],
    index_dir: &Path,
    opts: &RuntimeOptions,
    log_name: &str,
) -> anyhow::Result<AnswerReport> {
    use metarag_eval::{AnswerMetrics, AnswerRecord};
    use std::io::Write as _;
    if args.aggregate.is_empty() || args.infill.is_empty() {
        bail!("--generate needs at least one --aggregate method and one --infill mode");
    }
    let n = args.answer_limit.unwrap_or(data.questions.len()).min(data.questions.len());
    let index = Index::open(index_dir)?;
    let mut cache = AnswerCache::open(args, index_dir, opts)?;
    // Loaded on the first question the cache does not have.
    let mut generator: Option<crate::ask::Generator> = None;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new((n * args.infill.len()) as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "answering {bar:30} {pos}/{len} questions×modes  {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let log_path = args.out.join(log_name);
    let mut log = std::io::BufWriter::new(
        std::fs::File::create(&log_path).with_context(|| format!("{}: cannot create", log_path.display()))?,
    );
    let mut records: Vec<Vec<Vec<AnswerRecord>>> =
        vec![vec![Vec::with_capacity(n); args.aggregate.len()]; args.infill.len()];
    let mut decode_seconds = vec![0.0; args.infill.len()];
    let (mut forwards, mut committed) = (vec![Vec::new(); args.infill.len()], vec![Vec::new(); args.infill.len()]);
    let mut decoded = vec![Vec::new(); args.infill.len()];
    let sizes: Vec<usize> = {
        let n = args.decoding.samples.max(1);
        let mut v: Vec<usize> = std::iter::successors(Some(1usize), |&k| Some(k * 2)).take_while(|&k| k < n).collect();
        v.push(n);
        v
    };
    // [infill][method][size] -> records
    let mut by_size: Vec<Vec<Vec<Vec<AnswerRecord>>>> =
        vec![vec![vec![Vec::with_capacity(n); sizes.len()]; args.aggregate.len()]; args.infill.len()];
    let mut aggregate_seconds = 0.0;
    let mut has_answer = 0usize;
    // The answered questions are spread evenly over the asked ones (every one when n = all).
    let total = data.questions.len();
    let picked: Vec<usize> = (0..n).map(|i| i * total / n.max(1)).collect();
    let mut documents = std::collections::HashMap::new();
    for &qi in &picked {
        let (q, v) = (&data.questions[qi], &qvecs[qi]);
        let chunks = match args.answer_context {
            AnswerContext::Gold => {
                has_answer += 1;
                vec![gold_context(&data.corpus, q, &mut documents)?]
            }
            AnswerContext::Retrieved => {
                let query = Query::new(q.question.clone())
                    .k(args.context_k)
                    .mode(args.answer_retrieval)
                    .fusion(args.rrf_k, args.weights.map(metarag_index::HybridWeights::from));
                let hits = index.search_with_vector(&query, Some(v))?;
                if judge(q, &hits).relevant.iter().any(|&r| r) {
                    has_answer += 1;
                }
                crate::ask::context(&hits)
            }
        };
        let golds: Vec<&str> = q.answers.iter().map(|a| a.text.as_str()).collect();
        for (i, &infill) in args.infill.iter().enumerate() {
            let context: Vec<String> = chunks.iter().map(|c| c.id.clone()).collect();
            let answer = match cache.get(&q.id, infill, &context) {
                Some(hit) => hit,
                None => {
                    let generator = match &mut generator {
                        Some(g) => g,
                        None => generator.insert(crate::ask::Generator::load(
                            args.decoding.decoder,
                            args.decoding.generator,
                            opts,
                        )?),
                    };
                    let cfg = generator.config(&args.decoding, infill, args.aggregate[0])?;
                    let answer =
                        generator.ask(&q.question, &chunks, &cfg).with_context(|| format!("question {}", q.id))?;
                    cache.put(CachedAnswer {
                        id: q.id.clone(),
                        infill: infill_name(infill),
                        context,
                        decode_seconds: answer.stats.decode_seconds,
                        candidates: answer.candidates,
                        forwards: Some(answer.stats.forwards),
                        committed_per_step: answer.stats.committed_per_step,
                        decoded_per_step: answer.stats.decoded_per_step,
                        cached: false,
                    })?
                }
            };
            decode_seconds[i] += answer.decode_seconds;
            if let Some(f) = answer.forwards {
                forwards[i].push(f as f64);
            }
            if let Some(c) = answer.committed_per_step {
                committed[i].push(c);
            }
            if let Some(d) = answer.decoded_per_step {
                decoded[i].push(d);
            }
            let mut winners = Vec::new();
            // The first 1, 2, 4 … candidates, built once for every method; the full set is
            // the answer itself (not aggregated again).
            let subsets: Vec<Option<Vec<_>>> = sizes
                .iter()
                .map(|&size| {
                    (answer.candidates.iter().any(|c| c.candidate.index >= size)).then(|| {
                        answer.candidates.iter().filter(|c| c.candidate.index < size).cloned().collect::<Vec<_>>()
                    })
                })
                .collect();
            for (j, &method) in args.aggregate.iter().enumerate() {
                let t = Instant::now();
                let (text, confidence) = metarag_generate::qa::reaggregate(&answer.candidates, method);
                aggregate_seconds += t.elapsed().as_secs_f64();
                let full = AnswerRecord::score(&text, &golds, Some(confidence));
                for (z, subset) in subsets.iter().enumerate() {
                    let rec = match subset {
                        Some(first) => {
                            let (t, c) = metarag_generate::qa::reaggregate(first, method);
                            AnswerRecord::score(&t, &golds, Some(c))
                        }
                        None => full,
                    };
                    by_size[i][j][z].push(rec);
                }
                records[i][j].push(full);
                winners.push(serde_json::json!({"method": method, "answer": text, "confidence": confidence}));
            }
            let line = serde_json::json!({
                "id": q.id, "question": q.question, "gold": golds, "infill": answer.infill,
                "context": answer.context, "cached": answer.cached,
                "candidates": answer.candidates.iter().map(|c| serde_json::json!({"text": c.candidate.text, "p": c.p, "pruned": c.pruned, "logprobs": c.candidate.logprobs, "suffix": c.candidate.suffix_logprobs})).collect::<Vec<_>>(),
                "answers": winners,
            });
            writeln!(log, "{line}").with_context(|| format!("{}: write failed", log_path.display()))?;
            bar.inc(1);
        }
    }
    log.flush().with_context(|| format!("{}: write failed", log_path.display()))?;
    bar.finish_and_clear();
    if cache.hits > 0 {
        eprintln!(
            "answers: {} of {} question×mode decodes reused from {} (same index, context and decoding settings)",
            cache.hits,
            n * args.infill.len(),
            cache.path.display()
        );
    }
    let mut runs = Vec::new();
    for (i, infill) in args.infill.iter().enumerate() {
        for (j, &method) in args.aggregate.iter().enumerate() {
            let metrics = AnswerMetrics::from_records(&records[i][j]);
            eprintln!(
                "answers {:>10} {method:>4}: EM {:.3}  F1 {:.3}  ECE {:.3}  Brier {:.3}  AUROC {:.3}  ({} questions)",
                infill_name(*infill),
                metrics.em,
                metrics.f1,
                metrics.ece.unwrap_or(f64::NAN),
                metrics.brier.unwrap_or(f64::NAN),
                metrics.auroc.unwrap_or(f64::NAN),
                metrics.questions
            );
            runs.push(AnswerRun { infill: infill_name(*infill), method, metrics });
        }
    }
    let mean = |v: &Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let per_mode = |v: &[Vec<f64>]| -> Vec<(String, f64)> {
        args.infill.iter().zip(v).filter_map(|(&m, x)| mean(x).map(|x| (infill_name(m), x))).collect()
    };
    Ok(AnswerReport {
        decoder: format!("{:?}", args.decoding.decoder).to_lowercase(),
        steps: args.decoding.steps,
        forwards_per_question: per_mode(&forwards),
        committed_per_step: per_mode(&committed),
        decoded_per_step: per_mode(&decoded),
        questions: n,
        samples: args.decoding.samples,
        seed: args.decoding.seed,
        context: args.answer_context,
        context_retrieval: args.answer_retrieval,
        context_k: args.context_k,
        context_has_answer: has_answer as f64 / n.max(1) as f64,
        runs,
        decode_seconds: args.infill.iter().map(|&m| infill_name(m)).zip(decode_seconds).collect(),
        cached: cache.hits,
        cache: cache.path.clone(),
        aggregate_seconds,
        samples_curve: args
            .infill
            .iter()
            .enumerate()
            .flat_map(|(i, infill)| {
                let by_size = &by_size;
                let sizes = &sizes;
                args.aggregate.iter().enumerate().map(move |(j, &method)| SamplesCurve {
                    infill: infill_name(*infill),
                    method,
                    points: sizes
                        .iter()
                        .zip(&by_size[i][j])
                        .map(|(&samples, recs)| {
                            let m = AnswerMetrics::from_records(recs);
                            SamplesPoint { samples, em: m.em, f1: m.f1 }
                        })
                        .collect(),
                })
            })
            .collect(),
    })
}

/// The gold passage of `q` (see [`metarag_eval::dataset::gold_passage`]) as the only context
/// chunk; documents are loaded once, as ingest loads them (the answer offsets refer to that text).
fn gold_context(
    corpus: &Path,
    q: &Question,
    documents: &mut std::collections::HashMap<String, String>,
) -> anyhow::Result<metarag_generate::template::ContextChunk> {
    let path = corpus.join(&q.doc);
    if !documents.contains_key(&q.doc) {
        let doc = metarag_core::load::load_path(&path, &metarag_core::load::LoadOptions::default())
            .with_context(|| format!("question {}: cannot load its document", q.id))?;
        documents.insert(q.doc.clone(), doc.text);
    }
    let text = &documents[&q.doc];
    let answer = q.answers.first().with_context(|| format!("question {}: no gold answer", q.id))?;
    let span = metarag_eval::dataset::gold_passage(text, answer).with_context(|| {
        format!("question {}: answer span {}..{} is not inside {}", q.id, answer.start, answer.end, path.display())
    })?;
    Ok(metarag_generate::template::ContextChunk {
        id: format!("{}#gold", q.doc),
        text: text[span.clone()].to_string(),
        path: Some(q.doc.clone()),
        span: Some(span),
    })
}

fn infill_name(infill: crate::ask::InfillArg) -> String {
    format!("{infill:?}").to_lowercase()
}

/// One question × infill decode, as kept in the answer cache.
#[derive(Debug, Serialize, serde::Deserialize)]
struct CachedAnswer {
    id: String,
    infill: String,
    /// Ids of the context chunks, in prompt order.
    context: Vec<String>,
    decode_seconds: f64,
    candidates: Vec<metarag_generate::qa::CandidateReport>,
    /// Model calls of the decode (absent in caches written before it was kept).
    #[serde(default)]
    forwards: Option<usize>,
    /// Masked decoder: slot tokens committed per candidate per step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    committed_per_step: Option<f64>,
    /// Masked decoder: the same without the end padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decoded_per_step: Option<f64>,
    /// True when read back from the cache (not stored).
    #[serde(skip)]
    cached: bool,
}

/// Decodes of earlier runs with the same index, context retrieval, decoding settings, seed and
/// models: OUT/answer-cache-<key>.jsonl, one line per question × infill, appended as each is
/// decoded, so a rerun (or a run after an interruption) decodes only what is missing.
struct AnswerCache {
    path: PathBuf,
    entries: std::collections::HashMap<(String, String), CachedAnswer>,
    file: std::fs::File,
    hits: usize,
}

impl AnswerCache {
    fn open(args: &BenchArgs, index_dir: &Path, opts: &RuntimeOptions) -> anyhow::Result<Self> {
        use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
        // Everything the candidates depend on (the first aggregation method marks their
        // groups and pruning in the log), serialized by the settings' serde names: renaming a
        // Rust type or variant never invalidates a cache.
        let configs = args
            .infill
            .iter()
            .map(|&m| Ok(serde_json::to_string(&args.decoding.config(m, args.aggregate[0])?)?))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let name = |v: Option<clap::builder::PossibleValue>| v.map(|v| v.get_name().to_string()).unwrap_or_default();
        let manifest = std::fs::read(opts.models_dir.join("manifest.json")).unwrap_or_default();
        let index_name = index_dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let parts = [
            index_name,
            format!(
                "{} {}",
                name(args.decoding.decoder.to_possible_value()),
                name(args.decoding.generator.to_possible_value())
            ),
            match args.answer_context {
                AnswerContext::Retrieved => serde_json::json!({
                    "retrieval": args.answer_retrieval, "k": args.context_k, "rrf_k": args.rrf_k, "weights": args.weights,
                })
                .to_string(),
                AnswerContext::Gold => "gold passage".to_string(),
            },
            configs.join("\n"),
            String::from_utf8_lossy(&manifest).into_owned(),
        ];
        let path = args.out.join(format!("answer-cache-{}.jsonl", hash_key(parts.iter().map(String::as_str))));
        let mut entries = std::collections::HashMap::new();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        let mut text = String::new();
        file.read_to_string(&mut text).with_context(|| format!("{}: cannot read", path.display()))?;
        // A line cut by an interruption (or not parsable) is decoded again.
        for line in text.lines() {
            if let Ok(mut a) = serde_json::from_str::<CachedAnswer>(line) {
                a.cached = true;
                entries.insert((a.id.clone(), a.infill.clone()), a);
            }
        }
        if !text.is_empty() && !text.ends_with('\n') {
            file.seek(SeekFrom::End(0))?;
            file.write_all(b"\n").with_context(|| format!("{}: write failed", path.display()))?;
        }
        Ok(AnswerCache { path, entries, file, hits: 0 })
    }

    /// The cached decode of question `id` in mode `infill`, if it had the same context.
    fn get(&mut self, id: &str, infill: crate::ask::InfillArg, context: &[String]) -> Option<CachedAnswer> {
        let a = self.entries.remove(&(id.to_string(), infill_name(infill)))?;
        (a.context == context).then(|| {
            self.hits += 1;
            a
        })
    }

    /// Appends a fresh decode (one line, flushed) and returns it.
    fn put(&mut self, a: CachedAnswer) -> anyhow::Result<CachedAnswer> {
        use std::io::Write as _;
        let mut line = serde_json::to_string(&a)?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).with_context(|| format!("{}: write failed", self.path.display()))?;
        Ok(a)
    }
}

fn answers_markdown(a: &AnswerReport) -> String {
    let mut s = String::new();
    let context = match a.context {
        AnswerContext::Retrieved => format!("{:?} top {}", a.context_retrieval, a.context_k),
        AnswerContext::Gold => "the gold passage alone".to_string(),
    };
    let _ = writeln!(
        s,
        "\n# Answers ({} questions, N = {} samples, seed {}, context: {context}; gold answer in context for {:.1}%)\n",
        a.questions,
        a.samples,
        a.seed,
        100.0 * a.context_has_answer
    );
    let _ = writeln!(s, "| infill | aggregation | EM | F1 | ECE (10 bins) | Brier | AUROC |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for r in &a.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.infill,
            r.method,
            r.metrics.em,
            r.metrics.f1,
            r.metrics.ece.unwrap_or(f64::NAN),
            r.metrics.brier.unwrap_or(f64::NAN),
            r.metrics.auroc.unwrap_or(f64::NAN)
        );
    }
    for (m, secs) in &a.decode_seconds {
        let _ = write!(s, "\n{m}: {secs:.1} s decoding ({:.2} s per question)", secs / a.questions.max(1) as f64);
        let of = |v: &[(String, f64)]| v.iter().find(|(x, _)| x == m).map(|(_, y)| *y);
        if let Some(f) = of(&a.forwards_per_question) {
            let _ = write!(s, "; {f:.1} model calls per question");
        }
        if let (Some(c), Some(d)) = (of(&a.committed_per_step), of(&a.decoded_per_step)) {
            let _ = write!(
                s,
                "; {} decoder: {c:.2} slot tokens resolved per candidate per step ({d:.2} decoded, the rest end padding)",
                a.decoder
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\naggregation (all methods): {:.4} s in all", a.aggregate_seconds);
    if a.cached > 0 {
        let _ = writeln!(
            s,
            "{} question×mode decodes were reused from {} (their decoding seconds are those of the run that made them)",
            a.cached,
            a.cache.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned())
        );
    }
    s
}

/// The chunkers with a pipelines/bench-<name>.toml, in report order.
const ALL_CHUNKERS: [&str; 5] = ["ppl", "margin", "semantic", "fixed", "sentence"];

fn mode_name(mode: Mode) -> String {
    format!("{mode:?}").to_lowercase()
}

/// The sentence scores of one document under a PPL pipeline, and where its chunks start
/// (sentence indices, before merging): the data of the perplexity-curve plot.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct PplCurve {
    document: String,
    /// Mean NLL (nats) per sentence.
    scores: Vec<f32>,
    /// Sentence index where each chunk after the first starts.
    boundaries: Vec<usize>,
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
    let models = crate::pipeline::Models::load(pipeline, opts, false, false, 1)?;
    let chunker = models.chunker(&pipeline.chunker)?;
    let document = metarag_core::Document::from_text(name.clone(), text);
    let sentences = metarag_core::split::RuleSplitter::default().split(&document.text);
    let chunked = chunker.chunk(&document, &sentences)?;
    let boundaries =
        chunked.chunks.iter().skip(1).filter_map(|c| sentences.iter().position(|s| s.start == c.span.start)).collect();
    let curve = PplCurve { document: name, scores: chunked.sentence_scores, boundaries };
    metarag_index::manifest::write_atomic(&cache, serde_json::to_string(&curve)?.as_bytes())?;
    Ok(curve)
}

/// The run's plots (SVG) in OUT; a plot that cannot be drawn is a warning, not a failure.
fn draw_plots(
    out: &Path,
    runs: &[ChunkerRun],
    lengths: &[(String, Vec<f64>)],
    curve: Option<&PplCurve>,
    answers: Option<&AnswerReport>,
    steps_curve: &[StepsPoint],
    stages: &[StageTime],
) -> Vec<PathBuf> {
    use crate::plots;
    // Plots of an earlier run in OUT would not match this report.
    for stale in [
        "chunk_lengths.svg",
        "ppl_curve.svg",
        "recall_at_k.svg",
        "accuracy_vs_samples.svg",
        "accuracy_vs_steps.svg",
        "stage_times.svg",
    ] {
        let _ = std::fs::remove_file(out.join(stale));
    }
    let mut written = Vec::new();
    if !lengths.is_empty() {
        plots::keep(
            plots::histograms(
                &out.join("chunk_lengths.svg"),
                "Chunk length per chunker",
                "words per chunk",
                lengths,
                30,
            ),
            &mut written,
        );
    }
    if let Some(c) = curve {
        let points: Vec<(f64, f64)> = c.scores.iter().enumerate().map(|(i, &s)| (i as f64, f64::from(s))).collect();
        let marks: Vec<f64> = c.boundaries.iter().map(|&b| b as f64 - 0.5).collect();
        plots::keep(
            plots::lines(
                &out.join("ppl_curve.svg"),
                &format!("Perplexity curve of {} (grey: chunk boundaries)", c.document),
                "sentence",
                "mean NLL (nats)",
                &[(String::new(), points)],
                None,
                &marks,
            ),
            &mut written,
        );
    }
    let recall: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .flat_map(|r| {
            r.modes.iter().map(move |m| {
                let pts = m.metrics.recall.iter().enumerate().map(|(k, &v)| ((k + 1) as f64, v)).collect();
                (format!("{} {}", r.chunker, mode_name(m.mode)), pts)
            })
        })
        .collect();
    if !recall.is_empty() {
        plots::keep(
            plots::lines(&out.join("recall_at_k.svg"), "Recall@k", "k", "recall", &recall, Some((0.0, 1.0)), &[]),
            &mut written,
        );
    }
    if let Some(a) = answers.filter(|a| !a.samples_curve.is_empty()) {
        let series: Vec<(String, Vec<(f64, f64)>)> = a
            .samples_curve
            .iter()
            .map(|c| {
                (format!("{} {}", c.infill, c.method), c.points.iter().map(|p| (p.samples as f64, p.em)).collect())
            })
            .collect();
        plots::keep(
            plots::lines(
                &out.join("accuracy_vs_samples.svg"),
                "Exact match vs number of samples (first N of the same candidates)",
                "samples N",
                "exact match",
                &series,
                None,
                &[],
            ),
            &mut written,
        );
    }
    if !steps_curve.is_empty() {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for p in steps_curve {
            let name = format!("{} {}", p.infill, p.method);
            match series.iter_mut().find(|(n, _)| *n == name) {
                Some((_, pts)) => pts.push((p.steps as f64, p.em)),
                None => series.push((name, vec![(p.steps as f64, p.em)])),
            }
        }
        for (_, pts) in &mut series {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        plots::keep(
            plots::lines(
                &out.join("accuracy_vs_steps.svg"),
                "Exact match vs denoising steps (masked decoder)",
                "steps",
                "exact match",
                &series,
                None,
                &[],
            ),
            &mut written,
        );
    }
    if !stages.is_empty() {
        let items: Vec<(String, f64)> = stages.iter().map(|s| (s.stage.clone(), s.seconds)).collect();
        plots::keep(plots::bars(&out.join("stage_times.svg"), "Time per stage", "seconds", &items), &mut written);
    }
    written
}

fn stages_markdown(stages: &[StageTime], plots: &[PathBuf]) -> String {
    let mut s = String::from("\n# Stages\n\n| stage | wall s | peak RSS MiB |\n|---|---:|---:|\n");
    for st in stages {
        let mem = st.peak_rss_mib.map_or_else(|| "-".to_string(), |m| format!("{m:.0}"));
        let _ = writeln!(s, "| {} | {:.1} | {mem} |", st.stage, st.seconds);
    }
    if !plots.is_empty() {
        s.push_str("\nPlots: ");
        let names: Vec<String> =
            plots.iter().filter_map(|p| p.file_name()).map(|f| format!("[{0}]({0})", f.to_string_lossy())).collect();
        s.push_str(&names.join(", "));
        s.push('\n');
    }
    s
}

/// A key for a list of texts embedded with this build's embedder (sha256, 16 hex digits).
fn text_key(texts: &[&str]) -> String {
    hash_key(std::iter::once(crate::pipeline::EMBEDDER_ID).chain(texts.iter().copied()))
}

/// sha256 of the parts, each followed by a NUL byte; 16 hex digits.
fn hash_key<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for t in parts {
        h.update(t.as_bytes());
        h.update([0u8]);
    }
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Vectors cached as little-endian f32, `n` rows of equal width; None if absent or not that.
fn read_vectors(path: &Path, n: usize) -> Option<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    if n == 0 || bytes.len() % (4 * n) != 0 {
        return None;
    }
    let dims = bytes.len() / 4 / n;
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Some(floats.chunks(dims).map(<[f32]>::to_vec).collect())
}

fn write_vectors(path: &Path, vectors: &[Vec<f32>]) -> anyhow::Result<()> {
    let bytes: Vec<u8> = vectors.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    metarag_index::manifest::write_atomic(path, &bytes)?;
    Ok(())
}

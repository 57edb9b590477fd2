//! `bench --generate`: every question answered once per infill mode (decodes cached by
//! settings), every aggregation method scored on the same candidates.

use std::path::Path;

use anyhow::{Context, bail};
use metarag_eval::bench::{AnswerCache, AnswerContext, AnswerReport, AnswerTally, CachedAnswer};
use metarag_eval::{Dataset, Question};
use metarag_index::{Index, Query};
use metarag_onnx::RuntimeOptions;

use super::{BenchOptions, infill_name, judge, mode_name};

/// Answers the first `--answer-limit` questions from the index at `index_dir`: one decode per
/// question and infill mode, aggregated by every method on the same candidates. Per-question
/// results go to OUT/`log_name`.
pub(super) fn answer_questions(
    args: &BenchOptions,
    data: &Dataset,
    qvecs: &[Vec<f32>],
    index_dir: &Path,
    opts: &RuntimeOptions,
    log_name: &str,
) -> anyhow::Result<AnswerReport> {
    use std::io::Write as _;
    if args.aggregate.is_empty() || args.infill.is_empty() {
        bail!("--generate needs at least one --aggregate method and one --infill mode");
    }
    let n = args.answer_limit.unwrap_or(data.questions.len()).min(data.questions.len());
    let index = Index::open(index_dir)?;
    let mut cache = AnswerCache::open(&args.out, &cache_key(args, index_dir, opts)?)?;
    // Loaded on the first question the cache does not have.
    let mut generator: Option<crate::Generator> = None;
    let mut bar = crate::progress::Progress::new(
        "answering questions×modes",
        (n * args.infill.len()) as u64,
        "answering {bar:30} {pos}/{len} questions×modes  {elapsed} (eta {eta})",
        args.quiet,
    );
    let log_path = args.out.join(log_name);
    let mut log = std::io::BufWriter::new(
        std::fs::File::create(&log_path).with_context(|| format!("{}: cannot create", log_path.display()))?,
    );
    let infills: Vec<String> = args.infill.iter().map(|&m| infill_name(m)).collect();
    let mut tally = AnswerTally::new(infills.clone(), args.aggregate.clone(), args.decoding.samples);
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
                crate::generator::context(&hits)
            }
        };
        let golds: Vec<&str> = q.answers.iter().map(|a| a.text.as_str()).collect();
        for (i, &infill) in args.infill.iter().enumerate() {
            let context: Vec<String> = chunks.iter().map(|c| c.id.clone()).collect();
            let answer = match cache.get(&q.id, &infills[i], &context) {
                Some(hit) => hit,
                None => {
                    let generator = match &mut generator {
                        Some(g) => g,
                        None => generator.insert(crate::Generator::load(
                            args.decoding.decoder,
                            args.decoding.generator,
                            opts,
                        )?),
                    };
                    let cfg = generator.config(&args.decoding, infill, args.aggregate[0])?;
                    let answer =
                        generator.ask(&q.question, &chunks, &cfg).with_context(|| format!("question {}", q.id))?;
                    let mut fresh = CachedAnswer::new(
                        q.id.clone(),
                        infills[i].clone(),
                        context,
                        answer.stats.decode_seconds,
                        answer.candidates,
                    );
                    fresh.forwards = Some(answer.stats.forwards);
                    fresh.committed_per_step = answer.stats.committed_per_step;
                    fresh.decoded_per_step = answer.stats.decoded_per_step;
                    cache.put(fresh)?
                }
            };
            let winners: Vec<serde_json::Value> = tally
                .add(i, &answer, &golds)
                .into_iter()
                .map(|(method, text, confidence)| {
                    serde_json::json!({"method": method, "answer": text, "confidence": confidence})
                })
                .collect();
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
    let runs = tally.runs();
    for r in &runs {
        let m = &r.metrics;
        eprintln!(
            "answers {:>10} {:>4}: EM {:.3}  F1 {:.3}  ECE {:.3}  Brier {:.3}  AUROC {:.3}  ({} questions)",
            r.infill,
            r.method,
            m.em,
            m.f1,
            m.ece.unwrap_or(f64::NAN),
            m.brier.unwrap_or(f64::NAN),
            m.auroc.unwrap_or(f64::NAN),
            m.questions
        );
    }
    Ok(AnswerReport {
        decoder: format!("{:?}", args.decoding.decoder).to_lowercase(),
        steps: args.decoding.steps,
        forwards_per_question: tally.forwards_per_question(),
        answer_tokens_per_second: tally.answer_tokens_per_second(),
        committed_per_step: tally.committed_per_step(),
        decoded_per_step: tally.decoded_per_step(),
        questions: n,
        samples: args.decoding.samples,
        seed: args.decoding.seed,
        context: args.answer_context,
        context_retrieval: mode_name(args.answer_retrieval),
        context_k: args.context_k,
        context_has_answer: has_answer as f64 / n.max(1) as f64,
        runs,
        decode_seconds: tally.decode_seconds(),
        cached: cache.hits,
        cache: cache.path.clone(),
        aggregate_seconds: tally.aggregate_seconds(),
        samples_curve: tally.samples_curve(),
    })
}

/// Raised when a change to the decoders makes earlier cached decodes stale (their tokens or
/// the log-probabilities a candidate carries); part of every answer-cache key. 2: the masked
/// decoder's end token joined each candidate's path; 3: a masked candidate that fills its
/// slot goes on in the wider one instead of starting again.
const DECODE_REVISION: u32 = 3;

/// Everything the candidates depend on, serialized by the settings' serde names (renaming a
/// Rust type or variant never invalidates a cache): index, decoder and generator, context
/// retrieval, the decoding configuration per infill mode (the first aggregation method marks
/// their groups and pruning in the log), the models manifest and [`DECODE_REVISION`].
fn cache_key(args: &BenchOptions, index_dir: &Path, opts: &RuntimeOptions) -> anyhow::Result<Vec<String>> {
    let configs = args
        .infill
        .iter()
        .map(|&m| Ok(serde_json::to_string(&args.decoding.config(m, args.aggregate[0])?)?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let manifest = std::fs::read(opts.models_dir.join("manifest.json")).unwrap_or_default();
    let index_name = index_dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(vec![
        index_name,
        format!("{} {}", args.decoding.decoder.name(), args.decoding.generator.name()),
        match args.answer_context {
            AnswerContext::Retrieved => serde_json::json!({
                "retrieval": args.answer_retrieval, "k": args.context_k, "rrf_k": args.rrf_k, "weights": args.weights,
            })
            .to_string(),
            AnswerContext::Gold => "gold passage".to_string(),
        },
        configs.join("\n"),
        String::from_utf8_lossy(&manifest).into_owned(),
        format!("decode revision {DECODE_REVISION}"),
    ])
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

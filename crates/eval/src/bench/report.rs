//! Report types of a bench run, and their markdown.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use metarag_core::pipeline::Pipeline;
use metarag_generate::aggregate::Method;
use serde::{Deserialize, Serialize};

use super::{BenchError, StageTime, write_atomic};
use crate::{AnswerMetrics, RetrievalMetrics};

/// One configuration's index and its retrieval quality per mode.
#[derive(Debug, Serialize)]
pub struct ChunkerRun {
    /// The configuration's name.
    pub chunker: String,
    /// Its pipeline.
    pub pipeline: Pipeline,
    /// Its index directory.
    pub index: PathBuf,
    /// Documents indexed.
    pub documents: usize,
    /// Chunks indexed.
    pub chunks: u64,
    /// Mean words per chunk.
    pub mean_chunk_words: f64,
    /// Wall seconds of the ingest (0-ish when the index was reused).
    pub ingest_seconds: f64,
    /// Seconds of chunking inside the ingest.
    pub chunking_seconds: f64,
    /// Retrieval quality per mode.
    pub modes: Vec<ModeRun>,
}

/// Retrieval quality of one mode.
#[derive(Debug, Serialize)]
pub struct ModeRun {
    /// The retrieval mode (`bm25`, `dense`, `hybrid`).
    pub mode: String,
    /// Its metrics.
    pub metrics: RetrievalMetrics,
    /// Wall seconds of all its searches.
    pub search_seconds: f64,
}

/// Answer quality of one infill mode × aggregation method.
#[derive(Debug, Serialize)]
pub struct AnswerRun {
    /// Infill mode name.
    pub infill: String,
    /// Aggregation method.
    pub method: Method,
    /// Its metrics.
    pub metrics: AnswerMetrics,
}

/// One point of the accuracy-vs-steps curve (`--steps-sweep`).
#[derive(Debug, Serialize)]
pub struct StepsPoint {
    /// Denoising steps.
    pub steps: usize,
    /// Infill mode name.
    pub infill: String,
    /// Aggregation method.
    pub method: Method,
    /// Exact match.
    pub em: f64,
    /// Token F1.
    pub f1: f64,
    /// Slot tokens committed per candidate per step.
    pub committed_per_step: Option<f64>,
    /// The same without end padding.
    pub decoded_per_step: Option<f64>,
    /// Decoding seconds of this infill mode.
    pub decode_seconds: Option<f64>,
}

/// Where the answers' context comes from (`--answer-context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerContext {
    /// The top chunks of a retrieval mode.
    Retrieved,
    /// The gold passage alone.
    Gold,
}

impl std::str::FromStr for AnswerContext {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "retrieved" => Ok(AnswerContext::Retrieved),
            "gold" => Ok(AnswerContext::Gold),
            other => Err(format!("unknown answer context {other:?} (retrieved, gold)")),
        }
    }
}

/// The answers of a run.
#[derive(Debug, Serialize)]
pub struct AnswerReport {
    /// "causal" or "masked".
    pub decoder: String,
    /// --steps of the masked decoder (None: one token per step).
    pub steps: Option<usize>,
    /// Mean model calls per question, per infill mode (decodes cached before this was kept are
    /// left out).
    pub forwards_per_question: Vec<(String, f64)>,
    /// Masked decoder: mean slot tokens committed per candidate per step, per infill mode.
    pub committed_per_step: Vec<(String, f64)>,
    /// Masked decoder: the same without the end padding an end token implies.
    pub decoded_per_step: Vec<(String, f64)>,
    /// Answer tokens (all candidates, without the end) per second of decoding, per infill mode.
    pub answer_tokens_per_second: Vec<(String, f64)>,
    /// Questions answered.
    pub questions: usize,
    /// Candidates per question.
    pub samples: usize,
    /// Sampling seed.
    pub seed: u64,
    /// Where the context comes from.
    pub context: AnswerContext,
    /// Retrieval mode of the context.
    pub context_retrieval: String,
    /// Chunks of context.
    pub context_k: usize,
    /// Share of answered questions whose context holds a gold answer span.
    pub context_has_answer: f64,
    /// Quality per infill mode × method.
    pub runs: Vec<AnswerRun>,
    /// Decoding seconds per infill mode (all questions; a reused decode counts the seconds
    /// it took when it was made).
    pub decode_seconds: Vec<(String, f64)>,
    /// Question × mode decodes reused from the answer cache.
    pub cached: usize,
    /// The answer cache of this configuration.
    pub cache: PathBuf,
    /// Aggregation seconds (all methods, all questions).
    pub aggregate_seconds: f64,
    /// EM / F1 with only the first N candidates of the same decode (what N samples would give:
    /// every candidate has its own random stream), N = 1, 2, 4, … up to the samples.
    pub samples_curve: Vec<SamplesCurve>,
}

/// EM / F1 against the number of candidates, for one infill mode × method.
#[derive(Debug, Serialize)]
pub struct SamplesCurve {
    /// Infill mode name.
    pub infill: String,
    /// Aggregation method.
    pub method: Method,
    /// The points, by increasing sample count.
    pub points: Vec<SamplesPoint>,
}

/// One point of a [`SamplesCurve`].
#[derive(Debug, Serialize)]
pub struct SamplesPoint {
    /// Candidates aggregated.
    pub samples: usize,
    /// Exact match.
    pub em: f64,
    /// Token F1.
    pub f1: f64,
}

/// The sentence scores of one document under a PPL pipeline, and where its chunks start
/// (sentence indices, before merging): the data of the perplexity-curve plot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PplCurve {
    /// The document's file name.
    pub document: String,
    /// Mean NLL (nats) per sentence.
    pub scores: Vec<f32>,
    /// Sentence index where each chunk after the first starts.
    pub boundaries: Vec<usize>,
}

/// Everything a bench run measured: `report.json`, and `report.md` from [`Self::markdown`].
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The dataset directory.
    pub dataset: PathBuf,
    /// Questions asked.
    pub questions: usize,
    /// Documents indexed.
    pub documents: usize,
    /// Seconds to embed the questions (or read them from the cache).
    pub question_embedding_seconds: f64,
    /// RRF constant of hybrid retrieval.
    pub rrf_k: f32,
    /// RRF weights (BM25, dense) of hybrid retrieval.
    pub rrf_weights: Option<[f32; 2]>,
    /// One per configuration.
    pub runs: Vec<ChunkerRun>,
    /// The answers (`--generate`).
    pub answers: Option<AnswerReport>,
    /// Accuracy against denoising steps (`--steps-sweep`).
    pub steps_curve: Vec<StepsPoint>,
    /// Wall time and memory per stage.
    pub stages: Vec<StageTime>,
    /// The perplexity curve of the first question's document.
    pub ppl_curve: Option<PplCurve>,
    /// The SVG plots written next to the report.
    pub plots: Vec<String>,
}

impl BenchReport {
    /// The report in markdown: retrieval table, answers, steps curve, stages and plots.
    pub fn markdown(&self) -> String {
        let mut md = retrieval_markdown(&self.runs, self.questions, &self.dataset);
        if let Some(a) = &self.answers {
            md.push_str(&answers_markdown(a));
        }
        if !self.steps_curve.is_empty() {
            md.push_str(&steps_markdown(&self.steps_curve));
        }
        md.push_str(&stages_markdown(&self.stages, &self.plots));
        md
    }

    /// Writes `report.json` and `report.md` into `out`; returns the markdown.
    pub fn write(&self, out: &Path) -> Result<String, BenchError> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|source| BenchError::Json { what: "report.json".into(), source })?;
        write_atomic(&out.join("report.json"), json.as_bytes())?;
        let md = self.markdown();
        write_atomic(&out.join("report.md"), md.as_bytes())?;
        Ok(md)
    }
}

fn retrieval_markdown(runs: &[ChunkerRun], questions: usize, dir: &Path) -> String {
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
                "| {} | {} | {:.1} | {:.1} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
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

fn answers_markdown(a: &AnswerReport) -> String {
    let mut s = String::new();
    let context = match a.context {
        AnswerContext::Retrieved => format!("{} top {}", a.context_retrieval, a.context_k),
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
        if let Some(r) = of(&a.answer_tokens_per_second) {
            let _ = write!(s, "; {r:.1} answer tokens/s ({} decoder, all candidates)", a.decoder);
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

fn stages_markdown(stages: &[StageTime], plots: &[String]) -> String {
    let mut s = String::from("\n# Stages\n\n| stage | wall s | peak RSS MiB |\n|---|---:|---:|\n");
    for st in stages {
        let mem = st.peak_rss_mib.map_or_else(|| "-".to_string(), |m| format!("{m:.0}"));
        let _ = writeln!(s, "| {} | {:.1} | {mem} |", st.stage, st.seconds);
    }
    if !plots.is_empty() {
        s.push_str("\nPlots: ");
        let names: Vec<String> = plots.iter().map(|f| format!("[{f}]({f})")).collect();
        s.push_str(&names.join(", "));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AnswerRecord;
    use crate::retrieval::Judged;

    fn report() -> BenchReport {
        let metrics = RetrievalMetrics::from_runs(&[Judged::new(vec![false, true]), Judged::new(vec![true])]);
        let answers = AnswerReport {
            decoder: "causal".into(),
            steps: None,
            forwards_per_question: vec![("free".into(), 12.0)],
            committed_per_step: vec![],
            decoded_per_step: vec![],
            answer_tokens_per_second: vec![("free".into(), 4.0)],
            questions: 2,
            samples: 8,
            seed: 7,
            context: AnswerContext::Gold,
            context_retrieval: "hybrid".into(),
            context_k: 2,
            context_has_answer: 1.0,
            runs: vec![AnswerRun {
                infill: "free".into(),
                method: Method::Rpc,
                metrics: AnswerMetrics::from_records(&[
                    AnswerRecord::score("Paris", &["Paris"], Some(0.9)),
                    AnswerRecord::score("Rome", &["Oslo"], Some(0.2)),
                ]),
            }],
            decode_seconds: vec![("free".into(), 3.0)],
            cached: 1,
            cache: PathBuf::from("/out/answer-cache-00.jsonl"),
            aggregate_seconds: 0.001,
            samples_curve: vec![],
        };
        BenchReport {
            dataset: PathBuf::from("/data/squad"),
            questions: 2,
            documents: 1,
            question_embedding_seconds: 0.5,
            rrf_k: 60.0,
            rrf_weights: None,
            runs: vec![ChunkerRun {
                chunker: "ppl".into(),
                pipeline: Pipeline::default(),
                index: PathBuf::from("/out/index-ppl"),
                documents: 1,
                chunks: 10,
                mean_chunk_words: 42.0,
                ingest_seconds: 1.0,
                chunking_seconds: 0.5,
                modes: vec![ModeRun { mode: "hybrid".into(), metrics, search_seconds: 0.1 }],
            }],
            answers: Some(answers),
            steps_curve: vec![],
            stages: vec![StageTime { stage: "dataset".into(), seconds: 0.3, peak_rss_mib: None }],
            ppl_curve: None,
            plots: vec!["recall_at_k.svg".into()],
        }
    }

    #[test]
    fn markdown_has_every_section_with_its_numbers() {
        let md = report().markdown();
        assert!(md.starts_with("# Retrieval on /data/squad (2 questions)"), "{md}");
        assert!(md.contains("| ppl | 10 | 42.0 | 0.5 | hybrid | 0.500 | 1.000 | 1.000 | 0.750 |"), "{md}");
        assert!(md.contains("context: the gold passage alone; gold answer in context for 100.0%"), "{md}");
        assert!(md.contains("| free | rpc | 0.500 | 0.500 |"), "{md}");
        assert!(md.contains("free: 3.0 s decoding (1.50 s per question); 12.0 model calls per question"), "{md}");
        assert!(md.contains("1 question×mode decodes were reused from answer-cache-00.jsonl"), "{md}");
        assert!(md.contains("| dataset | 0.3 | - |"), "{md}");
        assert!(md.ends_with("Plots: [recall_at_k.svg](recall_at_k.svg)\n"), "{md}");
        assert!(!md.contains("denoising steps"), "no steps section without a sweep");
    }

    #[test]
    fn write_puts_json_and_markdown_side_by_side() {
        let d = std::env::temp_dir().join(format!("metarag-report-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let r = report();
        let md = r.write(&d).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("report.md")).unwrap(), md);
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["runs"][0]["modes"][0]["mode"], "hybrid");
        assert_eq!(json["answers"]["context"], "gold");
        assert_eq!(json["answers"]["runs"][0]["method"], "rpc");
        assert_eq!(json["questions"], 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn plots_are_drawn_from_the_report() {
        let d = std::env::temp_dir().join(format!("metarag-plots-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ppl_curve.svg"), "stale").unwrap();
        let (written, failed) =
            super::super::plots::draw_all(&d, &report(), &[("ppl".into(), vec![10.0, 40.0, 41.0, 90.0])]);
        assert!(failed.is_empty(), "{failed:?}");
        let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["chunk_lengths.svg", "recall_at_k.svg", "stage_times.svg"]);
        assert!(!d.join("ppl_curve.svg").exists(), "a stale plot of an earlier run is removed");
        let svg = std::fs::read_to_string(d.join("recall_at_k.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("ppl hybrid"), "{}", &svg[..200.min(svg.len())]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn answer_context_parses_its_names() {
        assert_eq!("gold".parse::<AnswerContext>().unwrap(), AnswerContext::Gold);
        assert_eq!("retrieved".parse::<AnswerContext>().unwrap(), AnswerContext::Retrieved);
        assert!("top".parse::<AnswerContext>().unwrap_err().contains("retrieved, gold"));
    }
}

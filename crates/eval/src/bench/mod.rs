//! The benchmark runner's library half: the run plan, relevance judging, the caches that make a
//! rerun only do what changed, the answer tally, report types, markdown and plots.
//!
//! `metarag bench` (the CLI) owns what needs models and an index (ingesting, searching,
//! decoding); everything it decides or writes about a run is here and unit-tested.
//!
//! ```
//! use metarag_eval::bench::{self, AnswerCache, CachedAnswer};
//!
//! // The chunkers to compare: each reads pipelines/bench-<name>.toml of the checkout.
//! let plan = bench::plan(std::path::Path::new("."), &["ppl".into(), "fixed".into()], &[]).unwrap();
//! assert_eq!(plan[1].name, "fixed");
//! assert!(plan[1].file.ends_with("pipelines/bench-fixed.toml"));
//!
//! // Decodes are kept per question × infill mode in a cache named after their settings.
//! let out = std::env::temp_dir().join(format!("bench-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&out).unwrap();
//! let settings = ["index-ppl-0123".to_string(), "causal infill".to_string()];
//! let mut cache = AnswerCache::open(&out, &settings).unwrap();
//! let decode = CachedAnswer::new("q1", "extractive", vec!["doc#0".into()], 0.5, Vec::new());
//! cache.put(decode).unwrap();
//! let mut again = AnswerCache::open(&out, &settings).unwrap();
//! assert!(again.get("q1", "extractive", &["doc#0".to_string()]).is_some());
//! # std::fs::remove_dir_all(&out).unwrap();
//! ```

mod cache;
pub mod plots;
mod report;
mod tally;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use cache::{AnswerCache, CachedAnswer};
pub use report::{
    AnswerContext, AnswerReport, AnswerRun, BenchReport, ChunkerRun, ModeRun, PplCurve, SamplesCurve, SamplesPoint,
    StepsPoint,
};
pub use tally::AnswerTally;

use crate::Question;
use crate::retrieval::{Judged, is_relevant};

/// Errors of the benchmark runner's files and plan.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A value could not be serialized.
    #[error("{what}: {source}")]
    Json {
        /// What was being written.
        what: String,
        /// The error.
        source: serde_json::Error,
    },
    /// Two configurations of one run would share a name (and so an index and report rows).
    #[error("two configurations are named {name:?} ({file}): rename the file")]
    DuplicateName {
        /// The name.
        name: String,
        /// The second configuration's file.
        file: PathBuf,
    },
    /// A plot could not be drawn.
    #[error("{path}: cannot draw: {message}")]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io { path: path.to_path_buf(), source }
}

/// The chunkers with a `pipelines/bench-<name>.toml`, in report order.
pub const ALL_CHUNKERS: [&str; 5] = ["ppl", "margin", "semantic", "fixed", "sentence"];

/// One configuration of a run: a name (report rows, index directory) and its pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The configuration's name: the chunker, or the pipeline file's stem.
    pub name: String,
    /// Its pipeline TOML.
    pub file: PathBuf,
}

/// The configurations of a run, in report order: each named chunker reads
/// `<checkout>/pipelines/bench-<name>.toml`, then each extra pipeline file, named after its
/// stem. No chunker and no file means all of [`ALL_CHUNKERS`]. Two configurations with one
/// name are an error.
pub fn plan(checkout: &Path, chunkers: &[String], pipelines: &[PathBuf]) -> Result<Vec<Planned>, BenchError> {
    let names: Vec<String> = if chunkers.is_empty() && pipelines.is_empty() {
        ALL_CHUNKERS.iter().map(|c| c.to_string()).collect()
    } else {
        chunkers.to_vec()
    };
    let mut plan: Vec<Planned> = names
        .into_iter()
        .map(|name| Planned { file: checkout.join(format!("pipelines/bench-{name}.toml")), name })
        .collect();
    for file in pipelines {
        let name = file.file_stem().map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned());
        if plan.iter().any(|p| p.name == name) {
            return Err(BenchError::DuplicateName { name, file: file.clone() });
        }
        plan.push(Planned { name, file: file.clone() });
    }
    Ok(plan)
}

/// Judges a ranking: the chunk at each rank is given by its file path and byte span; it is
/// relevant when it is the question's document (by file name) and covers a gold answer span.
pub fn judge<'a>(q: &Question, ranked: impl IntoIterator<Item = (&'a str, u64, u64)>) -> Judged {
    Judged::new(
        ranked
            .into_iter()
            .map(|(path, start, end)| {
                let file = Path::new(path).file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
                is_relevant(q, &file, start, end)
            })
            .collect(),
    )
}

/// Wall time and peak resident memory of one bench stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageTime {
    /// The stage.
    pub stage: String,
    /// Wall seconds.
    pub seconds: f64,
    /// Peak resident set (MiB) while the stage ran: the process high-water mark, reset before
    /// the stage through /proc/self/clear_refs (Linux); without the reset it is the peak so far.
    pub peak_rss_mib: Option<f64>,
}

/// The stages of a run, timed as they run.
#[derive(Debug, Default)]
pub struct StageLog {
    /// The stages so far, in order.
    pub stages: Vec<StageTime>,
}

impl StageLog {
    /// Runs `f` as the stage `stage`; the stage is recorded only when it succeeds.
    pub fn run<T, E>(&mut self, stage: impl Into<String>, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
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

/// sha256 of the parts, each followed by a NUL byte; 16 hex digits. Cache file names are
/// built from it, so it must never change for the same parts.
pub fn hash_key<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for t in parts {
        h.update(t.as_bytes());
        h.update([0u8]);
    }
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file of a list of texts embedded by the embedder `embedder_id`:
/// `OUT/question-vectors-<key>.f32`.
pub fn vectors_path(out: &Path, embedder_id: &str, texts: &[&str]) -> PathBuf {
    let key = hash_key(std::iter::once(embedder_id).chain(texts.iter().copied()));
    out.join(format!("question-vectors-{key}.f32"))
}

/// Vectors cached as little-endian f32, `n` rows of equal width; None if absent or not that.
pub fn read_vectors(path: &Path, n: usize) -> Option<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    if n == 0 || bytes.len() % (4 * n) != 0 {
        return None;
    }
    let dims = bytes.len() / 4 / n;
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Some(floats.chunks(dims).map(<[f32]>::to_vec).collect())
}

/// Writes vectors for [`read_vectors`].
pub fn write_vectors(path: &Path, vectors: &[Vec<f32>]) -> Result<(), BenchError> {
    let bytes: Vec<u8> = vectors.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file and a rename: a reader (or a rerun after
/// an interruption) sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    metarag_core::write_atomic(path, bytes, || {}).map_err(|(p, e)| io(&p)(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AnswerSpan;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("metarag-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn plan_defaults_to_every_chunker_and_rejects_duplicate_names() {
        let all = plan(Path::new("/co"), &[], &[]).unwrap();
        assert_eq!(all.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ALL_CHUNKERS);
        assert_eq!(all[0].file, Path::new("/co/pipelines/bench-ppl.toml"));
        // A pipeline file alone: only it.
        let one = plan(Path::new("/co"), &[], &[PathBuf::from("x/my.toml")]).unwrap();
        assert_eq!(one, vec![Planned { name: "my".into(), file: PathBuf::from("x/my.toml") }]);
        let err = plan(Path::new("/co"), &["ppl".into()], &[PathBuf::from("a/ppl.toml")]).unwrap_err();
        assert!(err.to_string().contains("\"ppl\"") && err.to_string().contains("a/ppl.toml"), "{err}");
    }

    #[test]
    fn judge_needs_the_same_document_and_a_covering_span() {
        let q = Question {
            id: "q".into(),
            question: "?".into(),
            doc: "a.txt".into(),
            answers: vec![AnswerSpan { text: "x".into(), start: 10, end: 14 }],
        };
        let j = judge(&q, [("/idx/a.txt", 0, 14), ("/idx/a.txt", 11, 20), ("/idx/b.txt", 0, 99), ("a.txt", 10, 14)]);
        assert_eq!(j.relevant, vec![true, false, false, true]);
    }

    #[test]
    fn hash_key_is_pinned() {
        // Cache names of earlier runs depend on this value: it must not change.
        assert_eq!(hash_key(["a", "b"]), "8fb20ef63ced4145");
        assert_ne!(hash_key(["ab"]), hash_key(["a", "b"]));
    }

    #[test]
    fn vectors_round_trip_and_reject_another_shape() {
        let d = tmp("vectors");
        let p = vectors_path(&d, "embedder", &["one", "two"]);
        assert_ne!(p, vectors_path(&d, "other embedder", &["one", "two"]));
        let v = vec![vec![1.0, -2.5, 3.0], vec![0.0, 1e-3, f32::MAX]];
        write_vectors(&p, &v).unwrap();
        assert_eq!(read_vectors(&p, 2).unwrap(), v);
        assert!(read_vectors(&p, 4).is_none());
        assert!(read_vectors(&p, 0).is_none());
        assert!(read_vectors(&d.join("absent"), 2).is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stage_log_records_successful_stages_only() {
        let mut log = StageLog::default();
        assert_eq!(log.run("one", || Ok::<_, String>(3)).unwrap(), 3);
        assert!(log.run("two", || Err::<(), _>("failed".to_string())).is_err());
        assert_eq!(log.stages.len(), 1);
        assert_eq!(log.stages[0].stage, "one");
        assert!(log.stages[0].seconds >= 0.0);
    }
}

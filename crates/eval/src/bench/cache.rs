//! The answer cache: decodes of earlier runs with the same settings, so a rerun (or a run after
//! an interruption) decodes only the questions it does not have yet.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use metarag_generate::qa::CandidateReport;
use serde::{Deserialize, Serialize};

use super::{BenchError, hash_key, io};

/// One question × infill decode, as kept in the answer cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// Question id.
    pub id: String,
    /// Infill mode name (`extractive`, `free`).
    pub infill: String,
    /// Ids of the context chunks, in prompt order.
    pub context: Vec<String>,
    /// Seconds the decode took when it was made.
    pub decode_seconds: f64,
    /// The sampled candidates, as aggregated by the run's first method.
    pub candidates: Vec<CandidateReport>,
    /// Model calls of the decode (absent in caches written before it was kept).
    #[serde(default)]
    pub forwards: Option<usize>,
    /// Masked decoder: slot tokens committed per candidate per step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_per_step: Option<f64>,
    /// Masked decoder: the same without the end padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded_per_step: Option<f64>,
    /// True when read back from the cache (not stored).
    #[serde(skip)]
    pub cached: bool,
}

impl CachedAnswer {
    /// A fresh decode without decoder statistics.
    pub fn new(
        id: impl Into<String>,
        infill: impl Into<String>,
        context: Vec<String>,
        decode_seconds: f64,
        candidates: Vec<CandidateReport>,
    ) -> Self {
        CachedAnswer {
            id: id.into(),
            infill: infill.into(),
            context,
            decode_seconds,
            candidates,
            forwards: None,
            committed_per_step: None,
            decoded_per_step: None,
            cached: false,
        }
    }
}

/// Decodes of earlier runs with the same settings: `OUT/answer-cache-<key>.jsonl`, one line per
/// question × infill, appended (and flushed) as each is decoded. The key hashes the settings'
/// parts (index, decoder, context retrieval, decoding configuration in serde form, models), so
/// renaming a Rust type never invalidates a cache, and changing a setting never reuses one.
#[derive(Debug)]
pub struct AnswerCache {
    /// The cache file.
    pub path: PathBuf,
    entries: HashMap<(String, String), CachedAnswer>,
    file: std::fs::File,
    /// Decodes reused so far.
    pub hits: usize,
}

impl AnswerCache {
    /// Opens (or creates) the cache of the settings `parts` in `out`. A line cut by an
    /// interruption, or one that does not parse, is ignored (its question is decoded again).
    pub fn open(out: &Path, parts: &[String]) -> Result<Self, BenchError> {
        let path = out.join(format!("answer-cache-{}.jsonl", hash_key(parts.iter().map(String::as_str))));
        let mut file =
            std::fs::OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io(&path))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io(&path))?;
        let mut entries = HashMap::new();
        for line in text.lines() {
            if let Ok(mut a) = serde_json::from_str::<CachedAnswer>(line) {
                a.cached = true;
                entries.insert((a.id.clone(), a.infill.clone()), a);
            }
        }
        if !text.is_empty() && !text.ends_with('\n') {
            file.seek(SeekFrom::End(0)).map_err(io(&path))?;
            file.write_all(b"\n").map_err(io(&path))?;
        }
        Ok(AnswerCache { path, entries, file, hits: 0 })
    }

    /// The cached decode of question `id` in mode `infill`, if it had the same context (taken
    /// out of the cache: each is used once per run).
    pub fn get(&mut self, id: &str, infill: &str, context: &[String]) -> Option<CachedAnswer> {
        let a = self.entries.remove(&(id.to_string(), infill.to_string()))?;
        (a.context == context).then(|| {
            self.hits += 1;
            a
        })
    }

    /// Appends a fresh decode (one line, written at once) and returns it.
    pub fn put(&mut self, a: CachedAnswer) -> Result<CachedAnswer, BenchError> {
        let mut line = serde_json::to_string(&a)
            .map_err(|source| BenchError::Json { what: format!("decode of question {}", a.id), source })?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io(&self.path))?;
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("metarag-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn decode(id: &str, context: &str) -> CachedAnswer {
        let mut a = CachedAnswer::new(id, "free", vec![context.to_string()], 1.5, Vec::new());
        a.forwards = Some(7);
        a
    }

    #[test]
    fn decodes_survive_a_reopen_and_need_the_same_context() {
        let d = tmp("reopen");
        let parts = vec!["index-a".to_string(), "settings".to_string()];
        let mut c = AnswerCache::open(&d, &parts).unwrap();
        assert!(c.get("q1", "free", &["c".into()]).is_none());
        c.put(decode("q1", "c")).unwrap();
        c.put(decode("q2", "c")).unwrap();
        drop(c);
        let mut c = AnswerCache::open(&d, &parts).unwrap();
        let hit = c.get("q1", "free", &["c".into()]).unwrap();
        assert!(hit.cached);
        assert_eq!((hit.forwards, hit.decode_seconds), (Some(7), 1.5));
        assert!(c.get("q1", "free", &["c".into()]).is_none(), "each decode is used once");
        assert!(c.get("q2", "free", &["other".into()]).is_none(), "another context is decoded again");
        assert!(c.get("q2", "extractive", &["c".into()]).is_none());
        assert_eq!(c.hits, 1);
        // Other settings: another file, nothing shared.
        let mut other = AnswerCache::open(&d, &["index-b".to_string()]).unwrap();
        assert_ne!(other.path, c.path);
        assert!(other.get("q2", "free", &["c".into()]).is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_line_cut_by_an_interruption_is_decoded_again() {
        let d = tmp("cut");
        let parts = vec!["x".to_string()];
        let mut c = AnswerCache::open(&d, &parts).unwrap();
        c.put(decode("q1", "c")).unwrap();
        let path = c.path.clone();
        drop(c);
        let whole = serde_json::to_string(&decode("q2", "c")).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&whole.as_bytes()[..whole.len() / 2]).unwrap();
        drop(f);
        let mut c = AnswerCache::open(&d, &parts).unwrap();
        assert!(c.get("q2", "free", &["c".into()]).is_none());
        c.put(decode("q2", "c")).unwrap();
        drop(c);
        // The new line starts on a line of its own: both decodes read back.
        let mut c = AnswerCache::open(&d, &parts).unwrap();
        assert!(c.get("q1", "free", &["c".into()]).is_some());
        assert!(c.get("q2", "free", &["c".into()]).is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

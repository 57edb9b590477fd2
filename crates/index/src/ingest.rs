//! The ingestion pipeline: walk → hash (skip unchanged) → load → split → score/chunk →
//! merge → embed (batched) → write both stores, batch by batch.
//!
//! Memory stays bounded: files are taken in groups (at most `batch_docs` documents or
//! `batch_bytes` of input), each group is chunked in parallel (rayon), embedded, written and
//! committed before the next is read. A file that fails is reported with its path and the
//! rest of the group goes on.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metarag_core::chunk::{ChunkSizer, Chunker, merge};
use metarag_core::load::Loader;
use metarag_core::model::{SentenceEmbedder, TokenOffsets};
use metarag_core::split::SentenceSplitter;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::index::Index;
use crate::manifest::DocEntry;
use crate::store::{ChunkRecord, Point, point_id};
use crate::{Result, sparse};

/// Average chunk length (terms) assumed by the sparse BM25 document weights sent to a Qdrant
/// server (the server applies IDF; length normalisation is done here, against this constant,
/// so weights do not change as the collection grows).
pub const SPARSE_AVG_LEN: f32 = 100.0;

/// The stages an ingest runs. Model-backed stages are traits, so tests use fakes.
pub struct Stages<'a> {
    /// Reads files into documents.
    pub loader: &'a dyn Loader,
    /// Splits text into sentences.
    pub splitter: &'a dyn SentenceSplitter,
    /// Cuts sentences into chunks.
    pub chunker: &'a dyn Chunker,
    /// Optional merge of consecutive chunks: (target, sizer).
    pub merge: Option<(usize, &'a dyn ChunkSizer)>,
    /// Embeds chunk texts.
    pub embedder: &'a dyn SentenceEmbedder,
    /// Texts per embedding call.
    pub embed_batch: usize,
    /// Counts tokens for throughput figures (optional).
    pub tokens: Option<&'a dyn TokenOffsets>,
}

/// Knobs of an ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Most documents per committed batch.
    pub batch_docs: usize,
    /// Most input bytes per committed batch.
    pub batch_bytes: u64,
    /// Remove the documents of the index whose files are not among the inputs any more.
    pub prune: bool,
    /// Build search structures (HNSW) at the end.
    pub optimize: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions { batch_docs: 32, batch_bytes: 64 << 20, prune: false, optimize: true }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum FileOutcome {
    /// Chunked and written.
    Ingested {
        /// Chunks written.
        chunks: u32,
        /// Tokens counted (0 without a token counter).
        tokens: u64,
    },
    /// Same content and pipeline as in the index: nothing to do.
    Unchanged,
    /// Failed; the message names the file and the problem.
    Failed {
        /// The error.
        error: String,
    },
}

/// Receives progress events (the CLI draws progress bars from them).
pub trait IngestObserver: Sync {
    /// Called once with the number of files to look at and their total size.
    fn start(&self, _files: usize, _bytes: u64) {}
    /// Called when a file is done (in any way).
    fn file(&self, _path: &Path, _bytes: u64, _outcome: &FileOutcome) {}
    /// Called after each committed batch.
    fn committed(&self, _docs: usize, _chunks: usize) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;
impl IngestObserver for Silent {}

/// Time and volume per stage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageStats {
    /// Wall-clock seconds summed over worker threads.
    pub seconds: f64,
    /// Bytes of text through the stage.
    pub bytes: u64,
    /// Tokens through the stage (when counted).
    pub tokens: u64,
}

impl StageStats {
    fn add(&mut self, d: Duration, bytes: u64, tokens: u64) {
        self.seconds += d.as_secs_f64();
        self.bytes += bytes;
        self.tokens += tokens;
    }
}

/// Per-stage totals of an ingest.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stages5 {
    /// Reading and extracting text (plus hashing).
    pub load: StageStats,
    /// Sentence splitting.
    pub split: StageStats,
    /// Scoring and chunking (the language model, for ppl/margin), and merging.
    pub chunk: StageStats,
    /// Embedding the chunks.
    pub embed: StageStats,
    /// Writing and committing both stores and the manifest.
    pub write: StageStats,
}

/// The result of an ingest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Files looked at.
    pub files: usize,
    /// Files chunked and written.
    pub ingested: usize,
    /// Files skipped because unchanged.
    pub unchanged: usize,
    /// Files that failed, with their errors.
    pub failed: Vec<(PathBuf, String)>,
    /// Documents removed by `prune`.
    pub pruned: usize,
    /// Chunks written.
    pub chunks: u64,
    /// Documents recovered from an interrupted ingest (their chunks were deleted and written again).
    pub recovered: usize,
    /// Per-stage figures.
    pub stages: Stages5,
    /// Wall-clock seconds of the whole ingest.
    pub seconds: f64,
}

/// The document id of a path: the path with `.` components and doubled separators removed,
/// `/`-separated, so `./docs//a.txt` and `docs/a.txt` are one document.
pub fn document_id(path: &Path) -> String {
    let mut parts = Vec::new();
    let absolute = path.is_absolute();
    for c in path.components() {
        match c {
            std::path::Component::CurDir | std::path::Component::RootDir | std::path::Component::Prefix(_) => {}
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    let joined = parts.join("/");
    if absolute { format!("/{joined}") } else { joined }
}

struct Prepared {
    doc_id: String,
    entry: DocEntry,
    records: Vec<ChunkRecord>,
    tokens: u64,
}

/// Ingests `files` into `index` with `stages`.
pub fn ingest(
    index: &mut Index,
    files: &[PathBuf],
    stages: &Stages<'_>,
    options: &IngestOptions,
    observer: &dyn IngestObserver,
) -> Result<IngestReport> {
    let t0 = Instant::now();
    let mut report = IngestReport { files: files.len(), ..IngestReport::default() };
    let fingerprint = index.config().pipeline_fingerprint();
    let sizes: Vec<u64> = files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).collect();
    observer.start(files.len(), sizes.iter().sum());

    // Prune first: a file that is gone should not linger even if the run is interrupted.
    if options.prune {
        let present: std::collections::HashSet<String> = files.iter().map(|f| document_id(f)).collect();
        let gone: Vec<String> = index.manifest().documents.keys().filter(|d| !present.contains(*d)).cloned().collect();
        report.pruned = gone.len();
        index.remove_documents(&gone)?;
    }

    let mut start = 0;
    while start < files.len() {
        let mut end = start;
        let mut bytes = 0u64;
        while end < files.len()
            && end - start < options.batch_docs.max(1)
            && (end == start || bytes < options.batch_bytes)
        {
            bytes += sizes[end];
            end += 1;
        }
        let group = &files[start..end];
        start = end;

        let stats = Mutex::new(Stages5::default());
        let results: Vec<(PathBuf, u64, std::result::Result<Option<Prepared>, String>)> = group
            .par_iter()
            .map(|path| {
                let size = std::fs::metadata(path).map_or(0, |m| m.len());
                let r = prepare(index, path, stages, &fingerprint, &stats);
                (path.clone(), size, r)
            })
            .collect();
        let mut s = stats.into_inner().unwrap_or_default();

        // Embed every chunk of the group in batches, then write the group as one batch.
        let mut prepared = Vec::new();
        for (path, size, r) in results {
            match r {
                Ok(Some(p)) => prepared.push((path, size, p)),
                Ok(None) => {
                    report.unchanged += 1;
                    observer.file(&path, size, &FileOutcome::Unchanged);
                }
                Err(error) => {
                    observer.file(&path, size, &FileOutcome::Failed { error: error.clone() });
                    report.failed.push((path, error));
                }
            }
        }
        let te = Instant::now();
        let texts: Vec<&str> =
            prepared.iter().flat_map(|(_, _, p)| p.records.iter().map(|r| r.text.as_str())).collect();
        let text_bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(stages.embed_batch.max(1)) {
            vectors.extend(stages.embedder.embed(batch)?);
        }
        s.embed.add(te.elapsed(), text_bytes, 0);

        let tw = Instant::now();
        let mut vectors = vectors.into_iter();
        let mut batch = Vec::with_capacity(prepared.len());
        let mut outcomes = Vec::with_capacity(prepared.len());
        let mut n_chunks = 0;
        let sparse_wanted = index.vectors().supports_sparse();
        for (path, size, p) in prepared {
            let points: Vec<Point> = p
                .records
                .into_iter()
                .map(|record| {
                    let sparse = if sparse_wanted {
                        sparse::bm25_document_vector(&crate::analyze(&record.text), SPARSE_AVG_LEN, 1.2, 0.75)
                    } else {
                        crate::Sparse::default()
                    };
                    Point { sparse, dense: vectors.next().unwrap_or_default(), record }
                })
                .collect();
            n_chunks += points.len();
            outcomes.push((path, size, FileOutcome::Ingested { chunks: p.entry.chunks, tokens: p.tokens }));
            batch.push((p.doc_id, p.entry, points));
        }
        let docs = batch.len();
        index.write_batch(batch)?;
        s.write.add(tw.elapsed(), text_bytes, 0);
        observer.committed(docs, n_chunks);
        for (path, size, o) in outcomes {
            observer.file(&path, size, &o);
        }
        report.ingested += docs;
        report.chunks += n_chunks as u64;
        merge_stats(&mut report.stages, &s);
    }
    if options.optimize && report.ingested > 0 {
        let t = Instant::now();
        index.optimize()?;
        report.stages.write.seconds += t.elapsed().as_secs_f64();
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

fn merge_stats(into: &mut Stages5, s: &Stages5) {
    for (a, b) in [
        (&mut into.load, &s.load),
        (&mut into.split, &s.split),
        (&mut into.chunk, &s.chunk),
        (&mut into.embed, &s.embed),
        (&mut into.write, &s.write),
    ] {
        a.seconds += b.seconds;
        a.bytes += b.bytes;
        a.tokens += b.tokens;
    }
}

/// Hashes, and unless unchanged loads, splits and chunks one file.
fn prepare(
    index: &Index,
    path: &Path,
    stages: &Stages<'_>,
    fingerprint: &str,
    stats: &Mutex<Stages5>,
) -> std::result::Result<Option<Prepared>, String> {
    let t = Instant::now();
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let hash: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let doc_id = document_id(path);
    if let Some(e) = index.manifest().documents.get(&doc_id)
        && e.hash == hash
        && e.pipeline == fingerprint
    {
        return Ok(None);
    }
    let size = bytes.len() as u64;
    drop(bytes);
    let doc = stages.loader.load(path).map_err(|e| e.to_string())?;
    let text_bytes = doc.text.len() as u64;
    let tokens = match stages.tokens {
        Some(t) => t.token_offsets(&doc.text).map_err(|e| format!("{}: {e}", path.display()))?.len() as u64,
        None => 0,
    };
    let t_load = t.elapsed();

    let t = Instant::now();
    let sentences: Vec<Range<usize>> = stages.splitter.split(&doc.text);
    let t_split = t.elapsed();

    let t = Instant::now();
    let chunked = stages.chunker.chunk(&doc, &sentences).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut spans: Vec<Range<usize>> = chunked.chunks.into_iter().map(|c| c.span).collect();
    if let Some((target, sizer)) = stages.merge {
        spans = merge(&doc.text, &spans, target, sizer);
    }
    let t_chunk = t.elapsed();
    {
        let mut s = stats.lock().map_err(|_| "internal: poisoned stats".to_string())?;
        s.load.add(t_load, text_bytes, tokens);
        s.split.add(t_split, text_bytes, tokens);
        s.chunk.add(t_chunk, text_bytes, tokens);
    }

    let path_str = document_id(path);
    let kind = format!("{:?}", doc.kind).to_lowercase();
    let records: Vec<ChunkRecord> = spans
        .iter()
        .enumerate()
        .filter(|(_, s)| !doc.text[(*s).clone()].trim().is_empty())
        .enumerate()
        .map(|(i, (_, s))| {
            let i = i as u32;
            ChunkRecord {
                id: point_id(&doc_id, i),
                doc: doc_id.clone(),
                path: path_str.clone(),
                kind: kind.clone(),
                chunk: i,
                start: s.start as u64,
                end: s.end as u64,
                text: doc.text[s.clone()].to_string(),
            }
        })
        .collect();
    let entry =
        DocEntry { path: path_str, hash, pipeline: fingerprint.to_string(), chunks: records.len() as u32, bytes: size };
    Ok(Some(Prepared { doc_id, entry, records, tokens }))
}

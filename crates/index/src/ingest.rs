//! The ingestion pipeline: walk → hash (skip unchanged) → load → split → score/chunk →
//! merge → embed (batched) → write both stores, batch by batch.
//!
//! Memory stays bounded: documents are chunked in parallel (rayon) and handed through a
//! bounded queue to one writer, which embeds them and commits a batch every `batch_docs`
//! documents, `batch_bytes` of input or `commit_interval` (10 s). A file that fails is
//! reported with its path and the rest goes on.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use metarag_core::chunk::{ChunkSizer, Chunker, chunk_document};
use metarag_core::load::Loader;
use metarag_core::model::{SentenceEmbedder, TOKEN_PIECE_BYTES, TokenOffsets, token_pieces};
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
    /// Commit the open batch at least this often (so a long ingest loses little when killed).
    pub commit_interval: Duration,
    /// Build search structures (HNSW) at the end.
    pub optimize: bool,
    /// Only this part of the documents (and `prune` only among them): how several ingest
    /// processes, each with its own part, scale out over one Qdrant collection.
    pub shard: Option<Shard>,
}

/// Part `part` (1-based) of `of`: the documents whose id hashes to it ([`Shard::holds`]). The
/// parts of one `of` split any set of documents into disjoint pieces that cover it.
///
/// ```
/// use metarag_index::ingest::Shard;
/// let s: Shard = "2/3".parse()?;
/// assert_eq!((s.part, s.of), (2, 3));
/// let docs = ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"];
/// let parts: Vec<usize> = (1..=3).map(|p| docs.iter().filter(|d| Shard { part: p, of: 3 }.holds(d)).count()).collect();
/// assert_eq!(parts.iter().sum::<usize>(), docs.len());
/// assert!("0/2".parse::<Shard>().is_err() && "3/2".parse::<Shard>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, 1..=`of`.
    pub part: u32,
    /// Number of parts.
    pub of: u32,
}

impl Shard {
    /// Whether document `doc` (a [`document_id`]) belongs to this part: SHA-256 of the id, its
    /// first 8 bytes as a little-endian number, modulo `of`, plus one.
    pub fn holds(&self, doc: &str) -> bool {
        use sha2::Digest;
        let h = sha2::Sha256::digest(doc.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&h[..8]);
        u64::from_le_bytes(first) % u64::from(self.of.max(1)) + 1 == u64::from(self.part)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?}: expected PART/COUNT with 1 <= PART <= COUNT, e.g. 1/2");
        let (a, b) = s.split_once('/').ok_or_else(bad)?;
        let (part, of) = (a.trim().parse::<u32>().map_err(|_| bad())?, b.trim().parse::<u32>().map_err(|_| bad())?);
        if part == 0 || part > of {
            return Err(bad());
        }
        Ok(Shard { part, of })
    }
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            batch_docs: 32,
            batch_bytes: 64 << 20,
            commit_interval: Duration::from_secs(10),
            prune: false,
            optimize: true,
            shard: None,
        }
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
    /// Polled before each file is prepared: once true, no further file is started; what is
    /// prepared is written and committed, and the ingest returns with
    /// [`IngestReport::cancelled`] set (a rerun picks up the rest).
    fn cancelled(&self) -> bool {
        false
    }
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
    /// Files left to other parts (`shard`).
    pub other_shards: usize,
    /// Chunks written.
    pub chunks: u64,
    /// Documents recovered from an interrupted ingest (their chunks were deleted and written again).
    pub recovered: usize,
    /// Per-stage figures.
    pub stages: Stages5,
    /// Wall-clock seconds of the whole ingest.
    pub seconds: f64,
    /// Stopped early by the observer ([`IngestObserver::cancelled`]): files not looked at
    /// are in none of the counts.
    pub cancelled: bool,
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

/// What the writer thread reports back.
#[derive(Default)]
struct Written {
    ingested: usize,
    unchanged: usize,
    failed: Vec<(PathBuf, String)>,
    chunks: u64,
    embed: StageStats,
    write: StageStats,
}

type Item = (PathBuf, u64, std::result::Result<Option<Prepared>, String>);

/// Ingests `files` into `index` with `stages`.
///
/// Documents are prepared (hashed, loaded, split, chunked, merged) in parallel on the current
/// rayon pool and streamed through a bounded queue to one writer thread, which embeds them and
/// commits a batch every `batch_docs` documents, `batch_bytes` of input or `commit_interval`,
/// whichever comes first. Memory is bounded by the queue and the open batch.
pub fn ingest(
    index: &mut Index,
    files: &[PathBuf],
    stages: &Stages<'_>,
    options: &IngestOptions,
    observer: &dyn IngestObserver,
) -> Result<IngestReport> {
    let t0 = Instant::now();
    let mine = |doc: &str| options.shard.is_none_or(|s| s.holds(doc));
    let all = files.len();
    let files: Vec<PathBuf> = files.iter().filter(|f| mine(&document_id(f))).cloned().collect();
    let files = &files[..];
    let mut report = IngestReport { files: files.len(), other_shards: all - files.len(), ..IngestReport::default() };
    let fingerprint = index.config().pipeline_fingerprint();
    let sizes: Vec<u64> = files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).collect();
    observer.start(files.len(), sizes.iter().sum());

    // Prune first: a file that is gone should not linger even if the run is interrupted.
    if options.prune {
        let present: HashSet<String> = files.iter().map(|f| document_id(f)).collect();
        let gone: Vec<String> =
            index.manifest().documents.keys().filter(|d| !present.contains(*d) && mine(d)).cloned().collect();
        report.pruned = gone.len();
        index.remove_documents(&gone)?;
    }

    // What is already indexed under this pipeline: document id -> content hash.
    let known: HashMap<String, String> = index
        .manifest()
        .documents
        .iter()
        .filter(|(_, e)| e.pipeline == fingerprint)
        .map(|(d, e)| (d.clone(), e.hash.clone()))
        .collect();
    let stats = Mutex::new(Stages5::default());
    let stop = AtomicBool::new(false);
    let cancelled = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Item>(2 * rayon::current_num_threads().max(1));
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let r = write_loop(index, rx, stages, options, observer);
            stop.store(true, Ordering::Relaxed); // done or failed: no more work is wanted
            r
        });
        files.par_iter().zip(&sizes).for_each_with(tx, |tx, (path, &size)| {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if observer.cancelled() {
                cancelled.store(true, Ordering::Relaxed);
                stop.store(true, Ordering::Relaxed);
                return;
            }
            let r = prepare(&known, path, stages, &fingerprint, &stats);
            if tx.send((path.clone(), size, r)).is_err() {
                stop.store(true, Ordering::Relaxed);
            }
        });
        writer.join().unwrap_or_else(|_| Err(crate::Error::Query("internal: the index writer panicked".into())))
    })?;
    let mut s = stats.into_inner().unwrap_or_default();
    s.embed = written.embed;
    s.write = written.write;
    report.stages = s;
    report.ingested = written.ingested;
    report.unchanged = written.unchanged;
    report.failed = written.failed;
    report.chunks = written.chunks;
    report.cancelled = cancelled.into_inner();
    if options.optimize && report.ingested > 0 {
        let t = Instant::now();
        index.optimize()?;
        report.stages.write.seconds += t.elapsed().as_secs_f64();
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Receives prepared documents, embeds and writes them in committed batches.
fn write_loop(
    index: &mut Index,
    rx: Receiver<Item>,
    stages: &Stages<'_>,
    options: &IngestOptions,
    observer: &dyn IngestObserver,
) -> Result<Written> {
    let mut w = Written::default();
    let mut open: Vec<(PathBuf, u64, Prepared)> = Vec::new();
    let mut open_bytes = 0u64;
    let mut opened_at = Instant::now();
    loop {
        let item = if open.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(options.commit_interval.saturating_sub(opened_at.elapsed()))
        };
        let finished = match item {
            Ok((path, size, Ok(Some(p)))) => {
                if open.is_empty() {
                    opened_at = Instant::now();
                }
                open_bytes += size;
                open.push((path, size, p));
                false
            }
            Ok((path, size, Ok(None))) => {
                w.unchanged += 1;
                observer.file(&path, size, &FileOutcome::Unchanged);
                false
            }
            Ok((path, size, Err(error))) => {
                observer.file(&path, size, &FileOutcome::Failed { error: error.clone() });
                w.failed.push((path, error));
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let due = open.len() >= options.batch_docs.max(1)
            || open_bytes >= options.batch_bytes
            || opened_at.elapsed() >= options.commit_interval;
        if !open.is_empty() && (due || finished) {
            write_open(index, std::mem::take(&mut open), stages, observer, &mut w)?;
            open_bytes = 0;
        }
        if finished {
            return Ok(w);
        }
    }
}

/// Chunks embedded and written at a time: a document's vectors are never all in memory.
const WRITE_SLICE: usize = 512;

/// Embeds the open batch's chunks and writes the batch (one commit), a slice of chunks at a
/// time, so memory holds the batch's chunk texts but only one slice's vectors and points.
fn write_open(
    index: &mut Index,
    open: Vec<(PathBuf, u64, Prepared)>,
    stages: &Stages<'_>,
    observer: &dyn IngestObserver,
    w: &mut Written,
) -> Result<()> {
    let text_bytes: u64 = open.iter().flat_map(|(_, _, p)| p.records.iter().map(|r| r.text.len() as u64)).sum();
    let tokens: u64 = open.iter().map(|(_, _, p)| p.tokens).sum();
    let sparse_wanted = index.vectors().supports_sparse();
    let entries: Vec<(String, DocEntry)> = open.iter().map(|(_, _, p)| (p.doc_id.clone(), p.entry.clone())).collect();
    let docs = entries.len();
    let mut outcomes = Vec::with_capacity(docs);
    let mut n_chunks = 0;
    let (mut embed_time, mut write_time) = (Duration::ZERO, Duration::ZERO);

    let tw = Instant::now();
    let mut batch = index.begin_batch(entries)?;
    write_time += tw.elapsed();
    for (path, size, p) in open {
        outcomes.push((path, size, FileOutcome::Ingested { chunks: p.entry.chunks, tokens: p.tokens }));
        n_chunks += p.records.len();
        let mut records = p.records.into_iter().peekable();
        while records.peek().is_some() {
            let slice: Vec<ChunkRecord> = records.by_ref().take(WRITE_SLICE).collect();
            let te = Instant::now();
            let texts: Vec<&str> = slice.iter().map(|r| r.text.as_str()).collect();
            let mut vectors = Vec::with_capacity(texts.len());
            for part in texts.chunks(stages.embed_batch.max(1)) {
                let got = stages.embedder.embed(part)?;
                if got.len() != part.len() {
                    // Never a chunk without its vector: the batch stays pending and is undone.
                    return Err(crate::Error::EmbedderCount { texts: part.len(), vectors: got.len() });
                }
                vectors.extend(got);
            }
            embed_time += te.elapsed();

            let tw = Instant::now();
            let points: Vec<Point> = slice
                .into_iter()
                .zip(vectors)
                .map(|(record, dense)| {
                    let sparse = if sparse_wanted {
                        sparse::bm25_document_vector(&crate::analyze(&record.text), SPARSE_AVG_LEN, 1.2, 0.75)
                    } else {
                        crate::Sparse::default()
                    };
                    Point { sparse, dense, record }
                })
                .collect();
            batch.add(&points)?;
            write_time += tw.elapsed();
        }
    }
    let tw = Instant::now();
    batch.commit()?;
    write_time += tw.elapsed();
    w.embed.add(embed_time, text_bytes, tokens);
    w.write.add(write_time, text_bytes, tokens);
    observer.committed(docs, n_chunks);
    for (path, size, o) in outcomes {
        observer.file(&path, size, &o);
    }
    w.ingested += docs;
    w.chunks += n_chunks as u64;
    Ok(())
}

/// Hashes, and unless unchanged loads, splits and chunks one file.
fn prepare(
    known: &HashMap<String, String>,
    path: &Path,
    stages: &Stages<'_>,
    fingerprint: &str,
    stats: &Mutex<Stages5>,
) -> std::result::Result<Option<Prepared>, String> {
    let t = Instant::now();
    // Hashed as a stream: an unchanged 200 MB file costs no memory.
    let cannot_read = |e: std::io::Error| format!("{}: cannot read: {e}", path.display());
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut std::fs::File::open(path).map_err(cannot_read)?, &mut hasher).map_err(cannot_read)?;
    let hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let doc_id = document_id(path);
    if known.get(&doc_id).is_some_and(|h| *h == hash) {
        return Ok(None);
    }
    let doc = stages.loader.load(path).map_err(|e| e.to_string())?;
    let text_bytes = doc.text.len() as u64;
    let mut tokens = 0u64;
    if let Some(t) = stages.tokens {
        token_pieces(t, &doc.text, TOKEN_PIECE_BYTES, |piece| tokens += piece.len() as u64)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let t_load = t.elapsed();

    let chunking = chunk_document(&doc, stages.splitter, stages.chunker, stages.merge)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (t_split, t_chunk, spans) = (chunking.split_time, chunking.chunk_time, chunking.spans);
    {
        let mut s = stats.lock().map_err(|_| "internal: poisoned stats".to_string())?;
        s.load.add(t_load, text_bytes, tokens);
        s.split.add(t_split, text_bytes, tokens);
        s.chunk.add(t_chunk, text_bytes, tokens);
    }

    let path_str = document_id(path);
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
                kind: doc.kind,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metarag_core::chunk::SentenceChunker;
    use metarag_core::load::FileLoader;
    use metarag_core::model::SentenceEmbedder;
    use metarag_core::pipeline::Pipeline;
    use metarag_core::split::RuleSplitter;
    use metarag_core::testing::FakeEmbedder;

    use super::*;
    use crate::{Index, StoreConfig};

    /// An embedder that loses the last vector of every call.
    struct Lossy(FakeEmbedder);

    impl SentenceEmbedder for Lossy {
        fn embed(&self, texts: &[&str]) -> metarag_core::Result<Vec<Vec<f32>>> {
            let mut v = self.0.embed(texts)?;
            v.pop();
            Ok(v)
        }
    }

    #[test]
    fn an_embedder_returning_too_few_vectors_fails_the_ingest_and_writes_no_chunk() {
        let tmp = std::env::temp_dir().join(format!("metarag-lossy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let file = tmp.join("a.txt");
        std::fs::write(&file, "One sentence here. Another sentence there. A third one.").unwrap();
        let mut pipeline = Pipeline::default();
        pipeline.embedder.dims = 8;
        let lossy = Lossy(FakeEmbedder { dims: 8 });
        let stages = Stages {
            loader: &FileLoader::default(),
            splitter: &RuleSplitter::default(),
            chunker: &SentenceChunker,
            merge: None,
            embedder: &lossy,
            embed_batch: 32,
            tokens: None,
        };
        {
            let mut index = Index::create_or_open(tmp.join("idx"), &pipeline, &StoreConfig::Embedded).unwrap();
            let e = ingest(&mut index, std::slice::from_ref(&file), &stages, &IngestOptions::default(), &Silent)
                .unwrap_err();
            assert!(e.to_string().contains("returned 2 vectors for 3 texts"), "{e}");
        }
        // Reopened (recovering the unfinished batch): nothing half-written remains, and a
        // working embedder then ingests the file whole.
        let mut index = Index::create_or_open(tmp.join("idx"), &pipeline, &StoreConfig::Embedded).unwrap();
        assert_eq!(index.verify().unwrap(), 0);
        assert_eq!(index.vectors().count().unwrap(), 0);
        let good = FakeEmbedder { dims: 8 };
        let stages = Stages { embedder: &good, ..stages };
        let report = ingest(&mut index, &[file], &stages, &IngestOptions::default(), &Silent).unwrap();
        assert_eq!(report.chunks, 3);
        assert_eq!(index.verify().unwrap(), 3);
        let index = index.with_embedder(Arc::new(good));
        assert_eq!(index.search(&crate::Query::new("third").k(1)).unwrap().len(), 1);
        drop(index);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

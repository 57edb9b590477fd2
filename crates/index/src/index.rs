//! The index directory and the retriever over it.
//!
//! ```text
//! idx/
//!   metarag.toml    format, store (embedded or a Qdrant server), pipeline (chunker, embedder, dims)
//!   lexical/        tantivy (BM25, English stemming)      [embedded store]
//!   vectors/        qdrant-edge shard (dense, cosine)      [embedded store]
//!   manifest.json   document id → content hash, pipeline, chunk count; the batch in flight
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use metarag_core::model::SentenceEmbedder;
use metarag_core::pipeline::Pipeline;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::io;
use crate::lexical::LexicalIndex;
use crate::manifest::{DocEntry, Manifest, Pending};
use crate::store::{ChunkRecord, Point, VectorSearch, VectorStore, point_id};
use crate::{EdgeStore, Error, Result};

/// File name of the index configuration.
pub const CONFIG_FILE: &str = "metarag.toml";
const FORMAT: u32 = 1;

/// Where the vectors live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// In the index directory: tantivy for BM25, `qdrant-edge` for vectors.
    #[default]
    Embedded,
    /// A Qdrant server or cluster: dense and sparse BM25 vectors, fusion on the server.
    Server {
        /// gRPC URL, e.g. `http://localhost:6334`.
        url: String,
        /// Collection name.
        collection: String,
    },
}

/// `metarag.toml`: how the index was built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Directory format version.
    pub format: u32,
    /// The vector store.
    pub store: StoreConfig,
    /// The pipeline that chunks and embeds.
    pub pipeline: Pipeline,
}

impl IndexConfig {
    /// Fingerprint of the chunking part of the pipeline (a document chunked under another
    /// fingerprint is re-chunked by the next ingest): a hash of its serialized form (the serde
    /// names a pipeline file uses), so renaming a Rust type or field never re-chunks an index,
    /// and an option left at a default that is not serialized (PPL `overlap = false`) changes
    /// nothing.
    pub fn pipeline_fingerprint(&self) -> String {
        let p = &self.pipeline;
        let text = serde_json::json!({ "chunker": p.chunker, "merge": p.merge, "scorer": p.scorer }).to_string();
        let d = Sha256::digest(text.as_bytes());
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// An index directory, opened for search (and, through `ingest`, for writing).
pub struct Index {
    pub(crate) dir: PathBuf,
    pub(crate) config: IndexConfig,
    pub(crate) lexical: Option<LexicalIndex>,
    pub(crate) vectors: Box<dyn VectorStore>,
    pub(crate) embedder: Option<Arc<dyn SentenceEmbedder>>,
    pub(crate) manifest: Manifest,
    /// Held by a writer ([`Index::create_or_open`]) for its lifetime: one writer per index.
    _writer: Option<std::fs::File>,
}

/// The file a writer locks (`flock`) for its lifetime.
pub const WRITER_LOCK_FILE: &str = "writer.lock";

/// Takes the index's writer lock, or says which directory another writer holds.
fn lock_writer(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(WRITER_LOCK_FILE);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Mismatch {
            path: dir.to_path_buf(),
            detail: "another process is writing this index (an ingest): one writer at a time; retry when it is \
                     done (readers may search meanwhile)"
                .into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("dir", &self.dir).field("store", &self.vectors.describe()).finish()
    }
}

fn read_config(dir: &Path) -> Result<IndexConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotAnIndex {
                path: dir.to_path_buf(),
                detail: format!("not a metarag index (no {CONFIG_FILE}); create one with `metarag ingest`"),
            });
        }
        Err(e) => return Err(io(path)(e)),
    };
    let cfg: IndexConfig =
        toml::from_str(&text).map_err(|e| Error::NotAnIndex { path: path.clone(), detail: format!("invalid: {e}") })?;
    if cfg.format != FORMAT {
        return Err(Error::NotAnIndex {
            path,
            detail: format!("index format {} (this metarag reads format {FORMAT})", cfg.format),
        });
    }
    Ok(cfg)
}

/// Opens the stores of an index; `create` (writers only) makes whatever is missing, a reader
/// creates nothing: a missing store is an error.
fn open_stores(dir: &Path, cfg: &IndexConfig, create: bool) -> Result<(Option<LexicalIndex>, Box<dyn VectorStore>)> {
    let dims = cfg.pipeline.embedder.dims;
    match &cfg.store {
        StoreConfig::Embedded => {
            // The vector store first: its lock keeps a writer out while the lexical reader and
            // the manifest are read, so the three agree (see ARCHITECTURE.md, readers and writers).
            let (vectors_dir, lexical_dir) = (dir.join("vectors"), dir.join("lexical"));
            let (vectors, lexical) = if create {
                (EdgeStore::open_or_create(&vectors_dir, dims)?, LexicalIndex::open_or_create(&lexical_dir)?)
            } else {
                (EdgeStore::open(&vectors_dir, dims)?, LexicalIndex::open(&lexical_dir)?)
            };
            Ok((Some(lexical), Box::new(vectors)))
        }
        #[cfg(feature = "server")]
        StoreConfig::Server { url, collection } => {
            use crate::{ServerConfig, ServerStore};
            let sc = ServerConfig::new(url.clone(), collection.clone());
            let store = if create { ServerStore::connect(sc, dims)? } else { ServerStore::connect_existing(sc, dims)? };
            Ok((None, Box::new(store)))
        }
        #[cfg(not(feature = "server"))]
        StoreConfig::Server { url, .. } => Err(Error::Vector {
            store: url.clone(),
            detail: format!(
                "{}: the index uses a Qdrant server, but this build has no server support (the `server` feature of metarag-index is off); rebuild with it",
                dir.display()
            ),
        }),
    }
}

impl Index {
    /// Opens an existing index for search. Dense and hybrid search need an embedder
    /// ([`Index::with_embedder`]); BM25 works without. Nothing is created or written: a
    /// directory missing a store (or a server missing the collection) is an error.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = read_config(dir)?;
        let (lexical, vectors) = open_stores(dir, &config, false)?;
        let manifest = Manifest::load(dir)?;
        Ok(Index { dir: dir.to_path_buf(), config, lexical, vectors, embedder: None, manifest, _writer: None })
    }

    /// Opens the index in `dir` for writing with `pipeline` and `store`, creating it if the
    /// directory holds none. An existing index built with another embedder (model or
    /// dimension) or another store is an error; another chunking pipeline is accepted and
    /// re-chunks documents as they are ingested again. Interrupted batches are recovered.
    pub fn create_or_open(dir: impl AsRef<Path>, pipeline: &Pipeline, store: &StoreConfig) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cfg_path = dir.join(CONFIG_FILE);
        // an existing index: locked before anything is written; a new one once it has its config
        let early = if cfg_path.is_file() { Some(lock_writer(dir)?) } else { None };
        let config = if cfg_path.is_file() {
            let mut existing = read_config(dir)?;
            let (a, b) = (&existing.pipeline.embedder, &pipeline.embedder);
            if a.model != b.model || a.dims != b.dims {
                return Err(Error::Mismatch {
                    path: dir.to_path_buf(),
                    detail: format!(
                        "the index was built with embedder {} ({} dims); the pipeline asks for {} ({} dims). \
                         Use a new index directory, or the index's own embedder",
                        a.model, a.dims, b.model, b.dims
                    ),
                });
            }
            if existing.store != *store {
                return Err(Error::Mismatch {
                    path: dir.to_path_buf(),
                    detail: format!("the index uses store {:?}; asked for {:?}", existing.store, store),
                });
            }
            if existing.pipeline != *pipeline {
                existing.pipeline = pipeline.clone();
                write_config(dir, &existing)?;
            }
            existing
        } else {
            // The config is written first, so a creation killed before its rename leaves only
            // the temporary file: that directory is still new.
            let leftover = dir.join(CONFIG_FILE).with_extension("tmp");
            if leftover.is_file() && std::fs::read_dir(dir).map_err(io(dir))?.count() == 1 {
                std::fs::remove_file(&leftover).map_err(io(&leftover))?;
            }
            if std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
                return Err(Error::NotAnIndex {
                    path: dir.to_path_buf(),
                    detail: format!("the directory is not empty and has no {CONFIG_FILE}; refusing to write into it"),
                });
            }
            let c = IndexConfig { format: FORMAT, store: store.clone(), pipeline: pipeline.clone() };
            write_config(dir, &c)?;
            c
        };
        // The in-memory manifest is the truth while writing: a second writer would overwrite it.
        let writer = match early {
            Some(w) => w,
            None => lock_writer(dir)?,
        };
        let (lexical, vectors) = open_stores(dir, &config, true)?;
        let manifest = Manifest::load(dir)?;
        let mut index =
            Index { dir: dir.to_path_buf(), config, lexical, vectors, embedder: None, manifest, _writer: Some(writer) };
        index.recover()?;
        index.vectors.release(); // readers may search until the first batch is written
        Ok(index)
    }

    /// Sets the query embedder (must produce the index's dimension).
    pub fn with_embedder(mut self, embedder: Arc<dyn SentenceEmbedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// How the index was built.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }
    /// The ingest manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The vector store, for reading (its write half stays with the index's writer).
    pub fn vectors(&self) -> &dyn VectorSearch {
        self.vectors.as_ref()
    }
    /// The lexical index (embedded store only).
    pub fn lexical(&self) -> Option<&LexicalIndex> {
        self.lexical.as_ref()
    }

    // ---- writing (used by `ingest`) ----

    /// Deletes the chunks of documents left pending by an interrupted batch, from both
    /// stores, and forgets them: the next ingest writes them again.
    pub fn recover(&mut self) -> Result<usize> {
        if self.manifest.pending.is_empty() {
            return Ok(0);
        }
        let pending = std::mem::take(&mut self.manifest.pending);
        for (doc, p) in &pending {
            self.delete_chunks(doc, p.old_chunks.max(p.new_chunks))?;
            crate::crash::point("recover.deleted");
            self.manifest.documents.remove(doc);
        }
        self.commit_stores()?;
        self.manifest.save(&self.dir)?;
        crate::crash::point("recover.done");
        Ok(pending.len())
    }

    fn delete_chunks(&self, doc: &str, upto: u32) -> Result<()> {
        if let Some(lex) = &self.lexical {
            lex.delete_document(doc)?;
        }
        let ids: Vec<u64> = (0..upto).map(|i| point_id(doc, i)).collect();
        self.vectors.delete(&ids)
    }

    fn commit_stores(&self) -> Result<()> {
        self.vectors.commit()?;
        crate::crash::point("commit.vectors");
        if let Some(lex) = &self.lexical {
            lex.commit()?;
            crate::crash::point("commit.lexical");
        }
        Ok(())
    }

    /// Writes a batch of documents: each entry's old chunks are replaced by `points`
    /// (records already carrying their point ids). The batch is recorded as pending first,
    /// made durable in both stores, then recorded as done. [`Index::begin_batch`] does the
    /// same in parts, for documents too large to hold all their points at once.
    pub fn write_batch(&mut self, batch: Vec<(String, DocEntry, Vec<Point>)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::with_capacity(batch.len());
        let mut all_points = Vec::with_capacity(batch.len());
        for (doc, entry, points) in batch {
            entries.push((doc, entry));
            all_points.push(points);
        }
        let mut w = self.begin_batch(entries)?;
        for points in &all_points {
            w.add(points)?;
        }
        w.commit()
    }

    /// Starts writing a batch of documents whose points are then given in any number of
    /// [`BatchWrite::add`] calls (each document's old chunks are deleted here). Until
    /// [`BatchWrite::commit`], the documents are pending: searches skip them and a process
    /// killed in between leaves them to be recovered (removed) when the index is next opened
    /// for writing; dropping the writer without committing leaves them pending the same way.
    /// The vector store is held (readers of an embedded store wait) until the writer ends.
    pub fn begin_batch(&mut self, docs: Vec<(String, DocEntry)>) -> Result<BatchWrite<'_>> {
        self.vectors.acquire()?;
        let mut w = BatchWrite { index: self, docs, held: true };
        w.begin()?;
        Ok(w)
    }

    /// Removes documents (all their chunks) from the index.
    pub fn remove_documents(&mut self, docs: &[String]) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        for doc in docs {
            let old = self.manifest.documents.get(doc).map_or(0, |d| d.chunks);
            self.manifest.pending.insert(doc.clone(), Pending { old_chunks: old, new_chunks: 0 });
        }
        self.vectors.acquire()?;
        self.manifest.save(&self.dir)?;
        let recovered = self.recover();
        self.vectors.release();
        recovered.map(|_| ())
    }

    /// Builds search structures after a large ingest (HNSW graph, segment merges).
    pub fn optimize(&self) -> Result<()> {
        self.vectors.acquire()?;
        let done = self.vectors.optimize();
        self.vectors.release();
        done?;
        if let Some(lex) = &self.lexical {
            lex.optimize()?;
        }
        Ok(())
    }

    /// Checks that both stores hold exactly the chunks the manifest lists; returns the
    /// number of chunks. Used by tests and `metarag ingest --verify`.
    pub fn verify(&self) -> Result<u64> {
        let mut expected: Vec<u64> =
            self.manifest.documents.iter().flat_map(|(doc, e)| (0..e.chunks).map(move |i| point_id(doc, i))).collect();
        expected.sort_unstable();
        let problem = |what: &str, got: usize| Error::Mismatch {
            path: self.dir.clone(),
            detail: format!("{what} holds {got} chunks, the manifest lists {} (or different ids)", expected.len()),
        };
        let vec_ids = self.vectors.ids()?;
        if vec_ids != expected {
            return Err(problem("the vector store", vec_ids.len()));
        }
        if let Some(lex) = &self.lexical {
            let lex_ids = lex.ids()?;
            if lex_ids != expected {
                return Err(problem("the lexical index", lex_ids.len()));
            }
        }
        Ok(expected.len() as u64)
    }
}

fn write_config(dir: &Path, c: &IndexConfig) -> Result<()> {
    let text =
        toml::to_string(c).map_err(|e| Error::NotAnIndex { path: dir.join(CONFIG_FILE), detail: e.to_string() })?;
    crate::manifest::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
}

/// A batch of documents being written part by part (see [`Index::begin_batch`]).
pub struct BatchWrite<'a> {
    index: &'a mut Index,
    docs: Vec<(String, DocEntry)>,
    held: bool,
}

impl BatchWrite<'_> {
    /// Records the documents as pending and deletes their old chunks.
    fn begin(&mut self) -> Result<()> {
        let ix = &mut *self.index;
        for (doc, entry) in &self.docs {
            let old = ix.manifest.documents.get(doc).map_or(0, |d| d.chunks);
            ix.manifest.pending.insert(doc.clone(), Pending { old_chunks: old, new_chunks: entry.chunks });
        }
        ix.manifest.save(&ix.dir)?;
        crate::crash::point("batch.pending");
        for (doc, _) in &self.docs {
            let p = ix.manifest.pending.get(doc).copied().unwrap_or_default();
            // Old chunks past the new count would linger: delete the whole old range first.
            ix.delete_chunks(doc, p.old_chunks.max(p.new_chunks))?;
            crate::crash::point("batch.deleted");
        }
        Ok(())
    }

    /// Writes points of the batch's documents to both stores (not yet committed).
    pub fn add(&mut self, points: &[Point]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let ix = &*self.index;
        ix.vectors.upsert(points)?;
        crate::crash::point("batch.vectors");
        if let Some(lex) = &ix.lexical {
            let recs: Vec<ChunkRecord> = points.iter().map(|p| p.record.clone()).collect();
            lex.add(&recs)?;
            crate::crash::point("batch.lexical");
        }
        Ok(())
    }

    /// Commits both stores, then records the documents as done.
    pub fn commit(mut self) -> Result<()> {
        let ix = &mut *self.index;
        ix.commit_stores()?;
        for (doc, entry) in std::mem::take(&mut self.docs) {
            ix.manifest.pending.remove(&doc);
            ix.manifest.documents.insert(doc, entry);
        }
        let saved = ix.manifest.save(&ix.dir);
        self.release();
        saved?;
        crate::crash::point("batch.done");
        Ok(())
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            self.index.vectors.release();
        }
    }
}

impl Drop for BatchWrite<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::DocEntry;
    use crate::store::Sparse;

    fn points(doc: &str, n: u32) -> Vec<Point> {
        (0..n)
            .map(|i| Point {
                record: ChunkRecord {
                    id: point_id(doc, i),
                    doc: doc.into(),
                    path: doc.into(),
                    kind: metarag_core::DocKind::Text,
                    chunk: i,
                    start: u64::from(i),
                    end: u64::from(i) + 1,
                    text: format!("chunk {i} of {doc}"),
                },
                dense: vec![1.0, 0.0, f32::from(i as u8)],
                sparse: Sparse::default(),
            })
            .collect()
    }

    fn entry(doc: &str, n: u32) -> DocEntry {
        DocEntry { path: doc.into(), hash: "h".into(), pipeline: "p".into(), chunks: n, bytes: 1 }
    }

    #[test]
    fn open_creates_nothing_and_names_the_missing_store() {
        let dir = std::env::temp_dir().join(format!("metarag-open-ro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut pipeline = Pipeline::default();
        pipeline.embedder.dims = 3;
        drop(Index::create_or_open(&dir, &pipeline, &StoreConfig::Embedded).unwrap());
        assert!(Index::open(&dir).is_ok());
        for store in ["vectors", "lexical"] {
            let moved = dir.join(format!("{store}.away"));
            std::fs::rename(dir.join(store), &moved).unwrap();
            let e = Index::open(&dir).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(store), "the error names the missing {store} store: {e:?}");
            assert!(!dir.join(store).exists(), "a reader created the {store} store");
            std::fs::rename(&moved, dir.join(store)).unwrap();
        }
        assert!(Index::open(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fingerprint_follows_chunking_settings_only_and_is_stable() {
        let fp = |p: &Pipeline| {
            IndexConfig { format: FORMAT, store: StoreConfig::Embedded, pipeline: p.clone() }.pipeline_fingerprint()
        };
        let default = Pipeline::default();
        // Pinned: a change here re-chunks every existing index, so it must be deliberate.
        assert_eq!(fp(&default), "8b521f3b0e2539a2");
        let mut batch = default.clone();
        batch.embedder.batch = 7;
        assert_eq!(fp(&batch), fp(&default), "embedding settings do not re-chunk");
        let mut theta = default.clone();
        theta.chunker = metarag_core::pipeline::ChunkerConfig::Margin { threshold: 0.0, prompt: Default::default() };
        assert_ne!(fp(&theta), fp(&default));
        let mut window = default.clone();
        window.scorer.window = 128;
        assert_ne!(fp(&window), fp(&default));
        let mut int8 = default.clone();
        int8.scorer.precision = metarag_core::pipeline::Precision::Int8;
        assert_ne!(fp(&int8), fp(&default), "another scoring graph cuts other chunks");
    }

    #[test]
    fn a_batch_left_pending_is_removed_from_both_stores_on_reopen() {
        let dir = std::env::temp_dir().join(format!("metarag-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut pipeline = Pipeline::default();
        pipeline.embedder.dims = 3;
        {
            let mut idx = Index::create_or_open(&dir, &pipeline, &StoreConfig::Embedded).unwrap();
            idx.write_batch(vec![("a".into(), entry("a", 3), points("a", 3))]).unwrap();
            // A crash in the middle of the next batch: "b" is pending and half written
            // (durable in both stores, never recorded as done); "a" was being replaced by
            // fewer chunks.
            idx.manifest.pending.insert("b".into(), Pending { old_chunks: 0, new_chunks: 4 });
            idx.manifest.pending.insert("a".into(), Pending { old_chunks: 3, new_chunks: 1 });
            idx.manifest.save(&dir).unwrap();
            idx.vectors.upsert(&points("b", 2)).unwrap();
            let lex = idx.lexical.as_ref().unwrap();
            lex.add(&points("b", 2).into_iter().map(|p| p.record).collect::<Vec<_>>()).unwrap();
            idx.commit_stores().unwrap();
            assert!(idx.verify().is_err(), "the stores hold chunks the manifest does not list");
        }
        let idx = Index::create_or_open(&dir, &pipeline, &StoreConfig::Embedded).unwrap();
        assert!(idx.manifest().pending.is_empty());
        assert!(idx.manifest().documents.is_empty(), "both pending documents are forgotten, to be written again");
        assert_eq!(idx.verify().unwrap(), 0);
        assert_eq!(idx.vectors().count().unwrap(), 0);
        assert_eq!(idx.lexical().unwrap().count(), 0);
        drop(idx);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rewriting_a_document_with_fewer_chunks_leaves_no_old_chunk() {
        let dir = std::env::temp_dir().join(format!("metarag-rewrite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut pipeline = Pipeline::default();
        pipeline.embedder.dims = 3;
        let mut idx = Index::create_or_open(&dir, &pipeline, &StoreConfig::Embedded).unwrap();
        idx.write_batch(vec![("a".into(), entry("a", 5), points("a", 5)), ("b".into(), entry("b", 2), points("b", 2))])
            .unwrap();
        assert_eq!(idx.verify().unwrap(), 7);
        idx.write_batch(vec![("a".into(), entry("a", 2), points("a", 2))]).unwrap();
        assert_eq!(idx.verify().unwrap(), 4);
        idx.remove_documents(&["b".into()]).unwrap();
        assert_eq!(idx.verify().unwrap(), 2);
        assert_eq!(idx.lexical().unwrap().ids().unwrap().len(), 2);
        // a reopened index with another embedder is refused, naming both
        drop(idx);
        let mut other = pipeline.clone();
        other.embedder.dims = 5;
        let e = Index::create_or_open(&dir, &other, &StoreConfig::Embedded).unwrap_err().to_string();
        assert!(e.contains("3 dims") && e.contains("5 dims"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The embedded default store: Qdrant's engine in-process (`qdrant-edge`), no server.
//!
//! One shard in a directory (`vectors/` of an index): a named dense vector (cosine) plus the
//! chunk's payload. `qdrant-edge` 0.7 does not replay its write-ahead log when a shard is
//! loaded, so [`VectorStore::commit`] flushes the segments; the index's ingest manifest only
//! records a document as done after that flush (see `ingest`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use qdrant_edge::{
    Distance, EdgeConfig, EdgeShard, EdgeVectorParams, PointId, PointInsertOperations, PointOperations,
    PointStructPersisted, QueryEnum, QueryRequest, ScoringQuery, ScrollRequest, UpdateOperation, VectorInternal,
    VectorPersisted, VectorStructInternal, VectorStructPersisted, WithPayloadInterface, WithVector,
};

use crate::store::{ChunkRecord, DENSE, Filter, Hit, Point, VectorQuery, VectorSearch, VectorStore};
use crate::{Error, Result};

/// Qdrant's engine in-process: the default vector store.
///
/// ```
/// use metarag_index::{EdgeStore, Filter, VectorQuery, VectorSearch};
///
/// let dir = std::env::temp_dir().join(format!("edge-doc-{}", std::process::id()));
/// let store = EdgeStore::create(&dir, 3).unwrap();
/// assert_eq!(store.count().unwrap(), 0);
/// let hits = store.search(&VectorQuery::Dense(vec![1.0, 0.0, 0.0]), 5, &Filter::default()).unwrap();
/// assert!(hits.is_empty());
/// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct EdgeStore {
    /// The loaded shard; `None` after [`VectorSearch::release`], loaded again on next use.
    shard: RwLock<Option<EdgeShard>>,
    dir: PathBuf,
    dims: usize,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore").field("dir", &self.dir).field("dims", &self.dims).finish()
    }
}

impl EdgeStore {
    /// Creates a new shard in `dir` (created if missing) for `dims`-dimensional vectors.
    pub fn create(dir: &Path, dims: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(crate::error::io(dir))?;
        let params = EdgeVectorParams {
            size: dims,
            distance: Distance::Cosine,
            on_disk: None,
            multivector_config: None,
            datatype: None,
            quantization_config: None,
            hnsw_config: None,
        };
        let mut config = EdgeConfig::default();
        config.vectors.insert(DENSE.to_string(), params);
        let shard = EdgeShard::new(dir, config).map_err(|e| vector_err(dir, format!("cannot create: {e}")))?;
        Ok(EdgeStore { shard: RwLock::new(Some(shard)), dir: dir.to_path_buf(), dims })
    }

    /// Opens the shard in `dir`, checking that it holds `dims`-dimensional cosine vectors.
    pub fn open(dir: &Path, dims: usize) -> Result<Self> {
        if !dir.join("edge_config.json").is_file() {
            return Err(vector_err(dir, "no vector store here (was the index created?)".into()));
        }
        let shard = load_waiting(dir, LOCK_WAIT)?;
        let got = shard.config().vectors.get(DENSE).map(|p| (p.size, p.distance));
        match got {
            Some((size, Distance::Cosine)) if size == dims => {}
            Some((size, d)) => {
                return Err(vector_err(
                    dir,
                    format!("vector \"{DENSE}\" has {size} dims ({d:?}); expected {dims} dims (Cosine)"),
                ));
            }
            None => return Err(vector_err(dir, format!("no vector named \"{DENSE}\""))),
        }
        Ok(EdgeStore { shard: RwLock::new(Some(shard)), dir: dir.to_path_buf(), dims })
    }

    /// Opens the shard in `dir`, or creates it if the directory holds none.
    pub fn open_or_create(dir: &Path, dims: usize) -> Result<Self> {
        if dir.join("edge_config.json").is_file() { Self::open(dir, dims) } else { Self::create(dir, dims) }
    }

    /// Runs `f` on the shard, loading it again (waiting for other processes) if it was released.
    fn with<T>(&self, f: impl FnOnce(&EdgeShard) -> Result<T>) -> Result<T> {
        {
            let guard = self.shard.read().map_err(|_| self.err("poisoned lock"))?;
            if let Some(shard) = guard.as_ref() {
                return f(shard);
            }
        }
        self.acquire()?;
        let guard = self.shard.read().map_err(|_| self.err("poisoned lock"))?;
        match guard.as_ref() {
            Some(shard) => f(shard),
            None => Err(self.err("released while in use")),
        }
    }

    /// The points of `ids` that exist, with their payload and/or vectors.
    fn retrieve(&self, ids: &[u64], payload: bool, vector: bool) -> Result<Vec<qdrant_edge::Record>> {
        let ids: Vec<PointId> = ids.iter().map(|&i| PointId::NumId(i)).collect();
        self.with(|shard| {
            shard
                .retrieve(&ids, Some(WithPayloadInterface::Bool(payload)), Some(WithVector::Bool(vector)))
                .map_err(|e| self.err(format!("retrieve: {e}")))
        })
    }

    fn err(&self, what: impl std::fmt::Display) -> Error {
        vector_err(&self.dir, what.to_string())
    }

    fn check_dims(&self, v: &[f32]) -> Result<()> {
        if v.len() != self.dims {
            return Err(self.err(format!("vector has {} dims, the store holds {}", v.len(), self.dims)));
        }
        Ok(())
    }

    fn filter(&self, f: &Filter) -> Result<Option<qdrant_edge::Filter>> {
        crate::store::qdrant_filter_json(f)
            .map(|j| serde_json::from_value(j).map_err(|e| self.err(format!("filter: {e}"))))
            .transpose()
    }
}

/// How long opening a shard waits for another process to let go of it: a reader waits for
/// at most one batch of a writer.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a writer taking the shard back for its next batch waits for readers.
const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// `qdrant-edge` locks a shard's write-ahead log: one process at a time. A second opener
/// (a search while an ingest runs, two searches at once) waits for the lock, then gives up
/// with a message that says so.
fn load_waiting(dir: &Path, wait: std::time::Duration) -> Result<EdgeShard> {
    let start = std::time::Instant::now();
    loop {
        match EdgeShard::load(dir, None) {
            Ok(s) => return Ok(s),
            Err(e) if e.to_string().contains("WouldBlock") => {
                if start.elapsed() >= wait {
                    return Err(vector_err(
                        dir,
                        format!(
                            "in use by another process (an ingest or a search) for {} s; the embedded engine \
                             opens an index in one process at a time (an ingest lets readers in between its \
                             batches): retry when it is done, or serve many readers from a Qdrant server \
                             (--qdrant-url)",
                            wait.as_secs()
                        ),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => return Err(vector_err(dir, format!("cannot open: {e}"))),
        }
    }
}

fn vector_err(dir: &Path, detail: String) -> Error {
    Error::Vector { store: dir.display().to_string(), detail }
}

fn num_id(id: &PointId) -> Option<u64> {
    match id {
        PointId::NumId(n) => Some(*n),
        PointId::Uuid(_) => None,
    }
}

impl EdgeStore {
    /// The `limit` nearest points to a dense query, with or without their payloads.
    fn nearest(
        &self,
        query: &VectorQuery,
        limit: usize,
        filter: &Filter,
        payload: bool,
    ) -> Result<Vec<qdrant_edge::ScoredPoint>> {
        let VectorQuery::Dense(v) = query else {
            return Err(Error::Query(
                "the embedded store holds dense vectors only; BM25 comes from the lexical index".into(),
            ));
        };
        self.check_dims(v)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let request = QueryRequest {
            prefetches: Vec::new(),
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(qdrant_edge::NamedQuery {
                query: VectorInternal::Dense(v.clone()),
                using: Some(DENSE.to_string()),
            }))),
            filter: self.filter(filter)?,
            score_threshold: None,
            limit,
            offset: 0,
            params: None,
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(payload),
        };
        self.with(|shard| shard.query(request).map_err(|e| self.err(format!("query: {e}"))))
    }
}

impl VectorSearch for EdgeStore {
    fn describe(&self) -> String {
        format!("qdrant-edge {}", self.dir.display())
    }

    fn search(&self, query: &VectorQuery, limit: usize, filter: &Filter) -> Result<Vec<Hit>> {
        Ok(self
            .nearest(query, limit, filter, true)?
            .into_iter()
            .filter_map(|p| {
                let id = num_id(&p.id)?;
                let record = crate::store::record_from_payload(id, &p.payload?.0)?;
                Some(Hit { score: p.score, record })
            })
            .collect())
    }

    fn search_ids(&self, query: &VectorQuery, limit: usize, filter: &Filter) -> Result<Vec<(f32, u64)>> {
        Ok(self
            .nearest(query, limit, filter, false)?
            .into_iter()
            .filter_map(|p| Some((p.score, num_id(&p.id)?)))
            .collect())
    }

    fn supports_sparse(&self) -> bool {
        false
    }

    fn get(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>> {
        let recs = self.retrieve(ids, true, false)?;
        Ok(recs.into_iter().filter_map(|r| crate::store::record_from_payload(num_id(&r.id)?, &r.payload?.0)).collect())
    }

    fn dense_vectors(&self, ids: &[u64]) -> Result<Vec<(u64, Vec<f32>)>> {
        let recs = self.retrieve(ids, false, true)?;
        let mut out = Vec::with_capacity(recs.len());
        for r in recs {
            let Some(id) = num_id(&r.id) else { continue };
            let dense = r.vector.as_ref().and_then(|v| match v {
                VectorStructInternal::Named(named) => match named.get(DENSE) {
                    Some(VectorInternal::Dense(d)) => Some(d.clone()),
                    _ => None,
                },
                _ => None,
            });
            out.push((id, dense.ok_or_else(|| self.err(format!("point {id} has no vector \"{DENSE}\"")))?));
        }
        Ok(out)
    }

    fn ids(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let mut offset = None;
        loop {
            let req = ScrollRequest {
                offset,
                limit: Some(10_000),
                filter: None,
                with_payload: Some(WithPayloadInterface::Bool(false)),
                with_vector: WithVector::Bool(false),
                order_by: None,
            };
            let (recs, next) = self.with(|shard| shard.scroll(req).map_err(|e| self.err(format!("scroll: {e}"))))?;
            out.extend(recs.iter().filter_map(|r| num_id(&r.id)));
            match next {
                Some(n) => offset = Some(n),
                None => break,
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn count(&self) -> Result<usize> {
        let req = qdrant_edge::CountRequest { filter: None, exact: true };
        self.with(|shard| shard.count(req).map_err(|e| self.err(format!("count: {e}"))))
    }

    fn acquire(&self) -> Result<()> {
        let mut guard = self.shard.write().map_err(|_| self.err("poisoned lock"))?;
        if guard.is_none() {
            *guard = Some(load_waiting(&self.dir, WRITER_WAIT)?);
        }
        Ok(())
    }

    fn release(&self) {
        if let Ok(mut guard) = self.shard.write() {
            guard.take(); // closes the write-ahead log: its lock goes with it
        }
    }
}

impl VectorStore for EdgeStore {
    fn upsert(&self, points: &[Point]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut list = Vec::with_capacity(points.len());
        for p in points {
            self.check_dims(&p.dense)?;
            let vectors = HashMap::from([(DENSE.to_string(), VectorPersisted::Dense(p.dense.clone()))]);
            list.push(PointStructPersisted {
                id: PointId::NumId(p.record.id),
                vector: VectorStructPersisted::Named(vectors),
                payload: Some(qdrant_edge::Payload(crate::store::payload_json(&p.record))),
            });
        }
        let op = PointOperations::UpsertPoints(PointInsertOperations::PointsList(list));
        self.with(|shard| {
            shard
                .update(UpdateOperation::PointOperation(op))
                .map_err(|e| self.err(format!("upsert of {} points: {e}", points.len())))
        })
    }

    fn delete(&self, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let op = PointOperations::DeletePoints { ids: ids.iter().map(|&i| PointId::NumId(i)).collect() };
        self.with(|shard| {
            shard
                .update(UpdateOperation::PointOperation(op))
                .map_err(|e| self.err(format!("delete of {} points: {e}", ids.len())))
        })
    }

    fn commit(&self) -> Result<()> {
        // EdgeShard::flush panics only when its locks are held elsewhere (never here: we hold
        // no guard across calls); contain it anyway so a bug cannot take the ingest down.
        self.with(|shard| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shard.flush()))
                .map_err(|_| self.err("flush failed (the engine panicked)"))
        })
    }

    fn optimize(&self) -> Result<()> {
        self.with(|shard| shard.optimize().map(|_| ()).map_err(|e| self.err(format!("optimize: {e}"))))
    }
}

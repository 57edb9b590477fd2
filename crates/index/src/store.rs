//! The vector-store contract: chunks with their dense (and, for a Qdrant server, sparse BM25)
//! vectors, searchable by cosine similarity with metadata filters.
//!
//! Two implementations: [`EdgeStore`](crate::EdgeStore), Qdrant's engine in-process (the
//! default, no server), and [`ServerStore`](crate::ServerStore), a Qdrant server or cluster over
//! gRPC. The same contract tests (`tests/store_contract.rs`) run against both.

use metarag_core::DocKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Result;

/// Name of the dense vector in every collection.
pub const DENSE: &str = "dense";
/// Name of the sparse BM25 vector (server collections).
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub const SPARSE: &str = "bm25";

/// One chunk as stored: where it comes from and its text. This is the payload of a point and
/// the stored fields of a lexical document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Point id, derived from (document id, chunk index) by [`point_id`].
    pub id: u64,
    /// Document id (the normalised path).
    pub doc: String,
    /// Path of the source file as ingested.
    pub path: String,
    /// Document kind (stored as `text`, `markdown`, `html` or `pdf`).
    pub kind: DocKind,
    /// Index of the chunk in its document.
    pub chunk: u32,
    /// Byte offset of the chunk's start in the document text.
    pub start: u64,
    /// Byte offset of the chunk's end.
    pub end: u64,
    /// The chunk's text (`document.text[start..end]`).
    pub text: String,
}

/// The deterministic point id of chunk `chunk` of document `doc`: the first 8 bytes of
/// SHA-256(doc ‖ 0 ‖ chunk as little-endian u32), top bit cleared (ids stay positive in every
/// client). Re-ingesting a document writes the same ids, so writes are idempotent and many
/// workers can write one collection.
///
/// ```
/// let a = metarag_index::point_id("docs/a.txt", 0);
/// assert_eq!(a, metarag_index::point_id("docs/a.txt", 0));
/// assert_ne!(a, metarag_index::point_id("docs/a.txt", 1));
/// assert!(a < 1 << 63);
/// ```
pub fn point_id(doc: &str, chunk: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(doc.as_bytes());
    h.update([0u8]);
    h.update(chunk.to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b) & (u64::MAX >> 1)
}

/// The ancestors of a path, for prefix filters: `a/b/c.txt` → `["a", "a/b", "a/b/c.txt"]`.
/// A filter on `a/b` matches everything below `a/b` (whole components only).
pub fn path_prefixes(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for (i, part) in path.split('/').enumerate() {
        if i > 0 {
            acc.push('/');
        }
        acc.push_str(part);
        if !part.is_empty() {
            out.push(acc.clone());
        }
    }
    out
}

/// Normalises a user-given path prefix the way [`path_prefixes`] writes them: no `./`, no
/// trailing or doubled `/`.
pub fn normalize_prefix(prefix: &str) -> String {
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let joined = parts.join("/");
    if prefix.starts_with('/') { format!("/{joined}") } else { joined }
}

/// A sparse vector: sorted unique indices and their weights.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sparse {
    /// Term ids, ascending.
    pub indices: Vec<u32>,
    /// One weight per index.
    pub values: Vec<f32>,
}

/// A point to write: the chunk, its dense vector, and its BM25 term weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The chunk (its id is the point id).
    pub record: ChunkRecord,
    /// L2-normalised embedding.
    pub dense: Vec<f32>,
    /// BM25 document-side term weights (used by stores that hold sparse vectors).
    pub sparse: Sparse,
}

/// Restricts a search to some chunks.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Only chunks whose path lies under this prefix (whole path components).
    pub path_prefix: Option<String>,
    /// Only chunks of these kinds (`text`, `markdown`, `html`, `pdf`); empty = all.
    pub kinds: Vec<String>,
}

impl Filter {
    /// True when the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.path_prefix.is_none() && self.kinds.is_empty()
    }

    /// Whether a record passes (the reference semantics every store must match).
    pub fn accepts(&self, r: &ChunkRecord) -> bool {
        let prefix_ok = self.path_prefix.as_deref().is_none_or(|p| {
            let p = normalize_prefix(p);
            path_prefixes(&r.path).contains(&p)
        });
        prefix_ok && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == r.kind.name()))
    }
}

/// A scored chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Similarity (cosine), BM25 score, or fused RRF score, by the search that produced it.
    pub score: f32,
    /// The chunk.
    pub record: ChunkRecord,
}

/// What to search a store with.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorQuery {
    /// Nearest neighbours of a dense vector.
    Dense(Vec<f32>),
    /// BM25 over the sparse vectors (query-side weights; IDF applied by the store).
    Sparse(Sparse),
    /// Both, fused by RRF inside the store.
    Hybrid {
        /// The dense query.
        dense: Vec<f32>,
        /// The sparse query.
        sparse: Sparse,
        /// Candidates taken from each side before fusion.
        prefetch: usize,
        /// RRF constant.
        k: usize,
        /// Optional weights of the two lists.
        weights: Option<HybridWeights>,
    },
}

/// The weights of hybrid search's two ranked lists in reciprocal rank fusion, by name: every
/// layer (CLI `--weights BM25,DENSE`, [`Query::fusion`](crate::Query::fusion), the embedded
/// fusion, the Qdrant server's prefetch order) reads them from these fields, never from a
/// position.
///
/// ```
/// use metarag_index::HybridWeights;
/// let w = HybridWeights::from([2.0, 0.5]); // the CLI's order: bm25, dense
/// assert_eq!((w.bm25, w.dense), (2.0, 0.5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridWeights {
    /// Weight of the lexical (BM25) list.
    pub bm25: f32,
    /// Weight of the dense list.
    pub dense: f32,
}

impl From<[f32; 2]> for HybridWeights {
    /// `[bm25, dense]`, the order of `--weights`.
    fn from([bm25, dense]: [f32; 2]) -> Self {
        HybridWeights { bm25, dense }
    }
}

/// The read half of a vector store: search and inspection. Both Qdrant adapters implement it
/// and [`VectorStore`] (the write half).
pub trait VectorSearch: Send + Sync {
    /// Where the store lives (directory or URL), for messages.
    fn describe(&self) -> String;
    /// The `limit` best points for `query` that pass `filter`, best first.
    fn search(&self, query: &VectorQuery, limit: usize, filter: &Filter) -> Result<Vec<Hit>>;
    /// As [`VectorSearch::search`], `(score, id)` only: a store that can skip reading the
    /// payloads (the chunk texts) overrides it; fused searches rank these and fetch records for
    /// their final top k alone.
    fn search_ids(&self, query: &VectorQuery, limit: usize, filter: &Filter) -> Result<Vec<(f32, u64)>> {
        Ok(self.search(query, limit, filter)?.into_iter().map(|h| (h.score, h.record.id)).collect())
    }
    /// Whether the store can answer [`VectorQuery::Sparse`] and [`VectorQuery::Hybrid`].
    fn supports_sparse(&self) -> bool;
    /// The records of the given ids that exist (any order).
    fn get(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>>;
    /// The dense vectors of the given ids that exist, as `(id, vector)` (any order): what a
    /// consistency check compares.
    fn dense_vectors(&self, ids: &[u64]) -> Result<Vec<(u64, Vec<f32>)>>;
    /// Every point id in the store (ascending).
    fn ids(&self) -> Result<Vec<u64>>;
    /// Number of points.
    fn count(&self) -> Result<usize>;
    /// Takes the store for a run of calls, waiting for other processes to let go of it. The
    /// embedded engine admits one process at a time, so a writer holds it only while it writes
    /// a batch and [`VectorSearch::release`]s it between batches; readers take turns with it.
    /// A no-op for a server. Any other call takes the store back too.
    fn acquire(&self) -> Result<()> {
        Ok(())
    }
    /// Lets other processes open the store until the next call (see [`VectorSearch::acquire`]).
    fn release(&self) {}
}

/// A vector store that can be written: the contract both Qdrant adapters implement. Readers
/// get only its [`VectorSearch`] half ([`Index::vectors`](crate::Index::vectors)).
///
/// Writes become durable at [`VectorStore::commit`]; a process killed before that may lose
/// them but never sees half of a point.
pub trait VectorStore: VectorSearch {
    /// Inserts or replaces points (same id = replace).
    fn upsert(&self, points: &[Point]) -> Result<()>;
    /// Deletes points by id; unknown ids are ignored.
    fn delete(&self, ids: &[u64]) -> Result<()>;
    /// Makes every write so far durable.
    fn commit(&self) -> Result<()>;
    /// Builds search structures (HNSW) after a large ingest; a no-op where the store does it.
    fn optimize(&self) -> Result<()> {
        Ok(())
    }
}

impl<T: VectorSearch + ?Sized> VectorSearch for Box<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn search(&self, query: &VectorQuery, limit: usize, filter: &Filter) -> Result<Vec<Hit>> {
        (**self).search(query, limit, filter)
    }
    fn search_ids(&self, query: &VectorQuery, limit: usize, filter: &Filter) -> Result<Vec<(f32, u64)>> {
        (**self).search_ids(query, limit, filter)
    }
    fn supports_sparse(&self) -> bool {
        (**self).supports_sparse()
    }
    fn get(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>> {
        (**self).get(ids)
    }
    fn dense_vectors(&self, ids: &[u64]) -> Result<Vec<(u64, Vec<f32>)>> {
        (**self).dense_vectors(ids)
    }
    fn ids(&self) -> Result<Vec<u64>> {
        (**self).ids()
    }
    fn count(&self) -> Result<usize> {
        (**self).count()
    }
    fn acquire(&self) -> Result<()> {
        (**self).acquire()
    }
    fn release(&self) {
        (**self).release()
    }
}

impl<T: VectorStore + ?Sized> VectorStore for Box<T> {
    fn upsert(&self, points: &[Point]) -> Result<()> {
        (**self).upsert(points)
    }
    fn delete(&self, ids: &[u64]) -> Result<()> {
        (**self).delete(ids)
    }
    fn commit(&self) -> Result<()> {
        (**self).commit()
    }
    fn optimize(&self) -> Result<()> {
        (**self).optimize()
    }
}

/// Payload JSON of a record (shared by both Qdrant adapters): the record's fields plus
/// `dirs`, the path's ancestors, for prefix filters.
pub(crate) fn payload_json(r: &ChunkRecord) -> serde_json::Map<String, serde_json::Value> {
    let mut m = match serde_json::to_value(r) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    m.remove("id");
    m.insert("dirs".into(), serde_json::json!(path_prefixes(&r.path)));
    m
}

/// Reads a record back from a payload.
pub(crate) fn record_from_payload(id: u64, p: &serde_json::Map<String, serde_json::Value>) -> Option<ChunkRecord> {
    let mut m = p.clone();
    m.remove("dirs");
    m.insert("id".into(), serde_json::json!(id));
    serde_json::from_value(serde_json::Value::Object(m)).ok()
}

/// The filter as a Qdrant filter (JSON form, understood by both adapters).
pub(crate) fn qdrant_filter_json(f: &Filter) -> Option<serde_json::Value> {
    if f.is_empty() {
        return None;
    }
    let mut must = Vec::new();
    if let Some(p) = &f.path_prefix {
        must.push(serde_json::json!({"key": "dirs", "match": {"value": normalize_prefix(p)}}));
    }
    if !f.kinds.is_empty() {
        must.push(serde_json::json!({"key": "kind", "match": {"any": f.kinds}}));
    }
    Some(serde_json::json!({ "must": must }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_filters() {
        assert_eq!(path_prefixes("a/b/c.txt"), vec!["a", "a/b", "a/b/c.txt"]);
        assert_eq!(path_prefixes("/x/y"), vec!["/x", "/x/y"]);
        assert_eq!(normalize_prefix("./a//b/"), "a/b");
        assert_eq!(normalize_prefix("/a/"), "/a");
        let r = ChunkRecord {
            id: 1,
            doc: "a/b/c.txt".into(),
            path: "a/b/c.txt".into(),
            kind: DocKind::Text,
            chunk: 0,
            start: 0,
            end: 1,
            text: "x".into(),
        };
        assert!(Filter { path_prefix: Some("a/b/".into()), kinds: vec![] }.accepts(&r));
        assert!(!Filter { path_prefix: Some("a/bb".into()), kinds: vec![] }.accepts(&r));
        assert!(!Filter { path_prefix: Some("a/".into()), kinds: vec!["pdf".into()] }.accepts(&r));
        let back = record_from_payload(1, &payload_json(&r)).unwrap();
        assert_eq!(back, r);
    }
}

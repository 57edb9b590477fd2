//! The query side of an [`Index`]: requests ([`Query`], [`Mode`]), results ([`SearchHit`]),
//! and the search paths: BM25 in tantivy, dense in the vector store, hybrid fused client-side
//! by RRF (embedded store; BM25 and dense run as two rayon tasks) or on the server.
//!
//! ```no_run
//! use metarag_index::{Index, Mode, Query};
//! let index = Index::open("idx")?;
//! for hit in index.search(&Query::new("who wrote the report").k(3).mode(Mode::Bm25))? {
//!     println!("{:.3} {} {}..{}", hit.score, hit.record.path, hit.record.start, hit.record.end);
//! }
//! # Ok::<(), metarag_index::Error>(())
//! ```

use std::collections::HashMap;

use metarag_core::fusion::{Rrf, rrf};
use serde::{Deserialize, Serialize};

use crate::index::Index;
use crate::store::{ChunkRecord, Filter, Hit, HybridWeights, VectorQuery};
use crate::{Error, Result, sparse};

/// Retrieval mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Lexical BM25 only.
    Bm25,
    /// Dense cosine only.
    Dense,
    /// BM25 and dense fused by reciprocal rank fusion.
    #[default]
    Hybrid,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "bm25" => Ok(Mode::Bm25),
            "dense" => Ok(Mode::Dense),
            "hybrid" => Ok(Mode::Hybrid),
            _ => Err(format!("unknown retrieval mode {s:?} (bm25, dense or hybrid)")),
        }
    }
}

/// Candidates a hybrid query takes from each retriever before fusion, by default. Measured
/// (with [`Rrf`]'s default k = 5; `metarag bench --retrieval hybrid`, recall@5; common-word
/// share 0.5): 20 is within 0.004 of 50 on SQuAD dev (0.931 vs 0.935) and SQuAD-Shifts
/// new_wiki (0.927 vs 0.929), and a 1M-chunk hybrid query is faster at 20
/// (benches/retrieval.rs: p99 5.5-6.9 -> 4.6-5.5 ms).
pub const DEFAULT_CANDIDATES: usize = 20;

/// A search request.
///
/// ```
/// use metarag_index::{Mode, Query};
/// let q = Query::new("who is Ishmael").k(5).mode(Mode::Bm25).path_prefix("examples/corpus");
/// assert_eq!(q.k, 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Free text.
    pub text: String,
    /// Results wanted.
    pub k: usize,
    /// Retrieval mode.
    pub mode: Mode,
    /// Metadata filter.
    pub filter: Filter,
    /// Candidates taken from each retriever before fusion (hybrid).
    pub candidates: usize,
    /// The RRF rank constant (60, as in the original paper).
    pub rrf_k: f32,
    /// Weights of the two lists in hybrid fusion (None: 1 and 1).
    pub weights: Option<HybridWeights>,
}

impl Query {
    /// A hybrid query for the top 10.
    pub fn new(text: impl Into<String>) -> Self {
        Query {
            text: text.into(),
            k: 10,
            mode: Mode::Hybrid,
            filter: Filter::default(),
            candidates: DEFAULT_CANDIDATES,
            rrf_k: Rrf::default().k,
            weights: None,
        }
    }
    /// Sets the number of results.
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }
    /// Sets the retrieval mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Only chunks under this path prefix (whole components).
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.filter.path_prefix = Some(prefix.into());
        self
    }
    /// Only chunks of this kind (`text`, `markdown`, `html`, `pdf`); may be repeated.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.filter.kinds.push(kind.into());
        self
    }
    /// Candidates per retriever before fusion.
    pub fn candidates(mut self, n: usize) -> Self {
        self.candidates = n;
        self
    }
    /// RRF constant and optional weights of the two lists.
    pub fn fusion(mut self, k: f32, weights: Option<HybridWeights>) -> Self {
        self.rrf_k = k;
        self.weights = weights;
        self
    }
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// BM25 score, cosine similarity, or fused RRF score, by mode.
    pub score: f32,
    /// 1-based rank in the BM25 list, if it was there (hybrid and bm25 modes).
    pub bm25_rank: Option<usize>,
    /// 1-based rank in the dense list, if it was there (hybrid and dense modes).
    pub dense_rank: Option<usize>,
    /// The chunk.
    #[serde(flatten)]
    pub record: ChunkRecord,
}

/// Where a search gets its query vector.
#[derive(Clone, Copy)]
enum QueryVector<'a> {
    /// None: BM25 only (dense and hybrid are an error).
    None,
    /// Precomputed by the caller.
    Given(&'a [f32]),
    /// Embedded by the index's embedder when needed (hybrid: while BM25 runs).
    Embed,
}

impl Index {
    /// Embeds a query with the index's embedder, checking the dimension.
    pub fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let e = self.embedder.as_ref().ok_or_else(|| {
            Error::Query("dense and hybrid search need an embedder (Index::with_embedder); bm25 does not".into())
        })?;
        let v = e.embed(&[text])?.into_iter().next().unwrap_or_default();
        let dims = self.config.pipeline.embedder.dims;
        if v.len() != dims {
            return Err(Error::Mismatch {
                path: self.dir.clone(),
                detail: format!("the query embedder gives {} dims; the index holds {dims}", v.len()),
            });
        }
        Ok(v)
    }

    /// Searches the index. In hybrid mode the BM25 search runs while the query is embedded
    /// and the dense list fetched (two rayon tasks), so a query costs the longer of the two,
    /// not their sum.
    pub fn search(&self, query: &Query) -> Result<Vec<SearchHit>> {
        match query.mode {
            Mode::Bm25 => self.search_pending_aware(query, QueryVector::None),
            Mode::Dense => {
                let v = self.embed_query(&query.text)?;
                self.search_pending_aware(query, QueryVector::Given(&v))
            }
            Mode::Hybrid => self.search_pending_aware(query, QueryVector::Embed),
        }
    }

    /// Searches with a precomputed query vector (needed for dense and hybrid modes).
    ///
    /// Chunks of documents whose batch was interrupted (pending in the manifest, not yet
    /// recovered by the next ingest) are never returned: a reader sees whole, committed
    /// documents only.
    pub fn search_with_vector(&self, query: &Query, vector: Option<&[f32]>) -> Result<Vec<SearchHit>> {
        self.search_pending_aware(query, vector.map_or(QueryVector::None, QueryVector::Given))
    }

    fn search_pending_aware(&self, query: &Query, vector: QueryVector<'_>) -> Result<Vec<SearchHit>> {
        let pending = &self.manifest.pending;
        if pending.is_empty() {
            return self.search_committed(query, vector);
        }
        // over-fetch by what the pending documents can hold, then drop them
        let extra: usize = pending.values().map(|p| p.old_chunks.max(p.new_chunks) as usize).sum();
        let mut wider = query.clone();
        wider.k += extra;
        wider.candidates += extra;
        let mut hits = self.search_committed(&wider, vector)?;
        hits.retain(|h| !pending.contains_key(&h.record.doc));
        hits.truncate(query.k);
        Ok(hits)
    }

    fn search_committed(&self, query: &Query, vector: QueryVector<'_>) -> Result<Vec<SearchHit>> {
        let vector = || match vector {
            QueryVector::Given(v) => Ok(v.to_vec()),
            QueryVector::Embed => self.embed_query(&query.text),
            QueryVector::None => Err(Error::Query("dense and hybrid search need a query vector".into())),
        };
        let n = query.candidates.max(query.k);
        let hit = |h: Hit, b: Option<usize>, d: Option<usize>| SearchHit {
            score: h.score,
            bm25_rank: b,
            dense_rank: d,
            record: h.record,
        };
        match (query.mode, &self.lexical) {
            (Mode::Bm25, Some(lex)) => Ok(lex
                .search(&query.text, query.k, &query.filter)?
                .into_iter()
                .enumerate()
                .map(|(i, h)| hit(h, Some(i + 1), None))
                .collect()),
            (Mode::Bm25, None) => {
                let q = VectorQuery::Sparse(self.sparse_query(&query.text));
                Ok(self
                    .vectors
                    .search(&q, query.k, &query.filter)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, h)| hit(h, Some(i + 1), None))
                    .collect())
            }
            (Mode::Dense, _) => {
                let v = vector()?;
                Ok(self
                    .vectors
                    .search(&VectorQuery::Dense(v), query.k, &query.filter)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, h)| hit(h, None, Some(i + 1)))
                    .collect())
            }
            (Mode::Hybrid, Some(lex)) => {
                // The two lists are independent: BM25 on one task, (embedding and) dense on another.
                // Both lists are ids only; the texts are read for the fused top k alone.
                let (lexical, dense) = rayon::join(
                    || lex.search_ids(&query.text, n, &query.filter),
                    || self.vectors.search_ids(&VectorQuery::Dense(vector()?), n, &query.filter),
                );
                let fused = fuse(&lexical?, &dense?, query);
                let ids: Vec<u64> = fused.iter().map(|f| f.id).collect();
                let mut records: HashMap<u64, ChunkRecord> = lex.get(&ids)?.into_iter().map(|r| (r.id, r)).collect();
                if records.len() < ids.len() {
                    // Only in the vector store (the stores disagree until `ingest` recovers them).
                    let missing: Vec<u64> = ids.iter().copied().filter(|id| !records.contains_key(id)).collect();
                    records.extend(self.vectors.get(&missing)?.into_iter().map(|r| (r.id, r)));
                }
                Ok(fused
                    .into_iter()
                    .filter_map(|f| {
                        Some(SearchHit {
                            score: f.score,
                            bm25_rank: f.bm25_rank,
                            dense_rank: f.dense_rank,
                            record: records.remove(&f.id)?,
                        })
                    })
                    .collect())
            }
            (Mode::Hybrid, None) => {
                let v = vector()?;
                let q = VectorQuery::Hybrid {
                    dense: v,
                    sparse: self.sparse_query(&query.text),
                    prefetch: n,
                    k: query.rrf_k.round() as usize,
                    weights: query.weights,
                };
                Ok(self.vectors.search(&q, query.k, &query.filter)?.into_iter().map(|h| hit(h, None, None)).collect())
            }
        }
    }

    fn sparse_query(&self, text: &str) -> crate::store::Sparse {
        sparse::bm25_query_vector(&crate::analyze(text))
    }
}

/// One entry of a fused list, before its record is read.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fused {
    id: u64,
    score: f32,
    bm25_rank: Option<usize>,
    dense_rank: Option<usize>,
}

/// Client-side RRF of a BM25 list and a dense list, each `(score, id)` best first: the top
/// `q.k` ids with their fused scores and their 1-based rank in each list.
fn fuse(lexical: &[(f32, u64)], dense: &[(f32, u64)], q: &Query) -> Vec<Fused> {
    let lex_ids: Vec<u64> = lexical.iter().map(|h| h.1).collect();
    let dense_ids: Vec<u64> = dense.iter().map(|h| h.1).collect();
    let ranks =
        |ids: &[u64]| -> HashMap<u64, usize> { ids.iter().enumerate().map(|(i, &id)| (id, i + 1)).rev().collect() };
    let (lr, dr) = (ranks(&lex_ids), ranks(&dense_ids));
    let params = Rrf { k: q.rrf_k, weights: q.weights.map(|w| vec![w.bm25, w.dense]) };
    rrf(&[lex_ids, dense_ids], &params)
        .into_iter()
        .take(q.k)
        .map(|(id, score)| Fused { id, score, bm25_rank: lr.get(&id).copied(), dense_rank: dr.get(&id).copied() })
        .collect()
}

//! [`ServerStore`]: the [`VectorStore`] contract over a Qdrant server or cluster (gRPC, through
//! `qdrant-client`).
//!
//! One collection holds every chunk: a named dense vector [`DENSE`] (cosine) and a named sparse
//! vector [`SPARSE`] holding BM25 document weights (see [`crate::sparse`]) with Qdrant's IDF
//! modifier, so the server computes BM25 itself. The payload is the chunk record plus `dirs`,
//! the path's ancestors, with keyword indexes on `dirs`, `kind` and `doc` for filters. Point ids
//! are the deterministic [`point_id`](crate::point_id)s, so many ingest workers can write one
//! collection and re-ingesting replaces instead of duplicating.
//!
//! The trait is synchronous; the store owns a small tokio runtime and blocks on each request.
//! Every write waits for the server to apply it (`wait = true`), so [`VectorStore::commit`] has
//! nothing left to do.
//!
//! The requests are built by pure functions (`requests.rs`: `create_collection_request`,
//! `upsert_request`, `query_request`, `filter`, ...) that the unit tests check field by field
//! without a server.
//!
//! # Hybrid search and RRF
//!
//! [`VectorQuery::Hybrid`] becomes one query with two prefetches (dense on [`DENSE`], sparse on
//! [`SPARSE`], each limited to `prefetch` candidates and filtered) fused server-side by
//! parameterised RRF (`Query::Rrf { k, weights }`, which `qdrant-client` 1.20 supports; servers
//! too old to know it reject the query). Qdrant's RRF differs from
//! [`metarag_core::fusion::rrf`] in two ways, and the request translates what it can:
//!
//! - Qdrant scores the item at 0-based position `p` as `1 / (p + k)` (its default `k` is 2),
//!   i.e. `1 / (rank + k − 1)` with 1-based ranks, where metarag uses `1 / (k + rank)`. The
//!   request therefore sends `k + 1`, and unweighted fused scores equal metarag's own.
//! - With weights, Qdrant divides the rank by the weight (`1 / (rank / w + k_qdrant − 1)`),
//!   where metarag multiplies the score (`w / (k + rank)`). Both favour the heavier list, but
//!   the fused scores (and some orders) differ; this cannot be translated exactly.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use qdrant_client::qdrant::{GetPointsBuilder, PointId};
use qdrant_client::{Qdrant, QdrantError};

use crate::store::{self, ChunkRecord, DENSE, Hit, Point, VectorQuery, VectorSearch, VectorStore};
use crate::{Error, Result};

mod requests;
use requests::*;

/// Points per upsert request (a few MiB at typical embedding sizes, well under gRPC limits).
const UPSERT_BATCH: usize = 256;
/// Ids per get or delete request.
const ID_BATCH: usize = 1024;
/// Ids per scroll page.
const SCROLL_PAGE: u32 = 1024;
/// Payload fields with a keyword index (the filterable ones).
const INDEXED_FIELDS: [&str; 3] = ["dirs", "kind", "doc"];
/// What to say when a method is called from async code (where blocking would panic).
const IN_RUNTIME: &str = "called from inside an async runtime; call the store from a plain thread or spawn_blocking";
/// What to say when the server cannot be reached.
const CONNECT_HINT: &str = "is a Qdrant server running? gRPC port is usually 6334";

/// Where a [`ServerStore`] finds its server and collection.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// gRPC URL of the server, e.g. `http://localhost:6334` (`https://` for TLS).
    pub url: String,
    /// Collection name; created on first connect if missing.
    pub collection: String,
    /// API key, for servers that require one.
    pub api_key: Option<String>,
    /// Timeout of each request, and of establishing the connection.
    pub timeout: Duration,
}

impl ServerConfig {
    /// A config for `collection` on the server at `url`, without API key, 30 s timeout.
    pub fn new(url: impl Into<String>, collection: impl Into<String>) -> Self {
        ServerConfig { url: url.into(), collection: collection.into(), api_key: None, timeout: Duration::from_secs(30) }
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn describe(&self) -> String {
        format!("qdrant server {} collection {}", self.url, self.collection)
    }
}

/// The API key is never printed.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A collection on a Qdrant server, as a [`VectorStore`] with dense, sparse (BM25) and hybrid
/// search.
///
/// Its methods block on an internal tokio runtime: call them from ordinary threads (or
/// `spawn_blocking`), not from inside an async task, where they return an error.
pub struct ServerStore {
    client: Qdrant,
    runtime: tokio::runtime::Runtime,
    cfg: ServerConfig,
    dims: usize,
}

impl fmt::Debug for ServerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStore").field("cfg", &self.cfg).field("dims", &self.dims).finish_non_exhaustive()
    }
}

impl ServerStore {
    /// Connects to the server, creates the collection if it is missing (dense vector of `dims`
    /// dimensions, cosine; sparse BM25 vector with IDF; keyword indexes on `dirs`, `kind`,
    /// `doc`), or checks that the existing one has that layout.
    ///
    /// Fails with one line naming the URL when the server cannot be reached, and with expected
    /// vs got when the collection was made for another model or by another tool.
    pub fn connect(cfg: ServerConfig, dims: usize) -> Result<Self> {
        Self::connect_with(cfg, dims, true)
    }

    /// Connects to an existing collection for searching: creates nothing on the server; a
    /// missing collection is an error naming it.
    pub fn connect_existing(cfg: ServerConfig, dims: usize) -> Result<Self> {
        Self::connect_with(cfg, dims, false)
    }

    fn connect_with(cfg: ServerConfig, dims: usize, create: bool) -> Result<Self> {
        let fail = |detail: String| Error::Vector { store: cfg.describe(), detail };
        if dims == 0 {
            return Err(fail("the dense vector size must be positive, got 0".into()));
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(fail(IN_RUNTIME.into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("metarag-qdrant")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
        let client = Qdrant::from_url(&cfg.url)
            .api_key(cfg.api_key.clone())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .skip_compatibility_check()
            .build()
            .map_err(|e| fail(format!("invalid server URL {:?}: {}", cfg.url, explain(&e))))?;
        let store = ServerStore { client, runtime, cfg, dims };
        if let Err(e) = store.runtime.block_on(store.client.health_check()) {
            let (url, reason) = (&store.cfg.url, connect_reason(&e));
            return Err(store.error(format!("cannot reach {url}: {reason} ({CONNECT_HINT})")));
        }
        store.ensure_collection(create)?;
        Ok(store)
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.cfg.url
    }

    /// The collection name.
    pub fn collection(&self) -> &str {
        &self.cfg.collection
    }

    /// Size of the dense vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    fn collection_name(&self) -> &str {
        &self.cfg.collection
    }

    /// Runs a request on the store's runtime.
    fn block_on<T>(&self, fut: impl Future<Output = Result<T, QdrantError>>) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(self.error(IN_RUNTIME.into()));
        }
        self.runtime.block_on(fut).map_err(|e| self.error(explain(&e)))
    }

    /// Runs a request, prefixing errors with what was being done.
    fn run<T>(&self, what: impl fmt::Display, fut: impl Future<Output = Result<T, QdrantError>>) -> Result<T> {
        self.block_on(fut).map_err(|e| match e {
            Error::Vector { store, detail } => Error::Vector { store, detail: format!("{what}: {detail}") },
            other => other,
        })
    }

    fn error(&self, detail: String) -> Error {
        Error::Vector { store: self.describe(), detail }
    }

    fn ensure_collection(&self, create: bool) -> Result<()> {
        let name = self.collection_name();
        let exists = self.run("checking whether the collection exists", self.client.collection_exists(name))?;
        if !exists && !create {
            return Err(self.error(format!("the collection {name:?} does not exist (an ingest creates it)")));
        }
        if !exists {
            let created = self.run(
                "creating the collection",
                self.client.create_collection(create_collection_request(name, self.dims)),
            );
            // Another worker may have created it meanwhile; then check its layout below.
            if let Err(e) = created
                && !self.run("checking whether the collection exists", self.client.collection_exists(name))?
            {
                return Err(e);
            }
        }
        let info = self.run("reading the collection's configuration", self.client.collection_info(name))?;
        let info = info.result.ok_or_else(|| self.error("the server returned no collection info".into()))?;
        check_collection(&info, self.dims).map_err(|d| self.error(d))?;
        if !create {
            return Ok(()); // a reader changes nothing; missing keyword indexes only cost speed
        }
        for field in missing_indexes(&info) {
            self.run(
                format_args!("creating the keyword index on payload field `{field}`"),
                self.client.create_field_index(field_index_request(name, field)),
            )?;
        }
        Ok(())
    }

    fn check_dense(&self, v: &[f32], what: &str) -> Result<()> {
        if v.len() == self.dims {
            Ok(())
        } else {
            Err(self.error(format!("{what} has {} dimensions, the collection expects {}", v.len(), self.dims)))
        }
    }
}

impl VectorSearch for ServerStore {
    fn describe(&self) -> String {
        self.cfg.describe()
    }

    fn search(&self, query: &VectorQuery, limit: usize, filter: &store::Filter) -> Result<Vec<Hit>> {
        match query {
            VectorQuery::Dense(d) | VectorQuery::Hybrid { dense: d, .. } => self.check_dense(d, "the query vector")?,
            VectorQuery::Sparse(s) if s.indices.is_empty() => return Ok(Vec::new()),
            VectorQuery::Sparse(_) => {}
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let kind = match query {
            VectorQuery::Dense(_) => "dense",
            VectorQuery::Sparse(_) => "sparse",
            VectorQuery::Hybrid { .. } => "hybrid",
        };
        let response = self.run(
            format_args!("{kind} search (limit {limit})"),
            self.client.query(query_request(self.collection_name(), query, limit, filter)),
        )?;
        response
            .result
            .into_iter()
            .map(|p| {
                let record = record_of(p.id.as_ref(), p.payload).map_err(|d| self.error(d))?;
                Ok(Hit { score: p.score, record })
            })
            .collect()
    }

    fn supports_sparse(&self) -> bool {
        true
    }

    fn get(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(ID_BATCH) {
            let response = self.run(
                format_args!("get of {} points", batch.len()),
                self.client.get_points(get_request(self.collection_name(), batch)),
            )?;
            for p in response.result {
                out.push(record_of(p.id.as_ref(), p.payload).map_err(|d| self.error(d))?);
            }
        }
        Ok(out)
    }

    fn dense_vectors(&self, ids: &[u64]) -> Result<Vec<(u64, Vec<f32>)>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(ID_BATCH) {
            let ids: Vec<PointId> = batch.iter().map(|&id| PointId::from(id)).collect();
            let request = GetPointsBuilder::new(self.collection_name(), ids).with_payload(false).with_vectors(true);
            let response =
                self.run(format_args!("vectors of {} points", batch.len()), self.client.get_points(request.build()))?;
            for p in response.result {
                let id = numeric_id(p.id.as_ref()).map_err(|d| self.error(d))?;
                let dense = p
                    .vectors
                    .and_then(|v| v.get_vector_by_name(DENSE))
                    .and_then(|v| match v {
                        qdrant_client::qdrant::vector_output::Vector::Dense(d) => Some(d.data),
                        _ => None,
                    })
                    .ok_or_else(|| self.error(format!("point {id} has no dense vector `{DENSE}`")))?;
                out.push((id, dense));
            }
        }
        Ok(out)
    }

    fn ids(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let mut offset = None;
        loop {
            let page = self.run(
                format_args!("listing point ids (after {} ids)", out.len()),
                self.client.scroll(scroll_request(self.collection_name(), offset)),
            )?;
            for p in &page.result {
                out.push(numeric_id(p.id.as_ref()).map_err(|d| self.error(d))?);
            }
            match page.next_page_offset {
                Some(next) if !page.result.is_empty() => {
                    offset = Some(numeric_id(Some(&next)).map_err(|d| self.error(d))?);
                }
                _ => break,
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn count(&self) -> Result<usize> {
        let response = self.run("counting points", self.client.count(count_request(self.collection_name())))?;
        let n = response.result.map_or(0, |r| r.count);
        usize::try_from(n).map_err(|_| self.error(format!("point count {n} does not fit in usize")))
    }
}

impl VectorStore for ServerStore {
    fn upsert(&self, points: &[Point]) -> Result<()> {
        for p in points {
            self.check_dense(&p.dense, &format!("the dense vector of point {}", p.record.id))?;
            if p.sparse.indices.len() != p.sparse.values.len() {
                return Err(self.error(format!(
                    "the sparse vector of point {} has {} indices but {} values",
                    p.record.id,
                    p.sparse.indices.len(),
                    p.sparse.values.len()
                )));
            }
        }
        let total = points.len();
        for (i, batch) in points.chunks(UPSERT_BATCH).enumerate() {
            let first = i * UPSERT_BATCH;
            self.run(
                format_args!("upsert of {total} points (points {}..{})", first, first + batch.len()),
                self.client.upsert_points(upsert_request(self.collection_name(), batch)),
            )?;
        }
        Ok(())
    }

    fn delete(&self, ids: &[u64]) -> Result<()> {
        for batch in ids.chunks(ID_BATCH) {
            self.run(
                format_args!("delete of {} points", ids.len()),
                self.client.delete_points(delete_request(self.collection_name(), batch)),
            )?;
        }
        Ok(())
    }

    fn commit(&self) -> Result<()> {
        // Every write used `wait = true`: the server has applied (and logged) it already.
        Ok(())
    }
}

/// A client error in one line: gRPC code and message (plus the connection hint when the server
/// could not be reached), or the client's own message.
fn explain(e: &QdrantError) -> String {
    match e {
        QdrantError::ResponseError { status } => {
            let mut s = format!("{:?}: {}", status.code(), status.message());
            if is_connection_failure(e) {
                s.push_str(" (");
                s.push_str(CONNECT_HINT);
                s.push(')');
            }
            s
        }
        QdrantError::ResourceExhaustedError { status, retry_after_seconds } => {
            format!("server overloaded: {} (retry after {retry_after_seconds} s)", status.message())
        }
        other => other.to_string(),
    }
}

/// Why a connection failed, shortly: the OS's reason when the transport error carries one
/// (`Connection refused`), else the gRPC code and message.
fn connect_reason(e: &QdrantError) -> String {
    let QdrantError::ResponseError { status } = e else {
        return explain(e);
    };
    let msg = status.message();
    let os_reason = msg.find("message: \"").and_then(|i| {
        let rest = &msg[i + "message: \"".len()..];
        rest.find('"').map(|end| rest[..end].to_owned())
    });
    os_reason.unwrap_or_else(|| format!("{:?}: {msg}", status.code()))
}

/// Whether the error says the server could not be reached (rather than refused the request).
fn is_connection_failure(e: &QdrantError) -> bool {
    match e {
        QdrantError::ResponseError { status } => {
            let code = format!("{:?}", status.code());
            let msg = status.message();
            code == "Unavailable"
                || msg.starts_with("Failed to connect")
                || msg.contains("transport error")
                || msg.contains("tcp connect")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use qdrant_client::Payload;
    use qdrant_client::qdrant::{
        CollectionConfig, CollectionParams, PayloadSchemaInfo, PrefetchQuery, RepeatedStrings, VectorsConfig,
        condition::ConditionOneOf, r#match::MatchValue, points_selector::PointsSelectorOneOf, query, vector,
        vector_input, vectors, with_payload_selector, with_vectors_selector,
    };
    use qdrant_client::qdrant::{
        CollectionInfo, CreateCollection, Distance, FieldType, Modifier, PayloadSchemaType, Query, QueryPoints, Vector,
        VectorParamsBuilder, VectorsConfigBuilder, vectors_config,
    };

    use super::*;
    use crate::store::{Filter, HybridWeights, SPARSE, Sparse};

    fn record(id: u64, path: &str, kind: &str) -> ChunkRecord {
        ChunkRecord {
            id,
            doc: path.into(),
            path: path.into(),
            kind: kind.parse().expect("a document kind"),
            chunk: 3,
            start: 10,
            end: 25,
            text: "fifteen bytes!!".into(),
        }
    }

    fn point(id: u64) -> Point {
        Point {
            record: record(id, "docs/a/b.md", "markdown"),
            dense: vec![0.6, 0.8, 0.0],
            sparse: Sparse { indices: vec![2, 9, 40], values: vec![1.5, 0.25, 1.0] },
        }
    }

    fn hybrid(weights: Option<HybridWeights>, sparse: Sparse) -> VectorQuery {
        VectorQuery::Hybrid { dense: vec![1.0, 0.0, 0.0], sparse, prefetch: 40, k: 60, weights }
    }

    fn filter_of(prefix: Option<&str>, kinds: &[&str]) -> Filter {
        Filter { path_prefix: prefix.map(str::to_owned), kinds: kinds.iter().map(|k| (*k).to_owned()).collect() }
    }

    /// The field conditions of a filter as (key, match) pairs.
    fn conditions(f: &qdrant_client::qdrant::Filter) -> Vec<(String, Option<MatchValue>)> {
        assert!(f.should.is_empty() && f.must_not.is_empty() && f.min_should.is_none());
        f.must
            .iter()
            .map(|c| match &c.condition_one_of {
                Some(ConditionOneOf::Field(fc)) => {
                    (fc.key.clone(), fc.r#match.as_ref().and_then(|m| m.match_value.clone()))
                }
                other => panic!("not a field condition: {other:?}"),
            })
            .collect()
    }

    fn dense_of(v: Option<&Vector>) -> Option<&[f32]> {
        match v.and_then(|v| v.vector.as_ref()) {
            Some(vector::Vector::Dense(d)) => Some(&d.data),
            _ => None,
        }
    }

    fn sparse_of(v: Option<&Vector>) -> Option<(&[u32], &[f32])> {
        match v.and_then(|v| v.vector.as_ref()) {
            Some(vector::Vector::Sparse(s)) => Some((&s.indices, &s.values)),
            _ => None,
        }
    }

    fn nearest(q: Option<&Query>) -> Option<&vector_input::Variant> {
        match q.and_then(|q| q.variant.as_ref()) {
            Some(query::Variant::Nearest(v)) => v.variant.as_ref(),
            _ => None,
        }
    }

    fn is_dense_query(q: Option<&Query>, expected: &[f32]) -> bool {
        matches!(nearest(q), Some(vector_input::Variant::Dense(d)) if d.data == expected)
    }

    fn is_sparse_query(q: Option<&Query>, s: &Sparse) -> bool {
        matches!(nearest(q), Some(vector_input::Variant::Sparse(v)) if v.indices == s.indices && v.values == s.values)
    }

    fn payload_on(req: &QueryPoints) -> bool {
        matches!(
            req.with_payload.as_ref().and_then(|w| w.selector_options.as_ref()),
            Some(with_payload_selector::SelectorOptions::Enable(true))
        ) && matches!(
            req.with_vectors.as_ref().and_then(|w| w.selector_options.as_ref()),
            Some(with_vectors_selector::SelectorOptions::Enable(false))
        )
    }

    #[test]
    fn create_collection_has_named_dense_and_idf_sparse() {
        let req = create_collection_request("chunks", 384);
        assert_eq!(req.collection_name, "chunks");
        let Some(vectors_config::Config::ParamsMap(m)) = req.vectors_config.as_ref().and_then(|v| v.config.as_ref())
        else {
            panic!("expected named vectors: {:?}", req.vectors_config);
        };
        assert_eq!(m.map.len(), 1);
        let dense = &m.map[DENSE];
        assert_eq!(dense.size, 384);
        assert_eq!(dense.distance, Distance::Cosine as i32);
        let sparse = req.sparse_vectors_config.as_ref().map(|s| &s.map);
        assert_eq!(sparse.map(|s| s.len()), Some(1));
        assert_eq!(sparse.and_then(|s| s.get(SPARSE)).and_then(|p| p.modifier), Some(Modifier::Idf as i32));
    }

    /// What the server would report for a collection made by `create_collection_request`.
    fn info_of(req: &CreateCollection) -> CollectionInfo {
        CollectionInfo {
            config: Some(CollectionConfig {
                params: Some(CollectionParams {
                    vectors_config: req.vectors_config.clone(),
                    sparse_vectors_config: req.sparse_vectors_config.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn existing_collection_is_checked() {
        let req = create_collection_request("c", 8);
        assert_eq!(check_collection(&info_of(&req), 8), Ok(()));

        let err = check_collection(&info_of(&req), 16).err().unwrap_or_default();
        assert!(err.contains("has 8 dimensions, expected 16"), "{err}");

        let mut dot = req.clone();
        if let Some(vectors_config::Config::ParamsMap(m)) = dot.vectors_config.as_mut().and_then(|v| v.config.as_mut())
            && let Some(p) = m.map.get_mut(DENSE)
        {
            p.distance = Distance::Dot as i32;
        }
        let err = check_collection(&info_of(&dot), 8).err().unwrap_or_default();
        assert!(err.contains("distance Dot, expected Cosine"), "{err}");

        let mut unnamed = req.clone();
        let params = VectorParamsBuilder::new(8, Distance::Cosine).build();
        unnamed.vectors_config = Some(VectorsConfig { config: Some(vectors_config::Config::Params(params)) });
        let err = check_collection(&info_of(&unnamed), 8).err().unwrap_or_default();
        assert!(err.contains("unnamed"), "{err}");

        let mut other_name = req.clone();
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params("text", VectorParamsBuilder::new(8, Distance::Cosine));
        other_name.vectors_config = Some(vectors.into());
        let err = check_collection(&info_of(&other_name), 8).err().unwrap_or_default();
        assert!(err.contains("no dense vector named `dense` (it has: text)"), "{err}");

        let mut no_sparse = req.clone();
        no_sparse.sparse_vectors_config = None;
        let err = check_collection(&info_of(&no_sparse), 8).err().unwrap_or_default();
        assert!(err.contains("no sparse vector named `bm25`"), "{err}");

        let mut no_idf = req.clone();
        if let Some(p) = no_idf.sparse_vectors_config.as_mut().and_then(|s| s.map.get_mut(SPARSE)) {
            p.modifier = None;
        }
        let err = check_collection(&info_of(&no_idf), 8).err().unwrap_or_default();
        assert!(err.contains("IDF"), "{err}");

        assert!(check_collection(&CollectionInfo::default(), 8).is_err());
    }

    #[test]
    fn keyword_indexes_are_created_when_missing() {
        let mut info = CollectionInfo::default();
        assert_eq!(missing_indexes(&info), vec!["dirs", "kind", "doc"]);
        let keyword = PayloadSchemaInfo { data_type: PayloadSchemaType::Keyword as i32, ..Default::default() };
        let text = PayloadSchemaInfo { data_type: PayloadSchemaType::Text as i32, ..Default::default() };
        info.payload_schema.insert("dirs".into(), keyword);
        info.payload_schema.insert("kind".into(), text);
        assert_eq!(missing_indexes(&info), vec!["kind", "doc"]);

        let req = field_index_request("c", "kind");
        assert_eq!(req.collection_name, "c");
        assert_eq!(req.field_name, "kind");
        assert_eq!(req.field_type, Some(FieldType::Keyword as i32));
        assert_eq!(req.wait, Some(true));
    }

    #[test]
    fn upsert_carries_ids_named_vectors_and_payload() {
        let points = [point(7), point(1 << 62)];
        let req = upsert_request("c", &points);
        assert_eq!(req.collection_name, "c");
        assert_eq!(req.wait, Some(true));
        assert_eq!(req.points.len(), 2);
        for (ps, p) in req.points.iter().zip(&points) {
            assert_eq!(numeric_id(ps.id.as_ref()), Ok(p.record.id));
            let Some(vectors::VectorsOptions::Vectors(named)) =
                ps.vectors.as_ref().and_then(|v| v.vectors_options.as_ref())
            else {
                panic!("expected named vectors: {:?}", ps.vectors);
            };
            assert_eq!(named.vectors.len(), 2);
            assert_eq!(dense_of(named.vectors.get(DENSE)), Some(&p.dense[..]));
            assert_eq!(sparse_of(named.vectors.get(SPARSE)), Some((&p.sparse.indices[..], &p.sparse.values[..])));

            let json = serde_json::Value::from(Payload::from(ps.payload.clone()));
            assert_eq!(json["path"], "docs/a/b.md");
            assert_eq!(json["kind"], "markdown");
            assert_eq!(json["doc"], "docs/a/b.md");
            assert_eq!(json["chunk"], 3);
            assert_eq!(json["start"], 10);
            assert_eq!(json["end"], 25);
            assert_eq!(json["dirs"], serde_json::json!(["docs", "docs/a", "docs/a/b.md"]));
            assert!(json.get("id").is_none());
            // And the payload reads back as the record.
            assert_eq!(record_of(ps.id.as_ref(), ps.payload.clone()), Ok(p.record.clone()));
        }
    }

    #[test]
    fn delete_get_scroll_count_requests() {
        let del = delete_request("c", &[3, 5]);
        assert_eq!(del.wait, Some(true));
        let Some(PointsSelectorOneOf::Points(list)) =
            del.points.as_ref().and_then(|p| p.points_selector_one_of.as_ref())
        else {
            panic!("expected an id list: {:?}", del.points);
        };
        let ids: Vec<_> = list.ids.iter().map(|i| numeric_id(Some(i))).collect();
        assert_eq!(ids, vec![Ok(3), Ok(5)]);

        let get = get_request("c", &[9, 4]);
        assert_eq!(get.collection_name, "c");
        assert_eq!(get.ids, vec![PointId::from(9), PointId::from(4)]);
        assert!(matches!(
            get.with_payload.as_ref().and_then(|w| w.selector_options.as_ref()),
            Some(with_payload_selector::SelectorOptions::Enable(true))
        ));

        let first = scroll_request("c", None);
        assert_eq!(first.offset, None);
        assert_eq!(first.limit, Some(SCROLL_PAGE));
        assert!(matches!(
            first.with_payload.as_ref().and_then(|w| w.selector_options.as_ref()),
            Some(with_payload_selector::SelectorOptions::Enable(false))
        ));
        assert_eq!(scroll_request("c", Some(77)).offset, Some(PointId::from(77)));

        let count = count_request("c");
        assert_eq!(count.exact, Some(true));
        assert_eq!(count.filter, None);
    }

    #[test]
    fn filter_conditions() {
        assert_eq!(filter(&Filter::default()), None);

        let f = filter(&filter_of(Some("./docs//a/"), &[])).map(|f| conditions(&f));
        assert_eq!(f, Some(vec![("dirs".to_owned(), Some(MatchValue::Keyword("docs/a".into())))]));

        let f = filter(&filter_of(None, &["pdf", "html"])).map(|f| conditions(&f));
        let any = MatchValue::Keywords(RepeatedStrings { strings: vec!["pdf".into(), "html".into()] });
        assert_eq!(f, Some(vec![("kind".to_owned(), Some(any.clone()))]));

        let f = filter(&filter_of(Some("/abs/dir"), &["pdf", "html"])).map(|f| conditions(&f));
        assert_eq!(
            f,
            Some(vec![
                ("dirs".to_owned(), Some(MatchValue::Keyword("/abs/dir".into()))),
                ("kind".to_owned(), Some(any))
            ])
        );
    }

    #[test]
    fn dense_and_sparse_queries_use_their_vector() {
        let f = filter_of(Some("docs"), &[]);
        let req = query_request("c", &VectorQuery::Dense(vec![0.0, 1.0, 0.0]), 7, &f);
        assert_eq!(req.collection_name, "c");
        assert_eq!(req.using.as_deref(), Some(DENSE));
        assert!(is_dense_query(req.query.as_ref(), &[0.0, 1.0, 0.0]));
        assert_eq!(req.limit, Some(7));
        assert!(req.prefetch.is_empty());
        assert_eq!(req.filter, filter(&f));
        assert!(payload_on(&req));

        let s = Sparse { indices: vec![1, 5], values: vec![1.0, 1.0] };
        let req = query_request("c", &VectorQuery::Sparse(s.clone()), 3, &Filter::default());
        assert_eq!(req.using.as_deref(), Some(SPARSE));
        assert!(is_sparse_query(req.query.as_ref(), &s));
        assert_eq!(req.limit, Some(3));
        assert_eq!(req.filter, None);
        assert!(payload_on(&req));
    }

    fn rrf_of(req: &QueryPoints) -> Option<&qdrant_client::qdrant::Rrf> {
        match req.query.as_ref().and_then(|q| q.variant.as_ref()) {
            Some(query::Variant::Rrf(r)) => Some(r),
            _ => None,
        }
    }

    fn check_prefetch(p: &PrefetchQuery, using: &str, f: &Option<qdrant_client::qdrant::Filter>) {
        assert_eq!(p.using.as_deref(), Some(using));
        assert_eq!(p.limit, Some(40));
        assert_eq!(&p.filter, f);
        assert!(p.prefetch.is_empty());
    }

    #[test]
    fn hybrid_query_prefetches_both_and_fuses_by_rrf() {
        let s = Sparse { indices: vec![4, 8], values: vec![1.0, 2.0] };
        let f = filter_of(Some("docs"), &["markdown"]);
        let flt = filter(&f);
        let req = query_request("c", &hybrid(None, s.clone()), 10, &f);
        assert_eq!(req.limit, Some(10));
        assert_eq!(req.using, None);
        assert_eq!(req.filter, flt);
        assert!(payload_on(&req));
        assert_eq!(req.prefetch.len(), 2);
        check_prefetch(&req.prefetch[0], DENSE, &flt);
        assert!(is_dense_query(req.prefetch[0].query.as_ref(), &[1.0, 0.0, 0.0]));
        check_prefetch(&req.prefetch[1], SPARSE, &flt);
        assert!(is_sparse_query(req.prefetch[1].query.as_ref(), &s));
        // metarag's k = 60 (1-based ranks) is Qdrant's k = 61 (0-based positions).
        let rrf = rrf_of(&req);
        assert_eq!(rrf.and_then(|r| r.k), Some(61));
        assert_eq!(rrf.map(|r| r.weights.len()), Some(0));

        let req = query_request("c", &hybrid(Some(HybridWeights { bm25: 0.3, dense: 0.7 }), s), 10, &Filter::default());
        assert_eq!(req.filter, None);
        check_prefetch(&req.prefetch[0], DENSE, &None);
        check_prefetch(&req.prefetch[1], SPARSE, &None);
        assert_eq!(rrf_of(&req).map(|r| r.weights.clone()), Some(vec![0.7, 0.3]));
    }

    #[test]
    fn hybrid_query_without_terms_prefetches_dense_only() {
        let w = HybridWeights { bm25: 0.3, dense: 0.7 };
        let req = query_request("c", &hybrid(Some(w), Sparse::default()), 5, &Filter::default());
        assert_eq!(req.prefetch.len(), 1);
        check_prefetch(&req.prefetch[0], DENSE, &None);
        assert_eq!(rrf_of(&req).map(|r| r.weights.clone()), Some(vec![0.7]));
    }

    #[test]
    fn rrf_k_saturates() {
        let Some(query::Variant::Rrf(r)) = rrf_query(usize::MAX, None).variant else {
            panic!("expected rrf");
        };
        assert_eq!(r.k, Some(u32::MAX));
    }

    #[test]
    fn foreign_points_are_reported() {
        assert!(numeric_id(None).is_err());
        let uuid = PointId::from("936DA01F-9ABD-4D9D-80C7-02AF85C822A8");
        assert!(numeric_id(Some(&uuid)).err().unwrap_or_default().contains("UUID"));
        let err = record_of(Some(&PointId::from(5)), HashMap::new()).err().unwrap_or_default();
        assert!(err.contains("point 5"), "{err}");
    }

    #[test]
    fn config_debug_hides_the_api_key() {
        let cfg = ServerConfig::new("http://localhost:6334", "c").with_api_key("s3cret");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret") && shown.contains("redacted"), "{shown}");
        assert_eq!(cfg.describe(), "qdrant server http://localhost:6334 collection c");
    }

    #[test]
    fn unreachable_server_gives_one_clear_line() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let cfg = ServerConfig::new("http://127.0.0.1:1", "c").with_timeout(Duration::from_secs(5));
        let err = ServerStore::connect(cfg, 4).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("http://127.0.0.1:1"), "{err}");
        assert!(err.contains("gRPC port is usually 6334"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        let err = ServerStore::connect(ServerConfig::new("not a url", "c"), 4).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("invalid server URL"));
        let err = ServerStore::connect(ServerConfig::new("http://127.0.0.1:1", "c"), 0).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("must be positive"));
    }
}

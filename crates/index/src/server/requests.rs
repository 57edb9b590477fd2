//! The gRPC requests of a [`super::ServerStore`] and the conversions of its answers: pure
//! functions, checked field by field by the unit tests without a server.

use std::collections::HashMap;

use qdrant_client::Payload;
use qdrant_client::qdrant::{
    CollectionInfo, Condition, CountPoints, CountPointsBuilder, CreateCollection, CreateCollectionBuilder,
    CreateFieldIndexCollection, CreateFieldIndexCollectionBuilder, DeletePoints, DeletePointsBuilder, Distance,
    FieldType, GetPoints, GetPointsBuilder, Modifier, NamedVectors, PayloadSchemaType, PointId, PointStruct,
    PointsIdsList, PrefetchQueryBuilder, Query, QueryPoints, QueryPointsBuilder, RrfBuilder, ScrollPoints,
    ScrollPointsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpsertPoints, UpsertPointsBuilder,
    Value, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder, point_id::PointIdOptions, vectors_config,
};

use super::{INDEXED_FIELDS, SCROLL_PAGE};
use crate::store::{self, ChunkRecord, DENSE, Point, SPARSE, Sparse, VectorQuery};

/// The request creating `collection`: named dense vector [`DENSE`] (`dims`, cosine) and named
/// sparse vector [`SPARSE`] with the IDF modifier.
pub(super) fn create_collection_request(collection: &str, dims: usize) -> CreateCollection {
    let mut vectors = VectorsConfigBuilder::default();
    vectors.add_named_vector_params(DENSE, VectorParamsBuilder::new(dims as u64, Distance::Cosine));
    let mut sparse = SparseVectorsConfigBuilder::default();
    sparse.add_named_vector_params(SPARSE, SparseVectorParamsBuilder::default().modifier(Modifier::Idf));
    CreateCollectionBuilder::new(collection).vectors_config(vectors).sparse_vectors_config(sparse).build()
}

/// The request creating a keyword index on payload field `field`.
pub(super) fn field_index_request(collection: &str, field: &str) -> CreateFieldIndexCollection {
    CreateFieldIndexCollectionBuilder::new(collection, field, FieldType::Keyword).wait(true).build()
}

/// Checks that an existing collection has the layout [`create_collection_request`] makes.
pub(super) fn check_collection(info: &CollectionInfo, dims: usize) -> Result<(), String> {
    let params = info
        .config
        .as_ref()
        .and_then(|c| c.params.as_ref())
        .ok_or("the server reported no parameters for the collection")?;
    let dense = match params.vectors_config.as_ref().and_then(|v| v.config.as_ref()) {
        Some(vectors_config::Config::ParamsMap(m)) => match m.map.get(DENSE) {
            Some(p) => p,
            None => {
                let mut names: Vec<&str> = m.map.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(format!(
                    "the collection has no dense vector named `{DENSE}` (it has: {}); it was not made by metarag",
                    names.join(", ")
                ));
            }
        },
        Some(vectors_config::Config::Params(_)) => {
            return Err(format!(
                "the collection has one unnamed dense vector, expected one named `{DENSE}`; it was not made by metarag"
            ));
        }
        None => return Err(format!("the collection has no dense vectors, expected one named `{DENSE}`")),
    };
    if dense.size != dims as u64 {
        return Err(format!(
            "dense vector `{DENSE}` has {} dimensions, expected {dims} (the embedding model's); \
             use another collection for this model",
            dense.size
        ));
    }
    if dense.distance != Distance::Cosine as i32 {
        let got = Distance::try_from(dense.distance).map_or("unknown", |d| d.as_str_name());
        return Err(format!("dense vector `{DENSE}` uses distance {got}, expected Cosine"));
    }
    let sparse =
        params.sparse_vectors_config.as_ref().and_then(|s| s.map.get(SPARSE)).ok_or_else(|| {
            format!("the collection has no sparse vector named `{SPARSE}`; it was not made by metarag")
        })?;
    if sparse.modifier != Some(Modifier::Idf as i32) {
        return Err(format!("sparse vector `{SPARSE}` lacks the IDF modifier that BM25 scoring needs"));
    }
    Ok(())
}

/// The indexed payload fields that lack a keyword index.
pub(super) fn missing_indexes(info: &CollectionInfo) -> Vec<&'static str> {
    INDEXED_FIELDS
        .into_iter()
        .filter(|f| info.payload_schema.get(*f).is_none_or(|s| s.data_type != PayloadSchemaType::Keyword as i32))
        .collect()
}

/// One point: numeric id, named vectors {[`DENSE`], [`SPARSE`]}, payload from
/// [`store::payload_json`].
pub(super) fn point_struct(p: &Point) -> PointStruct {
    let vectors = NamedVectors::default()
        .add_vector(DENSE, Vector::new_dense(p.dense.clone()))
        .add_vector(SPARSE, Vector::new_sparse(p.sparse.indices.clone(), p.sparse.values.clone()));
    PointStruct::new(p.record.id, vectors, Payload::from(store::payload_json(&p.record)))
}

/// The upsert of `points`, waiting for the server to apply it.
pub(super) fn upsert_request(collection: &str, points: &[Point]) -> UpsertPoints {
    UpsertPointsBuilder::new(collection, points.iter().map(point_struct).collect::<Vec<_>>()).wait(true).build()
}

/// The deletion of `ids`, waiting for the server to apply it.
pub(super) fn delete_request(collection: &str, ids: &[u64]) -> DeletePoints {
    DeletePointsBuilder::new(collection).points(PointsIdsList::from(ids.to_vec())).wait(true).build()
}

/// The filter as a Qdrant filter: `dirs` must contain the normalised prefix, `kind` must be one
/// of the kinds. `None` when the filter lets everything through.
pub(super) fn filter(f: &store::Filter) -> Option<qdrant_client::qdrant::Filter> {
    if f.is_empty() {
        return None;
    }
    let mut must = Vec::new();
    if let Some(p) = &f.path_prefix {
        must.push(Condition::matches("dirs", store::normalize_prefix(p)));
    }
    if !f.kinds.is_empty() {
        must.push(Condition::matches("kind", f.kinds.clone()));
    }
    Some(qdrant_client::qdrant::Filter::must(must))
}

pub(super) fn nearest_dense(v: &[f32]) -> Query {
    Query::new_nearest(VectorInput::new_dense(v.to_vec()))
}

pub(super) fn nearest_sparse(s: &Sparse) -> Query {
    Query::new_nearest(VectorInput::new_sparse(s.indices.clone(), s.values.clone()))
}

/// Parameterised RRF translated to Qdrant's formula (see the module docs): `k + 1`, weights as
/// given, one per prefetch.
pub(super) fn rrf_query(k: usize, weights: Option<Vec<f32>>) -> Query {
    let k = u32::try_from(k).unwrap_or(u32::MAX - 1).saturating_add(1);
    let rrf = RrfBuilder::with_k(k);
    Query::new_rrf(match weights {
        Some(w) => rrf.weights(w),
        None => rrf,
    })
}

/// The search request: dense and sparse queries use their named vector; a hybrid query
/// prefetches `prefetch` candidates from each side (same filter) and fuses them by RRF. A
/// hybrid query with an empty sparse vector prefetches the dense side only. Payloads come
/// back, vectors do not.
pub(super) fn query_request(collection: &str, query: &VectorQuery, limit: usize, f: &store::Filter) -> QueryPoints {
    let flt = filter(f);
    let mut b = QueryPointsBuilder::new(collection).limit(limit as u64).with_payload(true).with_vectors(false);
    match query {
        VectorQuery::Dense(v) => b = b.query(nearest_dense(v)).using(DENSE),
        VectorQuery::Sparse(s) => b = b.query(nearest_sparse(s)).using(SPARSE),
        VectorQuery::Hybrid { dense, sparse, prefetch, k, weights } => {
            let side = |q: Query, using: &str| {
                let p = PrefetchQueryBuilder::default().query(q).using(using).limit(*prefetch as u64);
                match &flt {
                    Some(fl) => p.filter(fl.clone()),
                    None => p,
                }
            };
            b = b.add_prefetch(side(nearest_dense(dense), DENSE));
            // The server weighs the prefetches in their order: dense first, then sparse.
            let weights = if sparse.indices.is_empty() {
                weights.map(|w| vec![w.dense])
            } else {
                b = b.add_prefetch(side(nearest_sparse(sparse), SPARSE));
                weights.map(|w| vec![w.dense, w.bm25])
            };
            b = b.query(rrf_query(*k, weights));
        }
    }
    if let Some(fl) = flt {
        b = b.filter(fl);
    }
    b.build()
}

/// Fetches the records (payload, no vectors) of `ids`.
pub(super) fn get_request(collection: &str, ids: &[u64]) -> GetPoints {
    let ids: Vec<PointId> = ids.iter().map(|&id| PointId::from(id)).collect();
    GetPointsBuilder::new(collection, ids).with_payload(true).with_vectors(false).build()
}

/// One page of ids (no payload, no vectors), starting at `offset` (inclusive).
pub(super) fn scroll_request(collection: &str, offset: Option<u64>) -> ScrollPoints {
    let b = ScrollPointsBuilder::new(collection).limit(SCROLL_PAGE).with_payload(false).with_vectors(false);
    match offset {
        Some(o) => b.offset(o).build(),
        None => b.build(),
    }
}

/// Exact count of every point.
pub(super) fn count_request(collection: &str) -> CountPoints {
    CountPointsBuilder::new(collection).exact(true).build()
}

/// A point's numeric id (metarag writes only numeric ids).
pub(super) fn numeric_id(id: Option<&PointId>) -> Result<u64, String> {
    match id.and_then(|i| i.point_id_options.as_ref()) {
        Some(PointIdOptions::Num(n)) => Ok(*n),
        Some(PointIdOptions::Uuid(u)) => Err(format!("point {u} has a UUID id; metarag writes numeric ids only")),
        None => Err("the server returned a point without id".into()),
    }
}

/// The chunk record stored in a point's payload.
pub(super) fn record_of(id: Option<&PointId>, payload: HashMap<String, Value>) -> Result<ChunkRecord, String> {
    let id = numeric_id(id)?;
    let map = serde_json::Map::from(Payload::from(payload));
    store::record_from_payload(id, &map).ok_or_else(|| format!("point {id}: its payload is not a metarag chunk record"))
}

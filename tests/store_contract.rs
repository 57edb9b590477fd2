//! One contract for every vector store: the embedded engine (`qdrant-edge`) always, and a
//! live Qdrant server when `METARAG_QDRANT_URL` is set (e.g. `http://localhost:6334`; each
//! run uses a fresh collection and drops nothing else).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::BTreeSet;
use std::path::PathBuf;

use metarag_index::{ChunkRecord, EdgeStore, Filter, Point, Sparse, VectorQuery, VectorSearch, VectorStore, point_id};
#[cfg(feature = "server")]
use metarag_index::{ServerConfig, ServerStore};

const DIMS: usize = 8;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("metarag-contract-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A unit vector pointing mostly along axis `axis` (so nearest neighbours are predictable).
fn unit(axis: usize, tilt: f32) -> Vec<f32> {
    let mut v = [tilt; DIMS];
    v[axis % DIMS] = 1.0;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn point(doc: &str, chunk: u32, kind: &str, axis: usize, text: &str) -> Point {
    let terms = metarag_index::analyze(text);
    Point {
        record: ChunkRecord {
            id: point_id(doc, chunk),
            doc: doc.into(),
            path: doc.into(),
            kind: kind.parse().expect("a document kind"),
            chunk,
            start: u64::from(chunk) * 10,
            end: u64::from(chunk) * 10 + 10,
            text: text.into(),
        },
        dense: unit(axis, 0.1),
        sparse: metarag_index::bm25_document_vector(&terms, 10.0, 1.2, 0.75),
    }
}

fn corpus() -> Vec<Point> {
    vec![
        point("docs/a.txt", 0, "text", 0, "whales swim in the cold ocean"),
        point("docs/a.txt", 1, "text", 1, "the harpoon flies"),
        point("docs/sub/b.md", 0, "markdown", 2, "debian releases are named after toys"),
        point("docs/sub/b.md", 1, "markdown", 3, "bullseye is release eleven"),
        point("other/c.pdf", 0, "pdf", 4, "a loan of florins in holland"),
    ]
}

/// The whole contract, against any store that starts empty.
fn contract(store: &dyn VectorStore) {
    let pts = corpus();
    store.upsert(&pts).unwrap();
    store.commit().unwrap();
    assert_eq!(store.count().unwrap(), 5, "{}", store.describe());
    let mut want: Vec<u64> = pts.iter().map(|p| p.record.id).collect();
    want.sort_unstable();
    assert_eq!(store.ids().unwrap(), want);

    // get returns the exact records
    let got = store.get(&[pts[2].record.id, pts[4].record.id, 12345]).unwrap();
    let got: BTreeSet<_> = got.into_iter().map(|r| (r.id, r.text, r.path, r.kind, r.start, r.end)).collect();
    let exp: BTreeSet<_> = [&pts[2], &pts[4]]
        .iter()
        .map(|p| {
            (p.record.id, p.record.text.clone(), p.record.path.clone(), p.record.kind, p.record.start, p.record.end)
        })
        .collect();
    assert_eq!(got, exp);

    // dense_vectors returns the stored vectors (unit length, so cosine stores them as given)
    let vecs = store.dense_vectors(&[pts[3].record.id, 12345]).unwrap();
    assert_eq!(vecs.len(), 1);
    assert_eq!(vecs[0].0, pts[3].record.id);
    assert!(vecs[0].1.iter().zip(&pts[3].dense).all(|(a, b)| (a - b).abs() < 1e-5), "{:?}", vecs[0].1);

    // nearest neighbour order follows cosine similarity
    let hits = store.search(&VectorQuery::Dense(unit(2, 0.05)), 3, &Filter::default()).unwrap();
    assert_eq!(hits[0].record, pts[2].record);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!((hits[0].score - 1.0).abs() < 0.05, "cosine of near-identical vectors: {}", hits[0].score);

    // filters match Filter::accepts exactly
    let filters = [
        Filter { path_prefix: Some("docs".into()), kinds: vec![] },
        Filter { path_prefix: Some("docs/sub/".into()), kinds: vec![] },
        Filter { path_prefix: Some("doc".into()), kinds: vec![] }, // not a whole component
        Filter { path_prefix: None, kinds: vec!["pdf".into(), "markdown".into()] },
        Filter { path_prefix: Some("./docs".into()), kinds: vec!["text".into()] },
    ];
    for f in &filters {
        let hits = store.search(&VectorQuery::Dense(unit(0, 0.1)), 10, f).unwrap();
        let got: BTreeSet<u64> = hits.iter().map(|h| h.record.id).collect();
        let exp: BTreeSet<u64> = pts.iter().filter(|p| f.accepts(&p.record)).map(|p| p.record.id).collect();
        assert_eq!(got, exp, "filter {f:?} on {}", store.describe());
    }

    // upsert of an existing id replaces it
    let mut changed = pts[1].clone();
    changed.record.text = "the harpoon misses".into();
    changed.dense = unit(5, 0.1);
    store.upsert(std::slice::from_ref(&changed)).unwrap();
    store.commit().unwrap();
    assert_eq!(store.count().unwrap(), 5);
    assert_eq!(store.get(&[changed.record.id]).unwrap()[0].text, "the harpoon misses");
    let top = store.search(&VectorQuery::Dense(unit(5, 0.0)), 1, &Filter::default()).unwrap();
    assert_eq!(top[0].record.id, changed.record.id);

    // delete removes, unknown ids are ignored
    store.delete(&[pts[0].record.id, 999]).unwrap();
    store.commit().unwrap();
    assert_eq!(store.count().unwrap(), 4);
    assert!(store.get(&[pts[0].record.id]).unwrap().is_empty());
    let hits = store.search(&VectorQuery::Dense(unit(0, 0.0)), 10, &Filter::default()).unwrap();
    assert!(hits.iter().all(|h| h.record.id != pts[0].record.id));

    // wrong dimension is an error naming both sizes, not a panic
    let e = store.search(&VectorQuery::Dense(vec![1.0; DIMS + 1]), 3, &Filter::default());
    assert!(e.is_err());

    if store.supports_sparse() {
        let q = metarag_index::bm25_query_vector(&metarag_index::analyze("florins holland"));
        let hits = store.search(&VectorQuery::Sparse(q.clone()), 3, &Filter::default()).unwrap();
        assert_eq!(hits[0].record.id, pts[4].record.id);
        let hybrid = VectorQuery::Hybrid { dense: unit(4, 0.1), sparse: q, prefetch: 10, k: 60, weights: None };
        let hits = store.search(&hybrid, 3, &Filter::default()).unwrap();
        assert_eq!(hits[0].record.id, pts[4].record.id);
    } else {
        let e = store.search(&VectorQuery::Sparse(Sparse::default()), 3, &Filter::default());
        assert!(e.is_err(), "a dense-only store must refuse sparse queries");
    }
}

#[test]
fn edge_store_meets_the_contract() {
    let dir = tmp("edge");
    {
        let store = EdgeStore::create(&dir, DIMS).unwrap();
        contract(&store);
    }
    // committed state survives a reopen
    let store = EdgeStore::open(&dir, DIMS).unwrap();
    assert_eq!(store.count().unwrap(), 4);
    // a different dimension is refused with both numbers in the message
    drop(store);
    let e = EdgeStore::open(&dir, DIMS * 2).unwrap_err().to_string();
    assert!(e.contains(&format!("{DIMS} dims")) && e.contains(&format!("{} dims", DIMS * 2)), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "server")]
#[test]
fn server_store_meets_the_contract_when_a_server_is_given() {
    let Ok(url) = std::env::var("METARAG_QDRANT_URL") else {
        eprintln!("METARAG_QDRANT_URL not set: the server run of the store contract is not exercised");
        return;
    };
    let collection = format!("metarag_contract_{}", std::process::id());
    let store = ServerStore::connect(ServerConfig::new(url, collection), DIMS).unwrap();
    contract(&store);
}

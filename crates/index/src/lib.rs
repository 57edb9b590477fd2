//! metarag-index: the stores and the retriever.
//!
//! - [`LexicalIndex`]: tantivy, BM25 with English stemming, stored chunk text and metadata.
//! - [`VectorStore`]: the vector-store contract, with [`EdgeStore`] (Qdrant's engine
//!   in-process, the default) and [`ServerStore`] (a Qdrant server or cluster over gRPC,
//!   dense + sparse BM25 vectors, fusion on the server).
//! - [`Index`]: an index directory (`metarag.toml`, `lexical/`, `vectors/`, `manifest.json`)
//!   and its retriever: `bm25`, `dense`, or `hybrid` (reciprocal rank fusion, k = 60).
//! - [`ingest()`]: the ingestion pipeline, resumable and crash-safe.
//!
//! Searching an index built by `metarag ingest`:
//!
//! ```no_run
//! use metarag_index::{Index, Mode, Query};
//!
//! let index = Index::open("idx")?;
//! for hit in index.search(&Query::new("who is Ishmael").k(5).mode(Mode::Bm25))? {
//!     println!("{:.3} {} [{}..{}]", hit.score, hit.record.path, hit.record.start, hit.record.end);
//! }
//! # Ok::<(), metarag_index::Error>(())
//! ```
//!
//! Dense and hybrid search embed the query: attach the index's embedder with
//! [`Index::with_embedder`] (`metarag_onnx::Embedder` for the real model; see
//! `examples/search.rs`). A complete round trip with test fakes:
//!
//! ```
//! use std::sync::Arc;
//! use metarag_core::{chunk::SentenceChunker, load::FileLoader, pipeline::Pipeline, split::RuleSplitter};
//! use metarag_core::testing::FakeEmbedder;
//! use metarag_index::{Index, IngestOptions, Mode, Query, Silent, Stages, StoreConfig, ingest};
//!
//! let tmp = std::env::temp_dir().join(format!("metarag-doc-{}", std::process::id()));
//! std::fs::create_dir_all(tmp.join("docs")).unwrap();
//! std::fs::write(tmp.join("docs/whales.txt"), "Call me Ishmael. Whales are large.").unwrap();
//! let mut pipeline = Pipeline::default();
//! pipeline.embedder.dims = 8;
//! let embedder = Arc::new(FakeEmbedder { dims: 8 });
//! let mut index = Index::create_or_open(tmp.join("idx"), &pipeline, &StoreConfig::Embedded)?;
//! let stages = Stages {
//!     loader: &FileLoader::default(), splitter: &RuleSplitter::default(), chunker: &SentenceChunker,
//!     merge: None, embedder: embedder.as_ref(), embed_batch: 32, tokens: None,
//! };
//! let report = ingest(&mut index, &[tmp.join("docs/whales.txt")], &stages, &IngestOptions::default(), &Silent)?;
//! assert_eq!(report.chunks, 2);
//! let index = index.with_embedder(embedder);
//! let hits = index.search(&Query::new("Ishmael").k(1).mode(Mode::Hybrid))?;
//! assert!(hits[0].record.text.contains("Ishmael"));
//! # drop(index); std::fs::remove_dir_all(&tmp).unwrap();
//! # Ok::<(), metarag_index::Error>(())
//! ```

mod built;
pub mod crash;
mod edge;
mod error;
mod index;
pub mod ingest;
mod lexical;
pub mod manifest;
mod search;
#[cfg(feature = "server")]
mod server;
mod sparse;
mod store;

pub use built::BuiltStages;
pub use edge::EdgeStore;
pub use error::{Error, Result};
pub use index::{BatchWrite, CONFIG_FILE, Index, IndexConfig, StoreConfig};
pub use ingest::{FileOutcome, IngestObserver, IngestOptions, IngestReport, Silent, Stages, document_id, ingest};
pub use lexical::LexicalIndex;
pub use search::{DEFAULT_CANDIDATES, Mode, Query, SearchHit};
#[cfg(feature = "server")]
pub use server::{ServerConfig, ServerStore};
pub use sparse::{bm25_document_vector, bm25_query_vector, term_id};
pub use store::{
    ChunkRecord, Filter, Hit, HybridWeights, Point, Sparse, VectorQuery, VectorSearch, VectorStore, path_prefixes,
    point_id,
};

/// The terms of `text` as the lexical index sees them: tantivy's `en_stem` analyzer
/// (lower-cased, Snowball English stems, tokens over 40 bytes dropped).
///
/// ```
/// assert_eq!(metarag_index::analyze("Whales, swimming!"), vec!["whale", "swim"]);
/// ```
pub fn analyze(text: &str) -> Vec<String> {
    use tantivy::tokenizer::{TextAnalyzer, TokenStream};
    thread_local! {
        static EN_STEM: std::cell::RefCell<Option<TextAnalyzer>> =
            std::cell::RefCell::new(tantivy::tokenizer::TokenizerManager::default().get("en_stem"));
    }
    EN_STEM.with_borrow_mut(|analyzer| {
        let mut out = Vec::new();
        if let Some(a) = analyzer {
            let mut stream = a.token_stream(text);
            while stream.advance() {
                out.push(stream.token().text.clone());
            }
        }
        out
    })
}

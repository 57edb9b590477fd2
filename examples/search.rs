//! A small app on the retrieval library: open an index made by `metarag ingest`, attach the
//! real query embedder, and answer questions from the command line with hybrid search.
//!
//! ```text
//! python3 onnx/setup.py
//! cargo run --release -- ingest examples/corpus --index /tmp/idx
//! cargo run --release --example search -- /tmp/idx "what does the narrator ask to be called?"
//! ```

use std::sync::Arc;

use metarag_index::{Index, Mode, Query};
use metarag_onnx::{Embedder, RuntimeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(question)) = (args.next(), args.next()) else {
        eprintln!("usage: search INDEX_DIR QUESTION");
        std::process::exit(2);
    };

    // 1. Open the index: its metarag.toml says which embedder built it.
    let index = Index::open(&dir)?;
    println!(
        "{} documents, {} chunks, pipeline: {}",
        index.manifest().documents.len(),
        index.manifest().chunks(),
        index.config().pipeline.chunker.name()
    );

    // 2. Dense and hybrid search embed the query with the same model as the chunks.
    let embedder = Embedder::load(&RuntimeOptions::default().with_threads(1))?;
    let index = index.with_embedder(Arc::new(embedder));

    // 3. Hybrid search: BM25 top 50 and dense top 50, fused by RRF (k = 60), best 3 kept.
    let hits = index.search(&Query::new(question.as_str()).k(3).mode(Mode::Hybrid))?;

    // 4. Every hit is a byte span of its source document, with its text.
    for h in hits {
        let words: Vec<&str> = h.record.text.split_whitespace().take(40).collect();
        println!("\n{:.4}  {} [{}..{}]\n  {} …", h.score, h.record.path, h.record.start, h.record.end, words.join(" "));
    }
    Ok(())
}

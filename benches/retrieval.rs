//! Query latency on an index of 100,000 synthetic chunks: BM25 (tantivy), dense (qdrant-edge,
//! HNSW) and hybrid (both + RRF), p50/p99, plus the real query embedder (all-MiniLM-L6-v2
//! int8). Baseline in the same process: an exact brute-force scan of the same vectors.
//!
//! Run: `cargo bench --bench retrieval` (after `python3 onnx/setup.py`). The synthetic index
//! is built once into `target/bench-data/` (a few minutes) and reused. Chunks: 10,000
//! documents × 10 chunks of ~120 words drawn from a Zipf-distributed 20,000-word vocabulary;
//! vectors: random unit vectors in 384 dimensions. `METARAG_BENCH_BUILD_ONLY=1` builds the
//! cached index and measures nothing. `METARAG_BENCH_DOCS=100000` makes it 1,000,000 chunks
//! (its own folder; the build resumes where a killed one stopped, 100 documents at a time).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use metarag_core::model::SentenceEmbedder;
use metarag_core::pipeline::Pipeline;
use metarag_index::manifest::DocEntry;
use metarag_index::{
    ChunkRecord, DEFAULT_CANDIDATES, Index, Mode, Point, Query, Sparse, StoreConfig, VectorQuery, point_id,
};
use metarag_onnx::{Embedder, RuntimeOptions};

/// Documents in the synthetic index (`METARAG_BENCH_DOCS`, default 10,000: 100,000 chunks).
fn docs() -> usize {
    std::env::var("METARAG_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n >= 100)
        .unwrap_or(10_000)
        / 100
        * 100
}
const PER_DOC: usize = 10;
const DIMS: usize = 384;
const VOCAB: usize = 20_000;
/// A synthetic word spells its rank + 1 in decimal, one syllable per digit, lowest first.
const SYLLABLES: [&str; 10] = ["ka", "lo", "mi", "ne", "tu", "ra", "so", "vi", "de", "po"];

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
    fn vector(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..DIMS).map(|_| self.normal()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }
    /// A word of rank ~ Zipf(1) over the vocabulary (inverse-CDF of a log-uniform draw).
    fn word(&mut self) -> String {
        let r = ((VOCAB as f64).powf(self.unit()) as usize).min(VOCAB) - 1;
        let mut w = String::new();
        let mut x = r + 1;
        while x > 0 {
            w.push_str(SYLLABLES[x % 10]);
            x /= 10;
        }
        w
    }
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-data/retrieval-{}k", docs() * PER_DOC / 1000))
}

/// Builds (once) and opens the synthetic index.
fn synthetic_index() -> Index {
    let dir = data_dir();
    let done = dir.join("BUILT");
    if !done.is_file() {
        let t = Instant::now();
        let mut idx = Index::create_or_open(&dir, &Pipeline::default(), &StoreConfig::Embedded).expect("create");
        // Each batch of 100 documents is written at once and draws from its own seed, so a
        // killed build resumes after its last whole batch with the same data.
        let batches = docs() / 100;
        let first = idx.manifest().chunks() as usize / (100 * PER_DOC);
        for batch in first..batches {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (batch as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let mut b = Vec::new();
            for d in batch * 100..(batch + 1) * 100 {
                let doc = format!("synthetic/doc-{d:06}.txt");
                let mut at = 0u64;
                let points: Vec<Point> = (0..PER_DOC as u32)
                    .map(|c| {
                        let text: Vec<String> = (0..120).map(|_| rng.word()).collect();
                        let text = text.join(" ") + ". ";
                        let start = at;
                        at += text.len() as u64;
                        Point {
                            record: ChunkRecord {
                                id: point_id(&doc, c),
                                doc: doc.clone(),
                                path: doc.clone(),
                                kind: metarag_core::DocKind::Text,
                                chunk: c,
                                start,
                                end: at,
                                text,
                            },
                            dense: rng.vector(),
                            sparse: Sparse::default(),
                        }
                    })
                    .collect();
                let entry = DocEntry {
                    path: doc.clone(),
                    hash: String::new(),
                    pipeline: String::new(),
                    chunks: PER_DOC as u32,
                    bytes: at,
                };
                b.push((doc, entry, points));
            }
            idx.write_batch(b).expect("write");
            if (batch + 1) % (batches / 20).max(1) == 0 {
                eprintln!("built {} of {} documents, {:.0} s", (batch + 1) * 100, docs(), t.elapsed().as_secs_f64());
            }
        }
        let written = t.elapsed();
        idx.optimize().expect("optimize");
        eprintln!(
            "built {} chunks in {:.1} s (+ {:.1} s HNSW/merges; this run, after {} resumed documents)",
            docs() * PER_DOC,
            written.as_secs_f64(),
            (t.elapsed() - written).as_secs_f64(),
            first * 100
        );
        drop(idx);
        std::fs::write(&done, b"ok").expect("marker");
    }
    Index::open(&dir).expect("open")
}

fn queries(n: usize) -> Vec<(String, Vec<f32>)> {
    let mut rng = Rng(42);
    (0..n)
        .map(|_| {
            let k = 3 + (rng.next() % 4) as usize;
            let words: Vec<String> = (0..k).map(|_| rng.word()).collect();
            (words.join(" "), rng.vector())
        })
        .collect()
}

/// The Zipf rank (0 = most frequent) of a word [`Rng::word`] spelled.
fn word_rank(word: &str) -> usize {
    let digits: Vec<usize> =
        word.as_bytes().chunks(2).map(|c| SYLLABLES.iter().position(|s| s.as_bytes() == c).unwrap_or(0)).collect();
    digits.iter().rev().fold(0, |x, &d| x * 10 + d) - 1
}

/// What the slowest 1% of queries are made of: the rank of each query's rarest word (its
/// most selective term), median over those queries and over all.
fn tail_words(qs: &[(String, Vec<f32>)], t: &[Duration]) -> String {
    let rarest = |q: &str| q.split(' ').map(word_rank).max().unwrap_or(0);
    let median = |mut v: Vec<usize>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let mut order: Vec<usize> = (0..qs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(t[i]));
    let slow = &order[..(qs.len() / 100).max(1)];
    format!(
        "rarest query word's Zipf rank (of {VOCAB}), median: slowest 1% of queries {}, all {}",
        median(slow.iter().map(|&i| rarest(&qs[i].0)).collect()),
        median(qs.iter().map(|q| rarest(&q.0)).collect())
    )
}

fn percentiles(mut d: Vec<Duration>) -> (f64, f64, f64) {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    let p = |q: f64| ms(d[((d.len() as f64 - 1.0) * q).round() as usize]);
    (p(0.5), p(0.99), d.iter().map(|x| ms(*x)).sum::<f64>() / d.len() as f64)
}

/// "p50 … ms  p99 … ms  mean … ms" of the timings.
fn latency(t: Vec<Duration>) -> String {
    let (p50, p99, mean) = percentiles(t);
    format!("p50 {p50:.2} ms  p99 {p99:.2} ms  mean {mean:.2} ms")
}

fn time_each(qs: &[(String, Vec<f32>)], mut f: impl FnMut(&(String, Vec<f32>)) -> usize) -> Vec<Duration> {
    for q in qs.iter().take(20) {
        f(q); // warm-up
    }
    qs.iter()
        .map(|q| {
            let t = Instant::now();
            let n = f(q);
            let e = t.elapsed();
            assert!(n > 0, "every query finds something");
            e
        })
        .collect()
}

fn report() {
    let index = synthetic_index();
    let n = index.manifest().chunks();
    assert_eq!(n as usize, docs() * PER_DOC);
    let qs = queries(1000);
    let mut lines = Vec::new();
    let mut hybrid_t = Vec::new();
    for (name, mode) in [("bm25", Mode::Bm25), ("dense", Mode::Dense), ("hybrid", Mode::Hybrid)] {
        let t = time_each(&qs, |(text, v)| {
            index.search_with_vector(&Query::new(text.clone()).k(10).mode(mode), Some(v)).expect("search").len()
        });
        if mode != Mode::Dense {
            lines.push(format!("{name:>7}: {}", tail_words(&qs, &t)));
        }
        if mode == Mode::Hybrid {
            hybrid_t = t.clone();
        }
        lines.push(format!("{name:>7}: {}", latency(t)));
    }
    let mut sides = Vec::new();
    // Baseline: tantivy's own top-k search of the same lexical index (a second reader on its
    // files), against metarag's ids-only BM25 (`LexicalIndex::search_ids`), at the k a plain
    // query asks and the candidates a hybrid query's lexical side asks.
    let own = tantivy::Index::open_in_dir(data_dir().join("lexical")).expect("tantivy index");
    let searcher = own.reader().expect("tantivy reader").searcher();
    let text = own.schema().get_field("text").expect("text field");
    let parser = tantivy::query::QueryParser::for_index(&own, vec![text]);
    let lex = index.lexical().expect("embedded store");
    for k in [10, DEFAULT_CANDIDATES] {
        let top = tantivy::collector::TopDocs::with_limit(k).order_by_score();
        let t = time_each(&qs, |(q, _)| searcher.search(&parser.parse_query_lenient(q).0, &top).expect("search").len());
        lines.push(format!("tantivy: {} (TopDocs({k}) of the parsed query)", latency(t)));
        let t = time_each(&qs, |(q, _)| lex.search_ids(q, k, &Default::default()).expect("search").len());
        if k == DEFAULT_CANDIDATES {
            sides.push(("BM25", t.clone()));
        }
        lines.push(format!("    ids: {} (metarag BM25 ids, k = {k})", latency(t)));
    }
    // A hybrid query's dense side alone: ids only, as many as its candidates.
    let t = time_each(&qs, |(_, v)| {
        index
            .vectors()
            .search_ids(&VectorQuery::Dense(v.clone()), DEFAULT_CANDIDATES, &Default::default())
            .expect("search")
            .len()
    });
    sides.push(("dense", t.clone()));
    lines.push(format!("    ids: {} (dense ids, k = {DEFAULT_CANDIDATES})", latency(t)));
    // What the slowest hybrid queries spend on each side when it runs alone.
    let mut order: Vec<usize> = (0..qs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(hybrid_t[i]));
    let slow = &order[..(qs.len() / 100).max(1)];
    let of = |t: &[Duration]| percentiles(slow.iter().map(|&i| t[i]).collect()).0;
    lines.push(format!(
        "  tail: the slowest 1% of hybrid queries (median {:.2} ms) alone: {}",
        of(&hybrid_t),
        sides.iter().map(|(s, t)| format!("{s} ids {:.2} ms", of(t))).collect::<Vec<_>>().join(", ")
    ));
    // Baseline: exact scan of the same vectors (what the store would cost without HNSW).
    let ids = index.vectors().ids().expect("ids");
    // Any 100k × 384 matrix costs the same to scan: draw a fresh one of the same size.
    let all: Vec<Vec<f32>> = {
        let mut r = Rng(7);
        (0..ids.len()).map(|_| r.vector()).collect()
    };
    let t = time_each(&qs[..200], |(_, v)| {
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(11);
        for (i, row) in all.iter().enumerate() {
            let s: f32 = row.iter().zip(v).map(|(a, b)| a * b).sum();
            if best.len() < 10 || s > best[best.len() - 1].0 {
                best.push((s, i));
                best.sort_by(|a, b| b.0.total_cmp(&a.0));
                best.truncate(10);
            }
        }
        best.len()
    });
    lines.push(format!("  exact: {} (brute-force dense baseline)", latency(t)));

    // The real query embedder, one query at a time.
    for threads in [1, 2] {
        let e = Embedder::load(&RuntimeOptions::default().with_threads(threads)).expect("embedder (run onnx/setup.py)");
        let texts: Vec<String> = (0..200)
            .map(|i| format!("what did the report of section {i} say about the harbour and its ships?"))
            .collect();
        let t = time_each(&texts.iter().map(|t| (t.clone(), Vec::new())).collect::<Vec<_>>(), |(t, _)| {
            e.embed(&[t]).expect("embed").len()
        });
        lines.push(format!("  embed: {} (MiniLM int8, {threads} thread(s), ~15 tokens)", latency(t)));
    }
    // Hybrid as users call it (the query embedded by the index): BM25 runs while the query is
    // embedded and the dense list fetched. Its sequential cost, the sum of the parts with the
    // same candidates per side, is measured here too: the ratio is the gain.
    let embedder: Arc<dyn SentenceEmbedder> =
        Arc::new(Embedder::load(&RuntimeOptions::default().with_threads(1)).expect("embedder"));
    let index = index.with_embedder(embedder);
    let some = &qs[..300];
    let run = |mode: Mode, k: usize| {
        percentiles(time_each(some, |(text, _)| {
            index.search(&Query::new(text.clone()).k(k).mode(mode)).expect("search").len()
        }))
    };
    let c = DEFAULT_CANDIDATES;
    let (bm25, dense, hybrid) = (run(Mode::Bm25, c), run(Mode::Dense, c), run(Mode::Hybrid, 10));
    lines.push(format!(
        "hybrid+embed: p50 {:.2} ms  mean {:.2} ms; sequential sum bm25 + (embed + dense): p50 {:.2} ms  mean {:.2} ms; \
         ratio (mean) {:.2}x",
        hybrid.0,
        hybrid.2,
        bm25.0 + dense.0,
        bm25.2 + dense.2,
        (bm25.2 + dense.2) / hybrid.2
    ));
    eprintln!("query latency over {n} chunks, 1000 queries, k = 10, hybrid candidates {DEFAULT_CANDIDATES} per side:");
    for l in lines {
        eprintln!("  {l}");
    }
}

fn bench(c: &mut Criterion) {
    if std::env::var_os("METARAG_BENCH_BUILD_ONLY").is_some() {
        synthetic_index(); // build the cached index now, measure later on a quiet machine
        return;
    }
    report();
    let index = synthetic_index();
    let embedder: Arc<dyn SentenceEmbedder> =
        Arc::new(Embedder::load(&RuntimeOptions::default().with_threads(1)).expect("embedder"));
    let index = index.with_embedder(embedder);
    let qs = queries(64);
    let mut g = c.benchmark_group(format!("query-{}k", docs() * PER_DOC / 1000));
    for (name, mode) in [("bm25", Mode::Bm25), ("dense", Mode::Dense), ("hybrid", Mode::Hybrid)] {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let (text, v) = &qs[i % qs.len()];
                i += 1;
                index.search_with_vector(&Query::new(text.clone()).k(10).mode(mode), Some(v)).expect("search")
            })
        });
    }
    let mut i = 0;
    g.bench_function("hybrid+embed", |b| {
        b.iter(|| {
            let (text, _) = &qs[i % qs.len()];
            i += 1;
            index.search(&Query::new(text.clone()).k(10).mode(Mode::Hybrid)).expect("search")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);

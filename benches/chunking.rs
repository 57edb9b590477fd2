//! Chunking throughput with the real models on the committed example corpus: PPL chunking and
//! margin-sampling chunking (SmolLM2-135M, fp32 ONNX), semantic chunking (MiniLM), and
//! everything that is not the model.
//!
//! Run: `cargo bench --bench chunking` (after `python3 onnx/setup.py`). Threads: 2, or
//! `METARAG_BENCH_THREADS`. Besides criterion's timings it prints tokens/s and the share of
//! time spent outside ONNX Runtime, measured in the same process.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metarag_core::chunk::{
    Chunker, GroupEmbedding, MarginChunker, MarginConfig, MarginPrompt, PplChunker, PplConfig, SemanticChunker,
    SemanticConfig,
};
use metarag_core::load::{LoadOptions, load_path};
use metarag_core::split::{RuleSplitter, SentenceSplitter};
use metarag_core::{Document, tiles};
use metarag_onnx::{CausalLm, Embedder, JudgeConfig, LmConfig, LmMarginJudge, RuntimeOptions};

fn threads() -> usize {
    std::env::var("METARAG_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2)
}

/// The example corpus's plain-text documents (txt and md).
fn corpus() -> Vec<Document> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/corpus");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt" || e == "md"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_path(p, &LoadOptions::default()).expect("load")).collect()
}

fn ppl_all(lm: &CausalLm, docs: &[Document]) -> usize {
    let chunker = PplChunker::new(lm, PplConfig::default());
    let mut n = 0;
    for d in docs {
        let s = RuleSplitter::default().split(&d.text);
        let out = chunker.chunk(d, &s).expect("chunk");
        let spans: Vec<_> = out.chunks.iter().map(|c| c.span.clone()).collect();
        assert!(tiles(&spans, d.text.len()));
        n += spans.len();
    }
    n
}

fn report(name: &str, lm: &CausalLm, tokens: usize, run: impl Fn() -> usize) {
    let (m0, fed0) = lm.model_time();
    let t0 = Instant::now();
    let chunks = run();
    let wall = t0.elapsed();
    let (m1, fed1) = lm.model_time();
    let model = m1 - m0;
    let fed = fed1 - fed0;
    let outside = wall.saturating_sub(model);
    eprintln!(
        "[{name}] {tokens} tokens -> {chunks} chunks in {:.2} s: {:.0} tokens/s; {fed} token positions fed to the model; inside ONNX Runtime {:.2} s, outside {:.3} s ({:.1}% of the total)",
        wall.as_secs_f64(),
        tokens as f64 / wall.as_secs_f64(),
        model.as_secs_f64(),
        outside.as_secs_f64(),
        100.0 * outside.as_secs_f64() / wall.as_secs_f64()
    );
}

fn bench(c: &mut Criterion) {
    let opts = RuntimeOptions::default().with_threads(threads());
    let lm = CausalLm::load(&opts, LmConfig::default()).expect("load SmolLM2 (run python3 onnx/setup.py)");
    let docs = corpus();
    assert!(!docs.is_empty(), "no .txt/.md in examples/");
    let tokens: usize = docs.iter().map(|d| lm.encode(&d.text).expect("encode").len()).sum();

    // Warm up once, then report the split between model and everything else.
    ppl_all(&lm, &docs);
    report("ppl", &lm, tokens, || ppl_all(&lm, &docs));

    let mut g = c.benchmark_group("chunk");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(tokens as u64));
    g.bench_function("ppl", |b| b.iter(|| ppl_all(&lm, &docs)));
    g.bench_function("split+tokenize (no model)", |b| {
        b.iter(|| {
            docs.iter()
                .map(|d| {
                    let s = RuleSplitter::default().split(&d.text);
                    s.iter().map(|r| lm.encode(&d.text[r.clone()]).expect("encode").len()).sum::<usize>()
                })
                .sum::<usize>()
        })
    });

    // Semantic chunking: groups = "mean" (the default: each sentence embedded once, a group's
    // vector the mean of its sentences') against "joined" (each group's text embedded, the
    // LlamaIndex way), the latter with every group of a document handed to the embedder in one
    // call (it batches them longest first, so batches pad little) and with 32 groups per call
    // (the previous default: batches padded to whatever long group sat among them).
    let embedder = Embedder::load(&opts).expect("load MiniLM (run python3 onnx/setup.py)");
    let semantic_with = |batch: usize, groups: GroupEmbedding| {
        let chunker = SemanticChunker::new(&embedder, SemanticConfig { batch, groups, ..SemanticConfig::default() });
        docs.iter()
            .map(|d| {
                let s = RuleSplitter::default().split(&d.text);
                chunker.chunk(d, &s).expect("chunk").chunks.len()
            })
            .sum::<usize>()
    };
    let default_batch = SemanticConfig::default().batch;
    let variants = [
        ("semantic, mean groups", default_batch, GroupEmbedding::Mean),
        ("semantic, joined groups", default_batch, GroupEmbedding::Joined),
        ("semantic, joined groups, 32 per call", 32, GroupEmbedding::Joined),
    ];
    semantic_with(default_batch, GroupEmbedding::Mean);
    for (name, batch, groups) in variants {
        let t0 = Instant::now();
        let chunks = semantic_with(batch, groups);
        let wall = t0.elapsed().as_secs_f64();
        eprintln!("[{name}] {tokens} tokens -> {chunks} chunks in {wall:.2} s: {:.0} tokens/s", tokens as f64 / wall);
    }
    for (name, batch, groups) in variants {
        g.bench_function(name, |b| b.iter(|| semantic_with(batch, groups)));
    }

    // Margin sampling on the first document only (it is several times slower).
    let first = &docs[..1];
    let first_tokens = lm.encode(&first[0].text).expect("encode").len();
    let margin_with = |reuse_prefix: bool, prompt: MarginPrompt| {
        let config = JudgeConfig { reuse_prefix, prompt, ..JudgeConfig::default() };
        let judge = LmMarginJudge::new(&lm, config).expect("judge");
        let chunker = MarginChunker::new(judge, MarginConfig::default());
        let s = RuleSplitter::default().split(&first[0].text);
        chunker.chunk(&first[0], &s).expect("chunk").chunks.len()
    };
    let margin_all = || margin_with(true, MarginPrompt::Exact);
    let margin_cached = || margin_with(true, MarginPrompt::Cached);
    report("margin", &lm, first_tokens, margin_all);
    report("margin, cached prompt", &lm, first_tokens, margin_cached);
    // Baseline in the same process: the same prompts recomputed from scratch every call
    // (the reference implementation's cost on this runtime).
    report("margin, no prefix reuse", &lm, first_tokens, || margin_with(false, MarginPrompt::Exact));
    g.throughput(Throughput::Elements(first_tokens as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("margin", |b| b.iter(margin_all));
    g.bench_function("margin-cached", |b| b.iter(margin_cached));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

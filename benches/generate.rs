//! Parallel decoding throughput with the real SmolLM2-135M: candidates/s and tokens/s for
//! N = 1, 4, 8, 16 candidates decoded as ONE batch over a shared prompt KV cache, against the
//! baseline in the same process: the same N candidates (same seeds, same prompt cache)
//! decoded one by one. Also the cost of aggregating them (RPC, vote), beside decoding.
//! Each mode runs on both cache paths: "shared prefix" (the decoder graph reads the prompt's
//! cache once per step for all rows) and "copied cache" (the prompt's cache copied into every
//! row, concatenated with each new token by the graph); the baseline is the faster one-by-one.
//!
//! Both generators are measured in the same process: the base SmolLM2 with its chat template,
//! and the answer infiller (the same architecture with the FIM adapter merged; its PSM prompt
//! with the infill template). Their tokens/s should match within noise; their candidates/s
//! differ by how long the answers are (the infiller ends its answers with its end-of-text).
//!
//! Run: `cargo bench --bench generate` (after `python3 onnx/setup.py`). The prompt is the
//! model's template over three chunks of `examples/corpus/washington-1790.txt` (~600
//! tokens); free decoding, temperature 0.7, top-k 40, top-p 0.95, at most 16 tokens.
//! `METARAG_BENCH_THREADS` sets ONNX Runtime's threads (default 2);
//! `METARAG_BENCH_MODELS=base` or `infill` measures one of the two.

use std::time::Instant;

use metarag_core::model::CausalModel;
use metarag_generate::aggregate::{Method, Path, aggregate};
use metarag_generate::causal::{CausalConfig, decode};
use metarag_generate::template::{ContextChunk, Template};
use metarag_onnx::{CausalLm, LmConfig, RuntimeOptions};

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: build-check only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let threads = std::env::var("METARAG_BENCH_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let which = std::env::var("METARAG_BENCH_MODELS").unwrap_or_else(|_| "base,infill".into());
    let cfg = LmConfig { window: 256, max_context: 8192, max_position: 8192, sink_tokens: 4 };
    let opts = RuntimeOptions::default().with_threads(threads);
    for name in which.split(',') {
        let load = || {
            match name.trim() {
                "base" => CausalLm::load(&opts, cfg.clone()),
                "infill" => CausalLm::load_infill(&opts, cfg.clone()),
                other => panic!("METARAG_BENCH_MODELS: unknown model {other:?} (base, infill)"),
            }
            .expect("load the model (run `python3 onnx/setup.py`)")
        };
        let template = if name.trim() == "infill" { Template::infill() } else { Template::default() };
        // The cache path is chosen when a model is built: one of each.
        let (lm, copied) = (load(), load().with_shared_prefix(false));
        println!("\n## {name}{}\n", if lm.fim_tokens().is_some() { " (FIM prompt)" } else { "" });
        bench_model(&lm, &copied, &template, threads);
    }
}

/// `lm` decodes with the shared-prefix graph (when installed), `copied` with copied caches.
fn bench_model(lm: &CausalLm, copied: &CausalLm, template: &Template, threads: usize) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/corpus/washington-1790.txt"))
        .expect("example corpus");
    let words: Vec<&str> = text.split_whitespace().collect();
    let chunks: Vec<ContextChunk> = words
        .chunks(150)
        .take(3)
        .enumerate()
        .map(|(i, w)| ContextChunk::new(&format!("w#{i}"), &w.join(" ")))
        .collect();
    let prompt = template.build(lm, "How large was the loan completed in Holland?", &chunks).expect("prompt");
    let shared = lm.shared_prefix_decoder().is_some();
    // Warm-up (outside the timings): loads the decoder graph, first-run allocations.
    let pick = |prefix: bool| if prefix { lm } else { copied };
    for prefix in [false, true] {
        let cfg = CausalConfig { samples: 2, max_tokens: 2, rescore: false, ..CausalConfig::default() };
        decode(pick(prefix), &prompt, None, &cfg).expect("warm-up decode");
    }
    if !shared {
        println!("(no {} beside the model: only the copied-cache path is measured)", metarag_onnx::DECODER_FILE);
    }
    // The prompt's prefill, subtracted from each decode's wall time: timed after the warm-up
    // (a cold first prefill is slower than the decodes' own, which made wall - prefill
    // negative), the fastest of three.
    let prefill = (0..3)
        .map(|_| {
            let started = Instant::now();
            let _ = lm.prefill(&prompt.prefix).expect("prefill");
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    println!("threads {threads}; prompt {} tokens; prefill {:.3} s (fastest of 3)", prompt.prefix.len(), prefill);
    println!();
    println!(
        "| N | mode | wall s | decode s (wall - prefill) | tokens | candidates/s | tokens/s | forwards | speed-up (decode) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    // (batched, shared prefix): the baseline is the faster of the two one-by-one paths.
    let modes: Vec<(bool, bool)> = [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .filter(|&(_, s)| shared || !s)
        .collect();
    for n in [1usize, 4, 8, 16] {
        let mut results = Vec::new();
        for &(batched, prefix) in &modes {
            let cfg = CausalConfig {
                samples: n,
                max_tokens: 16,
                seed: 1,
                batched,
                rescore: false,
                stop: vec![],
                ..CausalConfig::default()
            };
            let t = Instant::now();
            let out = decode(pick(prefix), &prompt, None, &cfg).expect("decode");
            let wall = t.elapsed().as_secs_f64();
            let dec = (wall - prefill).max(1e-9);
            results.push((batched, prefix, wall, dec, out));
        }
        let base = results.iter().filter(|r| !r.0).map(|r| r.3).fold(f64::INFINITY, f64::min);
        for (batched, prefix, wall, dec, out) in &results {
            println!(
                "| {n} | {}, {} | {wall:.2} | {dec:.2} | {} | {:.2} | {:.1} | {} | {:.2}x |",
                if *batched { "batched" } else { "one by one" },
                if *prefix { "shared prefix" } else { "copied cache" },
                out.generated_tokens,
                n as f64 / dec,
                out.generated_tokens as f64 / dec,
                out.forwards,
                base / dec
            );
        }
        // Aggregation cost beside decoding (the last mode: batched, best path).
        let batched_decode = results.last().map_or(1.0, |r| r.3);
        let out = &results.last().expect("modes").4;
        let ps: Vec<f64> = out.candidates.iter().map(|c| c.inverse_perplexity()).collect();
        let paths: Vec<Path<'_>> = out
            .candidates
            .iter()
            .zip(&ps)
            .map(|(c, &p)| Path { answer: &c.text, completion: &c.text, p, logprob: c.logprob() })
            .collect();
        for method in [Method::Rpc, Method::Vote] {
            let reps = 1000;
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(aggregate(std::hint::black_box(&paths), method));
            }
            let each = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "|   | aggregate {method} | {:.1} µs | {:.4}% of batched decode | | | | | |",
                each * 1e6,
                100.0 * each / batched_decode
            );
        }
    }
}

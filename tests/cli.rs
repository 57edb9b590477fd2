//! The `metarag` binary end to end: the quick start with the real model, bad input, exit
//! codes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::root;

fn metarag(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metarag")).args(args).current_dir(root()).output().expect("run metarag")
}

/// One JSONL row: (doc, chunk, start, end, text).
type Row = (String, usize, usize, usize, String);

/// Parses JSONL output into rows.
fn rows(out: &Output) -> Vec<Row> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}"));
            (
                v["doc"].as_str().expect("doc").to_string(),
                v["chunk"].as_u64().expect("chunk") as usize,
                v["start"].as_u64().expect("start") as usize,
                v["end"].as_u64().expect("end") as usize,
                v["text"].as_str().expect("text").to_string(),
            )
        })
        .collect()
}

/// Checks that each document's chunks are numbered 0.., non-empty, and contiguous from 0.
fn assert_tiles(rows: &[Row]) -> BTreeMap<String, usize> {
    let mut per_doc: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        per_doc.entry(r.0.clone()).or_default().push(r);
    }
    let mut counts = BTreeMap::new();
    for (doc, rs) in &per_doc {
        let mut at = 0;
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(r.1, i, "{doc}: chunk numbering");
            assert_eq!(r.2, at, "{doc}: chunk {i} does not start where the previous ended");
            assert!(r.3 > r.2, "{doc}: empty chunk {i}");
            assert_eq!(r.4.len(), r.3 - r.2, "{doc}: text length differs from span");
            at = r.3;
        }
        counts.insert(doc.clone(), rs.len());
    }
    counts
}

#[test]
fn quick_start_chunks_every_example_with_the_real_model() {
    let out = metarag(&["chunk", "examples/corpus", "--method", "ppl", "--scores", "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let r = rows(&out);
    let counts = assert_tiles(&r);
    for ext in ["txt", "md", "html", "pdf"] {
        assert!(counts.keys().any(|d| d.ends_with(ext)), "no chunks of a .{ext} example: {counts:?}");
    }
    // Meta-chunks are bigger than sentences but smaller than documents.
    let total: usize = counts.values().sum();
    assert!(total > counts.len(), "every document became one chunk");
    // --scores carries real per-sentence NLLs (nats; positive, finite where present).
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().nth(1).expect("line")).expect("json");
    let scores = first["sentences"].as_array().expect("sentences with --scores");
    assert!(scores.iter().filter_map(|s| s["score"].as_f64()).all(|s| s > 0.0 && s < 20.0));
}

#[test]
fn every_method_tiles_a_real_document() {
    let example = first_example("md");
    for method in ["ppl", "margin", "semantic", "sentence", "fixed"] {
        let out = metarag(&["chunk", &example, "-q", "--method", method]);
        assert!(out.status.success(), "{method}: {}", String::from_utf8_lossy(&out.stderr));
        let r = rows(&out);
        assert!(r.len() > 1, "{method}: one chunk only");
        assert_tiles(&r);
        if method == "margin" {
            // Merging is the same stage after every chunker (checked with the other four);
            // margin scoring is the slowest, so it is not run twice.
            continue;
        }
        // Merging keeps the tiling and reduces the count.
        let merged = metarag(&["chunk", &example, "-q", "--method", method, "--merge-to", "120"]);
        let m = rows(&merged);
        assert_tiles(&m);
        assert!(m.len() <= r.len(), "{method}: merging added chunks");
    }
}

#[test]
fn ppl_output_is_deterministic() {
    let example = first_example("md");
    let a = metarag(&["chunk", &example, "-q", "--threads", "2"]);
    let b = metarag(&["chunk", &example, "-q", "--threads", "1"]);
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn bad_inputs_are_reported_and_the_rest_is_chunked() {
    let good = first_example("txt");
    let bad = ["empty.txt", "binary.txt", "latin1.txt", "truncated.pdf", "encrypted.pdf"];
    let bad_paths: Vec<String> = bad.iter().map(|b| format!("tests/fixtures/bad/{b}")).collect();
    for method in ["sentence", "ppl"] {
        let mut args = vec!["chunk", "--method", method, "-q", good.as_str()];
        args.extend(bad_paths.iter().map(String::as_str));
        args.push("tests/fixtures/bad/does-not-exist.txt");
        let out = metarag(&args);
        assert_eq!(out.status.code(), Some(2), "{method}: some inputs failed, so exit 2");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), bad.len() + 1, "{method}: one line per bad file:\n{stderr}");
        for b in bad.iter().chain(["does-not-exist.txt"].iter()) {
            assert_eq!(
                errors.iter().filter(|l| l.contains(b)).count(),
                1,
                "{method}: {b} not reported once:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "a panic leaked to stderr:\n{stderr}");
        let r = rows(&out);
        assert!(!r.is_empty() && r.iter().all(|x| x.0 == good), "{method}: the good file is chunked");
        assert_tiles(&r);
    }
}

#[test]
fn missing_models_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_metarag"))
        .args(["chunk", "--models", "/nonexistent/models", &first_example("txt")])
        .current_dir(root())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("onnx/setup.py"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_teaches() {
    let out = metarag(&["chunk", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--method", "--merge-to", "--threshold", "EXAMPLES", "Exit status"] {
        assert!(text.contains(word), "--help lacks {word}");
    }
}

fn first_example(ext: &str) -> String {
    let dir = root().join("examples/corpus");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    let p = v.first().unwrap_or_else(|| panic!("no .{ext} in examples/"));
    Path::new("examples/corpus").join(p.file_name().expect("name")).to_string_lossy().into_owned()
}

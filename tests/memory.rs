//! Memory bounds of ingestion: one huge text file goes through load, split, fixed-window
//! chunking (the real SmolLM2 tokenizer, piece by piece), embedding and both stores in memory
//! bounded by a small multiple of the file: the document's text and its chunks' texts, never
//! all its tokens, vectors or points at once.
//!
//! The ingest runs in a child process (this test binary, re-run on the ignored test
//! `memory::child_ingest`) so that its peak RSS (`VmHWM`) is its own. The embedder is the
//! test fake: the real one would take many minutes for the default 64 MB
//! (`METARAG_MEMORY_MB=200` for the size the hardening issue names).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metarag_core::chunk::FixedChunker;
use metarag_core::load::FileLoader;
use metarag_core::pipeline::Pipeline;
use metarag_core::split::RuleSplitter;
use metarag_core::testing::FakeEmbedder;
use metarag_index::{Index, IngestOptions, Silent, Stages, StoreConfig, ingest};
use metarag_onnx::{RuntimeOptions, TokenizerFile};

use crate::root;

/// A field of this process's `/proc/self/status`, in bytes (`VmHWM`: peak resident memory;
/// `RssAnon`: resident memory that is not a file's pages, e.g. the stores' memory maps).
fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|l| l.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    kb * 1024
}

/// Writes about `mb` MiB of English prose (the example text, each copy numbered so that
/// chunks differ), in lines.
fn big_text(path: &Path, mb: u64) {
    let base = std::fs::read_to_string(root().join("examples/corpus/washington-1790.txt")).expect("read example");
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create big file"));
    let mut written = 0u64;
    let mut copy = 0u64;
    while written < mb << 20 {
        let part = format!("Copy {copy}.\n{base}\n");
        f.write_all(part.as_bytes()).expect("write big file");
        written += part.len() as u64;
        copy += 1;
    }
    f.flush().expect("flush big file");
}

/// The child: ingests `METARAG_MEMORY_FILE` into `METARAG_MEMORY_INDEX` and prints its
/// chunk count and peak RSS.
#[test]
#[ignore = "run by a_huge_text_file_ingests_in_bounded_memory in a process of its own"]
fn child_ingest() {
    let file = PathBuf::from(std::env::var("METARAG_MEMORY_FILE").expect("METARAG_MEMORY_FILE"));
    let dir = PathBuf::from(std::env::var("METARAG_MEMORY_INDEX").expect("METARAG_MEMORY_INDEX"));
    let tokens = TokenizerFile::smollm2(&RuntimeOptions::default()).expect("SmolLM2 tokenizer (run onnx/setup.py)");
    let mut pipeline = Pipeline::default();
    pipeline.embedder.dims = 64;
    let embedder = FakeEmbedder { dims: 64 };
    let chunker = FixedChunker::new(&tokens, 256).expect("chunker");
    let mut index = Index::create_or_open(&dir, &pipeline, &StoreConfig::Embedded).expect("create index");
    let before = status("VmHWM");
    // The kernel keeps no peak of anonymous memory: sample it.
    let done = AtomicBool::new(false);
    let anon_peak = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                anon_peak.fetch_max(status("RssAnon"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        child_ingest_run(&file, &mut index, &tokens, &chunker, &embedder);
        done.store(true, Ordering::Relaxed);
    });
    println!("before={before} peak={} anon_peak={}", status("VmHWM"), anon_peak.load(Ordering::Relaxed));
}

fn child_ingest_run(
    file: &Path,
    index: &mut Index,
    tokens: &TokenizerFile,
    chunker: &FixedChunker<&TokenizerFile>,
    embedder: &FakeEmbedder,
) {
    let stages = Stages {
        loader: &FileLoader::default(),
        splitter: &RuleSplitter::default(),
        chunker,
        merge: None,
        embedder,
        embed_batch: 32,
        tokens: Some(tokens),
    };
    let report = ingest(index, &[file.to_path_buf()], &stages, &IngestOptions::default(), &Silent).expect("ingest");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(index.verify().expect("verify"), report.chunks);
    println!("chunks={}", report.chunks);
}

#[test]
fn a_huge_text_file_ingests_in_bounded_memory() {
    let mb: u64 = std::env::var("METARAG_MEMORY_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let work = std::env::temp_dir().join(format!("metarag-it-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("mkdir");
    let file = work.join("huge.txt");
    big_text(&file, mb);
    let size = std::fs::metadata(&file).expect("stat").len();

    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "memory::child_ingest", "--ignored", "--nocapture", "--test-threads=1"])
        .env("METARAG_MEMORY_FILE", &file)
        .env("METARAG_MEMORY_INDEX", work.join("idx"))
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let field = |name: &str| -> u64 {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in the child's output: {stdout}"))
    };
    let (chunks, before, peak, anon) = (field("chunks"), field("before"), field("peak"), field("anon_peak"));
    let _ = std::fs::remove_dir_all(&work);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!(
        "memory: {:.0} MiB of text, {chunks} chunks: peak RSS {:.0} MiB ({:.0} MiB before the ingest), \
         of which anonymous (not the stores' file maps) {:.0} MiB, {:.2}x the file",
        mib(size),
        mib(peak),
        mib(before),
        mib(anon),
        anon as f64 / size as f64
    );
    assert!(chunks as f64 > size as f64 / 2048.0, "{chunks} chunks for {size} bytes");
    // The text and its chunks' texts (two copies) plus their spans and the stores' buffers:
    // all tokens (16 bytes each, 3-4 per word) or all points would be far more than this.
    assert!(anon < 3 * size + (128 << 20), "ingesting {:.0} MiB took {:.0} MiB of memory", mib(size), mib(anon));
}

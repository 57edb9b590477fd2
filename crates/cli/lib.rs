//! The `metarag` command line (`setup`, `chunk`, `ingest`, `search`, `ask`, `bench`,
//! `serve`): argument parsing and printing over the libraries. The application layer it
//! calls (the [`Engine`], ingest, the answer generator, the HTTP server) is
//! `metarag-engine`, re-exported here.
//!
//! ```no_run
//! use metarag::{Engine, RuntimeOptions};
//! use metarag_index::Query;
//!
//! let engine = Engine::open("idx".as_ref(), RuntimeOptions::default())?;
//! for hit in engine.search(&Query::new("who is Ishmael").k(3))? {
//!     println!("{:.3} {}#{}", hit.score, hit.record.path, hit.record.chunk);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// `println!` that returns the write error instead of panicking: a closed pipe
/// (`metarag search … | head -1`) then ends the command quietly (see [`main`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod ask;
mod bench;
mod chunk;
mod ingest;
mod search;
mod serve;
mod setup;

use std::process::ExitCode;

pub use metarag_engine::{
    AskOptions, Asked, Chunking, DEFAULT_PIPELINE, EMBEDDER_ID, Engine, EngineError, IngestSettings, Ingested, Models,
    RuntimeOptions, ingest_inputs, runtime,
};

use clap::{Parser, Subcommand};

/// metarag: perplexity-driven meta-chunking for retrieval pipelines.
///
/// A small causal language model (SmolLM2-135M, run by ONNX Runtime) scores how surprising
/// each sentence is given everything before it; chunk boundaries go where that surprise dips
/// (Meta-Chunking). Models are fetched and converted once by `metarag setup`.
#[derive(Debug, Parser)]
#[command(name = "metarag", version, about, long_about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch and convert the models into the models directory (idempotent; runs
    /// `python3 onnx/setup.py`).
    Setup(setup::SetupArgs),
    /// Split documents (PDF, HTML, Markdown, text) into chunks and print them.
    Chunk(chunk::ChunkArgs),
    /// Chunk, embed and index files into an index directory (tantivy BM25 + Qdrant vectors);
    /// resumable, skips unchanged files.
    Ingest(ingest::IngestArgs),
    /// Search an index: bm25, dense, or hybrid (reciprocal rank fusion).
    Search(search::SearchArgs),
    /// Answer a question from an index: retrieve, infill with N candidates decoded together,
    /// aggregate (RPC, vote, lowest perplexity), cite the chunks.
    Ask(ask::AskArgs),
    /// Measure retrieval (recall@k, MRR@10) of chunkers × retrieval modes on a QA dataset
    /// (SQuAD v1.1 dev by default).
    Bench(bench::BenchArgs),
    /// Serve an index over HTTP: search, ask and chunk as JSON endpoints (axum), with an
    /// OpenAPI document, request limits and an optional bearer token.
    Serve(serve::ServeArgs),
}

/// Runs the `metarag` command line on the process's arguments (the binary's `main`).
pub fn cli_main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(&args),
        Command::Chunk(args) => chunk::run(&args),
        Command::Ingest(args) => ingest::run(&args),
        Command::Search(args) => search::run(&args),
        Command::Ask(args) => ask::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Serve(args) => serve::run(&args),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`| head`): what it wanted was written; exit quietly, as ripgrep does.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether an error comes from writing to a pipe whose reader has closed it.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

//! The `metarag` command line: `setup` and `chunk` (ingest, search, ask and bench come with
//! their libraries).

mod chunk;
mod setup;

use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(&args),
        Command::Chunk(args) => chunk::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

//! `metarag serve`: the index over HTTP (axum on tokio): `POST /search`, `/ask`, `/chunk`,
//! `GET /health`, `/openapi.json`. One index and one model set serve every request; model and
//! index work runs on tokio's blocking pool, under a time limit per request.
//!
//! ```text
//! metarag serve --index idx &
//! curl -s localhost:8080/search -d '{"query": "who is Ishmael", "k": 3}'
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use metarag_engine::serve::{ServeConfig, serve};

/// Arguments of `metarag serve`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
EXAMPLES:
  metarag serve --index idx                       # http://127.0.0.1:8080
  curl -s localhost:8080/search -d '{\"query\": \"who is Ishmael\", \"k\": 3}'
  curl -s localhost:8080/ask -d '{\"question\": \"What does the narrator ask to be called?\"}'
  curl -s localhost:8080/chunk -d '{\"text\": \"One sentence. Another one.\"}'
  METARAG_SERVE_TOKEN=secret metarag serve --index idx --addr 0.0.0.0:8080

Endpoints (JSON in, JSON out; the bodies match the --json output of search and ask):
  POST /search  {query, k=10, mode=hybrid|bm25|dense, path_prefix?, kinds?, candidates=20}
  POST /ask     {question, k=2, samples=8, aggregate=rpc|vote|ppl, infill=extractive|free, seed=0}
  POST /chunk   {text}: the text cut by the index's own pipeline (as ingest would)
  GET  /health  index, documents, chunks; never needs the token
  GET  /openapi.json  the OpenAPI 3 description of all of this

Errors are {\"error\": message} with a 4xx status for a bad request (400), a missing or wrong
token (401), a body over --max-body (413), and 503 when a request runs past --timeout.
The server binds to loopback unless told otherwise; any other address needs a bearer token in
$METARAG_SERVE_TOKEN (requests then send `Authorization: Bearer TOKEN`) or --no-auth. The token
is never logged. SIGTERM or Ctrl-C stop it after the requests in flight.

The embedded vector store is held while the server runs: an ingest into the same index
waits for it (serve an index on a Qdrant server to ingest while serving).")]
pub struct ServeArgs {
    /// Index directory (made by `metarag ingest`).
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    max_body: usize,
    /// Longest a request may take, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    timeout: u64,
    /// Allow a non-loopback address without a bearer token.
    #[arg(long)]
    no_auth: bool,
    /// Threads for ONNX Runtime (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Models directory (default: $METARAG_MODELS, else models/ of the checkout).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let (_, opts) = metarag_onnx::runtime(args.threads, args.models.as_deref());
    let config = ServeConfig {
        index: args.index.clone(),
        addr: args.addr,
        max_body: args.max_body,
        timeout: args.timeout,
        no_auth: args.no_auth,
    };
    serve(&config, opts)?;
    Ok(ExitCode::SUCCESS)
}

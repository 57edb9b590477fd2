//! `metarag serve`: the index over HTTP (axum on tokio): `POST /search`, `/ask`, `/chunk`,
//! `GET /health`, `/openapi.json`. One index and one model set serve every request; model and
//! index work runs on tokio's blocking pool, under a time limit per request.
//!
//! ```no_run
//! use metarag_engine::serve::{ServeConfig, serve};
//!
//! // what `metarag serve --index idx` runs; then
//! // curl -s localhost:8080/search -d '{"query": "who is Ishmael", "k": 3}'
//! serve(&ServeConfig::new("idx".into()), metarag_onnx::RuntimeOptions::default())?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metarag_core::Document;
use metarag_index::{Mode, Query};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine::{AskOptions, Engine, EngineError};
use metarag_onnx::RuntimeOptions;

/// The environment variable holding the bearer token, if requests must carry one.
pub const TOKEN_VAR: &str = "METARAG_SERVE_TOKEN";

/// Everything requests share: the engine (index, models, answer model) and the limits.
struct App {
    engine: Engine,
    token: Option<String>,
    timeout: Duration,
}

/// A failed request: status and message, sent as `{"error": message}`.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl Failure {
    fn bad(msg: impl Into<String>) -> Self {
        Failure(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        json_response(self.0, &json!({ "error": self.1 }))
    }
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot serialise the response: {e}")).into_response(),
    }
}

/// Parses a JSON request body, turning every problem into a 4xx with a message.
fn parse<T: for<'de> Deserialize<'de>>(body: Result<Bytes, BytesRejection>) -> Result<T, Failure> {
    let bytes = body.map_err(|r| Failure(r.status(), r.body_text()))?;
    serde_json::from_slice(&bytes).map_err(|e| Failure::bad(format!("invalid request body: {e}")))
}

/// Runs `work` on the blocking pool under the request time limit.
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    work: impl FnOnce(&App) -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    let a = Arc::clone(app);
    let task = tokio::task::spawn_blocking(move || work(&a));
    match tokio::time::timeout(app.timeout, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("the request's worker failed: {e}"))),
        Err(_) => Err(Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {} s (--timeout)", app.timeout.as_secs()),
        )),
    }
}

fn server_error(e: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        let status = match e {
            EngineError::Settings(_) => StatusCode::BAD_REQUEST,
            EngineError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, e.to_string())
    }
}

fn in_range(name: &str, v: usize, lo: usize, hi: usize) -> Result<usize, Failure> {
    if (lo..=hi).contains(&v) { Ok(v) } else { Err(Failure::bad(format!("{name} must be in {lo}..={hi}, not {v}"))) }
}

fn non_blank(name: &str, v: String) -> Result<String, Failure> {
    if v.trim().is_empty() { Err(Failure::bad(format!("{name} must not be empty"))) } else { Ok(v) }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ModeName {
    Bm25,
    Dense,
    #[default]
    Hybrid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    query: String,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default)]
    mode: ModeName,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default = "default_candidates")]
    candidates: usize,
}

fn default_k() -> usize {
    10
}
fn default_candidates() -> usize {
    metarag_index::DEFAULT_CANDIDATES
}

impl SearchRequest {
    fn query(self) -> Result<Query, Failure> {
        let mode = match self.mode {
            ModeName::Bm25 => Mode::Bm25,
            ModeName::Dense => Mode::Dense,
            ModeName::Hybrid => Mode::Hybrid,
        };
        let mut q = Query::new(non_blank("query", self.query)?)
            .k(in_range("k", self.k, 1, 1000)?)
            .mode(mode)
            .candidates(in_range("candidates", self.candidates, 1, 10_000)?);
        if let Some(p) = self.path_prefix {
            q = q.path_prefix(p);
        }
        for kind in self.kinds {
            q = q.kind(kind);
        }
        Ok(q)
    }
}

async fn search(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Result<Response, Failure> {
    let q = parse::<SearchRequest>(body)?.query()?;
    let hits = blocking(&app, move |a| Ok(a.engine.search(&q)?)).await?;
    Ok(json_response(StatusCode::OK, &hits))
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InfillName {
    #[default]
    Extractive,
    Free,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskRequest {
    question: String,
    #[serde(default = "default_ask_k")]
    k: usize,
    #[serde(default = "default_samples")]
    samples: usize,
    #[serde(default = "default_aggregate")]
    aggregate: String,
    #[serde(default)]
    infill: InfillName,
    #[serde(default)]
    seed: u64,
}

fn default_ask_k() -> usize {
    2
}
fn default_samples() -> usize {
    8
}
fn default_aggregate() -> String {
    "rpc".into()
}

async fn ask(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Result<Response, Failure> {
    let req = parse::<AskRequest>(body)?;
    let question = non_blank("question", req.question)?;
    let options = AskOptions {
        k: in_range("k", req.k, 1, 20)?,
        samples: in_range("samples", req.samples, 1, 64)?,
        aggregate: req.aggregate.parse().map_err(|e| Failure::bad(format!("aggregate: {e}")))?,
        extractive: matches!(req.infill, InfillName::Extractive),
        seed: req.seed,
    };
    let out = blocking(&app, move |a| {
        let asked = a.engine.ask(&question, &options)?;
        serde_json::to_value(asked).map_err(server_error)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkRequest {
    text: String,
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    chunk: usize,
    start: usize,
    end: usize,
    text: &'a str,
}

async fn chunk(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Result<Response, Failure> {
    let text = non_blank("text", parse::<ChunkRequest>(body)?.text)?;
    let out = blocking(&app, move |a| {
        let doc = Document::from_text("request", text);
        let chunking = a.engine.chunk(&doc)?;
        let chunks: Vec<ChunkOut> = chunking
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| ChunkOut { chunk: i, start: s.start, end: s.end, text: &doc.text[s.clone()] })
            .collect();
        serde_json::to_value(chunks).map_err(server_error)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &out))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let index = app.engine.index();
    let m = index.manifest();
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "index": index.dir().display().to_string(),
            "documents": m.documents.len(),
            "chunks": m.chunks(),
            "chunker": index.config().pipeline.chunker.name(),
        }),
    )
}

async fn openapi() -> Response {
    json_response(StatusCode::OK, &openapi_document())
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(token) = &app.token else { return next.run(req).await };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        return next.run(req).await;
    }
    let mut r = Failure(StatusCode::UNAUTHORIZED, "a bearer token is required (Authorization: Bearer TOKEN)".into())
        .into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    eprintln!("stopping: finishing the requests in flight");
}

/// What `serve` listens on and how it limits requests (`metarag serve`'s options).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Index directory (made by `metarag ingest`).
    pub index: PathBuf,
    /// Address to listen on (port 0: any free port; the address is printed).
    pub addr: SocketAddr,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Longest a request may take, in seconds.
    pub timeout: u64,
    /// Allow a non-loopback address without a bearer token.
    pub no_auth: bool,
}

impl ServeConfig {
    /// `index` on 127.0.0.1:8080, 1 MiB bodies, 60 s per request.
    pub fn new(index: PathBuf) -> Self {
        ServeConfig {
            index,
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: 1 << 20,
            timeout: 60,
            no_auth: false,
        }
    }
}

/// Serves the index until SIGTERM or Ctrl-C (then finishes the requests in flight). The
/// bearer token, if any, is read from [`TOKEN_VAR`]; a non-loopback address without one is
/// refused unless `no_auth`.
pub fn serve(args: &ServeConfig, opts: RuntimeOptions) -> anyhow::Result<()> {
    let token = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty());
    if !args.addr.ip().is_loopback() && token.is_none() && !args.no_auth {
        anyhow::bail!(
            "{} is not a loopback address: set a bearer token in ${TOKEN_VAR} (or pass --no-auth to serve it to anyone)",
            args.addr
        );
    }
    let engine = Engine::open(&args.index, opts)?;
    // The pipeline's models load now (a /chunk never waits for them); the answer model
    // loads with the first /ask.
    engine.models()?;
    let app = Arc::new(App { engine, token, timeout: Duration::from_secs(args.timeout.max(1)) });
    let router = Router::new()
        .route("/search", post(search))
        .route("/ask", post(ask))
        .route("/chunk", post(chunk))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), auth))
        .layer(DefaultBodyLimit::max(args.max_body))
        .with_state(app);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let local = listener.local_addr().context("the bound address")?;
        eprintln!("listening on http://{local} (index {})", args.index.display());
        axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await.context("serving")
    })
}

/// The OpenAPI 3.0 description of the endpoints.
fn openapi_document() -> serde_json::Value {
    let error = json!({"description": "A bad request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let errors = |ok: serde_json::Value| {
        json!({
            "200": ok,
            "400": error, "401": error, "413": error, "503": error,
        })
    };
    let body = |schema: &str| json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let ok =
        |schema: serde_json::Value| json!({"description": "OK", "content": {"application/json": {"schema": schema}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "metarag", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Search, ask and chunk over one metarag index."},
        "paths": {
            "/search": {"post": {"summary": "Search the index (bm25, dense or hybrid)", "requestBody": body("SearchRequest"),
                "responses": errors(ok(json!({"type": "array", "items": {"$ref": "#/components/schemas/Hit"}})))}},
            "/ask": {"post": {"summary": "Answer a question from the index, with citations", "requestBody": body("AskRequest"),
                "responses": errors(ok(json!({"$ref": "#/components/schemas/Answer"})))}},
            "/chunk": {"post": {"summary": "Cut a text with the index's pipeline", "requestBody": body("ChunkRequest"),
                "responses": errors(ok(json!({"type": "array", "items": {"$ref": "#/components/schemas/Chunk"}})))}},
            "/health": {"get": {"summary": "Liveness and index size",
                "responses": {"200": ok(json!({"$ref": "#/components/schemas/Health"}))}}},
            "/openapi.json": {"get": {"summary": "This document",
                "responses": {"200": ok(json!({"type": "object"}))}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "SearchRequest": {"type": "object", "required": ["query"], "additionalProperties": false, "properties": {
                    "query": {"type": "string", "minLength": 1, "pattern": "\\S"},
                    "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
                    "mode": {"type": "string", "enum": ["bm25", "dense", "hybrid"], "default": "hybrid"},
                    "path_prefix": {"type": "string", "nullable": true},
                    "kinds": {"type": "array", "items": {"type": "string"}},
                    "candidates": {"type": "integer", "minimum": 1, "maximum": 10000, "default": metarag_index::DEFAULT_CANDIDATES}}},
                "AskRequest": {"type": "object", "required": ["question"], "additionalProperties": false, "properties": {
                    "question": {"type": "string", "minLength": 1, "pattern": "\\S"},
                    "k": {"type": "integer", "minimum": 1, "maximum": 20, "default": 2},
                    "samples": {"type": "integer", "minimum": 1, "maximum": 64, "default": 8},
                    "aggregate": {"type": "string", "enum": ["rpc", "vote", "ppl"], "default": "rpc"},
                    "infill": {"type": "string", "enum": ["extractive", "free"], "default": "extractive"},
                    "seed": {"type": "integer", "minimum": 0, "default": 0}}},
                "ChunkRequest": {"type": "object", "required": ["text"], "additionalProperties": false, "properties": {
                    "text": {"type": "string", "minLength": 1, "pattern": "\\S"}}},
                "Hit": {"type": "object", "required": ["score", "id", "doc", "path", "chunk", "start", "end", "text"], "properties": {
                    "score": {"type": "number"},
                    "bm25_rank": {"type": "integer", "nullable": true},
                    "dense_rank": {"type": "integer", "nullable": true},
                    "id": {"type": "integer"}, "doc": {"type": "string"}, "path": {"type": "string"},
                    "kind": {"type": "string"}, "chunk": {"type": "integer"},
                    "start": {"type": "integer"}, "end": {"type": "integer"}, "text": {"type": "string"}}},
                "Answer": {"type": "object", "required": ["question", "text", "confidence", "citations", "retrieved"], "properties": {
                    "question": {"type": "string"}, "text": {"type": "string"}, "confidence": {"type": "number"},
                    "citations": {"type": "array", "items": {"type": "object"}},
                    "candidates": {"type": "array", "items": {"type": "object"}},
                    "retrieved": {"type": "array", "items": {"type": "string"}}}},
                "Chunk": {"type": "object", "required": ["chunk", "start", "end", "text"], "properties": {
                    "chunk": {"type": "integer"}, "start": {"type": "integer"}, "end": {"type": "integer"},
                    "text": {"type": "string"}}},
                "Health": {"type": "object", "required": ["status", "documents", "chunks"], "properties": {
                    "status": {"type": "string"}, "version": {"type": "string"}, "index": {"type": "string"},
                    "documents": {"type": "integer"}, "chunks": {"type": "integer"}, "chunker": {"type": "string"}}}
            }
        }
    })
}

//! metarag as an application library: what the command line, the HTTP server and the Python
//! package share. An [`Engine`] is an opened index with the models that search, chunk and
//! answer with it; [`ingest`] turns files and folders into an index; [`generator`] loads and
//! configures the answer model; [`bench`] runs `metarag bench` ([`progress`] shows its long
//! runs); `serve` (feature `http`) puts an engine behind HTTP.
//!
//! ```no_run
//! use metarag_engine::{AskOptions, Engine};
//! use metarag_index::Query;
//! use metarag_onnx::RuntimeOptions;
//!
//! let engine = Engine::open("idx".as_ref(), RuntimeOptions::default())?;
//! for hit in engine.search(&Query::new("who is Ishmael").k(3))? {
//!     println!("{:.3} {}#{}", hit.score, hit.record.path, hit.record.chunk);
//! }
//! let asked = engine.ask("What does the narrator ask to be called?", &AskOptions::default())?;
//! println!("{} ({:.2})", asked.answer.text, asked.answer.confidence);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bench;
pub mod engine;
pub mod generator;
pub mod ingest;
pub mod progress;
#[cfg(feature = "http")]
pub mod serve;

pub use engine::{AskOptions, Asked, Chunking, Engine, EngineError, open_index};
pub use generator::{AnswerModel, Decoder, GenerateOptions, Generator, Infill, ScheduleKind};
pub use ingest::{DEFAULT_PIPELINE, IngestJob, IngestSettings, Ingested, ingest_inputs};
pub use metarag_onnx::{EMBEDDER_ID, Models, RuntimeOptions, runtime};

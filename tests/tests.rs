//! Integration tests: one test binary, modules inside.
//!
//! `models` and `cli` use the real models from the models directory (`python3 onnx/setup.py`
//! puts them there; the README's test command runs it first). They fail, never skip, when the
//! models are missing.

mod cli;
mod fuzz_inputs;
mod generate;
mod index;
mod infill;
mod masked;
mod masked_model;
mod memory;
mod models;
mod serve;
mod store_contract;

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Parses `tests/fixtures/model_oracle.json`.
pub fn oracle() -> serde_json::Value {
    let path = root().join("tests/fixtures/model_oracle.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

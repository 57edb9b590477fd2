//! `metarag setup`: runs the model set-up script of the checkout.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;

/// Arguments of `metarag setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Models directory (default: $METARAG_MODELS, else `models/` in the checkout).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Only verify the installed files against the lock file (sha256), fetch nothing.
    #[arg(long)]
    verify_only: bool,
}

/// The source checkout this binary was built from (scripts and pipelines live there).
pub fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn run(args: &SetupArgs) -> anyhow::Result<ExitCode> {
    let script = checkout().join("onnx/setup.py");
    if !script.is_file() {
        bail!("{}: set-up script not found; run `python3 onnx/setup.py` from a metarag checkout", script.display());
    }
    let mut cmd = Command::new("python3");
    cmd.arg(&script);
    if let Some(m) = &args.models {
        cmd.arg("--models-dir").arg(m);
    }
    if args.verify_only {
        cmd.arg("--verify-only");
    }
    let status = cmd.status().with_context(|| format!("running python3 {}", script.display()))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

//! Finding the models directory and the ONNX Runtime library, and building sessions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::{Error, Result};

/// The versioned library file name shipped by the `onnxruntime` 1.32 wheel.
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.32.0";

/// The models directory: `$METARAG_MODELS`, else `models/` in the current directory if it
/// exists, else `models/` in the source checkout this binary was built from (as a canonical
/// path when it exists: `/src/metarag/models`, not `/src/metarag/crates/onnx/../../models`).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("METARAG_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("models");
    if local.join("manifest.json").exists() {
        return local;
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    std::fs::canonicalize(&checkout).unwrap_or(checkout)
}

/// Where the ONNX Runtime library is looked for, in order: the models directory (put there by
/// `onnx/setup.py`), then `ORT_DYLIB_PATH`.
pub fn ort_library_candidates(models: &Path) -> Vec<PathBuf> {
    let mut v =
        vec![models.join("onnxruntime").join(ORT_LIBRARY), models.join("onnxruntime").join("libonnxruntime.so")];
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    v
}

/// The process's ONNX Runtime environment, or why it could not be made (library, message).
static ENV: OnceLock<std::result::Result<ort::environment::Environment, (PathBuf, String)>> = OnceLock::new();

/// Loads ONNX Runtime once per process (from the first candidate that exists) and returns
/// its environment. Never panics when the library is missing: that is
/// [`Error::RuntimeMissing`].
pub fn environment(models: &Path) -> Result<&'static ort::environment::Environment> {
    let candidates = ort_library_candidates(models);
    let Some(path) = candidates.iter().find(|p| p.is_file()).cloned() else {
        if let Some(Ok(env)) = ENV.get() {
            return Ok(env);
        }
        return Err(Error::RuntimeMissing { looked: candidates });
    };
    let env = ENV.get_or_init(|| {
        let builder = ort::init_from(&path).map_err(|e| (path.clone(), e.to_string()))?;
        builder.with_name("metarag").build().map_err(|e| (path.clone(), e.to_string()))
    });
    env.as_ref().map_err(|(path, detail)| Error::RuntimeLoad { path: path.clone(), detail: detail.clone() })
}

/// How sessions run.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Intra-op threads per session (default: all cores).
    pub intra_threads: usize,
    /// Models directory (default [`models_dir`]).
    pub models_dir: PathBuf,
    /// Whether idle intra-op threads spin waiting for work (ONNX Runtime's own default)
    /// instead of sleeping. Default: on; `METARAG_ORT_SPIN=0` turns it off. Measured on 2
    /// cores: PPL chunking alone as fast either way, two processes at once 13% faster without
    /// spinning (41.1 s vs 47.2 s), `ask` decoding no slower; the integration tests 582 s
    /// without, 632 s with it.
    pub spinning: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            models_dir: models_dir(),
            spinning: std::env::var("METARAG_ORT_SPIN").map_or(true, |v| v != "0"),
        }
    }
}

impl RuntimeOptions {
    /// Sets the intra-op thread count (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.intra_threads = threads.max(1);
        self
    }

    /// Sets the models directory.
    pub fn with_models_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.models_dir = dir.into();
        self
    }

    /// A model file inside the models directory, checked to exist.
    pub fn model_file(&self, relative: &str) -> Result<PathBuf> {
        let path = self.models_dir.join(relative);
        if path.is_file() { Ok(path) } else { Err(Error::ModelMissing { path, models_dir: self.models_dir.clone() }) }
    }

    /// Builds a CPU session for `model` with full graph optimisation.
    pub fn session(&self, model: &Path) -> Result<Session> {
        self.build_session(model, false)
    }

    /// [`RuntimeOptions::session`] for a graph whose input shapes change from call to call
    /// (the embedder: batches of texts of any length). ONNX Runtime's CPU arena and memory
    /// patterns keep buffers for the shapes seen: without them an ingest of 400 KB of text
    /// peaked at 1.0 GB instead of 1.58 GB.
    pub fn session_for_varying_shapes(&self, model: &Path) -> Result<Session> {
        self.build_session(model, true)
    }

    fn build_session(&self, model: &Path, varying: bool) -> Result<Session> {
        let env = environment(&self.models_dir)?;
        let ort_err = |context: &'static str| {
            move |e: &dyn std::fmt::Display| Error::Ort { model: model.to_path_buf(), context, detail: e.to_string() }
        };
        let builder = Session::builder(env).map_err(|e| ort_err("session builder")(&e))?;
        let mut builder = builder
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| ort_err("optimisation level")(&e))?
            .with_intra_threads(self.intra_threads)
            .map_err(|e| ort_err("intra-op threads")(&e))?
            .with_inter_threads(1)
            .map_err(|e| ort_err("inter-op threads")(&e))?
            .with_intra_op_spinning(self.spinning)
            .map_err(|e| ort_err("intra-op spinning")(&e))?;
        if varying {
            builder = builder
                .with_memory_pattern(false)
                .map_err(|e| ort_err("memory pattern")(&e))?
                .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
                .map_err(|e| ort_err("CPU arena")(&e))?;
        }
        builder.commit_from_file(model).map_err(|e| ort_err("loading the graph")(&e))
    }
}

/// Checks that a session has the named inputs and outputs.
pub(crate) fn check_names(
    session: &Session,
    model: &Path,
    contract: &'static str,
    inputs: &[&str],
    outputs: &[&str],
) -> Result<()> {
    let have_in: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    let have_out: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    for want in inputs {
        if !have_in.contains(want) {
            return Err(Error::Contract {
                model: model.to_path_buf(),
                contract,
                detail: format!("missing input `{want}` (inputs: {})", have_in.join(", ")),
            });
        }
    }
    for want in outputs {
        if !have_out.contains(want) {
            return Err(Error::Contract {
                model: model.to_path_buf(),
                contract,
                detail: format!("missing output `{want}` (outputs: {})", have_out.join(", ")),
            });
        }
    }
    Ok(())
}

/// One graph's sessions: one, or several that calls take as they are free (documents scored at
/// once, embedding batches in parallel).
pub(crate) struct SessionPool {
    model: PathBuf,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl SessionPool {
    /// A pool of the one session `session` of `model`.
    pub(crate) fn new(model: &Path, session: Session) -> Self {
        SessionPool { model: model.to_path_buf(), sessions: vec![Mutex::new(session)], next: AtomicUsize::new(0) }
    }

    /// `n` sessions (at least one) made by `make`, in place of these.
    pub(crate) fn resized(mut self, n: usize, make: impl Fn() -> Result<Session>) -> Result<Self> {
        self.sessions = (0..n.max(1)).map(|_| make().map(Mutex::new)).collect::<Result<_>>()?;
        Ok(self)
    }

    /// How many sessions there are.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// A free session, or (all busy) the next one in turn, waited for.
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Session>> {
        let poisoned = || Error::Ort {
            model: self.model.clone(),
            context: "session lock",
            detail: "a previous run panicked".into(),
        };
        if self.sessions.len() > 1 {
            for s in &self.sessions {
                match s.try_lock() {
                    Ok(guard) => return Ok(guard),
                    Err(std::sync::TryLockError::WouldBlock) => {}
                    Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
                }
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        self.sessions[i].lock().map_err(|_| poisoned())
    }
}

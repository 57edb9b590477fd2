//! Deterministic crash points, so tests can kill an ingest at every step of its write path.
//!
//! The write path ([`crate::Index::write_batch`], recovery, manifest saves) calls [`point`]
//! between its durable steps. Two environment variables, read once per process, make the
//! points observable and fatal; unset, a point costs one check of an initialised `OnceLock`.
//!
//! - `METARAG_CRASH_LOG=FILE`: append `N NAME` for each point passed (N counts from 1).
//! - `METARAG_CRASH_AT=N`: abort the process at the N-th point: no unwinding, no destructors,
//!   no flush of anything buffered in the process, as after `kill -9`.
//!
//! ```no_run
//! // METARAG_CRASH_LOG=/tmp/points metarag ingest docs --index idx   # count the points
//! // METARAG_CRASH_AT=7 metarag ingest docs --index idx              # die at the 7th
//! metarag_index::crash::point("example.step");
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Plan {
    at: Option<u64>,
    log: Option<PathBuf>,
}

static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
static PASSED: AtomicU64 = AtomicU64::new(0);

fn plan() -> Option<&'static Plan> {
    PLAN.get_or_init(|| {
        let at = std::env::var("METARAG_CRASH_AT").ok().and_then(|v| v.trim().parse::<u64>().ok());
        let log = std::env::var_os("METARAG_CRASH_LOG").map(PathBuf::from);
        (at.is_some() || log.is_some()).then_some(Plan { at, log })
    })
    .as_ref()
}

/// Passes the crash point `name`: logs it and aborts the process when the environment asks
/// for it (see the module docs); otherwise does nothing.
pub fn point(name: &str) {
    let Some(plan) = plan() else { return };
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(path) = &plan.log
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = f.write_all(format!("{n} {name}\n").as_bytes());
    }
    if plan.at == Some(n) {
        std::process::abort();
    }
}

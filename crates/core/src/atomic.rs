//! Crash-safe file replacement, shared by the index's manifest and the benchmark's files.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through `path.tmp`, synced, and a rename, then syncs the folder:
/// a crash or a reader sees the old file or the new one, never half of one. `before_rename`
/// runs between the synced write and the rename (the index's crash-test point). An error
/// carries the path it happened on (the temporary file or `path`).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("metarag-atomic-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let file = dir.join("state.json");
/// metarag_core::write_atomic(&file, b"{}", || {}).unwrap();
/// assert_eq!(std::fs::read(&file).unwrap(), b"{}");
/// assert!(!dir.join("state.tmp").exists());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8], before_rename: impl FnOnce()) -> Result<(), (PathBuf, std::io::Error)> {
    let tmp = path.with_extension("tmp");
    let on = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    {
        let mut f = std::fs::File::create(&tmp).map_err(on(&tmp))?;
        f.write_all(bytes).map_err(on(&tmp))?;
        f.sync_all().map_err(on(&tmp))?;
    }
    before_rename();
    std::fs::rename(&tmp, path).map_err(on(path))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

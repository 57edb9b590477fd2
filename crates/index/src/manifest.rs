//! The ingest manifest (`manifest.json`): which documents the index holds, with their content
//! hash and chunk count, plus the documents of the batch being written (`pending`).
//!
//! Crash safety rests on it: a batch is first recorded as pending (written atomically), then
//! written to both stores, made durable in both, and only then moved to `documents`. After a
//! crash, [`Manifest::pending`] names exactly the documents whose chunks may be half-written;
//! recovery deletes them from both stores and the next ingest writes them again.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::{Error, Result};

/// File name of the manifest inside an index directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One ingested document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocEntry {
    /// Path as ingested.
    pub path: String,
    /// SHA-256 of the file's bytes (hex).
    pub hash: String,
    /// Fingerprint of the pipeline that chunked it; a different pipeline re-chunks it.
    pub pipeline: String,
    /// Number of chunks (their ids are `point_id(doc, 0..chunks)`).
    pub chunks: u32,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// A document of the batch in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pending {
    /// Chunks it had before (0 if new).
    pub old_chunks: u32,
    /// Chunks being written.
    pub new_chunks: u32,
}

/// The manifest: documents by id, and the batch in flight.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// Documents fully written to both stores.
    pub documents: BTreeMap<String, DocEntry>,
    /// Documents being written (empty between batches and after a clean exit).
    pub pending: BTreeMap<String, Pending>,
}

impl Manifest {
    /// Reads `dir/manifest.json`, or an empty manifest when there is none.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::NotAnIndex { path: path.clone(), detail: format!("unreadable manifest: {e}") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest { format: 1, ..Manifest::default() }),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Writes the manifest atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::NotAnIndex {
            path: path.clone(),
            detail: format!("cannot serialise the manifest: {e}"),
        })?;
        write_atomic(&path, &bytes)
    }

    /// Total chunks of the documents held.
    pub fn chunks(&self) -> u64 {
        self.documents.values().map(|d| u64::from(d.chunks)).sum()
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file
/// ([`metarag_core::write_atomic`], with the `manifest.written` crash point before the rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    metarag_core::write_atomic(path, bytes, || crate::crash::point("manifest.written")).map_err(|(p, e)| io(p)(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = std::env::temp_dir().join(format!("manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Manifest::load(&dir).unwrap().documents.len(), 0);
        let mut m = Manifest { format: 1, ..Manifest::default() };
        m.documents.insert(
            "a".into(),
            DocEntry { path: "a".into(), hash: "h".into(), pipeline: "p".into(), chunks: 3, bytes: 9 },
        );
        m.pending.insert("b".into(), Pending { old_chunks: 0, new_chunks: 2 });
        m.save(&dir).unwrap();
        assert_eq!(Manifest::load(&dir).unwrap(), m);
        assert_eq!(m.chunks(), 3);
        std::fs::write(dir.join(MANIFEST_FILE), b"{").unwrap();
        let e = Manifest::load(&dir).unwrap_err().to_string();
        assert!(e.contains("manifest.json") && e.contains("unreadable"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Plain text and Markdown: strict UTF-8, BOM dropped, line endings normalised.
//!
//! ```
//! // Used through `load_path` for `.txt` and `.md` files:
//! # let dir = std::env::temp_dir().join(format!("metarag-text-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("crlf.txt");
//! std::fs::write(&path, "a\r\nb\rc")?;
//! let doc = metarag_core::load::load_path(&path, &Default::default()).unwrap();
//! assert_eq!(doc.text, "a\nb\nc");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), std::io::Error>(())
//! ```

use std::path::Path;

use crate::{Error, Result};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes `bytes` as UTF-8 without any lossy replacement, dropping a leading BOM. The
/// error's offset counts from the start of the file (BOM included).
pub(crate) fn decode_utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    let (skip, body) = match bytes.strip_prefix(BOM) {
        Some(rest) => (BOM.len(), rest),
        None => (0, bytes),
    };
    std::str::from_utf8(body)
        .map_err(|e| Error::InvalidUtf8 { path: path.to_path_buf(), offset: skip + e.valid_up_to() })
}

/// Converts CRLF and lone CR line endings to LF; everything else is kept.
pub(crate) fn normalize_newlines(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\r') {
        out.push_str(&rest[..at]);
        out.push('\n');
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('\n') {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines() {
        assert_eq!(normalize_newlines("a\r\nb\rc\n\r\n\r"), "a\nb\nc\n\n\n");
        assert_eq!(normalize_newlines("no cr"), "no cr");
        assert_eq!(normalize_newlines("\r\r\n"), "\n\n");
    }

    #[test]
    fn utf8() {
        let p = Path::new("x.txt");
        assert_eq!(decode_utf8(p, b"\xEF\xBB\xBFhi").ok(), Some("hi"));
        assert_eq!(decode_utf8(p, "café".as_bytes()).ok(), Some("café"));
        assert!(matches!(decode_utf8(p, b"caf\xE9"), Err(Error::InvalidUtf8 { offset: 3, .. })));
        assert!(matches!(decode_utf8(p, b"\xEF\xBB\xBFab\xFF"), Err(Error::InvalidUtf8 { offset: 5, .. })));
        // A truncated multi-byte sequence at the end is invalid too.
        assert!(matches!(decode_utf8(p, b"ab\xE4\xB8"), Err(Error::InvalidUtf8 { offset: 2, .. })));
    }
}

//! Documents and chunks. A chunk never copies text: it is a byte span of its document.

use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The kind of source a document was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocKind {
    /// Plain text.
    Text,
    /// Markdown (kept as text; markup is not stripped).
    Markdown,
    /// HTML, reduced to its text content.
    Html,
    /// PDF, text extracted page by page.
    Pdf,
}

impl DocKind {
    /// Every kind.
    pub const ALL: [DocKind; 4] = [DocKind::Text, DocKind::Markdown, DocKind::Html, DocKind::Pdf];

    /// The kind's name as stored and filtered on: `text`, `markdown`, `html` or `pdf` (its
    /// serde name).
    ///
    /// ```
    /// use metarag_core::DocKind;
    /// assert_eq!(DocKind::Markdown.name(), "markdown");
    /// assert_eq!("pdf".parse::<DocKind>(), Ok(DocKind::Pdf));
    /// assert!("docx".parse::<DocKind>().is_err());
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            DocKind::Text => "text",
            DocKind::Markdown => "markdown",
            DocKind::Html => "html",
            DocKind::Pdf => "pdf",
        }
    }

    /// Guesses the kind from a file extension (case-insensitive). `None` for unknown extensions.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "txt" | "text" | "rst" | "log" => Some(DocKind::Text),
            "md" | "markdown" | "mdown" => Some(DocKind::Markdown),
            "html" | "htm" | "xhtml" => Some(DocKind::Html),
            "pdf" => Some(DocKind::Pdf),
            _ => None,
        }
    }
}

impl std::fmt::Display for DocKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DocKind {
    type Err = String;

    /// Parses a kind's [`name`](DocKind::name).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        DocKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown document kind {s:?}: expected text, markdown, html or pdf"))
    }
}

/// A loaded document: normalised UTF-8 text plus where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Stable identifier (the path as given, by default).
    pub id: String,
    /// Source file, if any.
    pub path: Option<PathBuf>,
    /// What kind of source it was.
    pub kind: DocKind,
    /// The text every span points into.
    pub text: String,
    /// Byte ranges of the pages (PDF only; empty otherwise). They tile `text` up to the
    /// page separators.
    pub pages: Vec<Range<usize>>,
}

impl Document {
    /// A document from a string, for tests and library use.
    ///
    /// ```
    /// let doc = metarag_core::Document::from_text("note", "Hello. World.");
    /// assert_eq!(doc.text.len(), 13);
    /// ```
    pub fn from_text(id: impl Into<String>, text: impl Into<String>) -> Self {
        Document { id: id.into(), path: None, kind: DocKind::Text, text: text.into(), pages: Vec::new() }
    }
}

/// One chunk of a document: a byte span into [`Document::text`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Position of the chunk in its document, from 0.
    pub index: usize,
    /// Byte span into the document text.
    pub span: Range<usize>,
}

/// Checks that `spans` tile `0..len` exactly: non-empty, contiguous, in order.
///
/// ```
/// assert!(metarag_core::tiles(&[0..3, 3..5], 5));
/// assert!(!metarag_core::tiles(&[0..3, 4..5], 5));
/// ```
pub fn tiles(spans: &[Range<usize>], len: usize) -> bool {
    let mut at = 0;
    for s in spans {
        if s.start != at || s.end <= s.start {
            return false;
        }
        at = s.end;
    }
    at == len
}

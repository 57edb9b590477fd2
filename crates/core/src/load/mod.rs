//! Loaders: files to [`Document`]s.
//!
//! [`load_path`] (and the [`FileLoader`] that wraps it) reads one file and picks the format
//! from its extension ([`DocKind::from_extension`]); files with an unknown extension are
//! sniffed: a `%PDF-` header means PDF, binary data is refused ([`Error::Binary`]), an HTML
//! prologue means HTML, anything else is read as text.
//!
//! - Text and Markdown: UTF-8 (a BOM is dropped), CRLF and CR become LF, nothing else changes.
//! - HTML: the text content only ([`html_to_text`]).
//! - PDF (feature `pdf`): text per page, NFKC-normalised, extracted in a separate thread
//!   with a time limit and panics caught (see [`quiet_pdf_panics`]).
//!
//! Every error names the file: missing or unreadable ([`Error::Io`]), empty or whitespace
//! only ([`Error::Empty`]), binary ([`Error::Binary`]), not UTF-8 ([`Error::InvalidUtf8`],
//! with the byte offset), too large or unsupported ([`Error::Unsupported`]), broken PDF
//! ([`Error::Pdf`]), too slow ([`Error::Timeout`]).
//!
//! ```
//! use metarag_core::load::{FileLoader, Loader};
//! use metarag_core::DocKind;
//!
//! let dir = std::env::temp_dir().join(format!("metarag-load-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("note.md");
//! std::fs::write(&path, "# Title\r\nSome text.\r\n").unwrap();
//!
//! let doc = FileLoader::default().load(&path)?;
//! assert_eq!(doc.kind, DocKind::Markdown);
//! assert_eq!(doc.text, "# Title\nSome text.\n");
//! assert_eq!(doc.id, path.display().to_string());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), metarag_core::Error>(())
//! ```

pub mod bidi;
mod html;
mod pdf;
mod text;

use std::path::Path;
use std::time::Duration;

pub use html::html_to_text;
pub use pdf::{PDF_THREAD_NAME, quiet_pdf_panics};

use crate::{DocKind, Document, Error, Result};

/// Loads one file into a [`Document`].
pub trait Loader: Send + Sync {
    /// Reads and converts the file at `path`.
    fn load(&self, path: &Path) -> Result<Document>;
}

impl<T: Loader + ?Sized> Loader for &T {
    fn load(&self, path: &Path) -> Result<Document> {
        (**self).load(path)
    }
}

impl<T: Loader + ?Sized> Loader for Box<T> {
    fn load(&self, path: &Path) -> Result<Document> {
        (**self).load(path)
    }
}

impl<T: Loader + ?Sized> Loader for std::sync::Arc<T> {
    fn load(&self, path: &Path) -> Result<Document> {
        (**self).load(path)
    }
}

/// Limits that apply while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Longest time PDF text extraction may go without progress: parsing the file, or any one
    /// page (default 60 s). A long document that keeps making progress is read whole.
    pub pdf_timeout: Duration,
    /// Largest file that is read at all, in bytes (default 512 MiB).
    pub max_file_bytes: u64,
    /// Keep going when some pages of a PDF cannot be read, leaving them empty (default
    /// `false`: such a file is an [`Error::Pdf`] naming the page).
    pub pdf_skip_bad_pages: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            pdf_timeout: Duration::from_secs(60),
            max_file_bytes: 512 * 1024 * 1024,
            pdf_skip_bad_pages: false,
        }
    }
}

impl LoadOptions {
    /// Sets the per-file PDF extraction time limit.
    pub fn with_pdf_timeout(mut self, timeout: Duration) -> Self {
        self.pdf_timeout = timeout;
        self
    }

    /// Sets the largest file size that is read.
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// Sets whether unreadable PDF pages are left empty instead of failing the file.
    pub fn with_pdf_skip_bad_pages(mut self, skip: bool) -> Self {
        self.pdf_skip_bad_pages = skip;
        self
    }
}

/// The standard loader: dispatches on the file extension (see [`load_path`]).
#[derive(Debug, Clone, Default)]
pub struct FileLoader {
    /// Limits applied to every file.
    pub options: LoadOptions,
}

impl FileLoader {
    /// A loader with the given limits.
    pub fn new(options: LoadOptions) -> Self {
        FileLoader { options }
    }
}

impl Loader for FileLoader {
    fn load(&self, path: &Path) -> Result<Document> {
        load_path(path, &self.options)
    }
}

/// Loads the file at `path`. The document id is the path as given (its display string).
///
/// ```
/// use metarag_core::load::{load_path, LoadOptions};
/// use metarag_core::Error;
///
/// let err = load_path("no/such/file.txt".as_ref(), &LoadOptions::default()).unwrap_err();
/// assert!(matches!(err, Error::Io { .. }));
/// assert!(err.to_string().starts_with("no/such/file.txt: cannot read"));
/// ```
pub fn load_path(path: &Path, opts: &LoadOptions) -> Result<Document> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(Error::Unsupported { path: path.to_path_buf(), detail: "a directory, not a file".into() });
    }
    check_size(path, meta.len(), opts)?;
    let bytes = std::fs::read(path).map_err(io)?;
    load_bytes(path, &bytes, opts)
}

/// [`load_path`] on bytes already read from `path` (which picks the format by its extension
/// and names the file in errors): the same checks, the same PDF containment.
pub fn load_bytes(path: &Path, bytes: &[u8], opts: &LoadOptions) -> Result<Document> {
    // The file may have grown between the size check and the read.
    check_size(path, bytes.len() as u64, opts)?;
    if bytes.is_empty() {
        return Err(Error::Empty { path: path.to_path_buf(), detail: "the file has 0 bytes".into() });
    }

    let by_extension = path.extension().and_then(|e| e.to_str()).and_then(DocKind::from_extension);
    let kind = match by_extension {
        Some(kind) => kind,
        None => sniff(path, bytes)?,
    };

    let (text, pages) = match kind {
        DocKind::Pdf => pdf::load_pdf(path, bytes, opts)?,
        DocKind::Text | DocKind::Markdown | DocKind::Html => {
            if let Some(reason) = is_probably_binary(bytes) {
                return Err(Error::Binary { path: path.to_path_buf(), detail: reason });
            }
            let decoded = text::decode_utf8(path, bytes)?;
            let text =
                if kind == DocKind::Html { html::extract(path, decoded)? } else { text::normalize_newlines(decoded) };
            if text.trim().is_empty() {
                let detail = if kind == DocKind::Html {
                    "no text content after removing the markup"
                } else {
                    "the file holds only whitespace"
                };
                return Err(Error::Empty { path: path.to_path_buf(), detail: detail.into() });
            }
            (text, Vec::new())
        }
    };

    Ok(Document { id: path.display().to_string(), path: Some(path.to_path_buf()), kind, text, pages })
}

fn check_size(path: &Path, len: u64, opts: &LoadOptions) -> Result<()> {
    if len > opts.max_file_bytes {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            detail: format!(
                "the file has {len} bytes, more than the limit of {} bytes (max_file_bytes)",
                opts.max_file_bytes
            ),
        });
    }
    Ok(())
}

/// Guesses the kind of a file with no known extension from its first bytes.
fn sniff(path: &Path, bytes: &[u8]) -> Result<DocKind> {
    if pdf::has_pdf_header(bytes) {
        return Ok(DocKind::Pdf);
    }
    if let Some(reason) = is_probably_binary(bytes) {
        return Err(Error::Binary { path: path.to_path_buf(), detail: reason });
    }
    let head = &bytes[..bytes.len().min(512)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len());
    let head = head[start..].to_ascii_lowercase();
    if head.starts_with(b"<!doctype html") || head.starts_with(b"<html") {
        return Ok(DocKind::Html);
    }
    Ok(DocKind::Text)
}

/// Magic numbers of common binary formats.
const MAGIC: &[(&[u8], &str)] = &[
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xFF\xD8\xFF", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"PK\x03\x04", "ZIP archive (also docx, xlsx, epub, jar)"),
    (b"\x7FELF", "ELF executable"),
    (b"\x1F\x8B", "gzip archive"),
    (b"BZh", "bzip2 archive"),
    (b"\xFD7zXZ\x00", "xz archive"),
    (b"\x28\xB5\x2F\xFD", "zstd archive"),
    (b"7z\xBC\xAF\x27\x1C", "7-Zip archive"),
    (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", "OLE2 document (old doc/xls)"),
    (b"\x00asm", "WebAssembly module"),
    (b"\xCA\xFE\xBA\xBE", "Java class or Mach-O binary"),
    (b"\xCF\xFA\xED\xFE", "Mach-O binary"),
    (b"\xFF\xFE", "UTF-16 (little-endian) text; convert it to UTF-8"),
    (b"\xFE\xFF", "UTF-16 (big-endian) text; convert it to UTF-8"),
];

/// Says why `bytes` look like binary data rather than text, or `None` if they look like
/// text: a known magic number, a NUL byte in the first 8 KiB, or more than 10% control
/// characters (other than tab, newline, carriage return, form feed and escape) there.
///
/// ```
/// use metarag_core::load::is_probably_binary;
/// assert_eq!(is_probably_binary(b"plain text\n"), None);
/// assert_eq!(is_probably_binary("café".as_bytes()), None);
/// assert!(is_probably_binary(b"\x89PNG\r\n\x1a\n....").unwrap().contains("PNG"));
/// assert!(is_probably_binary(b"abc\0def").unwrap().contains("NUL"));
/// ```
pub fn is_probably_binary(bytes: &[u8]) -> Option<String> {
    if let Some((_, name)) = MAGIC.iter().find(|(magic, _)| bytes.starts_with(magic)) {
        return Some(format!("starts like a {name}"));
    }
    let head = &bytes[..bytes.len().min(8192)];
    if let Some(at) = head.iter().position(|&b| b == 0) {
        return Some(format!("NUL byte at offset {at}"));
    }
    let controls =
        head.iter().filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0C | 0x1B)) || b == 0x7F).count();
    if controls * 10 > head.len() {
        return Some(format!("{controls} control bytes in the first {} bytes", head.len()));
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A file under the workspace's `tests/fixtures/`.
    pub(crate) fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(rel)
    }

    /// A file of the quick-start corpus, `examples/corpus/`.
    pub(crate) fn example(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/corpus").join(rel)
    }

    /// A fresh temporary directory, removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("metarag-core-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, bytes).expect("write temp file");
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load(p: &Path) -> Result<Document> {
        load_path(p, &LoadOptions::default())
    }

    /// The error of a load that must fail.
    pub(crate) fn err(r: Result<Document>) -> Error {
        match r {
            Err(e) => e,
            Ok(doc) => panic!("expected an error, got a {:?} document of {} bytes", doc.kind, doc.text.len()),
        }
    }

    #[test]
    fn text_file() -> Result<()> {
        let dir = TempDir::new("text");
        let p = dir.write("a.txt", b"\xEF\xBB\xBFline one\r\nline two\rthree\n");
        let doc = load(&p)?;
        assert_eq!(doc.kind, DocKind::Text);
        assert_eq!(doc.text, "line one\nline two\nthree\n");
        assert_eq!(doc.id, p.display().to_string());
        assert_eq!(doc.path.as_deref(), Some(p.as_path()));
        assert!(doc.pages.is_empty());
        Ok(())
    }

    #[test]
    fn markdown_file_keeps_markup() -> Result<()> {
        let dir = TempDir::new("md");
        let p = dir.write("a.MD", b"# Head\n\n- *item*\n");
        let doc = FileLoader::default().load(&p)?;
        assert_eq!(doc.kind, DocKind::Markdown);
        assert_eq!(doc.text, "# Head\n\n- *item*\n");
        Ok(())
    }

    #[test]
    fn html_file() -> Result<()> {
        let dir = TempDir::new("html");
        let p = dir.write("a.html", b"<html><head><title>T</title></head><body><p>Hi &amp; bye</p></body></html>");
        let doc = load(&p)?;
        assert_eq!(doc.kind, DocKind::Html);
        assert_eq!(doc.text, "T\n\nHi & bye");
        let empty = dir.write("e.htm", b"<html><body><script>x()</script> <p> </p></body></html>");
        assert!(matches!(load(&empty), Err(Error::Empty { .. })));
        Ok(())
    }

    #[test]
    fn unknown_extension_is_sniffed() -> Result<()> {
        let dir = TempDir::new("sniff");
        assert_eq!(load(&dir.write("README", b"Just text."))?.kind, DocKind::Text);
        assert_eq!(load(&dir.write("page.php", b"\n<!DOCTYPE html><p>x</p>"))?.kind, DocKind::Html);
        let err = err(load(&dir.write("img.bin", b"\x89PNG\r\n\x1a\nrest")));
        assert!(matches!(&err, Error::Binary { detail, .. } if detail.contains("PNG")), "{err}");
        Ok(())
    }

    #[test]
    fn missing_file_is_io() {
        let err = err(load(Path::new("/definitely/not/here.txt")));
        assert!(matches!(&err, Error::Io { path, .. } if path == Path::new("/definitely/not/here.txt")));
        assert!(err.to_string().contains("/definitely/not/here.txt"));
    }

    #[test]
    fn directory_is_unsupported() {
        let dir = TempDir::new("dir");
        assert!(matches!(load(&dir.0), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn empty_fixture() {
        let p = fixture("bad/empty.txt");
        let err = err(load(&p));
        assert!(matches!(&err, Error::Empty { path, .. } if path == &p), "{err}");
    }

    #[test]
    fn whitespace_only_is_empty() {
        let dir = TempDir::new("ws");
        let err = err(load(&dir.write("w.md", b" \n\t\r\n ")));
        assert!(matches!(&err, Error::Empty { detail, .. } if detail.contains("whitespace")), "{err}");
    }

    #[test]
    fn binary_fixture() {
        let err = err(load(&fixture("bad/binary.txt")));
        assert!(matches!(&err, Error::Binary { detail, .. } if detail.contains("NUL")), "{err}");
        assert!(err.to_string().contains("binary.txt"));
    }

    #[test]
    fn latin1_fixture() {
        let p = fixture("bad/latin1.txt");
        let bytes = std::fs::read(&p).expect("fixture");
        let expected = std::str::from_utf8(&bytes).map_or_else(|e| e.valid_up_to(), |_| usize::MAX);
        let err = err(load(&p));
        assert!(matches!(err, Error::InvalidUtf8 { offset, .. } if offset == expected), "{err}");
    }

    #[test]
    fn invalid_utf8_offset_counts_the_bom() {
        let dir = TempDir::new("utf8");
        let err = err(load(&dir.write("b.html", b"\xEF\xBB\xBF<p>caf\xE9</p>")));
        assert!(matches!(err, Error::InvalidUtf8 { offset: 9, .. }), "{err}");
    }

    #[test]
    fn too_large_is_unsupported() {
        let dir = TempDir::new("big");
        let p = dir.write("big.txt", b"0123456789 abc");
        let opts = LoadOptions::default().with_max_file_bytes(10);
        let err = err(load_path(&p, &opts));
        assert!(
            matches!(&err, Error::Unsupported { detail, .. } if detail.contains("14 bytes") && detail.contains("10 bytes")),
            "{err}"
        );
    }

    #[test]
    fn binary_detection() {
        assert_eq!(is_probably_binary(b""), None);
        assert_eq!(is_probably_binary(b"tab\tsep\r\nline\x0c\x1b[0m"), None);
        assert!(is_probably_binary(b"PK\x03\x04zip").is_some());
        assert!(is_probably_binary(b"\x7fELF").is_some());
        assert!(is_probably_binary(b"\x1f\x8b\x08").is_some());
        assert!(is_probably_binary(b"\xff\xfeh\0i\0").unwrap_or_default().contains("UTF-16"));
        assert!(is_probably_binary(b"\x01\x02\x03\x04abcdefgh").unwrap_or_default().contains("control"));
        // A NUL after the first 8 KiB is not looked at.
        let mut late = vec![b'a'; 9000];
        late.push(0);
        assert_eq!(is_probably_binary(&late), None);
    }

    #[test]
    fn loader_blanket_impls() -> Result<()> {
        let dir = TempDir::new("blanket");
        let p = dir.write("x.txt", b"Hello.");
        let boxed: Box<dyn Loader> = Box::new(FileLoader::default());
        let arc = std::sync::Arc::new(FileLoader::new(LoadOptions::default()));
        assert_eq!(boxed.load(&p)?, (*arc).load(&p)?);
        assert_eq!(boxed.load(&p)?, Loader::load(&&*arc, &p)?);
        Ok(())
    }

    #[test]
    fn example_corpus_loads() -> Result<()> {
        for name in ["washington-1790.txt", "debian-faq-next-release.md", "debian-faq-getting-debian.html"] {
            let doc = load(&example(name))?;
            assert!(doc.text.split_whitespace().count() > 300, "{name} is too short");
        }
        Ok(())
    }
}

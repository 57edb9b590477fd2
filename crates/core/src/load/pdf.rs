//! PDF text extraction (feature `pdf`, with the `pdf-extract` crate).
//!
//! The text of each page is extracted in a separate thread named [`PDF_THREAD_NAME`], under
//! [`std::panic::catch_unwind`] (the parser panics on some malformed files) and a time limit
//! ([`LoadOptions::pdf_timeout`] for parsing the file and for each page, so a long manual that
//! keeps making progress is read whole; on timeout the thread is left to finish in the
//! background).
//! Each page is NFKC-normalised (ligatures such as `ﬁ` become `fi`), control characters are
//! dropped, trailing spaces are trimmed and runs of blank lines collapse to one; pages are
//! joined with a blank line and their byte ranges are recorded in [`Document::pages`]
//! (an empty page gets an empty range). A page the parser cannot read (or panics on) fails
//! the whole file, naming the page, unless [`LoadOptions::pdf_skip_bad_pages`] is set: then
//! such pages are left empty. OCR is not done: an image-only PDF is [`Error::Empty`].
//!
//! Encrypted files that open with the empty user password are read; files that need a
//! password are refused with an [`Error::Pdf`] saying so.
//!
//! ```no_run
//! use metarag_core::load::{load_path, quiet_pdf_panics, LoadOptions};
//!
//! quiet_pdf_panics(); // parser panics become errors, not stderr noise
//! let doc = load_path("paper.pdf".as_ref(), &LoadOptions::default())?;
//! for (i, page) in doc.pages.iter().enumerate() {
//!     println!("page {}: {} bytes", i + 1, page.len());
//! }
//! # Ok::<(), metarag_core::Error>(())
//! ```
//!
//! [`Document::pages`]: crate::Document::pages
//! [`LoadOptions::pdf_timeout`]: super::LoadOptions::pdf_timeout
//! [`LoadOptions::pdf_skip_bad_pages`]: super::LoadOptions::pdf_skip_bad_pages

use std::ops::Range;
use std::path::Path;

use super::LoadOptions;
use crate::{Error, Result};

/// The name of the threads that run PDF extraction (see [`quiet_pdf_panics`]).
pub const PDF_THREAD_NAME: &str = "metarag-pdf-extract";

/// Installs, once per process, a panic hook that stays silent for panics on PDF extraction
/// threads (they are caught and returned as [`Error::Pdf`]) and hands every other panic to
/// the hook that was installed before.
///
/// The library never installs it by itself: call it early in a program that loads PDFs.
///
/// ```
/// metarag_core::load::quiet_pdf_panics();
/// metarag_core::load::quiet_pdf_panics(); // a second call does nothing
/// ```
pub fn quiet_pdf_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(PDF_THREAD_NAME) {
                previous(info);
            }
        }));
    });
}

/// Does the file start with a `%PDF-` header (within the first 1024 bytes, as readers allow)?
pub(crate) fn has_pdf_header(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(1024)].windows(5).any(|w| w == b"%PDF-")
}

/// Extracts the text of a PDF: the joined text and each page's byte range.
#[cfg(not(feature = "pdf"))]
pub(crate) fn load_pdf(path: &Path, _bytes: &[u8], _opts: &LoadOptions) -> Result<(String, Vec<Range<usize>>)> {
    Err(Error::Unsupported {
        path: path.to_path_buf(),
        detail: "PDF: built without PDF support (enable the `pdf` feature)".into(),
    })
}

/// Extracts the text of a PDF: the joined text and each page's byte range.
#[cfg(feature = "pdf")]
pub(crate) fn load_pdf(path: &Path, bytes: &[u8], opts: &LoadOptions) -> Result<(String, Vec<Range<usize>>)> {
    use std::sync::mpsc;

    let pdf_err = |detail: String| Error::Pdf { path: path.to_path_buf(), detail };
    if !has_pdf_header(bytes) {
        return Err(pdf_err("not a PDF (no %PDF header)".into()));
    }
    let encrypted = bytes.windows(8).any(|w| w == b"/Encrypt");

    let (tx, rx) = mpsc::channel();
    let owned = bytes.to_vec();
    let worker = std::thread::Builder::new()
        .name(PDF_THREAD_NAME.into())
        .spawn(move || {
            // The receiver is gone after a timeout; nothing is left to tell.
            extract_pages(&owned, &mut |step| tx.send(step).is_ok());
        })
        .map_err(|e| pdf_err(format!("cannot start the extraction thread: {e}")))?;

    // The limit applies to each step (parsing the file, then each page), so a 2,000-page
    // manual that keeps making progress is read whole while a hang is still cut short.
    let mut pages = Vec::new();
    let mut expected = None;
    let outcome = loop {
        match rx.recv_timeout(opts.pdf_timeout) {
            Ok(Step::Parsed(n)) => {
                expected = Some(n);
                pages.reserve(n);
            }
            Ok(Step::Page(page)) => pages.push(page),
            Ok(Step::Failed(e)) => break Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(Error::Timeout {
                    path: path.to_path_buf(),
                    seconds: opts.pdf_timeout.as_secs_f64().ceil() as u64,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        }
    };
    // It has finished (or died): wait for its exit, so that nothing of it (thread-local
    // destructors included) outlives this call. Only a timed-out thread is left behind.
    let _ = worker.join();
    match outcome {
        Err(e) if encrypted => {
            return Err(pdf_err(format!(
                "the PDF is encrypted and needs a password (password-protected); decrypt it first, \
                 e.g. `qpdf --decrypt --password=… in.pdf out.pdf` ({e})"
            )));
        }
        Err(e) => return Err(pdf_err(e)),
        Ok(()) if expected != Some(pages.len()) => {
            return Err(pdf_err("the extraction thread ended without a result".into()));
        }
        Ok(()) => {}
    }

    let first_page_error = pages.iter().find_map(|p| p.as_ref().err().cloned());
    if let Some(e) = &first_page_error
        && !opts.pdf_skip_bad_pages
    {
        return Err(pdf_err(format!(
            "{e} ({} page(s) in all; set `pdf_skip_bad_pages` to keep the readable pages)",
            pages.len()
        )));
    }
    let (text, ranges) = join_pages(pages.into_iter().map(|p| p.map(|t| clean_page(&t)).unwrap_or_default()));
    if text.is_empty() {
        return Err(match first_page_error {
            Some(e) => pdf_err(format!("no page could be read: {e}")),
            None => Error::Empty {
                path: path.to_path_buf(),
                detail: format!(
                    "no extractable text in {} page(s) (image-only PDF? OCR is not supported)",
                    ranges.len()
                ),
            },
        });
    }
    Ok((text, ranges))
}

/// What the extraction thread reports, step by step.
#[cfg(feature = "pdf")]
enum Step {
    /// The file is parsed and has this many pages.
    Parsed(usize),
    /// The next page's raw text, or what went wrong with it.
    Page(std::result::Result<String, String>),
    /// The file cannot be read at all.
    Failed(String),
}

/// Runs the parser, handing each step to `report` (which returns false when nobody listens
/// any more). Panics are caught per page, so one bad page does not lose the others.
#[cfg(feature = "pdf")]
fn extract_pages(bytes: &[u8], report: &mut dyn FnMut(Step) -> bool) {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    let caught =
        |payload: Box<dyn std::any::Any + Send>| format!("the PDF parser panicked: {}", panic_message(&*payload));
    let doc = catch_unwind(|| {
        let mut doc = pdf_extract::Document::load_mem(bytes).map_err(|e| format!("cannot parse: {e}"))?;
        if doc.is_encrypted() {
            doc.decrypt("").map_err(|e| format!("cannot decrypt with the empty password: {e}"))?;
        }
        Ok::<_, String>(doc)
    })
    .map_err(caught)
    .and_then(|r| r);
    let doc = match doc {
        Ok(doc) => doc,
        Err(e) => {
            report(Step::Failed(e));
            return;
        }
    };
    let pages = doc.get_pages();
    if pages.is_empty() {
        report(Step::Failed("the document has no pages".into()));
        return;
    }
    if !report(Step::Parsed(pages.len())) {
        return;
    }
    for &number in pages.keys() {
        // The document is only read, so it stays consistent if a page panics.
        let page = catch_unwind(AssertUnwindSafe(|| {
            let mut sink = LogicalText::default();
            pdf_extract::output_doc_page(&doc, &mut sink, number).map(|()| sink.finish()).map_err(|e| e.to_string())
        }))
        .map_err(caught)
        .and_then(|r| r)
        .map_err(|e| format!("page {number}: {e}"));
        if !report(Step::Page(page)) {
            return;
        }
    }
}

/// pdf-extract's plain-text layout (a space where glyphs leave a gap, a line break where the
/// baseline moves), except that each line is collected glyph by glyph and written in reading
/// order ([`super::bidi::visual_to_logical`]): PDFs paint Hebrew and Arabic right to left.
#[cfg(feature = "pdf")]
#[derive(Default)]
struct LogicalText {
    out: String,
    line: Vec<String>,
    page_height: f64,
    last_end: f64,
    last_y: f64,
    first_char: bool,
}

#[cfg(feature = "pdf")]
impl LogicalText {
    fn end_line(&mut self) {
        self.out.push_str(&super::bidi::visual_to_logical(&self.line));
        self.line.clear();
    }

    fn finish(mut self) -> String {
        self.end_line();
        self.out
    }
}

#[cfg(feature = "pdf")]
impl pdf_extract::OutputDev for LogicalText {
    fn begin_page(
        &mut self,
        _page: u32,
        media_box: &pdf_extract::MediaBox,
        _art_box: Option<(f64, f64, f64, f64)>,
    ) -> std::result::Result<(), pdf_extract::OutputError> {
        self.page_height = media_box.ury - media_box.lly;
        self.last_end = 100_000.0;
        Ok(())
    }

    fn end_page(&mut self) -> std::result::Result<(), pdf_extract::OutputError> {
        Ok(())
    }

    fn output_character(
        &mut self,
        trm: &pdf_extract::Transform,
        width: f64,
        _spacing: f64,
        font_size: f64,
        text: &str,
    ) -> std::result::Result<(), pdf_extract::OutputError> {
        // position in a y-down page; the font size as the side of a square of the same area
        let (x, y) = (trm.m31, self.page_height - trm.m32);
        let size = (font_size * (trm.m11 + trm.m21) * font_size * (trm.m12 + trm.m22)).abs().sqrt();
        if self.first_char {
            // as pdf-extract: a big move down is a blank line (two breaks), a move back left
            // and down a line break, a gap to the right a space
            let moved = (y - self.last_y).abs();
            let breaks = usize::from(moved > size * 1.5) + usize::from(x < self.last_end && moved > size * 0.5);
            if breaks > 0 {
                self.end_line();
                self.out.push_str(&"\n".repeat(breaks));
            }
            if x > self.last_end + size * 0.1 {
                self.line.push(" ".into());
            }
        }
        self.line.push(text.to_owned());
        self.first_char = false;
        self.last_y = y;
        self.last_end = x + width * size;
        Ok(())
    }

    fn begin_word(&mut self) -> std::result::Result<(), pdf_extract::OutputError> {
        self.first_char = true;
        Ok(())
    }

    fn end_word(&mut self) -> std::result::Result<(), pdf_extract::OutputError> {
        Ok(())
    }

    fn end_line(&mut self) -> std::result::Result<(), pdf_extract::OutputError> {
        Ok(())
    }
}

#[cfg(feature = "pdf")]
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// Joins cleaned pages with a blank line; returns the text and each page's range.
#[cfg_attr(not(feature = "pdf"), allow(dead_code))]
fn join_pages(pages: impl IntoIterator<Item = String>) -> (String, Vec<Range<usize>>) {
    let mut text = String::new();
    let mut ranges = Vec::new();
    for page in pages {
        if page.is_empty() {
            ranges.push(text.len()..text.len());
            continue;
        }
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let start = text.len();
        text.push_str(&page);
        ranges.push(start..text.len());
    }
    (text, ranges)
}

/// Cleans one page: NFKC, LF line endings, no control characters but `\n` and `\t`, no
/// trailing spaces, at most one blank line in a row, no blank lines at either end.
#[cfg_attr(not(feature = "pdf"), allow(dead_code))]
fn clean_page(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;

    let normalized: String =
        super::text::normalize_newlines(raw).nfkc().filter(|&c| !c.is_control() || c == '\n' || c == '\t').collect();
    let mut out = String::with_capacity(normalized.len());
    let mut newlines = 0;
    for line in normalized.split('\n') {
        let line = line.trim_end();
        if line.is_empty() {
            newlines += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if newlines >= 2 { "\n\n" } else { "\n" });
        }
        newlines = 1;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean_page("\n\n  ﬁne  \r\nline\u{0}two\t \n\n\n\nnext\x0c\n\n"), "  fine\nlinetwo\n\nnext");
        assert_eq!(clean_page("a\n\nb"), "a\n\nb");
        assert_eq!(clean_page("a\n \nb"), "a\n\nb");
        assert_eq!(clean_page(" \n\n "), "");
        assert_eq!(clean_page("Ⅸ ㎏ ２"), "IX kg 2");
    }

    #[test]
    fn joining() {
        let (text, ranges) = join_pages(["one".to_owned(), String::new(), "two".to_owned()]);
        assert_eq!(text, "one\n\ntwo");
        assert_eq!(ranges, vec![0..3, 3..3, 5..8]);
        assert_eq!(&text[ranges[2].clone()], "two");
    }

    #[test]
    fn header() {
        assert!(has_pdf_header(b"%PDF-1.7\n"));
        assert!(has_pdf_header(b"junk\n%PDF-1.4"));
        assert!(!has_pdf_header(b"hello"));
    }

    #[cfg(not(feature = "pdf"))]
    #[test]
    fn without_feature() {
        let p = crate::load::tests::example("moby-dick-loomings.pdf");
        let err = crate::load::tests::err(crate::load::load_path(&p, &LoadOptions::default()));
        assert!(
            matches!(&err, Error::Unsupported { detail, .. } if detail.contains("enable the `pdf` feature")),
            "{err}"
        );
    }

    #[cfg(feature = "pdf")]
    mod with_pdf {
        use std::time::Duration;

        use super::*;
        use crate::DocKind;
        use crate::load::load_path;
        use crate::load::tests::{TempDir, err, example, fixture};

        fn load(p: &Path) -> Result<crate::Document> {
            quiet_pdf_panics();
            load_path(p, &LoadOptions::default())
        }

        #[test]
        fn example_pdf() -> Result<()> {
            let p = example("moby-dick-loomings.pdf");
            let doc = load(&p)?;
            assert_eq!(doc.kind, DocKind::Pdf);
            assert!(doc.pages.len() >= 3, "{} pages", doc.pages.len());
            assert!(doc.text.contains("Call me Ishmael."));
            // Page ranges are in order, within the text, and separated by a blank line.
            let mut at = 0;
            for (i, r) in doc.pages.iter().enumerate() {
                assert!(r.start >= at && r.end <= doc.text.len(), "page {i}: {r:?}");
                if i > 0 && !r.is_empty() {
                    assert_eq!(&doc.text[r.start - 2..r.start], "\n\n");
                }
                at = r.end;
            }
            assert_eq!(at, doc.text.len());
            assert!(!doc.text.contains('\r') && !doc.text.contains("\n\n\n"));
            Ok(())
        }

        #[test]
        fn right_to_left_lines_come_out_in_reading_order() -> Result<()> {
            let doc = load(&fixture("rtl/whales-he-ar.pdf"))?;
            for line in [
                "Whales of the world, in three scripts.",
                "הלווייתן הכחול הוא היונק הגדול ביותר שחי אי פעם.",
                "אורכו מגיע עד 30 מטרים ומשקלו עד 200 טון.",
                "الحوت الأزرق هو أكبر حيوان عاش على الأرض.",
                "يصل طوله إلى 30 مترا.",
            ] {
                assert!(doc.text.contains(line), "{line:?} not in {:?}", doc.text);
            }
            Ok(())
        }

        #[test]
        fn left_to_right_text_is_unchanged_from_pdf_extract() {
            let doc = pdf_extract::Document::load(example("moby-dick-loomings.pdf")).expect("load");
            for (&n, _) in doc.get_pages().iter() {
                let mut plain = String::new();
                pdf_extract::output_doc_page(&doc, &mut pdf_extract::PlainTextOutput::new(&mut plain), n)
                    .expect("plain");
                let mut ours = LogicalText::default();
                pdf_extract::output_doc_page(&doc, &mut ours, n).expect("ours");
                assert_eq!(ours.finish(), plain, "page {n}");
            }
        }

        #[test]
        fn truncated_pdf_is_an_error() {
            let e = err(load(&fixture("bad/truncated.pdf")));
            assert!(matches!(e, Error::Pdf { .. } | Error::Empty { .. }), "{e}");
            assert!(e.to_string().contains("truncated.pdf"));
        }

        #[test]
        fn encrypted_pdf_is_an_error() {
            let e = err(load(&fixture("bad/encrypted.pdf")));
            assert!(matches!(&e, Error::Pdf { detail, .. } if detail.contains("password")), "{e}");
        }

        #[test]
        fn not_a_pdf() {
            let dir = TempDir::new("notpdf");
            let e = err(load(&dir.write("x.pdf", b"hello, not a pdf")));
            assert!(matches!(&e, Error::Pdf { detail, .. } if detail.contains("no %PDF header")), "{e}");
        }

        #[test]
        fn garbage_after_header() {
            let dir = TempDir::new("garbage");
            let e = err(load(&dir.write("g.pdf", b"%PDF-1.4\n\x00\x01 garbage garbage\n%%EOF")));
            assert!(matches!(e, Error::Pdf { .. }), "{e}");
        }

        #[test]
        fn sniffed_without_extension() -> Result<()> {
            let dir = TempDir::new("pdfsniff");
            let bytes = std::fs::read(example("moby-dick-loomings.pdf"))
                .map_err(|source| Error::Io { path: "example".into(), source })?;
            let doc = load(&dir.write("download", &bytes))?;
            assert_eq!(doc.kind, DocKind::Pdf);
            Ok(())
        }

        #[test]
        fn timeout() {
            let p = example("moby-dick-loomings.pdf");
            let opts = LoadOptions::default().with_pdf_timeout(Duration::from_nanos(1));
            let e = err(load_path(&p, &opts));
            assert!(matches!(e, Error::Timeout { seconds: 1, .. }), "{e}");
        }

        /// A small valid PDF: one page per entry, each showing its text in Helvetica (an
        /// empty entry draws a line and no text).
        fn tiny_pdf(pages: &[&str]) -> Vec<u8> {
            let mut objects = vec![
                "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
                String::new(), // the page tree, filled in below
                "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
            ];
            let mut kids = Vec::new();
            for text in pages {
                let content = if text.is_empty() {
                    "10 10 m 200 200 l S".to_owned()
                } else {
                    format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET")
                };
                let page_id = objects.len() + 1;
                kids.push(format!("{page_id} 0 R"));
                objects.push(format!(
                    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
                     /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                    page_id + 1
                ));
                objects.push(format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()));
            }
            objects[1] = format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len());
            let mut out = b"%PDF-1.4\n".to_vec();
            let mut offsets = Vec::new();
            for (i, body) in objects.iter().enumerate() {
                offsets.push(out.len());
                out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
            }
            let xref = out.len();
            out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
            for off in offsets {
                out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
            }
            out.extend_from_slice(
                format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1)
                    .as_bytes(),
            );
            out
        }

        #[test]
        fn page_ranges_with_a_blank_page() -> Result<()> {
            let dir = TempDir::new("tiny");
            let doc = load(&dir.write("t.pdf", &tiny_pdf(&["Hello world.", "", "Second page."])))?;
            assert_eq!(doc.text, "Hello world.\n\nSecond page.");
            assert_eq!(doc.pages, vec![0..12, 12..12, 14..26]);
            Ok(())
        }

        #[test]
        fn image_only_pdf_is_empty() {
            let dir = TempDir::new("tiny-empty");
            let e = err(load(&dir.write("blank.pdf", &tiny_pdf(&["", ""]))));
            assert!(
                matches!(&e, Error::Empty { detail, .. } if detail.contains("OCR") && detail.contains("2 page")),
                "{e}"
            );
        }

        /// The example PDF with 8 bytes overwritten, chosen by `seed`.
        fn mutated(bytes: &[u8], seed: u64) -> Vec<u8> {
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut m = bytes.to_vec();
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % m.len() as u64) as usize;
                m[at] = (state >> 32) as u8;
            }
            m
        }

        #[test]
        fn damaged_pdfs_give_errors_not_panics() -> Result<()> {
            quiet_pdf_panics();
            let bytes = std::fs::read(example("moby-dick-loomings.pdf"))
                .map_err(|source| Error::Io { path: "example".into(), source })?;
            let dir = TempDir::new("mutated");
            let strict = LoadOptions::default();
            let lenient = LoadOptions { pdf_skip_bad_pages: true, ..LoadOptions::default() };
            let (mut saw_panic, mut saw_partial) = (false, false);
            for seed in 1..60 {
                let p = dir.write(&format!("m{seed}.pdf"), &mutated(&bytes, seed));
                // Never a panic; an error names the file.
                let Err(e) = load_path(&p, &strict) else {
                    continue;
                };
                assert!(e.to_string().contains(&format!("m{seed}.pdf")), "{e}");
                saw_panic |= matches!(&e, Error::Pdf { detail, .. } if detail.contains("panicked"));
                if let Error::Pdf { detail, .. } = &e
                    && detail.contains("pdf_skip_bad_pages")
                    && let Ok(doc) = load_path(&p, &lenient)
                {
                    // The readable pages are kept, the bad ones are empty.
                    assert!(!doc.pages.is_empty());
                    assert!(doc.pages.iter().any(|r| r.is_empty()));
                    assert!(!doc.text.is_empty());
                    saw_partial = true;
                }
                if saw_panic && saw_partial {
                    return Ok(());
                }
            }
            panic!("no seed gave a caught panic ({saw_panic}) and a partial document ({saw_partial})");
        }
    }
}

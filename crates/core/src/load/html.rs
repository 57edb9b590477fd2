//! HTML to plain text.
//!
//! Only the text content is kept. `<script>`, `<style>`, `<noscript>`, `<template>`, `<svg>`
//! and the head's metadata are dropped; the `<title>` becomes the first line. Block elements
//! end lines (paragraph-level ones with a blank line, `<br>`, `<li>`, `<tr>`, `<dt>`, `<dd>`
//! and `<div>` with a single newline); runs of whitespace in ordinary text collapse to one
//! space, `<pre>` keeps its whitespace; character references are decoded.
//!
//! ```
//! let text = metarag_core::load::html_to_text(
//!     "<html><head><title>Doc</title><style>p{}</style></head>\
//!      <body><h1>Intro</h1><p>Fish &amp;\n   chips.</p><ul><li>one</li><li>two</li></ul></body></html>",
//! );
//! assert_eq!(text, "Doc\n\nIntro\n\nFish & chips.\n\none\ntwo");
//! ```

use std::borrow::Cow;
use std::path::Path;

use crate::{Error, Result};

/// Elements whose content is never text.
const SKIP: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "math", "meta", "link", "base", "object", "iframe", "canvas",
    "select", "datalist",
];

/// Elements that start and end a paragraph (a blank line).
const PARAGRAPH: &[&str] = &[
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "pre",
    "blockquote",
    "table",
    "ul",
    "ol",
    "dl",
    "header",
    "footer",
    "hr",
    "main",
    "nav",
    "aside",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "address",
    "details",
    "summary",
    "caption",
    "body",
    "html",
    "center",
];

/// Elements that start and end a line.
const LINE: &[&str] = &["br", "li", "tr", "dt", "dd", "div", "option", "legend"];

/// Table cells: separated by a space.
const CELL: &[&str] = &["td", "th"];

/// Extracts the text of an HTML document (see the module docs for the rules).
///
/// Never fails: malformed markup gives the best text it can. Inputs of 4 GiB or more are
/// beyond the parser; they give an empty string.
pub fn html_to_text(html: &str) -> String {
    extract(Path::new("<html>"), html).unwrap_or_default()
}

/// [`html_to_text`] with errors that name the file.
pub(crate) fn extract(path: &Path, html: &str) -> Result<String> {
    let cleaned = strip_raw_text_elements(html);
    let dom = tl::parse(&cleaned, tl::ParserOptions::default())
        .map_err(|e| Error::Unsupported { path: path.to_path_buf(), detail: format!("HTML parser: {e}") })?;
    let parser = dom.parser();

    enum Work {
        Node(tl::NodeHandle),
        Close { breaks: u8, pre: bool, title: bool },
    }

    let mut out = TextSink::default();
    let mut title = TextSink::default();
    let mut pre_depth = 0usize;
    let mut title_depth = 0usize;
    let mut stack: Vec<Work> = dom.children().iter().rev().map(|&h| Work::Node(h)).collect();
    while let Some(work) = stack.pop() {
        let handle = match work {
            Work::Node(h) => h,
            Work::Close { breaks, pre, title: t } => {
                pre_depth -= usize::from(pre);
                title_depth -= usize::from(t);
                out.block(breaks);
                continue;
            }
        };
        let Some(node) = handle.get(parser) else {
            continue;
        };
        let title_seen = title_depth > 0 || !title.is_empty();
        let sink = if title_depth > 0 { &mut title } else { &mut out };
        match node {
            tl::Node::Comment(_) => {}
            tl::Node::Raw(bytes) => {
                let raw = bytes.as_utf8_str();
                let decoded = html_escape::decode_html_entities(&*raw);
                sink.text(&decoded, pre_depth > 0 && title_depth == 0);
            }
            tl::Node::Tag(tag) => {
                let name = tag.name().as_utf8_str().to_ascii_lowercase();
                // The parser keeps the slash of `<br/>` in the name.
                let name = name.trim_end_matches('/');
                if SKIP.contains(&name) {
                    continue;
                }
                let is_title = name == "title";
                if is_title && title_seen {
                    // A second title (or one nested in another) is ignored.
                    continue;
                }
                let breaks = if PARAGRAPH.contains(&name) {
                    2
                } else if LINE.contains(&name) {
                    1
                } else {
                    0
                };
                if CELL.contains(&name) {
                    sink.space();
                }
                sink.block(breaks);
                let pre = matches!(name, "pre" | "textarea" | "listing");
                if pre {
                    // Browsers drop one newline right after `<pre>`.
                    sink.skip_newline = true;
                }
                pre_depth += usize::from(pre);
                title_depth += usize::from(is_title);
                stack.push(Work::Close { breaks, pre, title: is_title });
                stack.extend(tag.children().top().as_slice().iter().rev().map(|&h| Work::Node(h)));
            }
        }
    }

    let body = out.finish();
    let title = title.finish();
    let title = title.trim();
    Ok(match (title.is_empty(), body.is_empty()) {
        (true, _) => body,
        (false, true) => title.to_owned(),
        (false, false) => format!("{title}\n\n{body}"),
    })
}

/// Accumulates text with collapsed whitespace and pending line breaks.
#[derive(Default)]
struct TextSink {
    out: String,
    /// Newlines owed before the next text (0, 1 or 2).
    pending_breaks: u8,
    /// A space is owed before the next text.
    pending_space: bool,
    /// Drop one leading newline of the next preformatted text.
    skip_newline: bool,
}

impl TextSink {
    fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    fn block(&mut self, breaks: u8) {
        if breaks > 0 {
            self.pending_breaks = self.pending_breaks.max(breaks);
            self.pending_space = false;
        }
    }

    fn space(&mut self) {
        if self.pending_breaks == 0 && !self.out.is_empty() {
            self.pending_space = true;
        }
    }

    /// Writes what is owed before the next visible text.
    fn flush(&mut self) {
        if self.out.is_empty() {
            self.pending_breaks = 0;
            self.pending_space = false;
            return;
        }
        if self.pending_breaks > 0 {
            let kept = self.out.trim_end_matches([' ', '\t']).len();
            self.out.truncate(kept);
            let have = self.out.len() - self.out.trim_end_matches('\n').len();
            for _ in have..usize::from(self.pending_breaks) {
                self.out.push('\n');
            }
        } else if self.pending_space && !self.out.ends_with(char::is_whitespace) {
            self.out.push(' ');
        }
        self.pending_breaks = 0;
        self.pending_space = false;
    }

    fn text(&mut self, text: &str, pre: bool) {
        if pre {
            let mut text: Cow<'_, str> = if text.contains('\r') {
                Cow::Owned(super::text::normalize_newlines(text))
            } else {
                Cow::Borrowed(text)
            };
            if std::mem::take(&mut self.skip_newline)
                && let Some(rest) = text.strip_prefix('\n')
            {
                text = Cow::Owned(rest.to_owned());
            }
            if text.is_empty() {
                return;
            }
            self.flush();
            self.out.push_str(&text);
            return;
        }
        self.skip_newline = false;
        for word in text.split(char::is_whitespace) {
            if word.is_empty() {
                self.space();
                continue;
            }
            self.flush();
            self.out.push_str(word);
            self.pending_space = true;
        }
        // The last word owes no space unless whitespace followed it.
        if !text.ends_with(char::is_whitespace) {
            self.pending_space = false;
        }
    }

    fn finish(self) -> String {
        let text = self.out.trim_end();
        text.trim_start_matches(['\n', '\r']).to_owned()
    }
}

/// Removes what the tree parser would misread: `<script>` and `<style>` elements with their
/// raw content (which may hold `<`), comments, `<!DOCTYPE …>`-like declarations and `<?…?>`
/// processing instructions.
fn strip_raw_text_elements(html: &str) -> Cow<'_, str> {
    let bytes = html.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'<') {
        let at = i + off;
        let rest = &bytes[at + 1..];
        let end = if rest.starts_with(b"!--") {
            find(bytes, at + 4, b"-->").map_or(bytes.len(), |e| e + 3)
        } else if rest.starts_with(b"!") || rest.starts_with(b"?") {
            bytes[at..].iter().position(|&b| b == b'>').map_or(bytes.len(), |g| at + g + 1)
        } else if let Some(name) =
            [b"script".as_slice(), b"style".as_slice()].into_iter().find(|name| starts_tag(rest, name))
        {
            let open_end = bytes[at..].iter().position(|&b| b == b'>').map_or(bytes.len(), |g| at + g + 1);
            if bytes[..open_end].ends_with(b"/>") {
                // `<script src=x />`: no content.
                open_end
            } else {
                let mut close = b"</".to_vec();
                close.extend_from_slice(name);
                match find_ci(bytes, open_end, &close) {
                    Some(c) => bytes[c..].iter().position(|&b| b == b'>').map_or(bytes.len(), |g| c + g + 1),
                    None => bytes.len(),
                }
            }
        } else {
            i = at + 1;
            continue;
        };
        let buf = out.get_or_insert_with(|| String::with_capacity(html.len()));
        buf.push_str(&html[copied..at]);
        copied = end;
        i = end;
    }
    match out {
        None => Cow::Borrowed(html),
        Some(mut buf) => {
            buf.push_str(&html[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// Does `s` start with the tag name `name` (case-insensitive), followed by the end of the name?
fn starts_tag(s: &[u8], name: &[u8]) -> bool {
    s.len() > name.len()
        && s[..name.len()].eq_ignore_ascii_case(name)
        && matches!(s[name.len()], b'>' | b'/' | b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| from + p)
}

fn find_ci(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle)).map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_inline() {
        assert_eq!(html_to_text("<p>One <b>bold</b>  word.</p><p>Two</p>"), "One bold word.\n\nTwo");
        assert_eq!(html_to_text("a<br>b<br/>c"), "a\nb\nc");
        assert_eq!(html_to_text("<div>x</div><div>y</div>"), "x\ny");
        assert_eq!(html_to_text("<h1>T</h1>\n\n  <p>\n  body\n  text\n</p>"), "T\n\nbody text");
        assert_eq!(html_to_text("<ul>\n<li>a</li>\n<li>b</li>\n</ul><p>c</p>"), "a\nb\n\nc");
        assert_eq!(html_to_text("<table><tr><td>1</td><td>2</td></tr><tr><td>3</td></tr></table>"), "1 2\n3");
        assert_eq!(html_to_text("x<hr>y"), "x\n\ny");
        assert_eq!(html_to_text("in<i>line</i>word"), "inlineword");
    }

    #[test]
    fn entities() {
        assert_eq!(
            html_to_text("<p>a &lt;b&gt; &amp; &quot;c&quot; &#8212; &#x263A; caf&eacute;</p>"),
            "a <b> & \"c\" — ☺ café"
        );
        // A no-break space is whitespace: it collapses like any other.
        assert_eq!(html_to_text("<p>a&nbsp;&nbsp;b</p>"), "a b");
    }

    #[test]
    fn skipped_elements() {
        let html = "<html><head><meta charset=utf-8><title>My  Page</title><link rel=x>\
                    <style>p { color: red }</style><script>if (a<b) { x = '</p>'; }</script></head>\
                    <body><noscript>enable js</noscript><template><p>t</p></template>\
                    <svg><text>svg text</text></svg><p>Visible</p><!-- hidden --></body></html>";
        assert_eq!(html_to_text(html), "My Page\n\nVisible");
    }

    #[test]
    fn script_case_and_unclosed() {
        assert_eq!(html_to_text("<p>a</p><SCRIPT type=x>1<2</SCRIPT ><p>b</p>"), "a\n\nb");
        assert_eq!(html_to_text("<p>a</p><script>never closed <p>c</p>"), "a");
        assert_eq!(html_to_text("<p>a <!-- <script> --> b</p>"), "a b");
        assert_eq!(html_to_text("<p>a</p><script src=\"x.js\"/><p>b</p>"), "a\n\nb");
    }

    #[test]
    fn missing_head_close_keeps_body() {
        assert_eq!(html_to_text("<html><head><title>T</title><body><p>Body text</p></body></html>"), "T\n\nBody text");
    }

    #[test]
    fn unclosed_paragraphs_nest_without_overflow() {
        let html = "<p>para ".repeat(100_000);
        let text = html_to_text(&html);
        assert_eq!(text.matches("para").count(), 100_000);
        assert!(text.starts_with("para\n\npara"));
    }

    #[test]
    fn pre_keeps_whitespace() {
        assert_eq!(
            html_to_text("<p>x</p><pre>\nfn  main() {\n    y\n}</pre><p>z</p>"),
            "x\n\nfn  main() {\n    y\n}\n\nz"
        );
        assert_eq!(html_to_text("<pre>a &amp; b\r\n  c</pre>"), "a & b\n  c");
    }

    #[test]
    fn title_only_and_empty() {
        assert_eq!(html_to_text("<title>Only</title>"), "Only");
        assert_eq!(html_to_text("<html><body> \n </body></html>"), "");
        assert_eq!(html_to_text(""), "");
        assert_eq!(html_to_text("<title>A</title><title>B</title><p>x</p>"), "A\n\nx");
    }

    #[test]
    fn plain_text_passes_through() {
        assert_eq!(html_to_text("just   text\nhere"), "just text here");
    }

    #[test]
    fn xml_prologue_and_doctype() {
        let html = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0\" \"x.dtd\">\
                    <html xmlns=\"http://www.w3.org/1999/xhtml\"><head><title>X</title></head><body><p>Y</p></body></html>";
        assert_eq!(html_to_text(html), "X\n\nY");
    }

    #[test]
    fn example_faq_chapter() -> Result<()> {
        let path = super::super::tests::example("debian-faq-getting-debian.html");
        let html = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let text = extract(&path, &html)?;
        assert!(text.starts_with("Chapter 2. Getting and installing Debian GNU/Linux\n\n"), "{}", &text[..200]);
        assert!(!text.contains("</") && !text.contains("<p"), "markup left in the text");
        assert!(!text.contains("background-repeat"), "style content leaked");
        assert!(!text.contains("\n\n\n"));
        Ok(())
    }
}

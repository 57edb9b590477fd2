//! Sentence splitting with byte spans.
//!
//! A [`SentenceSplitter`] cuts a text into sentences given as byte ranges that tile the text
//! exactly: every byte belongs to exactly one sentence, so `text[span]` pieces joined give the
//! text back. Whitespace between two sentences belongs to the FOLLOWING sentence (as a leading
//! space, the way BPE tokenizers see it); whitespace at the very end belongs to the last one.
//!
//! [`RuleSplitter`] is the built-in rule-based splitter: English terminators (`.` `!` `?`,
//! ellipses) with abbreviation, initial, decimal and file-name guards; Chinese and Japanese
//! full-width terminators (`。！？；`); paragraph breaks; Markdown headings and list items;
//! and a size cap that cuts over-long sentences at clause punctuation or whitespace.
//!
//! ```
//! use metarag_core::split::{RuleSplitter, SentenceSplitter};
//!
//! let text = "Dr. Smith paid $3.50 at 10 a.m. today. Then he left!\n\n# Notes\n- one\n- two";
//! let spans = RuleSplitter::default().split(text);
//! let sentences: Vec<&str> = spans.iter().map(|s| &text[s.clone()]).collect();
//! assert_eq!(
//!     sentences,
//!     ["Dr. Smith paid $3.50 at 10 a.m. today.", " Then he left!", "\n\n# Notes", "\n- one", "\n- two"]
//! );
//! assert!(metarag_core::tiles(&spans, text.len()));
//! ```

use std::ops::Range;

use serde::{Deserialize, Serialize};

mod long;
use long::{Limits, split_long};

/// Splits a text into sentences, as byte spans.
///
/// Contract for implementations: the spans are in order, non-empty, on `char` boundaries and
/// tile `0..text.len()` exactly ([`crate::tiles`] holds); empty text gives no span; every span
/// holds at least one non-whitespace character, except the single span of a text made only
/// of whitespace; the result depends only on the text (deterministic).
pub trait SentenceSplitter: Send + Sync {
    /// The sentence spans of `text`.
    fn split(&self, text: &str) -> Vec<Range<usize>>;
}

impl<T: SentenceSplitter + ?Sized> SentenceSplitter for &T {
    fn split(&self, text: &str) -> Vec<Range<usize>> {
        (**self).split(text)
    }
}

impl<T: SentenceSplitter + ?Sized> SentenceSplitter for Box<T> {
    fn split(&self, text: &str) -> Vec<Range<usize>> {
        (**self).split(text)
    }
}

impl<T: SentenceSplitter + ?Sized> SentenceSplitter for std::sync::Arc<T> {
    fn split(&self, text: &str) -> Vec<Range<usize>> {
        (**self).split(text)
    }
}

/// The rule-based sentence splitter.
///
/// Rules, in short:
/// - English: a run of terminators (`.` `!` `?` `…`), optionally followed by closing quotes
///   or brackets, then whitespace, may end a sentence. After `!`, `?` or an ellipsis it does
///   unless the next word starts with a lowercase letter (`"Where?" he asked.`). A single
///   `.` ends the sentence whatever follows (as NLTK's Punkt does: `cats purr. cats nap.` is
///   two sentences) except: after a common abbreviation (`Mr.`, `e.g.`, `Fig.`, `Jan.`, …);
///   after `No.`/`p.` before a number; after a capital-letter initial (`J. R. R. Tolkien`),
///   a dotted acronym (`U.S.`) or an abbreviation that can end a sentence (`etc.`, `Inc.`,
///   `a.m.`), unless a typical sentence opener (`The`, `It`, …) follows; after a list or
///   section number at the start of a line (`1. x`, `2.1. Title`, `Chapter 2. Title`); and
///   before `,` `;` `:` `)` and the like. Dots inside tokens (`3.14`, `v1.2.3`,
///   `example.com`, `main.rs`) never split.
/// - Chinese/Japanese: `。！？；` (and full-width `！？`) end a sentence without whitespace.
/// - A blank line always ends a sentence. A Markdown heading line (never cut by its own
///   punctuation) and a list item line (`- x`, `* x`, `+ x`, `1. x`, `1) x`, with indented
///   continuation lines) are sentences of their own; so is a line followed by a heading or
///   list item; a single newline in an ordinary paragraph does not split.
/// - A sentence longer than `max_words` whitespace-separated words or `max_bytes` bytes
///   (leading whitespace not counted) is cut into pieces that fit, at the last clause mark
///   (`,` `;` `:` `—` followed by a space, or `，、；：`) in the second half of the allowed
///   window, else at the last whitespace, else at a character boundary. No byte is lost.
///   A piece can only exceed `max_bytes` when a single character is larger. `0` means no
///   limit.
///
/// ```
/// use metarag_core::split::{RuleSplitter, SentenceSplitter};
/// let text = "天气很好。我们去公园吧！好的";
/// let parts: Vec<&str> = RuleSplitter::default().split(text).into_iter().map(|s| &text[s]).collect();
/// assert_eq!(parts, ["天气很好。", "我们去公园吧！", "好的"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSplitter {
    /// Longest sentence in whitespace-separated words (default 200; 0 = no limit).
    pub max_words: usize,
    /// Longest sentence in bytes, leading whitespace not counted (default 2000; 0 = no limit).
    pub max_bytes: usize,
}

impl Default for RuleSplitter {
    fn default() -> Self {
        RuleSplitter { max_words: 200, max_bytes: 2000 }
    }
}

impl RuleSplitter {
    /// Sets the word cap (0 = no limit).
    pub fn with_max_words(mut self, max_words: usize) -> Self {
        self.max_words = max_words;
        self
    }

    /// Sets the byte cap (0 = no limit).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

impl SentenceSplitter for RuleSplitter {
    fn split(&self, text: &str) -> Vec<Range<usize>> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut cuts = Vec::new();
        line_cuts(text, &mut cuts);
        punct_cuts(text, &mut cuts);
        cuts.sort_unstable();
        cuts.dedup();

        let sentences = spans_from_cuts(text, &cuts);
        let limits = Limits {
            words: if self.max_words == 0 { usize::MAX } else { self.max_words },
            bytes: if self.max_bytes == 0 { usize::MAX } else { self.max_bytes },
        };
        let mut out = Vec::with_capacity(sentences.len());
        for span in sentences {
            split_long(text, span, limits, &mut out);
        }
        out
    }
}

/// Turns sorted cut positions into spans; a span without any non-whitespace character is
/// merged into the following span (or, at the end, into the previous one).
fn spans_from_cuts(text: &str, cuts: &[usize]) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        if cut <= start || cut >= text.len() || !text.is_char_boundary(cut) {
            continue;
        }
        if has_content(&text[start..cut]) {
            spans.push(start..cut);
            start = cut;
        }
    }
    match spans.last_mut() {
        Some(last) if !has_content(&text[start..]) => last.end = text.len(),
        _ => spans.push(start..text.len()),
    }
    spans
}

fn has_content(s: &str) -> bool {
    s.chars().any(|c| !c.is_whitespace())
}

// ---------------------------------------------------------------------------------------
// Line structure: paragraphs, headings, list items.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Blank,
    Heading,
    Item,
    Normal,
}

fn classify_line(line: &str) -> LineKind {
    let trimmed = line.trim_start();
    if trimmed.trim_end().is_empty() {
        return LineKind::Blank;
    }
    let hashes = trimmed.bytes().take_while(|&b| b == b'#').count();
    if (1..=6).contains(&hashes) && trimmed[hashes..].chars().next().is_none_or(char::is_whitespace) {
        return LineKind::Heading;
    }
    if is_list_item(trimmed) {
        return LineKind::Item;
    }
    LineKind::Normal
}

/// `- x`, `* x`, `+ x`, `• x`, `1. x`, `12) x`.
fn is_list_item(trimmed: &str) -> bool {
    let mut chars = trimmed.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if matches!(first, '-' | '*' | '+' | '•' | '‣' | '◦' | '▪') {
        return chars.next().is_some_and(char::is_whitespace);
    }
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=3).contains(&digits) {
        let mut rest = trimmed[digits..].chars();
        return matches!(rest.next(), Some('.' | ')')) && rest.next().is_some_and(char::is_whitespace);
    }
    false
}

/// Cuts from the line structure: at the end of the content of a line that is followed by a
/// blank line, that is a heading, that ends a list item, or that precedes a heading or item.
fn line_cuts(text: &str, cuts: &mut Vec<usize>) {
    // (content end of the previous non-blank line, its effective kind)
    let mut prev: Option<(usize, LineKind)> = None;
    let mut blank_between = false;
    let mut start = 0;
    for line in text.split('\n') {
        let line_start = start;
        start += line.len() + 1;
        let mut kind = classify_line(line);
        if kind == LineKind::Blank {
            blank_between = true;
            continue;
        }
        let indented = line.starts_with(char::is_whitespace);
        if let Some((prev_end, prev_kind)) = prev {
            let continues_item = prev_kind == LineKind::Item && kind == LineKind::Normal && indented;
            let cut = blank_between
                || prev_kind == LineKind::Heading
                || matches!(kind, LineKind::Heading | LineKind::Item)
                || (prev_kind == LineKind::Item && !continues_item);
            if cut {
                cuts.push(prev_end);
            }
            if continues_item && !blank_between {
                kind = LineKind::Item;
            }
        }
        prev = Some((line_start + line.trim_end().len(), kind));
        blank_between = false;
    }
}

// ---------------------------------------------------------------------------------------
// Punctuation.

/// Abbreviations that never end a sentence (compared lowercased, without the final dot).
const NEVER_FINAL: &[&str] = &[
    "mr", "mrs", "ms", "mx", "dr", "prof", "st", "rev", "hon", "gen", "gov", "sen", "rep", "capt", "lt", "col", "sgt",
    "mt", "messrs", "mme", "mlle", "vs", "cf", "e.g", "i.e", "viz", "approx", "ca", "fig", "figs", "eq", "eqs", "vol",
    "vols", "pp", "ed", "eds", "ch", "sec", "dept", "univ", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "incl", "resp", "esp", "ibid", "op", "cit", "ref", "refs", "chap", "para", "ave",
    "blvd", "rd",
];

/// Abbreviations that do not end a sentence when a number follows (`No. 5`).
const BEFORE_NUMBER: &[&str] = &["no", "nos", "art", "p", "n"];

/// Abbreviations that can end a sentence: they do only when a typical sentence opener follows.
const MAYBE_FINAL: &[&str] = &[
    "etc", "inc", "ltd", "co", "corp", "llc", "plc", "bros", "jr", "sr", "al", "u.s", "u.k", "u.s.a", "a.m", "p.m",
    "ph.d", "min", "max", "hr", "hrs", "misc", "avg", "est",
];

/// Words that typically open a sentence (used after the abbreviations that can end one).
const OPENERS: &[&str] = &[
    "The",
    "A",
    "An",
    "It",
    "Its",
    "He",
    "She",
    "We",
    "They",
    "I",
    "This",
    "That",
    "These",
    "Those",
    "There",
    "Then",
    "In",
    "On",
    "At",
    "But",
    "And",
    "So",
    "However",
    "If",
    "When",
    "Our",
    "My",
    "His",
    "Her",
    "Their",
    "You",
    "Your",
    "As",
    "For",
    "What",
    "Who",
    "How",
    "Why",
    "Some",
    "Many",
    "All",
    "One",
    "After",
    "Before",
    "Since",
    "While",
    "Although",
    "Thus",
    "Therefore",
    "Meanwhile",
    "Also",
    "Yet",
    "Each",
    "Every",
    "Most",
    "Both",
    "Now",
    "Here",
    "To",
];

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']' | '»' | '」' | '』' | '）' | '】' | '》' | '〉' | '〕')
}

fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；' | '｡')
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // kana
        | 0x3400..=0x4DBF    // CJK ext A
        | 0x4E00..=0x9FFF    // CJK unified
        | 0xAC00..=0xD7AF    // Hangul
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0x20000..=0x2FA1F) // CJK ext B+
        || matches!(c, '「' | '『' | '“' | '（' | '【' | '《')
}

/// Could `c` be the first character of a new sentence after `!`, `?` or an ellipsis?
fn opens_sentence(c: char) -> bool {
    !c.is_lowercase() && !continues_sentence(c)
}

/// Punctuation that cannot start a sentence.
fn continues_sentence(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | ')' | ']' | '}' | '%' | '.' | '!' | '?')
}

/// Cuts after sentence-ending punctuation.
fn punct_cuts(text: &str, cuts: &mut Vec<usize>) {
    let bytes = text.as_bytes();
    let mut line = LineInfo::default();
    let mut i = 0;
    while i < text.len() {
        // Fast skip to the next byte that matters: a newline, ASCII `.!?`, or a multi-byte
        // lead byte (the CJK terminators and `…` are all multi-byte).
        match bytes[i..].iter().position(|&b| matches!(b, b'\n' | b'.' | b'!' | b'?') || b >= 0xC0) {
            Some(off) => i += off,
            None => break,
        }
        if bytes[i] == b'\n' {
            i += 1;
            line = LineInfo { start: i, heading: None };
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        if !(matches!(c, '.' | '!' | '?' | '…') || is_cjk_terminator(c) || c == '！' || c == '？') {
            i += c.len_utf8();
            continue;
        }
        let run_start = i;
        let mut run = Run::default();
        let mut j = i;
        for d in text[i..].chars() {
            match d {
                '.' => run.dots += 1,
                '!' | '?' => run.bang = true,
                '…' => run.ellipsis += 1,
                d if is_cjk_terminator(d) => run.cjk = true,
                _ => break,
            }
            j += d.len_utf8();
        }
        for d in text[j..].chars() {
            if !is_closer(d) {
                break;
            }
            j += d.len_utf8();
        }
        // A heading line is one sentence, whatever punctuation it holds.
        if !line.is_heading(text) && ends_sentence(text, line.start, run_start, j, &run) {
            cuts.push(j);
        }
        i = j;
    }
}

/// The line the punctuation scan is in.
#[derive(Debug, Default)]
struct LineInfo {
    start: usize,
    /// Computed on first use.
    heading: Option<bool>,
}

impl LineInfo {
    fn is_heading(&mut self, text: &str) -> bool {
        *self.heading.get_or_insert_with(|| {
            let rest = &text[self.start..];
            let line = rest.find('\n').map_or(rest, |n| &rest[..n]);
            classify_line(line) == LineKind::Heading
        })
    }
}

/// Labels that can stand before a section number at the start of a line (`Chapter 2.`).
const SECTION_LABELS: &[&str] =
    &["chapter", "section", "part", "appendix", "step", "article", "book", "volume", "lesson", "unit"];

/// Is `prefix` (a line up to a dot) a section or list number: `2`, `2.1`, `Chapter 2`?
fn is_section_number(prefix: &str) -> bool {
    let prefix = prefix.trim_start();
    let number = match prefix.rsplit_once(char::is_whitespace) {
        Some((label, number)) => {
            if !SECTION_LABELS.contains(&label.trim().to_lowercase().as_str()) {
                return false;
            }
            number
        }
        None => prefix,
    };
    number.starts_with(|c: char| c.is_ascii_digit()) && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[derive(Debug, Default)]
struct Run {
    dots: usize,
    bang: bool,
    ellipsis: usize,
    cjk: bool,
}

/// Decides whether the terminator run `text[run_start..end]` (closers included), on the
/// line starting at `line_start`, ends a sentence.
fn ends_sentence(text: &str, line_start: usize, run_start: usize, end: usize, run: &Run) -> bool {
    let rest = &text[end..];
    let Some(first) = rest.chars().next() else {
        return false;
    };
    if run.cjk {
        return has_content(rest);
    }
    if !first.is_whitespace() {
        // Mixed text: `好!我` or `……然后`; otherwise dots inside tokens never split.
        return (run.bang || run.ellipsis >= 2) && is_cjk(first);
    }
    let after = rest.trim_start();
    let Some(next) = after.chars().next() else {
        return false;
    };
    if run.bang || run.dots >= 2 || run.ellipsis > 0 {
        return opens_sentence(next);
    }
    // A single dot: like Punkt, it ends the sentence unless the word before is an
    // abbreviation or an initial; the next word's case only matters for those.
    if continues_sentence(next) {
        return false;
    }
    if run_start - line_start <= 40 && is_section_number(&text[line_start..run_start]) {
        // A list item or section number at the start of a line: `1. one`, `2.1. Title`,
        // `Chapter 2. Title`.
        return false;
    }
    let token = word_before(text, run_start);
    let lower = token.to_lowercase();
    if NEVER_FINAL.contains(&lower.as_str()) {
        return false;
    }
    if BEFORE_NUMBER.contains(&lower.as_str()) && next.is_ascii_digit() {
        return false;
    }
    let initial = {
        let mut cs = token.chars();
        matches!((cs.next(), cs.next()), (Some(c), None) if c.is_uppercase())
    };
    if initial || is_dotted_acronym(token) || MAYBE_FINAL.contains(&lower.as_str()) {
        return next_word_is_opener(after);
    }
    true
}

/// The word just before byte `pos` (up to whitespace), without leading quotes or brackets.
fn word_before(text: &str, pos: usize) -> &str {
    let before = &text[..pos];
    let start =
        before.char_indices().rev().take(40).take_while(|(_, c)| !c.is_whitespace()).last().map_or(pos, |(i, _)| i);
    before[start..].trim_start_matches(|c: char| !c.is_alphanumeric())
}

/// `U.S`, `e.g`, `Ph.D`-like tokens: single letters joined by dots.
fn is_dotted_acronym(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        let mut cs = part.chars();
        match (cs.next(), cs.next()) {
            (Some(c), None) if c.is_alphabetic() => parts += 1,
            _ => return false,
        }
    }
    parts >= 2
}

fn next_word_is_opener(after: &str) -> bool {
    let word: &str = after.split(|c: char| !c.is_alphanumeric() && c != '\'').next().unwrap_or_default();
    OPENERS.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(text: &str) -> Vec<&str> {
        parts_with(&RuleSplitter::default(), text)
    }

    fn parts_with<'a>(splitter: &RuleSplitter, text: &'a str) -> Vec<&'a str> {
        let spans = splitter.split(text);
        check_invariants(text, &spans);
        spans.into_iter().map(|s| &text[s]).collect()
    }

    fn check_invariants(text: &str, spans: &[Range<usize>]) {
        if text.is_empty() {
            assert!(spans.is_empty());
            return;
        }
        assert!(crate::tiles(spans, text.len()), "spans {spans:?} do not tile {text:?}");
        for s in spans {
            assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
        }
        if text.trim().is_empty() {
            assert_eq!(spans.len(), 1);
        } else {
            for s in spans {
                assert!(has_content(&text[s.clone()]), "whitespace-only span {:?} in {text:?}", &text[s.clone()]);
            }
        }
    }

    #[test]
    fn empty_and_whitespace() {
        assert!(RuleSplitter::default().split("").is_empty());
        assert_eq!(parts("   \n\n  "), ["   \n\n  "]);
        assert_eq!(parts("  Hello.  "), ["  Hello.  "]);
    }

    #[test]
    fn english_basic() {
        assert_eq!(parts("A b. C d."), ["A b.", " C d."]);
        assert_eq!(parts("Hi there! How are you? Fine."), ["Hi there!", " How are you?", " Fine."]);
        assert_eq!(parts("Really?! Yes... Sure."), ["Really?!", " Yes...", " Sure."]);
        assert_eq!(parts("It ended. \n"), ["It ended. \n"]);
        assert_eq!(parts("One two. 3 cats came."), ["One two.", " 3 cats came."]);
    }

    #[test]
    fn oracle_sentences() {
        let text = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway. The Super Bowl is the annual championship game of the National Football League. Broadcast rights are sold to networks for billions of dollars.";
        let got = parts(text);
        assert_eq!(got.len(), 4);
        assert_eq!(got[1], " They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.");
    }

    #[test]
    fn quotes_and_brackets() {
        assert_eq!(parts("He said \"stop.\" Then he left."), ["He said \"stop.\"", " Then he left."]);
        assert_eq!(parts("(This is aside.) Next one."), ["(This is aside.)", " Next one."]);
        assert_eq!(
            parts("\"Where?\" he asked. \"Here!\" She smiled."),
            ["\"Where?\" he asked.", " \"Here!\"", " She smiled."]
        );
        assert_eq!(parts("It was ‘odd.’ We left."), ["It was ‘odd.’", " We left."]);
    }

    #[test]
    fn abbreviations() {
        assert_eq!(parts("Mr. Smith met Dr. Jones. They talked."), ["Mr. Smith met Dr. Jones.", " They talked."]);
        assert_eq!(parts("Use tools, e.g. Hammers and saws. Done."), ["Use tools, e.g. Hammers and saws.", " Done."]);
        assert_eq!(parts("See Fig. 3 and No. 5 for details. Ok."), ["See Fig. 3 and No. 5 for details.", " Ok."]);
        assert_eq!(parts("It opened on Jan. 5 in St. Louis. Good."), ["It opened on Jan. 5 in St. Louis.", " Good."]);
        assert_eq!(parts("Acme Inc. Sells things. Ok."), ["Acme Inc. Sells things.", " Ok."]);
        assert_eq!(
            parts("We sell apples, pears, etc. The rest is fruit."),
            ["We sell apples, pears, etc.", " The rest is fruit."]
        );
        assert_eq!(parts("He moved to the U.S. The move was hard."), ["He moved to the U.S.", " The move was hard."]);
        assert_eq!(parts("He moved to the U.S. Army base."), ["He moved to the U.S. Army base."]);
        assert_eq!(parts("At 9 a.m. Sharp people arrive."), ["At 9 a.m. Sharp people arrive."]);
        assert_eq!(parts("Apples vs. Oranges is a talk."), ["Apples vs. Oranges is a talk."]);
    }

    #[test]
    fn initials() {
        assert_eq!(
            parts("J. R. R. Tolkien wrote books. Many read them."),
            ["J. R. R. Tolkien wrote books.", " Many read them."]
        );
        assert_eq!(parts("It was Plan B. Then it failed."), ["It was Plan B.", " Then it failed."]);
    }

    #[test]
    fn section_numbers() {
        assert_eq!(parts("2.1. What is new?\n2.2. What is old?"), ["2.1. What is new?", "\n2.2. What is old?"]);
        assert_eq!(
            parts("Chapter 2. Getting started\n\nCHAPTER 1. Loomings."),
            ["Chapter 2. Getting started", "\n\nCHAPTER 1. Loomings."]
        );
        // Elsewhere a number ends a sentence as usual.
        assert_eq!(parts("It was 1790. The end."), ["It was 1790.", " The end."]);
        assert_eq!(parts("Next 2. Then"), ["Next 2.", " Then"]);
    }

    #[test]
    fn decimals_versions_urls() {
        assert_eq!(parts("Pi is 3.14 roughly. Use v1.2.3 now."), ["Pi is 3.14 roughly.", " Use v1.2.3 now."]);
        assert_eq!(
            parts("Visit example.com or mail a@b.org today. Edit main.rs. Then build."),
            ["Visit example.com or mail a@b.org today.", " Edit main.rs.", " Then build."]
        );
    }

    #[test]
    fn ellipsis() {
        assert_eq!(parts("Well... maybe not. Fine."), ["Well... maybe not.", " Fine."]);
        assert_eq!(parts("Wait… Now go."), ["Wait…", " Now go."]);
        assert_eq!(parts("And so on and so forth... The end."), ["And so on and so forth...", " The end."]);
    }

    #[test]
    fn lowercase_after_dot() {
        // As in Punkt: a dot after an ordinary word splits whatever follows, ...
        assert_eq!(parts("cats purr. cats nap."), ["cats purr.", " cats nap."]);
        // ... but not after an abbreviation, nor after `!`, `?` or an ellipsis.
        assert_eq!(parts("It cost approx. twelve. ok then"), ["It cost approx. twelve.", " ok then"]);
        assert_eq!(parts("It took 5 min. then more"), ["It took 5 min. then more"]);
        assert_eq!(parts("It took 5 min. We left"), ["It took 5 min.", " We left"]);
        assert_eq!(parts("Wow! said he. Odd, no? yes"), ["Wow! said he.", " Odd, no? yes"]);
        assert_eq!(parts("See e.g. the docs"), ["See e.g. the docs"]);
    }

    #[test]
    fn chinese() {
        assert_eq!(
            parts("今天天气很好。我们去公园吧！你觉得呢？好；走"),
            ["今天天气很好。", "我们去公园吧！", "你觉得呢？", "好；", "走"]
        );
        assert_eq!(parts("他说：“走吧。”然后离开了。"), ["他说：“走吧。”", "然后离开了。"]);
        assert_eq!(parts("真的吗？！是的。"), ["真的吗？！", "是的。"]);
        assert_eq!(parts("等等……然后呢"), ["等等……", "然后呢"]);
    }

    #[test]
    fn mixed_languages() {
        assert_eq!(parts("This is English. 这是中文。 And back."), ["This is English.", " 这是中文。", " And back."]);
        assert_eq!(parts("好!我们走"), ["好!", "我们走"]);
    }

    #[test]
    fn paragraphs_and_newlines() {
        assert_eq!(
            parts("A line\nwrapped here. Next.\n\nNew para"),
            ["A line\nwrapped here.", " Next.", "\n\nNew para"]
        );
        assert_eq!(parts("No stop here\n\nNor here"), ["No stop here", "\n\nNor here"]);
        assert_eq!(parts("Trailing spaces   \n \nNext"), ["Trailing spaces", "   \n \nNext"]);
    }

    #[test]
    fn headings_and_lists() {
        let text = "# Title\nIntro text here\n- first item\n- second item. More\n* star\n1. one\n2) two\nAfter list.";
        assert_eq!(
            parts(text),
            [
                "# Title",
                "\nIntro text here",
                "\n- first item",
                "\n- second item.",
                " More",
                "\n* star",
                "\n1. one",
                "\n2) two",
                "\nAfter list."
            ]
        );
        assert_eq!(parts("## Sub\nText"), ["## Sub", "\nText"]);
        // Headings are never cut by their punctuation.
        assert_eq!(parts("## 15.1. Hardening. Really!\nText."), ["## 15.1. Hardening. Really!", "\nText."]);
        assert_eq!(parts("#hashtag is text\nmore"), ["#hashtag is text\nmore"]);
        assert_eq!(
            parts("- item wraps\n  onto a second line\n- next"),
            ["- item wraps\n  onto a second line", "\n- next"]
        );
        assert_eq!(parts("Things to get:\n- milk\n- eggs"), ["Things to get:", "\n- milk", "\n- eggs"]);
    }

    #[test]
    fn long_sentence_clause_cut() {
        let s = RuleSplitter::default().with_max_words(6);
        assert_eq!(
            parts_with(&s, "one two three, four five six seven eight nine."),
            ["one two three, four five six", " seven eight nine."]
        );
        assert_eq!(parts_with(&s, "a b c d e f, g h i j k l."), ["a b c d e f,", " g h i j k l."]);
        assert_eq!(parts_with(&s, "aa bb; cc dd ee ff gg."), ["aa bb; cc dd ee ff", " gg."]);
        assert_eq!(parts_with(&s, "aa bb cc dd; ee ff gg."), ["aa bb cc dd;", " ee ff gg."]);
    }

    #[test]
    fn long_sentence_bytes_and_chars() {
        let s = RuleSplitter::default().with_max_bytes(10);
        assert_eq!(parts_with(&s, "abcdefghijklmnopqrstuvwxyz"), ["abcdefghij", "klmnopqrst", "uvwxyz"]);
        // Multi-byte characters are never cut in half.
        assert_eq!(parts_with(&s, "一二三四五六七八"), ["一二三", "四五六", "七八"]);
        // CJK clause marks are preferred.
        assert_eq!(parts_with(&s.clone().with_max_bytes(20), "一二三，四五六七八九"), ["一二三，", "四五六七八九"]);
        // A character larger than the cap stays whole.
        assert_eq!(parts_with(&s.with_max_bytes(2), "一二"), ["一", "二"]);
        // Leading whitespace does not count.
        let t = format!("{}Short one.", " ".repeat(50));
        assert_eq!(parts_with(&RuleSplitter::default().with_max_bytes(20), &t), [t.as_str()]);
    }

    #[test]
    fn long_default_limits() {
        let text = "word ".repeat(450) + "end.";
        let got = parts(&text);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|p| p.split_whitespace().count() <= 200));
        let unlimited = RuleSplitter::default().with_max_words(0).with_max_bytes(0);
        assert_eq!(parts_with(&unlimited, &text).len(), 1);
    }

    #[test]
    fn example_corpus() -> crate::Result<()> {
        let expected: &[(&str, &[&str])] = &[
            (
                "washington-1790.txt",
                &[" The punctuality of the former in discharging their engagements has been exemplary."],
            ),
            (
                "debian-faq-next-release.md",
                &[
                    "\n\n## 15.1. Hardening the system",
                    " As of this writing, around 400 packages have been modified since this effort was first started.",
                ],
            ),
            (
                "debian-faq-getting-debian.html",
                &[
                    "\n\n2.1. What is the latest version of Debian?",
                    "\n\nCurrently there are three versions of Debian GNU/Linux:",
                ],
            ),
        ];
        for (name, sentences) in expected {
            let doc = crate::load::load_path(&crate::load::tests::example(name), &Default::default())?;
            let got = parts(&doc.text);
            for s in *sentences {
                assert!(got.contains(s), "{name}: no sentence {s:?}");
            }
            assert!(got.len() > 30, "{name}: only {} sentences", got.len());
        }
        Ok(())
    }

    #[test]
    fn blanket_impls() {
        let s = RuleSplitter::default();
        let boxed: Box<dyn SentenceSplitter> = Box::new(s.clone());
        let arc = std::sync::Arc::new(s.clone());
        assert_eq!(SentenceSplitter::split(&&s, "A. B."), boxed.split("A. B."));
        assert_eq!(arc.split("A b. C d."), vec![0..4, 4..9]);
    }

    #[test]
    fn serde_round_trip() -> Result<(), serde_json::Error> {
        let s = RuleSplitter::default().with_max_words(50);
        let json = serde_json::to_string(&s)?;
        assert_eq!(serde_json::from_str::<RuleSplitter>(&json)?, s);
        assert_eq!(serde_json::from_str::<RuleSplitter>("{}")?, RuleSplitter::default());
        Ok(())
    }

    const WORDS: &[&str] = &[
        "the",
        "The",
        "cat",
        "Mr.",
        "Dr.",
        "e.g.",
        "U.S.",
        "etc.",
        "J.",
        "3.14",
        "v1.2",
        "example.com",
        "It",
        "ran",
        "fast.",
        "slow!",
        "why?",
        "\"quoted.\"",
        "(aside.)",
        "...",
        "…",
        "天气",
        "很好。",
        "你好！",
        "吗？",
        "；",
        "，",
        "—",
        ",",
        ";",
        "\n",
        "\n\n",
        "\n- ",
        "\n# ",
        "\n1. ",
        "  ",
        "\t",
        "ok",
        "A",
        "\u{3000}",
        "é",
        "ß.",
        "Ω",
        "🦀.",
    ];

    fn english_ish() -> impl Strategy<Value = String> {
        prop::collection::vec((prop::sample::select(WORDS), prop::bool::weighted(0.7)), 0..80).prop_map(|ws| {
            let mut s = String::new();
            for (w, space) in ws {
                s.push_str(w);
                if space {
                    s.push(' ');
                }
            }
            s
        })
    }

    fn splitter() -> impl Strategy<Value = RuleSplitter> {
        (0usize..12, 0usize..40).prop_map(|(w, b)| RuleSplitter { max_words: w, max_bytes: b })
    }

    fn check_limits(text: &str, spans: &[Range<usize>], s: &RuleSplitter) {
        for span in spans {
            let body = text[span.clone()].trim();
            if s.max_words > 0 {
                assert!(body.split_whitespace().count() <= s.max_words, "{body:?} has too many words");
            }
            if s.max_bytes > 0 {
                assert!(body.len() <= s.max_bytes || body.chars().count() == 1, "{body:?} too long");
            }
        }
    }

    proptest! {
        #[test]
        fn prop_arbitrary_text(text in "\\PC*", s in splitter()) {
            let spans = s.split(&text);
            check_invariants(&text, &spans);
            check_limits(&text, &spans, &s);
            prop_assert_eq!(spans, s.split(&text));
        }

        #[test]
        fn prop_any_string(text in any::<String>()) {
            check_invariants(&text, &RuleSplitter::default().split(&text));
        }

        #[test]
        fn prop_english_ish(text in english_ish(), s in splitter()) {
            let spans = s.split(&text);
            check_invariants(&text, &spans);
            check_limits(&text, &spans, &s);
            prop_assert_eq!(spans, s.split(&text));
        }

        #[test]
        fn prop_english_ish_default(text in english_ish()) {
            let spans = RuleSplitter::default().split(&text);
            check_invariants(&text, &spans);
        }
    }
}

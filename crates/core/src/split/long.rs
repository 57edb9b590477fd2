//! Over-long sentences: a span longer than the splitter's word or byte limit is cut into
//! pieces that fit, preferably after a clause mark past the window's middle, else after a
//! word, else anywhere on a character boundary.

use std::ops::Range;

#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) words: usize,
    pub(super) bytes: usize,
}

fn is_clause_mark(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '—' | '–')
}

fn is_cjk_clause_mark(c: char) -> bool {
    matches!(c, '，' | '、' | '；' | '：')
}

/// Pushes `span` to `out`, cut into pieces that fit `limits` when it does not.
pub(super) fn split_long(text: &str, span: Range<usize>, limits: Limits, out: &mut Vec<Range<usize>>) {
    let end = span.end;
    let content_end = span.start + text[span.clone()].trim_end().len();
    let mut s = span.start;
    loop {
        let body = s + (text[s..end].len() - text[s..end].trim_start().len());
        let limit = window_limit(text, s, body, end, limits);
        if limit >= content_end {
            out.push(s..end);
            return;
        }
        let cut = best_cut(text, s, body, limit).unwrap_or_else(|| {
            // Nothing fits (a single character larger than the byte cap): take one character.
            body + text[body..].chars().next().map_or(0, char::len_utf8)
        });
        if cut >= content_end {
            out.push(s..end);
            return;
        }
        out.push(s..cut);
        s = cut;
    }
}

/// The furthest position `p` (a char boundary) such that `text[body..p]` holds at most
/// `limits.words` words and `limits.bytes` bytes; `end` when the whole rest fits.
fn window_limit(text: &str, s: usize, body: usize, end: usize, limits: Limits) -> usize {
    let max_end = body.saturating_add(limits.bytes);
    let mut words = 0;
    let mut prev_ws = true;
    for (off, c) in text[s..end].char_indices() {
        let p = s + off;
        if p + c.len_utf8() > max_end {
            return p;
        }
        let ws = c.is_whitespace();
        if !ws && prev_ws {
            words += 1;
            if words > limits.words {
                return p;
            }
        }
        prev_ws = ws;
    }
    end
}

/// The best cut in `(body, limit]`: a position right after a non-whitespace character.
fn best_cut(text: &str, s: usize, body: usize, limit: usize) -> Option<usize> {
    let half = body + (limit - body) / 2;
    let mut clause = None;
    let mut space = None;
    let mut any = None;
    let mut next = text[limit..].chars().next();
    for (off, c) in text[s..limit].char_indices().rev() {
        let p = s + off;
        if p < body {
            break;
        }
        let cut = p + c.len_utf8();
        if !c.is_whitespace() {
            let next_ws = next.is_some_and(char::is_whitespace);
            if clause.is_none() && ((is_clause_mark(c) && next_ws) || (is_cjk_clause_mark(c) && next.is_some())) {
                clause = Some(cut);
                if cut > half {
                    return clause;
                }
            }
            if space.is_none() && next_ws {
                space = Some(cut);
            }
            if any.is_none() {
                any = Some(cut);
            }
        }
        next = Some(c);
    }
    space.or(clause).or(any)
}

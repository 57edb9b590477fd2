//! Right-to-left text out of PDFs: lines come out of a PDF in visual order (glyphs left to
//! right as painted), which for Hebrew and Arabic is backwards. [`visual_to_logical`] puts a
//! line back in reading order with the Unicode bidirectional algorithm (UAX #9, the
//! `unicode-bidi` crate), moving whole glyphs so a ligature's characters (Arabic lam-alef)
//! keep their order.
//!
//! ```
//! use metarag_core::load::bidi::visual_to_logical;
//!
//! // "שלום 30 עולם" as painted: right-to-left words reversed, the number left to right
//! let painted: Vec<String> = "םלוע 30 םולש".chars().map(String::from).collect();
//! assert_eq!(visual_to_logical(&painted), "שלום 30 עולם");
//! // left-to-right lines come back unchanged
//! let latin: Vec<String> = "plain text".chars().map(String::from).collect();
//! assert_eq!(visual_to_logical(&latin), "plain text");
//! ```

use unicode_bidi::{BidiClass, BidiInfo, Level, bidi_class};

/// The reading order of one line given as glyphs (each glyph's text) in visual order. A line
/// with no right-to-left letter is returned as is; otherwise the line's base direction is the
/// majority of its strong letters, and the runs the algorithm would reverse for display are
/// reversed back, glyph by glyph.
pub fn visual_to_logical(glyphs: &[String]) -> String {
    let (mut rtl, mut ltr) = (0usize, 0usize);
    for c in glyphs.iter().flat_map(|g| g.chars()) {
        match bidi_class(c) {
            BidiClass::R | BidiClass::AL => rtl += 1,
            BidiClass::L => ltr += 1,
            _ => {}
        }
    }
    if rtl == 0 {
        return glyphs.concat();
    }
    let line = glyphs.concat();
    let base = if rtl >= ltr { Level::rtl() } else { Level::ltr() };
    let info = BidiInfo::new(&line, Some(base));
    // each glyph takes the level of its first character
    let mut levels = Vec::with_capacity(glyphs.len());
    let mut at = 0;
    for g in glyphs {
        levels.push(info.levels.get(at).copied().unwrap_or(base));
        at += g.len();
    }
    BidiInfo::reorder_visual(&levels).into_iter().map(|i| glyphs[i].as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> Vec<String> {
        s.chars().map(String::from).collect()
    }

    #[test]
    fn hebrew_arabic_numbers_and_ligatures() {
        assert_eq!(visual_to_logical(&units(".ןוט 200 דע")), "עד 200 טון.");
        assert_eq!(visual_to_logical(&units("قرزلأا")), "األزرق", "char by char, the ligature turns around");
        // the lam-alef ligature as one glyph keeps its logical order inside
        let painted = vec!["ق".into(), "ر".into(), "ز".into(), "لأ".into(), "ا".into()];
        assert_eq!(visual_to_logical(&painted), "الأزرق");
        assert_eq!(visual_to_logical(&[]), "");
    }

    #[test]
    fn mixed_lines_keep_every_glyph() {
        for s in ["Hello םולש world", "abc", "123 456", "ק", "(ב) a1 ג"] {
            let u = units(s);
            let mut got: Vec<char> = visual_to_logical(&u).chars().collect();
            let mut want: Vec<char> = s.chars().collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "{s}");
        }
    }
}

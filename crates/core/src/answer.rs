//! Answer normalisation exactly as the official SQuAD v1.1 evaluation script
//! (`evaluate-v1.1.py`, `normalize_answer`): lowercase, remove ASCII punctuation (Python's
//! `string.punctuation`), remove the articles "a", "an", "the" as whole words, collapse
//! whitespace. Exact match, token F1 and answer grouping all compare normalised strings.
//!
//! ```
//! use metarag_core::answer::{answer_tokens, normalize_answer};
//!
//! assert_eq!(normalize_answer("The  Norman-Conquest!"), "normanconquest");
//! assert_eq!(normalize_answer("  An apple,  the theory "), "apple theory");
//! assert_eq!(answer_tokens("the Cat sat on a mat."), ["cat", "sat", "on", "mat"]);
//! ```
//!
//! The steps run in the script's order: lowercase, punctuation, articles, whitespace. So
//! punctuation can join words ("the-end" → "theend", no article left to remove), and an
//! article is a maximal run of word characters (Unicode letters, digits and `_`, as in
//! Python's `\b`) equal to "a", "an" or "the" after punctuation removal.

/// The normalised form of an answer (the official SQuAD v1.1 `normalize_answer`).
pub fn normalize_answer(s: &str) -> String {
    let lowered = s.to_lowercase();
    let no_punct: String = lowered.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    let no_articles = remove_articles(&no_punct);
    no_articles.split(is_python_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The tokens of the normalised answer (split on whitespace), as the official script's F1
/// counts them.
pub fn answer_tokens(s: &str) -> Vec<String> {
    normalize_answer(s).split(' ').filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// Replaces each whole word "a", "an" or "the" by a space (`re.sub(r'\b(a|an|the)\b', ' ', s)`).
fn remove_articles(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word_start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if is_word_char(c) {
            word_start.get_or_insert(i);
        } else {
            if let Some(start) = word_start.take() {
                push_word(&mut out, &s[start..i]);
            }
            out.push(c);
        }
    }
    if let Some(start) = word_start {
        push_word(&mut out, &s[start..]);
    }
    out
}

fn push_word(out: &mut String, word: &str) {
    if matches!(word, "a" | "an" | "the") {
        out.push(' ');
    } else {
        out.push_str(word);
    }
}

/// Python's `\w` on `str` patterns: Unicode alphanumerics and the underscore.
fn is_word_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Python's `str.split()` whitespace: Unicode `White_Space` plus the ASCII separators
/// U+001C..U+001F, which Python also treats as whitespace.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_normalisation_examples() {
        assert_eq!(normalize_answer("The  Norman-Conquest!"), "normanconquest");
        assert_eq!(normalize_answer("an apple"), "apple");
        assert_eq!(normalize_answer("A"), "");
        assert_eq!(normalize_answer("the"), "");
        assert_eq!(normalize_answer(""), "");
        assert_eq!(normalize_answer("   \t\n "), "");
        assert_eq!(normalize_answer("Denver Broncos"), "denver broncos");
        assert_eq!(normalize_answer("1,000 dollars."), "1000 dollars");
        assert_eq!(normalize_answer("$3.5 (approx.)"), "35 approx");
    }

    #[test]
    fn articles_only_as_whole_words() {
        assert_eq!(normalize_answer("theory"), "theory");
        assert_eq!(normalize_answer("Anthem of the Seas"), "anthem of seas");
        assert_eq!(normalize_answer("banana"), "banana");
        assert_eq!(normalize_answer("a an the"), "");
        assert_eq!(normalize_answer("the_end"), "theend", "underscore is punctuation, removed first");
        assert_eq!(normalize_answer("the-end"), "theend", "punctuation removal joins the words");
        assert_eq!(normalize_answer("the's"), "thes");
        assert_eq!(normalize_answer("théa"), "théa", "é is a word character: no boundary after 'th'");
        assert_eq!(normalize_answer("the\u{2019}s"), "\u{2019}s", "U+2019 is not ASCII punctuation");
        assert_eq!(normalize_answer("a1"), "a1");
        assert_eq!(normalize_answer("THE END"), "end");
    }

    #[test]
    fn punctuation_is_the_ascii_set_only() {
        let ascii = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
        assert_eq!(ascii.len(), 32);
        assert_eq!(normalize_answer(&format!("x{ascii}y")), "xy");
        // Non-ASCII punctuation stays (the official script only removes string.punctuation).
        assert_eq!(normalize_answer("«Paris» — France…"), "«paris» — france…");
    }

    #[test]
    fn whitespace_is_collapsed_as_python_split() {
        assert_eq!(normalize_answer(" new\u{a0}\u{a0}york\tcity\n"), "new york city");
        assert_eq!(normalize_answer("new\u{1f}york"), "new york");
        assert_eq!(normalize_answer("new\u{3000}york"), "new york");
    }

    #[test]
    fn lowercase_is_unicode() {
        assert_eq!(normalize_answer("ÉCOLE Straße"), "école straße");
        assert_eq!(normalize_answer("ΟΔΟΣ"), "οδος", "final sigma, as Python's str.lower");
    }

    #[test]
    fn tokens() {
        assert_eq!(answer_tokens("The cat, the hat."), ["cat", "hat"]);
        assert!(answer_tokens("the").is_empty());
        assert!(answer_tokens("").is_empty());
    }
}

//! SQuAD JSON (v1.1 / v2.0 layout) → the dataset directory format of [`crate::dataset`].
//!
//! ```no_run
//! use metarag_eval::{Dataset, squad};
//! use std::path::Path;
//!
//! // Writes runs/my/corpus/000-<title>.txt … and runs/my/questions.jsonl, then loads them.
//! let summary = squad::convert(Path::new("dev-v1.1.json"), Path::new("runs/my"))?;
//! println!("{} articles, {} questions", summary.articles, summary.questions);
//! let data = Dataset::load(Path::new("runs/my"))?;
//! # Ok::<(), metarag_eval::Error>(())
//! ```
//!
//! Each article becomes ONE document: its paragraphs joined with a blank line ("\n\n"), so a
//! chunker has to find the structure. Answers become UTF-8 byte spans into that document; an
//! `answer_start` a few characters off (known in published SQuAD files) is moved to the
//! text's nearest occurrence within [`MAX_SHIFT`] characters. SQuAD 2.0 questions without
//! answers (`is_impossible`) are skipped and counted. The layout matches `onnx/squad.py`,
//! which builds the SQuAD dev benchmark this way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::dataset::{AnswerSpan, Question};

/// How far (characters) a wrong `answer_start` may be from the answer text.
pub const MAX_SHIFT: usize = 8;

/// Longest slug in a document's file name.
pub const SLUG_MAX: usize = 50;

/// Separator between an article's paragraphs.
pub const SEPARATOR: &str = "\n\n";

#[derive(Deserialize)]
struct File {
    data: Vec<Article>,
}

#[derive(Deserialize)]
struct Article {
    title: String,
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}

#[derive(Deserialize)]
struct Qa {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<RawAnswer>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct RawAnswer {
    text: String,
    answer_start: usize,
}

/// What [`convert`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Documents written (one per article).
    pub articles: usize,
    /// Questions written.
    pub questions: usize,
    /// Gold answers written.
    pub answers: usize,
    /// Questions without an answer (SQuAD 2.0 `is_impossible`), skipped.
    pub unanswerable: usize,
    /// Ids of questions with an answer whose `answer_start` was moved to the text.
    pub shifted: Vec<String>,
}

/// File name of article `i`: `NNN-<slug>.txt`, the slug being the title URL-decoded,
/// NFKD-decomposed and reduced to ASCII letters and digits joined by '-' (at most [`SLUG_MAX`] bytes, cut at a '-').
pub fn doc_name(i: usize, title: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let decoded = percent_encoding::percent_decode_str(title).decode_utf8_lossy();
    let mut slug = String::new();
    for c in decoded.nfkd() {
        if !c.is_ascii() {
            continue; // accents decomposed by NFKD are dropped, the base letter kept
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let mut slug = slug.trim_end_matches('-').to_string();
    if slug.len() > SLUG_MAX {
        let cut = slug[..SLUG_MAX].rfind('-').unwrap_or(SLUG_MAX);
        slug.truncate(cut);
    }
    if slug.is_empty() {
        slug.push_str("article");
    }
    format!("{i:03}-{slug}.txt")
}

/// Character index of `text` in `context`: `start` when it is there, else its nearest
/// occurrence within [`MAX_SHIFT`] characters.
fn locate(context: &[char], text: &[char], start: usize) -> Option<usize> {
    let at = |s: usize| context.get(s..s + text.len()).is_some_and(|w| w == text);
    if at(start) {
        return Some(start);
    }
    (1..=MAX_SHIFT).flat_map(|d| [start.checked_add(d), start.checked_sub(d)]).flatten().find(|&s| at(s))
}

/// A SQuAD file in the dataset format, not yet written: what [`convert`] writes.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// `(file name, text)` of each article's document, in file order.
    pub docs: Vec<(String, String)>,
    /// The answerable questions, in file order; answer spans are byte ranges of their document.
    pub questions: Vec<Question>,
    /// Counts.
    pub summary: Summary,
}

/// Reads the SQuAD JSON at `json` and writes `out/corpus/*.txt` and `out/questions.jsonl`
/// (the directory is created; existing files of the same names are replaced).
pub fn convert(json: &Path, out: &Path) -> Result<Summary, Error> {
    let io = |path: PathBuf| move |source| Error::Io { path, source };
    let bytes = std::fs::read(json).map_err(io(json.to_path_buf()))?;
    let parsed = parse(json, &bytes)?;
    let corpus = out.join("corpus");
    std::fs::create_dir_all(&corpus).map_err(io(corpus.clone()))?;
    for (name, text) in &parsed.docs {
        let path = corpus.join(name);
        std::fs::write(&path, text.as_bytes()).map_err(io(path.clone()))?;
    }
    let mut lines = String::new();
    for q in &parsed.questions {
        let line = serde_json::to_string(q).map_err(|e| Error::Format {
            path: json.to_path_buf(),
            line: 0,
            detail: e.to_string(),
        })?;
        lines.push_str(&line);
        lines.push('\n');
    }
    let qpath = out.join("questions.jsonl");
    let tmp = out.join("questions.jsonl.tmp");
    std::fs::write(&tmp, lines.as_bytes()).map_err(io(tmp.clone()))?;
    std::fs::rename(&tmp, &qpath).map_err(io(qpath))?;
    Ok(parsed.summary)
}

/// Parses SQuAD JSON `bytes` (read from `json`, named in errors) into documents and questions.
pub fn parse(json: &Path, bytes: &[u8]) -> Result<Parsed, Error> {
    let bad = |detail: String| Error::Format { path: json.to_path_buf(), line: 0, detail };
    let file: File = serde_json::from_slice(bytes).map_err(|e| Error::Format {
        path: json.to_path_buf(),
        line: e.line(),
        detail: format!(
            "not SQuAD JSON ({{\"data\": [{{\"title\", \"paragraphs\": [{{\"context\", \"qas\"}}]}}]}}): {e}"
        ),
    })?;
    let mut summary = Summary { articles: 0, questions: 0, answers: 0, unanswerable: 0, shifted: Vec::new() };
    let (mut docs, mut questions) = (Vec::new(), Vec::new());
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    for (i, art) in file.data.iter().enumerate() {
        let doc = doc_name(i, &art.title);
        if !names.insert(doc.clone()) {
            return Err(bad(format!("two articles map to the file name {doc}")));
        }
        let mut text = String::new();
        for (pi, p) in art.paragraphs.iter().enumerate() {
            if pi > 0 {
                text.push_str(SEPARATOR);
            }
            let offset = text.len() as u64;
            text.push_str(&p.context);
            let chars: Vec<char> = p.context.chars().collect();
            for qa in &p.qas {
                if !ids.insert(qa.id.clone()) {
                    return Err(bad(format!("duplicate question id {}", qa.id)));
                }
                if qa.is_impossible || qa.answers.is_empty() {
                    summary.unanswerable += 1;
                    continue;
                }
                let mut answers = Vec::with_capacity(qa.answers.len());
                for a in &qa.answers {
                    let atext: Vec<char> = a.text.chars().collect();
                    let c = locate(&chars, &atext, a.answer_start).ok_or_else(|| {
                        bad(format!(
                            "question {}: answer {:?} is not at character {} of its paragraph (nor within {MAX_SHIFT})",
                            qa.id, a.text, a.answer_start
                        ))
                    })?;
                    if c != a.answer_start && summary.shifted.last() != Some(&qa.id) {
                        summary.shifted.push(qa.id.clone());
                    }
                    let start = offset + chars[..c].iter().map(|ch| ch.len_utf8() as u64).sum::<u64>();
                    answers.push(AnswerSpan { text: a.text.clone(), start, end: start + a.text.len() as u64 });
                }
                summary.answers += answers.len();
                summary.questions += 1;
                questions.push(Question {
                    id: qa.id.clone(),
                    question: qa.question.clone(),
                    doc: doc.clone(),
                    answers,
                });
            }
        }
        docs.push((doc, text));
        summary.articles += 1;
    }
    Ok(Parsed { docs, questions, summary })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dataset;

    const JSON: &str = r#"{"version": "1.1", "data": [
      {"title": "Café_(Paris)", "paragraphs": [
        {"context": "The café opened in 1686. Its owner was Procopio.",
         "qas": [{"id": "a1", "question": "When?", "answers": [{"text": "1686", "answer_start": 19}, {"text": "in 1686", "answer_start": 16}]},
                 {"id": "a2", "question": "Who?", "answers": [{"text": "Procopio", "answer_start": 37}]}]},
        {"context": "Écrivains met there.",
         "qas": [{"id": "a3", "question": "Who met?", "answers": [{"text": "Écrivains", "answer_start": 0}]},
                 {"id": "a4", "question": "Impossible?", "answers": [], "is_impossible": true}]}]},
      {"title": "", "paragraphs": [{"context": "x", "qas": []}]}
    ]}"#;

    #[test]
    fn answers_become_byte_spans_of_the_joined_article() {
        let dir = std::env::temp_dir().join(format!("metarag-squad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("in.json");
        std::fs::write(&json, JSON).unwrap();
        let s = convert(&json, &dir.join("out")).unwrap();
        assert_eq!((s.articles, s.questions, s.answers, s.unanswerable), (2, 3, 4, 1));
        // "Procopio" starts at character 39, not 37: moved (one id listed once).
        assert_eq!(s.shifted, vec!["a2".to_string()]);
        let data = Dataset::load(&dir.join("out")).unwrap();
        assert_eq!(data.questions.len(), 3);
        assert_eq!(data.questions[0].doc, "000-cafe-paris.txt");
        let doc = std::fs::read(data.corpus.join("000-cafe-paris.txt")).unwrap();
        assert_eq!(doc, "The café opened in 1686. Its owner was Procopio.\n\nÉcrivains met there.".as_bytes());
        for q in &data.questions {
            for a in &q.answers {
                assert_eq!(&doc[a.start as usize..a.end as usize], a.text.as_bytes(), "{}", q.id);
            }
        }
        // "é" is two bytes: "1686" is at character 19 but byte 20.
        assert_eq!(data.questions[0].answers[0].start, 20);
        assert!(std::fs::read(data.corpus.join("001-article.txt")).is_ok(), "untitled article");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = std::env::temp_dir().join(format!("metarag-squad-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("bad.json");
        std::fs::write(&json, r#"{"data": [{"title": "t", "paragraphs": [{"context": "abc", "qas": [{"id": "q", "question": "?", "answers": [{"text": "zzz", "answer_start": 0}]}]}]}]}"#).unwrap();
        let e = convert(&json, &dir.join("out")).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("question q") && e.contains("zzz"), "{e}");
        std::fs::write(&json, "[1, 2]").unwrap();
        let e = convert(&json, &dir.join("out")).unwrap_err().to_string();
        assert!(e.contains("not SQuAD JSON"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_names_are_ascii_slugs() {
        assert_eq!(doc_name(7, "Sky_(United_Kingdom)"), "007-sky-united-kingdom.txt");
        assert_eq!(doc_name(0, "???"), "000-article.txt");
        assert_eq!(doc_name(3, "Beyonc%C3%A9"), "003-beyonce.txt", "URL-decoded, accents dropped");
    }
}

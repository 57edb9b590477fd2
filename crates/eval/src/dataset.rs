//! QA datasets on disk.
//!
//! The format (what `onnx/squad.py` writes for SQuAD v1.1 dev, and what you can write for
//! your own data):
//!
//! ```text
//! DIR/corpus/<file>        one document per file (UTF-8 text, Markdown, HTML or PDF)
//! DIR/questions.jsonl      one question per line:
//!   {"id": "q1", "question": "...", "doc": "<file>",
//!    "answers": [{"text": "...", "start": 120, "end": 131}]}
//! ```
//!
//! `start`/`end` are byte offsets into the document's loaded text (for `.txt` files, the
//! file's bytes). Duplicated answers are kept as given.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// A gold answer: its text and byte span in the question's document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerSpan {
    /// Answer text.
    pub text: String,
    /// Byte offset of the start.
    pub start: u64,
    /// Byte offset of the end.
    pub end: u64,
}

/// One question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// Question id.
    pub id: String,
    /// The question text.
    pub question: String,
    /// File name of its document inside `corpus/`.
    pub doc: String,
    /// Gold answers.
    pub answers: Vec<AnswerSpan>,
}

/// A corpus and its questions.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Directory of the documents.
    pub corpus: PathBuf,
    /// The questions, in file order.
    pub questions: Vec<Question>,
}

impl Dataset {
    /// Reads `dir/questions.jsonl` and checks that `dir/corpus` exists.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let corpus = dir.join("corpus");
        if !corpus.is_dir() {
            return Err(Error::Io {
                path: corpus,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no corpus directory"),
            });
        }
        let path = dir.join("questions.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        Ok(Dataset { corpus, questions: parse_questions(&path, &text)? })
    }
}

/// Parses the lines of a `questions.jsonl` (read from `path`, named in errors; blank lines
/// skipped): one [`Question`] per line, answer spans that do not end before they start.
pub fn parse_questions(path: &Path, text: &str) -> Result<Vec<Question>, Error> {
    {
        let path = path.to_path_buf();
        let mut questions = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let q: Question = serde_json::from_str(line).map_err(|e| Error::Format {
                path: path.clone(),
                line: i + 1,
                detail: e.to_string(),
            })?;
            if q.answers.iter().any(|a| a.end < a.start) {
                return Err(Error::Format {
                    path: path.clone(),
                    line: i + 1,
                    detail: "an answer ends before it starts".into(),
                });
            }
            questions.push(q);
        }
        Ok(questions)
    }
}

/// The passage of `text` that holds `answer`: the blank-line-delimited paragraph around its
/// byte span (SQuAD documents are their paragraphs joined by a blank line), widened to several
/// paragraphs when the span crosses a blank line. `None` when the span is not inside `text`
/// or not on character boundaries. Used as the GOLD context of `bench --answer-context gold`:
/// the reader's ceiling, with retrieval taken out.
///
/// ```
/// use metarag_eval::dataset::{gold_passage, AnswerSpan};
/// let text = "First paragraph.\n\nThe capital is Paris.\n\nLast one.";
/// let a = AnswerSpan { text: "Paris".into(), start: 33, end: 38 };
/// assert_eq!(&text[gold_passage(text, &a).unwrap()], "The capital is Paris.");
/// ```
pub fn gold_passage(text: &str, answer: &AnswerSpan) -> Option<std::ops::Range<usize>> {
    let (start, end) = (usize::try_from(answer.start).ok()?, usize::try_from(answer.end).ok()?);
    if start > end || end > text.len() || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
        return None;
    }
    let from = text[..start].rfind("\n\n").map_or(0, |i| i + 2);
    let to = text[end..].find("\n\n").map_or(text.len(), |i| end + i);
    Some(from..to)
}

#[cfg(test)]
mod gold_tests {
    use super::*;
    use proptest::prelude::*;

    fn span(s: usize, e: usize) -> AnswerSpan {
        AnswerSpan { text: String::new(), start: s as u64, end: e as u64 }
    }

    #[test]
    fn edges_and_bad_spans() {
        let t = "one\n\ntwo three\n\nfour";
        assert_eq!(&t[gold_passage(t, &span(0, 3)).unwrap()], "one");
        assert_eq!(&t[gold_passage(t, &span(16, 20)).unwrap()], "four");
        // crossing a blank line: both paragraphs
        assert_eq!(&t[gold_passage(t, &span(1, 7)).unwrap()], "one\n\ntwo three");
        assert_eq!(gold_passage(t, &span(3, 99)), None);
        assert_eq!(gold_passage(t, &span(5, 4)), None);
        assert_eq!(gold_passage("é", &span(1, 2)), None);
    }

    proptest! {
        /// The passage contains the answer span and no blank line outside it.
        #[test]
        fn passage_holds_the_answer(paras in proptest::collection::vec("[a-z ]{0,12}", 1..6), a in 0usize..80, len in 0usize..10) {
            let text = paras.join("\n\n");
            let (s, e) = (a.min(text.len()), (a + len).min(text.len()));
            let r = gold_passage(&text, &span(s, e)).expect("ASCII text: every span is valid");
            prop_assert!(r.start <= s && e <= r.end);
            prop_assert!(!text[r.start..s].contains("\n\n") && !text[e..r.end].contains("\n\n"));
            prop_assert!(r.start == 0 || text[..r.start].ends_with("\n\n"));
            prop_assert!(r.end == text.len() || text[r.end..].starts_with("\n\n"));
        }
    }
}

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
        Ok(Dataset { corpus, questions })
    }
}

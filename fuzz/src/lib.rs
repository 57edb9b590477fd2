//! What the fuzz targets check, one function per target, so the committed regression inputs
//! and seeds also run as ordinary tests (`tests/tests.rs` includes this file).

use std::path::Path;
use std::time::Duration;

use metarag_core::chunk::{Chars, Words, merge};
use metarag_core::load::{LoadOptions, load_bytes, quiet_pdf_panics};
use metarag_core::pipeline::Pipeline;
use metarag_core::split::{RuleSplitter, SentenceSplitter};
use metarag_core::tiles;
use metarag_eval::dataset::parse_questions;
use metarag_eval::squad;

/// Loads `data` as the file `name` through the same containment the CLI uses (PDF parsing in
/// its own thread, panics caught, a time limit) and checks the result: an error names the file;
/// a document has text that is not blank, pages that are in order, inside the text and on
/// character boundaries.
pub fn check_load(name: &str, data: &[u8]) {
    quiet_pdf_panics(); // after libFuzzer's own hook: contained PDF panics stay silent, others abort
    let opts = LoadOptions::default().with_pdf_timeout(Duration::from_secs(10));
    match load_bytes(Path::new(name), data, &opts) {
        Err(e) => assert!(e.to_string().contains(name), "an error that does not name the file: {e}"),
        Ok(doc) => {
            assert!(!doc.text.trim().is_empty(), "a document with blank text");
            let mut at = 0;
            for r in &doc.pages {
                assert!(r.start >= at && r.start <= r.end && r.end <= doc.text.len(), "page range {r:?}");
                assert!(doc.text.is_char_boundary(r.start) && doc.text.is_char_boundary(r.end), "page range {r:?}");
                at = r.end;
            }
        }
    }
}

/// The sentence splitter (English, Chinese and Japanese rules together) and the merger: the
/// first byte is the merge target, the rest the text (if UTF-8). Sentence spans tile the text,
/// every span of a text with several holds a non-whitespace character, splitting is
/// deterministic, and merging to the target (in words and in characters) still tiles it.
pub fn check_split_merge(data: &[u8]) {
    let Some((&target, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let spans = RuleSplitter::default().split(text);
    assert!(tiles(&spans, text.len()), "sentence spans do not tile {text:?}: {spans:?}");
    if spans.len() > 1 {
        for s in &spans {
            assert!(!text[s.clone()].trim().is_empty(), "a blank sentence {s:?} in {text:?}");
        }
    }
    assert_eq!(spans, RuleSplitter::default().split(text), "not deterministic");
    for merged in [merge(text, &spans, target as usize, &Words), merge(text, &spans, target as usize, &Chars)] {
        assert!(tiles(&merged, text.len()), "merged spans do not tile {text:?}: {merged:?}");
        assert!(merged.len() <= spans.len());
    }
}

/// The pipeline TOML parser: any text parses or gives an error naming the file, and a parsed
/// pipeline survives a round trip through its own TOML.
pub fn check_pipeline_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Pipeline::from_toml(text, Path::new("fuzz.toml")) {
        Err(e) => assert!(e.to_string().contains("fuzz.toml"), "{e}"),
        Ok(p) => {
            let again = Pipeline::from_toml(&p.to_toml(), Path::new("again.toml"));
            assert_eq!(again.as_ref().ok(), Some(&p), "round trip of {text:?} gave {again:?}");
        }
    }
}

/// The dataset readers, `questions.jsonl` lines and SQuAD JSON: an error naming the file, or
/// questions whose answer spans are ordered; SQuAD answers are byte spans of their document
/// that hold the answer text.
pub fn check_questions(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        match parse_questions(Path::new("fuzz.jsonl"), text) {
            Err(e) => assert!(e.to_string().contains("fuzz.jsonl"), "{e}"),
            Ok(qs) => assert!(qs.iter().flat_map(|q| &q.answers).all(|a| a.start <= a.end)),
        }
    }
    match squad::parse(Path::new("fuzz.json"), data) {
        Err(e) => assert!(e.to_string().contains("fuzz.json"), "{e}"),
        Ok(p) => {
            for q in &p.questions {
                let doc = p.docs.iter().find(|(name, _)| *name == q.doc).map(|(_, t)| t.as_str());
                let doc = doc.unwrap_or_else(|| panic!("question {} has no document {}", q.id, q.doc));
                for a in &q.answers {
                    assert_eq!(doc.get(a.start as usize..a.end as usize), Some(a.text.as_str()), "{}", q.id);
                }
            }
        }
    }
}

/// The check of target `name` (a file name under `fuzz_targets/`), for the regression test.
pub fn check_of(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "load_pdf" => |d: &[u8]| check_load("fuzz.pdf", d),
        "load_html" => |d: &[u8]| check_load("fuzz.html", d),
        "load_sniffed" => |d: &[u8]| check_load("fuzz-input", d),
        "split_merge" => check_split_merge,
        "pipeline_toml" => check_pipeline_toml,
        "questions" => check_questions,
        _ => return None,
    })
}

//! Invariants every chunker keeps, checked over generated documents with the deterministic
//! fakes: chunks tile the text, none is empty, output is deterministic.

use std::ops::Range;

use proptest::prelude::*;

use super::*;
use crate::split::{RuleSplitter, SentenceSplitter};
use crate::testing::{FakeEmbedder, FakeJudge, FakeScorer, FakeTokens};
use crate::{Document, tiles};

fn chunkers() -> Vec<(&'static str, Box<dyn Chunker>)> {
    vec![
        ("ppl", Box::new(PplChunker::new(FakeScorer, PplConfig::default()))),
        (
            "ppl-both-adaptive",
            Box::new(PplChunker::new(
                FakeScorer,
                PplConfig { threshold: 0.5, rule: BoundaryRule::Both, adaptive: true, overlap: false },
            )),
        ),
        ("margin", Box::new(MarginChunker::new(FakeJudge, MarginConfig::default()))),
        ("semantic (mean groups)", Box::new(SemanticChunker::new(FakeEmbedder::default(), SemanticConfig::default()))),
        (
            "semantic-joined",
            Box::new(SemanticChunker::new(
                FakeEmbedder::default(),
                SemanticConfig { groups: GroupEmbedding::Joined, ..SemanticConfig::default() },
            )),
        ),
        ("sentence", Box::new(SentenceChunker)),
        ("fixed", Box::new(FixedChunker::new(FakeTokens, 7).expect("size"))),
    ]
}

fn spans(c: &Chunked) -> Vec<Range<usize>> {
    c.chunks.iter().map(|c| c.span.clone()).collect()
}

fn text_strategy() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        "[a-z]{1,8}",
        "[A-Z][a-z]{0,6}",
        "[0-9]{1,3}(\\.[0-9])?",
        Just("Dr.".to_string()),
        Just("e.g.".to_string()),
        Just("东京。".to_string()),
        Just("🙂".to_string()),
    ];
    let sep = prop_oneof![
        4 => Just(" ".to_string()),
        1 => Just(". ".to_string()),
        1 => Just("? ".to_string()),
        1 => Just(".\n\n".to_string()),
        1 => Just("\n- ".to_string()),
        1 => Just("  ".to_string()),
    ];
    prop::collection::vec((word, sep), 0..80).prop_map(|v| v.into_iter().map(|(w, s)| w + &s).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_chunker_tiles_the_document(text in text_strategy()) {
        let doc = Document::from_text("p", text.clone());
        let sentences = RuleSplitter::default().split(&doc.text);
        for (name, chunker) in chunkers() {
            let a = chunker.chunk(&doc, &sentences).expect("chunk");
            let b = chunker.chunk(&doc, &sentences).expect("chunk");
            prop_assert_eq!(format!("{:?}", a), format!("{:?}", b), "{} is not deterministic", name);
            let s = spans(&a);
            prop_assert!(tiles(&s, text.len()), "{}: {:?} do not tile {} bytes", name, s, text.len());
            prop_assert!(a.chunks.iter().enumerate().all(|(i, c)| c.index == i));
            if !a.sentence_scores.is_empty() {
                prop_assert_eq!(a.sentence_scores.len(), sentences.len(), "{}", name);
            }
        }
    }

    #[test]
    fn overlap_mode_covers_everything_in_order(text in text_strategy()) {
        let doc = Document::from_text("p", text.clone());
        let sentences = RuleSplitter::default().split(&doc.text);
        let cfg = PplConfig { overlap: true, ..PplConfig::default() };
        let out = PplChunker::new(FakeScorer, cfg).chunk(&doc, &sentences).expect("chunk");
        let s = spans(&out);
        if !text.is_empty() {
            prop_assert_eq!(s.first().map(|r| r.start), Some(0));
            prop_assert_eq!(s.last().map(|r| r.end), Some(text.len()));
        }
        for w in s.windows(2) {
            // the next chunk starts at or before the previous end (the repeated sentence)
            prop_assert!(w[1].start <= w[0].end && w[1].start > w[0].start && w[1].end > w[0].end);
        }
        prop_assert!(s.iter().all(|r| r.end > r.start));
    }

    #[test]
    fn merge_keeps_tiling_and_respects_the_target(text in text_strategy(), target in 1usize..60) {
        let doc = Document::from_text("p", text.clone());
        let sentences = RuleSplitter::default().split(&doc.text);
        let merged = merge(&text, &sentences, target, &Words);
        prop_assert!(tiles(&merged, text.len()) || (text.is_empty() && merged.is_empty()));
        for m in &merged {
            let parts: Vec<&Range<usize>> = sentences.iter().filter(|s| s.start >= m.start && s.end <= m.end).collect();
            let size: usize = parts.iter().map(|s| Words.size(&text[(*s).clone()])).sum();
            prop_assert!(size <= target || parts.len() == 1, "merged chunk of {} words over target {}", size, target);
        }
        // Greedy: no two neighbours could have been merged.
        for w in merged.windows(2) {
            let a: usize = sentences.iter().filter(|s| s.start >= w[0].start && s.end <= w[0].end).map(|s| Words.size(&text[s.clone()])).sum();
            let first_next = sentences.iter().find(|s| s.start == w[1].start).map(|s| Words.size(&text[s.clone()])).unwrap_or(0);
            prop_assert!(a + first_next > target);
        }
    }
}

#[test]
fn empty_document_gives_no_chunk() {
    let doc = Document::from_text("e", "");
    for (name, chunker) in chunkers() {
        assert!(chunker.chunk(&doc, &[]).expect("chunk").chunks.is_empty(), "{name}");
    }
}

#[test]
fn ppl_cuts_where_the_topic_changes() {
    // FakeScorer: repeated words are cheap, new words expensive, so the last sentence of a
    // topic is a minimum before the new topic's first sentence.
    let doc =
        Document::from_text("t", "Cats purr. Cats purr nap. Cats nap. Stocks fell. Stocks fell fast. Stocks fast.");
    let sentences = RuleSplitter::default().split(&doc.text);
    assert_eq!(sentences.len(), 6);
    let out = PplChunker::new(FakeScorer, PplConfig::default()).chunk(&doc, &sentences).expect("chunk");
    let texts: Vec<&str> = out.chunks.iter().map(|c| &doc.text[c.span.clone()]).collect();
    assert_eq!(texts, ["Cats purr. Cats purr nap. Cats nap.", " Stocks fell. Stocks fell fast. Stocks fast."]);
}

#[test]
fn percentile_matches_numpy_linear() {
    assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.0), 1.0);
    assert_eq!(percentile(&[3.0, 1.0, 2.0], 100.0), 3.0);
    assert!((percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 95.0) - 4.8).abs() < 1e-6);
    assert!(percentile(&[], 50.0).is_nan());
}

/// Records every text it is asked to embed (and embeds it with [`FakeEmbedder`]).
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<String>>);

impl crate::model::SentenceEmbedder for Recording {
    fn embed(&self, texts: &[&str]) -> crate::Result<Vec<Vec<f32>>> {
        self.0.lock().expect("lock").extend(texts.iter().map(|t| t.to_string()));
        FakeEmbedder::default().embed(texts)
    }
}

#[test]
fn semantic_mean_groups_embed_each_sentence_once_and_agree_without_neighbours() {
    let text = "The cat sat on the mat. The cat sat again. Quantum chromodynamics binds quarks. \
                Gluons carry the strong force. The cat slept. It was a long day for the cat.";
    let doc = Document::from_text("d", text);
    let sentences = RuleSplitter::default().split(text);
    let rec = Recording::default();
    let mean = SemanticConfig { groups: GroupEmbedding::Mean, percentile: 50.0, ..SemanticConfig::default() };
    let out = SemanticChunker::new(&rec, mean.clone()).chunk(&doc, &sentences).expect("chunk");
    assert!(tiles(&spans(&out), text.len()));
    let seen = rec.0.lock().expect("lock").clone();
    let want: Vec<String> = sentences.iter().map(|r| text[r.clone()].trim().to_string()).collect();
    assert_eq!(seen, want, "mean groups embed each sentence once, in order");
    // With no neighbours a group is its sentence: both ways give the same distances.
    let joined = SemanticConfig { buffer: 0, groups: GroupEmbedding::Joined, ..mean.clone() };
    let alone = SemanticConfig { buffer: 0, ..mean };
    let a = SemanticChunker::new(FakeEmbedder::default(), joined).chunk(&doc, &sentences).expect("chunk");
    let b = SemanticChunker::new(FakeEmbedder::default(), alone).chunk(&doc, &sentences).expect("chunk");
    assert_eq!(spans(&a), spans(&b));
    let bits = |c: &Chunked| c.sentence_scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
}

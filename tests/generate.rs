//! Generation with the real SmolLM2: the batched KV-cache paths (shared prefix and copied
//! cache) agree with plain forwards, batching does not change candidates, and `metarag ask`
//! answers the example corpus's known-answer questions, citing the right file (4 of 6 with
//! this 135M model).

use std::sync::OnceLock;

use metarag_core::model::{CausalModel, Vocabulary};
use metarag_generate::causal::{CausalConfig, decode};
use metarag_generate::template::Prompt;
use metarag_onnx::{CausalLm, LmConfig, RuntimeOptions};

use crate::index::{KNOWN, example_index, metarag};

fn lm() -> &'static CausalLm {
    static LM: OnceLock<CausalLm> = OnceLock::new();
    LM.get_or_init(|| {
        let cfg = LmConfig { window: 32, max_context: 8192, max_position: 8192, sink_tokens: 4 };
        CausalLm::load(&RuntimeOptions::default().with_threads(2), cfg)
            .expect("load SmolLM2 (run `python3 onnx/setup.py`)")
    })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn forked_steps_and_continuations_match_plain_forwards() {
    // One model per cache path (the path is chosen when a model is built).
    let cfg = LmConfig { window: 32, max_context: 8192, max_position: 8192, sink_tokens: 4 };
    for shared in [true, false] {
        let lm =
            CausalLm::load(&RuntimeOptions::default().with_threads(2), cfg.clone()).unwrap().with_shared_prefix(shared);
        assert_eq!(lm.shared_prefix_decoder().is_some(), shared, "setup installs the shared-prefix decoder graph");
        forked_paths_match(&lm);
    }
}

#[allow(clippy::unwrap_used)] // a test body, called for each cache path
fn forked_paths_match(lm: &CausalLm) {
    // 64 tokens so the prefill runs in two 32-token windows.
    let text = "The Debian project releases a new stable distribution about every two years. \
        Each release has a code name taken from the Toy Story films, and the current one is \
        maintained by the security team until the next release appears, after which it becomes \
        oldstable and is supported for another year by volunteers of the long term support team.";
    let prompt = lm.encode(text).unwrap();
    assert!(prompt.len() > 32, "{} tokens", prompt.len());
    let prefix = lm.prefill(&prompt).unwrap();
    let v = lm.vocab_size();
    assert_eq!(lm.prefix_logits(&prefix).len(), v);

    // Three rows stepping the same tokens give the same logits as a fresh prefill.
    let next = lm.encode(" Debian").unwrap();
    let mut batch = lm.fork(&prefix, 3).unwrap();
    let rows = lm.step(&mut batch, &[next[0], next[0], 5]).unwrap();
    let mut longer = prompt.clone();
    longer.push(next[0]);
    let fresh = lm.prefill(&longer).unwrap();
    assert!(max_diff(&rows[..v], lm.prefix_logits(&fresh)) < 2e-3);
    assert!(max_diff(&rows[v..2 * v], &rows[..v]) < 1e-4);
    // Dropping a row keeps the others' caches.
    lm.retain(&mut batch, &[1]).unwrap();
    let one = lm.step(&mut batch, &[next[0]]).unwrap();
    longer.push(next[0]);
    let fresh2 = lm.prefill(&longer).unwrap();
    assert!(max_diff(&one, lm.prefix_logits(&fresh2)) < 2e-3);

    // Continuation scores equal those of the whole sequence scored in one forward.
    let conts = [lm.encode(" It is called bullseye.").unwrap(), lm.encode(" No.").unwrap()];
    let scored = lm.continuation_logprobs(&prefix, &conts).unwrap();
    for (c, s) in conts.iter().zip(&scored) {
        let mut whole = prompt.clone();
        whole.extend(c);
        let all = lm.token_logprobs(&[&whole]).unwrap().remove(0);
        let tail = &all[all.len() - c.len()..];
        assert!(max_diff(s, tail) < 2e-3, "{s:?} vs {tail:?}");
    }
}

#[test]
fn batching_does_not_change_candidates_with_the_real_model() {
    let lm = lm();
    let prefix =
        lm.encode("<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\nThe colours are:").unwrap();
    let prompt =
        Prompt { prefix, suffix: lm.encode("<|im_end|>").unwrap(), chunks: vec![], baseline: None, question: vec![] };
    let cfg = CausalConfig { samples: 8, max_tokens: 8, seed: 3, ..CausalConfig::default() };
    let together = decode(lm, &prompt, None, &cfg).unwrap();
    let alone = decode(lm, &prompt, None, &CausalConfig { batched: false, ..cfg.clone() }).unwrap();
    let texts = |d: &metarag_generate::causal::Decoded| d.candidates.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&together), texts(&alone));
    for (a, b) in together.candidates.iter().zip(&alone.candidates) {
        assert!(max_diff(&a.logprobs, &b.logprobs) < 2e-3);
    }
    // Batched: one forward per step for all rows; one by one: one per row and step.
    assert!(together.forwards < alone.forwards, "{} vs {}", together.forwards, alone.forwards);
}

#[test]
fn ask_answers_the_known_questions_citing_the_right_file() {
    let index = example_index();
    let mut failures = Vec::new();
    // The short answers of examples/README.md (a reply must contain one and stay within the
    // 16-token answer budget).
    let answers: [&[&str]; 6] =
        [&["ishmael"], &["upon his sword"], &["3,000,000"], &["kentucky"], &["400"], &["bullseye"]];
    // All six from a file in one process (the models load once); the first also alone, which
    // must give the same answer.
    let questions: Vec<&str> = KNOWN.iter().map(|k| k.0).collect();
    let replies = crate::infill::ask_questions(index.to_str().unwrap(), &questions, &[]);
    let alone = metarag(&["ask", "--index", index.to_str().unwrap(), KNOWN[0].0, "--json"]);
    assert!(alone.status.success(), "ask failed: {}", String::from_utf8_lossy(&alone.stderr));
    let alone: serde_json::Value = serde_json::from_slice(&alone.stdout).expect("JSON");
    assert_eq!(alone["text"], replies[0]["text"], "--questions answers as a single ask does");
    assert_eq!(alone["candidates"].as_array().map(Vec::len), replies[0]["candidates"].as_array().map(Vec::len));
    for (((question, file, _), accepted), v) in KNOWN.iter().zip(answers).zip(&replies) {
        assert_eq!(v["question"], *question);
        let text = v["text"].as_str().unwrap().to_string();
        let cited: Vec<String> =
            v["citations"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap_or("").to_string()).collect();
        let norm = |s: &str| metarag_core::answer::normalize_answer(s);
        let right_answer =
            accepted.iter().any(|a| norm(&text).contains(&norm(a))) && text.split_whitespace().count() <= 16;
        let right_source = cited.iter().any(|p| p.ends_with(file));
        assert_eq!(v["candidates"].as_array().unwrap().len(), 8);
        if !(right_answer && right_source) {
            failures.push(format!(
                "{question}: answered {text:?} citing {cited:?}; expected {:?} from {file}",
                accepted[0]
            ));
        }
    }
    // SmolLM2-135M gets 4 of the 6 with the defaults (it answers "What of it" for Ishmael and
    // picks a wrong span for bullseye, both with the right chunk in its context); a change that
    // loses one of the 4 fails here.
    assert!(failures.len() <= 2, "{} of 6 wrong:\n{}", failures.len(), failures.join("\n"));
    eprintln!("known answers: {} of 6 right; wrong:\n{}", 6 - failures.len(), failures.join("\n"));
}

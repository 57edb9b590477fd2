//! The trained masked-diffusion answer model (`onnx/adapters/masked-lora.npz`, merged by setup
//! into `models/smollm2-135m-masked/`): the ONNX prompt and block graphs give the training
//! framework's per-position NLLs, every sampler keeps its invariants on it, `ask --decoder
//! masked` answers held-out questions, and bad settings are clear errors.

use std::sync::{Mutex, OnceLock};

use metarag_core::model::{MaskedDenoiser, Vocabulary};
use metarag_generate::masked::{MaskedConfig, Schedule, decode, decode_candidates};
use metarag_onnx::{BlockDenoiser, RuntimeOptions};

use crate::root;

fn model() -> &'static BlockDenoiser {
    static M: OnceLock<BlockDenoiser> = OnceLock::new();
    M.get_or_init(|| {
        BlockDenoiser::load(&RuntimeOptions::default().with_threads(2))
            .expect("load the masked answer model (run `python3 onnx/setup.py`)")
    })
}

fn fixture() -> serde_json::Value {
    let path = root().join("tests/fixtures/masked_oracle.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// -log softmax(logits)[target] in f64.
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let lse = max + logits.iter().map(|&x| (f64::from(x) - max).exp()).sum::<f64>().ln();
    lse - f64::from(logits[target as usize])
}

#[test]
fn block_denoiser_matches_the_training_framework() {
    let m = model();
    let fx = fixture();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 3);
    let v = m.vocab_size();
    for case in cases {
        let prompt = ids(&case["prompt_ids"]);
        let row = ids(&case["row_ids"]);
        let target = ids(&case["block_target"]);
        let want: Vec<f64> = case["nll"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(row[0], *prompt.last().unwrap(), "the row starts with the prompt's last token");
        // The denoiser prepends the start token itself and feeds the prompt's last token.
        assert_eq!(Some(prompt[0]), m.token_id("<issue_start>"));
        let slot = row[1..].to_vec();
        let logits = m.denoise_slots(&prompt[1..], std::slice::from_ref(&slot), &[]).expect("denoise");
        assert_eq!(logits.len(), slot.len() * v);
        let worst =
            (0..slot.len()).map(|j| (nll(&logits[j * v..(j + 1) * v], target[j]) - want[j]).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-3, "{}: max |dNLL| {worst:.2e} nats against PyTorch", case["id"]);
        // Three rows over one shared prompt cache: each row as if alone.
        let mut other = slot.clone();
        other.iter_mut().step_by(2).for_each(|t| *t = m.mask_id());
        let all_masked = vec![m.mask_id(); slot.len()];
        let batch =
            m.denoise_slots(&prompt[1..], &[slot.clone(), other.clone(), all_masked.clone()], &[]).expect("batch");
        for (r, s) in [slot, other, all_masked].iter().enumerate() {
            let alone = m.denoise_slots(&prompt[1..], std::slice::from_ref(s), &[]).expect("alone");
            let n = alone.len();
            let diff = batch[r * n..(r + 1) * n].iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff < 1e-3, "{}: row {r} differs from its lone decode by {diff}", case["id"]);
        }
    }
}

/// Passes calls through to the real model and records every slot it is given.
struct Recording<'a> {
    inner: &'a BlockDenoiser,
    seen: Mutex<Vec<Vec<u32>>>,
}

impl Vocabulary for Recording<'_> {
    fn encode(&self, text: &str) -> metarag_core::Result<Vec<u32>> {
        self.inner.encode(text)
    }
    fn decode(&self, ids: &[u32]) -> metarag_core::Result<String> {
        self.inner.decode(ids)
    }
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_id(token)
    }
}

impl MaskedDenoiser for Recording<'_> {
    fn mask_id(&self) -> u32 {
        self.inner.mask_id()
    }
    fn denoise(&self, rows: &[Vec<u32>]) -> metarag_core::Result<Vec<f32>> {
        self.inner.denoise(rows)
    }
    fn denoise_slots(&self, prefix: &[u32], slots: &[Vec<u32>], suffix: &[u32]) -> metarag_core::Result<Vec<f32>> {
        self.seen.lock().expect("lock").extend(slots.iter().cloned());
        self.inner.denoise_slots(prefix, slots, suffix)
    }
}

#[test]
fn every_sampler_keeps_its_invariants_on_the_trained_model() {
    let m = model();
    let fx = fixture();
    let case = &fx["cases"][0];
    let prompt = ids(&case["prompt_ids"]);
    let prefix = &prompt[1..];
    let stop = [m.token_id("<|endoftext|>").expect("eot")];
    let len = m.block();
    let cases = [
        ("low-confidence", MaskedConfig::default().with_temperature(0.7)),
        ("low-confidence, 5 steps in 5 blocks", MaskedConfig::default().with_steps(5).with_block_length(4)),
        ("threshold 0.9", MaskedConfig::default().with_schedule(Schedule::Threshold { threshold: 0.9 })),
        ("first hitting", MaskedConfig::default().with_schedule(Schedule::FirstHitting).with_temperature(1.0)),
        (
            "ordered end, threshold (the CLI's rule)",
            MaskedConfig::default()
                .with_schedule(Schedule::Threshold { threshold: 0.9 })
                .with_temperature(0.7)
                .with_ordered_end(true),
        ),
    ];
    for (name, cfg) in cases {
        let cfg = cfg.with_length(len).with_seed(3);
        let n = 3;
        let out = decode(m, prefix, &[], &stop, n, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out.forwards >= 1 && out.forwards <= len, "{name}: {} forwards", out.forwards);
        for c in &out.candidates {
            assert!(!c.tokens.contains(&m.mask_id()), "{name}: a mask is left in {:?}", c.tokens);
            assert!(c.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0), "{name}: {:?}", c.logprobs);
        }
        let masks = |s: &[u32]| s.iter().filter(|&&t| t == m.mask_id()).count();
        for i in 0..n {
            // Candidate i alone (its own random stream) is candidate i of the batch (so the
            // same seed also gives the same candidates in another call); over its calls a
            // committed position is never rewritten and each call commits something.
            let rec = Recording { inner: m, seen: Mutex::new(Vec::new()) };
            let one = decode_candidates(&rec, prefix, &[], &stop, &[i], &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(one.candidates[0], out.candidates[i], "{name}: candidate {i} alone vs in the batch");
            let history = rec.seen.into_inner().expect("lock");
            assert_eq!(history[0], vec![m.mask_id(); len], "{name}: starts all masked");
            for w in history.windows(2) {
                assert!(masks(&w[1]) < masks(&w[0]), "{name}: candidate {i}: a call committed nothing");
                for (j, (&before, &after)) in w[0].iter().zip(&w[1]).enumerate() {
                    if before != m.mask_id() {
                        assert_eq!(after, before, "{name}: candidate {i}: position {j} rewritten");
                    }
                }
            }
        }
        if matches!(cfg.schedule, Schedule::FirstHitting) {
            assert_eq!(out.tokens_per_forward, 1.0, "{name}");
        }
    }
}

#[test]
fn bad_masked_settings_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("metarag-it-masked-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let index = dir.to_str().unwrap();
    let out = crate::index::metarag(&["ingest", "tests/fixtures/infill-known/tin.txt", "--index", index, "-q"]);
    assert!(out.status.success(), "ingest: {}", String::from_utf8_lossy(&out.stderr));
    for (args, want) in [
        (&["--length", "0"][..], "length must be at least 1"),
        (&["--steps", "0"][..], "steps must be in 1..="),
        (&["--length", "8", "--steps", "9"][..], "steps must be in 1..=8"),
        (&["--length", "8", "--block", "3"][..], "block_length must divide length 8"),
        (&["--length", "64"][..], "longer than the 20-token block"),
        (&["--schedule", "threshold", "--threshold", "1.5"][..], "threshold must be in [0, 1]"),
    ] {
        let mut argv = vec!["ask", "--index", index, "what is tin?", "--decoder", "masked"];
        argv.extend_from_slice(args);
        let out = crate::index::metarag(&argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ask_answers_held_out_questions_with_the_masked_model() {
    // Held-out documents (never trained on): every question listed must be answered exactly
    // (SQuAD exact match against the dataset's gold answers), from a cited chunk, by
    // `metarag ask --decoder masked` with its defaults. Screened when the adapter was exported
    // (see the list's comment); a question that stops passing is a regression.
    crate::infill::ask_known_answers("masked", &["--decoder", "masked"], &KNOWN, |v| {
        assert_eq!(v["decoder"], "masked");
        assert!(v["stats"]["committed_per_step"].as_f64().is_some_and(|c| c >= 1.0), "{}", v["stats"]);
    });
}

/// Held-out questions (SQuAD-Shifts, documents never trained on) the shipped masked adapter
/// answers exactly through the CLI: question, gold answers, the file it must cite.
/// Screened when the adapter was exported: of the first 12 held-out questions tried on tin.txt,
/// the second adapter (default slot 10) answered 7 exactly and cited; the five the first
/// adapter answered are listed (four of them, plus the infiller's superconductor question).
/// Re-screened when the end token's log-probability joined each candidate's path (RPC on 500
/// SQuAD dev questions: EM 0.322 -> 0.332, ECE 0.128 -> 0.041): "What's the symbol for Tin?"
/// now gets "stannum" (gold "Sn"): the eight candidates split 4-4 between "Sn" and "stannum",
/// and the model ends the answer after "Sn" with probability 0.81, after "stannum" with 0.995.
const KNOWN: [(&str, &[&str], &str); 4] = [
    ("What is the name of  the superconductor that is below 3.72K?", &["Tin"], "tin.txt"),
    ("What was the first alloy used on a large scale?", &["bronze"], "tin.txt"),
    ("What was Pewter used for?", &["flatware"], "tin.txt"),
    (
        "What was tin used for?",
        &["food packaging", "tin-plated metal was used for food packaging as tin cans"],
        "tin.txt",
    ),
];

//! Masked-diffusion decoding end to end through ONNX Runtime, on the synthetic masked
//! denoiser that `onnx/setup.py` builds (fixed weights that predict one known sentence in
//! the answer slot of a SmolLM2 chat prompt; `onnx/synthetic_denoiser.py`).

use std::sync::{Mutex, OnceLock};

use metarag_core::model::{MaskedDenoiser, Vocabulary};
use metarag_generate::Finish;
use metarag_generate::masked::{MaskedConfig, Schedule, decode, decode_candidates};
use metarag_onnx::{MaskedLm, RuntimeOptions, SYNTHETIC_DENOISER_DIR};

fn opts() -> RuntimeOptions {
    RuntimeOptions::default().with_threads(2)
}

fn lm() -> &'static MaskedLm {
    static LM: OnceLock<MaskedLm> = OnceLock::new();
    LM.get_or_init(|| MaskedLm::load(&opts()).expect("load the synthetic denoiser (run `python3 onnx/setup.py`)"))
}

/// The synthetic model's `denoiser.json`.
fn info() -> serde_json::Value {
    let path = opts().models_dir.join(SYNTHETIC_DENOISER_DIR).join("denoiser.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Passes calls through to the real model and records every row it is given.
struct Recording<'a> {
    inner: &'a MaskedLm,
    seen: Mutex<Vec<Vec<u32>>>,
}

impl Vocabulary for Recording<'_> {
    fn encode(&self, text: &str) -> metarag_core::Result<Vec<u32>> {
        Vocabulary::encode(self.inner, text)
    }
    fn decode(&self, ids: &[u32]) -> metarag_core::Result<String> {
        self.inner.decode(ids)
    }
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        Vocabulary::token_id(self.inner, token)
    }
}

impl MaskedDenoiser for Recording<'_> {
    fn mask_id(&self) -> u32 {
        self.inner.mask_id()
    }
    fn denoise(&self, rows: &[Vec<u32>]) -> metarag_core::Result<Vec<f32>> {
        self.seen.lock().expect("lock").extend(rows.iter().cloned());
        self.inner.denoise(rows)
    }
}

const PROMPT: &str = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
                      <|im_start|>user\nWho wrote this answer?<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn synthetic_denoiser_follows_the_contract() {
    let lm = lm();
    let info = info();
    assert_eq!(info["contract"], "masked-denoiser");
    assert_eq!(lm.mask_id(), 16);
    assert_eq!(lm.vocab_size(), 49152);
    assert_eq!(lm.token_id("<empty_output>"), Some(16));
    // The sentence's ids and the slot offset were computed by the script's own BPE: the real
    // tokenizer agrees.
    let sentence = info["sequence"].as_str().expect("sequence");
    let tokens: Vec<u32> =
        info["tokens"].as_array().expect("tokens").iter().map(|t| t.as_u64().expect("id") as u32).collect();
    assert_eq!(lm.encode(sentence).expect("encode"), tokens);
    assert_eq!(lm.encode("<|im_start|>assistant\n").expect("encode").len() as u64, info["slot_offset"]);

    // Rows must have equal lengths; the error names the graph file.
    let err = lm.forward(&[vec![1, 2], vec![1]]).expect_err("ragged rows");
    assert!(err.to_string().contains("synthetic-denoiser/model.onnx"), "{err}");
    // A graph of another contract is refused, naming the file.
    let models = opts().models_dir;
    let err = MaskedLm::from_files(
        &opts(),
        &models.join("all-minilm-l6-v2-int8/model.onnx"),
        &models.join("all-minilm-l6-v2-int8/tokenizer.json"),
        0,
    )
    .expect_err("the embedder is not a masked denoiser");
    let msg = err.to_string();
    assert!(msg.contains("all-minilm-l6-v2-int8/model.onnx") && msg.contains("masked-denoiser"), "{msg}");
}

#[test]
fn masked_decoding_recovers_the_sentence_with_every_schedule() {
    let lm = lm();
    let info = info();
    let sentence = info["sequence"].as_str().expect("sequence").trim().to_string();
    let tokens: Vec<u32> =
        info["tokens"].as_array().expect("tokens").iter().map(|t| t.as_u64().expect("id") as u32).collect();
    let prefix = lm.encode(PROMPT).expect("encode");
    let suffix = lm.encode("<|im_end|>\n").expect("encode");
    let im_end = Vocabulary::token_id(lm, "<|im_end|>").expect("im_end");
    let stop = [im_end, 0];
    let length = 16;
    // The slot holds the sentence, then <|im_end|>.
    let mut want_slot = tokens.clone();
    want_slot.resize(length, im_end);
    let (n, start) = (2, prefix.len());

    let cases = [
        ("low-confidence, 16 steps", MaskedConfig::default(), 16),
        ("low-confidence, 8 steps in 2 blocks", MaskedConfig::default().with_steps(8).with_block_length(8), 8),
        // 6 positions are above 0.9 at once; then each call commits the next one, which the
        // graph makes confident once its left neighbour is unmasked.
        ("threshold 0.9", MaskedConfig::default().with_schedule(Schedule::Threshold { threshold: 0.9 }), 11),
        ("first hitting", MaskedConfig::default().with_schedule(Schedule::FirstHitting).with_seed(7), 16),
    ];
    for (name, cfg, want_forwards) in cases {
        let schedule = cfg.schedule;
        let model = Recording { inner: lm, seen: Mutex::new(Vec::new()) };
        let cfg = cfg.with_length(length);
        let out = decode(&model, &prefix, &suffix, &stop, n, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.forwards, want_forwards, "{name}: forwards");
        assert!(out.forwards <= length);
        assert_eq!(out.row_steps, n * out.forwards, "{name}: both rows step at every call");
        assert!(out.row_forwards >= out.forwards && out.row_forwards <= out.row_steps, "{name}");
        if !matches!(schedule, Schedule::FirstHitting) {
            // a deterministic schedule keeps both rows in one state: one computed row per call
            assert_eq!(out.row_forwards, out.forwards, "{name}: identical rows share one");
        }
        assert!((out.tokens_per_forward - length as f64 / want_forwards as f64).abs() < 1e-12, "{name}");
        for c in &out.candidates {
            assert_eq!(c.text, sentence, "{name}: candidate {}", c.index);
            assert_eq!(c.tokens, tokens, "{name}");
            assert_eq!(c.finish, Finish::Stop, "{name}");
            assert_eq!(c.logprobs.len(), tokens.len());
            assert!(c.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0), "{name}: {:?}", c.logprobs);
        }
        assert_eq!(model.seen.into_inner().expect("lock").len(), out.row_forwards);
        // Per row (each decoded alone, so every call shows its state), over the calls: committed
        // slot tokens are the sentence's, are never rewritten, and every call commits at least
        // one; prefix and suffix never change.
        for r in 0..n {
            let model = Recording { inner: lm, seen: Mutex::new(Vec::new()) };
            let one = decode_candidates(&model, &prefix, &suffix, &stop, &[r], &cfg)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(one.candidates[0], out.candidates[r], "{name}: row {r} alone differs from the batch");
            let seen = model.seen.into_inner().expect("lock");
            let mut history: Vec<&[u32]> = seen.iter().map(|row| &row[start..start + length]).collect();
            history.push(&want_slot);
            for row in &seen {
                assert_eq!(&row[..start], &prefix[..], "{name}: prefix changed");
                assert_eq!(&row[start + length..], &suffix[..], "{name}: suffix changed");
            }
            let mut committed = Vec::new();
            for w in history.windows(2) {
                let (a, b) = (w[0], w[1]);
                for i in 0..length {
                    if a[i] != lm.mask_id() {
                        assert_eq!(a[i], want_slot[i], "{name}: position {i} is not the sentence's token");
                        assert_eq!(b[i], a[i], "{name}: position {i} rewritten");
                    }
                }
                let masked = |s: &[u32]| s.iter().filter(|&&x| x == lm.mask_id()).count();
                assert!(masked(b) < masked(a), "{name}: a call committed nothing");
                committed.push(masked(a) - masked(b));
            }
            match schedule {
                Schedule::Threshold { .. } => assert_eq!(committed, [6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "{name}"),
                Schedule::FirstHitting => assert!(committed.iter().all(|&k| k == 1), "{name}"),
                Schedule::LowConfidence => {
                    assert!(committed.iter().all(|&k| k == length / want_forwards), "{name}: {committed:?}")
                }
            }
        }
    }
}

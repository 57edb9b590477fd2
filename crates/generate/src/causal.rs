//! The causal decoder: the prompt is computed once, its KV cache is forked into N rows that
//! are decoded together (one forward per step for all candidates), each row with its own
//! seeded random stream, so batching never changes the candidates. Free decoding, or
//! extractive decoding constrained to spans of the context ([`crate::constrain`]). With a
//! FIM model the prompt is PSM or SPM; with a plain causal model every candidate is rescored
//! with the template's suffix.
//!
//! ```
//! use metarag_generate::causal::{decode, CausalConfig};
//! use metarag_generate::template::Prompt;
//! use metarag_generate::testing::{peaked, ScriptedLm};
//! // A model that always says "yes" then stops.
//! let lm = ScriptedLm::new(&["<end>", "q", "yes"], &["<end>"], |ctx| {
//!     peaked(3, if *ctx.last().unwrap() == 2 { 0 } else { 2 }, 9.0)
//! });
//! let prompt = Prompt { prefix: vec![1], suffix: vec![0], chunks: vec![], baseline: None, question: vec![] };
//! let out = decode(&lm, &prompt, None, &CausalConfig { samples: 4, ..CausalConfig::default() })?;
//! assert_eq!(out.candidates.len(), 4);
//! assert!(out.candidates.iter().all(|c| c.text == "yes"));
//! # Ok::<(), metarag_generate::Error>(())
//! ```

use metarag_core::model::CausalModel;
use serde::{Deserialize, Serialize};

use crate::constrain::{Extractive, State};
use crate::sample::{Sampler, SamplerConfig, row_rng};
use crate::template::Prompt;
use crate::{Candidate, Error, Finish, Result, SpanSource};

/// Order of a fill-in-the-middle prompt (used only when the model declares FIM sentinels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FimOrder {
    /// `<PRE> prefix <SUF> suffix <MID>`.
    #[default]
    Psm,
    /// `<SUF> suffix <PRE> prefix <MID>`.
    Spm,
}

/// Causal decoding options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CausalConfig {
    /// Candidates N.
    pub samples: usize,
    /// Most answer tokens per candidate.
    pub max_tokens: usize,
    /// How tokens are drawn.
    pub sampler: SamplerConfig,
    /// Seed of the random streams (candidate i uses stream i).
    pub seed: u64,
    /// Text that ends an answer (besides the model's stop tokens).
    pub stop: Vec<String>,
    /// Decode all candidates as one batch (true) or one by one (the baseline).
    pub batched: bool,
    /// Rescore candidates with the template's suffix (plain causal models).
    pub rescore: bool,
    /// FIM prompt order, for models with FIM sentinels.
    pub fim: FimOrder,
    /// Cut each candidate at its most probable end: among the lengths where it could have
    /// stopped, keep the prefix with the highest sequence probability including the stop
    /// token (read from the logits already computed while decoding). Plain causal models only.
    pub cut: bool,
    /// Contrastive start (λ ≥ 0, 0 = off; needs [`Prompt::baseline`]): the first answer token
    /// is drawn from `log p(t | question) + λ·max(0, log p(t | question) − log p(t | no question))`
    /// (no boost for tokens of the question itself),
    /// favouring starts the question makes more likely over generic ones (pointwise mutual
    /// information; Holtzman et al. 2021). Later tokens and all scores use the plain model.
    pub contrast: f64,
}

impl Default for CausalConfig {
    fn default() -> Self {
        CausalConfig {
            samples: 8,
            max_tokens: 16,
            sampler: SamplerConfig::default(),
            seed: 0,
            stop: vec!["\n".into()],
            batched: true,
            rescore: true,
            fim: FimOrder::Psm,
            cut: true,
            contrast: 0.0,
        }
    }
}

/// What the decoder produced and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Decoded {
    /// One per sample, in row order.
    pub candidates: Vec<Candidate>,
    /// Tokens in the prompt actually run.
    pub prompt_tokens: usize,
    /// Model calls: prefill + decoding steps + rescoring.
    pub forwards: usize,
    /// Answer tokens produced over all candidates.
    pub generated_tokens: usize,
    /// True when the prompt was a FIM prompt (no rescoring needed).
    pub fim: bool,
}

struct Row {
    sampler: Sampler,
    rng: rand_chacha::ChaCha8Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    state: State,
    finish: Option<Finish>,
    text: String,
    /// (length, log P(stop | first `length` tokens)) where stopping was allowed.
    ends: Vec<(usize, f32)>,
    /// Log-probability of the stop token the row ended with.
    end: Option<f32>,
}

/// Decodes `cfg.samples` candidates for the slot of `prompt`, constrained to `extractive`
/// spans when given.
pub fn decode<M: CausalModel + ?Sized>(
    model: &M,
    prompt: &Prompt,
    extractive: Option<&Extractive>,
    cfg: &CausalConfig,
) -> Result<Decoded> {
    cfg.sampler.check().map_err(Error::Config)?;
    if cfg.samples == 0 || cfg.max_tokens == 0 {
        return Err(Error::Config(format!(
            "samples ({}) and max_tokens ({}) must be >= 1",
            cfg.samples, cfg.max_tokens
        )));
    }
    let (tokens, fim) = match model.fim_tokens() {
        Some(f) => {
            let mut t = Vec::with_capacity(prompt.prefix.len() + prompt.suffix.len() + 3);
            match cfg.fim {
                FimOrder::Psm => {
                    t.push(f.prefix);
                    t.extend(&prompt.prefix);
                    t.push(f.suffix);
                    t.extend(&prompt.suffix);
                }
                FimOrder::Spm => {
                    t.push(f.suffix);
                    t.extend(&prompt.suffix);
                    t.push(f.prefix);
                    t.extend(&prompt.prefix);
                }
            }
            t.push(f.middle);
            (t, true)
        }
        None => (prompt.prefix.clone(), false),
    };
    // The model's stop tokens, and the suffix's first token: writing it closes the slot.
    let mut stop = model.stop_tokens();
    if let Some(&s) = prompt.suffix.first()
        && !fim
        && !stop.contains(&s)
    {
        stop.push(s);
    }
    let prefix = model.prefill(&tokens)?;
    let mut forwards = 1;
    // The contrastive first-token logits (see `CausalConfig::contrast`).
    let first = match (&prompt.baseline, cfg.contrast > 0.0 && !fim) {
        (Some(base), true) if !base.is_empty() => {
            let b = model.prefill(base)?;
            forwards += 1;
            let with = crate::sample::log_softmax(model.prefix_logits(&prefix));
            let without = crate::sample::log_softmax(model.prefix_logits(&b));
            // Tokens of the question itself are likelier after it for no good reason (an answer
            // rarely repeats the question): they get no boost.
            let asked: std::collections::HashSet<u32> = prompt.question.iter().copied().collect();
            Some(
                with.iter()
                    .zip(&without)
                    .enumerate()
                    .map(|(t, (&w, &o))| {
                        let gain = if asked.contains(&(t as u32)) { 0.0 } else { (w - o).max(0.0) };
                        (w + cfg.contrast * gain) as f32
                    })
                    .collect::<Vec<f32>>(),
            )
        }
        _ => None,
    };
    let mut rows: Vec<Row> = (0..cfg.samples)
        .map(|i| Row {
            sampler: Sampler::new(&cfg.sampler),
            rng: row_rng(cfg.seed, i),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            state: extractive.map_or(0, |e| e.index.root()),
            finish: None,
            text: String::new(),
            ends: Vec::new(),
            end: None,
        })
        .collect();
    let groups: Vec<Vec<usize>> =
        if cfg.batched { vec![(0..cfg.samples).collect()] } else { (0..cfg.samples).map(|i| vec![i]).collect() };
    for group in groups {
        forwards += run_rows(model, &prefix, first.as_deref(), &mut rows, &group, extractive, &stop, cfg)?;
    }
    let ends: Vec<Vec<(usize, f32)>> = rows.iter_mut().map(|r| std::mem::take(&mut r.ends)).collect();
    let mut candidates: Vec<Candidate> = rows
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let source = extractive.and_then(|e| e.index.locate(r.state, r.tokens.len()));
            Candidate {
                index,
                text: r.text.trim().to_string(),
                tokens: r.tokens,
                logprobs: r.logprobs,
                // A FIM model's middle ends with its end-of-text token: part of the path's score.
                suffix_logprobs: if fim { r.end.into_iter().collect() } else { Vec::new() },
                finish: r.finish.unwrap_or(Finish::Length),
                source,
            }
        })
        .collect();
    let generated_tokens = candidates.iter().map(|c| c.tokens.len()).sum();
    if !fim && cfg.rescore && !prompt.suffix.is_empty() {
        let conts: Vec<Vec<u32>> =
            candidates.iter().map(|c| c.tokens.iter().chain(&prompt.suffix).copied().collect()).collect();
        let scored = model.continuation_logprobs(&prefix, &conts)?;
        forwards += 1;
        for (c, s) in candidates.iter_mut().zip(scored) {
            let n = c.tokens.len();
            c.logprobs = s[..n].to_vec();
            c.suffix_logprobs = s[n..].to_vec();
        }
    }
    if !fim && cfg.cut {
        for (c, ends) in candidates.iter_mut().zip(ends) {
            cut_at_best_end(model, c, &ends, extractive)?;
        }
    }
    Ok(Decoded { candidates, prompt_tokens: tokens.len(), forwards, generated_tokens, fim })
}

/// Decodes the rows `ids` together; returns the number of forwards used.
#[allow(clippy::too_many_arguments)]
fn run_rows<M: CausalModel + ?Sized>(
    model: &M,
    prefix: &M::Prefix,
    first_logits: Option<&[f32]>,
    rows: &mut [Row],
    ids: &[usize],
    extractive: Option<&Extractive>,
    stop: &[u32],
    cfg: &CausalConfig,
) -> Result<usize> {
    let vocab = model.vocab_size();
    let first = first_logits.unwrap_or_else(|| model.prefix_logits(prefix));
    if first.len() != vocab {
        return Err(Error::Logits { got: first.len(), expected: vocab });
    }
    // Rows with the same tokens so far have the same cache and logits: the batch holds each
    // distinct state once (`state[i]`: row `active[i]`'s), and a state whose rows sample
    // different tokens is copied (`retain` gathers). All rows start from the prefix's state.
    let mut active: Vec<usize> = ids.to_vec();
    let mut state: Vec<usize> = vec![0; active.len()];
    let mut logits: Vec<f32> = first.to_vec();
    let mut batch: Option<M::Batch> = None;
    let mut forwards = 0;
    loop {
        // (parent state, token) of each state of the next step
        let mut next: Vec<(usize, u32)> = Vec::with_capacity(active.len());
        let (mut keep, mut keep_state) = (Vec::with_capacity(active.len()), Vec::with_capacity(active.len()));
        for (i, &r) in active.iter().enumerate() {
            let row = &mut rows[r];
            let l = &logits[state[i] * vocab..(state[i] + 1) * vocab];
            // An answer that is empty once normalised ("The", "(") may not end here.
            let has_content = !metarag_core::answer::normalize_answer(&row.text).is_empty();
            let allowed = extractive.map(|e| {
                let mut a = e.allowed(row.state, row.tokens.len(), stop);
                if !has_content {
                    a.retain(|t| !stop.contains(t));
                }
                a
            });
            if allowed.as_ref().is_some_and(Vec::is_empty) {
                row.finish = Some(Finish::Exhausted);
                continue;
            }
            let may_stop =
                !row.tokens.is_empty() && allowed.as_ref().is_none_or(|a| a.iter().any(|t| stop.contains(t)));
            if cfg.cut && may_stop && has_content && !stop.is_empty() {
                row.ends.push((row.tokens.len(), stop_logprob(l, stop)));
            }
            let pick = row.sampler.sample(l, allowed.as_deref(), &mut row.rng);
            if stop.contains(&pick.token) {
                row.finish = Some(Finish::Stop);
                row.end = Some(pick.logprob as f32);
                continue;
            }
            row.tokens.push(pick.token);
            row.logprobs.push(pick.logprob as f32);
            if let Some(e) = extractive {
                row.state = e.index.advance(row.state, pick.token).unwrap_or(row.state);
            }
            row.text = model.decode(&row.tokens)?;
            if let Some(cut) = cfg.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| row.text.find(s.as_str())).min()
            {
                // The token that completed a stop sequence is not part of the answer.
                row.text.truncate(cut);
                row.tokens.pop();
                row.logprobs.pop();
                if let Some(e) = extractive {
                    row.state = e.index.walk(&row.tokens).unwrap_or(0);
                }
                row.finish = Some(Finish::Stop);
                continue;
            }
            if row.tokens.len() >= cfg.max_tokens {
                row.finish = Some(Finish::Length);
                continue;
            }
            let key = (state[i], pick.token);
            let s = next.iter().position(|&k| k == key).unwrap_or_else(|| {
                next.push(key);
                next.len() - 1
            });
            keep.push(r);
            keep_state.push(s);
        }
        if keep.is_empty() {
            return Ok(forwards);
        }
        let b = match batch.as_mut() {
            None => {
                // every parent is the prefix
                batch = Some(model.fork(prefix, next.len())?);
                batch.as_mut().ok_or_else(|| Error::Config("fork failed".into()))?
            }
            Some(b) => {
                let parents: Vec<usize> = next.iter().map(|&(p, _)| p).collect();
                model.retain(b, &parents)?;
                b
            }
        };
        active = keep;
        state = keep_state;
        let tokens: Vec<u32> = next.iter().map(|&(_, t)| t).collect();
        logits = model.step(b, &tokens)?;
        forwards += 1;
        if logits.len() != next.len() * vocab {
            return Err(Error::Logits { got: logits.len(), expected: next.len() * vocab });
        }
    }
}

/// `log P(any stop token)` under one logits row (a stop id outside the row has probability 0).
fn stop_logprob(logits: &[f32], stop: &[u32]) -> f32 {
    let lp = crate::sample::log_softmax(logits);
    let of = |t: u32| lp.get(t as usize).copied().unwrap_or(f64::NEG_INFINITY);
    let m = stop.iter().map(|&t| of(t)).fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m as f32;
    }
    (m + stop.iter().map(|&t| (of(t) - m).exp()).sum::<f64>().ln()) as f32
}

/// Keeps the prefix of `c` with the highest log-probability including its end: the whole
/// candidate (answer + rescored suffix) or a shorter prefix followed by a stop token.
fn cut_at_best_end<M: CausalModel + ?Sized>(
    model: &M,
    c: &mut Candidate,
    ends: &[(usize, f32)],
    extractive: Option<&Extractive>,
) -> Result<()> {
    let prefix_sum = |l: usize| c.logprobs[..l].iter().map(|&x| f64::from(x)).sum::<f64>();
    let full = if c.suffix_logprobs.is_empty() && c.finish != Finish::Stop {
        f64::NEG_INFINITY
    } else {
        prefix_sum(c.tokens.len()) + c.suffix_logprobs.iter().map(|&x| f64::from(x)).sum::<f64>()
    };
    let best = ends
        .iter()
        .filter(|&&(l, _)| l < c.tokens.len())
        .map(|&(l, s)| (l, s, prefix_sum(l) + f64::from(s)))
        .fold(None::<(usize, f32, f64)>, |b, x| match b {
            Some(b) if b.2 >= x.2 => Some(b),
            _ => Some(x),
        });
    if let Some((l, s, score)) = best
        && score > full
    {
        c.tokens.truncate(l);
        c.logprobs.truncate(l);
        c.suffix_logprobs = vec![s];
        c.finish = Finish::Stop;
        c.text = model.decode(&c.tokens)?.trim().to_string();
        c.source = extractive.and_then(|e| e.index.walk(&c.tokens).and_then(|st| e.index.locate(st, l)));
    }
    Ok(())
}

/// Checks that a candidate copied from the context really is the span it claims.
pub fn span_tokens<'a>(prompt: &'a Prompt, source: &SpanSource) -> Option<&'a [u32]> {
    prompt.chunks.get(source.chunk).and_then(|c| c.tokens.get(source.tokens.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ScriptedLm, peaked};
    use metarag_core::model::Vocabulary;

    const WORDS: &[&str] = &["<end>", "<pre>", "<suf>", "<mid>", "q", "a", "b", "c", "d", "e", ".", "\\n"];

    /// Next-token logits depend on the whole context (a hash), so rows diverge and any mix-up
    /// between rows would show.
    fn model() -> ScriptedLm {
        ScriptedLm::new(WORDS, &["<end>"], |ctx| {
            let h = ctx.iter().fold(7u64, |h, &t| h.wrapping_mul(31).wrapping_add(u64::from(t) + 1));
            (0..WORDS.len() as u64).map(|v| ((h.wrapping_mul(v + 3) >> 5) % 7) as f32 * 0.5).collect()
        })
    }

    fn prompt(lm: &ScriptedLm) -> Prompt {
        Prompt {
            prefix: lm.encode("q a b").unwrap(),
            suffix: lm.encode("<end>").unwrap(),
            chunks: vec![],
            baseline: None,
            question: vec![],
        }
    }

    fn cfg(batched: bool) -> CausalConfig {
        CausalConfig {
            samples: 8,
            max_tokens: 6,
            sampler: SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, mirostat: None },
            seed: 42,
            stop: vec![],
            batched,
            rescore: true,
            fim: FimOrder::Psm,
            cut: false,
            contrast: 0.0,
        }
    }

    #[test]
    fn contrastive_start_prefers_what_the_question_makes_likely() {
        // With the question "q" in the context, "b" becomes likely (2.5) but "a" stays the
        // most likely (3.0); without it, "b" is unlikely.
        let lm = ScriptedLm::new(WORDS, &["<end>"], |ctx| {
            let mut l = vec![0.0; WORDS.len()];
            if ctx.len() > 2 {
                l[0] = 9.0; // stop after the first answer token
            } else {
                l[5] = 3.0;
                l[6] = if ctx.contains(&4) { 2.5 } else { 0.0 };
            }
            l
        });
        let mut p = Prompt {
            prefix: lm.encode("c q").unwrap(),
            suffix: lm.encode("<end>").unwrap(),
            chunks: vec![],
            baseline: Some(lm.encode("c").unwrap()),
            question: vec![],
        };
        let greedy =
            CausalConfig { sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() }, ..cfg(true) };
        let plain = decode(&lm, &p, None, &greedy).unwrap();
        assert!(plain.candidates.iter().all(|c| c.text == "a"));
        let contrast = decode(&lm, &p, None, &CausalConfig { contrast: 1.0, ..greedy.clone() }).unwrap();
        assert!(contrast.candidates.iter().all(|c| c.text == "b"));
        assert_eq!(contrast.forwards, plain.forwards + 1, "one more prompt pass");
        // Scores stay the plain model's: the rescored first token is log p(b | question).
        let lp_b = crate::sample::log_softmax(&{
            let mut l = vec![0.0f32; WORDS.len()];
            l[5] = 3.0;
            l[6] = 2.5;
            l
        })[6];
        assert!((f64::from(contrast.candidates[0].logprobs[0]) - lp_b).abs() < 1e-5);
        // A token of the question itself gets no boost.
        p.question = lm.encode("b").unwrap();
        let asked = decode(&lm, &p, None, &CausalConfig { contrast: 1.0, ..greedy }).unwrap();
        assert!(asked.candidates.iter().all(|c| c.text == "a"));
    }

    #[test]
    fn candidates_are_cut_at_their_most_probable_end() {
        // After "c" the model slightly prefers to go on ("d", then "e" with a stop that is
        // unlikely), but stopping right after "c" has the higher sequence probability.
        let lm = ScriptedLm::new(WORDS, &["<end>"], |ctx| {
            let mut l = vec![0.0; WORDS.len()];
            match *ctx.last().unwrap() {
                6 => l[7] = 9.0, // b -> c
                7 => {
                    l[8] = 5.0;
                    l[0] = 4.9
                } // c -> d (or stop)
                8 => l[9] = 3.0, // d -> e, weakly
                _ => l[0] = 9.0, // e -> stop
            }
            l
        });
        let p = prompt(&lm);
        let greedy =
            CausalConfig { sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() }, ..cfg(true) };
        let whole = decode(&lm, &p, None, &greedy).unwrap();
        assert!(whole.candidates.iter().all(|c| c.text == "c d e"));
        let cut = decode(&lm, &p, None, &CausalConfig { cut: true, ..greedy }).unwrap();
        for c in &cut.candidates {
            assert_eq!(c.text, "c");
            assert_eq!((c.tokens.len(), c.logprobs.len(), c.suffix_logprobs.len(), c.finish), (1, 1, 1, Finish::Stop));
            // The kept end is scored: log P(stop | c).
            let lse = (5.0f64.exp() + 4.9f64.exp() + (WORDS.len() - 2) as f64).ln();
            assert!((f64::from(c.suffix_logprobs[0]) - (4.9 - lse)).abs() < 1e-5);
        }
    }

    #[test]
    fn batched_equals_one_by_one_with_the_same_seeds() {
        let (a, b) = (model(), model());
        let together = decode(&a, &prompt(&a), None, &cfg(true)).unwrap();
        let alone = decode(&b, &prompt(&b), None, &cfg(false)).unwrap();
        assert_eq!(together.candidates, alone.candidates);
        let distinct: std::collections::HashSet<_> = together.candidates.iter().map(|c| c.tokens.clone()).collect();
        assert!(distinct.len() > 2, "the script should make candidates differ: {distinct:?}");
        // One forward per step for the whole batch; one-by-one pays one per row and step.
        let longest = together.candidates.iter().map(|c| c.tokens.len()).max().unwrap();
        let steps_batched = a.step_sizes().len();
        assert!(steps_batched <= longest, "{steps_batched} steps for a longest answer of {longest}");
        assert_eq!(together.forwards, 1 + steps_batched + 1);
        // each step computes each distinct state once: at most the 8 rows, at most the rows alone
        let first: std::collections::HashSet<_> = together.candidates.iter().filter_map(|c| c.tokens.first()).collect();
        assert_eq!(a.step_sizes()[0], first.len(), "one row per distinct first token");
        assert!(a.step_sizes().iter().all(|&n| n <= 8));
        assert!(b.step_sizes().iter().all(|&n| n == 1));
        assert!(a.row_steps() <= b.row_steps());
    }

    #[test]
    fn candidates_in_the_same_state_share_one_row() {
        // A peaked script: every sample writes "c d" then ends, so 8 candidates are one row.
        let peaked = || {
            ScriptedLm::new(WORDS, &["<end>"], |ctx| {
                let next = match ctx.last() {
                    Some(7) => 8, // after "c": "d"
                    Some(8) => 0, // after "d": "<end>"
                    _ => 7,       // "c"
                };
                (0..WORDS.len() as u32).map(|v| if v == next { 30.0 } else { 0.0 }).collect()
            })
        };
        let (a, b) = (peaked(), peaked());
        let together = decode(&a, &prompt(&a), None, &CausalConfig { rescore: false, ..cfg(true) }).unwrap();
        let alone = decode(&b, &prompt(&b), None, &CausalConfig { rescore: false, ..cfg(false) }).unwrap();
        assert_eq!(together.candidates, alone.candidates);
        assert!(together.candidates.iter().all(|c| c.text == "c d"), "{:?}", together.candidates);
        assert!(a.step_sizes().iter().all(|&n| n == 1), "{:?}", a.step_sizes());
        assert_eq!(b.row_steps(), 8 * a.row_steps());
    }

    #[test]
    fn same_seed_reproduces_and_another_seed_differs() {
        let lm = model();
        let x = decode(&lm, &prompt(&lm), None, &cfg(true)).unwrap();
        let y = decode(&lm, &prompt(&lm), None, &cfg(true)).unwrap();
        assert_eq!(x.candidates, y.candidates);
        let z = decode(&lm, &prompt(&lm), None, &CausalConfig { seed: 43, ..cfg(true) }).unwrap();
        assert_ne!(x.candidates, z.candidates);
    }

    #[test]
    fn stops_lengths_and_rescoring() {
        // Greedy: "c d <end>" after the prompt.
        let lm = ScriptedLm::new(WORDS, &["<end>"], |ctx| {
            let next = match *ctx.last().unwrap() {
                3 => 7, // after <mid> or the prompt's end: c
                6 => 7,
                7 => 8,
                _ => 0,
            };
            peaked(WORDS.len(), next, 4.0)
        });
        let p = prompt(&lm);
        let greedy =
            CausalConfig { sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() }, ..cfg(true) };
        let out = decode(&lm, &p, None, &greedy).unwrap();
        for c in &out.candidates {
            assert_eq!(c.text, "c d");
            assert_eq!(c.finish, Finish::Stop);
            // Rescored: 2 answer tokens, 1 suffix token (<end>), all at the peak probability.
            let peak = (4.0f64.exp() / (4.0f64.exp() + (WORDS.len() - 1) as f64)).ln() as f32;
            assert_eq!(c.suffix_logprobs.len(), 1);
            assert!(c.logprobs.iter().chain(&c.suffix_logprobs).all(|&l| (l - peak).abs() < 1e-5));
            assert!((c.inverse_perplexity() - f64::from(peak).exp()).abs() < 1e-5);
        }
        let short = decode(&lm, &p, None, &CausalConfig { max_tokens: 1, ..greedy.clone() }).unwrap();
        assert!(short.candidates.iter().all(|c| c.text == "c" && c.finish == Finish::Length));
        let cut = decode(&lm, &p, None, &CausalConfig { stop: vec!["d".into()], ..greedy }).unwrap();
        assert!(cut.candidates.iter().all(|c| c.text == "c" && c.tokens.len() == 1 && c.finish == Finish::Stop));
    }

    #[test]
    fn fim_models_get_psm_or_spm_prompts_and_no_rescoring() {
        let lm = model().with_fim("<pre>", "<suf>", "<mid>");
        let p = Prompt {
            prefix: lm.encode("q a").unwrap(),
            suffix: lm.encode("e .").unwrap(),
            chunks: vec![],
            baseline: None,
            question: vec![],
        };
        let out = decode(&lm, &p, None, &cfg(true)).unwrap();
        assert!(out.fim);
        // no rescoring pass: the only closing score is the end token the row stopped with
        for c in &out.candidates {
            let want = usize::from(c.finish == Finish::Stop);
            assert_eq!(c.suffix_logprobs.len(), want, "{c:?}");
            assert!(c.suffix_logprobs.iter().all(|&x| x <= 0.0 && x.is_finite()));
        }
        decode(&lm, &p, None, &CausalConfig { fim: FimOrder::Spm, ..cfg(true) }).unwrap();
        let prompts = lm.prompts();
        assert_eq!(prompts[0], lm.encode("<pre> q a <suf> e . <mid>").unwrap());
        assert_eq!(prompts[1], lm.encode("<suf> e . <pre> q a <mid>").unwrap());
    }

    #[test]
    fn extractive_candidates_are_spans_of_the_context() {
        let lm = model();
        let chunks = vec![lm.encode("a b c d").unwrap(), lm.encode("e d c").unwrap()];
        let ex = Extractive::new(&lm, &chunks).unwrap();
        let mut p = prompt(&lm);
        p.chunks = chunks
            .iter()
            .enumerate()
            .map(|(i, t)| crate::template::UsedChunk { index: i, tokens: t.clone(), at: 0..0, truncated: false })
            .collect();
        let out = decode(&lm, &p, Some(&ex), &CausalConfig { samples: 16, ..cfg(true) }).unwrap();
        for c in &out.candidates {
            assert!(!c.tokens.is_empty());
            assert!(ex.index.contains(&c.tokens), "{:?} is not a span", c.tokens);
            let src = c.source.as_ref().expect("extractive candidates know their source");
            assert_eq!(span_tokens(&p, src).unwrap(), &c.tokens[..]);
        }
        // Batching does not change constrained candidates either.
        let alone = decode(&lm, &p, Some(&ex), &CausalConfig { samples: 16, ..cfg(false) }).unwrap();
        assert_eq!(out.candidates, alone.candidates);
    }
}

//! Masked-diffusion decoding over a [`MaskedDenoiser`] (REFERENCE.md §3): the answer slot
//! starts as `length` mask tokens between the prompt prefix and suffix, and each model call
//! unmasks some of them until none is left.
//!
//! ```
//! use metarag_generate::masked::{MaskedConfig, Schedule, decode};
//! use metarag_generate::testing::{ScriptedDenoiser, peaked};
//!
//! // After the one-token prefix "Q:", slot position i predicts word i of "the cat sat <end>".
//! let words = ["<mask>", "<end>", "Q:", "the", "cat", "sat"];
//! let model = ScriptedDenoiser::new(&words, "<mask>", |row: &[u32]| {
//!     let answer = [3, 4, 5, 1];
//!     (0..row.len()).flat_map(|t| peaked(6, answer[t.saturating_sub(1).min(3)], 5.0)).collect()
//! });
//! let cfg = MaskedConfig::default().with_length(4).with_steps(2).with_schedule(Schedule::LowConfidence);
//! let out = decode(&model, &[2], &[], &[1], 3, &cfg)?;
//! assert_eq!(out.forwards, 2); // 3 candidates in one batch, 2 tokens per step
//! assert_eq!(out.candidates[2].text, "the cat sat");
//! assert_eq!(out.tokens_per_forward, 2.0);
//! # Ok::<(), metarag_generate::Error>(())
//! ```
//!
//! Each row is `prefix + [mask; length] + suffix`. The slot is cut into blocks of
//! `block_length` decoded left to right (semi-autoregressive, as LLaDA): only masked positions
//! of the current block may be unmasked, and the next block starts when the current one has
//! no mask left. A committed token is never rewritten. The [`Schedule`] decides how many
//! positions a model call unmasks:
//!
//! - [`Schedule::LowConfidence`] (LLaDA): every masked position of the block gets a token
//!   (argmax, or sampled at `temperature`) and a confidence (the model's untempered
//!   probability of that token); the `k` most confident are committed, where the block's
//!   masked count is split evenly over the block's steps, the first `count % steps` steps
//!   taking one more. `steps` calls in all.
//! - [`Schedule::Threshold`] (Fast-dLLM): the most confident position plus every other one
//!   whose confidence is at least `threshold`. `steps` is an upper bound: a step commits at
//!   least `ceil(masked / steps left in the block)` positions, so with `steps = length` (the
//!   default) this is exactly Fast-dLLM's rule, and fewer calls happen when the model is
//!   confident.
//! - [`Schedule::FirstHitting`] (arXiv 2409.02908): each call unmasks exactly one position,
//!   chosen uniformly among the block's masked ones, sampled from its distribution:
//!   `length` calls, whatever `steps` says. The sampler's continuous unmask times
//!   (`τ = t·u^(1/n)` under a linear schedule) only place these calls on a time axis, that
//!   is, map them onto a step budget; the denoiser takes no time input, so they change
//!   nothing in the output and are not drawn.
//!
//! Sampling is done in float64 ([`crate::sample::categorical`]); candidate `i` draws from
//! [`crate::sample::row_rng`]`(seed, i)` only, so a candidate is the same whether it is decoded
//! alone or in a batch ([`decode_candidates`]). The mask token itself is never chosen. All
//! candidates are decoded as ONE batch: one [`MaskedDenoiser::denoise`] call per step over the
//! rows that still have masks.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use metarag_core::model::MaskedDenoiser;

use crate::constrain::SpanIndex;
use crate::sample::{row_rng, uniform};
use crate::{Candidate, Error, Finish, Result};

mod choose;
use choose::{Constraint, Pick, SlotLogits, pick};

/// How many masked positions a model call unmasks (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// LLaDA: the `k` most confident masked positions of the block, `k` spread evenly over
    /// the block's steps.
    #[default]
    LowConfidence,
    /// Fast-dLLM: the most confident position plus every position with confidence
    /// `>= threshold` (in `[0, 1]`; their example uses 0.9); `steps` is an upper bound.
    Threshold {
        /// Probability at or above which a position is committed.
        threshold: f64,
    },
    /// First-hitting sampler: one uniformly chosen masked position per call.
    FirstHitting,
}

/// Settings of the masked decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskedConfig {
    /// Mask tokens in the answer slot, L (default 16).
    pub length: usize,
    /// Model calls for the whole slot (default: `length`), split evenly over the blocks; an
    /// upper bound for [`Schedule::Threshold`], unused by [`Schedule::FirstHitting`].
    pub steps: Option<usize>,
    /// Semi-autoregressive block size (default: `length`, one block); must divide `length`.
    pub block_length: Option<usize>,
    /// How many positions each call unmasks.
    pub schedule: Schedule,
    /// Softmax temperature for the token of a position: 0 (the default, as LLaDA) is argmax;
    /// above 0 samples from `softmax(logits / temperature)` in float64.
    pub temperature: f64,
    /// Seed of the candidates' random streams.
    pub seed: u64,
    /// Write the answer's end in order: a `stop` token may only be committed at the leftmost
    /// masked position, and a row is done once it is (the slot after it is the end padding the
    /// stop token implies, not decoded). Without it (LLaDA's rule) a model trained with end
    /// padding commits the padding first, from the right, with high confidence, and the
    /// padding eats into the answer.
    pub ordered_end: bool,
    /// Candidates that fill `length` without ending go on in a slot this long (None, or not
    /// above `length`: never): their `length` tokens stay committed and only the new positions
    /// are decoded. A short slot is cheap (every call runs every slot position of every row);
    /// the long one covers the rare long answer. Needs one block (`block_length` unset);
    /// `steps`, when set, grows in proportion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widen_to: Option<usize>,
}

impl Default for MaskedConfig {
    fn default() -> Self {
        MaskedConfig {
            length: 16,
            steps: None,
            block_length: None,
            schedule: Schedule::LowConfidence,
            temperature: 0.0,
            seed: 0,
            ordered_end: false,
            widen_to: None,
        }
    }
}

/// The resolved, checked shape of a decode.
#[derive(Debug, Clone, Copy)]
struct Plan {
    length: usize,
    block: usize,
    blocks: usize,
    steps_per_block: usize,
}

impl MaskedConfig {
    /// Sets the slot length L.
    pub fn with_length(mut self, length: usize) -> Self {
        self.length = length;
        self
    }
    /// Sets the step count.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = Some(steps);
        self
    }
    /// Sets the block length.
    pub fn with_block_length(mut self, block_length: usize) -> Self {
        self.block_length = Some(block_length);
        self
    }
    /// Sets the schedule.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
    /// Sets the temperature.
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }
    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets [`MaskedConfig::widen_to`].
    pub fn with_widen_to(mut self, widen_to: usize) -> Self {
        self.widen_to = Some(widen_to);
        self
    }
    /// Sets [`MaskedConfig::ordered_end`].
    pub fn with_ordered_end(mut self, ordered_end: bool) -> Self {
        self.ordered_end = ordered_end;
        self
    }

    /// The configuration of the widened slot ([`MaskedConfig::widen_to`]), if it applies.
    fn wider(&self) -> Option<MaskedConfig> {
        let wide = self.widen_to.filter(|&w| w > self.length && self.block_length.is_none())?;
        let steps = self.steps.map(|s| (s * wide).div_ceil(self.length).clamp(1, wide));
        Some(MaskedConfig { length: wide, steps, widen_to: None, ..self.clone() })
    }

    /// Steps in effect (`steps`, else `length`).
    pub fn steps(&self) -> usize {
        self.steps.unwrap_or(self.length)
    }

    /// Block length in effect (`block_length`, else `length`).
    pub fn block_length(&self) -> usize {
        self.block_length.unwrap_or(self.length)
    }

    /// Checks the knobs: `length >= 1`, `block_length` divides it, `steps` in `1..=length`
    /// and a multiple of the block count (not checked for [`Schedule::FirstHitting`], which
    /// does not use it), `temperature >= 0`, `threshold` in `[0, 1]`.
    pub fn check(&self) -> Result<()> {
        self.plan().map(|_| ())
    }

    fn plan(&self) -> Result<Plan> {
        let bad = |msg: String| Err(Error::Config(msg));
        let length = self.length;
        if length == 0 {
            return bad("length must be at least 1, got 0".into());
        }
        let block = self.block_length();
        if block == 0 || !length.is_multiple_of(block) {
            return bad(format!("block_length must divide length {length}, got {block}"));
        }
        let blocks = length / block;
        let steps = self.steps();
        let steps_per_block = if self.schedule == Schedule::FirstHitting {
            block
        } else {
            if steps == 0 || steps > length {
                return bad(format!("steps must be in 1..={length} (length), got {steps}"));
            }
            if !steps.is_multiple_of(blocks) {
                return bad(format!(
                    "steps must be a multiple of the {blocks} blocks (length {length} / block_length {block}), got {steps}"
                ));
            }
            steps / blocks
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature must be a finite number >= 0, got {}", self.temperature));
        }
        if let Schedule::Threshold { threshold } = self.schedule
            && !(0.0..=1.0).contains(&threshold)
        {
            return bad(format!("threshold must be in [0, 1], got {threshold}"));
        }
        Ok(Plan { length, block, blocks, steps_per_block })
    }
}

/// What [`decode`] returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskedOutput {
    /// One candidate per requested index, in the order asked for.
    pub candidates: Vec<Candidate>,
    /// Model calls ([`MaskedDenoiser::denoise`]), each one batch over the rows still masked.
    pub forwards: usize,
    /// Rows the model computed over all calls. Rows in the same state are computed once (the
    /// first call over 8 all-mask rows counts 1): the compute actually spent.
    pub row_forwards: usize,
    /// Rows advanced over all calls (a call over 8 rows counts 8, shared or not).
    pub row_steps: usize,
    /// Slot tokens committed per row per model call: all committed slot tokens (every
    /// candidate's `length`, stop token and what follows it included) divided by
    /// `row_steps`. `length / steps` for [`Schedule::LowConfidence`], 1 for
    /// [`Schedule::FirstHitting`], higher for [`Schedule::Threshold`] the more confident the
    /// model is; 0 when nothing was decoded. With [`MaskedConfig::ordered_end`] the end padding
    /// a stop token implies counts as resolved.
    pub tokens_per_forward: f64,
    /// Slot tokens the model chose per row per model call: as `tokens_per_forward`, without
    /// the end padding that [`MaskedConfig::ordered_end`] fills in (equal without it).
    pub decoded_per_forward: f64,
}

/// Decodes `samples` candidates (indices `0..samples`) for the slot between `prefix` and
/// `suffix`. A candidate's tokens end before the first token of `stop` in the slot.
pub fn decode<M: MaskedDenoiser + ?Sized>(
    model: &M,
    prefix: &[u32],
    suffix: &[u32],
    stop: &[u32],
    samples: usize,
    cfg: &MaskedConfig,
) -> Result<MaskedOutput> {
    let indices: Vec<usize> = (0..samples).collect();
    decode_candidates(model, prefix, suffix, stop, &indices, cfg)
}

/// As [`decode`], for the candidates `indices` (each draws from `row_rng(seed, index)`):
/// `decode_candidates(.., &[i], ..)` gives candidate `i` of a batched [`decode`].
pub fn decode_candidates<M: MaskedDenoiser + ?Sized>(
    model: &M,
    prefix: &[u32],
    suffix: &[u32],
    stop: &[u32],
    indices: &[usize],
    cfg: &MaskedConfig,
) -> Result<MaskedOutput> {
    run(model, prefix, suffix, stop, indices, None, cfg)
}

/// As [`decode`], extractive where possible: a position may only take a token that keeps the
/// committed tokens around it a span of the context (`spans`, over the prompt's chunks), or a
/// `stop` token. The left neighbours decide first: the answer's committed run that ends just
/// before the position (the longest suffix of it that is a span), then the run that starts just
/// after it filters further. When nothing fits (the runs cannot be joined inside any chunk) the
/// right run is ignored, and when even the left one leaves nothing the position is free; after a
/// committed stop token nothing is constrained (it is cut off). The log-probability of a chosen
/// token is still under the model's full softmax (what RPC scores).
///
/// ```
/// use metarag_generate::constrain::SpanIndex;
/// use metarag_generate::masked::{MaskedConfig, decode_extractive};
/// use metarag_generate::testing::{ScriptedDenoiser, peaked};
///
/// let words = ["<mask>", "<end>", "Q:", "the", "cat", "sat", "dog"];
/// // The model prefers "the dog sat", but the context only says "the cat sat".
/// let model = ScriptedDenoiser::new(&words, "<mask>", |row: &[u32]| {
///     let answer = [3, 6, 5, 1];
///     (0..row.len()).flat_map(|t| {
///         let mut l = peaked(7, answer[t.saturating_sub(1).min(3)], 5.0);
///         l[4] += 3.0; // "cat" is the runner-up everywhere
///         l
///     }).collect()
/// });
/// let spans = SpanIndex::new(&[vec![3, 4, 5]]);
/// let cfg = MaskedConfig::default().with_length(4);
/// let out = decode_extractive(&model, &[2], &[], &[1], 1, &spans, &cfg)?;
/// assert_eq!(out.candidates[0].text, "the cat sat");
/// # Ok::<(), metarag_generate::Error>(())
/// ```
pub fn decode_extractive<M: MaskedDenoiser + ?Sized>(
    model: &M,
    prefix: &[u32],
    suffix: &[u32],
    stop: &[u32],
    samples: usize,
    spans: &SpanIndex,
    cfg: &MaskedConfig,
) -> Result<MaskedOutput> {
    let indices: Vec<usize> = (0..samples).collect();
    run(model, prefix, suffix, stop, &indices, Some(spans), cfg)
}

/// [`run_slot`], then on in the [`MaskedConfig::widen_to`] slot for the candidates that
/// filled the first one without ending (their tokens kept); the statistics count both passes.
fn run<M: MaskedDenoiser + ?Sized>(
    model: &M,
    prefix: &[u32],
    suffix: &[u32],
    stop: &[u32],
    indices: &[usize],
    spans: Option<&SpanIndex>,
    cfg: &MaskedConfig,
) -> Result<MaskedOutput> {
    let mut out = run_slot(model, prefix, suffix, stop, indices, &[], spans, cfg)?;
    let Some(wide) = cfg.wider() else {
        return Ok(out);
    };
    // The wider slot starts from what the short one wrote: its tokens stay, the new positions
    // are decoded (a long answer costs the calls of its extra tokens, not a fresh decode).
    let (again, given): (Vec<usize>, Vec<Vec<(u32, f32)>>) = out
        .candidates
        .iter()
        .filter(|c| c.finish == Finish::Length)
        .map(|c| (c.index, c.tokens.iter().copied().zip(c.logprobs.iter().copied()).collect()))
        .unzip();
    if again.is_empty() {
        return Ok(out);
    }
    let more = run_slot(model, prefix, suffix, stop, &again, &given, spans, &wide)?;
    let (a, b) = (out.row_steps as f64, more.row_steps as f64);
    let total = (a + b).max(1.0);
    out.tokens_per_forward = (out.tokens_per_forward * a + more.tokens_per_forward * b) / total;
    out.decoded_per_forward = (out.decoded_per_forward * a + more.decoded_per_forward * b) / total;
    out.forwards += more.forwards;
    out.row_forwards += more.row_forwards;
    out.row_steps += more.row_steps;
    for c in more.candidates {
        if let Some(slot) = out.candidates.iter_mut().find(|x| x.index == c.index) {
            *slot = c;
        }
    }
    Ok(out)
}

/// Decodes the slot of `cfg` for the candidates `indices`; `given[k]`, when there, are the
/// tokens (and their log-probabilities) candidate `k`'s slot starts with, already committed.
#[allow(clippy::too_many_arguments)]
fn run_slot<M: MaskedDenoiser + ?Sized>(
    model: &M,
    prefix: &[u32],
    suffix: &[u32],
    stop: &[u32],
    indices: &[usize],
    given: &[Vec<(u32, f32)>],
    spans: Option<&SpanIndex>,
    cfg: &MaskedConfig,
) -> Result<MaskedOutput> {
    let plan = cfg.plan()?;
    let vocab = model.vocab_size();
    if vocab < 2 {
        return Err(Error::Config(format!("the model's vocabulary has {vocab} tokens; decoding needs at least 2")));
    }
    let mask = model.mask_id();
    let start = prefix.len();
    let width = start + plan.length + suffix.len();
    let mut template = Vec::with_capacity(width);
    template.extend_from_slice(prefix);
    template.extend(std::iter::repeat_n(mask, plan.length));
    template.extend_from_slice(suffix);

    let mut active: Vec<Row> =
        indices.iter().enumerate().map(|(order, &index)| Row::new(order, index, cfg, &plan)).collect();
    let mut ids: Vec<Vec<u32>> = vec![template; active.len()];
    for ((row, row_ids), given) in active.iter_mut().zip(&mut ids).zip(given) {
        row.start_with(given, &mut row_ids[start..start + plan.length], &plan);
    }
    let mut finished: Vec<(Row, Vec<u32>)> = Vec::with_capacity(active.len());
    let (mut forwards, mut row_forwards, mut row_steps) = (0, 0, 0);
    let mut scratch = Vec::new();
    let slot = plan.length;
    while !active.is_empty() {
        // Rows in the same state get the same logits: the model sees each distinct slot once
        // (at the first step every row is all masks). Each row still samples on its own stream.
        let mut distinct: Vec<Vec<u32>> = Vec::with_capacity(ids.len());
        let mut of_row = Vec::with_capacity(ids.len());
        for r in &ids {
            let s = &r[start..start + slot];
            of_row.push(distinct.iter().position(|d| d == s).unwrap_or_else(|| {
                distinct.push(s.to_vec());
                distinct.len() - 1
            }));
        }
        let logits = model.denoise_slots(prefix, &distinct, suffix)?;
        forwards += 1;
        row_forwards += distinct.len();
        row_steps += ids.len();
        let expected = distinct.len() * slot * vocab;
        if logits.len() != expected {
            return Err(Error::Logits { got: logits.len(), expected });
        }
        let shared: Vec<SlotLogits<'_>> =
            logits.chunks_exact(slot * vocab).map(|rows| SlotLogits::new(rows, vocab)).collect();
        for ((row, row_ids), &d) in active.iter_mut().zip(ids.iter_mut()).zip(&of_row) {
            let slot_logits = &shared[d];
            let constraint = spans.map(|index| Constraint { index, stop });
            row.step(
                cfg,
                &plan,
                mask,
                stop,
                slot_logits,
                &mut row_ids[start..start + plan.length],
                constraint,
                &mut scratch,
            );
        }
        // Rows without masks leave the batch; the others keep their order.
        let mut keep_rows = Vec::with_capacity(active.len());
        let mut keep_ids = Vec::with_capacity(active.len());
        for (row, row_ids) in active.drain(..).zip(ids.drain(..)) {
            if row.open == 0 {
                finished.push((row, row_ids));
            } else {
                keep_rows.push(row);
                keep_ids.push(row_ids);
            }
        }
        active = keep_rows;
        ids = keep_ids;
    }
    finished.sort_by_key(|(row, _)| row.order);
    let finished_decoded: Vec<usize> = finished.iter().map(|(row, _)| plan.length - row.implied - row.given).collect();

    let mut candidates = Vec::with_capacity(finished.len());
    for (row, row_ids) in finished {
        let slot = &row_ids[start..start + plan.length];
        let end = slot.iter().position(|t| stop.contains(t));
        let kept = end.unwrap_or(plan.length);
        let tokens = slot[..kept].to_vec();
        let text = model.decode(&tokens)?.trim().to_string();
        candidates.push(Candidate {
            index: row.index,
            tokens,
            text,
            logprobs: row.logprobs[..kept].to_vec(),
            // The end is a decision of the model too: its log-probability closes the path, as
            // the causal decoder's stop token does (RPC weighs whole paths).
            suffix_logprobs: end.map(|e| vec![row.logprobs[e]]).unwrap_or_default(),
            finish: if end.is_some() { Finish::Stop } else { Finish::Length },
            source: None,
        });
    }
    let committed = candidates.len() * plan.length;
    let tokens_per_forward = if row_steps == 0 { 0.0 } else { committed as f64 / row_steps as f64 };
    let decoded: usize = finished_decoded.iter().sum();
    let decoded_per_forward = if row_steps == 0 { 0.0 } else { decoded as f64 / row_steps as f64 };
    Ok(MaskedOutput { candidates, forwards, row_forwards, row_steps, tokens_per_forward, decoded_per_forward })
}

/// The decoding state of one candidate.
struct Row {
    /// Position in the caller's `indices` (output order).
    order: usize,
    /// The candidate index (its random stream).
    index: usize,
    rng: ChaCha8Rng,
    /// Log-probability of each slot token when it was committed (NaN while masked).
    logprobs: Vec<f32>,
    /// Slot positions still masked.
    masked: Vec<bool>,
    /// Masked slot positions left.
    open: usize,
    /// Current block and the steps taken in it.
    block: usize,
    step: usize,
    /// LowConfidence: positions to commit at each step of the current block.
    quota: Vec<usize>,
    /// Slot positions filled as end padding, not decoded ([`MaskedConfig::ordered_end`]).
    implied: usize,
    /// Slot positions committed before the first call (a widened slot's kept tokens).
    given: usize,
}

impl Row {
    fn new(order: usize, index: usize, cfg: &MaskedConfig, plan: &Plan) -> Self {
        let mut row = Row {
            order,
            index,
            rng: row_rng(cfg.seed, index),
            logprobs: vec![f32::NAN; plan.length],
            masked: vec![true; plan.length],
            open: plan.length,
            block: 0,
            step: 0,
            quota: Vec::new(),
            implied: 0,
            given: 0,
        };
        row.start_block(plan);
        row
    }

    /// Commits `given` (token, log-probability) at the slot's first positions, before any
    /// call; the block's quota is then split over what is left masked.
    fn start_with(&mut self, given: &[(u32, f32)], slot: &mut [u32], plan: &Plan) {
        for (pos, &(token, logprob)) in given.iter().enumerate().take(slot.len()) {
            self.commit(Pick { pos, token, logprob: f64::from(logprob) }, slot);
            self.given += 1;
        }
        self.start_block(plan);
    }

    /// LLaDA's even split of the block's masked count over its steps.
    fn start_block(&mut self, plan: &Plan) {
        self.step = 0;
        let lo = self.block * plan.block;
        let n = self.masked[lo..lo + plan.block].iter().filter(|&&m| m).count();
        let (base, rem) = (n / plan.steps_per_block, n % plan.steps_per_block);
        self.quota = (0..plan.steps_per_block).map(|s| base + usize::from(s < rem)).collect();
    }

    /// One model call's worth of unmasking: `logits` are the slot positions' logits and
    /// `slot` the row's slot tokens.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        cfg: &MaskedConfig,
        plan: &Plan,
        mask: u32,
        stop: &[u32],
        logits: &SlotLogits<'_>,
        slot: &mut [u32],
        constraint: Option<Constraint<'_>>,
        scratch: &mut Vec<f64>,
    ) {
        let lo = self.block * plan.block;
        let open: Vec<usize> = (lo..lo + plan.block).filter(|&i| self.masked[i]).collect();
        if open.is_empty() {
            return;
        }
        let t = cfg.temperature;
        match cfg.schedule {
            Schedule::FirstHitting => {
                // ordered_end: only the leftmost masked position may take a stop token.
                let lead = self.masked.iter().position(|&m| m);
                let deny = |pos: usize| if cfg.ordered_end && Some(pos) != lead { stop } else { &[][..] };
                let u = uniform(&mut self.rng);
                let pos = open[((u * open.len() as f64) as usize).min(open.len() - 1)];
                let allowed = constraint.and_then(|c| c.allowed(pos, slot, &self.masked));
                let p = pick(pos, logits, mask, allowed.as_deref(), deny(pos), t, &mut self.rng, scratch);
                self.commit(p, slot);
            }
            Schedule::LowConfidence | Schedule::Threshold { .. } => {
                let pick_open = |row: &mut Self, slot: &[u32], scratch: &mut Vec<f64>| {
                    let lead = row.masked.iter().position(|&m| m);
                    let deny = |pos: usize| if cfg.ordered_end && Some(pos) != lead { stop } else { &[][..] };
                    let mut picks: Vec<Pick> = (lo..lo + plan.block)
                        .filter(|&pos| row.masked[pos])
                        .map(|pos| {
                            let allowed = constraint.and_then(|c| c.allowed(pos, slot, &row.masked));
                            pick(pos, logits, mask, allowed.as_deref(), deny(pos), t, &mut row.rng, scratch)
                        })
                        .collect();
                    // Most confident first; ties to the leftmost position.
                    // (The full softmax: renormalising over the span rule's few allowed tokens made
                    // continuations look sure where the model wanted neither; EM 0.16 on 50 SQuAD dev.)
                    picks.sort_by(|a, b| b.logprob.total_cmp(&a.logprob).then(a.pos.cmp(&b.pos)));
                    picks
                };
                let mut picks = pick_open(self, slot, scratch);
                let left = plan.steps_per_block.saturating_sub(self.step).max(1);
                // (fewest, most) positions this call commits; the threshold schedule commits
                // every position above the threshold, at least its share of the block.
                let (fewest, most) = match cfg.schedule {
                    Schedule::Threshold { .. } => (picks.len().div_ceil(left).max(1), picks.len()),
                    // The block's last step takes whatever is left.
                    _ if left == 1 => (picks.len(), picks.len()),
                    _ => {
                        let k = self.quota.get(self.step).copied().unwrap_or(1);
                        (k, k)
                    }
                };
                let above = |p: &Pick| matches!(cfg.schedule, Schedule::Threshold { threshold } if p.logprob.exp() >= threshold);
                if constraint.is_none() {
                    let k = picks.iter().filter(|p| above(p)).count().clamp(fewest, most);
                    for &p in picks.iter().take(k) {
                        self.commit(p, slot);
                    }
                } else {
                    // Extractive: one position at a time, the others chosen again under the
                    // span rule their new neighbours set, so the tokens one call commits
                    // together are one span of the context.
                    let mut done = 0;
                    while let Some(&best) = picks.first() {
                        if done >= most || (done >= fewest && !above(&best)) {
                            break;
                        }
                        self.commit(best, slot);
                        done += 1;
                        if cfg.ordered_end && stop.contains(&best.token) && !self.masked[..best.pos].contains(&true) {
                            break; // the answer ends here
                        }
                        picks = pick_open(self, slot, scratch);
                    }
                }
            }
        }
        self.step += 1;
        if cfg.ordered_end {
            self.end_at_stop(stop, slot);
        }
        if !self.masked[lo..lo + plan.block].contains(&true) && self.block + 1 < plan.blocks {
            self.block += 1;
            self.start_block(plan);
        }
    }

    /// ordered_end: once a stop token is committed with nothing masked before it, the rest of
    /// the slot is its end padding (filled with that token, log-probability 0, not decoded).
    fn end_at_stop(&mut self, stop: &[u32], slot: &mut [u32]) {
        let lead = self.masked.iter().position(|&m| m).unwrap_or(slot.len());
        if let Some(end) = (0..lead).find(|&i| stop.contains(&slot[i])) {
            for i in end + 1..slot.len() {
                if self.masked[i] {
                    slot[i] = slot[end];
                    self.logprobs[i] = 0.0;
                    self.masked[i] = false;
                    self.open -= 1;
                    self.implied += 1;
                }
            }
        }
    }

    fn commit(&mut self, p: Pick, slot: &mut [u32]) {
        debug_assert!(self.masked[p.pos], "position {} committed twice", p.pos);
        slot[p.pos] = p.token;
        self.logprobs[p.pos] = p.logprob as f32;
        self.masked[p.pos] = false;
        self.open -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::log_softmax;
    use crate::testing::{ScriptedDenoiser, peaked};
    use metarag_core::model::Vocabulary;

    const WORDS: [&str; 11] = ["<mask>", "<end>", "Q:", "the", "cat", "sat", "on", "a", "warm", "mat", "today"];
    const MASK: u32 = 0;
    const END: u32 = 1;
    const V: usize = WORDS.len();
    /// "the cat sat on a warm mat <end>"
    const ANSWER: [u32; 8] = [3, 4, 5, 6, 7, 8, 9, END];

    /// A denoiser whose slot position `i` (after the one-token prefix) peaks on `ANSWER[i]`
    /// with `margins[i]` (positions past the table repeat the last entry).
    fn table_model(margins: Vec<f32>) -> ScriptedDenoiser {
        ScriptedDenoiser::new(&WORDS, "<mask>", move |row: &[u32]| {
            (0..row.len())
                .flat_map(|t| {
                    let i = t.saturating_sub(1).min(ANSWER.len() - 1);
                    peaked(V, ANSWER[i], margins[i.min(margins.len() - 1)])
                })
                .collect()
        })
    }

    /// Logits that depend on the whole row (committed neighbours change the distribution),
    /// so sampled candidates diverge and finish at different times.
    fn mixing_model() -> ScriptedDenoiser {
        ScriptedDenoiser::new(&WORDS, "<mask>", |row: &[u32]| {
            let mut out = Vec::with_capacity(row.len() * V);
            for t in 0..row.len() {
                let left = if t == 0 { 0 } else { row[t - 1] as usize };
                let filled = row.iter().filter(|&&x| x != MASK).count();
                for w in 0..V {
                    let x = ((w * 7 + t * 3 + left * 5 + filled) % 11) as f32 * 0.45;
                    out.push(if w == END as usize && t < 4 { -2.0 } else { x });
                }
            }
            out
        })
    }

    fn seen(model: &ScriptedDenoiser) -> Vec<Vec<u32>> {
        model.seen.lock().unwrap().clone()
    }

    /// Slot masks of each seen row.
    fn masks(rows: &[Vec<u32>], start: usize, len: usize) -> Vec<usize> {
        rows.iter().map(|r| r[start..start + len].iter().filter(|&&x| x == MASK).count()).collect()
    }

    /// The invariant over the calls of ONE row: prefix and suffix untouched, every call
    /// unmasks at least one position, and a committed position keeps its token to the end.
    fn assert_never_rewritten(calls: &[Vec<u32>], final_slot: &[u32], prefix: &[u32], len: usize) {
        let start = prefix.len();
        let mut history: Vec<&[u32]> = calls.iter().map(|r| &r[start..start + len]).collect();
        history.push(final_slot);
        for r in calls {
            assert_eq!(&r[..start], prefix, "prefix changed");
        }
        for w in history.windows(2) {
            let (a, b) = (w[0], w[1]);
            for i in 0..len {
                if a[i] != MASK {
                    assert_eq!(a[i], b[i], "position {i} rewritten: {a:?} -> {b:?}");
                }
            }
            assert!(
                a.iter().filter(|&&x| x == MASK).count() > b.iter().filter(|&&x| x == MASK).count(),
                "a call unmasked nothing: {a:?} -> {b:?}"
            );
        }
        assert!(!final_slot.contains(&MASK));
    }

    /// The full slot of a candidate (the test answers never stop early unless they say so).
    fn slot_of(c: &Candidate, len: usize) -> Vec<u32> {
        let mut s = c.tokens.clone();
        if c.finish == Finish::Stop {
            s.push(END);
        }
        assert!(s.len() <= len);
        s
    }

    #[test]
    fn low_confidence_commits_the_k_most_confident_per_step() {
        // Confidence order: positions 7, 5, 3, 1, 6, 4, 2, 0.
        let model = table_model(vec![1.0, 5.0, 2.0, 6.0, 3.0, 7.0, 4.0, 8.0]);
        let cfg = MaskedConfig::default().with_length(8).with_steps(4);
        let out = decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
        assert_eq!(out.forwards, 4);
        assert_eq!(out.tokens_per_forward, 2.0);
        let calls = seen(&model);
        assert_eq!(masks(&calls, 1, 8), vec![8, 6, 4, 2]);
        let unmasked = |r: &Vec<u32>| (0..8).filter(|&i| r[1 + i] != MASK).collect::<Vec<_>>();
        assert_eq!(unmasked(&calls[1]), vec![5, 7]);
        assert_eq!(unmasked(&calls[2]), vec![1, 3, 5, 7]);
        assert_eq!(unmasked(&calls[3]), vec![1, 3, 4, 5, 6, 7]);
        let c = &out.candidates[0];
        assert_never_rewritten(&calls, &slot_of(c, 8), &[2], 8);
        // The known sequence is recovered, with the log-probability of each token.
        assert_eq!(c.text, "the cat sat on a warm mat");
        assert_eq!(c.tokens, ANSWER[..7]);
        assert_eq!(c.finish, Finish::Stop);
        let margins = [1.0f32, 5.0, 2.0, 6.0, 3.0, 7.0, 4.0];
        for (i, (&lp, &m)) in c.logprobs.iter().zip(&margins).enumerate() {
            let want = log_softmax(&peaked(V, ANSWER[i], m))[ANSWER[i] as usize] as f32;
            assert!((lp - want).abs() < 1e-6, "logprob of position {i}: {lp} vs {want}");
        }
        // The stop token closes the path with its own log-probability (position 7, margin 8).
        let stop = log_softmax(&peaked(V, END, 8.0))[END as usize] as f32;
        assert_eq!(c.suffix_logprobs.len(), 1);
        assert!((c.suffix_logprobs[0] - stop).abs() < 1e-6, "{:?} vs {stop}", c.suffix_logprobs);
        assert!(c.source.is_none());
    }

    #[test]
    fn low_confidence_splits_uneven_counts_like_llada() {
        // 7 masks over 3 steps: 3, 2, 2.
        let model = table_model(vec![3.0; 8]);
        let cfg = MaskedConfig::default().with_length(7).with_steps(3);
        let out = decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
        assert_eq!(out.forwards, 3);
        assert_eq!(masks(&seen(&model), 1, 7), vec![7, 4, 2]);
        // Equal confidence: the leftmost positions go first; no stop token in 7 slots.
        assert_eq!(out.candidates[0].tokens, ANSWER[..7]);
        assert_eq!(out.candidates[0].finish, Finish::Length);
    }

    #[test]
    fn batched_low_confidence_runs_in_lockstep() {
        let model = table_model(vec![2.0, 4.0, 1.0, 3.0]);
        let cfg = MaskedConfig::default().with_length(8).with_steps(4);
        let out = decode(&model, &[2], &[10], &[END], 3, &cfg).unwrap();
        // a deterministic model keeps the three rows in one state: each call computes one row
        assert_eq!((out.forwards, out.row_steps, out.row_forwards), (4, 12, 4));
        assert_eq!(out.tokens_per_forward, 2.0);
        assert_eq!(model.forwards(), 4);
        let calls = seen(&model);
        assert_eq!(calls.len(), 4);
        for (r, c) in out.candidates.iter().enumerate() {
            assert_eq!(c.index, r);
            let mine: Vec<Vec<u32>> = calls.clone(); // every call's one row is every row's state
            for row in &mine {
                assert_eq!(row.len(), 10);
                assert_eq!(row[9], 10, "suffix changed");
            }
            assert_never_rewritten(&mine, &slot_of(c, 8), &[2], 8);
            assert_eq!(c.text, "the cat sat on a warm mat");
        }
    }

    #[test]
    fn threshold_commits_confident_positions_together() {
        // p(5.0) = 0.937 and p(1.0) = 0.214 over 11 words.
        let model = table_model(vec![5.0, 5.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0]);
        let cfg = MaskedConfig::default().with_length(8).with_schedule(Schedule::Threshold { threshold: 0.9 });
        let out = decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
        // Step 1: positions 0-3 together; then the top-1 only.
        assert_eq!(out.forwards, 5);
        let calls = seen(&model);
        assert_eq!(masks(&calls, 1, 8), vec![8, 4, 3, 2, 1]);
        assert_eq!(&calls[1][1..5], &ANSWER[..4]);
        assert_never_rewritten(&calls, &slot_of(&out.candidates[0], 8), &[2], 8);
        assert_eq!(out.candidates[0].text, "the cat sat on a warm mat");
        assert!((out.tokens_per_forward - 8.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn a_full_short_slot_goes_on_in_the_wider_one() {
        // "the cat sat on a warm mat <end>" does not fit 4 positions: the candidate keeps its
        // 4 tokens and goes on in 8, ending as if asked for 8; only the new positions cost calls.
        let cfg = MaskedConfig::default().with_length(4).with_ordered_end(true);
        let short = decode(&table_model(vec![3.0]), &[2], &[], &[END], 2, &cfg).unwrap();
        assert!(short.candidates.iter().all(|c| c.finish == Finish::Length && c.tokens == ANSWER[..4]));
        let wide = decode(&table_model(vec![3.0]), &[2], &[], &[END], 2, &cfg.clone().with_length(8)).unwrap();
        let model = table_model(vec![3.0]);
        let out = decode(&model, &[2], &[], &[END], 2, &cfg.clone().with_widen_to(8)).unwrap();
        assert_eq!(out.candidates, wide.candidates);
        assert_eq!(out.candidates[0].text, "the cat sat on a warm mat");
        // 4 calls for the short slot, then 4 for "a warm mat <end>" (not 8 from scratch).
        assert_eq!(out.forwards, short.forwards + 4);
        assert_eq!(out.row_steps, short.row_steps + 2 * 4);
        assert_eq!(model.forwards(), out.forwards);
        // The kept tokens were not decoded twice: one decoded token per row per call.
        assert_eq!(out.decoded_per_forward, 1.0);
        // Every call of the second pass saw the kept tokens in place.
        let calls = seen(&model);
        let wider: Vec<&Vec<u32>> = calls.iter().filter(|r| r.len() == 1 + 8).collect();
        assert_eq!(wider.len(), 4, "one distinct row per call of the second pass");
        assert!(wider.iter().all(|row| row[1..5] == ANSWER[..4]));

        // An answer that fits is decoded once.
        let fits = ScriptedDenoiser::new(&WORDS, "<mask>", |row: &[u32]| {
            (0..row.len()).flat_map(|t| peaked(V, [3, 4, END][t.saturating_sub(1).min(2)], 3.0)).collect()
        });
        let out = decode(&fits, &[2], &[], &[END], 2, &cfg.clone().with_widen_to(8)).unwrap();
        assert_eq!(out.candidates[0].text, "the cat");
        assert_eq!(fits.forwards(), out.forwards);
        assert_eq!(out.forwards, 3);
    }

    #[test]
    fn extractive_threshold_copies_a_span_in_one_call() {
        // Every position is sure of its token, the last one of the end. A call commits one
        // position at a time and chooses the others again under the rules their neighbours set,
        // so the end, denied while it is not the leftmost mask, joins in the same call.
        let model = ScriptedDenoiser::new(&WORDS, "<mask>", |row: &[u32]| {
            (0..row.len()).flat_map(|t| peaked(V, [3, 4, 5, END][t.saturating_sub(1).min(3)], 7.0)).collect()
        });
        let spans = SpanIndex::new(&[vec![3, 4, 5]]);
        let cfg = MaskedConfig::default()
            .with_length(6)
            .with_ordered_end(true)
            .with_schedule(Schedule::Threshold { threshold: 0.9 });
        let out = decode_extractive(&model, &[2], &[], &[END], 1, &spans, &cfg).unwrap();
        assert_eq!(out.forwards, 1);
        let c = &out.candidates[0];
        assert_eq!(c.text, "the cat sat");
        assert_eq!(c.finish, Finish::Stop);
        // Each token's log-probability is under the model's full softmax.
        let full = log_softmax(&peaked(V, 4, 7.0))[4] as f32;
        assert!((c.logprobs[1] - full).abs() < 1e-5, "{} vs {full}", c.logprobs[1]);

        // An unsure model commits one position per call.
        let model_free = ScriptedDenoiser::new(&WORDS, "<mask>", |row: &[u32]| {
            (0..row.len()).flat_map(|t| peaked(V, [3, 4, 5, END][t.saturating_sub(1).min(3)], 1.5)).collect()
        });
        let out = decode(&model_free, &[2], &[], &[END], 1, &cfg).unwrap();
        assert_eq!(out.forwards, 4);
    }

    #[test]
    fn threshold_always_commits_the_top_one() {
        // Nothing reaches the threshold: one position per call, the most confident first.
        let model = table_model(vec![1.0, 1.5, 2.0, 1.2, 1.1, 1.3, 1.4, 1.6]);
        let cfg = MaskedConfig::default().with_length(8).with_schedule(Schedule::Threshold { threshold: 0.9 });
        let out = decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
        assert_eq!(out.forwards, 8);
        let calls = seen(&model);
        assert_eq!(masks(&calls, 1, 8), vec![8, 7, 6, 5, 4, 3, 2, 1]);
        assert_ne!(calls[1][3], MASK, "position 2 (margin 2.0) goes first");
        assert_never_rewritten(&calls, &slot_of(&out.candidates[0], 8), &[2], 8);

        // `steps` bounds the calls: 8 masks in 2 steps means 4 per step.
        let model = table_model(vec![1.0, 1.5, 2.0, 1.2, 1.1, 1.3, 1.4, 1.6]);
        let out = decode(&model, &[2], &[], &[END], 1, &cfg.clone().with_steps(2)).unwrap();
        assert_eq!(out.forwards, 2);
        assert_eq!(masks(&seen(&model), 1, 8), vec![8, 4]);

        // Threshold 0 commits everything at once.
        let model = table_model(vec![1.0]);
        let cfg = cfg.with_schedule(Schedule::Threshold { threshold: 0.0 });
        let out = decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
        assert_eq!(out.forwards, 1);
        assert_eq!(out.candidates[0].text, "the cat sat on a warm mat");
    }

    #[test]
    fn first_hitting_unmasks_one_position_per_call() {
        let model = table_model(vec![2.0, 4.0, 1.0, 3.0]);
        let cfg = MaskedConfig::default().with_length(8).with_steps(2).with_schedule(Schedule::FirstHitting);
        let out = decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
        assert_eq!(out.forwards, 8, "steps does not change the first-hitting sampler");
        assert_eq!(out.tokens_per_forward, 1.0);
        let calls = seen(&model);
        assert_eq!(masks(&calls, 1, 8), vec![8, 7, 6, 5, 4, 3, 2, 1]);
        assert_never_rewritten(&calls, &slot_of(&out.candidates[0], 8), &[2], 8);
        assert_eq!(out.candidates[0].text, "the cat sat on a warm mat");
    }

    #[test]
    fn first_hitting_chooses_positions_uniformly() {
        // 8000 rows in one batch; the second call shows which position each row unmasked
        // first. Confidence plays no part: position 3 is by far the most confident.
        let n = 8000;
        let model = table_model(vec![1.0, 1.0, 1.0, 9.0]);
        let cfg = MaskedConfig::default().with_length(4).with_schedule(Schedule::FirstHitting).with_seed(5);
        // one row per decode (rows in one batch in the same state share a model row)
        for i in 0..n {
            let out = decode_candidates(&model, &[2], &[], &[], &[i], &cfg).unwrap();
            assert_eq!(out.forwards, 4);
        }
        let calls = seen(&model);
        let mut counts = [0usize; 4];
        for row in calls.iter().skip(1).step_by(4) {
            let open: Vec<usize> = (0..4).filter(|&i| row[1 + i] != MASK).collect();
            assert_eq!(open.len(), 1);
            counts[open[0]] += 1;
        }
        let e = n as f64 / 4.0;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 16.27, "chi2 {chi2} (3 dof, p = 0.001), counts {counts:?}");
    }

    /// True when no position of block 2 is unmasked while block 1 still has a mask.
    fn blocks_in_order(row: &[u32], start: usize, block: usize) -> bool {
        let b1 = &row[start..start + block];
        let b2 = &row[start + block..start + 2 * block];
        !b1.contains(&MASK) || b2.iter().all(|&x| x == MASK)
    }

    #[test]
    fn blocks_are_decoded_left_to_right() {
        // Block 2 (positions 4-7) is far more confident than block 1.
        let margins = vec![1.0, 1.2, 1.1, 1.3, 9.0, 9.0, 9.0, 9.0];
        for schedule in [Schedule::LowConfidence, Schedule::Threshold { threshold: 0.9 }, Schedule::FirstHitting] {
            let model = table_model(margins.clone());
            let cfg = MaskedConfig::default().with_length(8).with_block_length(4).with_schedule(schedule).with_seed(3);
            let out = decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
            let calls = seen(&model);
            for row in &calls {
                assert!(blocks_in_order(row, 1, 4), "{schedule:?}: block 2 started early: {row:?}");
            }
            assert_never_rewritten(&calls, &slot_of(&out.candidates[0], 8), &[2], 8);
            assert_eq!(out.candidates[0].text, "the cat sat on a warm mat", "{schedule:?}");
            let want = match schedule {
                // 2 blocks x 4 steps, one token each.
                Schedule::LowConfidence => 8,
                // Block 1: one per call (nothing above 0.9); block 2: all four at once.
                Schedule::Threshold { .. } => 5,
                Schedule::FirstHitting => 8,
            };
            assert_eq!(out.forwards, want, "{schedule:?}");
        }
        // LowConfidence with 2 steps per block: 2 + 2 tokens in block 1, then block 2.
        let model = table_model(margins);
        let cfg = MaskedConfig::default().with_length(8).with_block_length(4).with_steps(4);
        decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
        let calls = seen(&model);
        assert_eq!(masks(&calls, 1, 8), vec![8, 6, 4, 2]);
        assert!(calls.iter().all(|r| blocks_in_order(r, 1, 4)));
    }

    #[test]
    fn batched_equals_one_by_one() {
        for schedule in [Schedule::LowConfidence, Schedule::Threshold { threshold: 0.3 }, Schedule::FirstHitting] {
            let cfg = MaskedConfig::default()
                .with_length(8)
                .with_block_length(4)
                .with_schedule(schedule)
                .with_temperature(0.8)
                .with_seed(17);
            let model = mixing_model();
            let batched = decode(&model, &[2], &[10], &[END], 8, &cfg).unwrap();
            assert_eq!(batched.candidates.len(), 8);
            let mut max_forwards = 0;
            let mut row_forwards = 0;
            for i in 0..8 {
                let single = mixing_model();
                let one = decode_candidates(&single, &[2], &[10], &[END], &[i], &cfg).unwrap();
                assert_eq!(one.candidates[0], batched.candidates[i], "{schedule:?}: candidate {i}");
                max_forwards = max_forwards.max(one.forwards);
                row_forwards += one.forwards;
            }
            // One call per step for the whole batch; finished rows leave it.
            assert_eq!(batched.forwards, max_forwards, "{schedule:?}");
            assert_eq!(batched.row_steps, row_forwards, "{schedule:?}");
            assert!(batched.row_forwards < batched.row_steps, "{schedule:?}: the first call is shared");
            let distinct: std::collections::HashSet<_> = batched.candidates.iter().map(|c| c.tokens.clone()).collect();
            assert!(distinct.len() > 1, "{schedule:?}: sampled candidates should differ");
        }
        // Threshold rows finish at different times here, so later calls have fewer rows.
        let model = mixing_model();
        let cfg = MaskedConfig::default()
            .with_length(8)
            .with_schedule(Schedule::Threshold { threshold: 0.3 })
            .with_temperature(0.8)
            .with_seed(17);
        let out = decode(&model, &[2], &[10], &[END], 8, &cfg).unwrap();
        assert!(out.row_steps < 8 * out.forwards, "{} rows over {} calls", out.row_steps, out.forwards);
    }

    #[test]
    fn committed_tokens_are_never_rewritten_while_sampling() {
        for schedule in [Schedule::LowConfidence, Schedule::Threshold { threshold: 0.4 }, Schedule::FirstHitting] {
            for seed in 0..20 {
                let model = mixing_model();
                let cfg = MaskedConfig::default()
                    .with_length(8)
                    .with_steps(4)
                    .with_schedule(schedule)
                    .with_temperature(1.0)
                    .with_seed(seed);
                let out = decode(&model, &[2], &[], &[], 1, &cfg).unwrap();
                let c = &out.candidates[0];
                assert_eq!(c.tokens.len(), 8);
                assert_eq!(c.finish, Finish::Length);
                assert!(!c.tokens.contains(&MASK), "the mask token was chosen");
                assert!(c.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0));
                assert_never_rewritten(&seen(&model), &c.tokens, &[2], 8);
                match schedule {
                    Schedule::LowConfidence => assert_eq!(out.forwards, 4),
                    Schedule::Threshold { .. } => assert!(out.forwards <= 4),
                    Schedule::FirstHitting => assert_eq!(out.forwards, 8),
                }
            }
        }
    }

    #[test]
    fn temperature_sampling_follows_the_tempered_softmax() {
        // One slot position; logits 2, 1, 0, -1 on four words (others and the mask far lower).
        let mut row_logits = vec![-40.0f32; V];
        row_logits[3..7].copy_from_slice(&[2.0, 1.0, 0.0, -1.0]);
        let l = row_logits.clone();
        let model = ScriptedDenoiser::new(&WORDS, "<mask>", move |row: &[u32]| {
            (0..row.len()).flat_map(|_| l.clone()).collect()
        });
        let t = 0.7;
        let n = 40_000;
        let cfg = MaskedConfig::default().with_length(1).with_temperature(t).with_seed(99);
        let out = decode(&model, &[2], &[], &[], n, &cfg).unwrap();
        assert_eq!(out.forwards, 1);
        let mut counts = [0usize; 4];
        let full = log_softmax(&row_logits);
        for c in &out.candidates {
            let tok = c.tokens[0] as usize;
            counts[tok - 3] += 1;
            // The recorded log-probability is the untempered one.
            assert!((c.logprobs[0] - full[tok] as f32).abs() < 1e-6);
        }
        let w: Vec<f64> = [2.0f64, 1.0, 0.0, -1.0].iter().map(|x| (x / t).exp()).collect();
        let total: f64 = w.iter().sum();
        let chi2: f64 = w
            .iter()
            .zip(&counts)
            .map(|(&w, &c)| {
                let e = w / total * n as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 16.27, "chi2 {chi2} (3 dof, p = 0.001), counts {counts:?}");
        // Temperature 0 is the argmax.
        let out = decode(&model, &[2], &[], &[], 3, &cfg.with_temperature(0.0)).unwrap();
        assert!(out.candidates.iter().all(|c| c.tokens == [3]));
    }

    #[test]
    fn bad_knobs_are_config_errors_naming_the_knob() {
        let model = table_model(vec![1.0]);
        let base = MaskedConfig::default().with_length(8);
        let cases = [
            (base.clone().with_length(0), "length"),
            (base.clone().with_block_length(3), "block_length"),
            (base.clone().with_block_length(0), "block_length"),
            (base.clone().with_block_length(4).with_steps(3), "steps"),
            (base.clone().with_steps(9), "steps"),
            (base.clone().with_steps(0), "steps"),
            (base.clone().with_temperature(-0.5), "temperature"),
            (base.clone().with_temperature(f64::NAN), "temperature"),
            (base.clone().with_schedule(Schedule::Threshold { threshold: 1.5 }), "threshold"),
        ];
        for (cfg, knob) in cases {
            match decode(&model, &[2], &[], &[END], 1, &cfg) {
                Err(Error::Config(msg)) => assert!(msg.contains(knob), "`{msg}` should name {knob}"),
                other => panic!("{cfg:?}: expected a config error, got {other:?}"),
            }
            assert!(cfg.check().is_err());
        }
        // First hitting ignores steps, so it does not check it.
        assert!(base.with_steps(3).with_schedule(Schedule::FirstHitting).check().is_ok());
        assert_eq!(model.forwards(), 0);
    }

    /// A denoiser that returns one logit too many.
    struct Broken(crate::testing::WordVocab);

    impl Vocabulary for Broken {
        fn encode(&self, text: &str) -> metarag_core::Result<Vec<u32>> {
            self.0.encode(text)
        }
        fn decode(&self, ids: &[u32]) -> metarag_core::Result<String> {
            self.0.decode(ids)
        }
        fn vocab_size(&self) -> usize {
            self.0.vocab_size()
        }
        fn token_id(&self, token: &str) -> Option<u32> {
            self.0.token_id(token)
        }
    }

    impl MaskedDenoiser for Broken {
        fn mask_id(&self) -> u32 {
            MASK
        }
        fn denoise(&self, rows: &[Vec<u32>]) -> metarag_core::Result<Vec<f32>> {
            Ok(vec![0.0; rows.len() * rows[0].len() * V + 1])
        }
    }

    /// Whole rows right, slot logits one too many (a denoiser with its own slot path).
    struct BrokenSlots(crate::testing::WordVocab);

    impl Vocabulary for BrokenSlots {
        fn encode(&self, text: &str) -> metarag_core::Result<Vec<u32>> {
            self.0.encode(text)
        }
        fn decode(&self, ids: &[u32]) -> metarag_core::Result<String> {
            self.0.decode(ids)
        }
        fn vocab_size(&self) -> usize {
            V
        }
        fn token_id(&self, token: &str) -> Option<u32> {
            self.0.token_id(token)
        }
    }

    impl MaskedDenoiser for BrokenSlots {
        fn mask_id(&self) -> u32 {
            MASK
        }
        fn denoise(&self, rows: &[Vec<u32>]) -> metarag_core::Result<Vec<f32>> {
            Ok(vec![0.0; rows.len() * rows[0].len() * V])
        }
        fn denoise_slots(&self, _: &[u32], slots: &[Vec<u32>], _: &[u32]) -> metarag_core::Result<Vec<f32>> {
            Ok(vec![0.0; slots.len() * slots[0].len() * V + 1])
        }
    }

    #[test]
    fn extractive_left_to_right_writes_only_spans() {
        // One-token blocks: every position is decided with its whole left run committed, so a
        // sampled answer is always a span of the context ("mat" ends the chunk: then a stop).
        let spans = SpanIndex::new(&[vec![3, 4, 5, 6, 7, 8, 9], vec![10, 3, 8]]);
        let cfg = MaskedConfig::default().with_length(6).with_block_length(1).with_temperature(1.0);
        for seed in 0..20 {
            let out =
                decode_extractive(&mixing_model(), &[2], &[], &[END], 4, &spans, &cfg.clone().with_seed(seed)).unwrap();
            for c in &out.candidates {
                assert!(spans.contains(&c.tokens), "seed {seed}: {:?} is not a span", c.tokens);
                assert!(c.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0));
            }
        }
    }

    #[test]
    fn extractive_joins_committed_runs_when_it_can() {
        // The model commits "the" (slot 0) and "mat" (slot 2) first, and prefers "cat" in
        // between; only "warm" joins them ("the warm mat" is the only span).
        let spans = SpanIndex::new(&[vec![6, 3, 8, 9, 10]]);
        let model = ScriptedDenoiser::new(&WORDS, "<mask>", |row: &[u32]| {
            let plan = [(3, 9.0), (4, 2.0), (9, 8.0), (END, 7.0)];
            (0..row.len())
                .flat_map(|t| {
                    let (w, m) = plan[t.saturating_sub(1).min(3)];
                    let mut l = peaked(V, w, m);
                    l[8] += 1.0;
                    l
                })
                .collect()
        });
        let cfg = MaskedConfig::default().with_length(4);
        let out = decode_extractive(&model, &[2], &[], &[END], 1, &spans, &cfg).unwrap();
        assert_eq!(out.candidates[0].tokens, vec![3, 8, 9]);
        // Unconstrained, the same model writes "the cat mat".
        let free = decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
        assert_eq!(free.candidates[0].tokens, vec![3, 4, 9]);
    }

    #[test]
    fn ordered_end_writes_the_end_after_the_answer() {
        // Slot position i peaks on "the cat <end> <end> …" with the padding most confident:
        // LLaDA's rule commits the padding from the right first and it eats the answer when
        // the model is unsure how long it is; with ordered_end a stop token is taken only at
        // the leftmost masked position, and the row ends there.
        let model = ScriptedDenoiser::new(&WORDS, "<mask>", |row: &[u32]| {
            (0..row.len())
                .flat_map(|t| {
                    let i = t.saturating_sub(1);
                    let mut l = match i {
                        0 => peaked(V, 3, 4.0),
                        1 => peaked(V, 4, 3.0),
                        _ => peaked(V, END, 9.0),
                    };
                    // position 1 also likes <end>, when its right neighbour is <end>
                    if i == 1 && row.get(t + 1) == Some(&END) {
                        l[END as usize] = 3.5;
                    }
                    l
                })
                .collect()
        });
        let cfg = MaskedConfig::default().with_length(6);
        let llada = decode(&model, &[2], &[], &[END], 1, &cfg).unwrap();
        assert_eq!(llada.candidates[0].tokens, vec![3], "the padding ate \"cat\"");
        assert_eq!(llada.forwards, 6);
        let ordered = decode(&model, &[2], &[], &[END], 1, &cfg.with_ordered_end(true)).unwrap();
        assert_eq!(ordered.candidates[0].tokens, vec![3, 4]);
        assert_eq!(ordered.candidates[0].finish, Finish::Stop);
        // "the", "cat", then <end> at the leftmost masked position: 3 calls, the other 3
        // positions are padding
        assert_eq!(ordered.forwards, 3);
        assert!((ordered.tokens_per_forward - 2.0).abs() < 1e-12);
        assert!((ordered.decoded_per_forward - 1.0).abs() < 1e-12);
        assert_eq!(ordered.candidates[0].logprobs.len(), 2);
    }

    #[test]
    fn wrong_size_logits_are_an_error() {
        // whole rows (the default slot path checks them); the two all-mask rows of the first
        // call are one distinct row
        let model = Broken(crate::testing::WordVocab::new(&WORDS));
        let err = decode(&model, &[2], &[], &[END], 2, &MaskedConfig::default().with_length(4)).unwrap_err();
        assert!(err.to_string().contains("logits for 1 rows of 5 tokens"), "{err}");
        // slot logits
        let model = BrokenSlots(crate::testing::WordVocab::new(&WORDS));
        let err = decode(&model, &[2], &[], &[END], 2, &MaskedConfig::default().with_length(4)).unwrap_err();
        match err {
            Error::Logits { got, expected } => assert_eq!((got, expected), (4 * V + 1, 4 * V)),
            other => panic!("expected a logits error, got {other:?}"),
        }
    }

    #[test]
    fn no_samples_no_calls() {
        let model = table_model(vec![1.0]);
        let out = decode(&model, &[2], &[], &[END], 0, &MaskedConfig::default()).unwrap();
        assert!(out.candidates.is_empty());
        assert_eq!((out.forwards, out.row_forwards, out.tokens_per_forward), (0, 0, 0.0));
        assert_eq!(model.forwards(), 0);
    }

    #[test]
    fn config_round_trips_through_serde() {
        let cfg = MaskedConfig::default()
            .with_length(32)
            .with_block_length(8)
            .with_schedule(Schedule::Threshold { threshold: 0.9 })
            .with_temperature(0.5)
            .with_seed(4);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""schedule":{"type":"threshold","threshold":0.9}"#), "{json}");
        assert_eq!(serde_json::from_str::<MaskedConfig>(&json).unwrap(), cfg);
        let parsed: MaskedConfig =
            serde_json::from_str(r#"{"length": 8, "schedule": {"type": "first_hitting"}}"#).unwrap();
        assert_eq!(parsed, MaskedConfig::default().with_length(8).with_schedule(Schedule::FirstHitting));
        assert_eq!((parsed.steps(), parsed.block_length()), (8, 8));
        assert!(serde_json::from_str::<MaskedConfig>(r#"{"lenght": 8}"#).is_err());
    }
}

//! One masked position's choice: the extractive rule (which tokens keep the slot a span of
//! the context) and the float64 draw of a token.

use std::cell::OnceCell;

use rand_chacha::ChaCha8Rng;

use crate::constrain::SpanIndex;
use crate::sample::{categorical, uniform};

/// A candidate token for a masked position.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pick {
    pub(super) pos: usize,
    pub(super) token: u32,
    pub(super) logprob: f64,
}

/// The extractive rule of [`super::decode_extractive`] for one row.
#[derive(Clone, Copy)]
pub(super) struct Constraint<'a> {
    pub(super) index: &'a SpanIndex,
    pub(super) stop: &'a [u32],
}

impl Constraint<'_> {
    /// The tokens slot position `pos` may take (sorted, stop tokens included), or `None` when it
    /// is free.
    pub(super) fn allowed(&self, pos: usize, slot: &[u32], masked: &[bool]) -> Option<Vec<u32>> {
        let is_stop = |i: usize| !masked[i] && self.stop.contains(&slot[i]);
        if (0..pos).any(is_stop) {
            return None; // past the answer's end
        }
        let mut lo = pos;
        while lo > 0 && !masked[lo - 1] {
            lo -= 1;
        }
        let mut hi = pos + 1;
        while hi < slot.len() && !masked[hi] && !is_stop(hi) {
            hi += 1;
        }
        // The longest suffix of the left run that occurs in a chunk.
        let (left, state) = (lo..=pos)
            .find_map(|from| self.index.walk(&slot[from..pos]).map(|s| (&slot[from..pos], s)))
            .unwrap_or((&slot[pos..pos], self.index.root()));
        let next = self.index.allowed(state);
        if next.is_empty() && !left.is_empty() {
            return Some(self.stop.to_vec()); // the left run ends its chunk: so does the answer
        }
        let right = &slot[pos + 1..hi];
        let mut joined: Vec<u32> = if right.is_empty() {
            next.clone()
        } else {
            let mut span = Vec::with_capacity(left.len() + 1 + right.len());
            next.iter()
                .copied()
                .filter(|&t| {
                    span.clear();
                    span.extend_from_slice(left);
                    span.push(t);
                    span.extend_from_slice(right);
                    self.index.contains(&span)
                })
                .collect()
        };
        if joined.is_empty() {
            joined = next;
        }
        if joined.is_empty() {
            return None;
        }
        joined.extend_from_slice(self.stop);
        joined.sort_unstable();
        joined.dedup();
        Some(joined)
    }
}

/// One model call's logits for one slot, position by position, with each position's
/// log-sum-exp computed once (rows in the same state share it, as do the repeated choices of
/// an extractive step).
pub(super) struct SlotLogits<'a> {
    logits: &'a [f32],
    vocab: usize,
    lse: Vec<OnceCell<f64>>,
}

impl<'a> SlotLogits<'a> {
    /// `logits` is `positions × vocab`, row-major.
    pub(super) fn new(logits: &'a [f32], vocab: usize) -> Self {
        let positions = logits.len() / vocab.max(1);
        SlotLogits { logits, vocab, lse: vec![OnceCell::new(); positions] }
    }

    /// Slot position `pos`'s logits.
    pub(super) fn at(&self, pos: usize) -> &'a [f32] {
        &self.logits[pos * self.vocab..(pos + 1) * self.vocab]
    }

    /// `log Σ exp(logits)` of position `pos`, in float64.
    fn lse(&self, pos: usize) -> f64 {
        *self.lse[pos].get_or_init(|| {
            let logits = self.at(pos);
            let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
            max + logits.iter().map(|&x| (f64::from(x) - max).exp()).sum::<f64>().ln()
        })
    }
}

/// The token for one position (among `allowed`, when given, never one of `deny`): argmax at temperature 0, else a
/// float64 draw from `softmax(logits / t)`; never the mask token. Its log-probability is under
/// the full, untempered softmax.
///
/// With `allowed` given only those tokens are looked at (the extractive rule allows a few
/// hundred of 49k); the choice is the one a pass over the whole vocabulary with zero weights
/// elsewhere makes, bit for bit (same order of summation, zeros add nothing).
#[allow(clippy::too_many_arguments)]
pub(super) fn pick(
    pos: usize,
    slot: &SlotLogits<'_>,
    mask: u32,
    allowed: Option<&[u32]>,
    deny: &[u32],
    t: f64,
    rng: &mut ChaCha8Rng,
    weights: &mut Vec<f64>,
) -> Pick {
    let logits = slot.at(pos);
    let lse = slot.lse(pos);
    let ok = |i: u32| i != mask && (i as usize) < logits.len() && !deny.contains(&i);
    // Greedy choice among the allowed tokens, ties to the lowest id.
    let argmax = |ids: &mut dyn Iterator<Item = u32>| {
        ids.filter(|&i| ok(i)).fold(None::<u32>, |b, i| {
            if b.is_none_or(|b| logits[i as usize] > logits[b as usize]) { Some(i) } else { b }
        })
    };
    let chosen = match allowed {
        Some(a) => argmax(&mut a.iter().copied()),
        None => argmax(&mut (0..logits.len() as u32)),
    };
    // Nothing allowed is in the vocabulary (ids from another tokenizer): decode freely.
    let (best, free) = match chosen {
        Some(best) => (best, false),
        None => match (0..logits.len())
            .filter(|&i| i as u32 != mask)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
        {
            Some(best) => (best as u32, true),
            None => return Pick { pos, token: mask, logprob: f64::NEG_INFINITY },
        },
    };
    let token = if t > 0.0 {
        let u = uniform(rng);
        let top = f64::from(logits[best as usize]);
        let keep = |i: u32| if free { i != mask } else { ok(i) };
        let weight = |i: u32| if keep(i) { ((f64::from(logits[i as usize]) - top) / t).exp() } else { 0.0 };
        weights.clear();
        match allowed.filter(|_| !free) {
            Some(a) => {
                weights.extend(a.iter().map(|&i| weight(i)));
                categorical(weights, u).map_or(best, |k| a[k])
            }
            None => {
                weights.extend((0..logits.len() as u32).map(weight));
                categorical(weights, u).map_or(best, |k| k as u32)
            }
        }
    } else {
        best
    };
    Pick { pos, token, logprob: f64::from(logits[token as usize]) - lse }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::{RngCore, SeedableRng};

    /// The rule `pick` implements, written the slow way: every token of the vocabulary gets a
    /// weight (zero when not allowed), as the decoder did before it looked at `allowed` only.
    fn whole_vocabulary(
        logits: &[f32],
        mask: u32,
        allowed: Option<&[u32]>,
        deny: &[u32],
        t: f64,
        rng: &mut ChaCha8Rng,
    ) -> (u32, f64) {
        let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
        let lse = max + logits.iter().map(|&x| (f64::from(x) - max).exp()).sum::<f64>().ln();
        let ok = |i: usize| {
            i as u32 != mask && !deny.contains(&(i as u32)) && allowed.is_none_or(|a| a.contains(&(i as u32)))
        };
        let mut best = None::<usize>;
        for (i, &x) in logits.iter().enumerate() {
            if ok(i) && best.is_none_or(|b| x > logits[b]) {
                best = Some(i);
            }
        }
        let best = best
            .or_else(|| {
                (0..logits.len())
                    .filter(|&i| i as u32 != mask)
                    .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            })
            .expect("a token besides the mask");
        let free = !ok(best);
        let token = if t > 0.0 {
            let u = uniform(rng);
            let top = f64::from(logits[best]);
            let w: Vec<f64> = logits
                .iter()
                .enumerate()
                .map(|(i, &x)| if (free && i as u32 != mask) || ok(i) { ((f64::from(x) - top) / t).exp() } else { 0.0 })
                .collect();
            categorical(&w, u).unwrap_or(best)
        } else {
            best
        };
        (token as u32, f64::from(logits[token]) - lse)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Looking at the allowed tokens only chooses what the whole-vocabulary pass chooses,
        /// with the same log-probability, at any temperature, with ties, denied tokens and
        /// allowed ids outside the vocabulary.
        #[test]
        fn allowed_only_choice_equals_the_whole_vocabulary_pass(
            logits in proptest::collection::vec(prop_oneof![Just(0.0f32), Just(1.5f32), -8.0f32..8.0], 2..40),
            allowed in proptest::option::of(proptest::collection::btree_set(0u32..48, 0..8)),
            deny_first in any::<bool>(),
            t in prop_oneof![Just(0.0f64), Just(0.7), Just(1.0), 0.05f64..3.0],
            seed in any::<u64>(),
        ) {
            let allowed: Option<Vec<u32>> = allowed.map(|a| a.into_iter().collect());
            let deny: Vec<u32> = if deny_first { vec![1] } else { vec![] };
            let (mask, vocab) = (0u32, logits.len());
            let slot = SlotLogits::new(&logits, vocab);
            let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(seed), ChaCha8Rng::seed_from_u64(seed));
            let got = pick(0, &slot, mask, allowed.as_deref(), &deny, t, &mut a, &mut Vec::new());
            let (token, logprob) = whole_vocabulary(&logits, mask, allowed.as_deref(), &deny, t, &mut b);
            prop_assert_eq!(got.pos, 0);
            prop_assert_eq!(got.token, token);
            prop_assert_eq!(got.logprob.to_bits(), logprob.to_bits());
            // Both consumed the same randomness.
            prop_assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}

//! One masked position's choice: the extractive rule (which tokens keep the slot a span of
//! the context) and the float64 draw of a token.

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

/// The token for one position (among `allowed`, when given, never one of `deny`): argmax at temperature 0, else a
/// float64 draw from `softmax(logits / t)`; never the mask token. Its log-probability is under
/// the full, untempered softmax.
#[allow(clippy::too_many_arguments)]
pub(super) fn pick(
    pos: usize,
    logits: &[f32],
    mask: u32,
    allowed: Option<&[u32]>,
    deny: &[u32],
    t: f64,
    rng: &mut ChaCha8Rng,
    weights: &mut Vec<f64>,
) -> Pick {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let lse = max + logits.iter().map(|&x| (f64::from(x) - max).exp()).sum::<f64>().ln();
    let ok = |i: usize| {
        i as u32 != mask && !deny.contains(&(i as u32)) && allowed.is_none_or(|a| a.binary_search(&(i as u32)).is_ok())
    };
    // Greedy choice, ties to the lowest id.
    let mut best = None::<usize>;
    for (i, &x) in logits.iter().enumerate() {
        if ok(i) && best.is_none_or(|b| x > logits[b]) {
            best = Some(i);
        }
    }
    // Nothing allowed is in the vocabulary (ids from another tokenizer): decode freely.
    let Some(best) = best.or_else(|| {
        (0..logits.len()).filter(|&i| i as u32 != mask).max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
    }) else {
        return Pick { pos, token: mask, logprob: f64::NEG_INFINITY };
    };
    let free = !ok(best);
    let token =
        if t > 0.0 {
            let u = uniform(rng);
            let top = f64::from(logits[best]);
            weights.clear();
            weights.extend(logits.iter().enumerate().map(|(i, &x)| {
                if (free && i as u32 != mask) || ok(i) { ((f64::from(x) - top) / t).exp() } else { 0.0 }
            }));
            categorical(weights, u).unwrap_or(best)
        } else {
            best
        };
    Pick { pos, token: token as u32, logprob: f64::from(logits[token]) - lse }
}

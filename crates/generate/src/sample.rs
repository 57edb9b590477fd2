//! Token sampling in float64: temperature, top-k, top-p (nucleus) and Mirostat, with one
//! seeded random stream per candidate so results are reproducible and do not depend on how
//! candidates are batched.
//!
//! ```
//! use metarag_generate::sample::{Sampler, SamplerConfig, row_rng};
//! let cfg = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
//! let mut s = Sampler::new(&cfg);
//! let mut rng = row_rng(7, 0);
//! let pick = s.sample(&[0.0, 3.0, 1.0], None, &mut rng);
//! assert_eq!(pick.token, 1); // temperature 0 is greedy
//! ```

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// The random stream of candidate `row` under `seed` (ChaCha8, stream = row): candidate i
/// gets the same numbers whether it is decoded alone or in a batch.
pub fn row_rng(seed: u64, row: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(row as u64);
    rng
}

/// A uniform float64 in `[0, 1)` with 53 random bits.
pub fn uniform(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Index drawn from `weights` (non-negative, not necessarily normalised) by inverse CDF
/// with the uniform `u` in `[0, 1)`, all in float64 (float32 Gumbel noise lowers the
/// effective temperature). Zero weights are never drawn. `None` when all weights are 0.
pub fn categorical(weights: &[f64], u: f64) -> Option<usize> {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    let target = u * total;
    let mut acc = 0.0;
    let mut last = None;
    for (i, &w) in weights.iter().enumerate() {
        if w <= 0.0 {
            continue;
        }
        acc += w;
        last = Some(i);
        if target < acc {
            return Some(i);
        }
    }
    last
}

/// Log-softmax of one logits row, in float64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + logits.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

/// Mirostat (v2): keeps the observed surprise (−log2 p of the sampled token) near `tau`
/// bits by truncating tokens more surprising than `mu` and updating
/// `mu ← mu − eta·(surprise − tau)` after each token (starts at `mu = 2·tau`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mirostat {
    /// Target surprise τ in bits per token (e.g. 3.0).
    pub tau: f64,
    /// Learning rate η (e.g. 0.1).
    pub eta: f64,
}

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches top_p (1 = off).
    pub top_p: f64,
    /// Mirostat instead of top-k/top-p.
    pub mirostat: Option<Mirostat>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.7, top_k: 40, top_p: 0.95, mirostat: None }
    }
}

impl SamplerConfig {
    /// Checks the ranges.
    pub fn check(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature must be >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if let Some(m) = self.mirostat
            && !(m.tau > 0.0 && m.eta > 0.0 && m.tau.is_finite() && m.eta.is_finite())
        {
            return Err(format!("mirostat needs tau > 0 and eta > 0, got tau {} eta {}", m.tau, m.eta));
        }
        Ok(())
    }
}

/// A sampled token with the model's log-probability of it (the full, untempered, unconstrained
/// distribution: what perplexity-based aggregation needs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    /// The token.
    pub token: u32,
    /// `log p(token)` under the model's full softmax.
    pub logprob: f64,
}

/// Per-candidate sampling state (Mirostat's `mu`).
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplerConfig,
    mu: f64,
}

impl Sampler {
    /// A fresh state for one candidate.
    pub fn new(cfg: &SamplerConfig) -> Self {
        Sampler { cfg: cfg.clone(), mu: cfg.mirostat.map_or(0.0, |m| 2.0 * m.tau) }
    }

    /// Current Mirostat threshold (bits).
    pub fn mu(&self) -> f64 {
        self.mu
    }

    /// Draws the next token from `logits`, restricted to `allowed` when given (a non-empty
    /// set of token ids; tokens outside it get probability 0). Ties in greedy mode go to the
    /// lowest id.
    pub fn sample(&mut self, logits: &[f32], allowed: Option<&[u32]>, rng: &mut impl RngCore) -> Pick {
        let full = log_softmax(logits);
        // Candidate ids with their log-probabilities.
        let mut pool: Vec<(u32, f64)> = match allowed {
            Some(ids) => ids.iter().filter(|&&i| (i as usize) < full.len()).map(|&i| (i, full[i as usize])).collect(),
            None => full.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect(),
        };
        // Draw the uniform first so every path consumes exactly one number per token.
        let u = uniform(rng);
        if pool.is_empty() {
            return Pick { token: 0, logprob: f64::NEG_INFINITY };
        }
        if self.cfg.temperature == 0.0 {
            let best = pool
                .iter()
                .copied()
                .fold(None::<(u32, f64)>, |b, c| match b {
                    Some(b) if b.1 > c.1 || (b.1 == c.1 && b.0 < c.0) => Some(b),
                    _ => Some(c),
                })
                .unwrap_or((0, f64::NEG_INFINITY));
            return Pick { token: best.0, logprob: best.1 };
        }
        let t = self.cfg.temperature;
        // Tempered log-weights, sorted most likely first (ties: lower id first).
        let by_weight = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if let Some(m) = self.cfg.mirostat {
            pool.sort_unstable_by(by_weight);
            let max = pool[0].1 / t;
            let lse = max + pool.iter().map(|&(_, l)| (l / t - max).exp()).sum::<f64>().ln();
            // Keep tokens whose surprise (bits, under the tempered distribution) is <= mu;
            // always keep the most likely one.
            let keep = pool.iter().take_while(|&&(_, l)| -(l / t - lse) / std::f64::consts::LN_2 <= self.mu).count();
            pool.truncate(keep.max(1));
            let w: Vec<f64> = pool.iter().map(|&(_, l)| (l / t - max).exp()).collect();
            let i = categorical(&w, u).unwrap_or(0);
            let surprise = -((pool[i].1 / t - lse) / std::f64::consts::LN_2);
            self.mu -= m.eta * (surprise - m.tau);
            return Pick { token: pool[i].0, logprob: pool[i].1 };
        }
        let k = if self.cfg.top_k == 0 { pool.len() } else { self.cfg.top_k.min(pool.len()) };
        if k < pool.len() {
            pool.select_nth_unstable_by(k - 1, by_weight);
            pool.truncate(k);
        }
        pool.sort_unstable_by(by_weight);
        let max = pool[0].1 / t;
        let mut w: Vec<f64> = pool.iter().map(|&(_, l)| (l / t - max).exp()).collect();
        if self.cfg.top_p < 1.0 {
            let total: f64 = w.iter().sum();
            let mut acc = 0.0;
            let mut keep = w.len();
            for (i, &x) in w.iter().enumerate() {
                acc += x;
                if acc >= self.cfg.top_p * total {
                    keep = i + 1;
                    break;
                }
            }
            w.truncate(keep);
        }
        let i = categorical(&w, u).unwrap_or(0);
        Pick { token: pool[i].0, logprob: pool[i].1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categorical_matches_the_target_distribution() {
        // Chi-square goodness of fit over 200k float64 draws.
        let w = [0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0];
        let mut rng = row_rng(42, 3);
        let n = 200_000;
        let mut counts = [0usize; 6];
        for _ in 0..n {
            counts[categorical(&w, uniform(&mut rng)).unwrap()] += 1;
        }
        assert_eq!(counts[5], 0, "a zero weight was drawn");
        let chi2: f64 = w[..5]
            .iter()
            .zip(&counts)
            .map(|(&p, &c)| {
                let e = p * n as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum();
        // 4 degrees of freedom: P(chi2 > 18.47) = 0.001.
        assert!(chi2 < 18.47, "chi2 {chi2}, counts {counts:?}");
    }

    #[test]
    fn tiny_probabilities_survive_float64() {
        // A token with probability 1e-9 relative weight must still be drawable in principle and
        // the mass must be exact: with u just below 1 we land on the last positive weight.
        let w = [1.0, 1e-9];
        assert_eq!(categorical(&w, 1.0 - 1e-12), Some(1));
        assert_eq!(categorical(&w, 0.5), Some(0));
        assert_eq!(categorical(&[0.0, 0.0], 0.3), None);
    }

    #[test]
    fn sampling_follows_the_softmax() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let p: Vec<f64> = log_softmax(&logits).iter().map(|l| l.exp()).collect();
        let cfg = SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, mirostat: None };
        let mut s = Sampler::new(&cfg);
        let mut rng = row_rng(1, 0);
        let n = 100_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[s.sample(&logits, None, &mut rng).token as usize] += 1;
        }
        let chi2: f64 = p.iter().zip(&counts).map(|(&p, &c)| (c as f64 - p * n as f64).powi(2) / (p * n as f64)).sum();
        assert!(chi2 < 16.27, "chi2 {chi2} (3 dof, p=0.001), counts {counts:?}");
    }

    #[test]
    fn top_k_top_p_and_allowed_sets_are_respected() {
        let logits = [5.0f32, 4.0, 3.0, 2.0, 1.0];
        let mut rng = row_rng(9, 0);
        let mut s = Sampler::new(&SamplerConfig { temperature: 5.0, top_k: 2, top_p: 1.0, mirostat: None });
        for _ in 0..500 {
            assert!(s.sample(&logits, None, &mut rng).token < 2);
        }
        // top_p 0.5 at low temperature keeps only the first token.
        let mut s = Sampler::new(&SamplerConfig { temperature: 0.5, top_k: 0, top_p: 0.5, mirostat: None });
        for _ in 0..200 {
            assert_eq!(s.sample(&logits, None, &mut rng).token, 0);
        }
        let mut s = Sampler::new(&SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, mirostat: None });
        for _ in 0..500 {
            let p = s.sample(&logits, Some(&[3, 4]), &mut rng);
            assert!(p.token == 3 || p.token == 4);
            // The reported log-probability is the full softmax's, not the restricted one.
            assert!((p.logprob - log_softmax(&logits)[p.token as usize]).abs() < 1e-12);
        }
    }

    #[test]
    fn mirostat_tracks_the_target_surprise() {
        // A geometric distribution over 1000 tokens: unrestricted sampling averages its
        // entropy, 3.76 bits; Mirostat must pull the observed surprise down to tau = 3.
        let logits: Vec<f32> = (0..1000).map(|i| -(i as f32) * 0.2).collect();
        let cfg =
            SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, mirostat: Some(Mirostat { tau: 3.0, eta: 0.1 }) };
        let mut s = Sampler::new(&cfg);
        let mut rng = row_rng(5, 0);
        let full = log_softmax(&logits);
        let mut total = 0.0;
        let steps = 3000;
        for i in 0..steps {
            let p = s.sample(&logits, None, &mut rng);
            if i >= 500 {
                total += -full[p.token as usize] / std::f64::consts::LN_2;
            }
        }
        let mean = total / (steps - 500) as f64;
        // Observed surprise under the (untruncated) model stays near tau, well below 3.76.
        assert!((mean - 3.0).abs() < 0.25, "mean surprise {mean} bits");
    }

    #[test]
    fn same_seed_same_row_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let cfg = SamplerConfig::default();
        let draw = |row| {
            let mut s = Sampler::new(&cfg);
            let mut rng = row_rng(11, row);
            (0..20).map(|_| s.sample(&logits, None, &mut rng).token).collect::<Vec<_>>()
        };
        assert_eq!(draw(2), draw(2));
        assert_ne!(draw(2), draw(3));
    }
}

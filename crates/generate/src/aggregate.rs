//! Aggregation of sampled answer paths into one answer with a confidence: RPC (Reasoning
//! Pruning + Perplexity Consistency, arXiv 2502.00511), self-consistency voting, and the
//! single lowest-perplexity path.
//!
//! ```
//! use metarag_generate::aggregate::{Method, Path, aggregate};
//!
//! let paths = [
//!     Path { answer: "London", completion: "It is London.", p: 0.20, logprob: f64::NAN },
//!     Path { answer: "london", completion: "Maybe London", p: 0.25, logprob: f64::NAN },
//!     Path { answer: "The Paris", completion: "Paris, surely.", p: 0.90, logprob: f64::NAN },
//! ];
//! // Voting follows the majority; RPC weighs each path by its probability.
//! assert_eq!(aggregate(&paths, Method::Vote).answer().unwrap().answer, "london");
//! let rpc = aggregate(&paths, Method::Rpc);
//! let best = rpc.answer().unwrap();
//! assert_eq!(best.answer, "paris"); // the normalised key
//! assert_eq!(paths[best.representative].answer, "The Paris"); // the text to show
//! assert!(rpc.confidence() > 0.5);
//! ```
//!
//! Every path carries `p = exp(mean token log-prob)` (1/perplexity) of its completion and,
//! when known, `logprob`, the log-probability of the whole completion (its tokens and its
//! closing). Paths are grouped by their normalised answer
//! ([`metarag_core::answer::normalize_answer`], SQuAD normalisation); the groups are scored
//! by the [`Method`]:
//!
//! - [`Method::Rpc`]: *Reasoning Pruning* fits a two-component [`WeibullMixture`] to the
//!   `p` values of the distinct completions (one value per completion text, the largest of
//!   its copies) by maximum likelihood and prunes path `i` when the low component explains
//!   it better (`P(low | p_i) > P(high | p_i)`) and `p_i` is below the distinct completions'
//!   mean. Pruning is skipped with fewer than [`MIN_DISTINCT_FOR_PRUNING`] distinct
//!   completions (short answers sampled N times repeat: 8 samples may hold only two or three
//!   distinct values, and a two-component fit to them puts each cluster in its own component
//!   and prunes the lower one whole), when all their `p` are equal, or when it would prune
//!   every path (the values fitted are the paths' weights below: `exp(logprob)` when known,
//!   else `p`). *Perplexity Consistency* then scores a group by the summed probability of
//!   its unpruned paths, each distinct completion text counted once: the paper's estimator of
//!   the answer's probability, `Σ p(t)` over the distinct sampled paths `t` that give it.
//!   With `logprob` known, a path's probability is `exp(logprob)`, the model's probability of
//!   the whole completion, and the confidence is the group's estimate itself, over all its
//!   distinct completions (pruned ones included; at most 1): the probability mass the model
//!   puts on this answer among what was sampled. This is the estimator's own quantity; the
//!   reference code weighs paths by `exp(mean log-prob)` instead because long reasoning
//!   chains have vanishing products, a concern short answers do not have (on 500 SQuAD dev
//!   questions, N = 8, extractive: EM 0.312 -> 0.370, ECE 0.27 -> 0.09 against pruning and
//!   summing `exp(mean log-prob)`; voting 0.352). Without `logprob` (NaN), `p` is the path's weight and the confidence is the
//!   score over the mass of ALL distinct completions, pruned ones included (0 when that mass
//!   is 0): pruning chooses the answer but does not inflate its confidence, so the groups'
//!   confidences sum to at most 1.
//! - [`Method::Vote`]: score = number of paths, confidence = share of paths.
//! - [`Method::Ppl`]: score = the largest `p` in the group, so the group of the most
//!   probable path wins; its confidence is that `p` itself (not a share), as the reference
//!   code reports for this baseline.
//!
//! Groups are ranked by score, ties going to the group that appeared first. The winner is
//! the best-ranked group with a non-empty normalised answer: a group of empty answers
//! ("", e.g. "the" or ".") wins only when no path has a non-empty answer. All of it is
//! deterministic.
//!
//! Where this differs from the reference code (WNJXYK/RPC): the mixture is fitted by EM
//! (weighted Weibull maximum likelihood, Newton on the shape) instead of L-BFGS-B, with the
//! same initial values and bounds plus an upper bound on the shapes ([`WeibullMixture::K_MAX`]),
//! so the fit may reach a different local optimum; ties are broken by first occurrence
//! instead of splitting the credit between tied answers; identical completions count once
//! even if their `p` differ (the reference sums their distinct `p` values).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use metarag_core::answer::normalize_answer;
use serde::{Deserialize, Serialize};

use crate::Error;

/// RPC prunes only when the paths hold at least this many distinct completions: a mixture of
/// two Weibull components fitted to fewer values separates clusters of identical answers
/// rather than unlikely reasoning paths.
pub const MIN_DISTINCT_FOR_PRUNING: usize = 4;

/// How sampled paths are turned into one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Reasoning Pruning + Perplexity Consistency.
    #[default]
    Rpc,
    /// Self-consistency: the most frequent answer.
    Vote,
    /// The answer of the single most probable (lowest-perplexity) path.
    Ppl,
}

impl Method {
    /// The lowercase name (`rpc`, `vote`, `ppl`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Rpc => "rpc",
            Method::Vote => "vote",
            Method::Ppl => "ppl",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    /// Parses `rpc`, `vote` or `ppl` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Error> {
        [Method::Rpc, Method::Vote, Method::Ppl]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::Config(format!("unknown aggregation method {s:?}: expected rpc, vote or ppl")))
    }
}

/// One sampled answer path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Path<'a> {
    /// The final answer text; paths are grouped by its normalised form.
    pub answer: &'a str,
    /// The whole generated text; RPC counts identical completions once.
    pub completion: &'a str,
    /// `exp(mean token log-prob)` of the completion, in `[0, 1]` (a value outside is clamped,
    /// a non-finite one counts as 0).
    pub p: f64,
    /// Log-probability of the whole completion (tokens and closing), `<= 0`; NaN when unknown
    /// (RPC then weighs the path by `p`). `-inf` for a completion the model cannot produce.
    pub logprob: f64,
}

impl Path<'_> {
    /// RPC's weight of the path: `exp(logprob)` when known, else `p` (clamped as `p` is).
    fn weight(&self) -> f64 {
        let w = if self.logprob.is_nan() { self.p } else { self.logprob.min(0.0).exp() };
        if w.is_finite() { w.clamp(0.0, 1.0) } else { 0.0 }
    }
}

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Index of the path's group in [`Aggregation::groups`].
    pub group: usize,
    /// Whether RPC's Reasoning Pruning removed the path (always false for vote and ppl).
    pub pruned: bool,
}

/// The paths that share one normalised answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The normalised answer (the grouping key; may be "").
    pub answer: String,
    /// Index of the group's most probable path (unpruned ones first; ties: the earliest),
    /// whose `answer` text is the one to show.
    pub representative: usize,
    /// Indices of the group's paths, in input order.
    pub members: Vec<usize>,
    /// The method's score (see the module documentation).
    pub score: f64,
    /// The method's confidence in `[0, 1]`.
    pub confidence: f64,
}

/// The result of aggregating paths.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregation {
    /// The method used.
    pub method: Method,
    /// Index of the winning group in `groups`; `None` only without paths.
    pub winner: Option<usize>,
    /// The groups, best score first (ties: first occurrence first).
    pub groups: Vec<Group>,
    /// One verdict per path, in input order.
    pub verdicts: Vec<Verdict>,
    /// The mixture RPC fitted to the path probabilities (`None` when pruning was skipped or
    /// the method is not RPC).
    pub weibull: Option<WeibullMixture>,
}

impl Aggregation {
    /// The winning group.
    pub fn answer(&self) -> Option<&Group> {
        self.winner.and_then(|w| self.groups.get(w))
    }

    /// The winning group's confidence (0 without paths).
    pub fn confidence(&self) -> f64 {
        self.answer().map_or(0.0, |g| g.confidence)
    }

    /// Number of pruned paths.
    pub fn pruned(&self) -> usize {
        self.verdicts.iter().filter(|v| v.pruned).count()
    }
}

/// Aggregates sampled paths with `method` (see the module documentation).
pub fn aggregate(paths: &[Path<'_>], method: Method) -> Aggregation {
    let n = paths.len();
    let p: Vec<f64> = paths.iter().map(|x| if x.p.is_finite() { x.p.clamp(0.0, 1.0) } else { 0.0 }).collect();

    // Groups in order of first occurrence.
    let mut keys: Vec<String> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut group_of = Vec::with_capacity(n);
    for (i, path) in paths.iter().enumerate() {
        let key = normalize_answer(path.answer);
        let g = *by_key.entry(key.clone()).or_insert_with(|| {
            keys.push(key);
            members.push(Vec::new());
            keys.len() - 1
        });
        members[g].push(i);
        group_of.push(g);
    }

    // RPC weighs paths by their whole probability when every path has one.
    let whole = method == Method::Rpc && !paths.is_empty() && paths.iter().all(|x| !x.logprob.is_nan());
    let w: Vec<f64> = if whole { paths.iter().map(Path::weight).collect() } else { p.clone() };
    let (pruned, weibull) = match method {
        // Reasoning Pruning fits the same probabilities that Perplexity Consistency sums.
        Method::Rpc => prune(paths, &w),
        Method::Vote | Method::Ppl => (vec![false; n], None),
    };
    let scores: Vec<f64> = members
        .iter()
        .map(|m| match method {
            Method::Rpc => unique_completion_mass(paths, &w, &pruned, m),
            Method::Vote => m.len() as f64,
            Method::Ppl => m.iter().map(|&i| p[i]).fold(0.0, f64::max),
        })
        .collect();
    let total: f64 = match method {
        // the mass of every distinct completion, pruned ones included
        Method::Rpc => members.iter().map(|m| unique_completion_mass(paths, &w, &vec![false; n], m)).sum(),
        _ => scores.iter().sum(),
    };
    // With whole-path probabilities: each group's own estimate, pruned paths included.
    let estimates: Vec<f64> =
        members.iter().map(|m| unique_completion_mass(paths, &w, &vec![false; n], m).min(1.0)).collect();
    let confidence = |g: usize, score: f64| match method {
        Method::Rpc if whole => estimates[g],
        Method::Rpc => {
            if total > 0.0 {
                score / total
            } else {
                0.0
            }
        }
        Method::Vote => score / n as f64,
        Method::Ppl => score,
    };

    // Rank: score descending, then first occurrence (the pre-sort index).
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut rank = vec![0; keys.len()];
    for (r, &g) in order.iter().enumerate() {
        rank[g] = r;
    }

    let groups: Vec<Group> = order
        .iter()
        .map(|&g| Group {
            answer: keys[g].clone(),
            representative: representative(&members[g], &p, &pruned),
            members: members[g].clone(),
            score: scores[g],
            confidence: confidence(g, scores[g]),
        })
        .collect();
    let winner = groups.iter().position(|g| !g.answer.is_empty()).or((!groups.is_empty()).then_some(0));
    let verdicts = group_of.iter().zip(&pruned).map(|(&g, &pruned)| Verdict { group: rank[g], pruned }).collect();
    Aggregation { method, winner, groups, verdicts, weibull }
}

/// Reasoning Pruning: which paths to drop, and the fitted mixture (when one was fitted). The
/// mixture is fitted to one value per distinct completion (the largest `p` of its copies).
fn prune(paths: &[Path<'_>], p: &[f64]) -> (Vec<bool>, Option<WeibullMixture>) {
    let n = p.len();
    let none = vec![false; n];
    let mut distinct: Vec<(&str, f64)> = Vec::new();
    for (path, &x) in paths.iter().zip(p) {
        match distinct.iter_mut().find(|(c, _)| *c == path.completion) {
            Some((_, q)) => *q = q.max(x),
            None => distinct.push((path.completion, x)),
        }
    }
    let values: Vec<f64> = distinct.iter().map(|&(_, q)| q).collect();
    if values.len() < MIN_DISTINCT_FOR_PRUNING.max(3) || values.iter().all(|&x| x == values[0]) {
        return (none, None);
    }
    let mixture = WeibullMixture::fit(&values);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let pruned: Vec<bool> = p.iter().map(|&x| x < mean && mixture.log_odds_high(x) < 0.0).collect();
    if pruned.iter().all(|&x| x) { (none, Some(mixture)) } else { (pruned, Some(mixture)) }
}

/// Sum of `p` over the distinct completions of a group's unpruned paths (each completion
/// counted once, with the largest `p` among its copies).
fn unique_completion_mass(paths: &[Path<'_>], p: &[f64], pruned: &[bool], members: &[usize]) -> f64 {
    let mut best: Vec<(&str, f64)> = Vec::new();
    for &i in members.iter().filter(|&&i| !pruned[i]) {
        match best.iter_mut().find(|(c, _)| *c == paths[i].completion) {
            Some((_, q)) => *q = q.max(p[i]),
            None => best.push((paths[i].completion, p[i])),
        }
    }
    best.iter().map(|(_, q)| q).sum()
}

/// The most probable member, unpruned members first, ties to the earliest.
fn representative(members: &[usize], p: &[f64], pruned: &[bool]) -> usize {
    let pick = |keep: &dyn Fn(usize) -> bool| {
        members.iter().copied().filter(|&i| keep(i)).fold(None, |best: Option<usize>, i| match best {
            Some(b) if p[b] >= p[i] => Some(b),
            _ => Some(i),
        })
    };
    pick(&|i| !pruned[i]).or_else(|| pick(&|_| true)).unwrap_or(0)
}

/// A two-component Weibull mixture `w1·W(k1, l1) + (1 − w1)·W(k2, l2)` over `x > 0`, with
/// `W(k, λ)` the density `(k/λ)(x/λ)^(k−1) exp(−(x/λ)^k)`.
///
/// [`WeibullMixture::fit`] returns the high component (larger mean `λ·Γ(1 + 1/k)`) as
/// component 1, as the reference code does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeibullMixture {
    /// Weight of component 1, in `[0.2, 0.8]` after a fit.
    pub w1: f64,
    /// Shape of component 1.
    pub k1: f64,
    /// Scale of component 1.
    pub l1: f64,
    /// Shape of component 2.
    pub k2: f64,
    /// Scale of component 2.
    pub l2: f64,
}

impl WeibullMixture {
    /// The starting point of the fit (the reference's initial guess).
    pub const INIT: WeibullMixture = WeibullMixture { w1: 0.5, k1: 1.0, l1: 1.0, k2: 1.5, l2: 2.0 };
    /// Bounds of `w1`.
    pub const W_BOUNDS: (f64, f64) = (0.2, 0.8);
    /// Lower bound of shapes and scales.
    pub const PARAM_MIN: f64 = 0.01;
    /// Upper bound of the shapes (not in the reference, whose optimiser leaves them
    /// unbounded): a cluster of identical values would drive its shape to infinity.
    pub const K_MAX: f64 = 1000.0;
    /// Data values below this (0 included) are raised to it before fitting.
    pub const X_MIN: f64 = 1e-12;
    const MAX_ITER: usize = 5000;
    const TOL: f64 = 1e-11;

    /// Maximum-likelihood fit to `data` by EM from [`Self::INIT`], within the bounds
    /// (`w1` in [`Self::W_BOUNDS`], shapes and scales ≥ [`Self::PARAM_MIN`], shapes ≤
    /// [`Self::K_MAX`]). Each M-step clamps the weight (exact under the bound), solves the
    /// weighted Weibull likelihood equation for each shape by safeguarded Newton (clamped
    /// to its bounds), takes the scale in closed form, and keeps a component's old
    /// parameters if the new ones would lower its expected log-likelihood, so the
    /// likelihood never decreases. Stops when the relative gain falls below 1e-11 or after
    /// 5000 steps. Non-finite values are ignored; no data gives [`Self::INIT`] (reordered).
    /// Deterministic.
    pub fn fit(data: &[f64]) -> Self {
        let lx: Vec<f64> = data.iter().filter(|x| x.is_finite()).map(|&x| x.max(Self::X_MIN).ln()).collect();
        let mut m = Self::INIT;
        if !lx.is_empty() {
            let mut nll = m.nll_ln(&lx);
            for _ in 0..Self::MAX_ITER {
                let next = m.em_step(&lx);
                let next_nll = next.nll_ln(&lx);
                if next_nll.is_nan() || next_nll > nll {
                    break;
                }
                let done = nll - next_nll <= Self::TOL * (1.0 + next_nll.abs());
                m = next;
                nll = next_nll;
                if done {
                    break;
                }
            }
        }
        m.high_first()
    }

    /// The mixture density at `x` (0 for `x ≤ 0`).
    pub fn pdf(&self, x: f64) -> f64 {
        if x > 0.0 {
            let (a, b) = self.log_joint(x.ln());
            a.exp() + b.exp()
        } else {
            0.0
        }
    }

    /// Mean of a Weibull component: `λ·Γ(1 + 1/k)`.
    pub fn weibull_mean(k: f64, l: f64) -> f64 {
        l * ln_gamma(1.0 + 1.0 / k).exp()
    }

    /// Whether component 1 is the high one (mean at least component 2's).
    pub fn high_is_first(&self) -> bool {
        self.l1.ln() + ln_gamma(1.0 + 1.0 / self.k1) >= self.l2.ln() + ln_gamma(1.0 + 1.0 / self.k2)
    }

    /// The same mixture with the high component as component 1.
    pub fn high_first(self) -> Self {
        if self.high_is_first() {
            self
        } else {
            WeibullMixture { w1: 1.0 - self.w1, k1: self.k2, l1: self.l2, k2: self.k1, l2: self.l1 }
        }
    }

    /// Posterior probability that `x` comes from the high component (0.5 where neither
    /// component has density, e.g. at `x ≤ 0`).
    pub fn posterior_high(&self, x: f64) -> f64 {
        let d = self.log_odds_high(x);
        if d.is_nan() { 0.5 } else { 1.0 / (1.0 + (-d).exp()) }
    }

    /// `ln P(high | x) − ln P(low | x)` (0 where neither component has density).
    pub fn log_odds_high(&self, x: f64) -> f64 {
        if x <= 0.0 || x.is_nan() {
            return 0.0;
        }
        let (a, b) = self.log_joint(x.ln());
        let (high, low) = if self.high_is_first() { (a, b) } else { (b, a) };
        if high == low { 0.0 } else { high - low }
    }

    /// Negative log-likelihood of `data` (values below [`Self::X_MIN`] raised to it).
    pub fn nll(&self, data: &[f64]) -> f64 {
        let lx: Vec<f64> = data.iter().map(|&x| x.max(Self::X_MIN).ln()).collect();
        self.nll_ln(&lx)
    }

    fn nll_ln(&self, lx: &[f64]) -> f64 {
        -lx.iter()
            .map(|&l| {
                let (a, b) = self.log_joint(l);
                log_add(a, b)
            })
            .sum::<f64>()
    }

    /// `(ln(w1·f1(x)), ln((1 − w1)·f2(x)))` at `ln x`.
    fn log_joint(&self, lx: f64) -> (f64, f64) {
        (
            self.w1.ln() + weibull_ln_pdf(lx, self.k1, self.l1),
            (1.0 - self.w1).ln() + weibull_ln_pdf(lx, self.k2, self.l2),
        )
    }

    fn em_step(&self, lx: &[f64]) -> Self {
        let r1: Vec<f64> = lx
            .iter()
            .map(|&l| {
                let (a, b) = self.log_joint(l);
                if a == b { 0.5 } else { 1.0 / (1.0 + (b - a).exp()) }
            })
            .collect();
        let r2: Vec<f64> = r1.iter().map(|r| 1.0 - r).collect();
        let (lo, hi) = Self::W_BOUNDS;
        let w1 = (r1.iter().sum::<f64>() / lx.len() as f64).clamp(lo, hi);
        let (k1, l1) = weighted_weibull_fit(lx, &r1, self.k1, self.l1);
        let (k2, l2) = weighted_weibull_fit(lx, &r2, self.k2, self.l2);
        WeibullMixture { w1, k1, l1, k2, l2 }
    }
}

/// `ln` of the Weibull density at `ln x`.
fn weibull_ln_pdf(lx: f64, k: f64, l: f64) -> f64 {
    let z = lx - l.ln(); // ln(x/λ)
    k.ln() - l.ln() + (k - 1.0) * z - (k * z).exp()
}

/// `ln(e^a + e^b)`.
fn log_add(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY { m } else { m + ((a - m).exp() + (b - m).exp()).ln() }
}

/// Weighted expected log-likelihood `Σ w_i ln f(x_i; k, λ)`.
fn weighted_ll(lx: &[f64], w: &[f64], k: f64, l: f64) -> f64 {
    lx.iter().zip(w).filter(|(_, w)| **w > 0.0).map(|(&x, &w)| w * weibull_ln_pdf(x, k, l)).sum()
}

/// Weighted Weibull maximum likelihood within the bounds, or the old `(k0, l0)` when that
/// is not better (or the weights vanish).
fn weighted_weibull_fit(lx: &[f64], w: &[f64], k0: f64, l0: f64) -> (f64, f64) {
    let sw: f64 = w.iter().sum();
    if sw.is_nan() || sw <= 1e-300 {
        return (k0, l0);
    }
    let mean_lx = lx.iter().zip(w).map(|(x, w)| x * w).sum::<f64>() / sw;
    let k = solve_shape(lx, w, mean_lx, k0);
    // λ^k = Σ w x^k / Σ w, in logs
    let (log_s0, _, _) = tilted(lx, w, k);
    let l = ((log_s0 - sw.ln()) / k).exp().max(WeibullMixture::PARAM_MIN);
    if weighted_ll(lx, w, k, l) >= weighted_ll(lx, w, k0, l0) { (k, l) } else { (k0, l0) }
}

/// For weights `w_i·x_i^k`: `(ln Σ w x^k, mean of ln x, variance of ln x)`.
fn tilted(lx: &[f64], w: &[f64], k: f64) -> (f64, f64, f64) {
    let m = lx.iter().zip(w).filter(|(_, w)| **w > 0.0).map(|(x, w)| w.ln() + k * x).fold(f64::NEG_INFINITY, f64::max);
    let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for (x, w) in lx.iter().zip(w).filter(|(_, w)| **w > 0.0) {
        let e = (w.ln() + k * x - m).exp();
        s0 += e;
        s1 += e * x;
        s2 += e * x * x;
    }
    let mean = s1 / s0;
    (m + s0.ln(), mean, (s2 / s0 - mean * mean).max(0.0))
}

/// Root in `k` of the profile likelihood equation
/// `g(k) = E_k[ln x] − 1/k − mean(ln x) = 0` (increasing in `k`), clamped to
/// `[PARAM_MIN, K_MAX]`: safeguarded Newton on `ln k`, starting from `k0`.
fn solve_shape(lx: &[f64], w: &[f64], mean_lx: f64, k0: f64) -> f64 {
    let g = |k: f64| {
        let (_, mean, var) = tilted(lx, w, k);
        (mean - 1.0 / k - mean_lx, var + 1.0 / (k * k))
    };
    let (k_min, k_max) = (WeibullMixture::PARAM_MIN, WeibullMixture::K_MAX);
    if g(k_min).0 >= 0.0 {
        return k_min;
    }
    if g(k_max).0 <= 0.0 {
        return k_max;
    }
    let (mut lo, mut hi) = (k_min.ln(), k_max.ln());
    let mut t = k0.clamp(k_min, k_max).ln();
    for _ in 0..200 {
        let k = t.exp();
        let (gv, dg) = g(k);
        if gv == 0.0 {
            break;
        }
        if gv > 0.0 {
            hi = t;
        } else {
            lo = t;
        }
        let newton = t - gv / (dg * k);
        let next = if newton > lo && newton < hi { newton } else { 0.5 * (lo + hi) };
        if (next - t).abs() < 1e-14 * (1.0 + t.abs()) || hi - lo < 1e-14 {
            t = next;
            break;
        }
        t = next;
    }
    t.exp()
}

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, g = 7, 9 terms; about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.9999999999998099,
        676.5203681218851,
        -1259.1392167224028,
        771.3234287776531,
        -176.6150291621406,
        12.507343278686905,
        -0.13857109526572012,
        9.984369578019572e-6,
        1.5056327351493116e-7,
    ];
    if x < 0.5 {
        // reflection: Γ(x)Γ(1 − x) = π / sin(πx)
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let a = C[1..].iter().enumerate().fold(C[0], |a, (i, c)| a + c / (x + i as f64 + 1.0));
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path<'a>(answer: &'a str, completion: &'a str, p: f64) -> Path<'a> {
        Path { answer, completion, p, logprob: f64::NAN }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Quantiles `λ(−ln(1 − u))^(1/k)` at `u = (i + 0.5)/n`: a deterministic Weibull sample.
    fn weibull_grid(n: usize, k: f64, l: f64) -> Vec<f64> {
        (0..n).map(|i| l * (-(1.0 - (i as f64 + 0.5) / n as f64).ln()).powf(1.0 / k)).collect()
    }

    #[test]
    fn method_parses_prints_and_serialises() {
        for m in [Method::Rpc, Method::Vote, Method::Ppl] {
            assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!("VOTE".parse::<Method>().unwrap(), Method::Vote);
        let err = "majority".parse::<Method>().unwrap_err().to_string();
        assert!(err.contains("\"majority\"") && err.contains("rpc, vote or ppl"), "{err}");
        assert_eq!(serde_json::from_str::<Method>("\"ppl\"").unwrap(), Method::Ppl);
    }

    #[test]
    fn gamma_function() {
        assert!((ln_gamma(5.0).exp() - 24.0).abs() < 1e-10);
        assert!((ln_gamma(0.5).exp() - std::f64::consts::PI.sqrt()).abs() < 1e-12);
        assert!((ln_gamma(1.5).exp() - std::f64::consts::PI.sqrt() / 2.0).abs() < 1e-12);
        assert!(ln_gamma(1.0).abs() < 1e-12 && ln_gamma(2.0).abs() < 1e-12);
        assert!((ln_gamma(101.0) - 363.73937555556347).abs() < 1e-9, "ln 100! (k = 0.01)");
        // Weibull mean: k = 1 is the exponential (mean λ), k = 2 gives λ·√π/2
        assert!((WeibullMixture::weibull_mean(1.0, 3.0) - 3.0).abs() < 1e-12);
        assert!((WeibullMixture::weibull_mean(2.0, 1.0) - std::f64::consts::PI.sqrt() / 2.0).abs() < 1e-12);
    }

    #[test]
    fn consistency_scores_unique_completions_by_hand() {
        // no pruning: Amber = 3 distinct completions × 0.2 = 0.6; Blue = 2 copies of one
        // completion × 0.45 counted once = 0.45 → Amber; with distinct completions Blue = 0.9
        let dup = [
            path("Amber", "a1", 0.2),
            path("Amber", "a2", 0.2),
            path("Amber", "a3", 0.2),
            path("Blue", "b", 0.45),
            path("Blue", "b", 0.45),
        ];
        let none = [false; 5];
        let a = [0, 1, 2];
        let b = [3, 4];
        let p: Vec<f64> = dup.iter().map(|x| x.p).collect();
        assert!(close(unique_completion_mass(&dup, &p, &none, &a), 0.6));
        assert!(close(unique_completion_mass(&dup, &p, &none, &b), 0.45));
        let mut distinct = dup;
        distinct[4].completion = "b2";
        assert!(close(unique_completion_mass(&distinct, &p, &none, &b), 0.9));
        // pruned paths do not count
        assert!(close(unique_completion_mass(&distinct, &p, &[false, true, false, false, true], &a), 0.4));
        // copies with different p: the largest counts
        let p2 = [0.2, 0.2, 0.2, 0.3, 0.45];
        assert!(close(unique_completion_mass(&dup, &p2, &none, &b), 0.45));
    }

    #[test]
    fn rpc_duplicates_count_once_when_nothing_is_pruned() {
        // all p equal → no pruning, no fit. Amber: one completion thrice → 0.5; Blue: two → 1.0.
        let paths = [
            path("Amber", "same", 0.5),
            path("Blue", "b1", 0.5),
            path("Amber", "same", 0.5),
            path("Blue", "b2", 0.5),
            path("Amber", "same", 0.5),
        ];
        let rpc = aggregate(&paths, Method::Rpc);
        assert_eq!(rpc.weibull, None);
        assert_eq!(rpc.pruned(), 0);
        assert_eq!(rpc.answer().unwrap().answer, "blue");
        assert!(close(rpc.confidence(), 1.0 / 1.5));
        assert!(close(rpc.groups[1].score, 0.5));
        assert_eq!(rpc.groups[0].members, [1, 3]);
        assert_eq!(rpc.verdicts.iter().map(|v| v.group).collect::<Vec<_>>(), [1, 0, 1, 0, 1]);
        // voting counts every copy: Amber 3/5
        let vote = aggregate(&paths, Method::Vote);
        assert_eq!(vote.answer().unwrap().answer, "amber");
        assert!(close(vote.confidence(), 0.6));
    }

    #[test]
    fn rpc_fewer_but_more_confident_paths_win() {
        // mean p = (0.28 + 0.30 + 0.32 + 0.95)/4 = 0.4625. The fit puts the three A paths in
        // the low component, and they lie below the mean: pruned. Blue alone keeps mass.
        let paths =
            [path("Amber", "a1", 0.28), path("Amber", "a2", 0.30), path("Amber", "a3", 0.32), path("Blue", "b", 0.95)];
        let rpc = aggregate(&paths, Method::Rpc);
        let w = rpc.weibull.expect("fitted");
        assert!(w.posterior_high(0.95) > 0.5 && w.posterior_high(0.30) < 0.5, "{w:?}");
        assert_eq!(rpc.verdicts.iter().map(|v| v.pruned).collect::<Vec<_>>(), [true, true, true, false]);
        assert_eq!(rpc.answer().unwrap().answer, "blue");
        // the confidence is Blue's share of all the mass, the pruned paths' included
        assert!(close(rpc.confidence(), 0.95 / 1.85));
        assert_eq!(rpc.groups[1].score, 0.0);
        assert_eq!(aggregate(&paths, Method::Vote).answer().unwrap().answer, "amber");
    }

    #[test]
    fn rpc_prunes_the_low_cluster_exactly() {
        // 7 paths near 0.8 (Paris ×4, Rome ×3) and 5 near 0.05 (London ×5, the majority).
        let paths = [
            path("London", "l1", 0.04),
            path("Paris", "p1", 0.80),
            path("London", "l2", 0.05),
            path("Rome", "r1", 0.79),
            path("Paris", "p2", 0.82),
            path("London", "l3", 0.055),
            path("Rome", "r2", 0.83),
            path("London", "l4", 0.06),
            path("Paris", "p3", 0.78),
            path("Rome", "r3", 0.77),
            path("London", "l5", 0.045),
            path("Paris", "p4", 0.81),
        ];
        let rpc = aggregate(&paths, Method::Rpc);
        let pruned: Vec<usize> = (0..paths.len()).filter(|&i| rpc.verdicts[i].pruned).collect();
        assert_eq!(pruned, [0, 2, 5, 7, 10], "exactly the London paths");
        let w = rpc.weibull.unwrap();
        assert!(WeibullMixture::weibull_mean(w.k1, w.l1) > 0.7 && WeibullMixture::weibull_mean(w.k2, w.l2) < 0.1);
        assert!((w.w1 - 7.0 / 12.0).abs() < 1e-6, "{w:?}");
        // Paris 0.80 + 0.82 + 0.78 + 0.81 = 3.21; Rome 0.79 + 0.83 + 0.77 = 2.39; London 0
        let best = rpc.answer().unwrap();
        assert_eq!(best.answer, "paris");
        assert!(close(best.score, 3.21));
        assert!(close(rpc.confidence(), 3.21 / 5.85), "over all the mass, London's 0.25 included");
        assert_eq!(best.representative, 4, "Paris' most probable path");
        assert_eq!(rpc.groups.iter().map(|g| g.answer.as_str()).collect::<Vec<_>>(), ["paris", "rome", "london"]);
        // the baselines pick the other two answers
        let vote = aggregate(&paths, Method::Vote);
        assert_eq!(vote.answer().unwrap().answer, "london");
        assert!(close(vote.confidence(), 5.0 / 12.0));
        let ppl = aggregate(&paths, Method::Ppl);
        assert_eq!(ppl.answer().unwrap().answer, "rome");
        assert!(close(ppl.confidence(), 0.83));
        assert_eq!(ppl.answer().unwrap().representative, 6);
        assert!(vote.weibull.is_none() && ppl.weibull.is_none() && vote.pruned() + ppl.pruned() == 0);
    }

    #[test]
    fn rpc_does_not_prune_clusters_of_repeated_short_answers() {
        // 8 samples, 3 distinct completions (a short answer repeats): no fit, no pruning; the
        // two minority answers keep their mass, so the winner's confidence is not 1.
        let paths = [
            path("Denver Broncos", "Denver Broncos", 0.9),
            path("Denver Broncos", "Denver Broncos", 0.9),
            path("Carolina", "Carolina", 0.3),
            path("Denver Broncos", "Denver Broncos", 0.9),
            path("Broncos", "Broncos", 0.35),
            path("Denver Broncos", "Denver Broncos", 0.9),
            path("Carolina", "Carolina", 0.3),
            path("Denver Broncos", "Denver Broncos", 0.9),
        ];
        let rpc = aggregate(&paths, Method::Rpc);
        assert_eq!((rpc.pruned(), rpc.weibull), (0, None));
        assert_eq!(rpc.answer().unwrap().answer, "denver broncos");
        assert!(close(rpc.confidence(), 0.9 / 1.55));
        // a fourth distinct completion allows the fit again
        let mut more = paths.to_vec();
        more.push(path("Panthers", "Panthers", 0.05));
        assert!(aggregate(&more, Method::Rpc).weibull.is_some());
    }

    #[test]
    fn rpc_with_whole_path_probabilities_estimates_each_answer() {
        // exp(logprob): Denver 0.5 (one completion sampled twice, counted once) + its variant
        // 0.1; Carolina 0.15 (one completion, twice). Denver's estimate 0.6 wins and is the
        // confidence itself (not a share of the sampled mass). Three distinct completions: no
        // pruning.
        let l = |p: f64| p.ln();
        let paths = [
            Path { answer: "Denver", completion: "Denver", p: 0.9, logprob: l(0.5) },
            Path { answer: "Carolina", completion: "Carolina", p: 0.4, logprob: l(0.15) },
            Path { answer: "Denver", completion: "Denver", p: 0.9, logprob: l(0.5) },
            Path { answer: "the Denver", completion: "the Denver", p: 0.5, logprob: l(0.1) },
            Path { answer: "Carolina", completion: "Carolina", p: 0.45, logprob: l(0.15) },
        ];
        let rpc = aggregate(&paths, Method::Rpc);
        assert_eq!(rpc.answer().unwrap().answer, "denver");
        assert!(close(rpc.groups[0].score, 0.6) && close(rpc.confidence(), 0.6));
        assert!(close(rpc.groups[1].confidence, 0.15));
        // estimates never pass 1, whatever the decoder's per-step probabilities sum to
        let over = [
            Path { answer: "a", completion: "a1", p: 0.9, logprob: l(0.8) },
            Path { answer: "a", completion: "a2", p: 0.9, logprob: l(0.7) },
        ];
        assert!(close(aggregate(&over, Method::Rpc).confidence(), 1.0));
        // one path without a known logprob: every path falls back to p and shares
        let mut mixed = paths;
        mixed[1].logprob = f64::NAN;
        let rpc = aggregate(&mixed, Method::Rpc);
        // distinct completions: Denver 0.9, Carolina max(0.4, 0.45), the Denver 0.5
        assert!(close(rpc.confidence(), (0.9 + 0.5) / (0.9 + 0.45 + 0.5)));
        // an impossible completion (-inf) has no mass; voting ignores the probabilities
        let none = [Path { answer: "x", completion: "x", p: 0.0, logprob: f64::NEG_INFINITY }];
        assert!(close(aggregate(&none, Method::Rpc).confidence(), 0.0));
        assert_eq!(aggregate(&paths, Method::Vote).answer().unwrap().answer, "denver");
    }

    #[test]
    fn grouping_uses_squad_normalisation() {
        let paths = [path("The Normans", "x", 0.3), path("normans", "y", 0.3), path("Normans.", "z", 0.3)];
        for m in [Method::Rpc, Method::Vote, Method::Ppl] {
            let a = aggregate(&paths, m);
            assert_eq!(a.groups.len(), 1, "{m}");
            assert_eq!(a.groups[0].answer, "normans");
            assert_eq!(a.groups[0].representative, 0, "ties go to the earliest path");
            assert!(close(a.confidence(), if m == Method::Ppl { 0.3 } else { 1.0 }), "{m}");
        }
    }

    #[test]
    fn empty_answers_win_only_alone() {
        let paths = [path("the", "t", 0.9), path(".", "u", 0.8), path("Paris", "v", 0.2)];
        for m in [Method::Rpc, Method::Vote, Method::Ppl] {
            let a = aggregate(&paths, m);
            assert_eq!(a.groups[0].answer, "", "{m}: the empty group ranks first");
            assert_eq!(a.answer().unwrap().answer, "paris", "{m}: but does not win");
        }
        let only_empty = [path("", "t", 0.9), path("a", "u", 0.1)];
        let a = aggregate(&only_empty, Method::Vote);
        assert_eq!(a.answer().unwrap().answer, "");
        assert!(close(a.confidence(), 1.0));
    }

    #[test]
    fn ties_and_baselines() {
        // vote tie 2–2: the answer seen first wins
        let paths = [path("Blue", "1", 0.1), path("Amber", "2", 0.9), path("Amber", "3", 0.2), path("Blue", "4", 0.3)];
        let vote = aggregate(&paths, Method::Vote);
        assert_eq!(vote.answer().unwrap().answer, "blue");
        assert!(close(vote.confidence(), 0.5));
        // ppl: the group of the most probable path (0.9)
        let ppl = aggregate(&paths, Method::Ppl);
        assert_eq!(ppl.answer().unwrap().answer, "amber");
        assert_eq!(ppl.answer().unwrap().representative, 1);
        assert!(close(ppl.groups[1].score, 0.3));
    }

    #[test]
    fn small_and_degenerate_inputs() {
        let none = aggregate(&[], Method::Rpc);
        assert_eq!((none.winner, none.groups.len(), none.confidence()), (None, 0, 0.0));
        let one = aggregate(&[path("x", "x", 0.4)], Method::Rpc);
        assert_eq!(one.answer().unwrap().answer, "x");
        assert!(close(one.confidence(), 1.0));
        assert!(one.weibull.is_none());
        let two = aggregate(&[path("x", "x", 0.01), path("y", "y", 0.9)], Method::Rpc);
        assert_eq!(two.pruned(), 0, "no pruning below 3 paths");
        assert!(close(two.confidence(), 0.9 / 0.91));
        // zero, NaN and out-of-range p: clamped, nothing panics, mass 0 gives confidence 0
        let zeros = [path("x", "1", 0.0), path("y", "2", f64::NAN), path("z", "3", -1.0)];
        let a = aggregate(&zeros, Method::Rpc);
        assert_eq!(a.answer().unwrap().answer, "x");
        assert_eq!(a.confidence(), 0.0);
        let big = [path("x", "1", 0.0), path("y", "2", 2.0), path("z", "3", 0.0)];
        assert_eq!(aggregate(&big, Method::Rpc).answer().unwrap().answer, "y");
    }

    #[test]
    fn aggregates_1_2_and_16_paths() {
        let answers = ["Paris", "paris", "Lyon", "Nice"];
        let completions: Vec<String> = (0..16).map(|i| format!("completion {}", i % 13)).collect();
        for n in [1usize, 2, 16] {
            let paths: Vec<Path<'_>> = (0..n)
                .map(|i| path(answers[i % 4], &completions[i], 0.05 + 0.9 * ((i * 7) % 16) as f64 / 15.0))
                .collect();
            for m in [Method::Rpc, Method::Vote, Method::Ppl] {
                let a = aggregate(&paths, m);
                assert_eq!(a.verdicts.len(), n);
                assert_eq!(a.groups.iter().map(|g| g.members.len()).sum::<usize>(), n);
                assert!(a.groups.windows(2).all(|w| w[0].score >= w[1].score));
                for (i, v) in a.verdicts.iter().enumerate() {
                    assert!(a.groups[v.group].members.contains(&i));
                }
                assert!(a.verdicts.iter().any(|v| !v.pruned));
                assert!((0.0..=1.0).contains(&a.confidence()));
                let sum: f64 = a.groups.iter().map(|g| g.confidence).sum();
                match m {
                    Method::Vote => assert!((sum - 1.0).abs() < 1e-12, "vote: confidences sum to 1"),
                    Method::Rpc if a.pruned() == 0 => assert!((sum - 1.0).abs() < 1e-12, "rpc: sum to 1 unpruned"),
                    Method::Rpc => assert!(sum < 1.0, "rpc: the pruned mass is nobody's"),
                    Method::Ppl => {}
                }
                assert_eq!(a, aggregate(&paths, m), "deterministic");
            }
        }
    }

    #[test]
    fn fit_recovers_a_two_component_sample() {
        // 400 from W(k = 2, λ = 0.2) (mean 0.177) and 600 from W(k = 8, λ = 0.8) (mean 0.754)
        let mut data = weibull_grid(400, 2.0, 0.2);
        data.extend(weibull_grid(600, 8.0, 0.8));
        let w = WeibullMixture::fit(&data);
        assert!(w.high_is_first());
        assert!((w.w1 - 0.6).abs() < 0.03, "{w:?}");
        assert!((w.k1 - 8.0).abs() < 0.8 && (w.l1 - 0.8).abs() < 0.02, "{w:?}");
        assert!((w.k2 - 2.0).abs() < 0.2 && (w.l2 - 0.2).abs() < 0.02, "{w:?}");
        // the fit is at least as likely as the truth (it is the maximum likelihood)
        let truth = WeibullMixture { w1: 0.6, k1: 8.0, l1: 0.8, k2: 2.0, l2: 0.2 };
        assert!(w.nll(&data) <= truth.nll(&data) + 1e-6, "{} vs {}", w.nll(&data), truth.nll(&data));
        // posteriors follow the components
        assert!(w.posterior_high(0.1) < 0.01 && w.posterior_high(0.8) > 0.99);
        assert_eq!(WeibullMixture::fit(&data), w, "deterministic");
    }

    #[test]
    fn fit_respects_the_bounds() {
        let (lo, hi) = WeibullMixture::W_BOUNDS;
        let mut skewed = weibull_grid(95, 10.0, 0.8);
        skewed.extend(weibull_grid(5, 3.0, 0.05)); // w of the low part would be 0.05
        let cases: Vec<Vec<f64>> = vec![
            skewed,
            vec![0.5; 10],
            vec![0.3],
            vec![],
            vec![0.0, 0.0, 1.0],
            vec![1e-300, 0.5, 0.9, f64::NAN, f64::INFINITY],
            (1..=16).map(|i| i as f64 / 16.0).collect(),
        ];
        for data in &cases {
            let w = WeibullMixture::fit(data);
            assert!((lo..=hi).contains(&w.w1), "{data:?}: {w:?}");
            for v in [w.k1, w.l1, w.k2, w.l2] {
                assert!(v.is_finite() && v >= WeibullMixture::PARAM_MIN, "{data:?}: {w:?}");
            }
            assert!(w.k1 <= WeibullMixture::K_MAX && w.k2 <= WeibullMixture::K_MAX);
            assert!(w.high_is_first());
            let nll = w.nll(data.iter().copied().filter(|x| x.is_finite()).collect::<Vec<_>>().as_slice());
            assert!(!nll.is_nan(), "{data:?}");
        }
        let skewed_fit = WeibullMixture::fit(&cases[0]);
        assert_eq!(skewed_fit.w1, hi, "the high weight is held at the bound: {skewed_fit:?}");
        assert_eq!(WeibullMixture::fit(&[]), WeibullMixture::INIT.high_first());
    }

    #[test]
    fn fit_agrees_with_the_reference_optimiser() {
        // Fitted by the reference code (scipy L-BFGS-B from the same start, same bounds) on
        // the same values: (w1, k1, λ1, k2, λ2) with the high component first, and the NLL.
        let cases: [(Vec<f64>, [f64; 5], f64); 2] = [
            (vec![0.9, 0.85, 0.2, 0.3, 0.88, 0.1, 0.92], [0.5714, 40.942, 0.8997, 2.7388, 0.2259], -7.5847),
            (
                (0..16).map(|i| 0.05 + 0.9 * ((i * 7) % 16) as f64 / 15.0).collect(),
                [0.3778, 6.7999, 0.822, 1.6698, 0.3787],
                0.0831,
            ),
        ];
        for (data, reference, nll) in cases {
            let w = WeibullMixture::fit(&data);
            for (got, want) in [w.w1, w.k1, w.l1, w.k2, w.l2].into_iter().zip(reference) {
                assert!((got - want).abs() <= 2e-3 * want.max(1.0), "{w:?} vs {reference:?}");
            }
            assert!((w.nll(&data) - nll).abs() < 1e-3, "{} vs {nll}", w.nll(&data));
        }
    }

    #[test]
    fn fit_never_loses_likelihood_against_the_start() {
        let data = [0.9, 0.85, 0.2, 0.3, 0.88, 0.1, 0.92];
        let w = WeibullMixture::fit(&data);
        assert!(w.nll(&data) <= WeibullMixture::INIT.nll(&data));
        // pdf integrates to about 1 over (0, 1] plus its tail
        let dx = 1e-4;
        let mass: f64 = (1..=30000).map(|i| w.pdf(i as f64 * dx) * dx).sum();
        assert!((mass - 1.0).abs() < 0.01, "{mass}");
        assert_eq!(w.pdf(0.0), 0.0);
    }
}

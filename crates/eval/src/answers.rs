//! Answer metrics as the official SQuAD v1.1 evaluation script computes them: exact match
//! and token F1 of normalised answers ([`metarag_core::answer::normalize_answer`]), the
//! maximum over the gold answers; plus how well the answer confidences can be trusted: the
//! expected calibration error, the Brier score, and the AUROC of confidence as a detector of
//! correct answers (what abstaining below a threshold relies on).
//!
//! ```
//! use metarag_eval::answers::{AnswerMetrics, AnswerRecord, exact_match, f1};
//!
//! assert_eq!(exact_match("The Normans", &["Normans", "the Norse"]), 1.0);
//! // pred tokens [cat, sat, on, red, mat, mat], gold [cat, sat, on, mat]: 4 in common,
//! // P = 4/6, R = 4/4, F1 = 0.8
//! assert!((f1("cat sat on the red mat mat", &["cat sat on mat"]) - 0.8).abs() < 1e-12);
//!
//! let records = [
//!     AnswerRecord::score("Normans", &["The Normans"], Some(0.9)),
//!     AnswerRecord::score("Vikings", &["The Normans"], Some(0.3)),
//! ];
//! let m = AnswerMetrics::from_records(&records);
//! assert_eq!((m.questions, m.em, m.f1), (2, 0.5, 0.5));
//! // bins [0.9, 1.0): conf 0.9 vs acc 1; [0.3, 0.4): conf 0.3 vs acc 0 → (0.1 + 0.3) / 2
//! assert!((m.ece.unwrap() - 0.2).abs() < 1e-12);
//! ```
//!
//! Scores are fractions in `[0, 1]` (the official script prints them × 100). Empty cases
//! follow the v1.1 script: two answers that both normalise to "" match exactly (EM 1) but
//! have F1 0 (no common token; SQuAD v2.0 would give 1); no gold answer at all scores 0
//! (the script would fail on `max([])`).

use std::collections::HashMap;

use metarag_core::answer::{answer_tokens, normalize_answer};
use serde::Serialize;

/// The number of confidence bins [`AnswerMetrics`] uses for ECE (as the RPC paper reports).
pub const ECE_BINS: usize = 10;

/// Exact match: 1.0 when the normalised prediction equals a normalised gold answer, else 0.0.
pub fn exact_match(pred: &str, golds: &[&str]) -> f64 {
    let p = normalize_answer(pred);
    if golds.iter().any(|g| normalize_answer(g) == p) { 1.0 } else { 0.0 }
}

/// Token F1 of the normalised prediction against each gold answer (common tokens counted
/// with multiplicity, as `Counter(pred) & Counter(gold)`), the maximum over the golds.
pub fn f1(pred: &str, golds: &[&str]) -> f64 {
    let p = answer_tokens(pred);
    golds.iter().map(|g| token_f1(&p, &answer_tokens(g))).fold(0.0, f64::max)
}

fn token_f1(pred: &[String], gold: &[String]) -> f64 {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in gold {
        *counts.entry(t.as_str()).or_insert(0) += 1;
    }
    let mut same = 0usize;
    for t in pred {
        if let Some(c) = counts.get_mut(t.as_str())
            && *c > 0
        {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Expected calibration error: confidences fall in `bins` equal-width bins over `[0, 1]`
/// (bin `i` is `[i/bins, (i+1)/bins)`, and confidence 1.0 goes to the last bin); ECE is the
/// sum over bins of `count/N · |accuracy − mean confidence|`. Confidences are clamped to
/// `[0, 1]` (a non-finite one counts as 0); `bins` 0 counts as 1; no items give 0.
pub fn ece(confidences_and_correct: &[(f64, bool)], bins: usize) -> f64 {
    let bins = bins.max(1);
    let n = confidences_and_correct.len();
    if n == 0 {
        return 0.0;
    }
    // (count, correct, confidence sum) per bin
    let mut acc = vec![(0usize, 0usize, 0.0f64); bins];
    for &(c, correct) in confidences_and_correct {
        let c = if c.is_finite() { c.clamp(0.0, 1.0) } else { 0.0 };
        let i = ((c * bins as f64).floor() as usize).min(bins - 1);
        acc[i].0 += 1;
        acc[i].1 += usize::from(correct);
        acc[i].2 += c;
    }
    acc.iter()
        .filter(|b| b.0 > 0)
        .map(|&(count, correct, conf)| {
            let k = count as f64;
            k / n as f64 * (correct as f64 / k - conf / k).abs()
        })
        .sum()
}

/// Brier score: the mean of `(confidence − correct)²`, in `[0, 1]` (lower is better; always
/// answering 0.5 scores 0.25). Confidences are clamped as in [`ece`]; no items give 0.
pub fn brier(confidences_and_correct: &[(f64, bool)]) -> f64 {
    let n = confidences_and_correct.len();
    if n == 0 {
        return 0.0;
    }
    confidences_and_correct
        .iter()
        .map(|&(c, ok)| {
            let c = if c.is_finite() { c.clamp(0.0, 1.0) } else { 0.0 };
            (c - f64::from(u8::from(ok))).powi(2)
        })
        .sum::<f64>()
        / n as f64
}

/// Area under the ROC curve of the confidence as a score for "the answer is correct": the
/// probability that a correct answer has a higher confidence than a wrong one (ties count
/// one half; Mann–Whitney U). `None` when all answers are correct or all are wrong.
pub fn auroc(confidences_and_correct: &[(f64, bool)]) -> Option<f64> {
    let clean = |c: f64| if c.is_finite() { c.clamp(0.0, 1.0) } else { 0.0 };
    let mut items: Vec<(f64, bool)> = confidences_and_correct.iter().map(|&(c, ok)| (clean(c), ok)).collect();
    let pos = items.iter().filter(|x| x.1).count();
    let neg = items.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the (average, for ties) ranks of the correct answers.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < items.len() {
        let mut j = i;
        while j < items.len() && items[j].0 == items[i].0 {
            j += 1;
        }
        let avg = (i + 1 + j) as f64 / 2.0; // ranks i+1..=j
        rank_sum += avg * items[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos * neg) as f64)
}

/// One question's answer, scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnswerRecord {
    /// Exact match (0 or 1).
    pub em: f64,
    /// Token F1 in `[0, 1]`.
    pub f1: f64,
    /// The answerer's confidence in `[0, 1]`, when it gives one.
    pub confidence: Option<f64>,
}

impl AnswerRecord {
    /// Scores a prediction against the gold answers.
    pub fn score(pred: &str, golds: &[&str], confidence: Option<f64>) -> Self {
        AnswerRecord { em: exact_match(pred, golds), f1: f1(pred, golds), confidence }
    }

    /// Whether the answer counts as correct for calibration: an exact match.
    pub fn correct(&self) -> bool {
        self.em >= 1.0
    }
}

/// Answer metrics over a set of questions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerMetrics {
    /// Questions scored.
    pub questions: usize,
    /// Mean exact match in `[0, 1]`.
    pub em: f64,
    /// Mean token F1 in `[0, 1]`.
    pub f1: f64,
    /// Expected calibration error ([`ECE_BINS`] bins, correct = exact match) over the
    /// records that carry a confidence; `None` when none does.
    pub ece: Option<f64>,
    /// Brier score over the same records ([`brier`]).
    pub brier: Option<f64>,
    /// AUROC of confidence for exact match over the same records ([`auroc`]); `None` also
    /// when they are all right or all wrong.
    pub auroc: Option<f64>,
}

impl AnswerMetrics {
    /// Metrics of per-question records (all zero for no records).
    pub fn from_records(records: &[AnswerRecord]) -> Self {
        let n = records.len().max(1) as f64;
        let em = records.iter().map(|r| r.em).sum::<f64>() / n;
        let f1 = records.iter().map(|r| r.f1).sum::<f64>() / n;
        let calib: Vec<(f64, bool)> = records.iter().filter_map(|r| r.confidence.map(|c| (c, r.correct()))).collect();
        let ece = (!calib.is_empty()).then(|| ece(&calib, ECE_BINS));
        let brier = (!calib.is_empty()).then(|| brier(&calib));
        AnswerMetrics { questions: records.len(), em, f1, ece, brier, auroc: auroc(&calib) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn exact_match_uses_the_official_normalisation() {
        assert_eq!(exact_match("The  Norman-Conquest!", &["normanconquest"]), 1.0);
        assert_eq!(exact_match("an apple", &["Apple."]), 1.0);
        assert_eq!(exact_match("theory", &["ory"]), 0.0, "'the' inside a word stays");
        assert_eq!(exact_match("Paris", &["London", "paris"]), 1.0, "any gold");
        assert_eq!(exact_match("Paris", &[]), 0.0);
    }

    #[test]
    fn f1_hand_cases() {
        // pred [cat, sat, on, mat], gold [cat, sat, on, mat]: the articles vanish, F1 = 1
        assert!(close(f1("the cat sat on mat", &["a cat sat on the mat"]), 1.0));
        assert_eq!(exact_match("the cat sat on mat", &["a cat sat on the mat"]), 1.0);
        // pred [cat, sat, on, red, mat, mat] (6), gold [cat, sat, on, mat] (4): common 4
        // (mat counted min(2, 1) = 1): P = 4/6, R = 1, F1 = 2·(2/3)·1 / (5/3) = 0.8
        assert!(close(f1("cat sat on the red mat mat", &["cat sat on mat"]), 0.8));
        // pred [denver, broncos] vs gold [broncos]: P = 1/2, R = 1, F1 = 2/3;
        // vs gold [denver, broncos, won]: P = 1, R = 2/3, F1 = 0.8; max = 0.8
        assert!(close(f1("Denver Broncos", &["Broncos", "Denver Broncos won"]), 0.8));
        // repeated gold token: pred [a1, a1, b] vs gold [a1, b, b]: common a1×1 + b×1 = 2,
        // P = R = 2/3, F1 = 2/3
        assert!(close(f1("a1 a1 b", &["a1 b b"]), 2.0 / 3.0));
        assert_eq!(f1("cat", &["dog"]), 0.0);
    }

    #[test]
    fn empty_answers_as_the_v1_1_script() {
        assert_eq!(exact_match("the", &["A."]), 1.0, "both normalise to \"\"");
        assert_eq!(f1("the", &["A."]), 0.0, "v1.1: no common token, F1 0");
        assert_eq!(f1("", &["Paris"]), 0.0);
        assert_eq!(f1("Paris", &[""]), 0.0);
        assert_eq!(f1("Paris", &[]), 0.0);
    }

    #[test]
    fn ece_hand_case() {
        // 10 bins. [0.9, 1.0): 0.95 ✓, 1.0 ✓, 0.9 ✗ → acc 2/3, conf 2.85/3 = 0.95
        // [0.6, 0.7): 0.6 ✓, 0.65 ✗ → acc 1/2, conf 0.625
        // [0.0, 0.1): 0.0 ✗ → acc 0, conf 0
        // ECE = 3/6·|2/3 − 0.95| + 2/6·|0.5 − 0.625| + 1/6·0 = 0.5·0.28333… + 0.041666…
        let items = [(0.95, true), (1.0, true), (0.9, false), (0.6, true), (0.65, false), (0.0, false)];
        let expected = 0.5 * (0.95 - 2.0 / 3.0) + (0.625 - 0.5) / 3.0;
        assert!(close(ece(&items, 10), expected), "{} vs {expected}", ece(&items, 10));
        // one bin: |acc − conf| overall = |3/6 − 4.1/6|
        assert!(close(ece(&items, 1), (4.1 - 3.0) / 6.0));
        assert_eq!(ece(&[], 10), 0.0);
        assert!(close(ece(&[(1.0, true), (0.0, false)], 10), 0.0), "perfectly calibrated");
        assert!(close(ece(&[(1.5, false), (f64::NAN, true)], 0), 0.0), "clamped: 1 and 0");
    }

    #[test]
    fn brier_and_auroc_hand_cases() {
        // (0.9 ✓, 0.6 ✗, 0.4 ✓, 0.1 ✗): Brier = (0.01 + 0.36 + 0.36 + 0.01) / 4 = 0.185;
        // pairs (correct, wrong): 0.9>0.6 ✓, 0.9>0.1 ✓, 0.4<0.6 ✗, 0.4>0.1 ✓ → AUROC 3/4
        let items = [(0.9, true), (0.6, false), (0.4, true), (0.1, false)];
        assert!(close(brier(&items), 0.185));
        assert!(close(auroc(&items).unwrap(), 0.75));
        // a tie between a right and a wrong answer counts one half
        assert!(close(auroc(&[(0.5, true), (0.5, false)]).unwrap(), 0.5));
        assert!(close(auroc(&[(1.0, true), (1.0, true), (1.0, false), (0.2, false)]).unwrap(), 0.75));
        // perfect separation, and the undefined cases
        assert!(close(auroc(&[(0.8, true), (0.2, false)]).unwrap(), 1.0));
        assert_eq!(auroc(&[(0.8, true)]), None);
        assert_eq!(auroc(&[]), None);
        assert_eq!(brier(&[]), 0.0);
        assert!(close(brier(&[(f64::NAN, false), (2.0, true)]), 0.0), "clamped");
    }

    #[test]
    fn metrics_from_records() {
        let records = [
            AnswerRecord::score("The Normans", &["Normans"], Some(0.8)), // em 1, f1 1
            AnswerRecord::score("Normandy in France", &["France"], Some(0.8)), // em 0, f1 2·(1/3)·1/(4/3) = 0.5
            AnswerRecord::score("Rollo", &["Rollo"], None),              // em 1, f1 1, no confidence
        ];
        let m = AnswerMetrics::from_records(&records);
        assert_eq!(m.questions, 3);
        assert!(close(m.em, 2.0 / 3.0));
        assert!(close(m.f1, 2.5 / 3.0));
        // only the two with a confidence: bin [0.8, 0.9) acc 1/2, conf 0.8
        assert!(close(m.ece.unwrap(), 0.3));
        assert!(close(m.brier.unwrap(), (0.04 + 0.64) / 2.0));
        assert!(close(m.auroc.unwrap(), 0.5), "equal confidences: a tie");
        let none = AnswerMetrics::from_records(&records[2..]);
        assert_eq!((none.ece, none.brier, none.auroc), (None, None, None));
        let empty = AnswerMetrics::from_records(&[]);
        assert_eq!((empty.questions, empty.em, empty.f1, empty.ece), (0, 0.0, 0.0, None));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["questions"], 3);
    }
}

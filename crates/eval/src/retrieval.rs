//! Retrieval metrics over judged rankings.

use serde::Serialize;

use crate::Question;

/// Whether a chunk (file name, byte span) is relevant to a question: same document, and the
/// chunk's span covers one of the gold answer spans entirely.
pub fn is_relevant(q: &Question, file_name: &str, start: u64, end: u64) -> bool {
    file_name == q.doc && q.answers.iter().any(|a| start <= a.start && a.end <= end)
}

/// One question's ranking, judged: `relevant[i]` for the chunk at rank `i + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// Relevance by rank.
    pub relevant: Vec<bool>,
}

impl Judged {
    /// A judged ranking.
    pub fn new(relevant: Vec<bool>) -> Self {
        Judged { relevant }
    }
    /// 1-based rank of the first relevant chunk.
    pub fn first_relevant(&self) -> Option<usize> {
        self.relevant.iter().position(|&r| r).map(|i| i + 1)
    }

    /// nDCG@k with binary gains: DCG = Σ_{i ≤ k, relevant} 1 / log2(i + 1), divided by the DCG
    /// of the ideal ordering of the relevant chunks this ranking found within its top k (the
    /// collection's other relevant chunks are not judged). 0 when none is in the top k.
    pub fn ndcg_at(&self, k: usize) -> f64 {
        let gain = |rank: usize| 1.0 / ((rank + 1) as f64).log2();
        let top = &self.relevant[..self.relevant.len().min(k)];
        let dcg: f64 = top.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| gain(i + 1)).sum();
        let found = top.iter().filter(|r| **r).count();
        let ideal: f64 = (1..=found).map(gain).sum();
        if ideal > 0.0 { dcg / ideal } else { 0.0 }
    }
}

/// Recall@k (hits@k: the share of questions with a relevant chunk in the top k) for k = 1..=10,
/// and MRR@10.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalMetrics {
    /// Questions judged.
    pub questions: usize,
    /// `recall[k-1]` = recall@k, k = 1..=10.
    pub recall: Vec<f64>,
    /// Mean reciprocal rank of the first relevant chunk within the top 10 (0 if none).
    pub mrr10: f64,
    /// Mean nDCG@10 ([`Judged::ndcg_at`]).
    pub ndcg10: f64,
}

impl RetrievalMetrics {
    /// Metrics of a set of judged rankings.
    pub fn from_runs(runs: &[Judged]) -> Self {
        let n = runs.len().max(1) as f64;
        let firsts: Vec<Option<usize>> = runs.iter().map(Judged::first_relevant).collect();
        let recall = (1..=10).map(|k| firsts.iter().filter(|f| f.is_some_and(|r| r <= k)).count() as f64 / n).collect();
        let mrr10 = firsts.iter().map(|f| f.filter(|&r| r <= 10).map_or(0.0, |r| 1.0 / r as f64)).sum::<f64>() / n;
        let ndcg10 = runs.iter().map(|r| r.ndcg_at(10)).sum::<f64>() / n;
        RetrievalMetrics { questions: runs.len(), recall, mrr10, ndcg10 }
    }

    /// Recall@k for 1 ≤ k ≤ 10.
    pub fn recall_at(&self, k: usize) -> f64 {
        self.recall.get(k.clamp(1, 10) - 1).copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AnswerSpan;

    fn q() -> Question {
        Question {
            id: "1".into(),
            question: "?".into(),
            doc: "a.txt".into(),
            answers: vec![AnswerSpan { text: "x".into(), start: 10, end: 20 }],
        }
    }

    #[test]
    fn relevance_needs_the_whole_answer_in_the_same_document() {
        assert!(is_relevant(&q(), "a.txt", 10, 20));
        assert!(is_relevant(&q(), "a.txt", 0, 100));
        assert!(!is_relevant(&q(), "a.txt", 11, 100), "cuts the answer's start");
        assert!(!is_relevant(&q(), "a.txt", 0, 19), "cuts the answer's end");
        assert!(!is_relevant(&q(), "b.txt", 0, 100), "other document");
    }

    #[test]
    fn hand_computed_metrics() {
        let runs = vec![
            Judged::new(vec![true]),                             // rank 1
            Judged::new(vec![false, false, true]),               // rank 3
            Judged::new(vec![false; 10]),                        // none
            Judged::new([vec![false; 10], vec![true]].concat()), // rank 11: outside @10
        ];
        let m = RetrievalMetrics::from_runs(&runs);
        assert_eq!(m.recall_at(1), 0.25);
        assert_eq!(m.recall_at(3), 0.5);
        assert_eq!(m.recall_at(10), 0.5);
        assert!((m.mrr10 - (1.0 + 1.0 / 3.0) / 4.0).abs() < 1e-12);
        assert!(m.recall.windows(2).all(|w| w[0] <= w[1]), "recall@k grows with k");
        // nDCG@10: 1 (rank 1), 1/log2(4) = 0.5 (rank 3), 0, 0 (rank 11 is outside).
        assert!((m.ndcg10 - 1.5 / 4.0).abs() < 1e-12, "{}", m.ndcg10);
    }

    #[test]
    fn ndcg_hand_computed() {
        let j = |v: &[u8]| Judged::new(v.iter().map(|&x| x == 1).collect());
        assert_eq!(j(&[1]).ndcg_at(10), 1.0);
        assert!((j(&[0, 1]).ndcg_at(10) - 1.0 / 3f64.log2()).abs() < 1e-12, "rank 2: 0.6309");
        // ranks 1 and 3 relevant: (1 + 1/2) / (1 + 1/log2 3) = 0.9197
        let two = j(&[1, 0, 1]).ndcg_at(10);
        assert!((two - 1.5 / (1.0 + 1.0 / 3f64.log2())).abs() < 1e-12 && (two - 0.9197).abs() < 1e-4, "{two}");
        assert_eq!(j(&[0, 0, 1]).ndcg_at(2), 0.0, "outside the cut-off");
        assert_eq!(j(&[]).ndcg_at(10), 0.0);
        assert_eq!(j(&[1, 1]).ndcg_at(10), 1.0, "ideal order");
    }
}

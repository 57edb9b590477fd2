//! The answer tally: every decode aggregated by every method, on the full candidate set and
//! on its first 1, 2, 4 … candidates, plus the decoders' statistics per infill mode.

use std::time::Instant;

use metarag_generate::aggregate::Method;
use metarag_generate::qa::reaggregate;

use super::{AnswerRun, CachedAnswer, SamplesCurve, SamplesPoint};
use crate::{AnswerMetrics, AnswerRecord};

/// Scores of a run's decodes per infill mode × aggregation method (see the module docs).
#[derive(Debug)]
pub struct AnswerTally {
    infills: Vec<String>,
    methods: Vec<Method>,
    sizes: Vec<usize>,
    /// [infill][method] -> one record per question, on all candidates.
    records: Vec<Vec<Vec<AnswerRecord>>>,
    /// [infill][method][size] -> one record per question, on the first `size` candidates.
    by_size: Vec<Vec<Vec<Vec<AnswerRecord>>>>,
    decode_seconds: Vec<f64>,
    /// Answer tokens decoded (all candidates), per infill mode.
    answer_tokens: Vec<usize>,
    forwards: Vec<Vec<f64>>,
    committed: Vec<Vec<f64>>,
    decoded: Vec<Vec<f64>>,
    aggregate_seconds: f64,
}

impl AnswerTally {
    /// A tally for these infill modes and methods, with `samples` candidates per decode.
    pub fn new(infills: Vec<String>, methods: Vec<Method>, samples: usize) -> Self {
        let sizes = Self::sample_sizes(samples);
        let (ni, nm) = (infills.len(), methods.len());
        AnswerTally {
            records: vec![vec![Vec::new(); nm]; ni],
            by_size: vec![vec![vec![Vec::new(); sizes.len()]; nm]; ni],
            decode_seconds: vec![0.0; ni],
            answer_tokens: vec![0; ni],
            forwards: vec![Vec::new(); ni],
            committed: vec![Vec::new(); ni],
            decoded: vec![Vec::new(); ni],
            aggregate_seconds: 0.0,
            infills,
            methods,
            sizes,
        }
    }

    /// The candidate counts of the samples curve: 1, 2, 4 … below `samples`, then `samples`.
    pub fn sample_sizes(samples: usize) -> Vec<usize> {
        let n = samples.max(1);
        let mut v: Vec<usize> = std::iter::successors(Some(1usize), |&k| Some(k * 2)).take_while(|&k| k < n).collect();
        v.push(n);
        v
    }

    /// Scores the decode of one question in infill mode `infill` (an index into the modes)
    /// against the gold answers, by every method; returns each method's answer and confidence.
    pub fn add(&mut self, infill: usize, answer: &CachedAnswer, golds: &[&str]) -> Vec<(Method, String, f64)> {
        self.decode_seconds[infill] += answer.decode_seconds;
        self.answer_tokens[infill] += answer.candidates.iter().map(|c| c.candidate.tokens.len()).sum::<usize>();
        if let Some(f) = answer.forwards {
            self.forwards[infill].push(f as f64);
        }
        if let Some(c) = answer.committed_per_step {
            self.committed[infill].push(c);
        }
        if let Some(d) = answer.decoded_per_step {
            self.decoded[infill].push(d);
        }
        // The first 1, 2, 4 … candidates, built once for every method; a size that covers
        // them all is the full set (not aggregated again).
        let subsets: Vec<Option<Vec<_>>> = self
            .sizes
            .iter()
            .map(|&size| {
                answer
                    .candidates
                    .iter()
                    .any(|c| c.candidate.index >= size)
                    .then(|| answer.candidates.iter().filter(|c| c.candidate.index < size).cloned().collect())
            })
            .collect();
        let mut winners = Vec::with_capacity(self.methods.len());
        for (j, &method) in self.methods.iter().enumerate() {
            let t = Instant::now();
            let (text, confidence) = reaggregate(&answer.candidates, method);
            self.aggregate_seconds += t.elapsed().as_secs_f64();
            let full = AnswerRecord::score(&text, golds, Some(confidence));
            for (z, subset) in subsets.iter().enumerate() {
                let rec = match subset {
                    Some(first) => {
                        let (t, c) = reaggregate(first, method);
                        AnswerRecord::score(&t, golds, Some(c))
                    }
                    None => full,
                };
                self.by_size[infill][j][z].push(rec);
            }
            self.records[infill][j].push(full);
            winners.push((method, text, confidence));
        }
        winners
    }

    /// Metrics per infill mode × method, in that order.
    pub fn runs(&self) -> Vec<AnswerRun> {
        let mut runs = Vec::new();
        for (i, infill) in self.infills.iter().enumerate() {
            for (j, &method) in self.methods.iter().enumerate() {
                let metrics = AnswerMetrics::from_records(&self.records[i][j]);
                runs.push(AnswerRun { infill: infill.clone(), method, metrics });
            }
        }
        runs
    }

    /// EM / F1 with only the first N candidates, per infill mode × method.
    pub fn samples_curve(&self) -> Vec<SamplesCurve> {
        let mut curves = Vec::new();
        for (i, infill) in self.infills.iter().enumerate() {
            for (j, &method) in self.methods.iter().enumerate() {
                let points = self
                    .sizes
                    .iter()
                    .zip(&self.by_size[i][j])
                    .map(|(&samples, recs)| {
                        let m = AnswerMetrics::from_records(recs);
                        SamplesPoint { samples, em: m.em, f1: m.f1 }
                    })
                    .collect();
                curves.push(SamplesCurve { infill: infill.clone(), method, points });
            }
        }
        curves
    }

    fn per_mode(&self, v: &[Vec<f64>]) -> Vec<(String, f64)> {
        self.infills
            .iter()
            .zip(v)
            .filter(|(_, x)| !x.is_empty())
            .map(|(m, x)| (m.clone(), x.iter().sum::<f64>() / x.len() as f64))
            .collect()
    }

    /// Mean model calls per question, per infill mode (decodes without the count left out).
    pub fn forwards_per_question(&self) -> Vec<(String, f64)> {
        self.per_mode(&self.forwards)
    }

    /// Masked decoder: mean slot tokens committed per candidate per step, per infill mode.
    pub fn committed_per_step(&self) -> Vec<(String, f64)> {
        self.per_mode(&self.committed)
    }

    /// Masked decoder: the same without end padding.
    pub fn decoded_per_step(&self) -> Vec<(String, f64)> {
        self.per_mode(&self.decoded)
    }

    /// Decoding seconds per infill mode, summed over the questions.
    pub fn decode_seconds(&self) -> Vec<(String, f64)> {
        self.infills.iter().cloned().zip(self.decode_seconds.iter().copied()).collect()
    }

    /// Answer tokens per second of decoding, per infill mode: every candidate's answer tokens
    /// (without the end) over the decoding seconds (prompt reading included), the same measure
    /// for the causal and the masked decoder.
    pub fn answer_tokens_per_second(&self) -> Vec<(String, f64)> {
        self.infills
            .iter()
            .zip(self.answer_tokens.iter().zip(&self.decode_seconds))
            .filter(|(_, (_, s))| **s > 0.0)
            .map(|(m, (&n, &s))| (m.clone(), n as f64 / s))
            .collect()
    }

    /// Seconds spent aggregating (all methods, all questions).
    pub fn aggregate_seconds(&self) -> f64 {
        self.aggregate_seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metarag_generate::qa::CandidateReport;
    use metarag_generate::{Candidate, Finish};

    fn cand(index: usize, text: &str, lp: f32) -> CandidateReport {
        CandidateReport {
            candidate: Candidate {
                index,
                tokens: vec![1],
                text: text.into(),
                logprobs: vec![lp],
                suffix_logprobs: Vec::new(),
                finish: Finish::Stop,
                source: None,
            },
            p: f64::from(lp).exp(),
            logprob: f64::from(lp),
            group: 0,
            pruned: false,
        }
    }

    #[test]
    fn sample_sizes_double_up_to_the_sample_count() {
        assert_eq!(AnswerTally::sample_sizes(8), vec![1, 2, 4, 8]);
        assert_eq!(AnswerTally::sample_sizes(6), vec![1, 2, 4, 6]);
        assert_eq!(AnswerTally::sample_sizes(1), vec![1]);
        assert_eq!(AnswerTally::sample_sizes(0), vec![1]);
    }

    #[test]
    fn scores_every_method_on_all_candidates_and_on_the_first_n() {
        let mut t = AnswerTally::new(vec!["free".into()], vec![Method::Vote, Method::Ppl], 4);
        // Candidate 0 is the most probable and wrong; the majority is right.
        let cands = vec![cand(0, "Paris", -0.1), cand(1, "Lyon", -2.0), cand(2, "Lyon", -2.0), cand(3, "Lyon", -2.0)];
        let mut a = CachedAnswer::new("q", "free", vec![], 2.0, cands);
        a.forwards = Some(5);
        let winners = t.add(0, &a, &["Lyon"]);
        assert_eq!(
            winners.iter().map(|w| (w.0, w.1.as_str())).collect::<Vec<_>>(),
            [(Method::Vote, "Lyon"), (Method::Ppl, "Paris")]
        );
        let runs = t.runs();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].metrics.em, runs[1].metrics.em), (1.0, 0.0));
        let curve = t.samples_curve();
        // Vote with only the first candidate says "Paris"; with all four, "Lyon".
        let vote: Vec<(usize, f64)> = curve[0].points.iter().map(|p| (p.samples, p.em)).collect();
        assert_eq!(vote.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(vote[0], (1, 0.0));
        assert_eq!(vote.last(), Some(&(4, 1.0)));
        assert_eq!(t.forwards_per_question(), vec![("free".to_string(), 5.0)]);
        assert_eq!(t.decode_seconds(), vec![("free".to_string(), 2.0)]);
        // Four one-token answers in 2 s.
        assert_eq!(t.answer_tokens_per_second(), vec![("free".to_string(), 2.0)]);
        assert!(t.committed_per_step().is_empty());
    }
}

//! Question answering end to end over retrieved chunks: fill the infill template, decode N
//! candidates (causal, free or extractive; or masked diffusion), aggregate them (RPC, vote or
//! lowest perplexity) and cite the chunks the answer came from.
//!
//! ```
//! use metarag_generate::qa::{ask_causal, AskConfig};
//! use metarag_generate::template::{ContextChunk, Template};
//! use metarag_generate::testing::{peaked, ScriptedLm};
//! // Whatever the prompt, the scripted model copies "paris" and stops.
//! let words = ["<end>", "<s>", "<q>", "<a>", "capital", "is", "paris", "where", "?"];
//! let lm = ScriptedLm::new(&words, &["<end>"], |ctx| {
//!     peaked(9, if *ctx.last().unwrap() == 6 { 0 } else { 6 }, 5.0)
//! });
//! let cfg = AskConfig { template: Template::plain("<s>", "<q>", "<a>", "<end>"), ..AskConfig::default() };
//! let chunks = [ContextChunk::new("a.txt#0", "capital is paris")];
//! let answer = ask_causal(&lm, "where ?", &chunks, &cfg)?;
//! assert_eq!(answer.text, "paris");
//! assert_eq!(answer.citations[0].id, "a.txt#0");
//! # Ok::<(), metarag_generate::Error>(())
//! ```

use std::time::Instant;

use metarag_core::answer::normalize_answer;
use metarag_core::model::{CausalModel, MaskedDenoiser};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Method, Path, aggregate};
use crate::causal::{CausalConfig, decode as decode_causal};
use crate::constrain::{Extractive, SpanIndex};
use crate::masked::{MaskedConfig, decode as decode_masked, decode_extractive};
use crate::template::{ContextChunk, Prompt, Template};
use crate::{Candidate, Result};

/// How to answer (serialized: what a cache of answers is keyed by).
#[derive(Debug, Clone, Serialize)]
pub struct AskConfig {
    /// The infill template (and the prompt budget).
    pub template: Template,
    /// Causal decoding options (samples, sampler, seed...).
    pub causal: CausalConfig,
    /// Masked decoding options.
    pub masked: MaskedConfig,
    /// Constrain decoding to spans of the context (causal: always; masked: where the committed
    /// tokens allow, see [`decode_extractive`]).
    pub extractive: bool,
    /// How candidates are combined.
    pub aggregate: Method,
}

impl Default for AskConfig {
    fn default() -> Self {
        AskConfig {
            template: Template::default(),
            causal: CausalConfig::default(),
            masked: MaskedConfig::default(),
            extractive: true,
            aggregate: Method::Rpc,
        }
    }
}

/// A chunk the answer cites.
#[derive(Debug, Clone, Serialize)]
pub struct Citation {
    /// Its number in the prompt (`[n]`).
    pub number: usize,
    /// Index into the chunks given to `ask_*`.
    pub index: usize,
    /// The chunk's id.
    pub id: String,
    /// Its file, when known.
    pub path: Option<String>,
    /// Its byte span in the file, when known.
    pub span: Option<std::ops::Range<usize>>,
}

/// A candidate with its aggregation verdict (read back by `metarag bench`'s answer cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateReport {
    /// The candidate.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// `exp(mean log-probability)`, the path score RPC uses.
    pub p: f64,
    /// The path's log-probability: the sum over its tokens and rescored closing (for the
    /// masked decoder, each token's and the end token's at the step it was unmasked); 0 for an
    /// empty path.
    #[serde(default)]
    pub logprob: f64,
    /// The answer group it joined (index into the aggregation's groups).
    pub group: usize,
    /// Pruned by RPC's reasoning pruning.
    pub pruned: bool,
}

/// Decoding statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Prompt tokens run.
    pub prompt_tokens: usize,
    /// Model calls.
    pub forwards: usize,
    /// Answer tokens produced over all candidates.
    pub generated_tokens: usize,
    /// Answer tokens per model call, all candidates together (prompt and rescoring calls
    /// included; a masked decoder commits several positions per call).
    pub tokens_per_forward: f64,
    /// Masked decoder: slot tokens committed per candidate per model call (denoising step),
    /// the parallelism of the sampler (1 for one-token-per-step decoding); absent for the
    /// causal decoder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed_per_step: Option<f64>,
    /// Masked decoder: slot tokens the model chose per candidate per step (as
    /// `committed_per_step`, without the end padding an end token implies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded_per_step: Option<f64>,
    /// Masked decoder: the share of candidate steps the model computed; candidates in the same
    /// state share one row (all of them at the first step), so this is below 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computed_row_share: Option<f64>,
    /// Seconds spent decoding (prompt included).
    pub decode_seconds: f64,
    /// Seconds spent aggregating.
    pub aggregate_seconds: f64,
}

/// The answer to one question.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The answer text ("" when no candidate had one).
    pub text: String,
    /// Aggregated confidence in `[0, 1]`.
    pub confidence: f64,
    /// Chunks the answer came from (extractive: the copied chunk; free: chunks containing it).
    pub citations: Vec<Citation>,
    /// True when the answer text occurs in a cited chunk.
    pub grounded: bool,
    /// Aggregation method.
    pub method: Method,
    /// "causal" or "masked".
    pub decoder: &'static str,
    /// Extractive (span-constrained) decoding.
    pub extractive: bool,
    /// Every candidate, in sampling order.
    pub candidates: Vec<CandidateReport>,
    /// Cost.
    pub stats: Stats,
    /// Caveats about the scores.
    pub note: Option<String>,
}

/// Answers `question` from `chunks` (most relevant first) with a causal model.
pub fn ask_causal<M: CausalModel + ?Sized>(
    model: &M,
    question: &str,
    chunks: &[ContextChunk],
    cfg: &AskConfig,
) -> Result<Answer> {
    let prompt = cfg.template.build(model, question, chunks)?;
    let started = Instant::now();
    let extractive = if cfg.extractive {
        let tokens: Vec<Vec<u32>> = prompt.chunks.iter().map(|c| c.tokens.clone()).collect();
        Some(Extractive::new(model, &tokens)?)
    } else {
        None
    };
    let out = decode_causal(model, &prompt, extractive.as_ref(), &cfg.causal)?;
    let stats = Stats {
        prompt_tokens: out.prompt_tokens,
        forwards: out.forwards,
        generated_tokens: out.generated_tokens,
        tokens_per_forward: out.generated_tokens as f64 / out.forwards.max(1) as f64,
        committed_per_step: None,
        decoded_per_step: None,
        computed_row_share: None,
        decode_seconds: started.elapsed().as_secs_f64(),
        aggregate_seconds: 0.0,
    };
    Ok(finish(&prompt, chunks, out.candidates, cfg.aggregate, "causal", cfg.extractive, stats, None))
}

/// Answers `question` from `chunks` with a masked-diffusion denoiser (the slot is
/// `cfg.masked.length` mask tokens right after the template's answer opening; the primer
/// "The answer is:" is dropped). With `cfg.extractive`, unmasking keeps the answer a span of
/// the chunks where it can ([`decode_extractive`]).
pub fn ask_masked<D: MaskedDenoiser + ?Sized>(
    model: &D,
    question: &str,
    chunks: &[ContextChunk],
    cfg: &AskConfig,
) -> Result<Answer> {
    let template = cfg.template.clone().without_primer("The answer is:");
    let prompt = template.build(model, question, chunks)?;
    let started = Instant::now();
    let stop: Vec<u32> = ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| model.token_id(t)).collect();
    let out = if cfg.extractive {
        let tokens: Vec<Vec<u32>> = prompt.chunks.iter().map(|c| c.tokens.clone()).collect();
        let spans = SpanIndex::new(&tokens);
        decode_extractive(model, &prompt.prefix, &prompt.suffix, &stop, cfg.causal.samples, &spans, &cfg.masked)?
    } else {
        decode_masked(model, &prompt.prefix, &prompt.suffix, &stop, cfg.causal.samples, &cfg.masked)?
    };
    let generated: usize = out.candidates.iter().map(|c| c.tokens.len()).sum();
    let stats = Stats {
        prompt_tokens: prompt.prefix.len() + prompt.suffix.len(),
        forwards: out.forwards,
        generated_tokens: generated,
        tokens_per_forward: generated as f64 / out.forwards.max(1) as f64,
        committed_per_step: Some(out.tokens_per_forward),
        decoded_per_step: Some(out.decoded_per_forward),
        computed_row_share: Some(out.row_forwards as f64 / out.row_steps.max(1) as f64),
        decode_seconds: started.elapsed().as_secs_f64(),
        aggregate_seconds: 0.0,
    };
    let note = Some(
        "masked decoder: each token's log-probability is the one it had at the step it was unmasked, so p and the path probability RPC sums are not exact sequence probabilities".to_string(),
    );
    Ok(finish(&prompt, chunks, out.candidates, cfg.aggregate, "masked", cfg.extractive, stats, note))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    prompt: &Prompt,
    chunks: &[ContextChunk],
    candidates: Vec<Candidate>,
    method: Method,
    decoder: &'static str,
    extractive: bool,
    mut stats: Stats,
    note: Option<String>,
) -> Answer {
    let started = Instant::now();
    let ps: Vec<f64> =
        candidates.iter().map(|c| if c.text.is_empty() { 0.0 } else { c.inverse_perplexity() }).collect();
    let paths: Vec<Path<'_>> = candidates
        .iter()
        .zip(&ps)
        .map(|(c, &p)| Path { answer: &c.text, completion: &c.text, p, logprob: path_logprob(c) })
        .collect();
    let agg = aggregate(&paths, method);
    stats.aggregate_seconds = started.elapsed().as_secs_f64();
    let winner = agg.answer();
    let (text, rep) = match winner {
        Some(g) => (candidates[g.representative].text.clone(), Some(g.representative)),
        None => (String::new(), None),
    };
    let cite = |number: usize| {
        let used = &prompt.chunks[number];
        let c = &chunks[used.index];
        Citation { number: number + 1, index: used.index, id: c.id.clone(), path: c.path.clone(), span: c.span.clone() }
    };
    let norm = normalize_answer(&text);
    let contains =
        |number: usize| !norm.is_empty() && normalize_answer(&chunks[prompt.chunks[number].index].text).contains(&norm);
    let mut citations: Vec<Citation> = Vec::new();
    if let Some(src) = rep.and_then(|r| candidates[r].source.as_ref()) {
        citations.push(cite(src.chunk));
    } else {
        citations.extend((0..prompt.chunks.len()).filter(|&n| contains(n)).map(cite));
    }
    let grounded = !citations.is_empty() && citations.iter().any(|c| contains(c.number - 1));
    let candidates = candidates
        .into_iter()
        .zip(ps)
        .zip(&agg.verdicts)
        .map(|((candidate, p), v)| {
            let logprob = candidate.logprobs.iter().chain(&candidate.suffix_logprobs).map(|&l| f64::from(l)).sum();
            CandidateReport { candidate, p, logprob, group: v.group, pruned: v.pruned }
        })
        .collect();
    Answer {
        text,
        confidence: agg.confidence(),
        citations,
        grounded,
        method,
        decoder,
        extractive,
        candidates,
        stats,
        note,
    }
}

/// The whole path's log-probability RPC weighs a candidate by (`-inf` for an empty answer,
/// which has no probability mass to give).
fn path_logprob(c: &Candidate) -> f64 {
    if c.text.is_empty() { f64::NEG_INFINITY } else { c.logprob() }
}

/// Aggregates already decoded candidates with another method (the candidates of one decode
/// can be compared under RPC, vote and lowest perplexity): the answer text and confidence.
pub fn reaggregate(candidates: &[CandidateReport], method: Method) -> (String, f64) {
    let paths: Vec<Path<'_>> = candidates
        .iter()
        .map(|c| Path {
            answer: &c.candidate.text,
            completion: &c.candidate.text,
            p: c.p,
            logprob: path_logprob(&c.candidate),
        })
        .collect();
    let agg = aggregate(&paths, method);
    match agg.answer() {
        Some(g) => (candidates[g.representative].candidate.text.clone(), agg.confidence()),
        None => (String::new(), 0.0),
    }
}

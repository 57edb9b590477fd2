//! The answer generator: which model writes the answer ([`Decoder`], [`AnswerModel`]), how
//! it decodes ([`GenerateOptions`], the options `metarag ask` and `bench --generate` share),
//! and the loaded [`Generator`] that answers a question from retrieved chunks.
//!
//! ```no_run
//! use metarag_engine::generator::{AnswerModel, Decoder, GenerateOptions, Generator, Infill};
//! use metarag_generate::aggregate::Method;
//! use metarag_generate::template::ContextChunk;
//!
//! let opts = metarag_onnx::RuntimeOptions::default();
//! let generator = Generator::load(Decoder::Causal, AnswerModel::Infill, &opts)?;
//! let cfg = generator.config(&GenerateOptions::default(), Infill::Extractive, Method::Rpc)?;
//! let chunks = vec![ContextChunk::new("note#0", "Call me Ishmael.")];
//! let answer = generator.ask("What is the narrator called?", &chunks, &cfg)?;
//! println!("{} ({:.2})", answer.text, answer.confidence);
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::PathBuf;

use anyhow::Context;
use metarag_generate::aggregate::Method;
use metarag_generate::masked::{MaskedConfig, Schedule};
use metarag_generate::qa::{Answer, AskConfig, ask_causal, ask_masked};
use metarag_generate::sample::{Mirostat, SamplerConfig};
use metarag_generate::template::{ContextChunk, Template};
use metarag_index::SearchHit;
use metarag_onnx::{BlockDenoiser, CausalLm, LmConfig, RuntimeOptions};

/// Which decoder writes the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Decoder {
    /// SmolLM2 (causal): the prompt is computed once and N candidates are decoded as one batch.
    Causal,
    /// The project's masked-diffusion answer model (a block of --length mask tokens after the
    /// prompt, unmasked in parallel over the prompt's cached keys and values).
    Masked,
}

impl Decoder {
    /// The command line's name (`causal`, `masked`); stable, used in cache keys.
    pub fn name(self) -> &'static str {
        match self {
            Decoder::Causal => "causal",
            Decoder::Masked => "masked",
        }
    }
}

/// Which causal model answers (causal decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum AnswerModel {
    /// The project's answer infiller: SmolLM2-135M-Instruct with the fill-in-the-middle LoRA
    /// adapter trained on SQuAD-Shifts (onnx/adapters/), merged in by setup; PSM prompt.
    Infill,
    /// The plain SmolLM2-135M-Instruct with its chat template (candidates rescored with the
    /// template's closing).
    Base,
}

impl AnswerModel {
    /// The command line's name (`infill`, `base`); stable, used in cache keys.
    pub fn name(self) -> &'static str {
        match self {
            AnswerModel::Infill => "infill",
            AnswerModel::Base => "base",
        }
    }
}

/// How the answer slot is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Infill {
    /// Only spans copied from the retrieved chunks (best for small models).
    Extractive,
    /// Free text.
    Free,
}

/// Masked-diffusion unmasking schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ScheduleKind {
    /// LLaDA: the k most confident positions per step.
    Confidence,
    /// Fast-dLLM: top-1 plus every position above --threshold.
    Threshold,
    /// First-hitting sampler: one uniformly chosen position per call.
    FirstHitting,
}

/// Parses an aggregation method name (`rpc`, `vote`, `ppl`) for a command line.
pub fn parse_method(s: &str) -> Result<Method, String> {
    s.parse::<Method>().map_err(|e| e.to_string())
}

/// Parses `TAU,ETA` (both > 0) for `--mirostat`.
pub fn parse_mirostat(s: &str) -> Result<Mirostat, String> {
    let v: Vec<f64> =
        s.split(',').map(|x| x.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|e| format!("{s:?}: {e}"))?;
    match v[..] {
        [tau, eta] if tau > 0.0 && eta > 0.0 => Ok(Mirostat { tau, eta }),
        _ => Err(format!("{s:?}: expected TAU,ETA with both > 0, e.g. 3,0.1")),
    }
}

/// Decoding and aggregation options shared by `ask` and `bench --generate`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct GenerateOptions {
    /// Candidates sampled per question (decoded together as one batch).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = GenerateOptions::DEFAULT.samples))]
    pub samples: usize,
    /// Decoder.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = GenerateOptions::DEFAULT.decoder))]
    pub decoder: Decoder,
    /// Model of the causal decoder: the trained answer infiller (default) or the base model.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = GenerateOptions::DEFAULT.generator))]
    pub generator: AnswerModel,
    /// Sampling temperature (0 = greedy: all candidates equal). Default 0.7; 1 for the masked
    /// decoder's first-hitting schedule, which is exact only at temperature 1.
    #[cfg_attr(feature = "clap", arg(long))]
    pub temperature: Option<f64>,
    /// Top-k filter (0 = off).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = GenerateOptions::DEFAULT.top_k))]
    pub top_k: usize,
    /// Nucleus filter (1 = off).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = GenerateOptions::DEFAULT.top_p))]
    pub top_p: f64,
    /// Mirostat instead of top-k/top-p: target surprise TAU (bits) and learning rate ETA.
    #[cfg_attr(feature = "clap", arg(long, value_name = "TAU,ETA", value_parser = parse_mirostat))]
    pub mirostat: Option<Mirostat>,
    /// Contrastive start λ (0 = off): the first answer token favours what the question makes
    /// more likely than the context alone does (one more prompt pass).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = GenerateOptions::DEFAULT.contrast))]
    pub contrast: f64,
    /// Most answer tokens (causal decoder).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = GenerateOptions::DEFAULT.max_tokens))]
    pub max_tokens: usize,
    /// Seed: the same seed gives the same candidates.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = GenerateOptions::DEFAULT.seed))]
    pub seed: u64,
    /// Most prompt tokens; retrieved chunks are added by relevance until it is reached.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = GenerateOptions::DEFAULT.max_prompt))]
    pub max_prompt: usize,
    /// Answer slot length in mask tokens (masked decoder; default: the slot the model's
    /// masked.json names, else the 20-token block it was trained with; at most the block).
    /// Candidates that fill a shorter slot without ending are decoded again in the whole block.
    #[cfg_attr(feature = "clap", arg(long))]
    pub length: Option<usize>,
    /// Denoising steps (masked decoder; default: --length, one token per step; fewer steps
    /// commit several tokens per step).
    #[cfg_attr(feature = "clap", arg(long))]
    pub steps: Option<usize>,
    /// Semi-autoregressive block length (masked decoder; default: --length, one block).
    #[cfg_attr(feature = "clap", arg(long))]
    pub block: Option<usize>,
    /// Unmasking schedule (masked decoder).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = GenerateOptions::DEFAULT.schedule))]
    pub schedule: ScheduleKind,
    /// Confidence threshold of the threshold schedule.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = GenerateOptions::DEFAULT.threshold))]
    pub threshold: f64,
    /// Masked decoder: let any position take the end token, as LLaDA does (by default the
    /// end is written only right after the answer's last token, and ends the candidate).
    #[cfg_attr(feature = "clap", arg(long))]
    pub free_end: bool,
    /// Infill template (TOML with any of: head, chunk_open, chunk_close, question_open,
    /// answer_open, suffix, max_prompt, max_chunks, min_chunk_tokens); default: the template
    /// the infiller was trained on (--generator infill), else SmolLM2's chat template primed
    /// with "The answer is:".
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub template: Option<PathBuf>,
}

impl GenerateOptions {
    /// The library configuration for `infill` and `method`.
    pub fn config(&self, infill: Infill, method: Method) -> anyhow::Result<AskConfig> {
        let mut template = match &self.template {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
                toml::from_str::<Template>(&text).with_context(|| format!("{}: invalid template", path.display()))?
            }
            // The masked model was trained on the infiller's template.
            None if self.decoder == Decoder::Masked || self.generator == AnswerModel::Infill => Template::infill(),
            None => Template::default(),
        };
        template.max_prompt = self.max_prompt;
        let mut cfg =
            AskConfig { template, extractive: infill == Infill::Extractive, aggregate: method, ..AskConfig::default() };
        cfg.causal.samples = self.samples;
        cfg.causal.max_tokens = self.max_tokens;
        cfg.causal.seed = self.seed;
        cfg.causal.contrast = self.contrast;
        let schedule = match self.schedule {
            ScheduleKind::Confidence => Schedule::LowConfidence,
            ScheduleKind::Threshold => Schedule::Threshold { threshold: self.threshold },
            ScheduleKind::FirstHitting => Schedule::FirstHitting,
        };
        let masked = self.decoder == Decoder::Masked;
        let temperature =
            self.temperature.unwrap_or(if masked && schedule == Schedule::FirstHitting { 1.0 } else { 0.7 });
        cfg.causal.sampler =
            SamplerConfig { temperature, top_k: self.top_k, top_p: self.top_p, mirostat: self.mirostat };
        cfg.masked = MaskedConfig {
            length: self.length.unwrap_or(16),
            steps: self.steps,
            block_length: self.block,
            schedule,
            temperature,
            seed: self.seed,
            ordered_end: !self.free_end,
            widen_to: None,
        };
        if masked && self.length.is_some() {
            cfg.masked.check().context("masked decoder settings")?;
        }
        Ok(cfg)
    }
}

impl GenerateOptions {
    /// The defaults (`metarag ask`'s, and the command line's: clap reads them from here).
    pub const DEFAULT: GenerateOptions = GenerateOptions {
        samples: 8,
        decoder: Decoder::Causal,
        generator: AnswerModel::Infill,
        temperature: None,
        top_k: 40,
        top_p: 0.95,
        mirostat: None,
        contrast: 1.0,
        max_tokens: 16,
        seed: 0,
        max_prompt: 768,
        length: None,
        steps: None,
        block: None,
        schedule: ScheduleKind::Confidence,
        threshold: 0.9,
        free_end: false,
        template: None,
    };
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions::DEFAULT
    }
}

/// Retrieved chunks as template context.
pub fn context(hits: &[SearchHit]) -> Vec<ContextChunk> {
    hits.iter()
        .map(|h| ContextChunk {
            id: format!("{}#{}", h.record.path, h.record.chunk),
            text: h.record.text.clone(),
            path: Some(h.record.path.clone()),
            span: Some(h.record.start as usize..h.record.end as usize),
        })
        .collect()
}

/// The generator a run needs, loaded once.
pub enum Generator {
    /// SmolLM2.
    Causal(Box<CausalLm>),
    /// The masked-diffusion answer model.
    Masked(Box<BlockDenoiser>),
}

impl Generator {
    /// Loads the generator for `decoder` (and, for the causal decoder, `model`).
    pub fn load(decoder: Decoder, model: AnswerModel, opts: &RuntimeOptions) -> anyhow::Result<Self> {
        Ok(match decoder {
            Decoder::Causal => {
                // The prompt is run in windows of 256 tokens with nothing sliding out.
                let cfg = LmConfig { window: 256, max_context: 8192, max_position: 8192, sink_tokens: 4 };
                let lm = match model {
                    AnswerModel::Infill => CausalLm::load_infill(opts, cfg).context(
                        "loading the answer infiller (python3 onnx/setup.py builds it; --generator base uses the plain model)",
                    )?,
                    AnswerModel::Base => CausalLm::load(opts, cfg).context("loading the causal LM")?,
                };
                Generator::Causal(Box::new(lm))
            }
            Decoder::Masked => Generator::Masked(Box::new(
                BlockDenoiser::load(opts)
                    .context("loading the masked-diffusion answer model (python3 onnx/setup.py builds it)")?,
            )),
        })
    }

    /// The library configuration for `args`, with what the loaded model decides: the masked
    /// slot is the model's block unless --length says otherwise, and never longer.
    pub fn config(&self, args: &GenerateOptions, infill: Infill, method: Method) -> anyhow::Result<AskConfig> {
        let mut cfg = args.config(infill, method)?;
        if let Generator::Masked(m) = self {
            cfg.masked.length = args.length.unwrap_or(m.slot());
            cfg.masked.widen_to = Some(m.block());
            if cfg.masked.length > m.block() {
                anyhow::bail!(
                    "--length {} is longer than the {}-token block the masked model was trained with",
                    cfg.masked.length,
                    m.block()
                );
            }
            cfg.masked.check().context("masked decoder settings")?;
        }
        Ok(cfg)
    }

    /// Answers one question from `chunks`.
    pub fn ask(&self, question: &str, chunks: &[ContextChunk], cfg: &AskConfig) -> anyhow::Result<Answer> {
        Ok(match self {
            Generator::Causal(lm) => ask_causal(lm.as_ref(), question, chunks, cfg)?,
            Generator::Masked(m) => ask_masked(m.as_ref(), question, chunks, cfg)?,
        })
    }
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use clap::{Parser, ValueEnum};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        generate: GenerateOptions,
    }

    #[test]
    fn the_command_line_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["ask"]).unwrap();
        assert_eq!(cli.generate, GenerateOptions::default());
    }

    #[test]
    fn names_in_cache_keys_are_the_command_line_value_names() {
        for d in [Decoder::Causal, Decoder::Masked] {
            assert_eq!(d.to_possible_value().unwrap().get_name(), d.name());
        }
        for m in [AnswerModel::Infill, AnswerModel::Base] {
            assert_eq!(m.to_possible_value().unwrap().get_name(), m.name());
        }
    }

    #[test]
    fn first_hitting_defaults_to_temperature_one_and_others_to_0_7() {
        let masked = GenerateOptions {
            decoder: Decoder::Masked,
            schedule: ScheduleKind::FirstHitting,
            ..GenerateOptions::default()
        };
        let cfg = masked.config(Infill::Extractive, Method::Rpc).unwrap();
        assert_eq!(cfg.masked.temperature, 1.0);
        let causal = GenerateOptions::default().config(Infill::Free, Method::Vote).unwrap();
        assert_eq!(causal.causal.sampler.temperature, 0.7);
        assert!(!causal.extractive);
    }
}

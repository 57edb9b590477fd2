//! `metarag ask`: retrieve chunks, fill the infill template, decode N candidates together,
//! aggregate them (RPC, vote or lowest perplexity) and cite the chunks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use metarag_generate::aggregate::Method;
use metarag_generate::masked::{MaskedConfig, Schedule};
use metarag_generate::qa::{Answer, AskConfig, ask_causal, ask_masked};
use metarag_generate::sample::{Mirostat, SamplerConfig};
use metarag_generate::template::{ContextChunk, Template};
use metarag_index::{Mode, Query, SearchHit};
use metarag_onnx::{BlockDenoiser, CausalLm, LmConfig, RuntimeOptions};
use serde::Serialize;

use crate::search::ModeArg;

/// Which decoder writes the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecoderArg {
    /// SmolLM2 (causal): the prompt is computed once and N candidates are decoded as one batch.
    Causal,
    /// The project's masked-diffusion answer model (a block of --length mask tokens after the
    /// prompt, unmasked in parallel over the prompt's cached keys and values).
    Masked,
}

/// Which causal model answers (causal decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GeneratorArg {
    /// The project's answer infiller: SmolLM2-135M-Instruct with the fill-in-the-middle LoRA
    /// adapter trained on SQuAD-Shifts (onnx/adapters/), merged in by setup; PSM prompt.
    Infill,
    /// The plain SmolLM2-135M-Instruct with its chat template (candidates rescored with the
    /// template's closing).
    Base,
}

/// How the answer slot is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InfillArg {
    /// Only spans copied from the retrieved chunks (best for small models).
    Extractive,
    /// Free text.
    Free,
}

/// Masked-diffusion unmasking schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// LLaDA: the k most confident positions per step.
    Confidence,
    /// Fast-dLLM: top-1 plus every position above --threshold.
    Threshold,
    /// First-hitting sampler: one uniformly chosen position per call.
    FirstHitting,
}

/// Aggregation method (parsed by metarag-generate).
pub fn parse_method(s: &str) -> Result<Method, String> {
    s.parse::<Method>().map_err(|e| e.to_string())
}

fn parse_mirostat(s: &str) -> Result<Mirostat, String> {
    let v: Vec<f64> =
        s.split(',').map(|x| x.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|e| format!("{s:?}: {e}"))?;
    match v[..] {
        [tau, eta] if tau > 0.0 && eta > 0.0 => Ok(Mirostat { tau, eta }),
        _ => Err(format!("{s:?}: expected TAU,ETA with both > 0, e.g. 3,0.1")),
    }
}

/// Decoding and aggregation options shared by `ask` and `bench --generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Candidates sampled per question (decoded together as one batch).
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    /// Decoder.
    #[arg(long, value_enum, default_value_t = DecoderArg::Causal)]
    pub decoder: DecoderArg,
    /// Model of the causal decoder: the trained answer infiller (default) or the base model.
    #[arg(long, value_enum, default_value_t = GeneratorArg::Infill)]
    pub generator: GeneratorArg,
    /// Sampling temperature (0 = greedy: all candidates equal). Default 0.7; 1 for the masked
    /// decoder's first-hitting schedule, which is exact only at temperature 1.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Top-k filter (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus filter (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Mirostat instead of top-k/top-p: target surprise TAU (bits) and learning rate ETA.
    #[arg(long, value_name = "TAU,ETA", value_parser = parse_mirostat)]
    pub mirostat: Option<Mirostat>,
    /// Contrastive start λ (0 = off): the first answer token favours what the question makes
    /// more likely than the context alone does (one more prompt pass).
    #[arg(long, default_value_t = 1.0)]
    pub contrast: f64,
    /// Most answer tokens (causal decoder).
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    /// Seed: the same seed gives the same candidates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most prompt tokens; retrieved chunks are added by relevance until it is reached.
    #[arg(long, default_value_t = 768)]
    pub max_prompt: usize,
    /// Answer slot length in mask tokens (masked decoder; default: the block the model was
    /// trained with, 20 tokens; at most that).
    #[arg(long)]
    pub length: Option<usize>,
    /// Denoising steps (masked decoder; default: --length, one token per step; fewer steps
    /// commit several tokens per step).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Semi-autoregressive block length (masked decoder; default: --length, one block).
    #[arg(long)]
    pub block: Option<usize>,
    /// Unmasking schedule (masked decoder).
    #[arg(long, value_enum, default_value_t = ScheduleArg::Confidence)]
    pub schedule: ScheduleArg,
    /// Confidence threshold of the threshold schedule.
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f64,
    /// Masked decoder: let any position take the end token, as LLaDA does (by default the
    /// end is written only right after the answer's last token, and ends the candidate).
    #[arg(long)]
    pub free_end: bool,
    /// Infill template (TOML with any of: head, chunk_open, chunk_close, question_open,
    /// answer_open, suffix, max_prompt, max_chunks, min_chunk_tokens); default: the template
    /// the infiller was trained on (--generator infill), else SmolLM2's chat template primed
    /// with "The answer is:".
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
}

impl GenerateArgs {
    /// The library configuration for `infill` and `method`.
    pub fn config(&self, infill: InfillArg, method: Method) -> anyhow::Result<AskConfig> {
        let mut template = match &self.template {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
                toml::from_str::<Template>(&text).with_context(|| format!("{}: invalid template", path.display()))?
            }
            // The masked model was trained on the infiller's template.
            None if self.decoder == DecoderArg::Masked || self.generator == GeneratorArg::Infill => Template::infill(),
            None => Template::default(),
        };
        template.max_prompt = self.max_prompt;
        let mut cfg = AskConfig {
            template,
            extractive: infill == InfillArg::Extractive,
            aggregate: method,
            ..AskConfig::default()
        };
        cfg.causal.samples = self.samples;
        cfg.causal.max_tokens = self.max_tokens;
        cfg.causal.seed = self.seed;
        cfg.causal.contrast = self.contrast;
        let schedule = match self.schedule {
            ScheduleArg::Confidence => Schedule::LowConfidence,
            ScheduleArg::Threshold => Schedule::Threshold { threshold: self.threshold },
            ScheduleArg::FirstHitting => Schedule::FirstHitting,
        };
        let masked = self.decoder == DecoderArg::Masked;
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
        };
        if masked && self.length.is_some() {
            cfg.masked.check().context("masked decoder settings")?;
        }
        Ok(cfg)
    }
}

/// Arguments of `metarag ask`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
EXAMPLES:
  metarag ask --index idx 'what does the narrator ask to be called?'
  metarag ask --index idx 'who wrote the report?' --samples 16 --aggregate vote --json
  metarag ask --index idx 'when was it released?' --infill free --mirostat 3,0.1
  metarag ask --index idx 'what is the codename?' --decoder masked --schedule threshold

The answer is written by the project's answer infiller (--generator infill, the default):
SmolLM2-135M-Instruct with a LoRA adapter trained by onnx/train_infill.py to fill the answer
slot of a fill-in-the-middle prompt (SQuAD-Shifts data, never SQuAD dev; model card in
onnx/adapters/README.md), merged into the base weights by `python3 onnx/setup.py`.
--generator base answers with the plain SmolLM2-135M-Instruct and its chat template.
The question retrieves -k chunks (hybrid by default); they fill the infill template, most
relevant first, up to --max-prompt tokens. The prompt is computed once and --samples
candidates are decoded from it together. Extractive infilling (the default) only writes spans
of the retrieved chunks, so every answer is a quotation of a cited chunk; --infill free lets
the model write anything. The base model's candidates are rescored with the template's closing;
the infiller's end with its end-of-text token. Candidates are aggregated: rpc (perplexity
consistency with Weibull reasoning pruning), vote (self-consistency) or ppl (lowest perplexity).

--decoder masked answers with the project's masked-diffusion model instead: the same base with a
LoRA adapter trained by `onnx/train_infill.py train --objective masked` to denoise a block of
20 answer positions (model card in onnx/adapters/README.md). The prompt is read once; each step
runs only the block over the prompt's cache, for all --samples candidates as one batch, and
commits some of its masked positions: --schedule confidence (LLaDA: --length / --steps per
step), threshold (Fast-dLLM: every position above --threshold, so confident answers take few
steps) or first-hitting (one position per step, exact at temperature 1). The end token is only
written right after the answer's last token, which ends the candidate (--free-end: anywhere, as
LLaDA does; the model's end padding then tends to eat into answers). Extractive infilling keeps
the unmasked tokens a span of the chunks where the committed neighbours allow it.")]
pub struct AskArgs {
    /// Index directory (made by `metarag ingest`).
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// The question.
    #[arg(required = true, value_name = "QUESTION")]
    question: Vec<String>,
    /// Aggregation of the candidates.
    #[arg(long, default_value = "rpc", value_parser = parse_method)]
    aggregate: Method,
    /// Chunks retrieved as context (a 135M model answers best from few: 2 measured best on
    /// SQuAD).
    #[arg(short, long, default_value_t = 2)]
    k: usize,
    /// Retrieval mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Hybrid)]
    mode: ModeArg,
    /// Extractive (spans of the retrieved chunks) or free infilling (causal decoder).
    #[arg(long, value_enum, default_value_t = InfillArg::Extractive)]
    infill: InfillArg,
    #[command(flatten)]
    generate: GenerateArgs,
    /// JSON output: the answer, every candidate with its score and whether it was pruned.
    #[arg(long)]
    json: bool,
    /// Threads for ONNX Runtime (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Models directory (default: $METARAG_MODELS, else models/ of the checkout).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
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
    pub fn load(decoder: DecoderArg, model: GeneratorArg, opts: &RuntimeOptions) -> anyhow::Result<Self> {
        Ok(match decoder {
            DecoderArg::Causal => {
                // The prompt is run in windows of 256 tokens with nothing sliding out.
                let cfg = LmConfig { window: 256, max_context: 8192, max_position: 8192, sink_tokens: 4 };
                let lm = match model {
                    GeneratorArg::Infill => CausalLm::load_infill(opts, cfg).context(
                        "loading the answer infiller (python3 onnx/setup.py builds it; --generator base uses the plain model)",
                    )?,
                    GeneratorArg::Base => CausalLm::load(opts, cfg).context("loading the causal LM")?,
                };
                Generator::Causal(Box::new(lm))
            }
            DecoderArg::Masked => Generator::Masked(Box::new(
                BlockDenoiser::load(opts)
                    .context("loading the masked-diffusion answer model (python3 onnx/setup.py builds it)")?,
            )),
        })
    }

    /// The library configuration for `args`, with what the loaded model decides: the masked
    /// slot is the model's block unless --length says otherwise, and never longer.
    pub fn config(&self, args: &GenerateArgs, infill: InfillArg, method: Method) -> anyhow::Result<AskConfig> {
        let mut cfg = args.config(infill, method)?;
        if let Generator::Masked(m) = self {
            cfg.masked.length = args.length.unwrap_or(m.block());
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

#[derive(Serialize)]
struct Output<'a> {
    question: &'a str,
    #[serde(flatten)]
    answer: &'a Answer,
    retrieved: Vec<&'a str>,
}

pub fn run(args: &AskArgs) -> anyhow::Result<ExitCode> {
    let question = args.question.join(" ");
    let (_, opts) = metarag_onnx::runtime(args.threads, args.models.as_deref());
    let mode = Mode::from(args.mode);
    let index = crate::search::open_for(&args.index, mode, &opts)?;
    let hits = index.search(&Query::new(question.clone()).k(args.k).mode(mode))?;
    let chunks = context(&hits);
    // Settings are checked before the models load; the loaded model settles the rest.
    args.generate.config(args.infill, args.aggregate)?;
    let generator = Generator::load(args.generate.decoder, args.generate.generator, &opts)?;
    let cfg = generator.config(&args.generate, args.infill, args.aggregate)?;
    let answer = generator.ask(&question, &chunks, &cfg)?;
    if args.json {
        let retrieved = chunks.iter().map(|c| c.id.as_str()).collect();
        outln!("{}", serde_json::to_string_pretty(&Output { question: &question, answer: &answer, retrieved })?)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_answer(&answer, &chunks)?;
    Ok(ExitCode::SUCCESS)
}

fn print_answer(a: &Answer, chunks: &[ContextChunk]) -> std::io::Result<()> {
    if a.text.is_empty() {
        outln!("No answer (no candidate survived; try --samples or --infill free).")?;
    } else {
        outln!("{}", a.text)?;
    }
    let kept = a.candidates.iter().filter(|c| !c.pruned).count();
    outln!(
        "\nconfidence {:.2} ({} of {} candidates, {} kept after pruning; {} decoder{}; {:.1} s)",
        a.confidence,
        a.method,
        a.candidates.len(),
        kept,
        a.decoder,
        if a.extractive { ", extractive" } else { "" },
        a.stats.decode_seconds + a.stats.aggregate_seconds
    )?;
    outln!(
        "decoding: {} prompt tokens, {} model calls, {} answer tokens ({:.2} per call)",
        a.stats.prompt_tokens,
        a.stats.forwards,
        a.stats.generated_tokens,
        a.stats.tokens_per_forward
    )?;
    if let (Some(c), Some(d)) = (a.stats.committed_per_step, a.stats.decoded_per_step) {
        outln!(
            "denoising: {} steps, {c:.2} slot positions resolved per candidate per step ({d:.2} decoded, the rest end padding)",
            a.stats.forwards
        )?;
    }
    if let Some(n) = &a.note {
        outln!("note: {n}")?;
    }
    if a.citations.is_empty() {
        outln!("sources: none of the {} retrieved chunks contains this answer", chunks.len())?;
    } else {
        outln!("sources:")?;
        for c in &a.citations {
            let span = c.span.as_ref().map(|s| format!(" [{}..{}]", s.start, s.end)).unwrap_or_default();
            outln!("  [{}] {}{span}", c.number, c.id)?;
        }
    }
    Ok(())
}

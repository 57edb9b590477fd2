//! `metarag ask`: retrieve chunks, fill the infill template, decode N candidates together,
//! aggregate them (RPC, vote or lowest perplexity) and cite the chunks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use metarag_engine::generator::{GenerateOptions, Generator, Infill, context, parse_method};
use metarag_generate::aggregate::Method;
use metarag_generate::qa::Answer;
use metarag_generate::template::ContextChunk;
use metarag_index::{Mode, Query};
use serde::Serialize;

use crate::search::ModeArg;

/// Arguments of `metarag ask`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
EXAMPLES:
  metarag ask --index idx 'what does the narrator ask to be called?'
  metarag ask --index idx --questions questions.txt --json > answers.jsonl
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
    #[arg(required_unless_present = "questions", value_name = "QUESTION")]
    question: Vec<String>,
    /// Ask every non-empty line of FILE (`-`: standard input), loading the models once; with
    /// --json the answers are JSON Lines, one object per question, in the file's order.
    #[arg(long, value_name = "FILE", conflicts_with = "question")]
    questions: Option<PathBuf>,
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
    #[arg(long, value_enum, default_value_t = Infill::Extractive)]
    infill: Infill,
    #[command(flatten)]
    generate: GenerateOptions,
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

#[derive(Serialize)]
struct Output<'a> {
    question: &'a str,
    #[serde(flatten)]
    answer: &'a Answer,
    retrieved: Vec<&'a str>,
}

pub fn run(args: &AskArgs) -> anyhow::Result<ExitCode> {
    let questions = match &args.questions {
        Some(file) => read_questions(file)?,
        None => vec![args.question.join(" ")],
    };
    let (_, opts) = metarag_onnx::runtime(args.threads, args.models.as_deref());
    let mode = Mode::from(args.mode);
    let index = metarag_engine::open_index(&args.index, mode, &opts)?;
    // Settings are checked before the models load; the loaded model settles the rest.
    args.generate.config(args.infill, args.aggregate)?;
    let generator = Generator::load(args.generate.decoder, args.generate.generator, &opts)?;
    let cfg = generator.config(&args.generate, args.infill, args.aggregate)?;
    let batch = args.questions.is_some();
    for (i, question) in questions.iter().enumerate() {
        let hits = index.search(&Query::new(question.clone()).k(args.k).mode(mode))?;
        let chunks = context(&hits);
        let answer = generator.ask(question, &chunks, &cfg)?;
        if args.json {
            let retrieved = chunks.iter().map(|c| c.id.as_str()).collect();
            let out = Output { question, answer: &answer, retrieved };
            // One question: pretty JSON; a file of them: JSON Lines.
            let json = if batch { serde_json::to_string(&out)? } else { serde_json::to_string_pretty(&out)? };
            outln!("{json}")?;
            continue;
        }
        if batch {
            outln!("{}Q: {question}", if i == 0 { "" } else { "\n" })?;
        }
        print_answer(&answer, &chunks)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The non-empty lines of `file` (`-`: standard input), trimmed.
fn read_questions(file: &Path) -> anyhow::Result<Vec<String>> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading questions from standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("{}: cannot read the questions", file.display()))?
    };
    let questions: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    anyhow::ensure!(!questions.is_empty(), "{}: no questions (one per line)", file.display());
    Ok(questions)
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

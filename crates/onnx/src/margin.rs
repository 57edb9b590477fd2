//! [`MarginJudge`]: margin sampling with the instruction model's chat template, reusing the
//! KV cache of the prompt prefix across the calls of one document. Two prompts
//! ([`MarginPrompt`]): the paper's, and a cache-friendly one that shows the chunk once.

use std::sync::Mutex;
use std::thread::ThreadId;

use metarag_core::chunk::MarginPrompt;
use metarag_core::model::MarginJudge;

use crate::lm::{CausalLm, KvCache};
use crate::{Error, Result};

/// The Meta-Chunking margin prompt (lmchunker's English query, its line indentation
/// included), split where the chunk and the next sentence go.
const PARTS: [&str; 5] = [
    "This is a text chunking task. You are a text analysis expert. Please choose one of the following two options based on the logical structure and semantic content of the provided sentence:\n        1. Split \"",
    "\" into \"",
    "\" and \"",
    "\" two parts;\n        2. Keep \"",
    "\" unsplit in its original form;\n        Please answer 1 or 2.",
];

/// The cache-friendly prompt, before and after the sentences: the chunk's sentences one per line,
/// then the candidate sentence on the next line, then the question about the last line. The
/// candidate is shown as the chunk's sentences are, so when it is merged the next call's
/// prompt shares everything up to the end of it, and each call runs only the new candidate
/// and the question.
const CACHED_PARTS: [&str; 2] = [
    "This is a text chunking task. You are a text analysis expert. Below is a text, one sentence per line. Based on the logical structure and semantic content, choose one of the following two options for its last sentence:\n1. Split it from the sentences before it, into two parts;\n2. Keep it with the sentences before it, in their original form.\n\nText:",
    "\n\nPlease answer 1 or 2.",
];

/// Most per-thread KV caches kept (the oldest is dropped beyond this).
const MAX_THREAD_CACHES: usize = 16;

/// The system prompt the reference code gives the model.
const SYSTEM: &str = "You are a helpful assistant.";

/// Settings of [`LmMarginJudge`].
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeConfig {
    /// The current chunk shown to the model is capped to its last sentences that fit in this
    /// many tokens (the prompt holds the chunk three times). Default 384.
    pub max_chunk_tokens: usize,
    /// Reuse the KV cache of the prompt prefix shared with the previous call (default true;
    /// false recomputes every prompt from scratch, as the reference implementation does; the
    /// margins are the same either way, test-checked).
    pub reuse_prefix: bool,
    /// Which prompt the model reads (default: the paper's, [`MarginPrompt::Exact`]).
    pub prompt: MarginPrompt,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig { max_chunk_tokens: 384, reuse_prefix: true, prompt: MarginPrompt::Exact }
    }
}

/// Margin judge over a [`CausalLm`] with a chat template (`<|im_start|>role\n…<|im_end|>`).
///
/// Either prompt is laid out so that, when the previous sentence was merged, everything up to
/// the end of the (first copy of the) chunk is shared with the previous call's prompt; the KV
/// cache of the longest common token prefix is reused. With [`MarginPrompt::Exact`] each call
/// still runs two more copies of the chunk; with [`MarginPrompt::Cached`] only the candidate
/// and the question.
pub struct LmMarginJudge<'a> {
    lm: &'a CausalLm,
    config: JudgeConfig,
    /// The prompt's text around the chunk and the sentence: before, between, after.
    head: String,
    parts: &'static [&'static str],
    tail: String,
    one: u32,
    two: u32,
    /// One KV cache per calling thread: a thread chunks one document at a time, so its
    /// calls share prefixes; documents chunked in parallel must not evict each other's.
    caches: Mutex<Vec<(ThreadId, KvCache)>>,
    /// Token counts of recent sentences (to cap the chunk shown).
    lengths: Mutex<Vec<(String, usize)>>,
}

impl std::fmt::Debug for LmMarginJudge<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmMarginJudge").field("config", &self.config).finish()
    }
}

impl<'a> LmMarginJudge<'a> {
    /// A judge over `lm`, which must know the chat-template tokens.
    pub fn new(lm: &'a CausalLm, config: JudgeConfig) -> Result<Self> {
        lm.token_id("<|im_start|>")?;
        lm.token_id("<|im_end|>")?;
        let (first, parts, last): (_, &'static [&'static str], _) = match config.prompt {
            MarginPrompt::Exact => (PARTS[0], &PARTS[1..4], PARTS[4]),
            MarginPrompt::Cached => (CACHED_PARTS[0], &[], CACHED_PARTS[1]),
        };
        Ok(LmMarginJudge {
            one: lm.token_id("1")?,
            two: lm.token_id("2")?,
            lm,
            config,
            head: format!("<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{first}"),
            parts,
            tail: format!("{last}<|im_end|>\n<|im_start|>assistant\n"),
            caches: Mutex::new(Vec::new()),
            lengths: Mutex::new(Vec::new()),
        })
    }

    /// Tokens in `sentence` (remembered for the last 256 sentences).
    fn length(&self, sentence: &str) -> Result<usize> {
        let mut known = self.lengths.lock().map_err(|_| Error::Input("judge cache poisoned".into()))?;
        if let Some((_, n)) = known.iter().find(|(p, _)| p == sentence) {
            return Ok(*n);
        }
        let n = self.lm.encode(sentence)?.len();
        if known.len() >= 256 {
            known.remove(0);
        }
        known.push((sentence.to_string(), n));
        Ok(n)
    }

    /// The prompt's text for `chunk` + `next`. The chunk shown is its last sentences that fit
    /// in `max_chunk_tokens` (at least one). The paper's prompt quotes the sentences as the
    /// reference code does: stripped, joined by a space. The cached one puts each on a line of
    /// its own, whitespace runs made one space.
    pub fn prompt_text(&self, chunk: &[&str], next: &str) -> Result<String> {
        let mut shown = 0;
        let mut total = 0;
        for p in chunk.iter().rev() {
            let t = self.length(p)?;
            if total + t > self.config.max_chunk_tokens && shown > 0 {
                break;
            }
            total += t;
            shown += 1;
        }
        let shown = &chunk[chunk.len() - shown..];
        let mut p = self.head.clone();
        match self.config.prompt {
            MarginPrompt::Exact => {
                let c = shown.iter().map(|s| s.trim()).collect::<Vec<_>>().join(" ");
                let n = next.trim();
                let [into, and, keep] = [self.parts[0], self.parts[1], self.parts[2]];
                p += &format!("{c} {n}{into}{c}{and}{n}{keep}{c} {n}");
            }
            MarginPrompt::Cached => {
                for s in shown.iter().chain([&next]) {
                    p.push('\n');
                    p += &s.split_whitespace().collect::<Vec<_>>().join(" ");
                }
            }
        }
        p += &self.tail;
        Ok(p)
    }

    /// The prompt's token ids for `chunk` + `next`: [`LmMarginJudge::prompt_text`] tokenized
    /// as a whole, as the reference does (consecutive prompts still share their tokens up to
    /// the end of the chunk, but for the last token or two where the texts part).
    pub fn prompt(&self, chunk: &[&str], next: &str) -> Result<Vec<u32>> {
        self.lm.encode(&self.prompt_text(chunk, next)?)
    }
}

impl MarginJudge for LmMarginJudge<'_> {
    fn margin(&self, chunk: &[&str], next: &str) -> metarag_core::Result<f32> {
        let prompt = self.prompt(chunk, next)?;
        let poisoned = |_| metarag_core::Error::model("judge cache poisoned");
        let me = std::thread::current().id();
        let mut cache = if self.config.reuse_prefix {
            let mut caches = self.caches.lock().map_err(poisoned)?;
            caches.iter().position(|(t, _)| *t == me).map(|i| caches.remove(i).1)
        } else {
            None
        };
        let lp = self.lm.next_token_logprobs(&prompt, &mut cache, &[self.one, self.two])?;
        if let (true, Some(c)) = (self.config.reuse_prefix, cache) {
            let mut caches = self.caches.lock().map_err(poisoned)?;
            if caches.len() >= MAX_THREAD_CACHES {
                caches.remove(0);
            }
            caches.push((me, c));
        }
        Ok(lp[1].exp() - lp[0].exp())
    }
}

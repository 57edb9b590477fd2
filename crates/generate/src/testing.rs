//! Deterministic scripted models for fast tests: [`ScriptedLm`] (causal) and
//! [`ScriptedDenoiser`] (masked). Their logits come from tables written by the test, so a
//! test can predict every token. They are NOT models; the product uses `metarag-onnx`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use metarag_core::model::{CausalModel, FimTokens, MaskedDenoiser, Vocabulary};
use metarag_core::{Error, Result};

/// A word-level vocabulary: token i is `words[i]`; text is encoded by splitting on
/// whitespace (an unknown word is an error) and decoded by joining with spaces. Words that
/// start with `<` are special: decoding skips them.
#[derive(Debug, Clone)]
pub struct WordVocab {
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

impl WordVocab {
    /// A vocabulary of these words, in order.
    pub fn new(words: &[&str]) -> Self {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let ids = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect();
        WordVocab { words, ids }
    }
}

impl Vocabulary for WordVocab {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.split_whitespace()
            .map(|w| {
                self.ids.get(w).copied().ok_or_else(|| Error::model(format!("scripted vocabulary has no word `{w}`")))
            })
            .collect()
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(ids
            .iter()
            .filter_map(|&i| self.words.get(i as usize))
            .filter(|w| !w.starts_with('<'))
            .cloned()
            .collect::<Vec<_>>()
            .join(" "))
    }
    fn vocab_size(&self) -> usize {
        self.words.len()
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }
}

/// Logits as a function of the whole context (prompt + tokens so far).
pub type LogitsFn = dyn Fn(&[u32]) -> Vec<f32> + Send + Sync;

/// A scripted causal LM: `next(context)` gives the next-token logits. Counts forwards
/// (prefill = 1, each step = 1 however many rows, each scoring batch = 1) and rows stepped.
pub struct ScriptedLm {
    vocab: WordVocab,
    next: Box<LogitsFn>,
    stop: Vec<u32>,
    forwards: AtomicUsize,
    row_steps: AtomicUsize,
    /// Largest batch seen by `step`.
    max_rows: AtomicUsize,
    log: Mutex<Vec<usize>>,
    fim: Option<FimTokens>,
    prompts: Mutex<Vec<Vec<u32>>>,
}

impl std::fmt::Debug for ScriptedLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedLm").field("vocab", &self.vocab.words.len()).finish()
    }
}

impl ScriptedLm {
    /// A model over `words` whose next-token logits are `next(context)`; `stop` lists the
    /// stop words.
    pub fn new(words: &[&str], stop: &[&str], next: impl Fn(&[u32]) -> Vec<f32> + Send + Sync + 'static) -> Self {
        let vocab = WordVocab::new(words);
        let stop = stop.iter().filter_map(|w| vocab.token_id(w)).collect();
        ScriptedLm {
            vocab,
            next: Box::new(next),
            stop,
            forwards: AtomicUsize::new(0),
            row_steps: AtomicUsize::new(0),
            max_rows: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            fim: None,
            prompts: Mutex::new(Vec::new()),
        }
    }

    /// Declares FIM sentinels (words of the vocabulary), making this a FIM model.
    pub fn with_fim(mut self, prefix: &str, suffix: &str, middle: &str) -> Self {
        let id = |w: &str| self.vocab.token_id(w).unwrap_or(0);
        self.fim = Some(FimTokens { prefix: id(prefix), suffix: id(suffix), middle: id(middle) });
        self
    }

    /// Every prompt given to `prefill`, in order.
    pub fn prompts(&self) -> Vec<Vec<u32>> {
        self.prompts.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Forward passes so far.
    pub fn forwards(&self) -> usize {
        self.forwards.load(Ordering::Relaxed)
    }

    /// Rows advanced by `step` so far (a batch of 8 counts 8).
    pub fn row_steps(&self) -> usize {
        self.row_steps.load(Ordering::Relaxed)
    }

    /// Batch sizes of every `step` call, in order.
    pub fn step_sizes(&self) -> Vec<usize> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn logits(&self, ctx: &[u32]) -> Result<Vec<f32>> {
        let l = (self.next)(ctx);
        if l.len() != self.vocab.vocab_size() {
            return Err(Error::model(format!(
                "script gave {} logits for a {}-word vocabulary",
                l.len(),
                self.vocab.vocab_size()
            )));
        }
        Ok(l)
    }
}

impl Vocabulary for ScriptedLm {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.vocab.encode(text)
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.vocab.decode(ids)
    }
    fn vocab_size(&self) -> usize {
        self.vocab.vocab_size()
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.token_id(token)
    }
}

/// The scripted model's prefix: its tokens and last logits.
#[derive(Debug, Clone)]
pub struct ScriptedPrefix {
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

impl CausalModel for ScriptedLm {
    type Prefix = ScriptedPrefix;
    type Batch = Vec<Vec<u32>>;

    fn prefill(&self, prompt: &[u32]) -> Result<ScriptedPrefix> {
        if prompt.is_empty() {
            return Err(Error::model("empty prompt"));
        }
        self.forwards.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut p) = self.prompts.lock() {
            p.push(prompt.to_vec());
        }
        Ok(ScriptedPrefix { tokens: prompt.to_vec(), logits: self.logits(prompt)? })
    }
    fn prefix_logits<'a>(&self, prefix: &'a ScriptedPrefix) -> &'a [f32] {
        &prefix.logits
    }
    fn fork(&self, prefix: &ScriptedPrefix, n: usize) -> Result<Vec<Vec<u32>>> {
        Ok(vec![prefix.tokens.clone(); n])
    }
    fn step(&self, batch: &mut Vec<Vec<u32>>, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() != batch.len() {
            return Err(Error::model(format!("{} tokens for {} rows", tokens.len(), batch.len())));
        }
        self.forwards.fetch_add(1, Ordering::Relaxed);
        self.row_steps.fetch_add(batch.len(), Ordering::Relaxed);
        self.max_rows.fetch_max(batch.len(), Ordering::Relaxed);
        if let Ok(mut l) = self.log.lock() {
            l.push(batch.len());
        }
        let mut out = Vec::with_capacity(batch.len() * self.vocab_size());
        for (row, &t) in batch.iter_mut().zip(tokens) {
            row.push(t);
            out.extend(self.logits(row)?);
        }
        Ok(out)
    }
    fn retain(&self, batch: &mut Vec<Vec<u32>>, keep: &[usize]) -> Result<()> {
        *batch = keep.iter().map(|&i| batch[i].clone()).collect();
        Ok(())
    }
    fn continuation_logprobs(&self, prefix: &ScriptedPrefix, continuations: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        continuations
            .iter()
            .map(|c| {
                let mut ctx = prefix.tokens.clone();
                let mut out = Vec::with_capacity(c.len());
                for &t in c {
                    let l = self.logits(&ctx)?;
                    out.push(crate::sample::log_softmax(&l)[t as usize] as f32);
                    ctx.push(t);
                }
                Ok(out)
            })
            .collect()
    }
    fn stop_tokens(&self) -> Vec<u32> {
        self.stop.clone()
    }
    fn fim_tokens(&self) -> Option<FimTokens> {
        self.fim
    }
}

/// A scripted masked denoiser: `logits(row)` gives `len × vocab` logits for one row.
/// Counts forwards (one per `denoise` call, whatever the batch).
pub struct ScriptedDenoiser {
    vocab: WordVocab,
    mask: u32,
    logits: Box<LogitsFn>,
    forwards: AtomicUsize,
    /// Every row passed to `denoise`, in order (to check the schedule).
    pub seen: Mutex<Vec<Vec<u32>>>,
}

impl std::fmt::Debug for ScriptedDenoiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedDenoiser").field("vocab", &self.vocab.words.len()).field("mask", &self.mask).finish()
    }
}

impl ScriptedDenoiser {
    /// A denoiser over `words` with mask word `mask` and logits `logits(row)` (`row.len() ×
    /// words.len()` values).
    pub fn new(words: &[&str], mask: &str, logits: impl Fn(&[u32]) -> Vec<f32> + Send + Sync + 'static) -> Self {
        let vocab = WordVocab::new(words);
        let mask = vocab.token_id(mask).unwrap_or(0);
        ScriptedDenoiser {
            vocab,
            mask,
            logits: Box::new(logits),
            forwards: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Forward passes so far.
    pub fn forwards(&self) -> usize {
        self.forwards.load(Ordering::Relaxed)
    }
}

impl Vocabulary for ScriptedDenoiser {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.vocab.encode(text)
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.vocab.decode(ids)
    }
    fn vocab_size(&self) -> usize {
        self.vocab.vocab_size()
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.token_id(token)
    }
}

impl MaskedDenoiser for ScriptedDenoiser {
    fn mask_id(&self) -> u32 {
        self.mask
    }
    fn denoise(&self, rows: &[Vec<u32>]) -> Result<Vec<f32>> {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.seen.lock() {
            s.extend(rows.iter().cloned());
        }
        let mut out = Vec::new();
        for r in rows {
            let l = (self.logits)(r);
            if l.len() != r.len() * self.vocab_size() {
                return Err(Error::model(format!("script gave {} logits for {} positions", l.len(), r.len())));
            }
            out.extend(l);
        }
        Ok(out)
    }
}

/// Logits that put `strength` on `token` and 0 elsewhere, over `vocab` entries.
pub fn peaked(vocab: usize, token: u32, strength: f32) -> Vec<f32> {
    let mut l = vec![0.0; vocab];
    l[token as usize] = strength;
    l
}

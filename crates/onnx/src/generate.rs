//! [`CausalLm`] as a decoder ([`metarag_core::model::CausalModel`]): a prompt is run once and
//! N rows are advanced together over it, one forward per step.
//!
//! Two ways to hold the rows' cache:
//! - **shared prefix** (when `decoder.onnx` sits beside the model, the default): the
//!   decoder graph takes the prompt's batch-1 cache as `prefix.{i}.key/value` and reads it
//!   for every row by broadcasting; `past`/`present` hold only the rows' own tokens. Nothing
//!   of the prompt is copied per row or per step.
//! - **copied** (any causal-LM graph): the prompt's cache is copied into N rows and the graph
//!   concatenates the whole cache with each new token, every step.
//!
//! Both give the same logits (tested to 2e-3 in `tests/generate.rs`).

use std::sync::Arc;

use ort::value::DynValue;

use metarag_core::model::{CausalModel, FimTokens, Vocabulary};

use crate::graph::{ForwardInputs, Graph};
use crate::kv;
use crate::lm::{CausalLm, KvCache};
use crate::math::log_sum_exp;
use crate::{Error, Result};

/// A computed prompt: its KV cache and the logits after its last token.
#[derive(Debug)]
pub struct LmPrefix {
    cache: Arc<KvCache>,
    logits: Vec<f32>,
}

impl LmPrefix {
    /// Number of prompt tokens.
    pub fn len(&self) -> usize {
        self.cache.len()
    }
    /// True for an empty prompt (never: prefill refuses it).
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// Rows decoded together: one KV cache of batch `rows` (with a shared prefix: the rows' own
/// tokens only, empty before the first step).
pub struct LmBatch {
    values: Vec<DynValue>,
    shared: Option<Arc<KvCache>>,
    rows: usize,
    past: usize,
    next_position: i64,
}

impl std::fmt::Debug for LmBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmBatch").field("rows", &self.rows).field("past", &self.past).finish()
    }
}

impl CausalLm {
    /// Copies the batch-1 cache into `n` rows.
    fn broadcast(&self, cache: &KvCache, n: usize) -> Result<Vec<DynValue>> {
        self.graph.map_cache(&cache.values, "forking the KV cache", |a| kv::broadcast_rows(a, n))
    }

    /// Whether forks use the shared-prefix decoder graph (default: yes, when `decoder.onnx`
    /// is beside the model). `false` copies the prompt's cache into every row instead (the
    /// path for graphs without a decoder; benchmarks and tests compare the two). Chosen when
    /// the model is built: a loaded model never changes its path.
    ///
    /// ```no_run
    /// use metarag_onnx::{CausalLm, LmConfig, RuntimeOptions};
    /// let copied = CausalLm::load(&RuntimeOptions::default(), LmConfig::default())?.with_shared_prefix(false);
    /// assert!(copied.shared_prefix_decoder().is_none());
    /// # Ok::<(), metarag_onnx::Error>(())
    /// ```
    pub fn with_shared_prefix(mut self, on: bool) -> Self {
        self.use_decoder = on;
        self
    }

    /// The shared-prefix decoder graph's path, when there is one and it is enabled.
    pub fn shared_prefix_decoder(&self) -> Option<&std::path::Path> {
        self.decoder_path.as_deref().filter(|_| self.use_decoder)
    }

    /// The shared-prefix graph, loaded (and its contract checked) on first use.
    fn decoder(&self) -> Result<Option<&Graph>> {
        let Some(path) = self.shared_prefix_decoder() else { return Ok(None) };
        if let Some(d) = self.decoder.get() {
            return Ok(Some(d));
        }
        let graph = Graph::shared_prefix(&self.opts, path, &self.graph)?;
        let _ = self.decoder.set(graph);
        Ok(self.decoder.get())
    }

    /// Logits for whole rows of tokens read after `prefix` by the shared-prefix graph (rows of
    /// equal length; positions continue the prompt's; nothing of the rows is kept): row-major
    /// `rows × len × vocab`. With a block-diffusion denoiser as that graph
    /// ([`crate::BlockDenoiser`]) a row's tokens see each other whole.
    pub fn prefix_rows(&self, prefix: &LmPrefix, rows: &[Vec<u32>]) -> Result<Vec<f32>> {
        let d = self.decoder()?.ok_or_else(|| {
            Error::Input(format!("{}: no shared-prefix graph beside the model", self.graph.path().display()))
        })?;
        let (n, t) = (rows.len(), rows.first().map_or(0, Vec::len));
        if n == 0 || t == 0 {
            return Ok(Vec::new());
        }
        if rows.iter().any(|r| r.len() != t) {
            let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
            return Err(Error::Input(format!("rows must be of equal length, got {lens:?}")));
        }
        let start = prefix.cache.next_position;
        self.check_fits(start as usize + t)?;
        let ids: Vec<i64> = rows.iter().flatten().map(|&x| i64::from(x)).collect();
        let positions: Vec<i64> = (0..n).flat_map(|_| (0..t as i64).map(move |j| start + j)).collect();
        let mut session = d.lock()?;
        let inputs =
            ForwardInputs { batch: n, ids, positions, prefix: Some(&prefix.cache.values), ..ForwardInputs::default() };
        let (logits, _) = d.forward(&mut session, inputs, |lg, _| lg.to_vec())?;
        Ok(logits)
    }

    /// Uses `path` as the shared-prefix graph (instead of a `decoder.onnx` beside the model).
    pub(crate) fn with_prefix_graph(mut self, path: std::path::PathBuf) -> Self {
        self.decoder_path = Some(path);
        self
    }

    fn check_fits(&self, len: usize) -> Result<()> {
        if len > self.config().max_position {
            return Err(Error::Input(format!(
                "{len} tokens exceed the model's position limit {} (LmConfig::max_position)",
                self.config().max_position
            )));
        }
        Ok(())
    }
}

impl Vocabulary for CausalLm {
    fn encode(&self, text: &str) -> metarag_core::Result<Vec<u32>> {
        Ok(CausalLm::encode(self, text)?)
    }
    fn decode(&self, ids: &[u32]) -> metarag_core::Result<String> {
        self.tokenizer()
            .decode(ids, true)
            .map_err(|e| metarag_core::Error::model(format!("decoding {} tokens: {e}", ids.len())))
    }
    fn vocab_size(&self) -> usize {
        self.tokenizer().get_vocab_size(true)
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer().token_to_id(token)
    }
}

impl CausalModel for CausalLm {
    type Prefix = LmPrefix;
    type Batch = LmBatch;

    fn prefill(&self, prompt: &[u32]) -> metarag_core::Result<LmPrefix> {
        if prompt.is_empty() {
            return Err(Error::Input("empty prompt".into()).into());
        }
        self.check_fits(prompt.len())?;
        let mut session = self.graph.lock()?;
        // Window by window so a long prompt never needs one huge forward; nothing slides out.
        let window = self.config().window.max(1);
        let mut cache: Option<KvCache> = None;
        let mut logits = Vec::new();
        let mut start = 0;
        while start < prompt.len() {
            let end = (start + window).min(prompt.len());
            let last = end == prompt.len();
            let piece = &prompt[start..end];
            let (l, next) = self.extend(&mut session, cache.take(), piece, piece.len() - 1, |lg| {
                if last { lg.scaled_row(lg.rows() - 1) } else { Vec::new() }
            })?;
            if last {
                logits = l;
            }
            cache = Some(next);
            start = end;
        }
        let cache = cache.ok_or_else(|| Error::Input("empty prompt".into()))?;
        Ok(LmPrefix { cache: Arc::new(cache), logits })
    }

    fn prefix_logits<'a>(&self, prefix: &'a LmPrefix) -> &'a [f32] {
        &prefix.logits
    }

    fn fork(&self, prefix: &LmPrefix, n: usize) -> metarag_core::Result<LmBatch> {
        if self.decoder()?.is_some() {
            return Ok(LmBatch {
                values: Vec::new(),
                shared: Some(Arc::clone(&prefix.cache)),
                rows: n,
                past: 0,
                next_position: prefix.cache.next_position,
            });
        }
        Ok(LmBatch {
            values: self.broadcast(&prefix.cache, n)?,
            shared: None,
            rows: n,
            past: prefix.cache.len(),
            next_position: prefix.cache.next_position,
        })
    }

    fn step(&self, batch: &mut LmBatch, tokens: &[u32]) -> metarag_core::Result<Vec<f32>> {
        self.check_ids(tokens).map_err(metarag_core::Error::model)?;
        let n = batch.rows;
        if tokens.len() != n {
            return Err(Error::Input(format!("{} tokens for a batch of {n} rows", tokens.len())).into());
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        self.check_fits(batch.next_position as usize + 1)?;
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let positions = vec![batch.next_position; n];
        let (logits, present) = match &batch.shared {
            Some(prefix) => {
                // loaded by the fork that made this batch
                let d =
                    self.decoder.get().ok_or_else(|| Error::Input("shared-prefix batch without a decoder".into()))?;
                let mut session = d.lock()?;
                let past = (batch.past > 0).then_some(batch.values.as_slice());
                let inputs = ForwardInputs {
                    batch: n,
                    ids,
                    positions,
                    prefix: Some(&prefix.values),
                    past,
                    ..ForwardInputs::default()
                };
                d.forward(&mut session, inputs, |lg, _| lg.to_vec())?
            }
            None => {
                let mut session = self.graph.lock()?;
                let inputs = ForwardInputs {
                    batch: n,
                    ids,
                    positions,
                    attention: Some(vec![1i64; n * (batch.past + 1)]),
                    past: Some(&batch.values),
                    ..ForwardInputs::default()
                };
                self.graph.forward(&mut session, inputs, |lg, _| lg.to_vec())?
            }
        };
        batch.values = present;
        batch.past += 1;
        batch.next_position += 1;
        Ok(logits)
    }

    fn retain(&self, batch: &mut LmBatch, keep: &[usize]) -> metarag_core::Result<()> {
        if keep.len() == batch.rows && keep.iter().enumerate().all(|(i, &k)| i == k) {
            return Ok(());
        }
        if let Some(&bad) = keep.iter().find(|&&i| i >= batch.rows) {
            return Err(Error::Input(format!("row {bad} of a batch of {}", batch.rows)).into());
        }
        batch.rows = keep.len();
        if batch.values.is_empty() {
            return Ok(()); // a shared-prefix batch before its first step holds nothing per row
        }
        batch.values = self.graph.map_cache(&batch.values, "selecting KV rows", |a| kv::select_rows(a, keep))?;
        Ok(())
    }

    fn continuation_logprobs(
        &self,
        prefix: &LmPrefix,
        continuations: &[Vec<u32>],
    ) -> metarag_core::Result<Vec<Vec<f32>>> {
        for c in continuations {
            self.check_ids(c).map_err(metarag_core::Error::model)?;
        }
        let first_lse = log_sum_exp(&prefix.logits);
        let first = |c: &[u32]| c.first().map(|&t| prefix.logits[t as usize] - first_lse);
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        let mut out: Vec<Vec<f32>> = continuations.iter().map(|c| first(c).into_iter().collect()).collect();
        if longest < 2 {
            return Ok(out);
        }
        // Feed every continuation but its last token, right-padded: with causal attention a
        // row's real tokens never see its padding, so one batch scores all of them.
        let n = continuations.len();
        let t = longest - 1;
        self.check_fits(prefix.cache.len() + t)?;
        let mut ids = vec![0i64; n * t];
        for (r, c) in continuations.iter().enumerate() {
            for (j, &tok) in c.iter().take(c.len().saturating_sub(1)).enumerate() {
                ids[r * t + j] = i64::from(tok);
            }
        }
        let start = prefix.cache.next_position;
        let positions: Vec<i64> = (0..n).flat_map(|_| start..start + t as i64).collect();
        let score = |lg: &[f32], vocab: usize| {
            continuations
                .iter()
                .enumerate()
                .map(|(r, c)| {
                    (1..c.len())
                        .map(|j| {
                            let row: &[f32] = &lg[(r * t + j - 1) * vocab..(r * t + j) * vocab];
                            row[c[j] as usize] - log_sum_exp(row)
                        })
                        .collect::<Vec<f32>>()
                })
                .collect::<Vec<_>>()
        };
        let (scores, _) = match self.decoder()? {
            Some(d) => {
                let mut session = d.lock()?;
                let inputs = ForwardInputs {
                    batch: n,
                    ids,
                    positions,
                    prefix: Some(&prefix.cache.values),
                    ..ForwardInputs::default()
                };
                d.forward(&mut session, inputs, score)?
            }
            None => {
                let past = self.broadcast(&prefix.cache, n)?;
                let mut session = self.graph.lock()?;
                let inputs = ForwardInputs {
                    batch: n,
                    ids,
                    positions,
                    attention: Some(vec![1i64; n * (prefix.cache.len() + t)]),
                    past: Some(&past),
                    ..ForwardInputs::default()
                };
                self.graph.forward(&mut session, inputs, score)?
            }
        };
        for (o, s) in out.iter_mut().zip(scores) {
            o.extend(s);
        }
        Ok(out)
    }

    fn stop_tokens(&self) -> Vec<u32> {
        ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| self.tokenizer().token_to_id(t)).collect()
    }

    fn fim_tokens(&self) -> Option<FimTokens> {
        self.fim()
    }
}

//! [`CausalLm`]: a causal language model over the ONNX graph contract of DESIGN.md
//! (`input_ids`, `attention_mask`, `position_ids`, `past_key_values.{i}.key/value` →
//! `logits`, `present.{i}.key/value`), with per-token log-probabilities, windowed scoring of
//! long documents through the KV cache, and prompt-prefix caching.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use metarag_core::pipeline::Precision;
use ort::session::Session;
use ort::value::DynValue;
use rayon::prelude::*;
use tokenizers::Tokenizer;

use crate::graph::{ForwardInputs, Graph, Logits};
use crate::kv;
use crate::runtime::RuntimeOptions;
use crate::{Error, Result};

/// Where the default causal LM lives inside the models directory.
pub const SMOLLM2_DIR: &str = "smollm2-135m-instruct";

/// The int8 scoring graph beside [`SMOLLM2_DIR`]'s fp32 `model.onnx` (SmoothQuant + dynamic int8
/// MatMuls, written by `onnx/setup.py` with `onnx/quantize.py`): same contract and tokenizer.
pub const INT8_FILE: &str = "model-int8.onnx";

/// Where the answer infiller lives inside the models directory: SmolLM2-135M-Instruct with the
/// project's fill-in-the-middle LoRA adapter (`onnx/adapters/infill-lora.npz`) merged in by
/// `onnx/setup.py`. Same graphs and tokenizer as [`SMOLLM2_DIR`], plus [`FIM_FILE`].
pub const INFILL_DIR: &str = "smollm2-135m-infill";

/// File beside a model that declares its fill-in-the-middle sentinels (token ids):
/// `{"prefix": 8, "suffix": 9, "middle": 10, "eot": 0}`.
pub const FIM_FILE: &str = "fim.json";

/// File name of the shared-prefix decoder graph, looked up beside the model file (see
/// [`CausalLm::shared_prefix_decoder`]).
pub const DECODER_FILE: &str = "decoder.onnx";

/// Window settings for scoring long token sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct LmConfig {
    /// Tokens fed per forward pass (default 256).
    pub window: usize,
    /// Most tokens kept in the KV cache; older ones slide out (default 512). Each token is
    /// conditioned on at least `max_context - window` tokens before it (or all of them).
    pub max_context: usize,
    /// When positions would pass this value, the kept window is re-encoded from position 0,
    /// so positions stay in the range the model was trained on (default 8192).
    pub max_position: usize,
    /// Tokens at the start of the cache that never slide out (attention sinks, as in
    /// StreamingLLM; default 4).
    pub sink_tokens: usize,
}

impl Default for LmConfig {
    fn default() -> Self {
        LmConfig { window: 256, max_context: 512, max_position: 8192, sink_tokens: 4 }
    }
}

impl LmConfig {
    fn check(&self) -> Result<()> {
        if self.window == 0
            || self.max_context < self.window + self.sink_tokens + 1
            || self.max_position < self.max_context
        {
            return Err(Error::Input(format!(
                "need 0 < window ({}), window + sink_tokens ({}) < max_context ({}) <= max_position ({})",
                self.window, self.sink_tokens, self.max_context, self.max_position
            )));
        }
        Ok(())
    }
}

/// A KV cache for one sequence: the `present` tensors of the last run (layer-major, key then
/// value), the tokens they encode, and the position the next token gets.
pub struct KvCache {
    pub(crate) values: Vec<DynValue>,
    pub(crate) tokens: Vec<u32>,
    pub(crate) next_position: i64,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("tokens", &self.tokens.len())
            .field("next_position", &self.next_position)
            .finish()
    }
}

impl KvCache {
    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// The cached tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

/// A causal LM session plus its tokenizer.
///
/// ```no_run
/// use metarag_onnx::{CausalLm, LmConfig, RuntimeOptions};
/// let lm = CausalLm::load(&RuntimeOptions::default(), LmConfig::default())?;
/// let ids = lm.encode("The cat sat on the mat.")?;
/// let nll = lm.score_tokens(&ids)?; // nll[i] = -log p(ids[i+1] | ids[..=i])
/// assert_eq!(nll.len(), ids.len() - 1);
/// # Ok::<(), metarag_onnx::Error>(())
/// ```
pub struct CausalLm {
    /// The causal graph (the scorer's and the copied-cache decoder's).
    pub(crate) graph: Graph,
    tokenizer_path: PathBuf,
    tokenizer: Tokenizer,
    config: LmConfig,
    /// The shared-prefix decoder graph (`decoder.onnx` beside the model), loaded on first use.
    pub(crate) decoder_path: Option<PathBuf>,
    pub(crate) decoder: OnceLock<Graph>,
    /// Whether forks use the shared-prefix graph (chosen when built: [`CausalLm::with_shared_prefix`]).
    pub(crate) use_decoder: bool,
    pub(crate) opts: RuntimeOptions,
    /// The FIM sentinels, for a model trained to fill in the middle ([`FIM_FILE`]).
    pub(crate) fim: Option<metarag_core::model::FimTokens>,
    /// Tokens in the tokenizer's vocabulary: every id given from outside is checked against
    /// it, and every logits row must be at least this wide.
    vocab: usize,
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm").field("graph", &self.graph).field("config", &self.config).finish()
    }
}

impl CausalLm {
    /// Loads SmolLM2-135M-Instruct from the models directory.
    pub fn load(opts: &RuntimeOptions, config: LmConfig) -> Result<Self> {
        Self::load_dir(opts, SMOLLM2_DIR, config)
    }

    /// Loads SmolLM2-135M-Instruct in `precision`: fp32 is [`CausalLm::load`], int8 reads
    /// [`INT8_FILE`] (for scoring: faster, boundaries close to fp32's, not the oracle's NLLs).
    pub fn load_precision(opts: &RuntimeOptions, config: LmConfig, precision: Precision) -> Result<Self> {
        match precision {
            Precision::Fp32 => Self::load(opts, config),
            Precision::Int8 => Self::load_graph(opts, SMOLLM2_DIR, INT8_FILE, config),
        }
    }

    /// Loads the answer infiller ([`INFILL_DIR`]): the base model with the trained FIM adapter
    /// merged in; its [`FIM_FILE`] must be there.
    pub fn load_infill(opts: &RuntimeOptions, config: LmConfig) -> Result<Self> {
        opts.model_file(&format!("{INFILL_DIR}/{FIM_FILE}"))?;
        Self::load_dir(opts, INFILL_DIR, config)
    }

    /// Loads `dir/model.onnx` with `dir/tokenizer.json` (and `dir/fim.json` when present) from
    /// the models directory.
    pub fn load_dir(opts: &RuntimeOptions, dir: &str, config: LmConfig) -> Result<Self> {
        Self::load_graph(opts, dir, "model.onnx", config)
    }

    /// Loads `dir/graph` with `dir/tokenizer.json` (and `dir/fim.json` when present).
    fn load_graph(opts: &RuntimeOptions, dir: &str, graph: &str, config: LmConfig) -> Result<Self> {
        let model = opts.model_file(&format!("{dir}/{graph}"))?;
        let tokenizer = opts.model_file(&format!("{dir}/tokenizer.json"))?;
        Self::from_files(opts, &model, &tokenizer, config)
    }

    /// The FIM sentinels, when the model declares them.
    pub fn fim(&self) -> Option<metarag_core::model::FimTokens> {
        self.fim
    }

    /// Loads any graph that follows the causal-LM contract, with its `tokenizer.json`.
    pub fn from_files(opts: &RuntimeOptions, model: &Path, tokenizer: &Path, config: LmConfig) -> Result<Self> {
        config.check()?;
        let tok = Tokenizer::from_file(tokenizer)
            .map_err(|e| Error::Tokenizer { path: tokenizer.to_path_buf(), detail: e.to_string() })?;
        let vocab = tok.get_vocab_size(true);
        let graph = Graph::causal(opts, model, vocab)?;
        let fim = read_fim(&model.with_file_name(FIM_FILE), vocab)?;
        Ok(CausalLm {
            graph,
            tokenizer_path: tokenizer.to_path_buf(),
            tokenizer: tok,
            config,
            decoder_path: Some(model.with_file_name(DECODER_FILE)).filter(|p| p.is_file()),
            decoder: OnceLock::new(),
            use_decoder: true,
            opts: opts.clone(),
            fim,
            vocab,
        })
    }

    /// Checks that every id is inside the vocabulary (ids from outside index logits rows).
    pub(crate) fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.vocab) {
            Some(id) => Err(Error::Input(format!("token id {id} is outside the vocabulary ({} tokens)", self.vocab))),
            None => Ok(()),
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The window settings.
    pub fn config(&self) -> &LmConfig {
        &self.config
    }

    /// Time spent inside ONNX Runtime's `run` and the number of token positions fed to it,
    /// since load (for benchmarks: everything else is overhead).
    pub fn model_time(&self) -> (Duration, u64) {
        let (t, n) = self.graph.run_time();
        let (dt, dn) = self.decoder.get().map_or((Duration::ZERO, 0), Graph::run_time);
        (t + dt, n + dn)
    }

    /// Number of transformer layers.
    pub fn layers(&self) -> usize {
        self.graph.layers()
    }

    /// Token ids of `text` (no BOS or other special token added; special-token text such as
    /// `<|im_start|>` is recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode_fast(text, false).map_err(|e| Error::Tokenizer {
            path: self.tokenizer_path.clone(),
            detail: format!("encoding {} bytes: {e}", text.len()),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Byte offsets of the tokens of `text`.
    pub fn encode_offsets(&self, text: &str) -> Result<Vec<Range<usize>>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| Error::Tokenizer {
            path: self.tokenizer_path.clone(),
            detail: format!("encoding {} bytes: {e}", text.len()),
        })?;
        Ok(enc.get_offsets().iter().map(|&(a, b)| a..b).collect())
    }

    /// Id of a token given by its exact text (e.g. `"<|im_end|>"` or `"1"`).
    pub fn token_id(&self, token: &str) -> Result<u32> {
        self.tokenizer.token_to_id(token).ok_or_else(|| Error::Tokenizer {
            path: self.tokenizer_path.clone(),
            detail: format!("no token `{token}` in the vocabulary"),
        })
    }

    /// Runs the graph in `n` sessions of `threads / n` intra-op threads each (at least one),
    /// for callers that score `n` documents at once: on 2 cores, margin judging of two files
    /// finishes 1.09x sooner than on one session of two threads (PPL scoring, with its long
    /// windows, does not gain: 1.10x slower on the example corpus). Costs one more copy
    /// of the weights per session (~0.6 GB for SmolLM2-135M in float32). Results are the same.
    ///
    /// ```no_run
    /// use metarag_onnx::{CausalLm, LmConfig, RuntimeOptions};
    /// let lm = CausalLm::load(&RuntimeOptions::default(), LmConfig::default())?.with_sessions(2)?;
    /// # Ok::<(), metarag_onnx::Error>(())
    /// ```
    pub fn with_sessions(mut self, n: usize) -> Result<Self> {
        self.graph = self.graph.with_sessions(&self.opts, n)?;
        Ok(self)
    }

    /// How many sessions run the graph.
    pub fn sessions(&self) -> usize {
        self.graph.sessions()
    }

    /// Runs `tokens` after `cache` (or from scratch) and returns the new cache; `f` gets the
    /// logits rows from `logits_from` on (all of them when the graph has no `logits_from`
    /// input: callers then read the last rows).
    pub(crate) fn extend<R>(
        &self,
        session: &mut Session,
        cache: Option<KvCache>,
        tokens: &[u32],
        logits_from: usize,
        f: impl FnOnce(Logits<'_>) -> R,
    ) -> Result<(R, KvCache)> {
        let (past_len, start_pos) = cache.as_ref().map_or((0, 0), |c| (c.tokens.len(), c.next_position));
        let t = tokens.len();
        let ids: Vec<i64> = tokens.iter().map(|&x| i64::from(x)).collect();
        let positions: Vec<i64> = (start_pos..start_pos + t as i64).collect();
        let inputs = ForwardInputs {
            batch: 1,
            ids,
            positions,
            attention: Some(vec![1i64; past_len + t]),
            past: cache.as_ref().map(|c| c.values.as_slice()),
            logits_from,
            ..ForwardInputs::default()
        };
        let (r, present) = self.graph.forward_logits(session, inputs, f)?;
        let mut kept = cache.map(|c| c.tokens).unwrap_or_default();
        kept.extend_from_slice(tokens);
        Ok((r, KvCache { values: present, tokens: kept, next_position: start_pos + t as i64 }))
    }

    /// Makes room for `incoming` more tokens: slides old tokens out of the cache beyond
    /// `max_context`, and re-encodes the kept tokens from position 0 when positions would
    /// pass `max_position`.
    fn make_room(&self, session: &mut Session, cache: KvCache, incoming: usize) -> Result<Option<KvCache>> {
        let c = &self.config;
        let mut cache = cache;
        if let Some(keep) = kv::slide(cache.tokens.len(), incoming, c.sink_tokens, c.max_context) {
            let values =
                self.graph.map_cache(&cache.values, "sliding the KV cache", |a| kv::keep_positions(a, &keep))?;
            let tokens = keep.iter().flat_map(|r| cache.tokens[r.clone()].iter().copied()).collect();
            cache = KvCache { values, tokens, next_position: cache.next_position };
        }
        if kv::must_rebase(cache.next_position, incoming, c.max_position) {
            let tokens = std::mem::take(&mut cache.tokens);
            if tokens.is_empty() {
                return Ok(None);
            }
            let ((), fresh) = self.extend(session, None, &tokens, tokens.len() - 1, |_| ())?;
            return Ok(Some(fresh));
        }
        Ok(Some(cache))
    }

    /// Per-token negative log-likelihoods (nats) of a token sequence of any length:
    /// `nll[i] = -log p(tokens[i+1] | tokens[..=i])`, scored `window` tokens per forward with
    /// the KV cache carried forward (see [`LmConfig`]).
    pub fn score_tokens(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.check_ids(tokens)?;
        let n = tokens.len();
        let mut nll = vec![f32::NAN; n.saturating_sub(1)];
        if n < 2 {
            return Ok(nll);
        }
        let mut session = self.graph.lock()?;
        let mut cache: Option<KvCache> = None;
        let mut start = 0;
        // The last token predicts nothing, so inputs are tokens[..n-1].
        while start < n - 1 {
            let end = (start + self.config.window).min(n - 1);
            if let Some(c) = cache.take() {
                cache = self.make_room(&mut session, c, end - start)?;
            }
            let targets = &tokens[start + 1..=end];
            let out = &mut nll[start..end];
            let ((), next) = self.extend(&mut session, cache.take(), &tokens[start..end], 0, |logits| {
                out.par_iter_mut().zip(targets.par_iter()).enumerate().for_each(|(r, (o, &tgt))| {
                    *o = -logits.log_prob(r, tgt);
                });
            })?;
            cache = Some(next);
            start = end;
        }
        Ok(nll)
    }

    /// Log-probabilities of `tokens[1..]` for several sequences at once, in one batched
    /// forward (right padding; each row is conditioned only on its own tokens).
    pub fn token_logprobs(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        for s in batch {
            self.check_ids(s)?;
        }
        let b = batch.len();
        let t = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if b == 0 || t < 2 {
            return Ok(batch.iter().map(|s| vec![0.0; s.len().saturating_sub(1)]).collect());
        }
        if t > self.config.max_position {
            return Err(Error::Input(format!(
                "a sequence of {t} tokens is longer than max_position {}; use score_tokens",
                self.config.max_position
            )));
        }
        let mut ids = vec![0i64; b * t];
        let mut attention = vec![0i64; b * t];
        let mut positions = vec![0i64; b * t];
        for (r, s) in batch.iter().enumerate() {
            for (j, &tok) in s.iter().enumerate() {
                ids[r * t + j] = i64::from(tok);
                attention[r * t + j] = 1;
                positions[r * t + j] = j as i64;
            }
        }
        let mut session = self.graph.lock()?;
        let (out, _) = self.graph.forward_logits(
            &mut session,
            ForwardInputs { batch: b, ids, positions, attention: Some(attention), ..ForwardInputs::default() },
            |logits| {
                batch
                    .par_iter()
                    .enumerate()
                    .map(|(r, s)| {
                        (0..s.len().saturating_sub(1))
                            .map(|j| logits.log_prob(r * t + j, s[j + 1]))
                            .collect::<Vec<f32>>()
                    })
                    .collect::<Vec<_>>()
            },
        )?;
        Ok(out)
    }

    /// Log-probabilities of `candidates` as the token following `prompt`, reusing `cache`:
    /// the longest common prefix of the cached tokens and `prompt` is not recomputed. The
    /// cache is updated to hold `prompt`.
    pub fn next_token_logprobs(
        &self,
        prompt: &[u32],
        cache: &mut Option<KvCache>,
        candidates: &[u32],
    ) -> Result<Vec<f32>> {
        if prompt.is_empty() {
            return Err(Error::Input("empty prompt".into()));
        }
        self.check_ids(prompt)?;
        self.check_ids(candidates)?;
        if prompt.len() > self.config.max_position {
            return Err(Error::Input(format!(
                "prompt of {} tokens exceeds max_position {}",
                prompt.len(),
                self.config.max_position
            )));
        }
        let mut session = self.graph.lock()?;
        let reuse = match cache.take() {
            Some(c) => {
                let common = c.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
                // Always recompute at least the last prompt token to get its logits.
                let common = common.min(prompt.len() - 1);
                if common == 0 {
                    None
                } else if common == c.tokens.len() {
                    Some(c)
                } else {
                    Some(KvCache {
                        values: self.graph.map_cache(&c.values, "reusing a prompt's KV cache", |a| {
                            kv::keep_positions(a, std::slice::from_ref(&(0..common)))
                        })?,
                        tokens: c.tokens[..common].to_vec(),
                        next_position: common as i64,
                    })
                }
            }
            None => None,
        };
        let done = reuse.as_ref().map_or(0, |c| c.tokens.len());
        let fed = prompt.len() - done;
        let (lps, next) = self.extend(&mut session, reuse, &prompt[done..], fed - 1, |logits| {
            logits.log_probs(logits.rows() - 1, candidates)
        })?;
        *cache = Some(next);
        Ok(lps)
    }
}

/// PPL chunking's scorer: each piece is tokenized on its own, the token sequences are
/// concatenated and scored in one pass ([`CausalLm::score_tokens`]), and each piece gets the
/// mean NLL of its tokens.
impl metarag_core::model::SentenceScorer for CausalLm {
    fn score_sentences(&self, pieces: &[&str]) -> metarag_core::Result<Vec<f32>> {
        let mut tokens = Vec::new();
        let mut bounds = Vec::with_capacity(pieces.len());
        for p in pieces {
            let start = tokens.len();
            tokens.extend(self.encode(p)?);
            bounds.push(start..tokens.len());
        }
        let nll = self.score_tokens(&tokens)?;
        Ok(bounds
            .into_iter()
            .map(|r| {
                // Token k is predicted by nll[k-1]; token 0 has no prediction.
                let scored: Vec<f32> = r.filter(|&k| k > 0).map(|k| nll[k - 1]).collect();
                if scored.is_empty() { f32::NAN } else { scored.iter().sum::<f32>() / scored.len() as f32 }
            })
            .collect())
    }
}

/// Token byte offsets from the LM's tokenizer (for fixed token windows and token sizing).
impl metarag_core::model::TokenOffsets for CausalLm {
    fn token_offsets(&self, text: &str) -> metarag_core::Result<Vec<Range<usize>>> {
        Ok(self.encode_offsets(text)?)
    }
}

/// The sentinels declared in `path` (None when the file does not exist).
fn read_fim(path: &Path, vocab: usize) -> Result<Option<metarag_core::model::FimTokens>> {
    #[derive(serde::Deserialize)]
    struct Fim {
        prefix: u32,
        suffix: u32,
        middle: u32,
    }
    if !path.is_file() {
        return Ok(None);
    }
    let bad = |detail: String| Error::Input(format!("{}: {detail}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let f: Fim = serde_json::from_str(&text).map_err(|e| bad(format!("not a FIM sentinel file: {e}")))?;
    for (name, id) in [("prefix", f.prefix), ("suffix", f.suffix), ("middle", f.middle)] {
        if id as usize >= vocab {
            return Err(bad(format!("{name} token {id} is outside the vocabulary ({vocab} tokens)")));
        }
    }
    Ok(Some(metarag_core::model::FimTokens { prefix: f.prefix, suffix: f.suffix, middle: f.middle }))
}

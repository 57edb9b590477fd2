//! The graph layer of the causal LM: ONNX sessions, the KV tensor names of the contract, and
//! one [`Graph::forward`]. [`crate::CausalLm`] (the scorer) and its decoder paths
//! ([`crate::generate`]) are built on it; nothing above this layer names a tensor.
//!
//! Two graphs follow the contract of DESIGN.md:
//! - the **causal** graph: `input_ids`, `attention_mask`, `position_ids`,
//!   `past_key_values.{i}.key/value` → `logits`, `present.{i}.key/value`;
//! - the **shared-prefix** graph (`decoder.onnx`, and the masked model's block denoiser): no
//!   attention mask; the prompt's batch-1 cache comes in as `prefix.{i}.key/value` and is read
//!   by every row, `past`/`present` hold only the rows' own tokens.
//!
//! Either may take an optional `logits_from` input (logits only from that position on), and
//! may have an optional `logit_scale` output `[batch, rows]`: each logits row is then to be
//! multiplied by its scale (the int8 scoring graph leaves this to the reader, who folds it
//! into the log-sum-exp it computes anyway: see [`Logits`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ndarray::{Array4, ArrayView4, Ix4};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use rayon::prelude::*;

use crate::math::log_sum_exp_scaled;
use crate::runtime::{RuntimeOptions, SessionPool, check_names};
use crate::{Error, Result};

/// Name of the optional per-row logits scale output.
const LOGIT_SCALE: &str = "logit_scale";

/// The logits of one forward pass, `[batch, rows, vocab]` row-major, still inside ONNX
/// Runtime's buffer: `scale(r) · row(r)` are row `r`'s logits.
#[derive(Clone, Copy)]
pub(crate) struct Logits<'a> {
    data: &'a [f32],
    /// Width of a row.
    pub vocab: usize,
    scale: Option<&'a [f32]>,
}

impl<'a> Logits<'a> {
    /// Rows, over the batch.
    pub(crate) fn rows(&self) -> usize {
        self.data.len() / self.vocab.max(1)
    }

    /// Row `r` as the graph wrote it (multiply by [`Logits::scale`] for the logits).
    pub(crate) fn row(&self, r: usize) -> &'a [f32] {
        &self.data[r * self.vocab..(r + 1) * self.vocab]
    }

    /// Row `r`'s scale (1 when the graph has no `logit_scale` output).
    pub(crate) fn scale(&self, r: usize) -> f32 {
        self.scale.map_or(1.0, |s| s[r])
    }

    /// `log p(token)` under row `r`.
    pub(crate) fn log_prob(&self, r: usize, token: u32) -> f32 {
        self.log_probs(r, std::slice::from_ref(&token))[0]
    }

    /// `log p(token)` of each of `tokens` under row `r` (one log-sum-exp for all).
    pub(crate) fn log_probs(&self, r: usize, tokens: &[u32]) -> Vec<f32> {
        let (row, s) = (self.row(r), self.scale(r));
        let lse = log_sum_exp_scaled(row, s);
        tokens.iter().map(|&t| s * row[t as usize] - lse).collect()
    }

    /// Row `r`'s logits, scaled, as an owned vector.
    pub(crate) fn scaled_row(&self, r: usize) -> Vec<f32> {
        let s = self.scale(r);
        if s == 1.0 { self.row(r).to_vec() } else { self.row(r).iter().map(|&x| x * s).collect() }
    }
}

/// Contract name of the causal graph (for errors).
pub(crate) const CAUSAL: &str = "causal-LM";
/// Contract name of the shared-prefix graph (for errors).
pub(crate) const SHARED_PREFIX: &str =
    "shared-prefix decoder (input_ids, position_ids, prefix.*, past_key_values.* -> logits, present.*)";

/// The inputs of one forward pass: `batch` rows of `t` tokens each (`ids.len() = batch × t`).
#[derive(Default)]
pub(crate) struct ForwardInputs<'a> {
    /// Rows.
    pub batch: usize,
    /// Token ids, row-major.
    pub ids: Vec<i64>,
    /// Position of each token, row-major.
    pub positions: Vec<i64>,
    /// Causal graph: the attention mask over past and new tokens, row-major.
    pub attention: Option<Vec<i64>>,
    /// Shared-prefix graph: the prompt's batch-1 cache.
    pub prefix: Option<&'a [DynValue]>,
    /// The rows' cache so far (`None`: an empty past).
    pub past: Option<&'a [DynValue]>,
    /// Logits only from this position of each row on (0: all; ignored by graphs without the
    /// optional `logits_from` input, which return all rows).
    pub logits_from: usize,
}

/// One ONNX graph of the causal-LM family, with its sessions and tensor names.
pub(crate) struct Graph {
    path: PathBuf,
    contract: &'static str,
    /// One session by default; [`Graph::with_sessions`] makes more, so that documents scored
    /// on several threads run side by side instead of queueing on one.
    sessions: SessionPool,
    past_names: Vec<String>,
    present_names: Vec<String>,
    prefix_names: Vec<String>,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    has_logits_from: bool,
    has_logit_scale: bool,
    /// The narrowest logits row accepted (the tokenizer's vocabulary: token ids from outside
    /// index these rows).
    min_vocab: usize,
    run_nanos: AtomicU64,
    run_tokens: AtomicU64,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("path", &self.path)
            .field("layers", &self.layers)
            .field("kv_heads", &self.kv_heads)
            .field("head_dim", &self.head_dim)
            .finish()
    }
}

impl Graph {
    /// Opens a causal graph and checks its contract; logits rows must be at least `min_vocab`
    /// wide.
    pub(crate) fn causal(opts: &RuntimeOptions, path: &Path, min_vocab: usize) -> Result<Self> {
        let session = opts.session(path)?;
        check_names(
            &session,
            path,
            CAUSAL,
            &["input_ids", "attention_mask", "position_ids", "past_key_values.0.key"],
            &["logits", "present.0.key"],
        )?;
        let layers = (0..)
            .take_while(|i| session.inputs().iter().any(|o| o.name() == format!("past_key_values.{i}.key")))
            .count();
        let past0 = session
            .inputs()
            .iter()
            .find(|o| o.name() == "past_key_values.0.key")
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.to_vec()));
        let (kv_heads, head_dim) = match past0.as_deref() {
            Some([_, h, _, d]) if *h > 0 && *d > 0 => (*h as usize, *d as usize),
            other => {
                return Err(Error::Contract {
                    model: path.to_path_buf(),
                    contract: CAUSAL,
                    detail: format!(
                        "past_key_values.0.key must be [batch, kv_heads, past, head_dim] with fixed kv_heads and head_dim, got {other:?}"
                    ),
                });
            }
        };
        let name = |kind: &str| -> Vec<String> {
            (0..layers).flat_map(|i| ["key", "value"].map(|kv| format!("{kind}.{i}.{kv}"))).collect()
        };
        let (past_names, present_names, prefix_names) = (name("past_key_values"), name("present"), name("prefix"));
        let ins: Vec<&str> = past_names.iter().map(String::as_str).collect();
        let outs: Vec<&str> = present_names.iter().map(String::as_str).collect();
        check_names(&session, path, CAUSAL, &ins, &outs)?;
        Ok(Graph {
            path: path.to_path_buf(),
            contract: CAUSAL,
            has_logits_from: session.inputs().iter().any(|o| o.name() == "logits_from"),
            has_logit_scale: session.outputs().iter().any(|o| o.name() == LOGIT_SCALE),
            sessions: SessionPool::new(path, session),
            past_names,
            present_names,
            prefix_names,
            layers,
            kv_heads,
            head_dim,
            min_vocab,
            run_nanos: AtomicU64::new(0),
            run_tokens: AtomicU64::new(0),
        })
    }

    /// Opens the shared-prefix graph at `path` for the causal graph `causal` (same layers and
    /// cache shape) and checks its contract.
    pub(crate) fn shared_prefix(opts: &RuntimeOptions, path: &Path, causal: &Graph) -> Result<Self> {
        let session = opts.session(path)?;
        let mut ins: Vec<&str> = vec!["input_ids", "position_ids"];
        ins.extend(causal.prefix_names.iter().map(String::as_str));
        ins.extend(causal.past_names.iter().map(String::as_str));
        let mut outs: Vec<&str> = vec!["logits"];
        outs.extend(causal.present_names.iter().map(String::as_str));
        check_names(&session, path, SHARED_PREFIX, &ins, &outs)?;
        Ok(Graph {
            path: path.to_path_buf(),
            contract: SHARED_PREFIX,
            has_logits_from: session.inputs().iter().any(|o| o.name() == "logits_from"),
            has_logit_scale: session.outputs().iter().any(|o| o.name() == LOGIT_SCALE),
            sessions: SessionPool::new(path, session),
            past_names: causal.past_names.clone(),
            present_names: causal.present_names.clone(),
            prefix_names: causal.prefix_names.clone(),
            layers: causal.layers,
            kv_heads: causal.kv_heads,
            head_dim: causal.head_dim,
            min_vocab: causal.min_vocab,
            run_nanos: AtomicU64::new(0),
            run_tokens: AtomicU64::new(0),
        })
    }

    /// Runs the graph in `n` sessions of `threads / n` intra-op threads each (at least one).
    pub(crate) fn with_sessions(mut self, opts: &RuntimeOptions, n: usize) -> Result<Self> {
        if n <= 1 {
            return Ok(self);
        }
        let opts = opts.clone().with_threads(opts.intra_threads / n);
        self.sessions = self.sessions.resized(n, || opts.session(&self.path))?;
        Ok(self)
    }

    /// Sessions running this graph.
    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The graph file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Transformer layers.
    pub(crate) fn layers(&self) -> usize {
        self.layers
    }

    /// Time inside ONNX Runtime's `run` and token positions fed, since load.
    pub(crate) fn run_time(&self) -> (Duration, u64) {
        (Duration::from_nanos(self.run_nanos.load(Ordering::Relaxed)), self.run_tokens.load(Ordering::Relaxed))
    }

    /// An ONNX Runtime error of this graph, with what was being done.
    pub(crate) fn ort_err(&self, context: &'static str) -> impl Fn(ort::Error) -> Error + '_ {
        move |e| Error::Ort { model: self.path.clone(), context, detail: e.to_string() }
    }

    fn contract_err(&self, detail: String) -> Error {
        Error::Contract { model: self.path.clone(), contract: self.contract, detail }
    }

    /// A free session, or (all busy) the next one in turn, waited for.
    pub(crate) fn lock(&self) -> Result<std::sync::MutexGuard<'_, Session>> {
        self.sessions.lock()
    }

    /// One forward pass on `session` (one of this graph's, from [`Graph::lock`]). `f` sees the
    /// logits `[batch, t - logits_from, vocab]` (see [`ForwardInputs::logits_from`]) while they
    /// are still inside ONNX Runtime's buffer, with the row width, already scaled by
    /// `logit_scale` when the graph has it; the `present` tensors are returned.
    pub(crate) fn forward<R>(
        &self,
        session: &mut Session,
        inputs: ForwardInputs<'_>,
        f: impl FnOnce(&[f32], usize) -> R,
    ) -> Result<(R, Vec<DynValue>)> {
        self.forward_scaled(session, inputs, true, |l| f(l.data, l.vocab))
    }

    /// [`Graph::forward`] with the logits as [`Logits`], the row scales (if any) not applied:
    /// for readers that only need log-probabilities.
    pub(crate) fn forward_logits<R>(
        &self,
        session: &mut Session,
        inputs: ForwardInputs<'_>,
        f: impl FnOnce(Logits<'_>) -> R,
    ) -> Result<(R, Vec<DynValue>)> {
        self.forward_scaled(session, inputs, false, f)
    }

    fn forward_scaled<R>(
        &self,
        session: &mut Session,
        inputs: ForwardInputs<'_>,
        apply_scale: bool,
        f: impl FnOnce(Logits<'_>) -> R,
    ) -> Result<(R, Vec<DynValue>)> {
        let ForwardInputs { batch, ids, positions, attention, prefix, past, logits_from } = inputs;
        let t = ids.len() / batch.max(1);
        let err = self.ort_err("forward pass");
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(4 + 4 * self.past_names.len());
        feed.push(("input_ids".into(), Tensor::from_array(([batch, t], ids)).map_err(&err)?.into()));
        if let Some(attention) = attention {
            let total = attention.len() / batch.max(1);
            feed.push(("attention_mask".into(), Tensor::from_array(([batch, total], attention)).map_err(&err)?.into()));
        }
        feed.push(("position_ids".into(), Tensor::from_array(([batch, t], positions)).map_err(&err)?.into()));
        if let Some(values) = prefix {
            for (name, v) in self.prefix_names.iter().zip(values) {
                feed.push((name.as_str().into(), v.into()));
            }
        }
        match past {
            Some(values) => {
                for (name, v) in self.past_names.iter().zip(values) {
                    feed.push((name.as_str().into(), v.into()));
                }
            }
            None => {
                for name in &self.past_names {
                    let empty =
                        Tensor::<f32>::from_array(([batch, self.kv_heads, 0, self.head_dim], Vec::<f32>::new()))
                            .map_err(&err)?;
                    feed.push((name.as_str().into(), empty.into()));
                }
            }
        }
        let logits_from = if self.has_logits_from { logits_from.min(t.saturating_sub(1)) } else { 0 };
        if logits_from > 0 {
            feed.push((
                "logits_from".into(),
                Tensor::from_array(([1], vec![logits_from as i64])).map_err(&err)?.into(),
            ));
        }
        let started = Instant::now();
        let mut outputs = session.run(feed).map_err(&err)?;
        self.run_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.run_tokens.fetch_add((batch * t) as u64, Ordering::Relaxed);
        let rows = t - logits_from;
        let mut scale = if self.has_logit_scale {
            let (_, s) = outputs
                .get(LOGIT_SCALE)
                .ok_or_else(|| self.contract_err(format!("no `{LOGIT_SCALE}` output")))?
                .try_extract_tensor::<f32>()
                .map_err(&err)?;
            if s.len() != batch * rows {
                return Err(self.contract_err(format!(
                    "`{LOGIT_SCALE}` has {} values, expected one per logits row ({batch} × {rows})",
                    s.len()
                )));
            }
            // The log-sum-exp fold needs scale > 0 (max(s·x) = s·max(x)).
            if let Some(bad) = s.iter().find(|&&x| !(x > 0.0 && x.is_finite())) {
                return Err(self.contract_err(format!("`{LOGIT_SCALE}` holds {bad}, expected positive finite scales")));
            }
            Some(s.to_vec())
        } else {
            None
        };
        let (shape, data) = outputs
            .get_mut("logits")
            .ok_or_else(|| self.contract_err("no `logits` output".into()))?
            .try_extract_tensor_mut::<f32>()
            .map_err(&err)?;
        let vocab = shape.last().copied().unwrap_or(0) as usize;
        if vocab < self.min_vocab || data.len() != batch * rows * vocab {
            return Err(self.contract_err(format!(
                "logits shape {shape:?}, expected [{batch}, {rows}, vocab ≥ {}] (the tokenizer's)",
                self.min_vocab
            )));
        }
        if apply_scale && let Some(s) = scale.take() {
            data.par_chunks_mut(vocab).zip(s.par_iter()).for_each(|(row, &k)| row.iter_mut().for_each(|x| *x *= k));
        }
        let r = f(Logits { data, vocab, scale: scale.as_deref() });
        let mut present = Vec::with_capacity(self.present_names.len());
        for name in &self.present_names {
            present
                .push(outputs.remove(name.as_str()).ok_or_else(|| self.contract_err(format!("no `{name}` output")))?);
        }
        Ok((r, present))
    }

    /// Applies `f` to every tensor of a cache, seen as a 4-D array
    /// `[batch, kv_heads, positions, head_dim]` (see [`crate::kv`]), and returns the results as
    /// tensors; `context` names the operation in errors.
    pub(crate) fn map_cache(
        &self,
        values: &[DynValue],
        context: &'static str,
        f: impl Fn(ArrayView4<'_, f32>) -> std::result::Result<Array4<f32>, String>,
    ) -> Result<Vec<DynValue>> {
        let err = self.ort_err(context);
        values
            .iter()
            .map(|v| {
                let a = v.try_extract_array::<f32>().map_err(&err)?;
                let a = a
                    .into_dimensionality::<Ix4>()
                    .map_err(|e| self.contract_err(format!("{context}: present tensor is not 4-D: {e}")))?;
                let out = f(a).map_err(|detail| Error::Input(format!("{context}: {detail}")))?;
                Ok(Tensor::from_array(out).map_err(&err)?.into_dyn())
            })
            .collect()
    }
}

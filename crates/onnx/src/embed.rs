//! [`Embedder`]: a MiniLM-style sentence embedder (BERT graph: `input_ids`, `attention_mask`,
//! `token_type_ids` → `last_hidden_state`), with masked mean pooling and L2 normalisation.

use std::path::{Path, PathBuf};

use ort::value::Tensor;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use metarag_core::pipeline::Precision;

use rayon::prelude::*;

use crate::runtime::{RuntimeOptions, SessionPool, check_names};
use crate::{Error, Result};

const CONTRACT: &str = "sentence-embedder";

/// Where the default embedder lives inside the models directory.
pub const MINILM_DIR: &str = "all-minilm-l6-v2-int8";

/// The graph [`Embedder::load`] runs: the pinned `model.onnx` with each layer's attention as
/// one fused op (`onnx/embedder_graphs.py`, written by set-up): the same vectors (cosine 1 − 1e-12),
/// 1.1–1.5x faster.
pub const EMBEDDER_FUSED_FILE: &str = "model-fused.onnx";

/// The int8 build of [`EMBEDDER_FUSED_FILE`] (SmoothQuant + dynamic int8 MatMuls) that
/// [`Embedder::load_precision`] loads for [`Precision::Int8`]: for semantic chunking, never for
/// an index's vectors.
pub const EMBEDDER_INT8_FILE: &str = "model-int8.onnx";

/// Sentence embedder sessions plus their tokenizer.
///
/// ```no_run
/// use metarag_onnx::{Embedder, RuntimeOptions};
/// let e = Embedder::load(&RuntimeOptions::default())?;
/// let v = e.embed_batch(&["A man is playing a guitar."])?;
/// assert_eq!(v[0].len(), e.dims());
/// # Ok::<(), metarag_onnx::Error>(())
/// ```
pub struct Embedder {
    model: PathBuf,
    tokenizer_path: PathBuf,
    /// One session, or several of one thread each that take a call's batches as they are
    /// free ([`Embedder::with_sessions`]).
    sessions: SessionPool,
    opts: RuntimeOptions,
    tokenizer: Tokenizer,
    dims: usize,
    max_tokens: usize,
}

/// Most tokens (texts × the longest, estimated) in one embedding run. Smaller runs stay in
/// cache: on SQuAD sentences and chunk-sized texts, runs of ≤ 512 tokens were 1.1–1.3x faster
/// than runs of 2,048 (AVX-512 Xeon, 2 threads).
pub const TOKENS_PER_RUN: usize = 512;

/// Most texts in one embedding run.
pub const BATCH: usize = 16;

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("model", &self.model).field("dims", &self.dims).finish()
    }
}

impl Embedder {
    /// Loads all-MiniLM-L6-v2 ([`EMBEDDER_FUSED_FILE`]) from the models directory.
    pub fn load(opts: &RuntimeOptions) -> Result<Self> {
        Self::load_precision(opts, Precision::Fp32)
    }

    /// Loads all-MiniLM-L6-v2 at `precision`: [`EMBEDDER_FUSED_FILE`] (fp32 arithmetic; what indexes are
    /// embedded with) or [`EMBEDDER_INT8_FILE`] (faster; vectors within cosine ~0.998 of fp32: semantic
    /// chunking only).
    pub fn load_precision(opts: &RuntimeOptions, precision: Precision) -> Result<Self> {
        let file = match precision {
            Precision::Fp32 => EMBEDDER_FUSED_FILE,
            Precision::Int8 => EMBEDDER_INT8_FILE,
        };
        let model = opts.model_file(&format!("{MINILM_DIR}/{file}"))?;
        let tokenizer = opts.model_file(&format!("{MINILM_DIR}/tokenizer.json"))?;
        Self::from_files(opts, &model, &tokenizer, 256)
    }

    /// Loads any graph that follows the embedder contract; inputs are truncated to
    /// `max_tokens` and padded to the longest in each batch.
    pub fn from_files(opts: &RuntimeOptions, model: &Path, tokenizer: &Path, max_tokens: usize) -> Result<Self> {
        let mut tok = Tokenizer::from_file(tokenizer)
            .map_err(|e| Error::Tokenizer { path: tokenizer.to_path_buf(), detail: e.to_string() })?;
        let pad_id = tok.get_padding().map_or(0, |p| p.pad_id);
        let pad_token = tok.get_padding().map_or_else(|| "[PAD]".to_string(), |p| p.pad_token.clone());
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        tok.with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| Error::Tokenizer { path: tokenizer.to_path_buf(), detail: e.to_string() })?;
        let session = opts.session_for_varying_shapes(model)?;
        check_names(&session, model, CONTRACT, &["input_ids", "attention_mask"], &["last_hidden_state"])?;
        let dims = session
            .outputs()
            .iter()
            .find(|o| o.name() == "last_hidden_state")
            .and_then(|o| o.dtype().tensor_shape().and_then(|s| s.last().copied()))
            .filter(|&d| d > 0)
            .ok_or_else(|| Error::Contract {
                model: model.to_path_buf(),
                contract: CONTRACT,
                detail: "last_hidden_state must have a fixed hidden size".into(),
            })? as usize;
        Ok(Embedder {
            model: model.to_path_buf(),
            tokenizer_path: tokenizer.to_path_buf(),
            sessions: SessionPool::new(model, session),
            opts: opts.clone(),
            tokenizer: tok,
            dims,
            max_tokens: max_tokens.max(1),
        })
    }

    /// Vector size (384 for MiniLM-L6).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// This embedder with `n` sessions of one intra-op thread each (at most the threads it was
    /// loaded with) instead of one session on all of them: a call's batches are taken by the
    /// sessions in turn, in parallel. Small batches (sentences) parallelise poorly inside one
    /// run; two one-thread sessions embedded SQuAD sentences 1.1x faster than one session of
    /// two threads (2 cores), for twice the weights in memory.
    pub fn with_sessions(mut self, n: usize) -> Result<Self> {
        let n = n.clamp(1, self.opts.intra_threads.max(1));
        if n == self.sessions.len() {
            return Ok(self);
        }
        let opts = self.opts.clone().with_threads(if n == 1 { self.opts.intra_threads } else { 1 });
        self.sessions = self.sessions.resized(n, || opts.session_for_varying_shapes(&self.model))?;
        Ok(self)
    }

    /// How many sessions run the graph.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Embeds up to any number of texts, [`BATCH`] at a time, and fewer when they are long: a
    /// run holds at most [`TOKENS_PER_RUN`] tokens (estimated from the bytes), since its
    /// buffers grow with texts × tokens (and attention's with tokens²). Texts are batched
    /// longest first, so each batch pads to a length close to its own texts' instead of the
    /// longest of whatever happened to sit next to them; the vectors come back in the order
    /// of `texts`.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let estimate = |t: &str| (t.len() / 3 + 2).min(self.max_tokens);
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let mut plan = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let (mut end, mut longest) = (start, 0);
            while end < order.len() && end - start < BATCH {
                let l = longest.max(estimate(texts[order[end]]));
                if end > start && l * (end + 1 - start) > TOKENS_PER_RUN {
                    break;
                }
                longest = l;
                end += 1;
            }
            plan.push(start..end);
            start = end;
        }
        let run = |range: &std::ops::Range<usize>| {
            let batch: Vec<&str> = order[range.clone()].iter().map(|&i| texts[i]).collect();
            self.embed_one_batch(&batch)
        };
        // Several sessions: the batches run in parallel, each on a free session.
        let vectors: Vec<Vec<Vec<f32>>> = if self.sessions.len() > 1 {
            plan.par_iter().map(run).collect::<Result<_>>()?
        } else {
            plan.iter().map(run).collect::<Result<_>>()?
        };
        let mut out = vec![Vec::new(); texts.len()];
        for (range, vectors) in plan.iter().zip(vectors) {
            for (&i, v) in order[range.clone()].iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn embed_one_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encs = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| Error::Tokenizer { path: self.tokenizer_path.clone(), detail: e.to_string() })?;
        let b = encs.len();
        let t = encs.iter().map(|e| e.get_ids().len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; b * t];
        let mut mask = vec![0i64; b * t];
        let mut types = vec![0i64; b * t];
        for (r, e) in encs.iter().enumerate() {
            for (j, ((&id, &m), &ty)) in
                e.get_ids().iter().zip(e.get_attention_mask()).zip(e.get_type_ids()).enumerate()
            {
                ids[r * t + j] = i64::from(id);
                mask[r * t + j] = i64::from(m);
                types[r * t + j] = i64::from(ty);
            }
        }
        let err = |e: ort::Error| Error::Ort { model: self.model.clone(), context: "embedding", detail: e.to_string() };
        let mut session = self.sessions.lock()?;
        let has_types = session.inputs().iter().any(|o| o.name() == "token_type_ids");
        let mut inputs: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> = vec![
            ("input_ids".into(), Tensor::from_array(([b, t], ids)).map_err(err)?.into()),
            ("attention_mask".into(), Tensor::from_array(([b, t], mask.clone())).map_err(err)?.into()),
        ];
        if has_types {
            inputs.push(("token_type_ids".into(), Tensor::from_array(([b, t], types)).map_err(err)?.into()));
        }
        let outputs = session.run(inputs).map_err(err)?;
        let (shape, hidden) = outputs["last_hidden_state"].try_extract_tensor::<f32>().map_err(err)?;
        let d = self.dims;
        if hidden.len() != b * t * d {
            return Err(Error::Contract {
                model: self.model.clone(),
                contract: CONTRACT,
                detail: format!("last_hidden_state shape {shape:?}, expected [{b}, {t}, {d}]"),
            });
        }
        Ok((0..b)
            .map(|r| {
                let mut v = vec![0f32; d];
                let mut n = 0f32;
                for j in 0..t {
                    if mask[r * t + j] != 0 {
                        n += 1.0;
                        let row = &hidden[(r * t + j) * d..(r * t + j + 1) * d];
                        v.iter_mut().zip(row).for_each(|(a, x)| *a += x);
                    }
                }
                let n = n.max(1.0);
                v.iter_mut().for_each(|a| *a /= n);
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= norm);
                v
            })
            .collect())
    }
}

impl metarag_core::model::SentenceEmbedder for Embedder {
    fn embed(&self, texts: &[&str]) -> metarag_core::Result<Vec<Vec<f32>>> {
        Ok(self.embed_batch(texts)?)
    }
}

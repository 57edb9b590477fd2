//! [`Embedder`]: a MiniLM-style sentence embedder (BERT graph: `input_ids`, `attention_mask`,
//! `token_type_ids` → `last_hidden_state`), with masked mean pooling and L2 normalisation.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::runtime::{RuntimeOptions, check_names};
use crate::{Error, Result};

const CONTRACT: &str = "sentence-embedder";

/// Where the default embedder lives inside the models directory.
pub const MINILM_DIR: &str = "all-minilm-l6-v2-int8";

/// A sentence embedder session plus its tokenizer.
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
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    dims: usize,
    batch: usize,
    max_tokens: usize,
}

/// Most tokens (texts × the longest, estimated) in one embedding run.
pub const TOKENS_PER_RUN: usize = 2048;

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("model", &self.model).field("dims", &self.dims).finish()
    }
}

impl Embedder {
    /// Loads all-MiniLM-L6-v2 (int8) from the models directory.
    pub fn load(opts: &RuntimeOptions) -> Result<Self> {
        let model = opts.model_file(&format!("{MINILM_DIR}/model.onnx"))?;
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
            session: Mutex::new(session),
            tokenizer: tok,
            dims,
            batch: 32,
            max_tokens: max_tokens.max(1),
        })
    }

    /// Vector size (384 for MiniLM-L6).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Embeds up to any number of texts, `batch` at a time, and fewer when they are long: a
    /// run holds at most [`TOKENS_PER_RUN`] tokens (estimated from the bytes), since its
    /// attention buffers grow with texts × tokens² (32 texts of 256 tokens took ~1 GB).
    /// Texts are batched longest first, so each batch pads to a length close to its own
    /// texts' instead of the longest of whatever happened to sit next to them; the vectors
    /// come back in the order of `texts`.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let estimate = |t: &str| (t.len() / 3 + 2).min(self.max_tokens);
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            let (mut end, mut longest) = (start, 0);
            while end < order.len() && end - start < self.batch {
                let l = longest.max(estimate(texts[order[end]]));
                if end > start && l * (end + 1 - start) > TOKENS_PER_RUN {
                    break;
                }
                longest = l;
                end += 1;
            }
            let batch: Vec<&str> = order[start..end].iter().map(|&i| texts[i]).collect();
            for (&i, v) in order[start..end].iter().zip(self.embed_one_batch(&batch)?) {
                out[i] = v;
            }
            start = end;
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
        let mut session = self.session.lock().map_err(|_| Error::Ort {
            model: self.model.clone(),
            context: "session lock",
            detail: "a previous run panicked".into(),
        })?;
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

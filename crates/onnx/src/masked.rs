//! [`MaskedLm`]: a masked-diffusion denoiser over the masked-denoiser graph contract of
//! DESIGN.md (input `input_ids` int64 [B,T] containing the mask id, optional
//! `attention_mask` int64 [B,T]; output `logits` f32 [B,T,V]; no time input), with its
//! tokenizer. It implements [`metarag_core::model::MaskedDenoiser`], the model side of
//! `metarag_generate::masked`.
//!
//! The default graph is the SYNTHETIC denoiser that `onnx/setup.py` builds with
//! `onnx/synthetic_denoiser.py` (fixed weights over the SmolLM2 vocabulary, predicting one
//! known sentence in the answer slot): no trained masked-diffusion model is published in the
//! registries, and this one exercises the decoder end to end through ONNX Runtime.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::runtime::{RuntimeOptions, check_names};
use crate::{Error, Result};

const CONTRACT: &str = "masked-denoiser";

/// Where the synthetic masked denoiser lives inside the models directory
/// (`model.onnx` and `denoiser.json`).
pub const SYNTHETIC_DENOISER_DIR: &str = "synthetic-denoiser";

/// The part of a `denoiser.json` that loading needs.
#[derive(Debug, Deserialize)]
struct DenoiserJson {
    contract: String,
    mask_id: u32,
    /// The tokenizer, relative to the JSON file's directory.
    tokenizer: String,
    vocab: Option<usize>,
}

/// A masked denoiser session plus its tokenizer.
///
/// ```no_run
/// use metarag_core::model::{MaskedDenoiser, Vocabulary};
/// use metarag_onnx::{MaskedLm, RuntimeOptions};
/// let lm = MaskedLm::load(&RuntimeOptions::default())?;
/// let mut row = lm.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")?;
/// row.extend([lm.mask_id(); 4]);
/// let logits = lm.denoise(&[row.clone()])?;
/// assert_eq!(logits.len(), row.len() * lm.vocab_size());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MaskedLm {
    model: PathBuf,
    tokenizer_path: PathBuf,
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    mask_id: u32,
    vocab: usize,
    has_attention_mask: bool,
}

impl std::fmt::Debug for MaskedLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedLm")
            .field("model", &self.model)
            .field("tokenizer", &self.tokenizer_path)
            .field("mask_id", &self.mask_id)
            .field("vocab", &self.vocab)
            .finish()
    }
}

impl MaskedLm {
    /// Loads the synthetic masked denoiser from the models directory
    /// ([`SYNTHETIC_DENOISER_DIR`]).
    pub fn load(opts: &RuntimeOptions) -> Result<Self> {
        let config = opts.model_file(&format!("{SYNTHETIC_DENOISER_DIR}/denoiser.json"))?;
        let model = opts.model_file(&format!("{SYNTHETIC_DENOISER_DIR}/model.onnx"))?;
        Self::from_config(opts, &model, &config)
    }

    /// Loads `model` with the mask id and tokenizer named by a `denoiser.json`
    /// (`{"contract": "masked-denoiser", "mask_id": .., "tokenizer": "<path relative to the
    /// JSON>", "vocab": ..}`).
    pub fn from_config(opts: &RuntimeOptions, model: &Path, config: &Path) -> Result<Self> {
        let bad = |detail: String| Error::Contract { model: config.to_path_buf(), contract: CONTRACT, detail };
        let text = std::fs::read_to_string(config).map_err(|e| bad(format!("cannot read: {e}")))?;
        let info: DenoiserJson = serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        if info.contract != CONTRACT {
            return Err(bad(format!("contract is `{}`, expected `{CONTRACT}`", info.contract)));
        }
        let tokenizer = config.parent().unwrap_or(Path::new(".")).join(&info.tokenizer);
        if !tokenizer.is_file() {
            return Err(Error::ModelMissing { path: tokenizer, models_dir: opts.models_dir.clone() });
        }
        let lm = Self::from_files(opts, model, &tokenizer, info.mask_id)?;
        if let Some(v) = info.vocab
            && v != lm.vocab
        {
            return Err(bad(format!("vocab {v}, but {} has {} logits per position", model.display(), lm.vocab)));
        }
        Ok(lm)
    }

    /// Loads any graph that follows the masked-denoiser contract, with its `tokenizer.json`
    /// and mask token id.
    pub fn from_files(opts: &RuntimeOptions, model: &Path, tokenizer: &Path, mask_id: u32) -> Result<Self> {
        let tok = Tokenizer::from_file(tokenizer)
            .map_err(|e| Error::Tokenizer { path: tokenizer.to_path_buf(), detail: e.to_string() })?;
        let session = opts.session(model)?;
        check_names(&session, model, CONTRACT, &["input_ids"], &["logits"])?;
        let contract = |detail: String| Error::Contract { model: model.to_path_buf(), contract: CONTRACT, detail };
        let extra: Vec<&str> = session
            .inputs()
            .iter()
            .map(|o| o.name())
            .filter(|n| !["input_ids", "attention_mask"].contains(n))
            .collect();
        if !extra.is_empty() {
            return Err(contract(format!(
                "unexpected inputs {} (only input_ids and attention_mask)",
                extra.join(", ")
            )));
        }
        let has_attention_mask = session.inputs().iter().any(|o| o.name() == "attention_mask");
        // The vocabulary: the logits' last dimension when the graph fixes it, else the
        // tokenizer's size (checked again on every forward).
        let fixed = session
            .outputs()
            .iter()
            .find(|o| o.name() == "logits")
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.to_vec()))
            .and_then(|s| s.last().copied())
            .filter(|&v| v > 0);
        let vocab = match fixed {
            Some(v) => v as usize,
            None => tok.get_vocab_size(true),
        };
        if mask_id as usize >= vocab {
            return Err(contract(format!("mask id {mask_id} is outside the vocabulary of {vocab}")));
        }
        Ok(MaskedLm {
            model: model.to_path_buf(),
            tokenizer_path: tokenizer.to_path_buf(),
            session: Mutex::new(session),
            tokenizer: tok,
            mask_id,
            vocab,
            has_attention_mask,
        })
    }

    /// The graph file.
    pub fn model_path(&self) -> &Path {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of `text` (no special tokens added; special-token text such as
    /// `<|im_start|>` is recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode_fast(text, false).map_err(|e| Error::Tokenizer {
            path: self.tokenizer_path.clone(),
            detail: format!("encoding {} bytes: {e}", text.len()),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// One forward pass over `rows` (equal lengths): logits `rows × len × vocab`, row-major.
    pub fn forward(&self, rows: &[Vec<u32>]) -> Result<Vec<f32>> {
        let Some(first) = rows.first() else { return Ok(Vec::new()) };
        let (b, t) = (rows.len(), first.len());
        if t == 0 || rows.iter().any(|r| r.len() != t) {
            let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
            return Err(Error::Input(format!(
                "{}: rows must be non-empty and of equal length, got lengths {lens:?}",
                self.model.display()
            )));
        }
        let err = |context: &'static str| {
            move |e: ort::Error| Error::Ort { model: self.model.clone(), context, detail: e.to_string() }
        };
        let ids: Vec<i64> = rows.iter().flatten().map(|&x| i64::from(x)).collect();
        let mut inputs = vec![("input_ids", Tensor::from_array(([b, t], ids)).map_err(err("input tensor"))?)];
        if self.has_attention_mask {
            inputs.push((
                "attention_mask",
                Tensor::from_array(([b, t], vec![1i64; b * t])).map_err(err("input tensor"))?,
            ));
        }
        let mut session = self.session.lock().map_err(|_| Error::Ort {
            model: self.model.clone(),
            context: "session lock",
            detail: "a previous run panicked".into(),
        })?;
        let outputs = session.run(inputs).map_err(err("forward pass"))?;
        let logits = outputs.get("logits").ok_or_else(|| Error::Contract {
            model: self.model.clone(),
            contract: CONTRACT,
            detail: "no `logits` output".into(),
        })?;
        let (shape, data) = logits.try_extract_tensor::<f32>().map_err(err("reading the logits"))?;
        let want = [b as i64, t as i64, self.vocab as i64];
        if shape[..] != want[..] || data.len() != b * t * self.vocab {
            return Err(Error::Contract {
                model: self.model.clone(),
                contract: CONTRACT,
                detail: format!("logits shape {shape:?}, expected {want:?}"),
            });
        }
        Ok(data.to_vec())
    }
}

impl metarag_core::model::Vocabulary for MaskedLm {
    fn encode(&self, text: &str) -> metarag_core::Result<Vec<u32>> {
        Ok(MaskedLm::encode(self, text)?)
    }
    fn decode(&self, ids: &[u32]) -> metarag_core::Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| {
            Error::Tokenizer { path: self.tokenizer_path.clone(), detail: format!("decoding {} ids: {e}", ids.len()) }
                .into()
        })
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
}

impl metarag_core::model::MaskedDenoiser for MaskedLm {
    fn mask_id(&self) -> u32 {
        self.mask_id
    }
    fn denoise(&self, rows: &[Vec<u32>]) -> metarag_core::Result<Vec<f32>> {
        Ok(self.forward(rows)?)
    }
}

//! [`MaskedLm`]: a masked-diffusion denoiser over the masked-denoiser graph contract of
//! DESIGN.md (input `input_ids` int64 [B,T] containing the mask id, optional
//! `attention_mask` int64 [B,T]; output `logits` f32 [B,T,V]; no time input), with its
//! tokenizer. It implements [`metarag_core::model::MaskedDenoiser`], the model side of
//! `metarag_generate::masked`.
//!
//! [`BlockDenoiser`] is the trained masked-diffusion answer model ([`MASKED_DIR`]): a causal
//! prompt read once into a KV cache, then an answer block that sees itself whole.
//!
//! The default graph of [`MaskedLm`] is the SYNTHETIC denoiser that `onnx/setup.py` builds with
//! `onnx/synthetic_denoiser.py` (fixed weights over the SmolLM2 vocabulary, predicting one
//! known sentence in the answer slot): no trained masked-diffusion model is published in the
//! registries, and this one exercises the decoder end to end through ONNX Runtime.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use metarag_core::model::CausalModel;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::generate::LmPrefix;
use crate::lm::{CausalLm, LmConfig};
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

/// Where the trained masked-diffusion answer model lives inside the models directory:
/// `model.onnx` (the causal graph that reads the prompt), `denoiser.onnx` (the block graph),
/// `tokenizer.json` and [`MASKED_FILE`].
pub const MASKED_DIR: &str = "smollm2-135m-masked";
/// The block graph of [`MASKED_DIR`]: the shared-prefix contract of `decoder.onnx`
/// (`input_ids`, `position_ids`, `prefix.{i}.key/value`, `past_key_values.*` -> `logits`,
/// `present.*`) with the rows' own tokens seeing each other whole.
pub const DENOISER_FILE: &str = "denoiser.onnx";
/// The masked model's settings (`mask_id`, `block`, `start_id`), written by `onnx/setup.py`.
pub const MASKED_FILE: &str = "masked.json";

/// The part of `masked.json` that decoding needs.
#[derive(Debug, Clone, Deserialize)]
struct MaskedJson {
    mask_id: u32,
    /// The answer block length the model was trained with.
    block: usize,
    /// A token the training prompts started with (the FIM prefix sentinel), if any.
    start_id: Option<u32>,
    /// The default answer slot, when shorter than the block (a model trained on blocks cut
    /// to random lengths serves short slots as well).
    #[serde(default)]
    slot: Option<usize>,
}

/// The trained block-diffusion answer denoiser: the prompt (`start_id` + the template's
/// prefix) is read causally once and cached; each step runs only the answer block, preceded by
/// the prompt's last token, over that cache. Logits keep the autoregressive alignment (the
/// block's input position `j` predicts slot token `j`); [`MaskedDenoiser::denoise_slots`]
/// returns them per slot position, so every sampler of `metarag_generate::masked` runs on it.
///
/// ```no_run
/// use metarag_core::model::{MaskedDenoiser, Vocabulary};
/// use metarag_onnx::{BlockDenoiser, RuntimeOptions};
/// let lm = BlockDenoiser::load(&RuntimeOptions::default())?;
/// let prompt = lm.encode("Context:\n[1] Paris is the capital of France.\n\nQuestion: What is the capital of France?\nAnswer:")?;
/// let slot = vec![lm.mask_id(); lm.block()];
/// let logits = lm.denoise_slots(&prompt, &[slot], &[])?;
/// assert_eq!(logits.len(), lm.block() * lm.vocab_size());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BlockDenoiser {
    lm: CausalLm,
    info: MaskedJson,
    /// The last prompt read (its tokens and cache): the steps of one question share it.
    prompt: Mutex<Option<(Vec<u32>, Arc<LmPrefix>)>>,
}

impl std::fmt::Debug for BlockDenoiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockDenoiser").field("lm", &self.lm).field("info", &self.info).finish()
    }
}

impl BlockDenoiser {
    /// Loads the trained masked answer model ([`MASKED_DIR`]) from the models directory.
    pub fn load(opts: &RuntimeOptions) -> Result<Self> {
        let info_path = opts.model_file(&format!("{MASKED_DIR}/{MASKED_FILE}"))?;
        let denoiser = opts.model_file(&format!("{MASKED_DIR}/{DENOISER_FILE}"))?;
        let bad = |detail: String| Error::Contract { model: info_path.clone(), contract: "masked.json", detail };
        let text = std::fs::read_to_string(&info_path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let info: MaskedJson = serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        // The prompt is read in windows of 256 tokens with nothing sliding out.
        let cfg = LmConfig { window: 256, max_context: 8192, max_position: 8192, sink_tokens: 4 };
        let lm = CausalLm::load_dir(opts, MASKED_DIR, cfg)?.with_prefix_graph(denoiser);
        let vocab = lm.tokenizer().get_vocab_size(true);
        for (what, id) in [("mask_id", Some(info.mask_id)), ("start_id", info.start_id)] {
            if let Some(id) = id.filter(|&id| id as usize >= vocab) {
                return Err(bad(format!("{what} {id} is outside the vocabulary of {vocab}")));
            }
        }
        if info.block == 0 {
            return Err(bad("block is 0".into()));
        }
        if let Some(slot) = info.slot.filter(|&s| s == 0 || s > info.block) {
            return Err(bad(format!("slot {slot} is not in 1..={} (the block)", info.block)));
        }
        Ok(BlockDenoiser { lm, info, prompt: Mutex::new(None) })
    }

    /// The answer block length the model was trained with (the default slot length).
    pub fn block(&self) -> usize {
        self.info.block
    }

    /// The default answer slot length: what `masked.json` says (a model trained on blocks cut
    /// to random lengths), else the block.
    pub fn slot(&self) -> usize {
        self.info.slot.unwrap_or(self.info.block)
    }

    /// The causal model that reads the prompt.
    pub fn lm(&self) -> &CausalLm {
        &self.lm
    }

    /// The cache of `prompt`, computed once per prompt.
    fn prompt_cache(&self, prompt: &[u32]) -> Result<Arc<LmPrefix>> {
        let mut last = self.prompt.lock().map_err(|_| Error::Input("prompt cache lock poisoned".into()))?;
        if let Some((ids, cache)) = last.as_ref()
            && ids == prompt
        {
            return Ok(Arc::clone(cache));
        }
        let cache = Arc::new(self.lm.prefill(prompt).map_err(|e| Error::Input(e.to_string()))?);
        *last = Some((prompt.to_vec(), Arc::clone(&cache)));
        Ok(cache)
    }
}

impl metarag_core::model::Vocabulary for BlockDenoiser {
    fn encode(&self, text: &str) -> metarag_core::Result<Vec<u32>> {
        Ok(self.lm.encode(text)?)
    }
    fn decode(&self, ids: &[u32]) -> metarag_core::Result<String> {
        metarag_core::model::Vocabulary::decode(&self.lm, ids)
    }
    fn vocab_size(&self) -> usize {
        metarag_core::model::Vocabulary::vocab_size(&self.lm)
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        metarag_core::model::Vocabulary::token_id(&self.lm, token)
    }
}

impl metarag_core::model::MaskedDenoiser for BlockDenoiser {
    fn mask_id(&self) -> u32 {
        self.info.mask_id
    }

    /// Whole rows have no prompt/block boundary for this model: use
    /// [`MaskedDenoiser::denoise_slots`].
    fn denoise(&self, _rows: &[Vec<u32>]) -> metarag_core::Result<Vec<f32>> {
        Err(Error::Input(
            "the block denoiser reads a prompt, then an answer block: call denoise_slots(prefix, slots, suffix)".into(),
        )
        .into())
    }

    fn denoise_slots(&self, prefix: &[u32], slots: &[Vec<u32>], suffix: &[u32]) -> metarag_core::Result<Vec<f32>> {
        if !suffix.is_empty() {
            return Err(Error::Input(format!(
                "the block denoiser was trained without a closing after the answer; got {} suffix tokens (use a \
                 template with an empty suffix)",
                suffix.len()
            ))
            .into());
        }
        let (n, len) = (slots.len(), slots.first().map_or(0, Vec::len));
        if n == 0 || len == 0 {
            return Ok(Vec::new());
        }
        if len > self.info.block {
            return Err(Error::Input(format!(
                "an answer slot of {len} tokens is longer than the {}-token block the masked model was trained with",
                self.info.block
            ))
            .into());
        }
        if let Some(r) = slots.iter().position(|s| s.len() != len) {
            return Err(Error::Input(format!(
                "slot rows differ in length: row 0 has {len}, row {r} has {}",
                slots[r].len()
            ))
            .into());
        }
        let prompt: Vec<u32> = self.info.start_id.into_iter().chain(prefix.iter().copied()).collect();
        let Some((&last, head)) = prompt.split_last().filter(|(_, head)| !head.is_empty()) else {
            return Err(Error::Input("the block denoiser needs a prompt of at least 2 tokens".into()).into());
        };
        let cache = self.prompt_cache(head)?;
        let rows: Vec<Vec<u32>> =
            slots.iter().map(|s| std::iter::once(last).chain(s.iter().copied()).collect()).collect();
        let logits = self.lm.prefix_rows(&cache, &rows)?;
        let width = len + 1;
        let vocab = logits.len() / (n * width);
        // input position j (the prompt's last token, then slot tokens) predicts slot token j
        let mut out = Vec::with_capacity(n * len * vocab);
        for r in 0..n {
            out.extend_from_slice(&logits[r * width * vocab..(r * width + len) * vocab]);
        }
        Ok(out)
    }
}

//! [`TokenizerFile`]: a tokenizer on its own (no model session), for token counting and
//! fixed token windows.

use std::ops::Range;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::lm::SMOLLM2_DIR;
use crate::runtime::RuntimeOptions;
use crate::{Error, Result};

/// A `tokenizer.json` loaded without its model.
///
/// ```no_run
/// use metarag_core::model::TokenOffsets;
/// let t = metarag_onnx::TokenizerFile::smollm2(&metarag_onnx::RuntimeOptions::default())?;
/// assert_eq!(t.token_offsets("Hello world")?.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TokenizerFile {
    path: PathBuf,
    tokenizer: Tokenizer,
}

impl TokenizerFile {
    /// Loads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer { path: path.to_path_buf(), detail: e.to_string() })?;
        Ok(TokenizerFile { path: path.to_path_buf(), tokenizer })
    }

    /// The SmolLM2 tokenizer from the models directory.
    pub fn smollm2(opts: &RuntimeOptions) -> Result<Self> {
        Self::load(&opts.model_file(&format!("{SMOLLM2_DIR}/tokenizer.json"))?)
    }

    /// Token ids (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), detail: e.to_string() })
    }
}

impl metarag_core::model::TokenOffsets for TokenizerFile {
    fn token_offsets(&self, text: &str) -> metarag_core::Result<Vec<Range<usize>>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), detail: e.to_string() })?;
        Ok(enc.get_offsets().iter().map(|&(a, b)| a..b).collect())
    }
}

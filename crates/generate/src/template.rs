//! Infill templates: prefix = numbered context chunks + question (+ a primer), then the
//! answer slot, then the suffix (the template's closing). Everything is assembled from token
//! ids, so context is never cut inside a token; chunks go in by relevance until the prompt
//! budget is spent, and the chunks used are remembered for citation.
//!
//! ```
//! use metarag_generate::template::{ContextChunk, Template};
//! use metarag_generate::testing::WordVocab;
//! let vocab = WordVocab::new(&["<s>", "<q>", "<a>", "<end>", "cats", "purr", "why", "?"]);
//! let t = Template::plain("<s>", "<q>", "<a>", "<end>");
//! let chunks = [ContextChunk::new("c1", "cats purr")];
//! let p = t.build(&vocab, "why ?", &chunks)?;
//! assert_eq!(p.chunks.len(), 1);
//! assert_eq!(p.prefix.len(), 7); // <s> cats purr <q> why ? <a>
//! # Ok::<(), metarag_generate::Error>(())
//! ```

use std::ops::Range;

use metarag_core::model::Vocabulary;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A retrieved chunk offered as context (in relevance order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextChunk {
    /// Identifier for citation (e.g. `path#3`).
    pub id: String,
    /// The chunk's text.
    pub text: String,
    /// The source file, when known.
    pub path: Option<String>,
    /// Byte span in the source document, when known.
    pub span: Option<Range<usize>>,
}

impl ContextChunk {
    /// A chunk with only an id and text.
    pub fn new(id: &str, text: &str) -> Self {
        ContextChunk { id: id.to_string(), text: text.to_string(), path: None, span: None }
    }
}

/// A chunk as it went into the prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsedChunk {
    /// Index into the chunks given to [`Template::build`].
    pub index: usize,
    /// The chunk's tokens as they appear in the prompt (after its number).
    pub tokens: Vec<u32>,
    /// Where those tokens sit in the prompt prefix.
    pub at: Range<usize>,
    /// True when the chunk was cut (at a token boundary) to fit the budget.
    pub truncated: bool,
}

/// A filled template around an empty answer slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prompt {
    /// Tokens before the slot.
    pub prefix: Vec<u32>,
    /// Tokens after the slot (the template's closing).
    pub suffix: Vec<u32>,
    /// The context chunks used, in prompt order (= relevance order).
    pub chunks: Vec<UsedChunk>,
    /// The same prefix without the question (for contrastive decoding); empty when unknown.
    #[serde(skip)]
    pub baseline: Option<Vec<u32>>,
    /// The question's tokens (the contrastive start does not boost them).
    #[serde(skip)]
    pub question: Vec<u32>,
}

/// The text pieces of a template. Chunk `i` (1-based) is rendered as
/// `chunk_open(i) + " " + text + chunk_close`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Template {
    /// Text before the first chunk.
    pub head: String,
    /// Chunk number label; `{n}` is replaced by the number.
    pub chunk_open: String,
    /// Text after each chunk.
    pub chunk_close: String,
    /// Text between the chunks and the question.
    pub question_open: String,
    /// Text between the question and the answer slot (ends with the primer).
    pub answer_open: String,
    /// The closing after the slot.
    pub suffix: String,
    /// Most prompt tokens (prefix); chunks are dropped or cut to fit.
    pub max_prompt: usize,
    /// Most chunks to use.
    pub max_chunks: usize,
    /// A cut chunk keeps at least this many tokens, else it is left out.
    pub min_chunk_tokens: usize,
}

impl Default for Template {
    /// The chat (ChatML) template of SmolLM2-Instruct, primed with "The answer is:".
    fn default() -> Self {
        Template {
            head: "<|im_start|>system\nAnswer the question with a short phrase taken from the context.<|im_end|>\n<|im_start|>user\nContext:\n".into(),
            chunk_open: "[{n}]".into(),
            chunk_close: "\n".into(),
            question_open: "\nQuestion: ".into(),
            answer_open: "<|im_end|>\n<|im_start|>assistant\nThe answer is:".into(),
            suffix: "<|im_end|>".into(),
            max_prompt: 768,
            max_chunks: 4,
            min_chunk_tokens: 32,
        }
    }
}

impl Template {
    /// The template the answer infiller (`smollm2-135m-infill`) was trained on, without the chat
    /// wrapper: the model sees it as the prefix of a PSM fill-in-the-middle prompt
    /// (`<PRE> prefix <SUF> suffix <MID>`, added by the decoder for models with FIM sentinels)
    /// and writes the answer, then its end-of-text token. The suffix is empty: the model was
    /// also trained with the answer chunk's number there (" [n]"), which is not known before
    /// decoding. Must equal `TEMPLATE` in `onnx/train_infill.py` (a test checks).
    pub fn infill() -> Self {
        Template {
            head: "Answer the question with a short phrase copied from the context.\nContext:\n".into(),
            chunk_open: "[{n}]".into(),
            chunk_close: "\n".into(),
            question_open: "\nQuestion: ".into(),
            answer_open: "\nAnswer:".into(),
            suffix: String::new(),
            ..Template::default()
        }
    }

    /// A template of bare markers (for tests with word vocabularies): `head chunk… question_open
    /// question answer_open [slot] suffix`, chunks without numbers.
    pub fn plain(head: &str, question_open: &str, answer_open: &str, suffix: &str) -> Self {
        Template {
            head: head.into(),
            chunk_open: String::new(),
            chunk_close: String::new(),
            question_open: question_open.into(),
            answer_open: answer_open.into(),
            suffix: suffix.into(),
            max_prompt: 4096,
            max_chunks: 8,
            min_chunk_tokens: 1,
        }
    }

    /// The template with the primer removed from the end of the prefix (for masked decoders,
    /// whose slot directly follows the assistant turn's start).
    pub fn without_primer(mut self, primer: &str) -> Self {
        if let Some(s) = self.answer_open.strip_suffix(primer) {
            self.answer_open = s.to_string();
        }
        self
    }

    /// Fills the template for `question` with as many of `chunks` (most relevant first) as
    /// fit `max_prompt` tokens.
    pub fn build(&self, vocab: &(impl Vocabulary + ?Sized), question: &str, chunks: &[ContextChunk]) -> Result<Prompt> {
        let enc = |s: &str| -> Result<Vec<u32>> { if s.is_empty() { Ok(Vec::new()) } else { Ok(vocab.encode(s)?) } };
        let head = enc(&self.head)?;
        let mut tail = enc(&self.question_open)?;
        let question_tokens = enc(question.trim())?;
        tail.extend(&question_tokens);
        tail.extend(enc(&self.answer_open)?);
        let suffix = enc(&self.suffix)?;
        let fixed = head.len() + tail.len();
        if fixed > self.max_prompt {
            return Err(Error::PromptTooLong { needed: fixed, window: self.max_prompt });
        }
        let close = enc(&self.chunk_close)?;
        let mut prefix = head;
        let mut used = Vec::new();
        for (index, c) in chunks.iter().enumerate() {
            if used.len() == self.max_chunks {
                break;
            }
            let label = enc(&self.chunk_open.replace("{n}", &(used.len() + 1).to_string()))?;
            let text = c.text.trim();
            let body = if self.chunk_open.is_empty() { enc(text)? } else { enc(&format!(" {text}"))? };
            let room = self.max_prompt.saturating_sub(prefix.len() + tail.len() + label.len() + close.len());
            if room < self.min_chunk_tokens.min(body.len()).max(1) {
                break;
            }
            let truncated = body.len() > room;
            let body: Vec<u32> = body.into_iter().take(room).collect();
            prefix.extend(label);
            let at = prefix.len()..prefix.len() + body.len();
            prefix.extend(&body);
            prefix.extend(&close);
            used.push(UsedChunk { index, tokens: body, at, truncated });
            if truncated {
                break;
            }
        }
        let mut baseline = prefix.clone();
        baseline.extend(enc(&self.question_open)?);
        baseline.extend(enc(&self.answer_open)?);
        prefix.extend(tail);
        Ok(Prompt { prefix, suffix, chunks: used, baseline: Some(baseline), question: question_tokens })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::WordVocab;

    fn vocab() -> WordVocab {
        WordVocab::new(&["<s>", "<q>", "<a>", "<e>", "a", "b", "c", "d", "why"])
    }

    #[test]
    fn chunks_fill_by_relevance_and_are_cut_at_tokens() {
        let v = vocab();
        let mut t = Template::plain("<s>", "<q>", "<a>", "<e>");
        // fixed = <s> + <q> why + <a> = 4 tokens; room for 5 context tokens.
        t.max_prompt = 9;
        t.min_chunk_tokens = 2;
        let chunks = [ContextChunk::new("1", "a b c"), ContextChunk::new("2", "d d d d"), ContextChunk::new("3", "a")];
        let p = t.build(&v, "why", &chunks).unwrap();
        assert!(p.prefix.len() <= 9);
        assert_eq!(p.chunks.len(), 2);
        assert_eq!(p.chunks[0].tokens, v.encode("a b c").unwrap());
        assert_eq!(p.chunks[1].tokens, v.encode("d d").unwrap());
        assert!(p.chunks[1].truncated && !p.chunks[0].truncated);
        for c in &p.chunks {
            assert_eq!(&p.prefix[c.at.clone()], &c.tokens[..]);
        }
        assert_eq!(p.suffix, v.encode("<e>").unwrap());
        assert_eq!(*p.prefix.last().unwrap(), v.token_id("<a>").unwrap());
    }

    #[test]
    fn too_long_question_is_a_clear_error() {
        let mut t = Template::plain("<s>", "<q>", "<a>", "<e>");
        t.max_prompt = 3;
        let e = t.build(&vocab(), "why why why", &[]).unwrap_err();
        assert!(e.to_string().contains("need 6 tokens"), "{e}");
    }
}

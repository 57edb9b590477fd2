//! The result classes Python sees: chunks, search hits, answers with citations, ingest reports.

use metarag_core::Document;
use metarag_engine::Chunking;
use metarag_index::SearchHit;
use pyo3::prelude::*;

/// One chunk of a document: its byte span in the document's text, the text, and the scores
/// of the sentences in it.
#[pyclass(frozen, get_all, module = "metarag")]
#[derive(Clone)]
pub(crate) struct Chunk {
    /// The document (its path, or "text" for a string).
    pub(crate) doc: String,
    /// Position of the chunk in the document (0-based).
    pub(crate) index: usize,
    /// Byte offset of the chunk's start in the document's UTF-8 text.
    pub(crate) start: usize,
    /// Byte offset of its end (exclusive).
    pub(crate) end: usize,
    /// `text[start:end]` of the document (as UTF-8 bytes).
    pub(crate) text: String,
    /// One score per sentence in the chunk (PPL: mean NLL in nats); empty for methods without.
    pub(crate) scores: Vec<f32>,
}

#[pymethods]
impl Chunk {
    fn __repr__(&self) -> String {
        let head: String = self.text.chars().take(40).collect();
        format!(
            "Chunk(doc={:?}, index={}, start={}, end={}, text={head:?}…)",
            self.doc, self.index, self.start, self.end
        )
    }
}

/// The chunks of a chunked `doc`, for Python.
pub(crate) fn chunks_of(doc: &Document, c: &Chunking) -> Vec<Chunk> {
    c.spans
        .iter()
        .enumerate()
        .map(|(index, s)| Chunk {
            doc: doc.id.clone(),
            index,
            start: s.start,
            end: s.end,
            text: doc.text[s.clone()].to_string(),
            scores: c.scores_in(s).to_vec(),
        })
        .collect()
}

/// One search result: a chunk of the index and its score.
#[pyclass(frozen, get_all, module = "metarag")]
pub(crate) struct Hit {
    /// BM25 score, cosine similarity or fused (RRF) score, by mode.
    pub(crate) score: f32,
    /// 1-based rank in the BM25 list, if it was there.
    pub(crate) bm25_rank: Option<usize>,
    /// 1-based rank in the dense list, if it was there.
    pub(crate) dense_rank: Option<usize>,
    /// The chunk's point id.
    pub(crate) id: u64,
    /// Document id (the normalised path).
    pub(crate) doc: String,
    /// The source file as ingested.
    pub(crate) path: String,
    /// Document kind: text, markdown, html or pdf.
    pub(crate) kind: String,
    /// Position of the chunk in its document.
    pub(crate) chunk: u32,
    /// Byte offset of the chunk in the document's text.
    pub(crate) start: u64,
    /// Byte offset of its end.
    pub(crate) end: u64,
    /// The chunk's text.
    pub(crate) text: String,
}

#[pymethods]
impl Hit {
    fn __repr__(&self) -> String {
        format!("Hit(score={:.4}, path={:?}, chunk={})", self.score, self.path, self.chunk)
    }
}

impl From<SearchHit> for Hit {
    fn from(h: SearchHit) -> Self {
        let r = h.record;
        Hit {
            score: h.score,
            bm25_rank: h.bm25_rank,
            dense_rank: h.dense_rank,
            id: r.id,
            doc: r.doc,
            path: r.path,
            kind: r.kind.to_string(),
            chunk: r.chunk,
            start: r.start,
            end: r.end,
            text: r.text,
        }
    }
}

/// A chunk an answer cites.
#[pyclass(frozen, get_all, module = "metarag")]
#[derive(Clone)]
pub(crate) struct Citation {
    /// Its number in the prompt (`[n]`).
    pub(crate) number: usize,
    /// `path#chunk`.
    pub(crate) id: String,
    /// Its file.
    pub(crate) path: Option<String>,
    /// Byte offset of the chunk in the file's text.
    pub(crate) start: Option<usize>,
    /// Byte offset of its end.
    pub(crate) end: Option<usize>,
}

#[pymethods]
impl Citation {
    fn __repr__(&self) -> String {
        format!("Citation(number={}, id={:?})", self.number, self.id)
    }
}

/// An answer with its confidence and citations.
#[pyclass(frozen, get_all, module = "metarag")]
pub(crate) struct Answer {
    /// The question.
    pub(crate) question: String,
    /// The answer ("" when no candidate had one).
    pub(crate) text: String,
    /// Aggregated confidence in [0, 1].
    pub(crate) confidence: f64,
    /// The answer occurs in a cited chunk.
    pub(crate) grounded: bool,
    /// The chunks it came from.
    pub(crate) citations: Vec<Citation>,
    /// Ids of the retrieved chunks given to the model, best first.
    pub(crate) retrieved: Vec<String>,
    /// The whole answer as JSON (candidates, statistics), as `metarag ask --json` prints it.
    pub(crate) json: String,
}

#[pymethods]
impl Answer {
    fn __repr__(&self) -> String {
        format!("Answer(text={:?}, confidence={:.3}, citations={})", self.text, self.confidence, self.citations.len())
    }
}

/// What an ingest did.
#[pyclass(frozen, get_all, module = "metarag")]
pub(crate) struct IngestReport {
    /// Files looked at.
    pub(crate) files: usize,
    /// Files chunked and written.
    pub(crate) ingested: usize,
    /// Files skipped because unchanged.
    pub(crate) unchanged: usize,
    /// Files that failed: (path, error); the others were ingested.
    pub(crate) failed: Vec<(String, String)>,
    /// Documents removed because their files were not among the inputs (prune=True).
    pub(crate) pruned: usize,
    /// Chunks written.
    pub(crate) chunks: u64,
    /// Documents of an interrupted ingest written again.
    pub(crate) recovered: usize,
    /// Files in folders skipped because they look binary.
    pub(crate) skipped_binary: usize,
    /// Wall-clock seconds.
    pub(crate) seconds: f64,
    /// The whole report as JSON (per-stage times), as `metarag ingest --json` prints it.
    pub(crate) json: String,
}

#[pymethods]
impl IngestReport {
    fn __repr__(&self) -> String {
        format!(
            "IngestReport(files={}, ingested={}, unchanged={}, failed={}, chunks={})",
            self.files,
            self.ingested,
            self.unchanged,
            self.failed.len(),
            self.chunks
        )
    }
}

//! The lexical index: tantivy with BM25 scoring and English stemming (`en_stem`: lower-case,
//! tokens over 40 bytes dropped, Snowball English stemmer). Every chunk is one tantivy
//! document holding its text and where it comes from.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, QueryParser, TermQuery, TermSetQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::{DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::store::{ChunkRecord, Filter, Hit, normalize_prefix, path_prefixes};
use crate::{Error, Result};

const TOKENIZER: &str = "en_stem";

/// A word of a plain multi-word query found in more than this share of the chunks is left out
/// of the BM25 search (stop words, in effect: its IDF is below 1.2, against 5–12 for the words
/// that find something); a query made only of such words is searched as its rarest word. Such
/// terms barely move the ranking, but their long posting lists defeat block-max WAND: they
/// made the slowest queries. 1M synthetic chunks (benches/retrieval.rs), BM25 ids for a hybrid
/// query's 20 candidates, p99: 4.4 ms at 0.5, 3.4 ms at 0.3; SQuAD dev BM25 recall@5 0.912 at
/// both, SQuAD-Shifts new_wiki 0.914 -> 0.912 (0.910 at 0.2).
pub const COMMON_TERM_SHARE: f64 = 0.3;
const WRITER_HEAP: usize = 64 << 20;
/// [`LexicalIndex::optimize`] merges the segments into one when there are more than this.
const MERGE_ABOVE: usize = 2;

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    doc: Field,
    path: Field,
    dirs: Field,
    kind: Field,
    chunk: Field,
    start: Field,
    end: Field,
    text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_opts = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let f = Fields {
        id: b.add_u64_field("id", INDEXED | STORED | FAST),
        doc: b.add_text_field("doc", STRING | STORED),
        path: b.add_text_field("path", STRING | STORED),
        dirs: b.add_text_field("dirs", STRING),
        kind: b.add_text_field("kind", STRING | STORED),
        chunk: b.add_u64_field("chunk", STORED),
        start: b.add_u64_field("start", STORED),
        end: b.add_u64_field("end", STORED),
        text: b.add_text_field("text", text_opts),
    };
    (b.build(), f)
}

/// BM25 over chunk texts, with path-prefix and kind filters.
///
/// ```
/// use metarag_index::{ChunkRecord, Filter, LexicalIndex};
///
/// let dir = std::env::temp_dir().join(format!("lex-doc-{}", std::process::id()));
/// let lex = LexicalIndex::open_or_create(&dir).unwrap();
/// let rec = |id, text: &str| ChunkRecord { id, doc: "a.txt".into(), path: "a.txt".into(),
///     kind: metarag_core::DocKind::Text, chunk: id as u32, start: 0, end: text.len() as u64, text: text.into() };
/// lex.add(&[rec(1, "Whales swim in the ocean."), rec(2, "Cats sleep all day.")]).unwrap();
/// lex.commit().unwrap();
/// let hits = lex.search("whale", 10, &Filter::default()).unwrap(); // stemmed: whales ~ whale
/// assert_eq!(hits[0].record.id, 1);
/// # drop(lex); std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct LexicalIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
    fields: Fields,
    dir: PathBuf,
}

impl std::fmt::Debug for LexicalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LexicalIndex").field("dir", &self.dir).finish()
    }
}

impl LexicalIndex {
    /// Opens the index in `dir`, creating it (and the directory) if there is none.
    pub fn open_or_create(dir: &Path) -> Result<Self> {
        Self::open_with(dir, true)
    }

    /// Opens the existing index in `dir`; creates nothing (a missing one is an error).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, false)
    }

    fn open_with(dir: &Path, create: bool) -> Result<Self> {
        if !create && !dir.join("meta.json").is_file() {
            return Err(Error::Lexical {
                path: dir.to_path_buf(),
                detail: "no lexical index here (meta.json missing)".into(),
            });
        }
        std::fs::create_dir_all(dir).map_err(crate::error::io(dir))?;
        let (schema, fields) = schema();
        let err = |e: tantivy::TantivyError| Error::Lexical { path: dir.to_path_buf(), detail: e.to_string() };
        let index = if dir.join("meta.json").is_file() {
            let index = Index::open_in_dir(dir).map_err(err)?;
            if index.schema() != schema {
                return Err(Error::Lexical {
                    path: dir.to_path_buf(),
                    detail: "the schema differs from this version's (rebuild the index)".into(),
                });
            }
            index
        } else {
            Index::create_in_dir(dir, schema).map_err(err)?
        };
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(err)?;
        Ok(LexicalIndex { index, reader, writer: Mutex::new(None), fields, dir: dir.to_path_buf() })
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Lexical { path: self.dir.clone(), detail: format!("{what}: {e}") }
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        let mut guard = self.writer.lock().map_err(|_| self.err("writer", "poisoned lock"))?;
        if guard.is_none() {
            let w =
                self.index.writer_with_num_threads(1, WRITER_HEAP).map_err(|e| self.err("opening the writer", e))?;
            *guard = Some(w);
        }
        match guard.as_mut() {
            Some(w) => f(w),
            None => Err(self.err("writer", "not available")),
        }
    }

    /// Adds chunks (not visible until [`LexicalIndex::commit`]).
    pub fn add(&self, records: &[ChunkRecord]) -> Result<()> {
        let f = self.fields;
        self.with_writer(|w| {
            for r in records {
                let mut d = TantivyDocument::default();
                d.add_u64(f.id, r.id);
                d.add_text(f.doc, &r.doc);
                d.add_text(f.path, &r.path);
                for p in path_prefixes(&r.path) {
                    d.add_text(f.dirs, &p);
                }
                d.add_text(f.kind, r.kind.name());
                d.add_u64(f.chunk, u64::from(r.chunk));
                d.add_u64(f.start, r.start);
                d.add_u64(f.end, r.end);
                d.add_text(f.text, &r.text);
                w.add_document(d).map_err(|e| self.err("add", e))?;
            }
            Ok(())
        })
    }

    /// Deletes every chunk of document `doc` (applied at the next commit, before the adds of
    /// the same commit's later calls).
    pub fn delete_document(&self, doc: &str) -> Result<()> {
        let term = Term::from_field_text(self.fields.doc, doc);
        self.with_writer(|w| {
            w.delete_term(term);
            Ok(())
        })
    }

    /// Makes every add and delete since the last commit durable and visible, atomically.
    pub fn commit(&self) -> Result<()> {
        self.with_writer(|w| w.commit().map(|_| ()).map_err(|e| self.err("commit", e)))?;
        self.reader.reload().map_err(|e| self.err("reload", e))
    }

    /// Drops uncommitted changes.
    pub fn rollback(&self) -> Result<()> {
        self.with_writer(|w| w.rollback().map(|_| ()).map_err(|e| self.err("rollback", e)))
    }

    /// Merges the committed segments into one when there are more than [`MERGE_ABOVE`], and
    /// waits for the merge threads (call after a large ingest). Top-k search with block-max
    /// WAND prunes within a segment, so one segment of 1M chunks answers BM25 queries several
    /// times faster than the twenty tantivy's merge policy leaves (benches/retrieval.rs).
    pub fn optimize(&self) -> Result<()> {
        let mut guard = self.writer.lock().map_err(|_| self.err("writer", "poisoned lock"))?;
        let segments = self.index.searchable_segment_ids().map_err(|e| self.err("listing segments", e))?;
        if segments.len() > MERGE_ABOVE {
            if guard.is_none() {
                *guard = Some(
                    self.index
                        .writer_with_num_threads(1, WRITER_HEAP)
                        .map_err(|e| self.err("opening the writer", e))?,
                );
            }
            if let Some(w) = guard.as_mut() {
                w.merge(&segments).wait().map_err(|e| self.err("merging", e))?;
            }
        }
        if let Some(w) = guard.take() {
            w.wait_merging_threads().map_err(|e| self.err("merging", e))?;
        }
        self.reader.reload().map_err(|e| self.err("reloading the reader", e))
    }

    fn filter_clauses(&self, filter: &Filter) -> Vec<(Occur, Box<dyn Query>)> {
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let zero = |q: Box<dyn Query>| -> Box<dyn Query> { Box::new(BoostQuery::new(q, 0.0)) };
        if let Some(p) = &filter.path_prefix {
            let t = Term::from_field_text(f.dirs, &normalize_prefix(p));
            clauses.push((Occur::Must, zero(Box::new(TermQuery::new(t, IndexRecordOption::Basic)))));
        }
        if !filter.kinds.is_empty() {
            let terms = filter.kinds.iter().map(|k| Term::from_field_text(f.kind, k));
            clauses.push((Occur::Must, zero(Box::new(TermSetQuery::new(terms)))));
        }
        clauses
    }

    /// The `limit` best chunks for a free-text query, by BM25. Query syntax is tantivy's
    /// (`"a phrase"`, `+must`, `-not`); syntax errors are forgiven (lenient parsing).
    pub fn search(&self, query: &str, limit: usize, filter: &Filter) -> Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let mut hits = Vec::with_capacity(limit);
        for (score, addr) in self.top_docs(&searcher, query, limit, filter)? {
            let d: TantivyDocument = searcher.doc(addr).map_err(|e| self.err("reading a stored chunk", e))?;
            if let Some(record) = self.record(&d) {
                hits.push(Hit { score, record });
            }
        }
        Ok(hits)
    }

    /// As [`LexicalIndex::search`], the chunk ids only (from the `id` fast field, no stored
    /// document read): what a fused search ranks before it fetches its final top k.
    pub fn search_ids(&self, query: &str, limit: usize, filter: &Filter) -> Result<Vec<(f32, u64)>> {
        let searcher = self.reader.searcher();
        let top = self.top_docs(&searcher, query, limit, filter)?;
        let columns = searcher
            .segment_readers()
            .iter()
            .map(|seg| seg.fast_fields().u64("id"))
            .collect::<tantivy::Result<Vec<_>>>()
            .map_err(|e| self.err("id column", e))?;
        Ok(top
            .into_iter()
            .filter_map(|(score, addr)| Some((score, columns[addr.segment_ord as usize].first(addr.doc_id)?)))
            .collect())
    }

    fn top_docs(
        &self,
        searcher: &tantivy::Searcher,
        query: &str,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<(f32, tantivy::DocAddress)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let parser = QueryParser::for_index(&self.index, vec![self.fields.text]);
        let (parsed, _errors) = parser.parse_query_lenient(query);
        let parsed = without_common_terms(searcher, parsed);
        let filters = self.filter_clauses(filter);
        // Without filters the parsed query (a union of term queries) is searched as it is:
        // wrapped in another BooleanQuery it would reach tantivy's top-k collector as an
        // opaque scorer and lose block-max WAND (BM25 p50 at 1M chunks: 10.2 -> 3.0 ms,
        // benches/retrieval.rs).
        let q: Box<dyn Query> = if filters.is_empty() {
            parsed
        } else {
            let mut clauses = vec![(Occur::Must, parsed)];
            clauses.extend(filters);
            Box::new(BooleanQuery::new(clauses))
        };
        searcher.search(&q, &TopDocs::with_limit(limit).order_by_score()).map_err(|e| self.err("search", e))
    }

    fn record(&self, d: &TantivyDocument) -> Option<ChunkRecord> {
        let f = self.fields;
        let u = |field| d.get_first(field).and_then(|v| v.as_u64());
        let s = |field| d.get_first(field).and_then(|v| v.as_str()).map(str::to_string);
        Some(ChunkRecord {
            id: u(f.id)?,
            doc: s(f.doc)?,
            path: s(f.path)?,
            kind: s(f.kind)?.parse().ok()?,
            chunk: u32::try_from(u(f.chunk)?).ok()?,
            start: u(f.start)?,
            end: u(f.end)?,
            text: s(f.text)?,
        })
    }

    /// The records of the given ids that exist (committed ones only).
    pub fn get(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>> {
        let searcher = self.reader.searcher();
        // Each id's postings, read straight from each segment's term dictionary: a query
        // (`TermSetQuery`) would build an FST of the ids first, whose builder alone allocates
        // more than reading ten chunks does.
        let mut docs = Vec::with_capacity(ids.len());
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            let inverted = seg.inverted_index(self.fields.id).map_err(|e| self.err("id terms", e))?;
            let alive = seg.alive_bitset();
            for &id in ids {
                let term = Term::from_field_u64(self.fields.id, id);
                let postings = inverted
                    .read_postings(&term, tantivy::schema::IndexRecordOption::Basic)
                    .map_err(|e| self.err("id postings", e))?;
                let Some(mut postings) = postings else { continue };
                let mut doc = postings.doc();
                while doc != tantivy::TERMINATED {
                    if alive.is_none_or(|a| a.is_alive(doc)) {
                        docs.push(tantivy::DocAddress::new(ord as u32, doc));
                    }
                    doc = postings.advance();
                }
            }
        }
        docs.sort_unstable();
        docs.dedup();
        let mut out = Vec::with_capacity(docs.len());
        for addr in docs {
            let d: TantivyDocument = searcher.doc(addr).map_err(|e| self.err("reading a stored chunk", e))?;
            out.extend(self.record(&d));
        }
        Ok(out)
    }

    /// Every committed chunk id, ascending (duplicates kept, so a consistency check sees them).
    pub fn ids(&self) -> Result<Vec<u64>> {
        let searcher = self.reader.searcher();
        let mut out = Vec::new();
        for seg in searcher.segment_readers() {
            let col = seg.fast_fields().u64("id").map_err(|e| self.err("id column", e))?;
            let alive = seg.alive_bitset();
            for doc in 0..seg.max_doc() {
                if alive.is_none_or(|a| a.is_alive(doc))
                    && let Some(v) = col.first(doc)
                {
                    out.push(v);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Number of committed chunks.
    pub fn count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

/// `parsed` without the words found in more than [`COMMON_TERM_SHARE`] of the chunks, when it
/// is a plain union of words (what the parser makes of text without query syntax); when every
/// word is that common, the rarest one alone. Any other query as it is.
fn without_common_terms(searcher: &tantivy::Searcher, parsed: Box<dyn Query>) -> Box<dyn Query> {
    let Some(union) = parsed.downcast_ref::<BooleanQuery>() else { return parsed };
    let limit = COMMON_TERM_SHARE * searcher.num_docs() as f64;
    let mut kept: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let mut rarest: Option<(u64, &dyn Query)> = None;
    for (occur, clause) in union.clauses() {
        let Some(term) = clause.downcast_ref::<TermQuery>().filter(|_| *occur == Occur::Should) else {
            return parsed;
        };
        let df = searcher.doc_freq(term.term()).unwrap_or(0);
        if (df as f64) <= limit {
            kept.push((Occur::Should, clause.box_clone()));
        }
        if rarest.is_none_or(|(least, _)| df < least) {
            rarest = Some((df, clause.as_ref()));
        }
    }
    if kept.len() == union.clauses().len() {
        return parsed;
    }
    match (kept.is_empty(), rarest) {
        // Every word is common: the rarest ranks best among them and has the shortest list.
        (true, Some((_, clause))) => clause.box_clone(),
        (true, None) => parsed,
        (false, _) => Box::new(BooleanQuery::new(kept)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metarag_core::DocKind;

    fn rec(id: u64, path: &str, kind: DocKind, text: &str) -> ChunkRecord {
        let (doc, chunk) = (path.to_string(), id as u32);
        ChunkRecord {
            id,
            doc: doc.clone(),
            path: doc,
            kind,
            chunk,
            start: 0,
            end: text.len() as u64,
            text: text.into(),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("metarag-lexical-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// (id, score) of every hit, best first.
    fn ranked(lex: &LexicalIndex, q: &str, filter: &Filter) -> Vec<(u64, f32)> {
        lex.search(q, 50, filter).unwrap().into_iter().map(|h| (h.record.id, h.score)).collect()
    }

    #[test]
    fn ids_only_search_ranks_as_the_full_search_and_optimize_merges_without_changing_it() {
        let dir = temp("merge");
        let lex = LexicalIndex::open_or_create(&dir).unwrap();
        let words = ["harbour", "ships", "loan", "holland", "river", "bridge", "tax", "census"];
        // Four commits, four segments; texts mix the words with different frequencies.
        for batch in 0..4u64 {
            let recs: Vec<ChunkRecord> = (0..25u64)
                .map(|i| {
                    let id = batch * 100 + i;
                    let text: Vec<&str> = (0..12).map(|j| words[((id * 7 + j * j * 3) % 8) as usize]).collect();
                    let (path, kind) =
                        if i % 3 == 0 { ("docs/a.md", DocKind::Markdown) } else { ("b.txt", DocKind::Text) };
                    rec(id, path, kind, &text.join(" "))
                })
                .collect();
            lex.add(&recs).unwrap();
            lex.commit().unwrap();
        }
        assert!(lex.index.searchable_segment_ids().unwrap().len() > MERGE_ABOVE);
        let docs_only = Filter { path_prefix: Some("docs".into()), ..Filter::default() };
        let queries =
            [("holland loan", Filter::default()), ("river bridge tax", docs_only), ("census", Filter::default())];
        let before: Vec<Vec<(u64, f32)>> = queries.iter().map(|(q, f)| ranked(&lex, q, f)).collect();
        for ((q, f), full) in queries.iter().zip(&before) {
            assert!(!full.is_empty(), "{q} finds something");
            let ids: Vec<(u64, f32)> = lex.search_ids(q, 50, f).unwrap().into_iter().map(|(s, id)| (id, s)).collect();
            assert_eq!(&ids, full, "ids-only search of {q:?} differs from the full search");
        }
        lex.optimize().unwrap();
        assert_eq!(lex.index.searchable_segment_ids().unwrap().len(), 1, "optimize merges into one segment");
        for ((q, f), old) in queries.iter().zip(&before) {
            let new = ranked(&lex, q, f);
            assert_eq!(new.len(), old.len(), "{q}");
            // Same hits, same scores (ties may come back in another order across segments).
            let key = |v: &[(u64, f32)]| {
                let mut v: Vec<(u64, u32)> = v.iter().map(|&(id, s)| (id, (s * 1e4).round() as u32)).collect();
                v.sort_unstable();
                v
            };
            assert_eq!(key(&new), key(old), "{q}: results changed by the merge");
        }
        drop(lex);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A word in more than [`COMMON_TERM_SHARE`] of the chunks is left out of a plain query's BM25 search: the
    /// hits are the rest of the query's, ranked as the query without that word would rank
    /// them; a query of only such words is searched as its rarest word; one with query syntax as
    /// it is.
    #[test]
    fn words_in_most_chunks_are_left_out_of_plain_queries() {
        let dir = temp("common");
        let lex = LexicalIndex::open_or_create(&dir).unwrap();
        // "report" in 8 of 10 chunks; "harbour" in 3, "census" in 2 (one with both).
        let recs: Vec<ChunkRecord> = (0..10u64)
            .map(|i| {
                let mut words = vec!["filler"; 6];
                if i < 8 {
                    words.push("report");
                }
                if i % 4 == 1 {
                    words.push("harbour");
                }
                if i == 1 || i == 6 {
                    words.push("census");
                }
                rec(i, "a.txt", DocKind::Text, &words.join(" "))
            })
            .collect();
        lex.add(&recs).unwrap();
        lex.commit().unwrap();
        let all = Filter::default();
        let ids = |q: &str| ranked(&lex, q, &all).into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(ids("the harbour report census"), ids("harbour census"));
        assert_eq!(ranked(&lex, "harbour report", &all), ranked(&lex, "harbour", &all));
        // Only common words: the rarest alone ("report", in 8 chunks; "filler" is in all 10).
        assert_eq!(ranked(&lex, "report filler", &all), ranked(&lex, "report", &all));
        assert_eq!(ids("filler report").len(), 8);
        // Query syntax (a required word, a phrase) is not touched.
        assert_eq!(ids("+report harbour").len(), 8);
        assert_eq!(ids("\"filler report\" census").len(), 8);
        drop(lex);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn get_reads_the_live_records_of_the_ids_across_segments() {
        let dir = temp("get");
        let lex = LexicalIndex::open_or_create(&dir).unwrap();
        // Three segments; b.txt is deleted after its segment is written, then c.txt's first
        // version is replaced by a second one with the same ids.
        lex.add(&[rec(1, "a.txt", DocKind::Text, "one"), rec(2, "a.txt", DocKind::Text, "two")]).unwrap();
        lex.commit().unwrap();
        // (d.txt keeps the second segment alive with two deleted documents in it.)
        lex.add(&[
            rec(3, "b.txt", DocKind::Text, "three"),
            rec(4, "c.txt", DocKind::Text, "old four"),
            rec(5, "d.txt", DocKind::Text, "five"),
        ])
        .unwrap();
        lex.commit().unwrap();
        lex.delete_document("b.txt").unwrap();
        lex.delete_document("c.txt").unwrap();
        lex.add(&[rec(4, "c.txt", DocKind::Text, "new four")]).unwrap();
        lex.commit().unwrap();
        let texts = |ids: &[u64]| {
            let mut got: Vec<(u64, String)> = lex.get(ids).unwrap().into_iter().map(|r| (r.id, r.text)).collect();
            got.sort();
            got
        };
        // Deleted and unknown ids are absent; a repeated id is read once; order does not matter.
        assert_eq!(
            texts(&[4, 3, 1, 99, 1, 5]),
            vec![(1, "one".to_string()), (4, "new four".to_string()), (5, "five".to_string())]
        );
        assert_eq!(texts(&[]), vec![]);
        assert_eq!(texts(&[2]), vec![(2, "two".to_string())]);
        lex.optimize().unwrap();
        assert_eq!(texts(&[1, 2, 3, 4, 5]).len(), 4, "the same after the merge");
        drop(lex);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

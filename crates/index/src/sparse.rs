//! BM25 as sparse vectors, for a Qdrant collection whose sparse vector uses the IDF modifier.
//!
//! Qdrant scores a sparse query `q` against a document `d` as `Σ idf(t) · q[t] · d[t]` when the
//! sparse vector is configured with `Modifier::Idf` (the server keeps the document frequencies).
//! So BM25 splits in two:
//!
//! - the document side carries the saturated, length-normalised term frequency
//!   `tf · (k1 + 1) / (tf + k1 · (1 − b + b · len / avg_len))` ([`bm25_document_vector`]);
//! - the query side carries a weight of 1 per distinct term ([`bm25_query_vector`]);
//! - the server multiplies by `idf(t)`.
//!
//! Terms arrive already analysed (tokenised and stemmed the way the lexical index does it); this
//! module only counts and hashes them. A term becomes a sparse index through [`term_id`].

use std::collections::{BTreeMap, HashMap};

use crate::store::Sparse;

/// FNV-1a 32-bit offset basis.
const FNV_OFFSET: u32 = 0x811c_9dc5;
/// FNV-1a 32-bit prime.
const FNV_PRIME: u32 = 0x0100_0193;

/// The sparse index of a term: the 32-bit FNV-1a hash of its UTF-8 bytes.
///
/// Stable across runs, platforms and versions (part of the index format: documents and queries
/// must agree). Distinct terms may collide; the vectors then sum their weights at the shared
/// index, which adds a little noise to BM25 and nothing worse.
///
/// ```
/// use metarag_index::term_id;
/// assert_eq!(term_id(""), 0x811c_9dc5);
/// assert_eq!(term_id("a"), 0xe40c_292c);
/// assert_eq!(term_id("foobar"), 0xbf9c_f968);
/// ```
pub fn term_id(term: &str) -> u32 {
    term.as_bytes().iter().fold(FNV_OFFSET, |h, &byte| (h ^ u32::from(byte)).wrapping_mul(FNV_PRIME))
}

/// Folds `(index, weight)` pairs into a [`Sparse`] with ascending unique indices, summing the
/// weights of equal indices (hash collisions).
fn collect(pairs: impl IntoIterator<Item = (u32, f32)>) -> Sparse {
    let mut acc: BTreeMap<u32, f32> = BTreeMap::new();
    for (index, weight) in pairs {
        *acc.entry(index).or_insert(0.0) += weight;
    }
    let (indices, values) = acc.into_iter().unzip();
    Sparse { indices, values }
}

/// The document side of BM25 for one chunk whose analysed terms are `terms` (in order, with
/// repeats): for each distinct term, `tf · (k1 + 1) / (tf + k1 · (1 − b + b · len / avg_len))`
/// where `tf` is its count and `len` is `terms.len()`.
///
/// `avg_len` is the average chunk length in terms over the corpus; a non-positive or non-finite
/// `avg_len` disables length normalisation (`len / avg_len` taken as 1). Indices are
/// [`term_id`]s, ascending and unique; weights of colliding terms are summed. No terms give an
/// empty vector.
///
/// ```
/// use metarag_index::bm25_document_vector;
/// let v = bm25_document_vector(&["rust".into(), "rust".into()], 2.0, 1.2, 0.75);
/// // tf = 2, len = avg_len: 2 · 2.2 / (2 + 1.2) = 1.375
/// assert!((v.values[0] - 1.375).abs() < 1e-6);
/// ```
pub fn bm25_document_vector(terms: &[String], avg_len: f32, k1: f32, b: f32) -> Sparse {
    let mut tf: HashMap<&str, u32> = HashMap::new();
    for t in terms {
        *tf.entry(t.as_str()).or_insert(0) += 1;
    }
    let ratio = if avg_len.is_finite() && avg_len > 0.0 { terms.len() as f32 / avg_len } else { 1.0 };
    let norm = k1 * (1.0 - b + b * ratio);
    collect(tf.into_iter().map(|(term, n)| {
        let n = n as f32;
        (term_id(term), n * (k1 + 1.0) / (n + norm))
    }))
}

/// The query side of BM25: weight 1 for each distinct term of `terms` (repeats count once), so
/// the server's score is `Σ idf(t) · doc_weight(t)` over the query's terms. Indices are
/// [`term_id`]s, ascending and unique; distinct terms that collide sum to 2 (or more).
///
/// ```
/// use metarag_index::{bm25_query_vector, term_id};
/// let v = bm25_query_vector(&["a".into(), "a".into()]);
/// assert_eq!(v.indices, vec![term_id("a")]);
/// assert_eq!(v.values, vec![1.0]);
/// ```
pub fn bm25_query_vector(terms: &[String]) -> Sparse {
    let mut seen: Vec<&str> = terms.iter().map(String::as_str).collect();
    seen.sort_unstable();
    seen.dedup();
    collect(seen.into_iter().map(|t| (term_id(t), 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn weight(v: &Sparse, term: &str) -> Option<f32> {
        let id = term_id(term);
        v.indices.iter().position(|&i| i == id).map(|p| v.values[p])
    }

    fn assert_sorted_unique(v: &Sparse) {
        assert_eq!(v.indices.len(), v.values.len());
        assert!(v.indices.windows(2).all(|w| w[0] < w[1]), "{:?}", v.indices);
    }

    #[test]
    fn fnv1a_reference_values() {
        // Published FNV-1a 32 test vectors.
        assert_eq!(term_id(""), 0x811c_9dc5);
        assert_eq!(term_id("a"), 0xe40c_292c);
        assert_eq!(term_id("b"), 0xe70c_2de5);
        assert_eq!(term_id("foobar"), 0xbf9c_f968);
        // Non-ASCII terms hash their UTF-8 bytes.
        assert_eq!(term_id("é"), (((FNV_OFFSET ^ 0xc3).wrapping_mul(FNV_PRIME)) ^ 0xa9).wrapping_mul(FNV_PRIME));
    }

    #[test]
    fn document_weights_by_hand() {
        // len = 4, avg_len = 2, k1 = 1.2, b = 0.75:
        // norm = 1.2 · (0.25 + 0.75 · 2) = 2.1
        // "cat" tf 2: 2 · 2.2 / (2 + 2.1) = 4.4 / 4.1
        // "dog", "sat" tf 1: 2.2 / 3.1
        let v = bm25_document_vector(&terms("cat dog cat sat"), 2.0, 1.2, 0.75);
        assert_sorted_unique(&v);
        assert_eq!(v.indices.len(), 3);
        let close = |a: Option<f32>, b: f32| a.is_some_and(|a| (a - b).abs() < 1e-6);
        assert!(close(weight(&v, "cat"), 4.4 / 4.1));
        assert!(close(weight(&v, "dog"), 2.2 / 3.1));
        assert!(close(weight(&v, "sat"), 2.2 / 3.1));
    }

    #[test]
    fn document_weights_without_length_normalisation() {
        // b = 0: norm = k1 whatever the length; tf 3, k1 = 1: 3 · 2 / (3 + 1) = 1.5
        let v = bm25_document_vector(&terms("x x x"), 100.0, 1.0, 0.0);
        assert_eq!(v.indices, vec![term_id("x")]);
        assert!((v.values[0] - 1.5).abs() < 1e-6);
        // A broken avg_len falls back to len / avg_len = 1: tf 1, k1 1.2, b 0.75 → 2.2 / 2.2 = 1
        for avg in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let v = bm25_document_vector(&terms("y"), avg, 1.2, 0.75);
            assert!((v.values[0] - 1.0).abs() < 1e-6, "avg_len {avg}: {:?}", v.values);
        }
    }

    #[test]
    fn document_weights_saturate_and_shrink_with_length() {
        let short = bm25_document_vector(&terms("a b"), 4.0, 1.2, 0.75);
        let long = bm25_document_vector(&terms("a b c d e f g h"), 4.0, 1.2, 0.75);
        assert!(weight(&short, "a") > weight(&long, "a"));
        let many: Vec<String> = std::iter::repeat_n("z".to_owned(), 1000).collect();
        let v = bm25_document_vector(&many, 1000.0, 1.2, 0.75);
        assert!(v.values[0] < 2.2 && v.values[0] > 2.19, "{:?}", v.values);
    }

    #[test]
    fn empty_terms_give_empty_vectors() {
        assert_eq!(bm25_document_vector(&[], 10.0, 1.2, 0.75), Sparse::default());
        assert_eq!(bm25_query_vector(&[]), Sparse::default());
    }

    #[test]
    fn query_weights_are_one_per_distinct_term() {
        let v = bm25_query_vector(&terms("b a b c a"));
        assert_sorted_unique(&v);
        let mut expected: Vec<u32> = ["a", "b", "c"].iter().map(|t| term_id(t)).collect();
        expected.sort_unstable();
        assert_eq!(v.indices, expected);
        assert_eq!(v.values, vec![1.0; 3]);
    }

    #[test]
    fn collisions_are_summed() {
        let v = collect([(7, 0.5), (3, 1.0), (7, 0.25)]);
        assert_eq!(v.indices, vec![3, 7]);
        assert_eq!(v.values, vec![1.0, 0.75]);
    }

    #[test]
    fn vectors_are_deterministic() {
        let t = terms("the quick brown fox jumps over the lazy dog the end");
        assert_eq!(bm25_document_vector(&t, 8.0, 1.2, 0.75), bm25_document_vector(&t, 8.0, 1.2, 0.75));
        let v = bm25_document_vector(&t, 8.0, 1.2, 0.75);
        assert_sorted_unique(&v);
        assert_eq!(v.indices.len(), 9);
    }
}

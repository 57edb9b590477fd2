//! Extractive decoding: a suffix automaton over the token ids of the context chunks, so a
//! decoder can only write token sequences that occur contiguously inside one chunk.
//!
//! ```
//! use metarag_generate::constrain::SpanIndex;
//! let index = SpanIndex::new(&[vec![1, 2, 3], vec![2, 4]]);
//! let s = index.advance(index.root(), 2).unwrap();
//! assert_eq!(index.allowed(s), vec![3, 4]); // "2 3" and "2 4" are spans, "2 2" is not
//! assert!(index.contains(&[1, 2, 3]) && !index.contains(&[3, 2]));
//! let src = index.locate(index.walk(&[2, 4]).unwrap(), 2).unwrap();
//! assert_eq!((src.chunk, src.tokens), (1, 0..2));
//! ```

use crate::SpanSource;

/// A state of the automaton: the set of spans that end at the same positions.
pub type State = usize;

#[derive(Debug, Clone)]
struct Node {
    len: usize,
    link: Option<usize>,
    /// Transitions sorted by token.
    next: Vec<(u32, usize)>,
    /// End position (exclusive, in the concatenated sequence) of the first occurrence.
    first_end: usize,
}

impl Node {
    fn get(&self, t: u32) -> Option<usize> {
        self.next.binary_search_by_key(&t, |&(k, _)| k).ok().map(|i| self.next[i].1)
    }
    fn set(&mut self, t: u32, to: usize) {
        match self.next.binary_search_by_key(&t, |&(k, _)| k) {
            Ok(i) => self.next[i].1 = to,
            Err(i) => self.next.insert(i, (t, to)),
        }
    }
}

/// The suffix automaton of the chunks' token sequences (linear size and build time). Chunks
/// are joined with separator symbols that are never valid tokens, so no state spans two
/// chunks.
#[derive(Debug, Clone)]
pub struct SpanIndex {
    nodes: Vec<Node>,
    /// Start of each chunk in the concatenated sequence.
    starts: Vec<usize>,
    lens: Vec<usize>,
}

/// Separators count down from `u32::MAX`; token ids never get near them.
const SEPARATOR_BASE: u32 = u32::MAX;

impl SpanIndex {
    /// Builds the automaton of `chunks` (token ids of each context chunk, in prompt order).
    pub fn new(chunks: &[Vec<u32>]) -> Self {
        let total: usize = chunks.iter().map(|c| c.len() + 1).sum();
        let mut index = SpanIndex {
            nodes: Vec::with_capacity(2 * total + 1),
            starts: Vec::with_capacity(chunks.len()),
            lens: chunks.iter().map(Vec::len).collect(),
        };
        index.nodes.push(Node { len: 0, link: None, next: Vec::new(), first_end: 0 });
        let mut last = 0;
        let mut pos = 0;
        for (i, c) in chunks.iter().enumerate() {
            index.starts.push(pos);
            for &t in c {
                pos += 1;
                last = index.extend(last, t, pos);
            }
            pos += 1;
            last = index.extend(last, SEPARATOR_BASE - i as u32, pos);
        }
        index
    }

    fn extend(&mut self, last: usize, t: u32, end: usize) -> usize {
        let cur = self.nodes.len();
        self.nodes.push(Node { len: self.nodes[last].len + 1, link: None, next: Vec::new(), first_end: end });
        let mut p = Some(last);
        while let Some(q) = p {
            if self.nodes[q].get(t).is_some() {
                break;
            }
            self.nodes[q].set(t, cur);
            p = self.nodes[q].link;
        }
        match p {
            None => self.nodes[cur].link = Some(0),
            Some(p) => {
                let q = self.nodes[p].get(t).unwrap_or(0);
                if self.nodes[p].len + 1 == self.nodes[q].len {
                    self.nodes[cur].link = Some(q);
                } else {
                    let clone = self.nodes.len();
                    let mut node = self.nodes[q].clone();
                    node.len = self.nodes[p].len + 1;
                    self.nodes.push(node);
                    let mut pp = Some(p);
                    while let Some(x) = pp {
                        if self.nodes[x].get(t) != Some(q) {
                            break;
                        }
                        self.nodes[x].set(t, clone);
                        pp = self.nodes[x].link;
                    }
                    self.nodes[q].link = Some(clone);
                    self.nodes[cur].link = Some(clone);
                }
            }
        }
        cur
    }

    /// The empty span.
    pub fn root(&self) -> State {
        0
    }

    /// Tokens that extend the spans of `state` to longer spans (ascending).
    pub fn allowed(&self, state: State) -> Vec<u32> {
        self.nodes[state].next.iter().map(|&(t, _)| t).filter(|&t| !self.is_separator(t)).collect()
    }

    fn is_separator(&self, t: u32) -> bool {
        t > SEPARATOR_BASE - self.starts.len() as u32
    }

    /// The state after appending `token`, if the longer sequence is still a span.
    pub fn advance(&self, state: State, token: u32) -> Option<State> {
        if self.is_separator(token) {
            return None;
        }
        self.nodes[state].get(token)
    }

    /// The state of a whole sequence, if it is a span of some chunk.
    pub fn walk(&self, tokens: &[u32]) -> Option<State> {
        tokens.iter().try_fold(self.root(), |s, &t| self.advance(s, t))
    }

    /// True if `tokens` occurs contiguously inside one chunk.
    pub fn contains(&self, tokens: &[u32]) -> bool {
        self.walk(tokens).is_some()
    }

    /// Where the span of length `len` that led to `state` first occurs.
    pub fn locate(&self, state: State, len: usize) -> Option<SpanSource> {
        if len == 0 || len > self.nodes[state].len {
            return None;
        }
        let end = self.nodes[state].first_end;
        let start = end - len;
        let chunk = self.starts.partition_point(|&s| s <= start).checked_sub(1)?;
        let offset = start - self.starts[chunk];
        (offset + len <= self.lens[chunk]).then(|| SpanSource { chunk, tokens: offset..offset + len })
    }
}

/// Extractive decoding's constraint: spans of the context chunks that start at a word and
/// end before a word boundary.
#[derive(Debug, Clone)]
pub struct Extractive {
    /// The automaton of the chunks' tokens.
    pub index: SpanIndex,
    /// Tokens that may start an answer (they start a word somewhere in the context).
    starts: Vec<u32>,
    /// Tokens that begin with whitespace or punctuation: a span may end before them.
    boundaries: std::collections::HashSet<u32>,
}

impl Extractive {
    /// Builds the constraint over `chunks` (token ids as in the prompt), using `vocab` to see
    /// which tokens start words.
    pub fn new(vocab: &(impl metarag_core::model::Vocabulary + ?Sized), chunks: &[Vec<u32>]) -> crate::Result<Self> {
        let mut text = std::collections::HashMap::new();
        for &t in chunks.iter().flatten() {
            if let std::collections::hash_map::Entry::Vacant(e) = text.entry(t) {
                e.insert(vocab.decode(&[t])?);
            }
        }
        let get = |t: u32| text.get(&t).map_or("", String::as_str);
        let mut starts = std::collections::BTreeSet::new();
        let mut boundaries = std::collections::HashSet::new();
        for c in chunks {
            for (j, &t) in c.iter().enumerate() {
                let here = get(t);
                // A word starts at token j when the token opens with whitespace, follows
                // whitespace, or the tokenizer puts a separator between the two (word-level
                // vocabularies).
                let word_start = j == 0
                    || here.starts_with(char::is_whitespace)
                    || get(c[j - 1]).ends_with(char::is_whitespace)
                    || {
                        let pair = vocab.decode(&[c[j - 1], t])?;
                        pair.len() > get(c[j - 1]).len() + here.len()
                    };
                // Digits are single tokens, so " 3,000" is [" ", "3", ...]: a whitespace-only
                // token may start a span when a word follows it.
                let next_alnum = c.get(j + 1).is_some_and(|&n| get(n).starts_with(char::is_alphanumeric));
                let opens = here.trim_start().starts_with(char::is_alphanumeric)
                    || (!here.is_empty() && here.trim().is_empty() && next_alnum);
                if word_start && opens {
                    starts.insert(t);
                }
                if word_start || here.starts_with(|ch: char| ch.is_ascii_punctuation()) {
                    boundaries.insert(t);
                }
            }
        }
        Ok(Extractive { index: SpanIndex::new(chunks), starts: starts.into_iter().collect(), boundaries })
    }

    /// Allowed next tokens after `len` answer tokens ending in `state` (stop tokens are added
    /// when the span may end here).
    pub fn allowed(&self, state: State, len: usize, stop: &[u32]) -> Vec<u32> {
        if len == 0 {
            let next = self.index.allowed(state);
            return next.into_iter().filter(|t| self.starts.binary_search(t).is_ok()).collect();
        }
        let mut next = self.index.allowed(state);
        if next.is_empty() || next.iter().any(|t| self.boundaries.contains(t)) {
            next.extend_from_slice(stop);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_contains(chunks: &[Vec<u32>], span: &[u32]) -> bool {
        span.is_empty() || chunks.iter().any(|c| c.windows(span.len()).any(|w| w == span))
    }

    proptest! {
        #[test]
        fn spans_are_exactly_the_substrings_of_one_chunk(
            chunks in proptest::collection::vec(proptest::collection::vec(0u32..4, 0..12), 1..4),
            probe in proptest::collection::vec(0u32..4, 0..6),
        ) {
            let index = SpanIndex::new(&chunks);
            prop_assert_eq!(index.contains(&probe), naive_contains(&chunks, &probe));
            // Allowed continuations are exactly the tokens that keep a span.
            if let Some(s) = index.walk(&probe) {
                for t in 0u32..4 {
                    let mut longer = probe.clone();
                    longer.push(t);
                    prop_assert_eq!(index.allowed(s).contains(&t), naive_contains(&chunks, &longer));
                }
                if !probe.is_empty() {
                    let src = index.locate(s, probe.len()).unwrap();
                    prop_assert_eq!(&chunks[src.chunk][src.tokens.clone()], &probe[..]);
                }
            }
        }
    }

    #[test]
    fn no_span_crosses_a_chunk_boundary() {
        let index = SpanIndex::new(&[vec![1, 2], vec![3, 4]]);
        assert!(index.contains(&[1, 2]) && index.contains(&[3, 4]));
        assert!(!index.contains(&[2, 3]));
        let end = index.walk(&[1, 2]).unwrap();
        assert!(index.allowed(end).is_empty());
    }
}

//! KV-cache arithmetic on plain arrays: which cached positions a sliding window keeps
//! (attention sinks plus the most recent tokens), when positions must be rebased, and the
//! tensor operations the scorer and the decoder apply to a cache (keep positions, copy one row
//! into N, select rows).
//!
//! No ONNX Runtime here: [`crate::CausalLm`] turns its `present` tensors into these arrays
//! (`[batch, kv_heads, positions, head_dim]`) and back, so every rule is tested without a model.
//! For example, with 600 tokens cached, 256 more coming, at most 512 kept and 4 sinks,
//! [`slide`] keeps positions `0..4` and `348..600`.

use std::ops::Range;

use ndarray::{Array4, ArrayView4, Axis};

/// The cached positions to keep so that `incoming` more tokens fit in `max_context`: the
/// first `sinks` (attention sinks, as in StreamingLLM: without them a sliding window degrades
/// the model) and the most recent ones, in order. `None` when everything fits already.
pub(crate) fn slide(len: usize, incoming: usize, sinks: usize, max_context: usize) -> Option<[Range<usize>; 2]> {
    if len + incoming <= max_context {
        return None;
    }
    let sinks = sinks.min(len);
    let recent = max_context.saturating_sub(incoming + sinks).min(len - sinks);
    Some([0..sinks, len - recent..len])
}

/// Whether `incoming` tokens from `next_position` on would pass `max_position` (then the
/// kept tokens are encoded again from position 0).
pub(crate) fn must_rebase(next_position: i64, incoming: usize, max_position: usize) -> bool {
    usize::try_from(next_position).map_or(true, |p| p + incoming > max_position)
}

/// The positions `keep` (ranges of axis 2, in order) of a cache tensor, as a new array.
pub(crate) fn keep_positions(a: ArrayView4<'_, f32>, keep: &[Range<usize>]) -> Result<Array4<f32>, String> {
    let (.., positions, _) = a.dim();
    if let Some(r) = keep.iter().find(|r| r.start > r.end || r.end > positions) {
        return Err(format!("cannot keep positions {r:?} of a cache of {positions}"));
    }
    let parts: Vec<_> = keep.iter().map(|r| a.slice_axis(Axis(2), r.clone().into())).collect();
    let owned = ndarray::concatenate(Axis(2), &parts).map_err(|e| e.to_string())?;
    Ok(owned.as_standard_layout().into_owned())
}

/// Row 0 of a cache tensor copied into `n` rows.
pub(crate) fn broadcast_rows(a: ArrayView4<'_, f32>, n: usize) -> Result<Array4<f32>, String> {
    let (rows, h, p, d) = a.dim();
    if rows == 0 {
        return Err("cannot fork an empty batch".into());
    }
    let row = a.index_axis(Axis(0), 0);
    let mut out = Array4::<f32>::zeros((n, h, p, d));
    for mut r in out.outer_iter_mut() {
        r.assign(&row);
    }
    Ok(out)
}

/// The rows `keep` (in that order) of a cache tensor.
pub(crate) fn select_rows(a: ArrayView4<'_, f32>, keep: &[usize]) -> Result<Array4<f32>, String> {
    let rows = a.dim().0;
    if let Some(bad) = keep.iter().find(|&&i| i >= rows) {
        return Err(format!("row {bad} of a batch of {rows}"));
    }
    Ok(a.select(Axis(0), keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache whose value at [b, h, p, d] encodes all four indices.
    fn cache(rows: usize, positions: usize) -> Array4<f32> {
        Array4::from_shape_fn((rows, 2, positions, 3), |(b, h, p, d)| (b * 1000 + h * 100 + p) as f32 + d as f32 / 10.0)
    }

    #[test]
    fn slide_keeps_sinks_and_the_most_recent_and_makes_room() {
        assert_eq!(slide(600, 256, 4, 512), Some([0..4, 348..600]));
        assert_eq!(slide(256, 256, 4, 512), None);
        // Every small case: the kept tokens plus the incoming ones fit, the sinks are the
        // first tokens, the rest is a suffix, and nothing that fits is dropped.
        for max_context in 1..24 {
            for sinks in 0..5 {
                for len in 0..30 {
                    for incoming in 1..max_context {
                        let Some([s, r]) = slide(len, incoming, sinks, max_context) else {
                            assert!(len + incoming <= max_context);
                            continue;
                        };
                        let kept = s.len() + r.len();
                        assert_eq!(s, 0..sinks.min(len));
                        assert_eq!(r.end, len, "the most recent tokens are kept");
                        assert!(s.end <= r.start, "{s:?} {r:?}");
                        if incoming + sinks <= max_context {
                            assert_eq!(kept + incoming, max_context.min(len + incoming), "{len} {incoming} {sinks}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rebase_when_positions_would_pass_the_limit() {
        assert!(!must_rebase(8000, 192, 8192));
        assert!(must_rebase(8000, 193, 8192));
        assert!(must_rebase(-1, 1, 8192), "a negative position is never valid");
    }

    #[test]
    fn keep_positions_concatenates_the_ranges_in_order() {
        let a = cache(2, 10);
        let k = keep_positions(a.view(), &[0..2, 7..10]).unwrap();
        assert_eq!(k.dim(), (2, 2, 5, 3));
        let kept: Vec<usize> = (0..5).map(|p| (k[[1, 1, p, 0]] as usize) % 100).collect();
        assert_eq!(kept, [0, 1, 7, 8, 9]);
        assert_eq!(k[[1, 1, 3, 2]], a[[1, 1, 8, 2]]);
        assert!(k.is_standard_layout());
        assert!(keep_positions(a.view(), std::slice::from_ref(&(8..11))).unwrap_err().contains("8..11"));
        assert_eq!(keep_positions(a.view(), &[0..0, 10..10]).unwrap().dim(), (2, 2, 0, 3));
    }

    #[test]
    fn broadcast_and_select_rows() {
        let a = cache(1, 4);
        let b = broadcast_rows(a.view(), 3).unwrap();
        assert_eq!(b.dim(), (3, 2, 4, 3));
        for r in 0..3 {
            assert_eq!(b.index_axis(Axis(0), r), a.index_axis(Axis(0), 0));
        }
        assert!(broadcast_rows(cache(0, 4).view(), 2).is_err());
        let c = cache(4, 2);
        let s = select_rows(c.view(), &[3, 1]).unwrap();
        assert_eq!(s.index_axis(Axis(0), 0), c.index_axis(Axis(0), 3));
        assert_eq!(s.index_axis(Axis(0), 1), c.index_axis(Axis(0), 1));
        assert_eq!(select_rows(c.view(), &[4]).unwrap_err(), "row 4 of a batch of 4");
    }
}

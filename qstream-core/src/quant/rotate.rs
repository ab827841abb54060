//! Incoherence rotation: a randomized block Hadamard transform of a matrix's input dimension.
//!
//! For a group size `g` (a power of two dividing `cols`), the rotation `R` is the
//! `cols × cols` orthonormal matrix `R = blockdiag(H_g, …, H_g) · D`, where `D` is the
//! diagonal of random signs `s_j ∈ {+1, −1}` ([`sign`]) and `H_g` the Walsh–Hadamard matrix
//! of order `g` scaled by `1/√g` (symmetric, `H_g·H_g = I`).
//!
//! A rotated tensor stores every weight row `w` as `R·w`; at run time the activation `x` is
//! rotated the same way, and `(R·w)·(R·x) = w·x` because `RᵀR = I`. Rotating spreads a
//! row's few large weights over `g` values, so block quantizers see flatter blocks (the
//! "incoherence processing" of QuIP / QuaRot). A row fetched by index (an embedding) is
//! turned back with [`unrotate`]: `w = Dᵀ·H_g·(R·w)`.
//!
//! The signs are a fixed function of the column index (docs/qsf.md §Tensor directory):
//! `s_j = −1` iff bit 63 of the `(j+1)`-th output of SplitMix64 seeded with [`SEED`] is set.

/// Seed of the sign sequence ("QSTROT01" as a little-endian u64 — part of the file format).
pub const SEED: u64 = u64::from_le_bytes(*b"QSTROT01");

/// The largest group [`group_for`] picks by default.
pub const DEFAULT_MAX_GROUP: usize = 256;

/// The `(j+1)`-th SplitMix64 output for the state [`SEED`] (the generator's state after
/// `j+1` increments of the golden-ratio constant).
#[inline]
fn splitmix(j: usize) -> u64 {
    let mut z = SEED.wrapping_add((j as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sign `s_j` (±1.0) of column `j`.
#[inline]
pub fn sign(j: usize) -> f32 {
    if splitmix(j) >> 63 == 1 {
        -1.0
    } else {
        1.0
    }
}

/// The largest power of two that divides `cols` and is at most `max_group`
/// (`None` when that is below 2, i.e. odd `cols` or `max_group < 2`).
pub fn group_for(cols: usize, max_group: usize) -> Option<usize> {
    if cols == 0 {
        return None;
    }
    let mut g = 1usize << cols.trailing_zeros().min(usize::BITS - 1);
    while g > max_group.max(1) {
        g /= 2;
    }
    (g >= 2).then_some(g)
}

/// True when `g` is a valid group for `cols` columns (a power of two ≥ 2 dividing `cols`).
pub fn valid_group(g: usize, cols: usize) -> bool {
    g >= 2 && g.is_power_of_two() && cols.is_multiple_of(g)
}

/// Unnormalized in-place Walsh–Hadamard transform of `v` (length a power of two).
#[inline]
fn fwht(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
        h *= 2;
    }
}

/// `x ← R·x` for one row (`x.len()` a multiple of `g`; see the module docs).
pub fn rotate(x: &mut [f32], g: usize) {
    debug_assert!(valid_group(g, x.len()));
    let scale = 1.0 / (g as f32).sqrt();
    for (j, v) in x.iter_mut().enumerate() {
        *v *= sign(j) * scale;
    }
    for grp in x.chunks_exact_mut(g) {
        fwht(grp);
    }
}

/// `x ← Rᵀ·x` for one row (the inverse of [`rotate`]).
pub fn unrotate(x: &mut [f32], g: usize) {
    debug_assert!(valid_group(g, x.len()));
    let scale = 1.0 / (g as f32).sqrt();
    for grp in x.chunks_exact_mut(g) {
        fwht(grp);
    }
    for (j, v) in x.iter_mut().enumerate() {
        *v *= sign(j) * scale;
    }
}

/// Rotate each of the `n` rows of `xs` (`cols` values each) into `out`.
pub fn rotate_rows(xs: &[f32], cols: usize, g: usize, out: &mut [f32]) {
    out.copy_from_slice(xs);
    for row in out.chunks_exact_mut(cols) {
        rotate(row, g);
    }
}

/// For calibration: add `(R_g·x)_j²` to `sums[i][j]` for every group size
/// `g = 2^(k+1)` with `k < sums.len()` (each needs `cols % g == 0`), for one row `x`.
/// The unnormalized Hadamard of order `2g` is one butterfly stage on top of order `g`, so
/// all sizes cost one transform. `buf` is scratch of `x.len()` values.
pub fn accumulate_rotated_sq(x: &[f32], buf: &mut [f32], sums: &mut [Vec<f64>]) {
    let n = x.len();
    for (j, (b, v)) in buf.iter_mut().zip(x).enumerate() {
        *b = v * sign(j);
    }
    let mut h = 1;
    for s in sums.iter_mut() {
        if !n.is_multiple_of(2 * h) {
            break;
        }
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (buf[j], buf[j + h]);
                buf[j] = a + b;
                buf[j + h] = a - b;
            }
        }
        h *= 2;
        let inv = 1.0 / h as f64; // (1/√g)² with g = h
        for (acc, v) in s.iter_mut().zip(buf.iter()) {
            *acc += (*v as f64) * (*v as f64) * inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::lcg_data as data;

    #[test]
    fn groups() {
        assert_eq!(group_for(576, 256), Some(64));
        assert_eq!(group_for(1536, 256), Some(256));
        assert_eq!(group_for(1536, 64), Some(64));
        assert_eq!(group_for(7, 256), None);
        assert_eq!(group_for(6, 256), Some(2));
        assert!(valid_group(64, 576) && !valid_group(128, 576) && !valid_group(48, 576));
    }

    #[test]
    fn signs_are_balanced_and_fixed() {
        let neg = (0..4096).filter(|&j| sign(j) < 0.0).count();
        assert!((1900..2200).contains(&neg), "{neg}");
        // the sequence is part of the file format: pin its first values
        let first: Vec<i8> = (0..16).map(|j| sign(j) as i8).collect();
        assert_eq!(
            first,
            (0..16)
                .map(|j| if splitmix(j) >> 63 == 1 { -1 } else { 1 })
                .collect::<Vec<_>>()
        );
        assert_eq!(SEED, 0x3130_544F_5254_5351);
    }

    #[test]
    fn rotation_is_orthonormal() {
        for (cols, g) in [(576, 64), (1536, 256), (64, 2), (128, 128)] {
            // columns of R: rotate the unit vectors
            let mut r = vec![0f32; cols * cols];
            for i in 0..cols {
                let mut e = vec![0f32; cols];
                e[i] = 1.0;
                rotate(&mut e, g);
                r[i * cols..(i + 1) * cols].copy_from_slice(&e); // column i of R, as a row
            }
            // RᵀR = I: dot products of R's columns
            for i in (0..cols).step_by(7) {
                for j in 0..cols {
                    let d: f64 = (0..cols)
                        .map(|k| r[i * cols + k] as f64 * r[j * cols + k] as f64)
                        .sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((d - want).abs() < 1e-6, "cols {cols} g {g} ({i},{j}): {d}");
                }
            }
            // RRᵀ = I via unrotate ∘ rotate = identity
            let x = data(cols, 3);
            let mut y = x.clone();
            rotate(&mut y, g);
            let nx: f32 = x.iter().map(|v| v * v).sum();
            let ny: f32 = y.iter().map(|v| v * v).sum();
            assert!((nx - ny).abs() < 1e-5 * nx);
            unrotate(&mut y, g);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn dot_products_are_preserved() {
        let (cols, g) = (576, 64);
        let (mut w, mut x) = (data(cols, 1), data(cols, 2));
        let want: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
        rotate(&mut w, g);
        rotate(&mut x, g);
        let got: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn rotated_second_moments_match_direct_rotation() {
        let cols = 384; // 128·3: groups 2..=128
        let x = data(cols, 5);
        let mut sums = vec![vec![0f64; cols]; 8];
        let mut buf = vec![0f32; cols];
        accumulate_rotated_sq(&x, &mut buf, &mut sums);
        for (k, s) in sums.iter().enumerate() {
            let g = 2usize << k;
            if cols % g != 0 {
                assert!(s.iter().all(|v| *v == 0.0), "g {g}");
                continue;
            }
            let mut y = x.clone();
            rotate(&mut y, g);
            for (a, b) in s.iter().zip(&y) {
                assert!((a - (*b as f64) * (*b as f64)).abs() < 1e-6, "g {g}");
            }
        }
    }

    /// Heavy-tailed rows: Gaussian values with a log-normal scale (`0.02·z·e^n`, z, n standard
    /// normal; kurtosis 3·e⁴ ≈ 164, a Gaussian has 3), heavier-tailed than LLM weights.
    fn heavy_tailed(rows: usize, cols: usize) -> Vec<f32> {
        let u = data(rows * cols * 4, 77);
        let normal = |a: f32, b: f32| {
            let (a, b) = (a + 0.5, b + 0.5); // uniform (0, 1)
            (-2.0 * a.max(1e-7).ln()).sqrt() * (std::f32::consts::TAU * b).cos()
        };
        (0..rows * cols)
            .map(|i| {
                0.02 * normal(u[4 * i], u[4 * i + 1]) * normal(u[4 * i + 2], u[4 * i + 3]).exp()
            })
            .collect()
    }

    fn weight_rmse(
        qt: crate::quant::QuantType,
        w: &[f32],
        rows: usize,
        cols: usize,
        g: Option<usize>,
    ) -> f64 {
        let mut src = w.to_vec();
        if let Some(g) = g {
            src.chunks_exact_mut(cols).for_each(|r| rotate(r, g));
        }
        let p = crate::quant::QuantParams::default();
        let b = crate::quant::quantize(qt, &src, rows, cols, &p).unwrap();
        let mut back = crate::quant::dequantize(qt, 32, &b, rows, cols).unwrap();
        if let Some(g) = g {
            back.chunks_exact_mut(cols).for_each(|r| unrotate(r, g));
        }
        let se: f64 = back
            .iter()
            .zip(w)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        (se / w.len() as f64).sqrt()
    }

    #[test]
    fn rotation_lowers_low_bit_error_on_heavy_tailed_weights() {
        let (rows, cols) = (64, 576);
        let w = heavy_tailed(rows, cols);
        for qt in [crate::quant::QuantType::Q2, crate::quant::QuantType::Q3] {
            let plain = weight_rmse(qt, &w, rows, cols, None);
            let rot = weight_rmse(qt, &w, rows, cols, Some(64));
            eprintln!("{qt}: weight RMSE plain {plain:.5}, rotated {rot:.5}");
            // min/max block quantizers gain ≈ 40% here (a numpy model of them); the
            // error-minimising search (`quant::search`) already clips outliers, so less is left
            assert!(rot < 0.95 * plain, "{qt}: rotated {rot} vs plain {plain}");
        }
    }
}

//! GPTQ-style error feedback (Frantar et al. 2022, "GPTQ: Accurate Post-Training
//! Quantization for Generative Pre-trained Transformers") for the row-wise block types
//! (`q2`, `q3`, `q4`, `q4_sym` and the outlier variants).
//!
//! A matrix `W` (rows × cols) multiplies inputs `x` (cols); with `H = Σ x xᵀ` over
//! calibration inputs, the output error of a quantized row `ŵ` is `(w − ŵ)ᵀ H (w − ŵ)`.
//! GPTQ quantizes the columns of a row in order and, after each column `i`, spreads its
//! error over the columns not yet quantized so that this quadratic form (not the plain
//! squared error) is minimised greedily: with `U` the upper Cholesky factor of `H⁻¹`
//! (`H⁻¹ = Uᵀ U`), `e = (wᵢ − ŵᵢ) / U[i,i]` and `w[j] −= e · U[i,j]` for `j > i`.
//!
//! Block parameters (scale/min, or the symmetric scale) of each block are chosen with the
//! existing error-minimising search (`quant::search`, importance-weighted) when the sweep
//! reaches the block's first column, on the *error-updated* weights; every column of the
//! block then takes the nearest level under those parameters. Outliers (for the outlier
//! types) are picked first on the original weights; when the sweep reaches one it is
//! stored exactly (f16) at its error-updated value, so it contributes no error of its own.
//!
//! `H` is damped by `damp · mean(diag H)` on the diagonal (columns that never saw a
//! non-zero input get a unit diagonal). Rows are independent (same `H`), so they are
//! quantized in parallel. The output is the type's ordinary encoding: GPTQ only changes
//! which codes are chosen, not the file format.

use rayon::prelude::*;

use super::float::{round_f16, write_f16};
use super::search::{self, DEFAULT_ASYM_GRID, MAX_BLOCK};
use super::{q2, q3, q4, QuantType};
use crate::error::{Error, Result};

/// Default damping: fraction of the mean diagonal of `H` added to its diagonal.
pub const DEFAULT_DAMP: f64 = 0.01;

/// The factor GPTQ sweeps with: the upper Cholesky factor `U` of `(H + λI)⁻¹`.
#[derive(Clone)]
pub struct GptqFactor {
    n: usize,
    /// row-major n × n; only `j ≥ i` is meaningful (in sweep order)
    u: Vec<f32>,
    /// sweep order (`perm[k]` = column quantized k-th); `None` = natural order
    perm: Option<Vec<usize>>,
}

impl std::fmt::Debug for GptqFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GptqFactor({}x{})", self.n, self.n)
    }
}

/// Dot product with 4 independent accumulators (vectorizes; a plain `sum` of products is
/// a serial dependency chain).
fn dot4(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let n4 = a.len().min(b.len()) / 4 * 4;
    for (x, y) in a[..n4].chunks_exact(4).zip(b[..n4].chunks_exact(4)) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (x, y) in a[n4..].iter().zip(&b[n4..]) {
        s += x * y;
    }
    s
}

/// Lower Cholesky factor of the symmetric matrix whose lower triangle `lower(i, j)` gives
/// (`j ≤ i`), row-major n × n; `None` if it is not positive definite.
fn cholesky_lower(n: usize, lower: impl Fn(usize, usize) -> f64) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let s = lower(i, j) - dot4(ri, rj);
            if i == j {
                if s.is_nan() || s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of a lower-triangular row-major n × n matrix (lower-triangular again).
fn invert_lower(n: usize, l: &[f64]) -> Vec<f64> {
    let mut m = vec![0f64; n * n];
    let mut row = vec![0f64; n];
    for i in 0..n {
        row[..i].fill(0.0);
        for k in 0..i {
            let c = l[i * n + k];
            if c != 0.0 {
                for (r, v) in row[..=k].iter_mut().zip(&m[k * n..k * n + k + 1]) {
                    *r += c * v;
                }
            }
        }
        let d = l[i * n + i];
        for j in 0..i {
            m[i * n + j] = -row[j] / d;
        }
        m[i * n + i] = 1.0 / d;
    }
    m
}

impl GptqFactor {
    /// Factor `H` (n × n, row-major; only the upper triangle `j ≥ i` is read) damped by
    /// `damp · mean(diag)`. If the damped matrix is still not positive definite (numerical
    /// trouble), the damping is raised tenfold, up to three times.
    pub fn new(h: &[f64], n: usize, damp: f64) -> Result<Self> {
        Self::with_order(h, n, damp, None)
    }

    /// [`GptqFactor::new`] for the "act-order" sweep: columns in decreasing order of
    /// `diag H` (the most active inputs first, while most columns can still absorb their
    /// error). Block parameters are then fixed before the sweep (see [`quantize_row`]).
    pub fn new_act_order(h: &[f64], n: usize, damp: f64) -> Result<Self> {
        if h.len() != n * n {
            return Self::new(h, n, damp);
        }
        let mut perm: Vec<usize> = (0..n).collect();
        perm.sort_by(|&a, &b| h[b * n + b].total_cmp(&h[a * n + a]));
        Self::with_order(h, n, damp, Some(perm))
    }

    fn with_order(h: &[f64], n: usize, damp: f64, perm: Option<Vec<usize>>) -> Result<Self> {
        if h.len() != n * n || n == 0 {
            return Err(Error::InvalidArgument(format!(
                "gptq: H has {} values for {n} columns",
                h.len()
            )));
        }
        let p = |k: usize| perm.as_ref().map_or(k, |v| v[k]);
        // H in sweep order (symmetric lookup into the upper triangle)
        let hp = |a: usize, b: usize| {
            let (r, c) = (p(a), p(b));
            if r <= c {
                h[r * n + c]
            } else {
                h[c * n + r]
            }
        };
        let diag: Vec<f64> = (0..n).map(|i| hp(i, i)).collect();
        if diag.iter().any(|d| !d.is_finite() || *d < 0.0) {
            return Err(Error::InvalidArgument(
                "gptq: H has a negative or non-finite diagonal".into(),
            ));
        }
        let live: Vec<f64> = diag.iter().copied().filter(|d| *d > 0.0).collect();
        let mean = if live.is_empty() {
            1.0
        } else {
            live.iter().sum::<f64>() / live.len() as f64
        };
        let mut lambda = damp.max(0.0) * mean;
        for _ in 0..4 {
            // P·A·P (P = reversal): its lower Cholesky factor L̃ gives A = V·Vᵀ with
            // V = P·L̃·P upper, so A⁻¹ = (V⁻¹)ᵀ·V⁻¹ and U = V⁻¹ = P·L̃⁻¹·P.
            let a = |i: usize, j: usize| {
                // A[n−1−i][n−1−j] (A = H in sweep order, damped)
                let (r, c) = (n - 1 - i, n - 1 - j);
                if r == c {
                    if diag[r] > 0.0 {
                        diag[r] + lambda
                    } else {
                        mean + lambda
                    }
                } else {
                    hp(r, c)
                }
            };
            if let Some(l) = cholesky_lower(n, a) {
                let m = invert_lower(n, &l);
                let mut u = vec![0f32; n * n];
                for i in 0..n {
                    for j in i..n {
                        u[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)] as f32;
                    }
                }
                return Ok(GptqFactor { n, u, perm });
            }
            lambda = if lambda > 0.0 {
                lambda * 10.0
            } else {
                mean * 1e-3
            };
        }
        Err(Error::InvalidArgument(
            "gptq: H is not positive definite even with damping".into(),
        ))
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// The sweep order, if not the natural one.
    pub fn order(&self) -> Option<&[usize]> {
        self.perm.as_deref()
    }

    /// Row `i` of `U` (entries before `i` are zero).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.u[i * self.n..(i + 1) * self.n]
    }
}

/// Whether [`quantize_row`] supports `qt` (a dense base type).
pub fn supports(qt: QuantType) -> bool {
    matches!(
        qt.base(),
        QuantType::Q2 | QuantType::Q3 | QuantType::Q4 | QuantType::Q4Sym
    )
}

/// GPTQ-quantize one row of the dense type `qt` (q2, q3, q4 or q4_sym) into `dst`
/// (`qt.row_bytes(block, w.len())` bytes). `w` is the row; on return it holds the
/// error-updated values (what the outlier types store at their outlier positions).
/// `outliers` (empty, or one flag per column) marks positions kept exact; `importance`
/// weights each block's parameter search.
pub fn quantize_row(
    qt: QuantType,
    block: usize,
    w: &mut [f32],
    outliers: &[bool],
    importance: Option<&[f32]>,
    f: &GptqFactor,
    dst: &mut [u8],
) {
    let cols = w.len();
    assert_eq!(f.cols(), cols, "gptq: factor/row columns");
    assert!(supports(qt) && !qt.is_outlier(), "gptq: {qt} unsupported");
    let block = block.clamp(32, MAX_BLOCK);
    let bb = qt.block_bytes(block);
    let sym = qt == QuantType::Q4Sym;
    let nmax: u8 = match qt {
        QuantType::Q2 => 3,
        QuantType::Q3 => 7,
        _ => 15,
    };
    let is_out = |i: usize| outliers.get(i).copied().unwrap_or(false);
    if let Some(perm) = f.order() {
        quantize_row_act_order(qt, block, nmax, w, &is_out, importance, f, perm, dst);
        return;
    }
    let mut x = [0f32; MAX_BLOCK];
    let mut wt = [0f32; MAX_BLOCK];
    let mut q = [0u8; MAX_BLOCK];
    for (bi, blk) in dst.chunks_exact_mut(bb).enumerate() {
        let start = (bi * block).min(cols);
        let end = (start + block).min(cols);
        let len = end - start;
        gather_block(w, start, len, block, &is_out, importance, &mut x, &mut wt);
        let (d, m) = if sym {
            let d = search::search_sym(&x[..block], Some(&wt[..block]), 2, 1, &mut q[..block]);
            (d, 0.0)
        } else {
            let p = search::search_asym(
                &x[..block],
                Some(&wt[..block]),
                nmax,
                &DEFAULT_ASYM_GRID,
                &mut q[..block],
            );
            (p.d, p.m)
        };
        let id = if d != 0.0 && d.is_finite() {
            1.0 / d
        } else {
            0.0
        };
        for i in start..end {
            let v = w[i];
            let deq = if is_out(i) {
                round_f16(v)
            } else if sym {
                let l = (v * id).round().clamp(-8.0, 7.0);
                q[i - start] = (l + 8.0) as u8;
                d * l
            } else {
                let l = ((v - m) * id).round().clamp(0.0, nmax as f32);
                q[i - start] = l as u8;
                d * l + m
            };
            let u = f.row(i);
            let e = (v - deq) / u[i];
            w[i] = if is_out(i) { deq } else { v };
            if e != 0.0 && e.is_finite() {
                for (wj, uj) in w[i + 1..].iter_mut().zip(&u[i + 1..]) {
                    *wj -= e * uj;
                }
            }
        }
        if sym {
            write_f16(&mut blk[0..2], d);
            q4::pack_nibbles(&q[..block], &mut blk[2..]);
        } else {
            write_f16(&mut blk[0..2], d);
            write_f16(&mut blk[2..4], m);
            match qt {
                QuantType::Q2 => q2::pack_low2(&q[..block], &mut blk[4..]),
                QuantType::Q3 => q3::pack3(&q[..block], &mut blk[4..]),
                _ => q4::pack_nibbles(&q[..block], &mut blk[4..]),
            }
        }
    }
}

/// Fit one block's parameters `(d, m)` (m = 0 for q4_sym) on `x` with weights `wt`.
fn fit_block(sym: bool, nmax: u8, x: &[f32], wt: &[f32], q: &mut [u8]) -> (f32, f32) {
    if sym {
        (search::search_sym(x, Some(wt), 2, 1, q), 0.0)
    } else {
        let p = search::search_asym(x, Some(wt), nmax, &DEFAULT_ASYM_GRID, q);
        (p.d, p.m)
    }
}

/// Write one block (header and packed levels).
fn write_block(qt: QuantType, d: f32, m: f32, q: &[u8], blk: &mut [u8]) {
    write_f16(&mut blk[0..2], d);
    if qt == QuantType::Q4Sym {
        q4::pack_nibbles(q, &mut blk[2..]);
    } else {
        write_f16(&mut blk[2..4], m);
        match qt {
            QuantType::Q2 => q2::pack_low2(q, &mut blk[4..]),
            QuantType::Q3 => q3::pack3(q, &mut blk[4..]),
            _ => q4::pack_nibbles(q, &mut blk[4..]),
        }
    }
}

/// The act-order sweep: block parameters fitted first on the original weights ("static
/// groups"), then columns quantized in `perm` order with error feedback.
#[allow(clippy::too_many_arguments)]
fn quantize_row_act_order(
    qt: QuantType,
    block: usize,
    nmax: u8,
    w: &mut [f32],
    is_out: &dyn Fn(usize) -> bool,
    importance: Option<&[f32]>,
    f: &GptqFactor,
    perm: &[usize],
    dst: &mut [u8],
) {
    let cols = w.len();
    let sym = qt == QuantType::Q4Sym;
    let bb = qt.block_bytes(block);
    let nb = dst.len() / bb;
    let mut params = vec![(0f32, 0f32); nb];
    let mut levels = vec![0u8; nb * block];
    let mut x = [0f32; MAX_BLOCK];
    let mut wt = [0f32; MAX_BLOCK];
    for (bi, p) in params.iter_mut().enumerate() {
        let start = (bi * block).min(cols);
        let len = (start + block).min(cols) - start;
        gather_block(w, start, len, block, is_out, importance, &mut x, &mut wt);
        *p = fit_block(
            sym,
            nmax,
            &x[..block],
            &wt[..block],
            &mut levels[bi * block..(bi + 1) * block],
        );
    }
    let mut wp: Vec<f32> = perm.iter().map(|&c| w[c]).collect();
    for k in 0..cols {
        let i = perm[k];
        let v = wp[k];
        let (d, m) = params[i / block];
        let id = if d != 0.0 && d.is_finite() {
            1.0 / d
        } else {
            0.0
        };
        let deq = if is_out(i) {
            round_f16(v)
        } else if sym {
            let l = (v * id).round().clamp(-8.0, 7.0);
            levels[i] = (l + 8.0) as u8;
            d * l
        } else {
            let l = ((v - m) * id).round().clamp(0.0, nmax as f32);
            levels[i] = l as u8;
            d * l + m
        };
        let u = f.row(k);
        let e = (v - deq) / u[k];
        wp[k] = if is_out(i) { deq } else { v };
        if e != 0.0 && e.is_finite() {
            for (wj, uj) in wp[k + 1..].iter_mut().zip(&u[k + 1..]) {
                *wj -= e * uj;
            }
        }
    }
    for (k, &c) in perm.iter().enumerate() {
        w[c] = wp[k];
    }
    for (bi, blk) in dst.chunks_exact_mut(bb).enumerate() {
        let (d, m) = params[bi];
        write_block(qt, d, m, &levels[bi * block..(bi + 1) * block], blk);
    }
}

/// GPTQ-quantize the rows of a row-major `rows × cols` tensor of the dense type `qt` in
/// parallel; returns the tensor's bytes and (when `outliers` is given) the error-updated
/// weights.
#[allow(clippy::too_many_arguments)]
pub fn quantize_dense(
    qt: QuantType,
    block: usize,
    data: &[f32],
    rows: usize,
    cols: usize,
    outliers: Option<&[bool]>,
    importance: Option<&[f32]>,
    f: &GptqFactor,
) -> Result<(Vec<u8>, Vec<f32>)> {
    if !supports(qt) || qt.is_outlier() || !qt.valid_block(block) {
        return Err(Error::InvalidArgument(format!(
            "gptq: {qt} with block {block} is not supported"
        )));
    }
    if f.cols() != cols || rows.checked_mul(cols) != Some(data.len()) {
        return Err(Error::InvalidArgument(format!(
            "gptq: tensor {rows}x{cols} with {} values, factor for {} columns",
            data.len(),
            f.cols()
        )));
    }
    let rb = qt.row_bytes(block, cols);
    let mut out = vec![0u8; rb * rows];
    let mut upd = data.to_vec();
    out.par_chunks_mut(rb.max(1))
        .zip(upd.par_chunks_mut(cols.max(1)))
        .enumerate()
        .for_each(|(r, (dst, w))| {
            let flags = outliers.map_or(&[][..], |o| &o[r * cols..(r + 1) * cols]);
            quantize_row(qt, block, w, flags, importance, f, dst);
        });
    Ok((out, upd))
}

/// GPTQ-quantize a whole tensor of `qt` (dense q2/q3/q4/q4_sym or an outlier variant;
/// the outliers are chosen exactly as [`quant::quantize`](super::quantize) chooses them).
pub fn quantize_tensor(
    qt: QuantType,
    data: &[f32],
    rows: usize,
    cols: usize,
    params: &super::QuantParams<'_>,
    f: &GptqFactor,
) -> Result<Vec<u8>> {
    if qt.is_outlier() {
        return super::outlier::quantize_gptq(qt, data, rows, cols, params, f);
    }
    Ok(quantize_dense(
        qt,
        params.block_size,
        data,
        rows,
        cols,
        None,
        params.importance,
        f,
    )?
    .0)
}

/// The `block` values of `w` from `start` (`len` of them inside the row) with their
/// importance weights, as the block quantizers take them: outliers and padding get value
/// and weight 0 (they are stored apart / do not exist).
#[allow(clippy::too_many_arguments)]
fn gather_block(
    w: &[f32],
    start: usize,
    len: usize,
    block: usize,
    is_out: &dyn Fn(usize) -> bool,
    importance: Option<&[f32]>,
    x: &mut [f32; MAX_BLOCK],
    wt: &mut [f32; MAX_BLOCK],
) {
    for k in 0..block {
        let i = start + k;
        if k < len && !is_out(i) {
            x[k] = w[i];
            wt[k] = importance.map_or(1.0, |imp| imp.get(i).copied().unwrap_or(1.0));
        } else {
            x[k] = 0.0;
            wt[k] = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{self, QuantParams};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn gauss(&mut self) -> f32 {
            (0..4).map(|_| self.next()).sum::<f32>() * 0.866
        }
    }

    /// Upper triangle of `Σ x xᵀ` over the rows of `xs` (n × cols), as f64.
    fn second_moment(xs: &[f32], cols: usize) -> Vec<f64> {
        let mut h = vec![0f64; cols * cols];
        for x in xs.chunks_exact(cols) {
            for i in 0..cols {
                for j in i..cols {
                    h[i * cols + j] += x[i] as f64 * x[j] as f64;
                }
            }
        }
        h
    }

    #[test]
    fn factor_inverts_h() {
        let n = 40;
        let mut rng = Rng(7);
        let xs: Vec<f32> = (0..200 * n).map(|_| rng.gauss()).collect();
        let h = second_moment(&xs, n);
        let f = GptqFactor::new(&h, n, 0.0).unwrap();
        // Uᵀ·U·H = I
        let full = |i: usize, j: usize| {
            if i <= j {
                h[i * n + j]
            } else {
                h[j * n + i]
            }
        };
        for i in 0..n {
            for j in 0..n {
                let mut s = 0f64;
                for k in 0..n {
                    // (UᵀU)[i][k] = Σ_r U[r][i]·U[r][k]
                    let mut uu = 0f64;
                    for r in 0..=i.min(k) {
                        uu += f.row(r)[i] as f64 * f.row(r)[k] as f64;
                    }
                    s += uu * full(k, j);
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-3, "({i},{j}) = {s}");
            }
        }
    }

    /// Synthetic problem with strongly correlated inputs (a few latent factors plus noise,
    /// with per-column scales): GPTQ must give a smaller output error ‖(W − Ŵ)·X‖² than the
    /// plain (searched, importance-weighted) quantizer for every supported type.
    #[test]
    fn gptq_beats_plain_on_correlated_inputs() {
        let (rows, cols, n) = (48usize, 128usize, 1024usize);
        let mut rng = Rng(42);
        let latent = 8;
        let mix: Vec<f32> = (0..latent * cols).map(|_| rng.gauss()).collect();
        let scale: Vec<f32> = (0..cols).map(|c| 0.3 + (c % 7) as f32 * 0.3).collect();
        let mut xs = vec![0f32; n * cols];
        for x in xs.chunks_exact_mut(cols) {
            let z: Vec<f32> = (0..latent).map(|_| rng.gauss()).collect();
            for (c, v) in x.iter_mut().enumerate() {
                let s: f32 = (0..latent).map(|k| z[k] * mix[k * cols + c]).sum();
                *v = scale[c] * (s + 0.3 * rng.gauss());
            }
        }
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.gauss() * 0.05).collect();
        let h = second_moment(&xs, cols);
        let imp: Vec<f32> = (0..cols)
            .map(|i| (h[i * cols + i] / n as f64) as f32)
            .collect();
        let f = GptqFactor::new(&h, cols, DEFAULT_DAMP).unwrap();
        let fa = GptqFactor::new_act_order(&h, cols, DEFAULT_DAMP).unwrap();
        assert!(fa.order().is_some());
        // ‖(W − Ŵ)X‖² = Σ_rows δᵀ H δ
        let out_err = |wq: &[f32]| -> f64 {
            let mut e = 0f64;
            for (a, b) in w.chunks_exact(cols).zip(wq.chunks_exact(cols)) {
                let dl: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y) as f64).collect();
                for i in 0..cols {
                    let mut s = h[i * cols + i] * dl[i];
                    for j in i + 1..cols {
                        s += 2.0 * h[i * cols + j] * dl[j];
                    }
                    e += dl[i] * s;
                }
            }
            e
        };
        for (qt, block) in [
            (QuantType::Q2, 32),
            (QuantType::Q3, 32),
            (QuantType::Q4, 32),
            (QuantType::Q4Sym, 32),
            (QuantType::Q4, 64),
            (QuantType::Q2Outlier, 32),
            (QuantType::Q3Outlier, 32),
            (QuantType::Q4Outlier, 32),
        ] {
            let params = QuantParams {
                outlier_count: None,
                block_size: block,
                outlier_frac: 0.01,
                importance: Some(&imp),
            };
            let plain = quant::quantize(qt, &w, rows, cols, &params).unwrap();
            let gq = quantize_tensor(qt, &w, rows, cols, &params, &f).unwrap();
            let ga = quantize_tensor(qt, &w, rows, cols, &params, &fa).unwrap();
            assert_eq!(plain.len(), gq.len(), "{qt}: same encoded size");
            let dp = quant::dequantize(qt, block, &plain, rows, cols).unwrap();
            let dg = quant::dequantize(qt, block, &gq, rows, cols).unwrap();
            let da = quant::dequantize(qt, block, &ga, rows, cols).unwrap();
            let (ep, eg, ea) = (out_err(&dp), out_err(&dg), out_err(&da));
            eprintln!(
                "{qt} B{block}: output error vs plain: gptq {:.3}, act-order {:.3}",
                eg / ep,
                ea / ep
            );
            assert!(
                eg < 0.5 * ep,
                "{qt} B{block}: gptq {eg:.4e} vs plain {ep:.4e}"
            );
            assert!(
                ea < 0.5 * ep,
                "{qt} B{block}: act-order {ea:.4e} vs plain {ep:.4e}"
            );
        }
    }
}

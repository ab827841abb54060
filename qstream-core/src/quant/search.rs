//! Error-minimising parameter search for the scaled block types (q2, q3, q4, q4_sym).
//!
//! For one block of values `x` with weights `w` (the per-column importance, or 1), the
//! search picks the block parameters minimising `Σ wᵢ (xᵢ − x̂ᵢ)²` where `x̂` is what
//! dequantization will produce. Because `d` and `m` are stored as f16, every candidate is
//! rounded to f16 *before* its levels are chosen and its error is measured, so the
//! reported error is exactly the error of the stored block.
//!
//! Asymmetric (`x̂ = d·q + m`, q ∈ 0..=nmax), in the spirit of ggml's `make_qkx2_quants`:
//! 1. the plain min/max fit;
//! 2. a small grid of stretched/shrunk ranges: levels `q = round(iscale·(x − min))` with
//!    `iscale = (nmax + rmin + k·rdelta) / (max − min)`, then the weighted least-squares
//!    `(d, m)` for those levels;
//! 3. alternating refinement on the best candidate: least-squares `(d, m)` given the
//!    levels, then the nearest levels given `(d, m)`.
//!
//! Symmetric (`x̂ = d·(q − 8)`), in the spirit of ggml's `make_qx_quants`: the plain fit
//! `d = max / −8` plus grids `iscale = −(8 + k·0.1) / max` and `(7 + k·0.1) / max`,
//! least-squares `d` for each, refinement.
//!
//! The plain min/max quantizers (ggml's reference `Q4_0`/`Q4_1` rules) live next to the
//! searched ones in each type's file (`quantize_row_minmax`, ...) for benchmarking and for
//! bit-exact GGUF parity. [`set_enabled`] switches the default quantizers to plain min/max.

// `x.max(lo).min(hi)` (not `clamp`) on purpose in the hot loops: it maps NaN to `lo`
// instead of propagating it, so a NaN weight can never produce an out-of-range level.
#![allow(clippy::manual_clamp)]

use std::sync::atomic::{AtomicBool, Ordering};

use super::float::round_f16;

/// Largest block size any searched type supports.
pub const MAX_BLOCK: usize = 256;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Choose whether `q2/q3/q4::quantize_row` and `q4::quantize_row_sym` use the
/// error-minimising search (default `true`) or the plain min/max rule (faster, worse).
/// Process-wide; meant for benchmarks and a converter "fast" option.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the default quantizers use the search (see [`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Grid used by the asymmetric search.
#[derive(Debug, Clone, Copy)]
pub struct AsymGrid {
    /// Offset added to `nmax` for the first grid point (negative = stretch the range).
    pub rmin: f32,
    /// Step between grid points.
    pub rdelta: f32,
    /// Number of grid steps (`nstep + 1` points).
    pub nstep: u32,
    /// Alternating least-squares refinement rounds on the best candidate.
    pub refine: u32,
}

/// Default grid: a handful of points around the min/max scale plus two refinements —
/// a compromise between error and speed (see the quant_error_budget tests).
pub const DEFAULT_ASYM_GRID: AsymGrid = AsymGrid {
    rmin: -0.5,
    rdelta: 0.25,
    nstep: 4,
    refine: 2,
};

/// Block parameters chosen for an asymmetric block (already f16-rounded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsymParams {
    /// Scale.
    pub d: f32,
    /// Offset (block minimum).
    pub m: f32,
}

/// Round to nearest (ties to even) for |v| < 2^22 — branch-free, vectorizes (unlike `round`).
#[inline(always)]
fn rnd(v: f32) -> f32 {
    (v + 12_582_912.0) - 12_582_912.0
}

/// Sum of 8 lanes (fixed order, deterministic).
#[inline(always)]
fn hsum(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// Levels for `(d, m)` (f16-rounded) and the weighted squared error they give.
fn eval_asym(x: &[f32], w: &[f32], nmax: u8, d: f32, m: f32, q: &mut [u8]) -> f32 {
    let nm = nmax as f32;
    let (id, d) = if d == 0.0 || !d.is_finite() {
        (0.0, 0.0)
    } else {
        (1.0 / d, d)
    };
    let mut acc = [0f32; 8];
    let n8 = x.len() / 8 * 8;
    for ((xs, ws), qs) in x[..n8]
        .chunks_exact(8)
        .zip(w[..n8].chunks_exact(8))
        .zip(q[..n8].chunks_exact_mut(8))
    {
        for j in 0..8 {
            let l = rnd(((xs[j] - m) * id).max(0.0).min(nm));
            qs[j] = l as u8;
            let e = xs[j] - (d * l + m);
            acc[j] += ws[j] * e * e;
        }
    }
    let mut err = hsum(acc);
    for i in n8..x.len() {
        let l = rnd(((x[i] - m) * id).max(0.0).min(nm));
        q[i] = l as u8;
        let e = x[i] - (d * l + m);
        err += w[i] * e * e;
    }
    err
}

/// Weighted sums `(Σw·q, Σw·q², Σw·q·x)` for levels `q = round(clamp(iscale·(x − lo)))`
/// (when `q_in` is `None`) or for the given levels.
fn level_sums(
    x: &[f32],
    w: &[f32],
    nmax: u8,
    iscale: f32,
    lo: f32,
    q_in: Option<&[u8]>,
) -> (f32, f32, f32) {
    let nm = nmax as f32;
    let (mut a, mut b, mut c) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    let n8 = x.len() / 8 * 8;
    let level = |i: usize| match q_in {
        Some(q) => q[i] as f32,
        None => rnd((iscale * (x[i] - lo)).max(0.0).min(nm)),
    };
    match q_in {
        Some(q) => {
            for ((xs, ws), qs) in x[..n8]
                .chunks_exact(8)
                .zip(w[..n8].chunks_exact(8))
                .zip(q[..n8].chunks_exact(8))
            {
                for j in 0..8 {
                    let l = qs[j] as f32;
                    let wl = ws[j] * l;
                    a[j] += wl;
                    b[j] += wl * l;
                    c[j] += wl * xs[j];
                }
            }
        }
        None => {
            for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
                for j in 0..8 {
                    let l = rnd((iscale * (xs[j] - lo)).max(0.0).min(nm));
                    let wl = ws[j] * l;
                    a[j] += wl;
                    b[j] += wl * l;
                    c[j] += wl * xs[j];
                }
            }
        }
    }
    let (mut sq, mut sq2, mut sqx) = (hsum(a), hsum(b), hsum(c));
    for i in n8..x.len() {
        let l = level(i);
        sq += w[i] * l;
        sq2 += w[i] * l * l;
        sqx += w[i] * l * x[i];
    }
    (sq, sq2, sqx)
}

/// Weighted least-squares `(d, m)` from level sums; `None` if degenerate.
#[inline]
fn lsq_from_sums(sw: f32, swx: f32, swq: f32, swq2: f32, swqx: f32) -> Option<(f32, f32)> {
    let det = sw * swq2 - swq * swq;
    if det <= 0.0 || !det.is_finite() {
        return None;
    }
    let d = (sw * swqx - swq * swx) / det;
    let m = (swq2 * swx - swq * swqx) / det;
    if d > 0.0 && d.is_finite() && m.is_finite() {
        Some((d, m))
    } else {
        None
    }
}

/// Min and max over the entries with positive weight (all entries if none has).
fn weighted_range(x: &[f32], w: Option<&[f32]>) -> (f32, f32) {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for (i, v) in x.iter().enumerate() {
        if w.map_or(1.0, |w| w.get(i).copied().unwrap_or(1.0)) > 0.0 {
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
    }
    if lo > hi {
        for v in x {
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
    }
    if lo > hi {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

/// Searched asymmetric fit of one block (`x.len() <= 256`): writes the levels to `q`
/// (`q.len() >= x.len()`) and returns the f16-rounded `(d, m)` they were chosen with.
///
/// Grid candidates are ranked by the exact least-squares error of their levels
/// (`Σw·x² − d·Σw·q·x − m·Σw·x` at the optimum, one pass each); only the winner is
/// re-levelled with f16-rounded `(d, m)` and measured, against the plain min/max fit.
pub fn search_asym(
    x: &[f32],
    w: Option<&[f32]>,
    nmax: u8,
    grid: &AsymGrid,
    q: &mut [u8],
) -> AsymParams {
    let n = x.len().min(MAX_BLOCK).min(q.len());
    let x = &x[..n];
    let wbuf = [1f32; MAX_BLOCK];
    let w: &[f32] = match w {
        Some(w) if w.len() >= n => &w[..n],
        _ => &wbuf[..n],
    };
    let (lo, hi) = weighted_range(x, Some(w));
    let range = hi - lo;
    if range <= 0.0 || !range.is_finite() {
        let m = round_f16(lo);
        q[..n].fill(0);
        return AsymParams { d: 0.0, m };
    }
    let nm = nmax as f32;
    let mut best_q = [0u8; MAX_BLOCK];
    let mut tq = [0u8; MAX_BLOCK];

    let (mut sw, mut swx, mut swx2) = (0f32, 0f32, 0f32);
    for (xv, wv) in x.iter().zip(w) {
        sw += wv;
        swx += wv * xv;
        swx2 += wv * xv * xv;
    }

    let d0 = round_f16(range / nm);
    let m0 = round_f16(lo);
    let mut best = AsymParams { d: d0, m: m0 };
    let mut best_err = eval_asym(x, w, nmax, d0, m0, &mut best_q[..n]);

    // Rank the grid by exact LS error of its levels.
    let mut cand: Option<(f32, f32, f32)> = None;
    for k in 0..=grid.nstep {
        let iscale = (nm + grid.rmin + grid.rdelta * k as f32) / range;
        let (swq, swq2, swqx) = level_sums(x, w, nmax, iscale, lo, None);
        if let Some((d, m)) = lsq_from_sums(sw, swx, swq, swq2, swqx) {
            let sse = swx2 - d * swqx - m * swx;
            if cand.map_or(true, |c| sse < c.0) {
                cand = Some((sse, d, m));
            }
        }
    }
    if let Some((_, d, m)) = cand {
        let (d, m) = (round_f16(d), round_f16(m));
        let err = eval_asym(x, w, nmax, d, m, &mut tq[..n]);
        if err < best_err {
            best_err = err;
            best = AsymParams { d, m };
            best_q[..n].copy_from_slice(&tq[..n]);
        }
    }
    for _ in 0..grid.refine {
        let (swq, swq2, swqx) = level_sums(x, w, nmax, 0.0, 0.0, Some(&best_q[..n]));
        let Some((d, m)) = lsq_from_sums(sw, swx, swq, swq2, swqx) else {
            break;
        };
        let (d, m) = (round_f16(d), round_f16(m));
        if d == best.d && m == best.m {
            break;
        }
        let err = eval_asym(x, w, nmax, d, m, &mut tq[..n]);
        if err < best_err {
            best_err = err;
            best = AsymParams { d, m };
            best_q[..n].copy_from_slice(&tq[..n]);
        } else {
            break;
        }
    }
    q[..n].copy_from_slice(&best_q[..n]);
    best
}

/// Plain min/max asymmetric fit (ggml `Q4_1` reference rule, generalised to `nmax`):
/// `d = (max − min)/nmax`, `m = min`, `q = min(nmax, trunc((x − min)·(1/d) + 0.5))` with
/// `1/d` from the unrounded f32 `d`. With `w`, the range is taken over the entries of
/// positive weight only (others are clamped). Returns the f16-rounded `(d, m)` to store.
pub fn minmax_asym(x: &[f32], w: Option<&[f32]>, nmax: u8, q: &mut [u8]) -> AsymParams {
    let (lo, hi) = match w {
        Some(_) => weighted_range(x, w),
        None => {
            let mut lo = f32::MAX;
            let mut hi = -f32::MAX;
            for v in x {
                if *v < lo {
                    lo = *v;
                }
                if *v > hi {
                    hi = *v;
                }
            }
            if x.is_empty() {
                (0.0, 0.0)
            } else {
                (lo, hi)
            }
        }
    };
    let d = (hi - lo) / nmax as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (qv, xv) in q.iter_mut().zip(x) {
        // `as u8` saturates (NaN → 0), matching ggml's int8 cast for in-range values.
        let l = ((xv - lo) * id + 0.5).trunc();
        *qv = (l.max(0.0) as u8).min(nmax);
    }
    AsymParams {
        d: round_f16(d),
        m: round_f16(lo),
    }
}

/// Levels `0..=15` for the symmetric `x̂ = d·(q−8)` given an f16-rounded `d`, and the error.
fn eval_sym(x: &[f32], w: &[f32], d: f32, q: &mut [u8]) -> f32 {
    let (id, d) = if d == 0.0 || !d.is_finite() {
        (0.0, 0.0)
    } else {
        (1.0 / d, d)
    };
    let mut acc = [0f32; 8];
    let n8 = x.len() / 8 * 8;
    for ((xs, ws), qs) in x[..n8]
        .chunks_exact(8)
        .zip(w[..n8].chunks_exact(8))
        .zip(q[..n8].chunks_exact_mut(8))
    {
        for j in 0..8 {
            let l = rnd((xs[j] * id).max(-8.0).min(7.0));
            qs[j] = (l + 8.0) as u8;
            let e = xs[j] - d * l;
            acc[j] += ws[j] * e * e;
        }
    }
    let mut err = hsum(acc);
    for i in n8..x.len() {
        let l = rnd((x[i] * id).max(-8.0).min(7.0));
        q[i] = (l + 8.0) as u8;
        let e = x[i] - d * l;
        err += w[i] * e * e;
    }
    err
}

/// `(Σw·l·x, Σw·l²)` for levels `l = round(clamp(iscale·x, −8, 7))`, or for given levels `q − 8`.
fn sym_sums(x: &[f32], w: &[f32], iscale: f32, q_in: Option<&[u8]>) -> (f32, f32) {
    let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
    let n8 = x.len() / 8 * 8;
    match q_in {
        Some(q) => {
            for ((xs, ws), qs) in x[..n8]
                .chunks_exact(8)
                .zip(w[..n8].chunks_exact(8))
                .zip(q[..n8].chunks_exact(8))
            {
                for j in 0..8 {
                    let l = qs[j] as f32 - 8.0;
                    a[j] += ws[j] * l * xs[j];
                    b[j] += ws[j] * l * l;
                }
            }
        }
        None => {
            for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
                for j in 0..8 {
                    let l = rnd((iscale * xs[j]).max(-8.0).min(7.0));
                    a[j] += ws[j] * l * xs[j];
                    b[j] += ws[j] * l * l;
                }
            }
        }
    }
    let (mut slx, mut sll) = (hsum(a), hsum(b));
    for i in n8..x.len() {
        let l = match q_in {
            Some(q) => q[i] as f32 - 8.0,
            None => rnd((iscale * x[i]).max(-8.0).min(7.0)),
        };
        slx += w[i] * l * x[i];
        sll += w[i] * l * l;
    }
    (slx, sll)
}

/// Searched symmetric (`x̂ = d·(q−8)`) fit of one block: writes levels `0..=15` to `q`
/// and returns the f16-rounded `d`. Grid: `nstep` points (step 0.1 level) on each side of
/// the two plain scales `−8/max` and `7/max`, ranked by the exact LS error of their levels
/// (`Σw·x² − (Σw·l·x)²/Σw·l²`); the winner is re-levelled with its f16 `d` and compared
/// with the plain fit, then refined `refine` times.
pub fn search_sym(x: &[f32], w: Option<&[f32]>, nstep: i32, refine: u32, q: &mut [u8]) -> f32 {
    let n = x.len().min(MAX_BLOCK).min(q.len());
    let x = &x[..n];
    let wbuf = [1f32; MAX_BLOCK];
    let w: &[f32] = match w {
        Some(w) if w.len() >= n => &w[..n],
        _ => &wbuf[..n],
    };
    // Signed value of largest magnitude among weighted entries.
    let mut amax = 0f32;
    let mut max = 0f32;
    for (v, wv) in x.iter().zip(w) {
        if *wv > 0.0 && v.abs() > amax {
            amax = v.abs();
            max = *v;
        }
    }
    if amax == 0.0 || !amax.is_finite() {
        q[..n].fill(8);
        return 0.0;
    }
    let mut best_q = [0u8; MAX_BLOCK];
    let mut tq = [0u8; MAX_BLOCK];
    let mut best_d = round_f16(max / -8.0);
    let mut best_err = eval_sym(x, w, best_d, &mut best_q[..n]);
    // Maximise (Σw·l·x)²/Σw·l² over the grid (= minimise the LS error).
    let mut cand: Option<(f32, f32)> = None;
    for k in -nstep..=nstep {
        for iscale in [-(8.0 + 0.1 * k as f32) / max, (7.0 + 0.1 * k as f32) / max] {
            let (slx, sll) = sym_sums(x, w, iscale, None);
            if sll > 0.0 && slx != 0.0 {
                let score = slx * slx / sll;
                if cand.map_or(true, |c| score > c.0) {
                    cand = Some((score, slx / sll));
                }
            }
        }
    }
    if let Some((_, d)) = cand {
        let d = round_f16(d);
        if d.is_finite() && d != 0.0 {
            let err = eval_sym(x, w, d, &mut tq[..n]);
            if err < best_err {
                best_err = err;
                best_d = d;
                best_q[..n].copy_from_slice(&tq[..n]);
            }
        }
    }
    for _ in 0..refine {
        let (slx, sll) = sym_sums(x, w, 0.0, Some(&best_q[..n]));
        if sll.is_nan() || sll <= 0.0 {
            break;
        }
        let d = round_f16(slx / sll);
        if d == best_d || d == 0.0 || !d.is_finite() {
            break;
        }
        let err = eval_sym(x, w, d, &mut tq[..n]);
        if err < best_err {
            best_err = err;
            best_d = d;
            best_q[..n].copy_from_slice(&tq[..n]);
        } else {
            break;
        }
    }
    q[..n].copy_from_slice(&best_q[..n]);
    best_d
}

/// Plain symmetric fit (ggml `Q4_0` reference rule): `max` = the value of largest
/// magnitude (first one, sign kept), `d = max / −8`, `q = min(15, trunc(x·(1/d) + 8.5))`.
/// Returns the f16-rounded `d` to store.
pub fn minmax_sym(x: &[f32], q: &mut [u8]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = *v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (qv, xv) in q.iter_mut().zip(x) {
        let l = (xv * id + 8.5).trunc();
        *qv = (l.max(0.0) as u8).min(15);
    }
    round_f16(d)
}

/// Shared row driver for the asymmetric types: splits `src` into `block`-sized blocks
/// (last one zero-padded; padding gets weight 0 in the search), fits each block and
/// calls `pack(levels, block_bytes)` to write it. With `importance`, the plain rule also
/// takes its range over entries of positive importance only (used by the outlier types,
/// which pass weight 0 at outlier positions); without, the zero padding counts. `dst` holds whole blocks of
/// `block_bytes` bytes; the header (f16 d, f16 m) is written here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_row_asym(
    block: usize,
    src: &[f32],
    importance: Option<&[f32]>,
    nmax: u8,
    searched: bool,
    block_bytes: usize,
    dst: &mut [u8],
    pack: impl Fn(&[u8], &mut [u8]),
) {
    let block = block.clamp(1, MAX_BLOCK);
    let mut x = [0f32; MAX_BLOCK];
    let mut w = [0f32; MAX_BLOCK];
    let mut q = [0u8; MAX_BLOCK];
    for (bi, blk) in dst.chunks_exact_mut(block_bytes).enumerate() {
        let start = (bi * block).min(src.len());
        let end = (start + block).min(src.len());
        let len = end - start;
        x[..len].copy_from_slice(&src[start..end]);
        x[len..block].fill(0.0);
        if searched || importance.is_some() {
            for (i, wi) in w[..block].iter_mut().enumerate() {
                *wi = if i < len {
                    importance.map_or(1.0, |imp| imp.get(start + i).copied().unwrap_or(1.0))
                } else {
                    0.0
                };
            }
        }
        let p = if searched {
            search_asym(
                &x[..block],
                Some(&w[..block]),
                nmax,
                &DEFAULT_ASYM_GRID,
                &mut q[..block],
            )
        } else if importance.is_some() {
            minmax_asym(&x[..block], Some(&w[..block]), nmax, &mut q[..block])
        } else {
            minmax_asym(&x[..block], None, nmax, &mut q[..block])
        };
        super::float::write_f16(&mut blk[0..2], p.d);
        super::float::write_f16(&mut blk[2..4], p.m);
        pack(&q[..block], &mut blk[4..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_asym(x: &[f32], p: AsymParams, q: &[u8]) -> f32 {
        x.iter()
            .zip(q)
            .map(|(v, l)| (v - (p.d * *l as f32 + p.m)).powi(2))
            .sum()
    }

    #[test]
    fn minmax_hand_computed() {
        // 0..=15 exactly representable: d = 1, m = 0, q = x.
        let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let mut q = [0u8; 16];
        let p = minmax_asym(&x, None, 15, &mut q);
        assert_eq!(p, AsymParams { d: 1.0, m: 0.0 });
        assert_eq!(q.to_vec(), (0..16u8).collect::<Vec<_>>());
        // Symmetric: max = -8 → d = 1, q = x + 8 (7.9 → trunc(16.4) clamps to 15).
        let x = [-8.0f32, 0.0, 3.2, 7.9];
        let mut q = [0u8; 4];
        assert_eq!(minmax_sym(&x, &mut q), 1.0);
        assert_eq!(q, [0, 8, 11, 15]);
    }

    #[test]
    fn search_never_worse_than_minmax_and_consistent() {
        let mut s = 12345u32;
        for nmax in [3u8, 7, 15] {
            for _ in 0..50 {
                let x: Vec<f32> = (0..32)
                    .map(|_| {
                        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.3
                    })
                    .collect();
                let mut q0 = [0u8; 32];
                let mut q1 = [0u8; 32];
                let p0 = minmax_asym(&x, None, nmax, &mut q0);
                let p1 = search_asym(&x, None, nmax, &DEFAULT_ASYM_GRID, &mut q1);
                assert!(q1.iter().all(|&l| l <= nmax));
                // The search starts from the min/max candidate with f16-rounded scales and
                // nearest levels, which is never worse than min/max's truncating rule.
                assert!(err_asym(&x, p1, &q1) <= err_asym(&x, p0, &q0) * 1.0001);
            }
        }
    }

    #[test]
    fn degenerate_blocks() {
        let x = [0.25f32; 32];
        let mut q = [9u8; 32];
        let p = search_asym(&x, None, 15, &DEFAULT_ASYM_GRID, &mut q);
        assert_eq!(p, AsymParams { d: 0.0, m: 0.25 });
        assert!(q.iter().all(|&l| l == 0));
        assert_eq!(search_sym(&[0.0; 8], None, 4, 2, &mut q), 0.0);
        assert!(q[..8].iter().all(|&l| l == 8));
    }
}

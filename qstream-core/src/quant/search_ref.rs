//! The straightforward formulation of the error-minimising search (one pass per candidate,
//! `wbuf` of ones when unweighted, `f32::max/min` clamps), kept verbatim as it was before
//! the fused / specialised kernels of [`super`] as the bit-exactness reference of the tests,
//! with the plain min/max rules as they were (explicit `trunc` before the `as u8` cast).

#![allow(clippy::manual_clamp)]

use super::super::float::round_f16;
use super::{AsymGrid, AsymParams, DEFAULT_ASYM_GRID, MAX_BLOCK, SYM_CANDIDATES};

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

/// Levels for `(d, m)` (f16-rounded), the weighted squared error they give, and the
/// level sums `(Σw·q, Σw·q², Σw·q·x)` of those levels (for a least-squares refit).
fn eval_asym(x: &[f32], w: &[f32], nmax: u8, d: f32, m: f32, q: &mut [u8]) -> (f32, [f32; 3]) {
    let nm = nmax as f32;
    let (id, d) = if d == 0.0 || !d.is_finite() {
        (0.0, 0.0)
    } else {
        (1.0 / d, d)
    };
    let (mut acc, mut a, mut b, mut c) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
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
            let wl = ws[j] * l;
            a[j] += wl;
            b[j] += wl * l;
            c[j] += wl * xs[j];
        }
    }
    let mut err = hsum(acc);
    let mut sums = [hsum(a), hsum(b), hsum(c)];
    for i in n8..x.len() {
        let l = rnd(((x[i] - m) * id).max(0.0).min(nm));
        q[i] = l as u8;
        let e = x[i] - (d * l + m);
        err += w[i] * e * e;
        let wl = w[i] * l;
        sums[0] += wl;
        sums[1] += wl * l;
        sums[2] += wl * x[i];
    }
    (err, sums)
}

/// Weighted sums `(Σw·q, Σw·q², Σw·q·x)` for levels `q = round(clamp(iscale·(x − lo)))`.
fn level_sums(x: &[f32], w: &[f32], nmax: u8, iscale: f32, lo: f32) -> [f32; 3] {
    let nm = nmax as f32;
    let (mut a, mut b, mut c) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    let n8 = x.len() / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        for j in 0..8 {
            let l = rnd((iscale * (xs[j] - lo)).max(0.0).min(nm));
            let wl = ws[j] * l;
            a[j] += wl;
            b[j] += wl * l;
            c[j] += wl * xs[j];
        }
    }
    let mut s = [hsum(a), hsum(b), hsum(c)];
    for i in n8..x.len() {
        let l = rnd((iscale * (x[i] - lo)).max(0.0).min(nm));
        s[0] += w[i] * l;
        s[1] += w[i] * l * l;
        s[2] += w[i] * l * x[i];
    }
    s
}

/// Weighted block moments `(Σw, Σw·x, Σw·x²)` and the range over entries of positive
/// weight (`lo > hi` when there is none), in one vectorizable pass.
fn block_stats(x: &[f32], w: &[f32]) -> ([f32; 3], f32, f32) {
    let (mut a, mut b, mut c) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    let (mut lo, mut hi) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
    let n8 = x.len() / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        for j in 0..8 {
            let wx = ws[j] * xs[j];
            a[j] += ws[j];
            b[j] += wx;
            c[j] += wx * xs[j];
            let pos = ws[j] > 0.0;
            lo[j] = lo[j].min(if pos { xs[j] } else { f32::INFINITY });
            hi[j] = hi[j].max(if pos { xs[j] } else { f32::NEG_INFINITY });
        }
    }
    let mut s = [hsum(a), hsum(b), hsum(c)];
    let mut l = lo.iter().fold(f32::INFINITY, |m, v| m.min(*v));
    let mut h = hi.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for i in n8..x.len() {
        s[0] += w[i];
        s[1] += w[i] * x[i];
        s[2] += w[i] * x[i] * x[i];
        if w[i] > 0.0 {
            l = l.min(x[i]);
            h = h.max(x[i]);
        }
    }
    (s, l, h)
}

/// Exact weighted squared error `Σw·(x − d·q − m)²` of fixed levels from their sums
/// (closed form, in f64 to limit cancellation): lets the search rank any `(d, m)` on a
/// level set without another pass over the block.
#[inline]
fn asym_cf_err(st: &[f32; 3], s: &[f32; 3], d: f32, m: f32) -> f64 {
    let (sw, swx, swx2) = (st[0] as f64, st[1] as f64, st[2] as f64);
    let (sq, sq2, sqx) = (s[0] as f64, s[1] as f64, s[2] as f64);
    let (d, m) = (d as f64, m as f64);
    swx2 - 2.0 * d * sqx - 2.0 * m * swx + d * d * sq2 + 2.0 * d * m * sq + m * m * sw
}

/// Weighted least-squares `(d, m)` from level sums, f16-rounded; `None` if degenerate.
#[inline]
fn lsq_asym(st: &[f32; 3], s: &[f32; 3]) -> Option<(f32, f32)> {
    let (sw, swx) = (st[0] as f64, st[1] as f64);
    let (swq, swq2, swqx) = (s[0] as f64, s[1] as f64, s[2] as f64);
    let det = sw * swq2 - swq * swq;
    if det <= 0.0 || !det.is_finite() {
        return None;
    }
    let d = ((sw * swqx - swq * swx) / det) as f32;
    let m = ((swq2 * swx - swq * swqx) / det) as f32;
    if d > 0.0 && d.is_finite() && m.is_finite() {
        Some((round_f16(d), round_f16(m)))
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

/// Relative error (to the block's weighted variance) below which the min/max fit is kept
/// without searching: the block is already on a grid (e.g. a dequantized Q4_1 source).
const EARLY_EXIT_REL: f64 = 1e-9;

/// Searched asymmetric fit of one block (`x.len() <= 256`): writes the levels to `q`
/// (`q.len() >= x.len()`) and returns the f16-rounded `(d, m)` they were chosen with.
///
/// Passes over the block: one for the moments and range; one level-sum pass for the
/// min/max levels and one per grid point (each candidate's least-squares `(d, m)` is
/// f16-rounded and ranked by its exact error from the sums, [`asym_cf_err`], without
/// another pass); one pass re-levelling the winner (nearest levels, never worse than the
/// ranked error, so never worse than min/max); then up to `refine` alternating
/// least-squares steps, each taken only when the closed form says it improves.
/// Blocks the min/max fit already represents (relative error < 1e-9) exit after it.
pub(super) fn search_asym(
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
    let (st, mut lo, mut hi) = block_stats(x, w);
    if lo > hi {
        // no entry has positive weight: fit all of them
        let (l, h) = weighted_range(x, None);
        lo = l;
        hi = h;
    }
    let range = hi - lo;
    if range <= 0.0 || !range.is_finite() {
        let m = round_f16(lo);
        q[..n].fill(0);
        return AsymParams { d: 0.0, m };
    }
    let nm = nmax as f32;
    let d0 = round_f16(range / nm);
    let m0 = round_f16(lo);
    let s0 = level_sums(x, w, nmax, nm / range, lo);
    let mut best = (asym_cf_err(&st, &s0, d0, m0), d0, m0);
    let var =
        (st[2] as f64 - (st[1] as f64).powi(2) / (st[0] as f64).max(f64::MIN_POSITIVE)).max(0.0);
    if best.0 > EARLY_EXIT_REL * var {
        let mut consider = |s: &[f32; 3]| {
            if let Some((d, m)) = lsq_asym(&st, s) {
                let e = asym_cf_err(&st, s, d, m);
                if e < best.0 {
                    best = (e, d, m);
                }
            }
        };
        consider(&s0);
        for k in 0..=grid.nstep {
            let r = grid.rmin + grid.rdelta * k as f32;
            if r.abs() < 1e-6 {
                continue; // the min/max levels, done above
            }
            consider(&level_sums(x, w, nmax, (nm + r) / range, lo));
        }
    }
    let (d, m) = (best.1, best.2);
    let (mut err, mut s) = eval_asym(x, w, nmax, d, m, &mut q[..n]);
    let mut cur = AsymParams { d, m };
    let mut tq = [0u8; MAX_BLOCK];
    for _ in 0..grid.refine {
        let Some((d, m)) = lsq_asym(&st, &s) else {
            break;
        };
        if (d == cur.d && m == cur.m) || asym_cf_err(&st, &s, d, m) >= err as f64 * (1.0 - 1e-5) {
            break;
        }
        let (e2, s2) = eval_asym(x, w, nmax, d, m, &mut tq[..n]);
        if e2 < err {
            err = e2;
            s = s2;
            cur = AsymParams { d, m };
            q[..n].copy_from_slice(&tq[..n]);
        } else {
            break;
        }
    }
    cur
}

/// Levels `0..=15` for the symmetric `x̂ = d·(q−8)` given an f16-rounded `d`, the error,
/// and the sums `(Σw·l·x, Σw·l²)` of `l = q − 8` (for a least-squares refit).
fn eval_sym(x: &[f32], w: &[f32], d: f32, q: &mut [u8]) -> (f32, f32, f32) {
    let (id, d) = if d == 0.0 || !d.is_finite() {
        (0.0, 0.0)
    } else {
        (1.0 / d, d)
    };
    let (mut acc, mut a, mut b) = ([0f32; 8], [0f32; 8], [0f32; 8]);
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
            let wl = ws[j] * l;
            a[j] += wl * xs[j];
            b[j] += wl * l;
        }
    }
    let (mut err, mut slx, mut sll) = (hsum(acc), hsum(a), hsum(b));
    for i in n8..x.len() {
        let l = rnd((x[i] * id).max(-8.0).min(7.0));
        q[i] = (l + 8.0) as u8;
        let e = x[i] - d * l;
        err += w[i] * e * e;
        slx += w[i] * l * x[i];
        sll += w[i] * l * l;
    }
    (err, slx, sll)
}

/// `(Σw·l·x, Σw·l²)` for levels `l = round(clamp(iscale·x, −8, 7))`.
fn sym_sums(x: &[f32], w: &[f32], iscale: f32) -> (f32, f32) {
    let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
    let n8 = x.len() / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        for j in 0..8 {
            let l = rnd((iscale * xs[j]).max(-8.0).min(7.0));
            let wl = ws[j] * l;
            a[j] += wl * xs[j];
            b[j] += wl * l;
        }
    }
    let (mut slx, mut sll) = (hsum(a), hsum(b));
    for i in n8..x.len() {
        let l = rnd((iscale * x[i]).max(-8.0).min(7.0));
        slx += w[i] * l * x[i];
        sll += w[i] * l * l;
    }
    (slx, sll)
}

/// Exact `Σw·(x − d·l)²` of fixed levels from `Σw·x²` and their sums (f64).
#[inline]
fn sym_cf_err(swx2: f32, slx: f32, sll: f32, d: f32) -> f64 {
    let d = d as f64;
    swx2 as f64 - 2.0 * d * slx as f64 + d * d * sll as f64
}

/// Searched symmetric (`x̂ = d·(q−8)`) fit of one block: writes levels `0..=15` to `q`
/// and returns the f16-rounded `d`.
///
/// Candidates: the plain scale `max/−8` and its least-squares refit, then `nstep` level
/// sets on each side of the two plain scales (`iscale = −(8 + 0.25k)/max` and
/// `(7 + 0.25k)/max`, k = −nstep..=nstep), each by its f16-rounded least-squares `d`
/// ranked in closed form (`Σw·x² − 2d·Σw·l·x + d²·Σw·l²`, one pass per candidate).
/// The winner is re-levelled (nearest levels: never worse than the ranked error) and
/// refined up to `refine` times while the closed form says a refit helps.
pub(super) fn search_sym(
    x: &[f32],
    w: Option<&[f32]>,
    nstep: i32,
    refine: u32,
    q: &mut [u8],
) -> f32 {
    let n = x.len().min(MAX_BLOCK).min(q.len());
    let x = &x[..n];
    let wbuf = [1f32; MAX_BLOCK];
    let w: &[f32] = match w {
        Some(w) if w.len() >= n => &w[..n],
        _ => &wbuf[..n],
    };
    // Signed value of largest magnitude among weighted entries, and Σw·x².
    let mut amax = 0f32;
    let mut max = 0f32;
    let mut swx2 = 0f32;
    for (v, wv) in x.iter().zip(w) {
        swx2 += wv * v * v;
        if *wv > 0.0 && v.abs() > amax {
            amax = v.abs();
            max = *v;
        }
    }
    if amax == 0.0 || !amax.is_finite() {
        q[..n].fill(8);
        return 0.0;
    }
    let d0 = round_f16(max / -8.0);
    let (slx0, sll0) = sym_sums(x, w, -8.0 / max);
    let mut best = (sym_cf_err(swx2, slx0, sll0, d0), d0);
    if best.0 > EARLY_EXIT_REL * swx2 as f64 {
        let mut consider = |slx: f32, sll: f32| {
            if sll > 0.0 && slx != 0.0 {
                let d = round_f16(slx / sll);
                if d.is_finite() && d != 0.0 {
                    let e = sym_cf_err(swx2, slx, sll, d);
                    if e < best.0 {
                        best = (e, d);
                    }
                }
            }
        };
        consider(slx0, sll0);
        for &l in SYM_CANDIDATES.iter().take(nstep.max(0) as usize) {
            let (a, b) = sym_sums(x, w, l / max);
            consider(a, b);
        }
    }
    let mut d = best.1;
    let (mut err, mut slx, mut sll) = eval_sym(x, w, d, &mut q[..n]);
    let mut tq = [0u8; MAX_BLOCK];
    for _ in 0..refine {
        if sll.is_nan() || sll <= 0.0 {
            break;
        }
        let d2 = round_f16(slx / sll);
        if d2 == d
            || d2 == 0.0
            || !d2.is_finite()
            || sym_cf_err(swx2, slx, sll, d2) >= err as f64 * (1.0 - 1e-5)
        {
            break;
        }
        let (e2, a, b) = eval_sym(x, w, d2, &mut tq[..n]);
        if e2 < err {
            (err, slx, sll, d) = (e2, a, b, d2);
            q[..n].copy_from_slice(&tq[..n]);
        } else {
            break;
        }
    }
    d
}

/// Shared row driver for the asymmetric types: splits `src` into `block`-sized blocks
/// (last one zero-padded; padding gets weight 0 in the search), fits each block and
/// calls `pack(levels, block_bytes)` to write it. With `importance`, the plain rule also
/// takes its range over entries of positive importance only (used by the outlier types,
/// which pass weight 0 at outlier positions); without, the zero padding counts. `dst` holds whole blocks of
/// `block_bytes` bytes; the header (f16 d, f16 m) is written here.
#[allow(clippy::too_many_arguments)]
pub(super) fn quantize_row_asym(
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
        super::super::float::write_f16(&mut blk[0..2], p.d);
        super::super::float::write_f16(&mut blk[2..4], p.m);
        pack(&q[..block], &mut blk[4..]);
    }
}

/// Plain min/max asymmetric fit (ggml `Q4_1` reference rule, generalised to `nmax`):
/// `d = (max − min)/nmax`, `m = min`, `q = min(nmax, trunc((x − min)·(1/d) + 0.5))` with
/// `1/d` from the unrounded f32 `d`. With `w`, the range is taken over the entries of
/// positive weight only (others are clamped). Returns the f16-rounded `(d, m)` to store.
pub(super) fn minmax_asym(x: &[f32], w: Option<&[f32]>, nmax: u8, q: &mut [u8]) -> AsymParams {
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

/// Plain symmetric fit (ggml `Q4_0` reference rule): `max` = the value of largest
/// magnitude (first one, sign kept), `d = max / −8`, `q = min(15, trunc(x·(1/d) + 8.5))`.
/// Returns the f16-rounded `d` to store.
pub(super) fn minmax_sym(x: &[f32], q: &mut [u8]) -> f32 {
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

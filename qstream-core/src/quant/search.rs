//! Error-minimising parameter search for the scaled block types (q2, q3, q4, q4_sym).
//!
//! For one block of values `x` with weights `w` (the per-column importance, or 1), the
//! search picks the block parameters minimising `Σ wᵢ (xᵢ − x̂ᵢ)²` where `x̂` is what
//! dequantization will produce. Because `d` and `m` are stored as f16, every candidate is
//! rounded to f16 *before* its levels are chosen and its error is measured, so the
//! reported error is exactly the error of the stored block.
//!
//! Asymmetric (`x̂ = d·q + m`, q ∈ 0..=nmax), in the spirit of ggml's `make_qkx2_quants`:
//! 1. the plain min/max levels;
//! 2. a small grid of stretched/shrunk ranges: levels `q = round(iscale·(x − min))` with
//!    `iscale = (nmax + rmin + k·rdelta) / (max − min)`;
//! 3. for every level set, the weighted least-squares `(d, m)`, f16-rounded, ranked by its
//!    *exact* error computed in closed form from the level sums (no extra pass);
//! 4. the winner is re-levelled (nearest levels) and refined by alternating least squares
//!    while the closed form predicts a gain (early exit otherwise).
//!
//! Symmetric (`x̂ = d·(q − 8)`), in the spirit of ggml's `make_qx_quants`: the plain fit
//! `d = max / −8`, its least-squares refit, and a short ordered list of other scales
//! ([`SYM_CANDIDATES`]), ranked the same way.
//!
//! Candidates are evaluated two or three per pass over the block (each with its own lane
//! accumulators, so the sums are those of one pass per candidate); blocks that min/max
//! already represents exactly (e.g. a dequantized GGUF of the same type) skip the search.
//! Unweighted blocks (`w: None`) run kernels that do not read weights; on x86-64 with AVX2
//! and F16C the passes are explicit AVX2 code (`search_avx2.rs`). All of these give results
//! bit-identical to the straightforward formulation kept in `search_ref.rs`, which the tests
//! compare against.
//!
//! The plain min/max quantizers (ggml's reference `Q4_0`/`Q4_1` rules) live next to the
//! searched ones in each type's file (`quantize_row_minmax`, ...) for benchmarking and for
//! bit-exact GGUF parity. [`set_enabled`] switches the default quantizers to plain min/max.

// `x.max(lo).min(hi)` (not `clamp`) on purpose in the hot loops: it maps NaN to `lo`
// instead of propagating it, so a NaN weight can never produce an out-of-range level.
#![allow(clippy::manual_clamp)]
// The scalar tails index `x` and, through `wt`, `w` (not read by the unweighted kernels).
#![allow(clippy::needless_range_loop)]

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

/// Default grid: the min/max levels, two more level sets (range mapped to `nmax ± 0.5`)
/// and up to two refinements — on SmolLM2's weights this keeps ~90% of the gain of a
/// 21-point grid (ggml `make_qkx2_quants`-style) at about 1.6× the time of min/max
/// (`tune_on_real_weights` below).
pub const DEFAULT_ASYM_GRID: AsymGrid = AsymGrid {
    rmin: -0.5,
    rdelta: 1.0,
    nstep: 1,
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

/// Weights handed to the unweighted kernels (`W = false`, which never read them): lets a
/// call without weights run the same loops with no weight buffer to build.
static ONES: [f32; MAX_BLOCK] = [1.0; MAX_BLOCK];

/// Weight `i` of a chunk: `ws[i]`, or the constant 1 in the unweighted kernels
/// (`W = false`). `1·v == v` bit for bit (NaN and ±0 included), so an unweighted kernel
/// gives exactly the sums of the weighted one on a buffer of ones, without the loads and
/// multiplies.
#[inline(always)]
fn wt<const W: bool>(ws: &[f32], i: usize) -> f32 {
    if W {
        ws[i]
    } else {
        1.0
    }
}

/// `rnd(v.max(lo).min(hi))` for `lo < hi`, with the clamp as two compare-selects (one
/// `maxps`/`minps` each instead of the NaN-aware `maxnum` sequences). Same value for
/// every `v` (NaN → `lo` in both), except possibly the sign of a zero before rounding,
/// which `rnd` erases (`rnd(−0) = rnd(+0) = +0`).
#[inline(always)]
fn clamp_rnd(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v > lo { v } else { lo };
    rnd(if v < hi { v } else { hi })
}

/// Levels for `(d, m)` (f16-rounded), the weighted squared error they give, and the
/// level sums `(Σw·q, Σw·q², Σw·q·x)` of those levels (for a least-squares refit).
#[inline(always)]
fn eval_asym<const W: bool>(
    x: &[f32],
    w: &[f32],
    nmax: u8,
    d: f32,
    m: f32,
    q: &mut [u8],
) -> (f32, [f32; 3]) {
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
            let l = clamp_rnd((xs[j] - m) * id, 0.0, nm);
            qs[j] = l as u8;
            let e = xs[j] - (d * l + m);
            let wv = wt::<W>(ws, j);
            acc[j] += wv * e * e;
            let wl = wv * l;
            a[j] += wl;
            b[j] += wl * l;
            c[j] += wl * xs[j];
        }
    }
    let mut err = hsum(acc);
    let mut sums = [hsum(a), hsum(b), hsum(c)];
    for i in n8..x.len() {
        let l = clamp_rnd((x[i] - m) * id, 0.0, nm);
        q[i] = l as u8;
        let e = x[i] - (d * l + m);
        let wv = wt::<W>(w, i);
        err += wv * e * e;
        let wl = wv * l;
        sums[0] += wl;
        sums[1] += wl * l;
        sums[2] += wl * x[i];
    }
    (err, sums)
}

/// Weighted sums `(Σw·q, Σw·q², Σw·q·x)` of `K` level sets
/// `q = round(clamp(iscale[k]·(x − lo)))` in one pass over the block: each set keeps its
/// own lane accumulators, updated in the order a pass of its own would, so the sums are
/// bit-identical to `K` separate passes (x and w are loaded once).
#[inline(always)]
fn level_sums<const K: usize, const W: bool>(
    x: &[f32],
    w: &[f32],
    nmax: u8,
    iscale: [f32; K],
    lo: f32,
) -> [[f32; 3]; K] {
    let nm = nmax as f32;
    let mut acc = [[[0f32; 8]; 3]; K];
    let n8 = x.len() / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        for (is, ak) in iscale.iter().zip(acc.iter_mut()) {
            for j in 0..8 {
                let l = clamp_rnd(is * (xs[j] - lo), 0.0, nm);
                let wl = wt::<W>(ws, j) * l;
                ak[0][j] += wl;
                ak[1][j] += wl * l;
                ak[2][j] += wl * xs[j];
            }
        }
    }
    let mut s = acc.map(|a| [hsum(a[0]), hsum(a[1]), hsum(a[2])]);
    for i in n8..x.len() {
        for (is, sk) in iscale.iter().zip(s.iter_mut()) {
            let l = clamp_rnd(is * (x[i] - lo), 0.0, nm);
            let wv = wt::<W>(w, i);
            sk[0] += wv * l;
            sk[1] += wv * l * l;
            sk[2] += wv * l * x[i];
        }
    }
    s
}

/// Weighted block moments `(Σw, Σw·x, Σw·x²)` and the range over entries of positive
/// weight (`lo > hi` when there is none), in one vectorizable pass.
#[inline(always)]
fn block_stats<const W: bool>(x: &[f32], w: &[f32]) -> ([f32; 3], f32, f32) {
    let (mut a, mut b, mut c) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    let (mut lo, mut hi) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
    let n8 = x.len() / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        for j in 0..8 {
            let wv = wt::<W>(ws, j);
            let wx = wv * xs[j];
            a[j] += wv;
            b[j] += wx;
            c[j] += wx * xs[j];
            let pos = wv > 0.0;
            lo[j] = lo[j].min(if pos { xs[j] } else { f32::INFINITY });
            hi[j] = hi[j].max(if pos { xs[j] } else { f32::NEG_INFINITY });
        }
    }
    let mut s = [hsum(a), hsum(b), hsum(c)];
    let mut l = lo.iter().fold(f32::INFINITY, |m, v| m.min(*v));
    let mut h = hi.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for i in n8..x.len() {
        let wv = wt::<W>(w, i);
        s[0] += wv;
        s[1] += wv * x[i];
        s[2] += wv * x[i] * x[i];
        if wv > 0.0 {
            l = l.min(x[i]);
            h = h.max(x[i]);
        }
    }
    (s, l, h)
}

/// The pass kernels, AVX2 (`AVX`, only inside [`search_asym_avx2`]/[`search_sym_avx2`],
/// entered after AVX2 and F16C were detected) or portable; both give bit-identical results.
#[inline(always)]
fn k_level_sums<const K: usize, const W: bool, const AVX: bool>(
    x: &[f32],
    w: &[f32],
    nmax: u8,
    iscale: [f32; K],
    lo: f32,
) -> [[f32; 3]; K] {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: `AVX` is true only in code inlined into the `*_avx2` entry points,
        // which run after AVX2 was detected on this CPU.
        return unsafe { avx2::level_sums::<K, W>(x, w, nmax, iscale, lo) };
    }
    level_sums::<K, W>(x, w, nmax, iscale, lo)
}

/// [`eval_asym`], AVX2 or portable (see [`k_level_sums`]).
#[inline(always)]
fn k_eval_asym<const W: bool, const AVX: bool>(
    x: &[f32],
    w: &[f32],
    nmax: u8,
    d: f32,
    m: f32,
    q: &mut [u8],
) -> (f32, [f32; 3]) {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: as in `k_level_sums`.
        return unsafe { avx2::eval_asym::<W>(x, w, nmax, d, m, q) };
    }
    eval_asym::<W>(x, w, nmax, d, m, q)
}

/// [`sym_sums`], AVX2 or portable (see [`k_level_sums`]).
#[inline(always)]
fn k_sym_sums<const K: usize, const W: bool, const AVX: bool>(
    x: &[f32],
    w: &[f32],
    iscale: [f32; K],
) -> [(f32, f32); K] {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: as in `k_level_sums`.
        return unsafe { avx2::sym_sums::<K, W>(x, w, iscale) };
    }
    sym_sums::<K, W>(x, w, iscale)
}

/// [`eval_sym`], AVX2 or portable (see [`k_level_sums`]).
#[inline(always)]
fn k_eval_sym<const W: bool, const AVX: bool>(
    x: &[f32],
    w: &[f32],
    d: f32,
    q: &mut [u8],
) -> (f32, f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: as in `k_level_sums`.
        return unsafe { avx2::eval_sym::<W>(x, w, d, q) };
    }
    eval_sym::<W>(x, w, d, q)
}

/// Whether this CPU has AVX2 and F16C (the search's x86-64 fast path).
#[cfg(target_arch = "x86_64")]
#[inline]
fn avx2_f16c() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c")
}

/// [`round_f16`], with the F16C instructions inside the AVX entry points (the same
/// instructions `half` uses on such a CPU).
#[inline(always)]
fn rf16<const AVX: bool>(v: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: as in `k_level_sums` (the entry points also require F16C).
        return unsafe { avx2::round_f16(v) };
    }
    round_f16(v)
}

/// [`block_stats`], AVX2 or portable (see [`k_level_sums`]).
#[inline(always)]
fn k_block_stats<const W: bool, const AVX: bool>(x: &[f32], w: &[f32]) -> ([f32; 3], f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: as in `k_level_sums`.
        return unsafe { avx2::block_stats::<W>(x, w) };
    }
    block_stats::<W>(x, w)
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
fn lsq_asym<const AVX: bool>(st: &[f32; 3], s: &[f32; 3]) -> Option<(f32, f32)> {
    let (sw, swx) = (st[0] as f64, st[1] as f64);
    let (swq, swq2, swqx) = (s[0] as f64, s[1] as f64, s[2] as f64);
    let det = sw * swq2 - swq * swq;
    if det <= 0.0 || !det.is_finite() {
        return None;
    }
    let d = ((sw * swqx - swq * swx) / det) as f32;
    let m = ((swq2 * swx - swq * swqx) / det) as f32;
    if d > 0.0 && d.is_finite() && m.is_finite() {
        Some((rf16::<AVX>(d), rf16::<AVX>(m)))
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
/// `w: None` means all weights 1 (same result as a slice of ones, computed without it).
///
/// Passes over the block: one for the moments and range; one level-sum pass for the
/// min/max levels and one per pair of grid points (each candidate's least-squares
/// `(d, m)` is f16-rounded and ranked by its exact error from the sums, [`asym_cf_err`],
/// without another pass); one pass re-levelling the winner (nearest levels, never worse
/// than the ranked error, so never worse than min/max); then up to `refine` alternating
/// least-squares steps, each taken only when the closed form says it improves.
/// Blocks the min/max fit already represents (relative error < 1e-9) exit after it.
///
/// On x86-64 with AVX2 the same code runs compiled for AVX2 (chosen at run time); no FMA
/// contraction is involved, so the result is bit-identical to the portable build.
pub fn search_asym(
    x: &[f32],
    w: Option<&[f32]>,
    nmax: u8,
    grid: &AsymGrid,
    q: &mut [u8],
) -> AsymParams {
    #[cfg(target_arch = "x86_64")]
    if avx2_f16c() {
        // SAFETY: `search_asym_avx2` requires AVX2 and F16C, detected on this CPU just above.
        return unsafe { search_asym_avx2(x, w, nmax, grid, q) };
    }
    search_asym_portable::<false>(x, w, nmax, grid, q)
}

/// [`search_asym_portable`] compiled with AVX2 and F16C enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
fn search_asym_avx2(
    x: &[f32],
    w: Option<&[f32]>,
    nmax: u8,
    grid: &AsymGrid,
    q: &mut [u8],
) -> AsymParams {
    search_asym_portable::<true>(x, w, nmax, grid, q)
}

/// [`search_asym`] without the run-time ISA dispatch (the code both builds share).
#[inline(always)]
fn search_asym_portable<const AVX: bool>(
    x: &[f32],
    w: Option<&[f32]>,
    nmax: u8,
    grid: &AsymGrid,
    q: &mut [u8],
) -> AsymParams {
    let n = x.len().min(MAX_BLOCK).min(q.len());
    match w {
        Some(w) if w.len() >= n => search_asym_w::<true, AVX>(&x[..n], &w[..n], nmax, grid, q),
        _ => search_asym_w::<false, AVX>(&x[..n], &ONES[..n], nmax, grid, q),
    }
}

/// The search on `x` (`x.len() <= MAX_BLOCK`) with weights `w` (same length; all 1 and
/// not read when `W` is false).
#[inline(always)]
fn search_asym_w<const W: bool, const AVX: bool>(
    x: &[f32],
    w: &[f32],
    nmax: u8,
    grid: &AsymGrid,
    q: &mut [u8],
) -> AsymParams {
    let n = x.len();
    let (st, mut lo, mut hi) = k_block_stats::<W, AVX>(x, w);
    if lo > hi {
        // no entry has positive weight: fit all of them
        let (l, h) = weighted_range(x, None);
        lo = l;
        hi = h;
    }
    let range = hi - lo;
    if range <= 0.0 || !range.is_finite() {
        let m = rf16::<AVX>(lo);
        q[..n].fill(0);
        return AsymParams { d: 0.0, m };
    }
    let nm = nmax as f32;
    let d0 = rf16::<AVX>(range / nm);
    let m0 = rf16::<AVX>(lo);
    // Grid points, in grid order, without the min/max levels (done as `s0`).
    let mut points = (0..=grid.nstep).filter_map(|k| {
        let r = grid.rmin + grid.rdelta * k as f32;
        (r.abs() >= 1e-6).then(|| (nm + r) / range)
    });
    // The min/max level set and (speculatively: unused if the min/max fit is exact) the
    // first two grid points in one pass; the rest two per pass; considered in grid order.
    let (p0, p1) = (points.next(), points.next());
    let (s0, first) = match (p0, p1) {
        (Some(i0), Some(i1)) => {
            let [s0, a, b] = k_level_sums::<3, W, AVX>(x, w, nmax, [nm / range, i0, i1], lo);
            (s0, [Some(a), Some(b)])
        }
        _ => {
            let [s0] = k_level_sums::<1, W, AVX>(x, w, nmax, [nm / range], lo);
            (s0, [None, None])
        }
    };
    let mut best = (asym_cf_err(&st, &s0, d0, m0), d0, m0);
    let var =
        (st[2] as f64 - (st[1] as f64).powi(2) / (st[0] as f64).max(f64::MIN_POSITIVE)).max(0.0);
    if best.0 > EARLY_EXIT_REL * var {
        let mut consider = |s: &[f32; 3]| {
            if let Some((d, m)) = lsq_asym::<AVX>(&st, s) {
                let e = asym_cf_err(&st, s, d, m);
                if e < best.0 {
                    best = (e, d, m);
                }
            }
        };
        consider(&s0);
        for s in first.iter().flatten() {
            consider(s);
        }
        // Only a lone first point is left over when the fused pass did not run.
        let mut pending = if first[0].is_none() { p0 } else { None };
        for iscale in points {
            match pending.take() {
                None => pending = Some(iscale),
                Some(prev) => {
                    let [a, b] = k_level_sums::<2, W, AVX>(x, w, nmax, [prev, iscale], lo);
                    consider(&a);
                    consider(&b);
                }
            }
        }
        if let Some(iscale) = pending {
            let [a] = k_level_sums::<1, W, AVX>(x, w, nmax, [iscale], lo);
            consider(&a);
        }
    }
    let (d, m) = (best.1, best.2);
    let (mut err, mut s) = k_eval_asym::<W, AVX>(x, w, nmax, d, m, &mut q[..n]);
    let mut cur = AsymParams { d, m };
    let mut tq = [0u8; MAX_BLOCK];
    for _ in 0..grid.refine {
        let Some((d, m)) = lsq_asym::<AVX>(&st, &s) else {
            break;
        };
        if (d == cur.d && m == cur.m) || asym_cf_err(&st, &s, d, m) >= err as f64 * (1.0 - 1e-5) {
            break;
        }
        let (e2, s2) = k_eval_asym::<W, AVX>(x, w, nmax, d, m, &mut tq[..n]);
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
        // `as u8` truncates toward zero and saturates (NaN → 0), matching ggml's int8 cast
        // for in-range values; so `trunc` is not needed (on baseline x86-64 it is a libm
        // call per value).
        let l = (xv - lo) * id + 0.5;
        *qv = (l.max(0.0) as u8).min(nmax);
    }
    AsymParams {
        d: round_f16(d),
        m: round_f16(lo),
    }
}

/// Levels `0..=15` for the symmetric `x̂ = d·(q−8)` given an f16-rounded `d`, the error,
/// and the sums `(Σw·l·x, Σw·l²)` of `l = q − 8` (for a least-squares refit).
#[inline(always)]
fn eval_sym<const W: bool>(x: &[f32], w: &[f32], d: f32, q: &mut [u8]) -> (f32, f32, f32) {
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
            let l = clamp_rnd(xs[j] * id, -8.0, 7.0);
            qs[j] = (l + 8.0) as u8;
            let e = xs[j] - d * l;
            let wv = wt::<W>(ws, j);
            acc[j] += wv * e * e;
            let wl = wv * l;
            a[j] += wl * xs[j];
            b[j] += wl * l;
        }
    }
    let (mut err, mut slx, mut sll) = (hsum(acc), hsum(a), hsum(b));
    for i in n8..x.len() {
        let l = clamp_rnd(x[i] * id, -8.0, 7.0);
        q[i] = (l + 8.0) as u8;
        let e = x[i] - d * l;
        let wv = wt::<W>(w, i);
        err += wv * e * e;
        slx += wv * l * x[i];
        sll += wv * l * l;
    }
    (err, slx, sll)
}

/// `(Σw·l·x, Σw·l²)` of `K` level sets `l = round(clamp(iscale[k]·x, −8, 7))` in one pass,
/// each with its own lane accumulators (bit-identical to `K` separate passes).
#[inline(always)]
fn sym_sums<const K: usize, const W: bool>(
    x: &[f32],
    w: &[f32],
    iscale: [f32; K],
) -> [(f32, f32); K] {
    let mut acc = [[[0f32; 8]; 2]; K];
    let n8 = x.len() / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        for (is, ak) in iscale.iter().zip(acc.iter_mut()) {
            for j in 0..8 {
                let l = clamp_rnd(is * xs[j], -8.0, 7.0);
                let wl = wt::<W>(ws, j) * l;
                ak[0][j] += wl * xs[j];
                ak[1][j] += wl * l;
            }
        }
    }
    let mut s = acc.map(|a| (hsum(a[0]), hsum(a[1])));
    for i in n8..x.len() {
        for (is, sk) in iscale.iter().zip(s.iter_mut()) {
            let l = clamp_rnd(is * x[i], -8.0, 7.0);
            let wv = wt::<W>(w, i);
            sk.0 += wv * l * x[i];
            sk.1 += wv * l * l;
        }
    }
    s
}

/// The symmetric search's first pass: `Σw·x²` (accumulated in element order, a serial
/// sum, as the ranking has always used), the largest magnitude `amax` among entries of
/// positive weight (0 if none), and the signed value of the first such entry having it
/// (`max`; meaningful when `amax` is positive and finite).
#[inline(always)]
fn sym_prepass<const W: bool>(x: &[f32], w: &[f32]) -> (f32, f32, f32) {
    let n = x.len();
    let mut swx2 = 0f32;
    for (i, v) in x.iter().enumerate() {
        swx2 += wt::<W>(w, i) * v * v;
    }
    // The lane-wise maximum magnitude, then the first entry that has it.
    let n8 = n / 8 * 8;
    let mut am = [0f32; 8];
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        for j in 0..8 {
            let a = if wt::<W>(ws, j) > 0.0 {
                xs[j].abs()
            } else {
                0.0
            };
            am[j] = if a > am[j] { a } else { am[j] };
        }
    }
    let mut amax = am.iter().fold(0f32, |m, &a| if a > m { a } else { m });
    for i in n8..n {
        let a = if wt::<W>(w, i) > 0.0 { x[i].abs() } else { 0.0 };
        amax = if a > amax { a } else { amax };
    }
    let max = (0..n)
        .find(|&i| wt::<W>(w, i) > 0.0 && x[i].abs() == amax)
        .map_or(amax, |i| x[i]);
    (swx2, amax, max)
}

/// [`sym_prepass`], AVX2 or portable (see [`k_level_sums`]).
#[inline(always)]
fn k_sym_prepass<const W: bool, const AVX: bool>(x: &[f32], w: &[f32]) -> (f32, f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: as in `k_level_sums`.
        return unsafe { avx2::sym_prepass::<W>(x, w) };
    }
    sym_prepass::<W>(x, w)
}

/// Level (of `max`, the value of largest magnitude) for the symmetric search's extra
/// candidates, most useful first (measured on SmolLM2 weights): mapping `max` to +7
/// instead of −8, then slightly stretched/shrunk scales.
pub const SYM_CANDIDATES: [f32; 6] = [7.0, -8.5, -7.5, 7.5, 6.5, -9.0];

/// Exact `Σw·(x − d·l)²` of fixed levels from `Σw·x²` and their sums (f64).
#[inline]
fn sym_cf_err(swx2: f32, slx: f32, sll: f32, d: f32) -> f64 {
    let d = d as f64;
    swx2 as f64 - 2.0 * d * slx as f64 + d * d * sll as f64
}

/// Searched symmetric (`x̂ = d·(q−8)`) fit of one block: writes levels `0..=15` to `q`
/// and returns the f16-rounded `d`. `w: None` means all weights 1.
///
/// Candidates: the plain scale `max/−8` and its least-squares refit, then the first
/// `nstep` level sets of [`SYM_CANDIDATES`] (`iscale = level/max`, two per pass), each by
/// its f16-rounded least-squares `d` ranked in closed form
/// (`Σw·x² − 2d·Σw·l·x + d²·Σw·l²`). The winner is re-levelled (nearest levels: never
/// worse than the ranked error) and refined up to `refine` times while the closed form
/// says a refit helps. Runs AVX2-compiled where available, bit-identical to the portable
/// build (as [`search_asym`]).
pub fn search_sym(x: &[f32], w: Option<&[f32]>, nstep: i32, refine: u32, q: &mut [u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2_f16c() {
        // SAFETY: `search_sym_avx2` requires AVX2 and F16C, detected on this CPU just above.
        return unsafe { search_sym_avx2(x, w, nstep, refine, q) };
    }
    search_sym_portable::<false>(x, w, nstep, refine, q)
}

/// [`search_sym_portable`] compiled with AVX2 and F16C enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
fn search_sym_avx2(x: &[f32], w: Option<&[f32]>, nstep: i32, refine: u32, q: &mut [u8]) -> f32 {
    search_sym_portable::<true>(x, w, nstep, refine, q)
}

/// [`search_sym`] without the run-time ISA dispatch (the code both builds share).
#[inline(always)]
fn search_sym_portable<const AVX: bool>(
    x: &[f32],
    w: Option<&[f32]>,
    nstep: i32,
    refine: u32,
    q: &mut [u8],
) -> f32 {
    let n = x.len().min(MAX_BLOCK).min(q.len());
    match w {
        Some(w) if w.len() >= n => search_sym_w::<true, AVX>(&x[..n], &w[..n], nstep, refine, q),
        _ => search_sym_w::<false, AVX>(&x[..n], &ONES[..n], nstep, refine, q),
    }
}

/// The symmetric search on `x` (`x.len() <= MAX_BLOCK`) with weights `w` (same length;
/// all 1 and not read when `W` is false).
#[inline(always)]
fn search_sym_w<const W: bool, const AVX: bool>(
    x: &[f32],
    w: &[f32],
    nstep: i32,
    refine: u32,
    q: &mut [u8],
) -> f32 {
    let n = x.len();
    let (swx2, amax, max) = k_sym_prepass::<W, AVX>(x, w);
    if amax == 0.0 || !amax.is_finite() {
        q[..n].fill(8);
        return 0.0;
    }
    let d0 = rf16::<AVX>(max / -8.0);
    let cands = &SYM_CANDIDATES[..(nstep.max(0) as usize).min(SYM_CANDIDATES.len())];
    // The plain level set and (speculatively: unused if the plain fit is exact) the first
    // two candidates in one pass; the rest two per pass; all considered in list order.
    let ((slx0, sll0), first, rest) = if let [c0, c1, rest @ ..] = cands {
        let [s0, a, b] = k_sym_sums::<3, W, AVX>(x, w, [-8.0 / max, c0 / max, c1 / max]);
        (s0, Some([a, b]), rest)
    } else {
        let [s0] = k_sym_sums::<1, W, AVX>(x, w, [-8.0 / max]);
        (s0, None, cands)
    };
    let mut best = (sym_cf_err(swx2, slx0, sll0, d0), d0);
    if best.0 > EARLY_EXIT_REL * swx2 as f64 {
        let mut consider = |slx: f32, sll: f32| {
            if sll > 0.0 && slx != 0.0 {
                let d = rf16::<AVX>(slx / sll);
                if d.is_finite() && d != 0.0 {
                    let e = sym_cf_err(swx2, slx, sll, d);
                    if e < best.0 {
                        best = (e, d);
                    }
                }
            }
        };
        consider(slx0, sll0);
        for (a, b) in first.into_iter().flatten() {
            consider(a, b);
        }
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            let [(a0, b0), (a1, b1)] = k_sym_sums::<2, W, AVX>(x, w, [p[0] / max, p[1] / max]);
            consider(a0, b0);
            consider(a1, b1);
        }
        if let [l] = pairs.remainder() {
            let [(a, b)] = k_sym_sums::<1, W, AVX>(x, w, [l / max]);
            consider(a, b);
        }
    }
    let mut d = best.1;
    let (mut err, mut slx, mut sll) = k_eval_sym::<W, AVX>(x, w, d, &mut q[..n]);
    let mut tq = [0u8; MAX_BLOCK];
    for _ in 0..refine {
        if sll.is_nan() || sll <= 0.0 {
            break;
        }
        let d2 = rf16::<AVX>(slx / sll);
        if d2 == d
            || d2 == 0.0
            || !d2.is_finite()
            || sym_cf_err(swx2, slx, sll, d2) >= err as f64 * (1.0 - 1e-5)
        {
            break;
        }
        let (e2, a, b) = k_eval_sym::<W, AVX>(x, w, d2, &mut tq[..n]);
        if e2 < err {
            (err, slx, sll, d) = (e2, a, b, d2);
            q[..n].copy_from_slice(&tq[..n]);
        } else {
            break;
        }
    }
    d
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
        // `as u8` truncates (and saturates): the `trunc` of the rule is implicit.
        let l = xv * id + 8.5;
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
    let mut xbuf = [0f32; MAX_BLOCK];
    let mut w = [0f32; MAX_BLOCK];
    let mut q = [0u8; MAX_BLOCK];
    for (bi, blk) in dst.chunks_exact_mut(block_bytes).enumerate() {
        let start = (bi * block).min(src.len());
        let end = (start + block).min(src.len());
        let len = end - start;
        // A whole block is read in place; the last, partial one is zero-padded.
        let x: &[f32] = if len == block {
            &src[start..end]
        } else {
            xbuf[..len].copy_from_slice(&src[start..end]);
            xbuf[len..block].fill(0.0);
            &xbuf[..block]
        };
        // Without importance a whole block has all weights 1: the search then runs its
        // unweighted kernels (same result as a buffer of ones, which is not built).
        let unit = importance.is_none() && len == block;
        if (searched && !unit) || importance.is_some() {
            for (i, wi) in w[..block].iter_mut().enumerate() {
                *wi = if i < len {
                    importance.map_or(1.0, |imp| imp.get(start + i).copied().unwrap_or(1.0))
                } else {
                    0.0
                };
            }
        }
        let p = if searched {
            let wb = if unit { None } else { Some(&w[..block]) };
            search_asym(x, wb, nmax, &DEFAULT_ASYM_GRID, &mut q[..block])
        } else if importance.is_some() {
            minmax_asym(x, Some(&w[..block]), nmax, &mut q[..block])
        } else {
            minmax_asym(x, None, nmax, &mut q[..block])
        };
        super::float::write_f16(&mut blk[0..2], p.d);
        super::float::write_f16(&mut blk[2..4], p.m);
        pack(&q[..block], &mut blk[4..]);
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "search_avx2.rs"]
mod avx2;

#[cfg(test)]
#[path = "search_ref.rs"]
mod reference;

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

    /// Deterministic test values: Gaussian-like blocks, blocks already on a grid (early
    /// exit), constant blocks, exact zeros of both signs, ties, tiny/huge magnitudes, and
    /// now and then a NaN or an infinity.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }

        fn unif(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32
        }

        fn block(&mut self, n: usize) -> Vec<f32> {
            let kind = self.next() % 12;
            let scale = [1e-3f32, 0.05, 1.0, 300.0][(self.next() % 4) as usize];
            let (d, m) = (scale * (0.05 + self.unif()), scale * (self.unif() - 0.7));
            (0..n)
                .map(|_| {
                    let g = (self.unif() + self.unif() + self.unif() - 1.5) * scale;
                    match kind {
                        0 => d * (self.next() % 16) as f32 + m,
                        1 => d * ((self.next() % 16) as f32 - 8.0),
                        2 => scale,
                        3 => [0.0, -0.0, g, -g][(self.next() % 4) as usize],
                        4 => [scale, -scale, g][(self.next() % 3) as usize],
                        // the range ends at a zero of either sign
                        6 => [0.0, -0.0, g.abs()][(self.next() % 3) as usize],
                        7 => [0.0, -0.0, -g.abs()][(self.next() % 3) as usize],
                        // zeros of both signs only, or with one more level (exact fits)
                        8 => [0.0, -0.0][(self.next() % 2) as usize],
                        9 => [0.0, -0.0, scale][(self.next() % 3) as usize],
                        5 if self.next().is_multiple_of(40) => {
                            [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][(self.next() % 3) as usize]
                        }
                        _ => g,
                    }
                })
                .collect()
        }

        fn weights(&mut self, n: usize) -> Option<Vec<f32>> {
            match self.next() % 5 {
                0 => None,
                1 => Some(vec![1.0; n]),
                2 => Some(vec![0.0; n]),
                3 => Some(
                    (0..n)
                        .map(|_| match self.next() % 6 {
                            0 => 0.0,
                            1 => -0.5,
                            _ => self.unif() * 3.0,
                        })
                        .collect(),
                ),
                _ => Some((0..n).map(|_| 0.1 + self.unif()).collect()),
            }
        }
    }

    #[test]
    fn fast_search_bit_identical_to_reference() {
        let grids = [
            DEFAULT_ASYM_GRID,
            AsymGrid {
                rmin: 0.0,
                rdelta: 0.0,
                nstep: 0,
                refine: 2,
            },
            AsymGrid {
                rmin: -1.0,
                rdelta: 0.5,
                nstep: 4,
                refine: 1,
            },
            AsymGrid {
                rmin: -1.0,
                rdelta: 0.1,
                nstep: 20,
                refine: 3,
            },
        ];
        let mut g = Gen(0x5eed);
        let (mut qa, mut qb, mut qc) = ([0u8; MAX_BLOCK], [0u8; MAX_BLOCK], [0u8; MAX_BLOCK]);
        for it in 0..8000 {
            let n = match it % 4 {
                0 => [32, 64, 128, 256][(g.next() % 4) as usize],
                _ => 1 + (g.next() % MAX_BLOCK as u32) as usize,
            };
            let x = g.block(n);
            let w = g.weights(n);
            let w = w.as_deref();
            let nmax = [1u8, 3, 7, 15][(g.next() % 4) as usize];
            let grid = &grids[(g.next() % 4) as usize];
            let r = reference::search_asym(&x, w, nmax, grid, &mut qa);
            let f = search_asym(&x, w, nmax, grid, &mut qb);
            let p = search_asym_portable::<false>(&x, w, nmax, grid, &mut qc);
            for (name, o, qo) in [("dispatched", f, &qb), ("portable", p, &qc)] {
                assert_eq!(
                    (o.d.to_bits(), o.m.to_bits(), &qo[..n]),
                    (r.d.to_bits(), r.m.to_bits(), &qa[..n]),
                    "asym {name}: it {it} n {n} nmax {nmax} grid {grid:?} w {w:?} x {x:?}"
                );
            }
            let r = reference::minmax_asym(&x, w, nmax, &mut qa);
            let f = minmax_asym(&x, w, nmax, &mut qb);
            assert_eq!(
                (f.d.to_bits(), f.m.to_bits(), &qb[..n]),
                (r.d.to_bits(), r.m.to_bits(), &qa[..n]),
                "minmax_asym: it {it}"
            );
            let r = reference::minmax_sym(&x, &mut qa);
            let f = minmax_sym(&x, &mut qb);
            assert_eq!(
                (f.to_bits(), &qb[..n]),
                (r.to_bits(), &qa[..n]),
                "minmax_sym: it {it}"
            );
            let (nstep, refine) = ((g.next() % 8) as i32 - 1, g.next() % 3);
            let r = reference::search_sym(&x, w, nstep, refine, &mut qa);
            let f = search_sym(&x, w, nstep, refine, &mut qb);
            let p = search_sym_portable::<false>(&x, w, nstep, refine, &mut qc);
            for (name, o, qo) in [("dispatched", f, &qb), ("portable", p, &qc)] {
                assert_eq!(
                    (o.to_bits(), &qo[..n]),
                    (r.to_bits(), &qa[..n]),
                    "sym {name}: it {it} n {n} nstep {nstep} refine {refine} w {w:?} x {x:?}"
                );
            }
        }
    }

    /// The F16C rounding of the AVX2 path equals `half`'s (on every f16 boundary region:
    /// random bit patterns, all exponents, ties, subnormals, overflow, NaN, ±0, ±inf).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f16c_round_matches_half() {
        if !avx2_f16c() {
            return;
        }
        let mut g = Gen(3);
        let check = |v: f32| {
            let r = round_f16(v);
            // SAFETY: AVX2 and F16C were detected above.
            let f = unsafe { avx2::round_f16(v) };
            assert!(
                f.to_bits() == r.to_bits() || (f.is_nan() && r.is_nan()),
                "{v:e} ({:#x}): f16c {f:e}, half {r:e}",
                v.to_bits()
            );
        };
        for v in [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            65504.0,
            65520.0,
        ] {
            check(v);
        }
        for _ in 0..1_000_000 {
            check(f32::from_bits(g.next() ^ (g.next() << 16)));
            // values near and exactly between f16 neighbours
            let h = half::f16::from_bits(g.next() as u16).to_f32();
            let t = f32::from_bits(
                h.to_bits()
                    .wrapping_add((g.next() % 0x4000) * (1 + g.next() % 2)),
            );
            check(h);
            check(t);
        }
    }

    #[test]
    fn row_driver_bit_identical_to_reference() {
        let mut g = Gen(77);
        for it in 0..300 {
            let block = [32usize, 64, 128, 256][it % 4];
            let len = 1 + (g.next() % 700) as usize;
            let src: Vec<f32> = (0..len.div_ceil(block))
                .flat_map(|_| g.block(block))
                .take(len)
                .collect();
            let imp = g.weights(len);
            let bb = 4 + block / 2;
            let nb = len.div_ceil(block);
            for searched in [true, false] {
                let (mut a, mut b) = (vec![0u8; nb * bb], vec![0u8; nb * bb]);
                let pack = |q: &[u8], o: &mut [u8]| {
                    for (ob, qs) in o.iter_mut().zip(q.chunks_exact(2)) {
                        *ob = qs[0] | (qs[1] << 4);
                    }
                };
                reference::quantize_row_asym(
                    block,
                    &src,
                    imp.as_deref(),
                    15,
                    searched,
                    bb,
                    &mut a,
                    pack,
                );
                quantize_row_asym(block, &src, imp.as_deref(), 15, searched, bb, &mut b, pack);
                assert_eq!(a, b, "it {it} block {block} len {len} searched {searched}");
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

    /// Tuning harness on real weights (`QSTREAM_F32_GGUF=model.f32.gguf cargo test --release
    /// -p qstream-core --lib quant::search -- --ignored --nocapture`): relative squared error
    /// and time of min/max vs grids, per type and block.
    #[test]
    #[ignore]
    fn tune_on_real_weights() {
        let Ok(path) = std::env::var("QSTREAM_F32_GGUF") else {
            return;
        };
        let src = crate::import::open_source(std::path::Path::new(&path)).unwrap();
        let mut data = Vec::new();
        for t in src.tensors() {
            if t.shape.len() == 2
                && t.name.contains("blk.")
                && (t.name.contains("blk.3.") || t.name.contains("blk.17."))
            {
                data.extend(src.load_f32(&t.name).unwrap());
            }
        }
        let energy: f64 = data.iter().map(|v| (*v as f64).powi(2)).sum();
        let grids = [
            (
                "g0r0",
                AsymGrid {
                    rmin: 0.0,
                    rdelta: 0.0,
                    nstep: 0,
                    refine: 0,
                },
            ),
            (
                "g0r1",
                AsymGrid {
                    rmin: 0.0,
                    rdelta: 0.0,
                    nstep: 0,
                    refine: 1,
                },
            ),
            (
                "g0r2",
                AsymGrid {
                    rmin: 0.0,
                    rdelta: 0.0,
                    nstep: 0,
                    refine: 2,
                },
            ),
            (
                "g2r1",
                AsymGrid {
                    rmin: -0.5,
                    rdelta: 1.0,
                    nstep: 1,
                    refine: 1,
                },
            ),
            (
                "g4r1",
                AsymGrid {
                    rmin: -1.0,
                    rdelta: 0.5,
                    nstep: 4,
                    refine: 1,
                },
            ),
            (
                "old",
                AsymGrid {
                    rmin: -0.5,
                    rdelta: 0.25,
                    nstep: 4,
                    refine: 2,
                },
            ),
            (
                "g20",
                AsymGrid {
                    rmin: -1.0,
                    rdelta: 0.1,
                    nstep: 20,
                    refine: 2,
                },
            ),
        ];
        let mut q = [0u8; MAX_BLOCK];
        for (nmax, block) in [
            (15u8, 32usize),
            (15, 64),
            (15, 128),
            (7, 32),
            (7, 64),
            (3, 32),
            (3, 64),
        ] {
            let t = std::time::Instant::now();
            let mut e = 0f64;
            for x in data.chunks_exact(block) {
                let p = minmax_asym(x, None, nmax, &mut q[..block]);
                e += x
                    .iter()
                    .zip(&q)
                    .map(|(v, l)| ((v - (p.d * *l as f32 + p.m)) as f64).powi(2))
                    .sum::<f64>();
            }
            let tm = t.elapsed().as_secs_f64();
            print!(
                "nmax {nmax} B={block}: minmax {:.5} ({:.0} ms)",
                e / energy,
                tm * 1e3
            );
            for (name, g) in &grids {
                let t = std::time::Instant::now();
                let mut e = 0f64;
                for x in data.chunks_exact(block) {
                    let p = search_asym(x, None, nmax, g, &mut q[..block]);
                    e += x
                        .iter()
                        .zip(&q)
                        .map(|(v, l)| ((v - (p.d * *l as f32 + p.m)) as f64).powi(2))
                        .sum::<f64>();
                }
                print!(
                    " | {name} {:.5} ({:.0} ms)",
                    e / energy,
                    t.elapsed().as_secs_f64() * 1e3
                );
            }
            println!();
        }
        for block in [32usize, 64] {
            let t = std::time::Instant::now();
            let mut e = 0f64;
            for x in data.chunks_exact(block) {
                let d = minmax_sym(x, &mut q[..block]);
                e += x
                    .iter()
                    .zip(&q)
                    .map(|(v, l)| ((v - d * (*l as f32 - 8.0)) as f64).powi(2))
                    .sum::<f64>();
            }
            print!(
                "sym B={block}: minmax {:.5} ({:.0} ms)",
                e / energy,
                t.elapsed().as_secs_f64() * 1e3
            );
            for (nstep, refine) in [(0, 1), (1, 1), (2, 1), (3, 1), (3, 2), (6, 2)] {
                let t = std::time::Instant::now();
                let mut e = 0f64;
                for x in data.chunks_exact(block) {
                    let d = search_sym(x, None, nstep, refine, &mut q[..block]);
                    e += x
                        .iter()
                        .zip(&q)
                        .map(|(v, l)| ((v - d * (*l as f32 - 8.0)) as f64).powi(2))
                        .sum::<f64>();
                }
                print!(
                    " | n{nstep}r{refine} {:.5} ({:.0} ms)",
                    e / energy,
                    t.elapsed().as_secs_f64() * 1e3
                );
            }
            println!();
        }
    }
}

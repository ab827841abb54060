//! AVX2 versions of the search's per-pass kernels ([`super::level_sums`],
//! [`super::eval_asym`], [`super::sym_sums`], [`super::eval_sym`]).
//!
//! Lane `j` of each 8-wide register is accumulator `j` of the portable kernel, updated by
//! the same IEEE operations in the same order (no FMA; `maxps`/`minps` are exactly the
//! compare-selects of [`super::clamp_rnd`]); the lanes are reduced by the same
//! [`super::hsum`] and the tail runs the portable scalar code, so every result is
//! bit-identical to the portable kernel (checked by the tests against the reference).
//! Only called from code compiled with AVX2 after the CPU was checked for it.

use std::arch::x86_64::*;

use super::{clamp_rnd, hsum, wt};

/// `rnd` magic constant (1.5·2^23), see [`super::rnd`].
const MAGIC: f32 = 12_582_912.0;

/// The 8 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2")]
fn lanes(v: __m256) -> [f32; 8] {
    let mut a = [0f32; 8];
    // SAFETY: `a` holds 8 floats, an unaligned store may write them.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
    a
}

/// Load 8 floats from a chunk of (at least) 8.
#[inline]
#[target_feature(enable = "avx2")]
fn load(c: &[f32]) -> __m256 {
    assert!(c.len() >= 8);
    // SAFETY: `c` holds at least 8 floats (checked), an unaligned load may read them.
    unsafe { _mm256_loadu_ps(c.as_ptr()) }
}

/// Lane-wise `rnd(min(max(v, lo), hi))`: `maxps(v, lo)` is `v > lo ? v : lo` and
/// `minps(v, hi)` is `v < hi ? v : hi`, the compare-selects of `clamp_rnd`.
#[inline]
#[target_feature(enable = "avx2")]
fn clamp_rnd8(v: __m256, lo: __m256, hi: __m256) -> __m256 {
    let m = _mm256_set1_ps(MAGIC);
    let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    _mm256_sub_ps(_mm256_add_ps(v, m), m)
}

/// Store 8 levels (integral floats in 0..=255) as bytes.
#[inline]
#[target_feature(enable = "avx2")]
fn store_levels(l: __m256, q: &mut [u8]) {
    assert!(q.len() >= 8);
    let i = _mm256_cvttps_epi32(l);
    let p = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
    let b = _mm_packus_epi16(p, p);
    // SAFETY: `q` holds at least 8 bytes (checked); the store writes 8, unaligned.
    unsafe { _mm_storel_epi64(q.as_mut_ptr().cast::<__m128i>(), b) };
}

/// AVX2 [`super::level_sums`].
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn level_sums<const K: usize, const W: bool>(
    x: &[f32],
    w: &[f32],
    nmax: u8,
    iscale: [f32; K],
    lo: f32,
) -> [[f32; 3]; K] {
    let nm = nmax as f32;
    let (vz, vnm, vlo) = (_mm256_setzero_ps(), _mm256_set1_ps(nm), _mm256_set1_ps(lo));
    let mut vis = [vz; K];
    for (v, s) in vis.iter_mut().zip(iscale) {
        *v = _mm256_set1_ps(s);
    }
    let mut acc = [[vz; 3]; K];
    let n8 = x.len() / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        let xv = load(xs);
        let wv = if W { load(ws) } else { vz };
        let xd = _mm256_sub_ps(xv, vlo);
        for (is, ak) in vis.iter().zip(acc.iter_mut()) {
            let l = clamp_rnd8(_mm256_mul_ps(*is, xd), vz, vnm);
            let wl = if W { _mm256_mul_ps(wv, l) } else { l };
            ak[0] = _mm256_add_ps(ak[0], wl);
            ak[1] = _mm256_add_ps(ak[1], _mm256_mul_ps(wl, l));
            ak[2] = _mm256_add_ps(ak[2], _mm256_mul_ps(wl, xv));
        }
    }
    let mut s = [[0f32; 3]; K];
    for (sk, ak) in s.iter_mut().zip(&acc) {
        *sk = [hsum(lanes(ak[0])), hsum(lanes(ak[1])), hsum(lanes(ak[2]))];
    }
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

/// AVX2 [`super::eval_asym`] (`d` already checked: finite and nonzero, or 0 with `id` 0).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn eval_asym<const W: bool>(
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
    let vz = _mm256_setzero_ps();
    let (vnm, vid, vd, vm) = (
        _mm256_set1_ps(nm),
        _mm256_set1_ps(id),
        _mm256_set1_ps(d),
        _mm256_set1_ps(m),
    );
    let (mut acc, mut a, mut b, mut c) = (vz, vz, vz, vz);
    let n8 = x.len() / 8 * 8;
    for ((xs, ws), qs) in x[..n8]
        .chunks_exact(8)
        .zip(w[..n8].chunks_exact(8))
        .zip(q[..n8].chunks_exact_mut(8))
    {
        let xv = load(xs);
        let l = clamp_rnd8(_mm256_mul_ps(_mm256_sub_ps(xv, vm), vid), vz, vnm);
        store_levels(l, qs);
        let e = _mm256_sub_ps(xv, _mm256_add_ps(_mm256_mul_ps(vd, l), vm));
        let (we, wl) = if W {
            let wv = load(ws);
            (_mm256_mul_ps(wv, e), _mm256_mul_ps(wv, l))
        } else {
            (e, l)
        };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(we, e));
        a = _mm256_add_ps(a, wl);
        b = _mm256_add_ps(b, _mm256_mul_ps(wl, l));
        c = _mm256_add_ps(c, _mm256_mul_ps(wl, xv));
    }
    let mut err = hsum(lanes(acc));
    let mut sums = [hsum(lanes(a)), hsum(lanes(b)), hsum(lanes(c))];
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

/// AVX2 [`super::sym_sums`].
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn sym_sums<const K: usize, const W: bool>(
    x: &[f32],
    w: &[f32],
    iscale: [f32; K],
) -> [(f32, f32); K] {
    let vz = _mm256_setzero_ps();
    let (vlo, vhi) = (_mm256_set1_ps(-8.0), _mm256_set1_ps(7.0));
    let mut vis = [vz; K];
    for (v, s) in vis.iter_mut().zip(iscale) {
        *v = _mm256_set1_ps(s);
    }
    let mut acc = [[vz; 2]; K];
    let n8 = x.len() / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        let xv = load(xs);
        let wv = if W { load(ws) } else { vz };
        for (is, ak) in vis.iter().zip(acc.iter_mut()) {
            let l = clamp_rnd8(_mm256_mul_ps(*is, xv), vlo, vhi);
            let wl = if W { _mm256_mul_ps(wv, l) } else { l };
            ak[0] = _mm256_add_ps(ak[0], _mm256_mul_ps(wl, xv));
            ak[1] = _mm256_add_ps(ak[1], _mm256_mul_ps(wl, l));
        }
    }
    let mut s = [(0f32, 0f32); K];
    for (sk, ak) in s.iter_mut().zip(&acc) {
        *sk = (hsum(lanes(ak[0])), hsum(lanes(ak[1])));
    }
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

/// AVX2 [`super::eval_sym`].
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn eval_sym<const W: bool>(
    x: &[f32],
    w: &[f32],
    d: f32,
    q: &mut [u8],
) -> (f32, f32, f32) {
    let (id, d) = if d == 0.0 || !d.is_finite() {
        (0.0, 0.0)
    } else {
        (1.0 / d, d)
    };
    let vz = _mm256_setzero_ps();
    let (vlo, vhi, v8) = (
        _mm256_set1_ps(-8.0),
        _mm256_set1_ps(7.0),
        _mm256_set1_ps(8.0),
    );
    let (vid, vd) = (_mm256_set1_ps(id), _mm256_set1_ps(d));
    let (mut acc, mut a, mut b) = (vz, vz, vz);
    let n8 = x.len() / 8 * 8;
    for ((xs, ws), qs) in x[..n8]
        .chunks_exact(8)
        .zip(w[..n8].chunks_exact(8))
        .zip(q[..n8].chunks_exact_mut(8))
    {
        let xv = load(xs);
        let l = clamp_rnd8(_mm256_mul_ps(xv, vid), vlo, vhi);
        store_levels(_mm256_add_ps(l, v8), qs);
        let e = _mm256_sub_ps(xv, _mm256_mul_ps(vd, l));
        let (we, wl) = if W {
            let wv = load(ws);
            (_mm256_mul_ps(wv, e), _mm256_mul_ps(wv, l))
        } else {
            (e, l)
        };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(we, e));
        a = _mm256_add_ps(a, _mm256_mul_ps(wl, xv));
        b = _mm256_add_ps(b, _mm256_mul_ps(wl, l));
    }
    let (mut err, mut slx, mut sll) = (hsum(lanes(acc)), hsum(lanes(a)), hsum(lanes(b)));
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

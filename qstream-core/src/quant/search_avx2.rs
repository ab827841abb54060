//! AVX2 versions of the search's per-pass kernels ([`super::block_stats`],
//! [`super::level_sums`], [`super::eval_asym`], [`super::sym_sums`], [`super::eval_sym`])
//! and an F16C [`round_f16`].
//!
//! Lane `j` of each 8-wide register is accumulator `j` of the portable kernel, updated by
//! the same IEEE operations in the same order (no FMA; `maxps`/`minps` are exactly the
//! compare-selects of [`super::clamp_rnd`]); the lanes are reduced pairwise in the order of
//! [`super::hsum`] ([`hsums`]) and the tail runs the portable scalar code, so every result is
//! bit-identical to the portable kernel (checked by the tests against the reference).
//! Only called from code compiled with AVX2 after the CPU was checked for it.

use std::arch::x86_64::*;

use super::{clamp_rnd, wt};

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

/// `[hsum(lanes(v)) for v in acc]`, four accumulators at a time: `hsum` adds lane `i`
/// to lane `i + 4`, then those pairwise, then the two pair sums; `_mm_hadd_ps` on the
/// folded halves does exactly these additions (same operands, same order).
#[inline]
#[target_feature(enable = "avx2")]
fn hsums<const N: usize>(acc: [__m256; N]) -> [f32; N] {
    let mut out = [0f32; N];
    for (o, a) in out.chunks_mut(4).zip(acc.chunks(4)) {
        let mut h = [_mm_setzero_ps(); 4];
        for (hv, v) in h.iter_mut().zip(a) {
            *hv = _mm_add_ps(_mm256_castps256_ps128(*v), _mm256_extractf128_ps::<1>(*v));
        }
        let r = _mm_hadd_ps(_mm_hadd_ps(h[0], h[1]), _mm_hadd_ps(h[2], h[3]));
        let mut r4 = [0f32; 4];
        // SAFETY: `r4` holds 4 floats, an unaligned store may write them.
        unsafe { _mm_storeu_ps(r4.as_mut_ptr(), r) };
        o.copy_from_slice(&r4[..o.len()]);
    }
    out
}

/// f32 → f16 (round to nearest even) → f32 with the F16C instructions: what `half` does
/// on a CPU with F16C, i.e. [`super::round_f16`] here.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn round_f16(v: f32) -> f32 {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v));
    _mm_cvtss_f32(_mm_cvtph_ps(h))
}

/// AVX2 [`super::block_stats`]. The portable `lo.min(v)` on a never-NaN accumulator `lo`
/// is `minps(v, lo)` = `v < lo ? v : lo` (ties, e.g. −0 vs +0, keep `lo`), likewise for
/// `hi`; the tests check signed-zero ranges against the reference.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn block_stats<const W: bool>(x: &[f32], w: &[f32]) -> ([f32; 3], f32, f32) {
    let vz = _mm256_setzero_ps();
    let (pinf, ninf, one) = (
        _mm256_set1_ps(f32::INFINITY),
        _mm256_set1_ps(f32::NEG_INFINITY),
        _mm256_set1_ps(1.0),
    );
    let (mut a, mut b, mut c, mut lo, mut hi) = (vz, vz, vz, pinf, ninf);
    let n8 = x.len() / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        let xv = load(xs);
        let (xl, xh) = if W {
            let wv = load(ws);
            let wx = _mm256_mul_ps(wv, xv);
            a = _mm256_add_ps(a, wv);
            b = _mm256_add_ps(b, wx);
            c = _mm256_add_ps(c, _mm256_mul_ps(wx, xv));
            let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(wv, vz);
            (
                _mm256_blendv_ps(pinf, xv, pos),
                _mm256_blendv_ps(ninf, xv, pos),
            )
        } else {
            a = _mm256_add_ps(a, one);
            b = _mm256_add_ps(b, xv);
            c = _mm256_add_ps(c, _mm256_mul_ps(xv, xv));
            (xv, xv)
        };
        lo = _mm256_min_ps(xl, lo);
        hi = _mm256_max_ps(xh, hi);
    }
    let mut s = hsums([a, b, c]);
    let mut l = lanes(lo).iter().fold(f32::INFINITY, |m, v| m.min(*v));
    let mut h = lanes(hi).iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
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

/// AVX2 [`super::sym_prepass`]: the products `w·x·x` eight at a time, added to the sum
/// serially in element order; `|x|` by clearing the sign bit (what `abs` does); the lane
/// maximum by `maxps(a, am)` = `a > am ? a : am`; the first entry with the maximum found
/// by a compare mask.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn sym_prepass<const W: bool>(x: &[f32], w: &[f32]) -> (f32, f32, f32) {
    let n = x.len();
    let vz = _mm256_setzero_ps();
    let absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut am = vz;
    let mut swx2 = 0f32;
    let n8 = n / 8 * 8;
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        let xv = load(xs);
        let ax = _mm256_and_ps(xv, absm);
        let (p, a) = if W {
            let wv = load(ws);
            let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(wv, vz);
            (
                _mm256_mul_ps(_mm256_mul_ps(wv, xv), xv),
                _mm256_blendv_ps(vz, ax, pos),
            )
        } else {
            (_mm256_mul_ps(xv, xv), ax)
        };
        for v in lanes(p) {
            swx2 += v;
        }
        am = _mm256_max_ps(a, am);
    }
    let mut amax = lanes(am)
        .iter()
        .fold(0f32, |m, &a| if a > m { a } else { m });
    for i in n8..n {
        let wv = wt::<W>(w, i);
        swx2 += wv * x[i] * x[i];
        let a = if wv > 0.0 { x[i].abs() } else { 0.0 };
        amax = if a > amax { a } else { amax };
    }
    let va = _mm256_set1_ps(amax);
    for (xs, ws) in x[..n8].chunks_exact(8).zip(w[..n8].chunks_exact(8)) {
        let mut m = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_and_ps(load(xs), absm), va);
        if W {
            m = _mm256_and_ps(m, _mm256_cmp_ps::<_CMP_GT_OQ>(load(ws), vz));
        }
        let bits = _mm256_movemask_ps(m);
        if bits != 0 {
            return (swx2, amax, xs[bits.trailing_zeros() as usize]);
        }
    }
    let max = (n8..n)
        .find(|&i| wt::<W>(w, i) > 0.0 && x[i].abs() == amax)
        .map_or(amax, |i| x[i]);
    (swx2, amax, max)
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
        *sk = hsums(*ak);
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
    let [mut err, s0, s1, s2] = hsums([acc, a, b, c]);
    let mut sums = [s0, s1, s2];
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
        let [a, b] = hsums(*ak);
        *sk = (a, b);
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
    let [mut err, mut slx, mut sll] = hsums([acc, a, b]);
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

//! x86-64 AVX2 + FMA + F16C kernels.
//!
//! Integer dot products use `vpmaddubsw` (unsigned weight byte × signed activation byte,
//! pairs summed to i16: at most 2·128·128 in magnitude for the sign trick used by `Q8`,
//! 2·15·128 for nibbles, so nothing saturates) followed by `vpmaddwd` with ones (i16
//! pairs to i32): the per-group integer sums are exact, the same integers as the scalar
//! reference. Float accumulation runs in 8 lanes, so results differ from the scalar
//! reference only by f32 summation order.
//!
//! The private wrappers are only reachable through [`KERNELS`], which
//! `dispatch::kernel_set` hands out only after detecting AVX2, FMA and F16C.

use std::arch::x86_64::*;

use super::dispatch::{ActBatch, ActRow, ActRowMut, Isa, KernelSet};
use super::gemm::{self, Panel, Zero, PANEL};
use crate::quant::QuantType;

/// The AVX2 table.
pub(super) static KERNELS: KernelSet = KernelSet {
    isa: Isa::Avx2,
    quantize_act,
    quantize_act16,
    rms_norm_act,
    silu_mul_act,
    dot_q4,
    dot_q4sym,
    dot_q8,
    dot_q4_x4,
    dot_q4sym_x4,
    dot_q8_x4,
    dot_q2,
    dot_q2_x4,
    dot_q3,
    dot_mxfp4,
    dot_f32,
    dot_f16,
    dot_bf16,
    dot,
    axpy,
    dots,
    axpys,
    gemm: Some(gemm),
    gemm_pack,
    gemm_max_level: 15,
};

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Two f16 values at `p` (unaligned) as f32 `(first, second)`.
///
/// # Safety
/// `p..p+4` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16x2(p: *const u8) -> (f32, f32) {
    // SAFETY: the caller guarantees 4 readable bytes at p.
    let bits = unsafe { std::ptr::read_unaligned(p as *const i32) };
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// 32 nibbles (16 packed bytes at `p`) as 32 u8: low nibbles in the low 128 bits (values
/// 0..16 of the group), high nibbles in the high 128 bits (values 16..32).
///
/// # Safety
/// `p..p+16` must be readable.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes.
    let raw = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(raw, m);
    let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m);
    _mm256_set_m128i(hi, lo)
}

/// Σ u8·i8 over 32 bytes as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn dot_u8i8(w: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
}

/// `acc +` [`dot_u8i8`]`(w, x)`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn dot_u8i8_acc(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    _mm256_add_epi32(acc, dot_u8i8(w, x))
}

/// Blocks of a row the kernels may touch (bounded by the row and by the activation).
#[inline]
pub(super) fn n_blocks(block: usize, bb: usize, row: &[u8], a: &ActRow<'_>) -> usize {
    // shifts and a multiply instead of two divisions: this runs once per row and token
    let nb = if block.is_power_of_two() {
        (a.groups() * 32) >> block.trailing_zeros()
    } else {
        a.groups() * 32 / block
    };
    if nb * bb <= row.len() {
        nb
    } else {
        row.len() / bb
    }
}

/// The 32 floats at `p` and their largest magnitude (NaN-ignoring `max`, as the scalar
/// quantizers' fold).
///
/// # Safety
/// `p..p+32` floats must be readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn group_amax(p: *const f32) -> ([__m256; 4], f32) {
    // SAFETY: per the contract.
    let v = unsafe {
        [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ]
    };
    (v, amax4(&v))
}

/// The largest magnitude of 32 values (NaN-ignoring `max`, as the scalar quantizers' fold).
#[inline]
#[target_feature(enable = "avx2")]
fn amax4(v: &[__m256; 4]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let a01 = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
    let a23 = _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3]));
    let m = _mm256_max_ps(a01, a23);
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m1 = _mm_max_ss(m2, _mm_movehdup_ps(m2));
    _mm_cvtss_f32(m1)
}

/// Quantize group `g` (values `v`, largest magnitude `amax`) to q8 into `out`: the body of
/// [`quantize_act_impl`].
///
/// # Safety
/// `out` must hold more than `g` groups (`qs` ≥ 32·(g+1) bytes, `d`/`s`/`isum` > g).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_group(v: &[__m256; 4], amax: f32, out: &mut ActRowMut<'_>, g: usize) {
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    const R: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let q0 = _mm256_cvtps_epi32(_mm256_round_ps::<R>(_mm256_mul_ps(v[0], idv)));
    let q1 = _mm256_cvtps_epi32(_mm256_round_ps::<R>(_mm256_mul_ps(v[1], idv)));
    let q2 = _mm256_cvtps_epi32(_mm256_round_ps::<R>(_mm256_mul_ps(v[2], idv)));
    let q3 = _mm256_cvtps_epi32(_mm256_round_ps::<R>(_mm256_mul_ps(v[3], idv)));
    let s = _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
    let sum = hsum_i32(s);
    let p01 = _mm256_packs_epi32(q0, q1);
    let p23 = _mm256_packs_epi32(q2, q3);
    let q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), perm);
    // SAFETY: per the contract, 32 bytes from 32·g of qs and entry g of d/s/isum exist.
    unsafe {
        _mm256_storeu_si256(out.qs.as_mut_ptr().add(32 * g) as *mut __m256i, q);
        *out.d.get_unchecked_mut(g) = d;
        *out.isum.get_unchecked_mut(g) = sum;
        *out.s.get_unchecked_mut(g) = d * sum as f32;
    }
}

/// Quantize group `g` to 16 bits (two planes) into `out`: the body of
/// [`quantize_act16_impl`].
///
/// # Safety
/// `out` must hold more than `g` groups, the low plane included.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q16_group(v: &[__m256; 4], amax: f32, out: &mut ActRowMut<'_>, g: usize) {
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let (qmax, qmin) = (_mm256_set1_epi32(32512), _mm256_set1_epi32(-32512));
    let (c128, lmin) = (_mm256_set1_epi32(128), _mm256_set1_epi32(-127));
    let d = amax / 32512.0;
    let id = if amax != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    const R: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let split = |v: __m256| {
        let t = _mm256_mul_ps(v, idv);
        let t = _mm256_and_ps(t, _mm256_cmp_ps::<_CMP_ORD_Q>(t, t)); // NaN → 0
        let q = _mm256_cvtps_epi32(_mm256_round_ps::<R>(t));
        let q = _mm256_max_epi32(_mm256_min_epi32(q, qmax), qmin);
        let h = _mm256_srai_epi32::<8>(_mm256_add_epi32(q, c128));
        let hs = _mm256_slli_epi32::<8>(h);
        let l = _mm256_max_epi32(_mm256_sub_epi32(q, hs), lmin);
        (h, l, _mm256_add_epi32(hs, l))
    };
    let (h0, l0, q0) = split(v[0]);
    let (h1, l1, q1) = split(v[1]);
    let (h2, l2, q2) = split(v[2]);
    let (h3, l3, q3) = split(v[3]);
    let sum = hsum_i32(_mm256_add_epi32(
        _mm256_add_epi32(q0, q1),
        _mm256_add_epi32(q2, q3),
    ));
    let pack = |a: __m256i, b: __m256i, c: __m256i, d: __m256i| {
        let ab = _mm256_packs_epi32(a, b);
        let cd = _mm256_packs_epi32(c, d);
        _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), perm)
    };
    // SAFETY: per the contract, 32 bytes from 32·g of qs and lo and entry g of d/s/isum.
    unsafe {
        _mm256_storeu_si256(
            out.qs.as_mut_ptr().add(32 * g) as *mut __m256i,
            pack(h0, h1, h2, h3),
        );
        _mm256_storeu_si256(
            out.lo.as_mut_ptr().add(32 * g) as *mut __m256i,
            pack(l0, l1, l2, l3),
        );
        *out.d.get_unchecked_mut(g) = d;
        *out.isum.get_unchecked_mut(g) = sum;
        *out.s.get_unchecked_mut(g) = d * sum as f32;
    }
}

/// Groups `full..` of `out` (a partial last group and zero padding) from `x` (the values
/// from group `full` on) by the scalar quantizer of `out`'s precision — identical results.
fn quantize_tail(x: &[f32], out: ActRowMut<'_>, full: usize, two: bool) {
    let groups = out.groups(two);
    if full >= groups {
        return;
    }
    let tail = &x[(32 * full).min(x.len())..];
    let out = ActRowMut {
        qs: &mut out.qs[32 * full..32 * groups],
        lo: if two {
            &mut out.lo[32 * full..32 * groups]
        } else {
            &mut []
        },
        d: &mut out.d[full..groups],
        s: &mut out.s[full..groups],
        isum: &mut out.isum[full..groups],
    };
    super::scalar::quantize_act_any(tail, out);
}

pub(super) fn quantize_act(x: &[f32], out: ActRowMut<'_>) {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { quantize_act_impl(x, out) }
}

/// AVX2 activation quantization (identical results to `scalar::quantize_act`).
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_act_impl(x: &[f32], mut out: ActRowMut<'_>) {
    let groups = out.groups(false);
    let full = (x.len() / 32).min(groups);
    for g in 0..full {
        // SAFETY: g < x.len() / 32, so 32 floats from 32·g are in bounds; g < groups.
        unsafe {
            let (v, amax) = group_amax(x.as_ptr().add(32 * g));
            q8_group(&v, amax, &mut out, g);
        }
    }
    // Tail (partial group and zero padding): the scalar reference, identical results.
    quantize_tail(x, out, full, false);
}

/// How far ahead (bytes) the one-token kernels prefetch the weight row stream.
///
/// Decoding streams every weight from DRAM once per token; the hardware prefetcher alone
/// left a 2-core decode at ~55 % of the measured bandwidth. Measured on SmolLM2, 2 threads
/// (`qstream bench FILE -p 1 -n 128 -t 2`, 3 rounds of 0/1/2/4/8/16 KiB): 4 KiB ahead gave
/// +7…23 % (8bit), +5…20 % (4bit), +1…23 % (keep); 8–16 KiB no better. Not used by the q2
/// kernel: on 2bit_outlier (whose outlier corrections read other arrays) it measured −3 %;
/// retried after the decoded outlier table (2 lines per 8 groups): +1 % tg64, within noise.
const PF_AHEAD: usize = 4096;

/// Prefetch `lines` cache lines at `p + PF_AHEAD` (into L1).
#[inline(always)]
pub(super) fn pf_ahead(p: *const u8, lines: usize) {
    for l in 0..lines {
        // SAFETY: a prefetch never faults (the address is only a hint, and `wrapping_add`
        // keeps the pointer arithmetic defined past the row's end).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PF_AHEAD + 64 * l) as *const i8) };
    }
}

/// The 4-byte headers of groups `g0..g0+8` of a row at `rp` whose blocks (`bb` bytes) hold
/// `1 << sh` groups each: the dword at the start of block `(g0 + j) >> sh` in lane `j`.
///
/// # Safety
/// Blocks `g0 >> sh ..= (g0 + 7) >> sh` must lie in the row (`bb ≥ 4`).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn headers8(rp: *const u8, g0: usize, sh: u32, bb: usize) -> __m256i {
    let at = |j: usize| rp.wrapping_add(((g0 + j) >> sh) * bb);
    // SAFETY: per the contract, every block read is in the row.
    unsafe {
        _mm256_setr_epi32(
            rd32(at(0)),
            rd32(at(1)),
            rd32(at(2)),
            rd32(at(3)),
            rd32(at(4)),
            rd32(at(5)),
            rd32(at(6)),
            rd32(at(7)),
        )
    }
}

/// The low (`HI = false`) or high 16 bits of each i32 lane read as f16, converted to f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn f16_lanes<const HI: bool>(v: __m256i) -> __m256 {
    // each 128-bit half: its four u16 into its low 8 bytes, then the two low qwords together
    let sel = if HI {
        _mm256_setr_epi8(
            2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, 2, 3, 6, 7, 10, 11, 14, 15,
            -1, -1, -1, -1, -1, -1, -1, -1,
        )
    } else {
        _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1,
            -1, -1, -1, -1, -1, -1, -1,
        )
    };
    let p = _mm256_permute4x64_epi64::<0b1000>(_mm256_shuffle_epi8(v, sel));
    _mm256_cvtph_ps(_mm256_castsi256_si128(p))
}

/// The little-endian i32 at `p` (unaligned).
///
/// # Safety
/// `p..p+4` must be readable.
#[inline]
pub(super) unsafe fn rd32(p: *const u8) -> i32 {
    // SAFETY: per the contract.
    unsafe { std::ptr::read_unaligned(p as *const i32) }
}

/// The i32s at `p + j·stride` for `j < 8`, as plain loads (a `vpgatherdd` is microcoded
/// and slower on AMD Zen).
///
/// # Safety
/// `p + j·stride .. p + j·stride + 4` must be readable for every `j < 8`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dwords8(p: *const u8, stride: usize) -> __m256i {
    // SAFETY: per the contract.
    unsafe {
        _mm256_setr_epi32(
            rd32(p),
            rd32(p.add(stride)),
            rd32(p.add(2 * stride)),
            rd32(p.add(3 * stride)),
            rd32(p.add(4 * stride)),
            rd32(p.add(5 * stride)),
            rd32(p.add(6 * stride)),
            rd32(p.add(7 * stride)),
        )
    }
}

pub(super) fn quantize_act16(x: &[f32], out: ActRowMut<'_>) {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { quantize_act16_impl(x, out) }
}

/// AVX2 16-bit activation quantization: bit-identical to `scalar::quantize_act16` (the same
/// f32 products, round half to even, clamps and plane split, lane by lane; NaN products
/// become 0 as the scalar `as i32` does).
///
/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_act16_impl(x: &[f32], mut out: ActRowMut<'_>) {
    let groups = out.groups(true);
    let full = (x.len() / 32).min(groups);
    for g in 0..full {
        // SAFETY: g < x.len() / 32, so 32 floats from 32·g are in bounds; g < groups.
        unsafe {
            let (v, amax) = group_amax(x.as_ptr().add(32 * g));
            q16_group(&v, amax, &mut out, g);
        }
    }
    // Tail (partial group and zero padding): the scalar reference, identical results.
    quantize_tail(x, out, full, true);
}

pub(super) fn rms_norm_act(
    x: &[f32],
    w: &[f32],
    eps: f32,
    out: &mut [f32],
    act: Option<ActRowMut<'_>>,
) {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { rms_norm_act_impl(x, w, eps, out, act) }
}

/// AVX2 RMSNorm fused with activation quantization: bit-identical to
/// `scalar::rms_norm_act` (Σx² in its lane order; the same products per value; each full
/// group of 32 is quantized from the registers it was just computed in).
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rms_norm_act_impl(
    x: &[f32],
    w: &[f32],
    eps: f32,
    out: &mut [f32],
    act: Option<ActRowMut<'_>>,
) {
    let len = x.len().min(w.len()).min(out.len());
    let (x, w, out) = (&x[..len], &w[..len], &mut out[..len]);
    let full8 = len / 8 * 8;
    let (xp, wp, op) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let mut acc = _mm256_setzero_ps();
    for i in (0..full8).step_by(8) {
        // SAFETY: i + 8 ≤ len.
        let v = unsafe { _mm256_loadu_ps(xp.add(i)) };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    let mut ss = hsum(acc);
    for v in &x[full8..] {
        ss += v * v;
    }
    let inv = 1.0 / (ss / len as f32 + eps).sqrt();
    let invv = _mm256_set1_ps(inv);
    // SAFETY (both closures): callers pass i + 8 ≤ len; x, w and out hold len values.
    let norm = |i: usize| unsafe {
        _mm256_mul_ps(
            _mm256_loadu_ps(wp.add(i)),
            _mm256_mul_ps(_mm256_loadu_ps(xp.add(i)), invv),
        )
    };
    let store = |i: usize, v: __m256| unsafe { _mm256_storeu_ps(op.add(i), v) };
    if let Some(mut a) = act {
        let two = !a.lo.is_empty();
        let full = (len / 32).min(a.groups(two));
        for g in 0..full {
            let i = 32 * g;
            let v = [norm(i), norm(i + 8), norm(i + 16), norm(i + 24)];
            for (k, v) in v.iter().enumerate() {
                store(i + 8 * k, *v);
            }
            // SAFETY: g < a.groups(two).
            unsafe {
                if two {
                    q16_group(&v, amax4(&v), &mut a, g);
                } else {
                    q8_group(&v, amax4(&v), &mut a, g);
                }
            }
        }
        let done = 32 * full;
        for i in (done..full8).step_by(8) {
            store(i, norm(i));
        }
        for i in full8.max(done)..len {
            out[i] = w[i] * (x[i] * inv);
        }
        quantize_tail(out, a, full, two);
        return;
    }
    for i in (0..full8).step_by(8) {
        store(i, norm(i));
    }
    for i in full8..len {
        out[i] = w[i] * (x[i] * inv);
    }
}

/// [`scalar::exp_approx`](super::scalar::exp_approx) in 8 lanes (the same operations).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(t: __m256) -> __m256 {
    use super::scalar::{EXP_BOUNDS, EXP_C1, EXP_C2, EXP_P};
    let t = _mm256_max_ps(t, _mm256_set1_ps(EXP_BOUNDS.0));
    let t = _mm256_min_ps(t, _mm256_set1_ps(EXP_BOUNDS.1));
    const R: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let n = _mm256_round_ps::<R>(_mm256_mul_ps(t, _mm256_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm256_sub_ps(t, _mm256_mul_ps(n, _mm256_set1_ps(EXP_C1)));
    let r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(EXP_C2)));
    let mut p = _mm256_set1_ps(EXP_P[0]);
    for c in &EXP_P[1..] {
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(*c));
    }
    let y = _mm256_add_ps(
        _mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r),
        _mm256_set1_ps(1.0),
    );
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(y, _mm256_castsi256_ps(e))
}

/// `silu(g) · u` in 8 lanes (`scalar::silu_approx(g) * u`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn silu_mul8(g: __m256, u: __m256) -> __m256 {
    let e = exp8(_mm256_xor_ps(g, _mm256_set1_ps(-0.0)));
    _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0), e)), u)
}

pub(super) fn silu_mul_act(gate: &mut [f32], up: &[f32], act: Option<ActRowMut<'_>>) {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { silu_mul_act_impl(gate, up, act) }
}

/// AVX2 `gate = silu(gate) ⊙ up` fused with activation quantization: bit-identical to
/// `scalar::silu_mul_act`.
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn silu_mul_act_impl(gate: &mut [f32], up: &[f32], act: Option<ActRowMut<'_>>) {
    let len = gate.len().min(up.len());
    let gate = &mut gate[..len];
    let full8 = len / 8 * 8;
    let (gp, up_) = (gate.as_mut_ptr(), up.as_ptr());
    // SAFETY: callers pass i + 8 ≤ len; gate and up hold len values.
    let step = |i: usize| unsafe {
        let v = silu_mul8(_mm256_loadu_ps(gp.add(i)), _mm256_loadu_ps(up_.add(i)));
        _mm256_storeu_ps(gp.add(i), v);
        v
    };
    let mut done = 0;
    let mut act = act;
    let mut full = 0;
    let two = act.as_ref().is_some_and(|a| !a.lo.is_empty());
    if let Some(a) = act.as_mut() {
        full = (len / 32).min(a.groups(two));
        for g in 0..full {
            let i = 32 * g;
            let v = [step(i), step(i + 8), step(i + 16), step(i + 24)];
            // SAFETY: g < a.groups(two).
            unsafe {
                if two {
                    q16_group(&v, amax4(&v), a, g);
                } else {
                    q8_group(&v, amax4(&v), a, g);
                }
            }
        }
        done = 32 * full;
    }
    for i in (done..full8).step_by(8) {
        step(i);
    }
    for i in full8.max(done)..len {
        gate[i] = super::scalar::silu_approx(gate[i]) * up[i];
    }
    if let Some(a) = act {
        quantize_tail(gate, a, full, two);
    }
}

/// Sum of the 8 i32 lanes (exact, wrapping like the scalar reference never needs to).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    _mm_cvtsi128_si32(s)
}

/// The lane sums of four vectors, converted to f32 (`[Σv0, Σv1, Σv2, Σv3]`; the
/// conversion rounds exactly like `i as f32`).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum4_i32_ps(v0: __m256i, v1: __m256i, v2: __m256i, v3: __m256i) -> [f32; 4] {
    // per 128-bit half: [v0 pair sums, v1 pair sums] then [v0 quad, v1 quad, v2 quad, v3 quad]
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    let mut out = [0f32; 4];
    // SAFETY: `out` has room for 4 f32 (unaligned store).
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), _mm_cvtepi32_ps(s)) };
    out
}

/// 32 two-bit levels of a group (8 bytes at `p`, byte `j` holding values `j, j+8, j+16,
/// j+24` at bit offsets 0, 2, 4, 6) as 32 u8 in value order.
///
/// # Safety
/// `p..p+8` must be readable.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_2bit(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 8 readable bytes.
    let raw = unsafe { std::ptr::read_unaligned(p as *const i64) };
    let v = _mm256_srlv_epi64(_mm256_set1_epi64x(raw), _mm256_setr_epi64x(0, 2, 4, 6));
    _mm256_and_si256(v, _mm256_set1_epi8(3))
}

/// Bit 2 of a group's 32 three-bit levels (little-endian u32 at `p`, bit `i` for value
/// `i`) as 32 bytes of 0 or 4.
///
/// # Safety
/// `p..p+4` must be readable.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_highbit(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes.
    let h = unsafe { std::ptr::read_unaligned(p as *const i32) };
    // byte k ← byte k/8 of h (both 128-bit halves hold h in their first 4 bytes)
    let sel = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let b = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(h), sel), bits);
    _mm256_and_si256(_mm256_cmpeq_epi8(b, bits), _mm256_set1_epi8(4))
}

/// Float combine of the `Q2`/`Q3`/`Mxfp4` kernels, in exactly the scalar reference's order
/// (so the results are bit-identical to it): for each group `g < $ng` in order,
/// `acc += (dw·d_x[g]) · i_g` and (when `$asym`) `acc_m += mw·s_x[g]`, where `$gdot`
/// (with `$g` bound to the group) gives the group's 8 partial i32 sums and `$scales` its
/// `(dw, mw)`. Four groups share one horizontal reduction. Evaluates to `acc (+ acc_m)`.
///
/// Must be expanded inside an `unsafe` target-feature function with AVX2; `$ng` must not
/// exceed the activation's groups.
macro_rules! int_combine {
    ($ng:expr, $a:expr, $asym:expr, $g:ident => $gdot:expr, $scales:expr) => {{
        let a: &ActRow<'_> = $a;
        let ng: usize = $ng;
        let (mut acc, mut acc_m) = (0f32, 0f32);
        let mut g0 = 0usize;
        while g0 + 4 <= ng {
            let iv = hsum4_i32_ps(
                {
                    let $g = g0;
                    $gdot
                },
                {
                    let $g = g0 + 1;
                    $gdot
                },
                {
                    let $g = g0 + 2;
                    $gdot
                },
                {
                    let $g = g0 + 3;
                    $gdot
                },
            );
            for (k, i) in iv.into_iter().enumerate() {
                let $g = g0 + k;
                let (dw, mw): (f32, f32) = $scales;
                acc += (dw * *a.d.get_unchecked($g)) * i;
                if $asym {
                    acc_m += mw * *a.s.get_unchecked($g);
                }
            }
            g0 += 4;
        }
        while g0 < ng {
            let $g = g0;
            let i = hsum_i32($gdot) as f32;
            let (dw, mw): (f32, f32) = $scales;
            acc += (dw * *a.d.get_unchecked($g)) * i;
            if $asym {
                acc_m += mw * *a.s.get_unchecked($g);
            }
            g0 += 1;
        }
        if $asym {
            acc + acc_m
        } else {
            acc
        }
    }};
}
pub(super) use int_combine;

/// Defines `dot_q4_impl`, `dot_q4sym_impl` and `dot_q8_impl` (plus their safe table
/// wrappers `dot_q4`, `dot_q4sym`, `dot_q8`) for a target-feature set and a
/// `u8 × i8 → 8 × i32` dot (`$dot`, and `$dot_acc` adding into an accumulator), so the AVX2 and
/// AVX-512 VNNI levels share one body.
///
/// Two accumulators (even/odd groups) hide the FMA latency; the unrolled pairs keep them in
/// registers.
macro_rules! q_kernels {
    ($features:literal, $dot:ident, $dot_acc:ident) => {
        fn dot_q4(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe { dot_q4n_impl::<4, 1>(block, row, &[a])[0] }
        }

        fn dot_q4sym(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe { dot_q4n_impl::<2, 1>(block, row, &[a])[0] }
        }

        fn dot_q8(_block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe { dot_q8n_impl::<1>(row, &[a])[0] }
        }

        // The four-token kernels run two tokens at a time: with four, the per-token
        // reduction trees no longer fit the registers and spill (measured slower).

        fn dot_q4_x4(block: usize, row: &[u8], a: [ActRow<'_>; 4]) -> [f32; 4] {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe {
                let [x, y] = dot_q4n_impl::<4, 2>(block, row, &[a[0], a[1]]);
                let [z, w] = dot_q4n_impl::<4, 2>(block, row, &[a[2], a[3]]);
                [x, y, z, w]
            }
        }

        fn dot_q4sym_x4(block: usize, row: &[u8], a: [ActRow<'_>; 4]) -> [f32; 4] {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe {
                let [x, y] = dot_q4n_impl::<2, 2>(block, row, &[a[0], a[1]]);
                let [z, w] = dot_q4n_impl::<2, 2>(block, row, &[a[2], a[3]]);
                [x, y, z, w]
            }
        }

        fn dot_q8_x4(_block: usize, row: &[u8], a: [ActRow<'_>; 4]) -> [f32; 4] {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe {
                let [x, y] = dot_q8n_impl::<2>(row, &[a[0], a[1]]);
                let [z, w] = dot_q8n_impl::<2>(row, &[a[2], a[3]]);
                [x, y, z, w]
            }
        }
        /// Group `g`'s integer dot `Σ q_w·q_x` (8 i32 lanes) with each of `N` activations:
        /// unsigned levels `wa` (`SIGNED = false`), or `wa = |w|` with the signs of `ws`
        /// moved onto the activation (`SIGNED`); with the low plane (`LO`)
        /// `256·Σ q_w·qs + Σ q_w·lo` (exact: |lanes| < 2²⁴).
        ///
        /// # Safety
        /// `g < a[k].groups()` for every `k`, and every `a[k].has_lo() == LO`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn gdot_n<const N: usize, const LO: bool, const SIGNED: bool>(
            wa: __m256i,
            ws: __m256i,
            a: &[ActRow<'_>; N],
            g: usize,
        ) -> [__m256i; N] {
            // SAFETY: g < groups, so 32 bytes at 32·g are in qs (and in lo: LO means
            // lo.len() == qs.len()).
            std::array::from_fn(|k| unsafe {
                let x = _mm256_loadu_si256(a[k].qs.as_ptr().add(32 * g) as *const __m256i);
                let x = if SIGNED { _mm256_sign_epi8(x, ws) } else { x };
                let p = $dot(wa, x);
                if LO {
                    let l = _mm256_loadu_si256(a[k].lo.as_ptr().add(32 * g) as *const __m256i);
                    let l = if SIGNED { _mm256_sign_epi8(l, ws) } else { l };
                    $dot_acc(_mm256_slli_epi32(p, 8), wa, l)
                } else {
                    p
                }
            })
        }

        /// The body of the `Q4`/`Q4Sym`/`Q8` kernels for `N` activations:
        /// `out[k] = Σ_g dw_g·d_k[g]·Σ q_w·q_x + m_g·s_k[g]` over groups `0..ng`, eight groups
        /// at a time. Each token's eight integer group sums are reduced into one vector (a
        /// `vphaddd` tree, exact) and scaled by vectors of the groups' weight scales
        /// (`sc(g0)`: `(dw, m)` of groups `g0..g0+8`) and activation scales, so no group pays
        /// a horizontal sum or a broadcast; the last `ng mod 8` groups are added one by one
        /// (`sc1(g)`). `wg(g)` gives group `g`'s weights as for [`gdot_n`]. Token `k`'s result
        /// goes through the same float operations for every `N`, so the multi-token kernels
        /// are bit-identical to the single-token one.
        ///
        /// # Safety
        /// `ng ≤ a[k].groups()` and `a[k].has_lo() == LO` for every `k`; `wg` and `sc1` must
        /// be sound for every group below `ng`, `sc(g0)` for `g0 + 8 ≤ ng`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn chunked_n<const N: usize, const LO: bool, const SIGNED: bool, const MIN: bool>(
            ng: usize,
            a: &[ActRow<'_>; N],
            wg: impl Fn(usize) -> (__m256i, __m256i),
            sc: impl Fn(usize) -> (__m256, __m256),
            sc1: impl Fn(usize) -> (f32, f32),
        ) -> [f32; N] {
            let mut acc = [_mm256_setzero_ps(); N];
            let mut g0 = 0;
            // SAFETY (both loops): g < ng ≤ a[k].groups(), so d/s have the entries read;
            // wg, sc and sc1 per the contract.
            while g0 + 8 <= ng {
                // pairs of groups, reduced as they come (few live registers)
                let mut q = [[_mm256_setzero_si256(); 2]; N];
                for half in 0..2 {
                    let mut h = [[_mm256_setzero_si256(); 2]; N];
                    for pair in 0..2 {
                        let g = g0 + 4 * half + 2 * pair;
                        let (wa0, ws0) = wg(g);
                        let (wa1, ws1) = wg(g + 1);
                        let v0 = unsafe { gdot_n::<N, LO, SIGNED>(wa0, ws0, a, g) };
                        let v1 = unsafe { gdot_n::<N, LO, SIGNED>(wa1, ws1, a, g + 1) };
                        for k in 0..N {
                            h[k][pair] = _mm256_hadd_epi32(v0[k], v1[k]);
                        }
                    }
                    for k in 0..N {
                        q[k][half] = _mm256_hadd_epi32(h[k][0], h[k][1]);
                    }
                }
                let (dw, m) = sc(g0);
                for k in 0..N {
                    // per 128-bit half, q[k] holds the sums of that half's lanes of groups
                    // g0..g0+4 (lo) and g0+4..g0+8 (hi): add the halves → [Σ group g0+j]
                    let [lo, hi] = q[k];
                    let sums = _mm256_add_epi32(
                        _mm256_permute2x128_si256::<0x20>(lo, hi),
                        _mm256_permute2x128_si256::<0x31>(lo, hi),
                    );
                    let s = _mm256_cvtepi32_ps(sums);
                    unsafe {
                        let dx = _mm256_loadu_ps(a[k].d.as_ptr().add(g0));
                        acc[k] = _mm256_fmadd_ps(s, _mm256_mul_ps(dw, dx), acc[k]);
                        if MIN {
                            let sx = _mm256_loadu_ps(a[k].s.as_ptr().add(g0));
                            acc[k] = _mm256_fmadd_ps(m, sx, acc[k]);
                        }
                    }
                }
                g0 += 8;
            }
            // the last ng mod 8 groups one by one
            let mut tail = [0f32; N];
            for g in g0..ng {
                let (wa, ws) = wg(g);
                // SAFETY: g < ng ≤ a[k].groups().
                let v = unsafe { gdot_n::<N, LO, SIGNED>(wa, ws, a, g) };
                let (dw, m) = sc1(g);
                for k in 0..N {
                    let i = hsum_i32(v[k]) as f32;
                    tail[k] += (dw * a[k].d[g]) * i;
                    if MIN {
                        tail[k] += m * a[k].s[g];
                    }
                }
            }
            std::array::from_fn(|k| hsum(acc[k]) + tail[k])
        }

        /// `Q4` (`HDR == 4`: f16 `d`, f16 `m`, levels `d·q + m`) or `Q4Sym` (`HDR == 2`:
        /// f16 `d`, levels `d·(q − 8)`) rows for `N` activations.
        #[target_feature(enable = $features)]
        unsafe fn dot_q4n_impl<const HDR: usize, const N: usize>(
            block: usize,
            row: &[u8],
            a: &[ActRow<'_>; N],
        ) -> [f32; N] {
            let block = block.max(32);
            let bb = HDR + block / 2;
            let (gpb, sh) = (block / 32, (block / 32).trailing_zeros());
            let nb = n_blocks(block, bb, row, &a[0]);
            let lo = a[0].has_lo();
            if N > 1 && a.iter().any(|x| n_blocks(block, bb, row, x) != nb || x.has_lo() != lo) {
                // Tokens that differ in coverage or precision (the matmul never mixes them):
                // one by one. SAFETY: the features are enabled (we run inside this kernel).
                return std::array::from_fn(|k| unsafe {
                    dot_q4n_impl::<HDR, 1>(block, row, &[a[k]])[0]
                });
            }
            let rp = row.as_ptr();
            // The (d, m) f16 pair (q4) or d and the first levels (q4sym) of 8 groups' headers.
            let to_scales = |h: __m256i| {
                let dw = f16_lanes::<false>(h);
                if HDR == 4 {
                    (dw, f16_lanes::<true>(h))
                } else {
                    // Σ (q − 8)·q_x = Σ q·q_x − 8·isum
                    (dw, _mm256_mul_ps(dw, _mm256_set1_ps(-8.0)))
                }
            };
            // SAFETY: as for `sc` below.
            let sc1 = |g: usize| unsafe {
                let (dw, mw) = f16x2(rp.add((g >> sh) * bb));
                (dw, if HDR == 4 { mw } else { -8.0 * dw })
            };
            macro_rules! run {
                ($wg:expr, $sc:expr) => {
                    // SAFETY: nb·gpb ≤ a[k].groups() for every k (n_blocks); the closures'
                    // contracts as stated where they are defined.
                    unsafe {
                        if lo {
                            chunked_n::<N, true, false, true>(nb * gpb, a, $wg, $sc, sc1)
                        } else {
                            chunked_n::<N, false, false, true>(nb * gpb, a, $wg, $sc, sc1)
                        }
                    }
                };
            }
            // SAFETY (the closures): `chunked_n` calls them with g < nb·gpb (`sc`: g0 + 8 ≤
            // nb·gpb): group g's block g >> sh < nb ≤ row.len() / bb holds its 16 nibble
            // bytes at HDR + 16·(g mod gpb) and a 4-byte header read at its start (bb ≥ 18).
            if gpb == 1 {
                // one group per block: constant strides
                let bb = HDR + 16;
                let wg = |g: usize| unsafe {
                    let w = unpack_nibbles(rp.add(g * bb + HDR));
                    (w, w)
                };
                let sc = |g0: usize| unsafe {
                    let p = rp.add(g0 * bb);
                    if N == 1 {
                        pf_ahead(p, 3); // 8 groups = 144–160 bytes
                    }
                    to_scales(dwords8(p, bb))
                };
                run!(wg, sc)
            } else {
                let wg = |g: usize| unsafe {
                    let w = unpack_nibbles(rp.add((g >> sh) * bb + HDR + 16 * (g & (gpb - 1))));
                    (w, w)
                };
                let sc = |g0: usize| unsafe {
                    if N == 1 {
                        pf_ahead(rp.add((g0 >> sh) * bb), 3); // 8 groups = 130–136 bytes
                    }
                    to_scales(headers8(rp, g0, sh, bb))
                };
                run!(wg, sc)
            }
        }
        fn dot_q2(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe { dot_q2n_impl::<1>(block, row, &[a])[0] }
        }

        fn dot_q2_x4(block: usize, row: &[u8], a: [ActRow<'_>; 4]) -> [f32; 4] {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe {
                let [x, y] = dot_q2n_impl::<2>(block, row, &[a[0], a[1]]);
                let [z, w] = dot_q2n_impl::<2>(block, row, &[a[2], a[3]]);
                [x, y, z, w]
            }
        }

        fn dot_q3(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe { dot_q3_impl(block, row, a) }
        }

        fn dot_mxfp4(_block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting `$features`.
            unsafe { dot_mxfp4_impl(row, a) }
        }

        /// `Σ q_w·q_x` partial sums (8 i32 lanes) of activation group `gi` for unsigned
        /// weight levels `w`; with a low plane (`ActRow::has_lo`) `q_x = 256·qs + lo`, i.e.
        /// `256·Σ q_w·qs + Σ q_w·lo` (exact: |lanes| < 2²⁴).
        ///
        /// # Safety
        /// `gi < a.groups()`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn xdot_u(w: __m256i, a: &ActRow<'_>, gi: usize) -> __m256i {
            // SAFETY: gi < a.groups(), so 32 bytes at 32·gi are in qs, and in lo when
            // has_lo() (lo.len() == qs.len()).
            unsafe {
                let x = _mm256_loadu_si256(a.qs.as_ptr().add(32 * gi) as *const __m256i);
                let p = $dot(w, x);
                if a.has_lo() {
                    let l = _mm256_loadu_si256(a.lo.as_ptr().add(32 * gi) as *const __m256i);
                    $dot_acc(_mm256_slli_epi32(p, 8), w, l)
                } else {
                    p
                }
            }
        }

        /// [`xdot_u`] for signed weights: `wa = |w|` as u8, `ws = w` (its signs go to the
        /// activation, so the products are `w·q_x` exactly).
        ///
        /// # Safety
        /// `gi < a.groups()`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn xdot_s(wa: __m256i, ws: __m256i, a: &ActRow<'_>, gi: usize) -> __m256i {
            // SAFETY: as in xdot_u.
            unsafe {
                let x = _mm256_loadu_si256(a.qs.as_ptr().add(32 * gi) as *const __m256i);
                let p = $dot(wa, _mm256_sign_epi8(x, ws));
                if a.has_lo() {
                    let l = _mm256_loadu_si256(a.lo.as_ptr().add(32 * gi) as *const __m256i);
                    $dot_acc(_mm256_slli_epi32(p, 8), wa, _mm256_sign_epi8(l, ws))
                } else {
                    p
                }
            }
        }

        /// `Q2` rows (blocks: f16 `d`, f16 `m`, then 8 bytes of 2-bit levels per group of
        /// 32) for `N` activations: the chunked body of the q4 kernels with 2-bit unpacking.
        #[target_feature(enable = $features)]
        unsafe fn dot_q2n_impl<const N: usize>(
            block: usize,
            row: &[u8],
            a: &[ActRow<'_>; N],
        ) -> [f32; N] {
            let block = block.max(32);
            let bb = crate::quant::q2::block_bytes(block);
            let (gpb, sh) = (block / 32, (block / 32).trailing_zeros());
            let nb = n_blocks(block, bb, row, &a[0]);
            let lo = a[0].has_lo();
            if N > 1 && a.iter().any(|x| n_blocks(block, bb, row, x) != nb || x.has_lo() != lo) {
                // SAFETY: the features are enabled (we run inside this kernel).
                return std::array::from_fn(|k| unsafe { dot_q2n_impl::<1>(block, row, &[a[k]])[0] });
            }
            let rp = row.as_ptr();
            macro_rules! run {
                ($wg:expr, $sc:expr, $sc1:expr) => {
                    // SAFETY: nb·gpb ≤ a[k].groups() (n_blocks); the closures' contracts as
                    // stated where they are defined.
                    unsafe {
                        if lo {
                            chunked_n::<N, true, false, true>(nb * gpb, a, $wg, $sc, $sc1)
                        } else {
                            chunked_n::<N, false, false, true>(nb * gpb, a, $wg, $sc, $sc1)
                        }
                    }
                };
            }
            // SAFETY (the closures): `chunked_n` calls them with g < nb·gpb (`sc`: g0 + 8 ≤
            // nb·gpb): group g's block g >> sh < nb ≤ row.len() / bb holds its 8 level bytes
            // at 4 + 8·(g mod gpb) and the 4-byte (d, m) header at its start.
            if gpb == 1 {
                // one group per block (the converter's default): constant 12-byte strides, no
                // per-group shift and multiply by run-time values
                const BB: usize = crate::quant::q2::block_bytes(32);
                let wg = |g: usize| unsafe {
                    let w = unpack_2bit(rp.add(g * BB + 4));
                    (w, w)
                };
                let sc = |g0: usize| unsafe {
                    let h = dwords8(rp.add(g0 * BB), BB);
                    (f16_lanes::<false>(h), f16_lanes::<true>(h))
                };
                let sc1 = |g: usize| unsafe { f16x2(rp.add(g * BB)) };
                run!(wg, sc, sc1)
            } else {
                let wg = |g: usize| unsafe {
                    let w = unpack_2bit(rp.add((g >> sh) * bb + 4 + 8 * (g & (gpb - 1))));
                    (w, w)
                };
                let sc = |g0: usize| unsafe {
                    let h = headers8(rp, g0, sh, bb);
                    (f16_lanes::<false>(h), f16_lanes::<true>(h))
                };
                let sc1 = |g: usize| unsafe { f16x2(rp.add((g >> sh) * bb)) };
                run!(wg, sc, sc1)
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_q3_impl(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            let block = block.max(32);
            let bb = crate::quant::q3::block_bytes(block);
            let (gpb, sh) = (block / 32, (block / 32).trailing_zeros());
            let nb = n_blocks(block, bb, row, &a);
            let rp = row.as_ptr();
            // SAFETY: as in dot_q2_impl; the group's high-bit u32 is at
            // 4 + block/4 + 4·(g mod gpb) < bb.
            unsafe {
                int_combine!(
                    nb * gpb,
                    &a,
                    true,
                    g => {
                        let blk = rp.add((g >> sh) * bb);
                        let gg = g & (gpb - 1);
                        let w = _mm256_or_si256(
                            unpack_2bit(blk.add(4 + 8 * gg)),
                            unpack_highbit(blk.add(4 + block / 4 + 4 * gg)),
                        );
                        xdot_u(w, &a, g)
                    },
                    f16x2(rp.add((g >> sh) * bb))
                )
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn dot_mxfp4_impl(row: &[u8], a: ActRow<'_>) -> f32 {
            let nb = n_blocks(32, 17, row, &a);
            let rp = row.as_ptr();
            let table = _mm256_setr_epi8(
                0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12, 0, 1, 2, 3, 4, 6, 8, 12,
                0, -1, -2, -3, -4, -6, -8, -12,
            );
            // SAFETY: b < nb ≤ row.len() / 17: the block's scale byte and 16 nibble bytes are
            // in the row; b < a.groups().
            unsafe {
                int_combine!(
                    nb,
                    &a,
                    false,
                    b => {
                        let w = _mm256_shuffle_epi8(table, unpack_nibbles(rp.add(17 * b + 1)));
                        // |w| as u8 times x with w's sign: the products w·x, exactly.
                        xdot_s(_mm256_sign_epi8(w, w), w, &a, b)
                    },
                    (super::scalar::mxfp4_half_scale(*rp.add(17 * b)), 0.0)
                )
            }
        }

        /// `Q8` rows (blocks of 32: f16 `d`, 32 i8) for `N` activations.
        #[target_feature(enable = $features)]
        unsafe fn dot_q8n_impl<const N: usize>(row: &[u8], a: &[ActRow<'_>; N]) -> [f32; N] {
            let nb = n_blocks(32, 34, row, &a[0]);
            let lo = a[0].has_lo();
            if N > 1 && a.iter().any(|x| n_blocks(32, 34, row, x) != nb || x.has_lo() != lo) {
                // SAFETY: the features are enabled (we run inside this kernel).
                return std::array::from_fn(|k| unsafe { dot_q8n_impl::<1>(row, &[a[k]])[0] });
            }
            let rp = row.as_ptr();
            // SAFETY (the closures): `chunked_n` calls them with g < nb ≤ row.len() / 34 (and
            // `sc` with g0 + 8 ≤ nb): block g's 34 bytes are in the row.
            let wg = |g: usize| unsafe {
                let w = _mm256_loadu_si256(rp.add(34 * g + 2) as *const __m256i);
                // |w| as u8 times x with w's sign: the products w·x, exactly.
                (_mm256_sign_epi8(w, w), w)
            };
            let sc = |g0: usize| unsafe {
                let p = rp.add(34 * g0);
                if N == 1 {
                    pf_ahead(p, 5); // 8 groups = 272 bytes
                }
                (f16_lanes::<false>(dwords8(p, 34)), _mm256_setzero_ps())
            };
            let sc1 = |g: usize| unsafe { (f16x2(rp.add(34 * g)).0, 0.0) };
            // SAFETY: nb ≤ a[k].groups() for every k; the closures' contracts as above.
            unsafe {
                if lo {
                    chunked_n::<N, true, true, false>(nb, a, wg, sc, sc1)
                } else {
                    chunked_n::<N, false, true, false>(nb, a, wg, sc, sc1)
                }
            }
        }
    };
}
pub(super) use q_kernels;

q_kernels!("avx2,fma,f16c", dot_u8i8, dot_u8i8_acc);

/// Shared body of the float-row dots: `$load(i)` gives the 8 weights from value `i`,
/// `$one(i)` weight `i` alone.
macro_rules! float_dot {
    ($row:ident, $x:ident, $elem:expr, $load:expr, $one:expr) => {{
        let n = ($row.len() / $elem).min($x.len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        let xp = $x.as_ptr();
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + 8k + 8 ≤ n ≤ both lengths (in elements).
                *a = _mm256_fmadd_ps(
                    $load(i + 8 * k),
                    unsafe { _mm256_loadu_ps(xp.add(i + 8 * k)) },
                    *a,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n.
            acc[0] = _mm256_fmadd_ps($load(i), unsafe { _mm256_loadu_ps(xp.add(i)) }, acc[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        while i < n {
            s += $one(i) * $x[i];
            i += 1;
        }
        s
    }};
}

pub(super) fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { dot_f32_impl(row, x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32_impl(row: &[u8], x: &[f32]) -> f32 {
    let rp = row.as_ptr();
    // SAFETY: `float_dot` calls `load(i)` only with i + 8 ≤ row.len() / 4.
    let load = |i: usize| unsafe { _mm256_loadu_ps(rp.add(4 * i) as *const f32) };
    let one =
        |i: usize| f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]);
    float_dot!(row, x, 4, load, one)
}

pub(super) fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { dot_f16_impl(row, x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_impl(row: &[u8], x: &[f32]) -> f32 {
    let rp = row.as_ptr();
    // SAFETY: `float_dot` calls `load(i)` only with i + 8 ≤ row.len() / 2.
    let load =
        |i: usize| unsafe { _mm256_cvtph_ps(_mm_loadu_si128(rp.add(2 * i) as *const __m128i)) };
    let one = |i: usize| half::f16::from_le_bytes([row[2 * i], row[2 * i + 1]]).to_f32();
    float_dot!(row, x, 2, load, one)
}

pub(super) fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { dot_bf16_impl(row, x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_bf16_impl(row: &[u8], x: &[f32]) -> f32 {
    let rp = row.as_ptr();
    // SAFETY: `float_dot` calls `load(i)` only with i + 8 ≤ row.len() / 2.
    let load = |i: usize| unsafe {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(rp.add(2 * i) as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
    };
    let one = |i: usize| half::bf16::from_le_bytes([row[2 * i], row[2 * i + 1]]).to_f32();
    float_dot!(row, x, 2, load, one)
}

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { dot_impl(a, b) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n.
        unsafe {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(ap.add(i)),
                _mm256_loadu_ps(bp.add(i)),
                acc[0],
            );
            acc[1] = _mm256_fmadd_ps(
                _mm256_loadu_ps(ap.add(i + 8)),
                _mm256_loadu_ps(bp.add(i + 8)),
                acc[1],
            );
        }
        i += 16;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n.
        unsafe {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(ap.add(i)),
                _mm256_loadu_ps(bp.add(i)),
                acc[0],
            );
        }
        i += 8;
    }
    let mut s = hsum(_mm256_add_ps(acc[0], acc[1]));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { axpy_impl(a, x, y) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_impl(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let av = _mm256_set1_ps(a);
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n ≤ both lengths.
        unsafe {
            let v = _mm256_fmadd_ps(av, _mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)));
            _mm256_storeu_ps(yp.add(i), v);
        }
        i += 8;
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}

pub(super) fn dots(q: &[f32], keys: &[f32], out: &mut [f32]) {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { dots_impl(q, keys, out) }
}

/// Four keys at a time (one `q` load feeds four FMAs, one transposing horizontal sum per
/// four scores); keys whose length is not a multiple of 8, and the last `n mod 4` keys,
/// through [`dot_impl`].
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_impl(q: &[f32], keys: &[f32], out: &mut [f32]) {
    let d = q.len();
    if d == 0 {
        return;
    }
    let n = out.len().min(keys.len() / d);
    let mut i = 0;
    if d.is_multiple_of(8) {
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        while i + 4 <= n {
            let mut acc = [_mm256_setzero_ps(); 4];
            for j in (0..d).step_by(8) {
                // SAFETY: j + 8 ≤ d, and key i + 3 ends at (i + 4)·d ≤ n·d ≤ keys.len().
                unsafe {
                    let qv = _mm256_loadu_ps(qp.add(j));
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kp.add((i + r) * d + j)), *a);
                    }
                }
            }
            let h = _mm256_hadd_ps(
                _mm256_hadd_ps(acc[0], acc[1]),
                _mm256_hadd_ps(acc[2], acc[3]),
            );
            let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            // SAFETY: i + 4 ≤ n ≤ out.len().
            unsafe { _mm_storeu_ps(out.as_mut_ptr().add(i), s) };
            i += 4;
        }
    }
    for i in i..n {
        // SAFETY: the features are enabled (we run inside this kernel).
        out[i] = unsafe { dot_impl(q, &keys[i * d..(i + 1) * d]) };
    }
}

pub(super) fn axpys(w: &[f32], vals: &[f32], out: &mut [f32]) {
    // SAFETY: this table is only handed out after AVX2/FMA/F16C detection.
    unsafe { axpys_impl(w, vals, out) }
}

/// Up to 64 outputs stay in eight registers across all the value rows (no load/store of
/// `out` per row); longer rows go 64 columns at a time, a last partial slice through
/// [`axpy_impl`].
#[target_feature(enable = "avx2,fma")]
unsafe fn axpys_impl(w: &[f32], vals: &[f32], out: &mut [f32]) {
    let d = out.len();
    if d == 0 {
        return;
    }
    let n = w.len().min(vals.len() / d);
    let vp = vals.as_ptr();
    let mut c = 0;
    while c + 8 <= d {
        let width = ((d - c) / 8).min(8);
        let mut acc = [_mm256_setzero_ps(); 8];
        // SAFETY: c + 8·width ≤ d = out.len().
        unsafe {
            for (k, a) in acc.iter_mut().enumerate().take(width) {
                *a = _mm256_loadu_ps(out.as_ptr().add(c + 8 * k));
            }
        }
        for (i, wi) in w.iter().enumerate().take(n) {
            let wv = _mm256_set1_ps(*wi);
            for (k, a) in acc.iter_mut().enumerate().take(width) {
                // SAFETY: i < n ≤ vals.len() / d, and c + 8k + 8 ≤ d.
                *a = _mm256_fmadd_ps(
                    wv,
                    unsafe { _mm256_loadu_ps(vp.add(i * d + c + 8 * k)) },
                    *a,
                );
            }
        }
        // SAFETY: as for the loads.
        unsafe {
            for (k, a) in acc.iter().enumerate().take(width) {
                _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * k), *a);
            }
        }
        c += 8 * width;
    }
    if c < d {
        for (i, wi) in w.iter().enumerate().take(n) {
            // SAFETY: the features are enabled (we run inside this kernel).
            unsafe { axpy_impl(*wi, &vals[i * d + c..(i + 1) * d], &mut out[c..]) };
        }
    }
}

/// Defines a level's safe `gemm` table entry and its token tiling (`gemm_impl`) over its
/// `gemm_tile::<T, LO, MIN>(p, a, t0, half, out)` (tiles of four tokens, then one tile of the
/// last `n mod 4`; `$halves` half panels: 2 for 256-bit tiles of 8 rows, 1 for 512-bit
/// tiles of 16), so the AVX2 and AVX-512 levels share one driver.
macro_rules! gemm_driver {
    ($features:literal, $halves:expr) => {
        fn gemm(p: &Panel, a: &ActBatch<'_>, out: &mut [f32]) {
            assert!(gemm::check(p, a, out), "gemm: shapes");
            let lo = !a.lo.is_empty();
            // SAFETY: this table is only handed out after detecting `$features`; the shapes
            // were checked above.
            unsafe {
                match (lo, p.zero == Zero::Min) {
                    (false, true) => gemm_impl::<false, true>(p, a, out),
                    (false, false) => gemm_impl::<false, false>(p, a, out),
                    (true, true) => gemm_impl::<true, true>(p, a, out),
                    (true, false) => gemm_impl::<true, false>(p, a, out),
                }
            }
        }

        /// # Safety
        /// `$features` must be available; `gemm::check(p, a, out)` must hold, and `a.lo`
        /// must be non-empty iff `LO`, `p.zero == Zero::Min` iff `MIN`.
        #[target_feature(enable = $features)]
        unsafe fn gemm_impl<const LO: bool, const MIN: bool>(
            p: &Panel,
            a: &ActBatch<'_>,
            out: &mut [f32],
        ) {
            // SAFETY (every call): per the contract; each tile reads tokens t..t+T < a.n.
            unsafe {
                for half in 0..$halves {
                    let mut t = 0;
                    while t + 4 <= a.n {
                        gemm_tile::<4, LO, MIN>(p, a, t, half, out);
                        t += 4;
                    }
                    match a.n - t {
                        3 => gemm_tile::<3, LO, MIN>(p, a, t, half, out),
                        2 => gemm_tile::<2, LO, MIN>(p, a, t, half, out),
                        1 => gemm_tile::<1, LO, MIN>(p, a, t, half, out),
                        _ => {}
                    }
                }
            }
        }
    };
}
pub(super) use gemm_driver;

// The packed-panel micro-kernel ([`super::gemm`]) on 256-bit vectors, for levels ≤ 15
// (`Q2`/`Q3`/`Q4`/`Q4Sym`): each half panel (8 rows, lane `i` = row `i`) in tiles of four
// tokens. `vpmaddubsw` pair sums of one group's eight chunks accumulate in i16 (at most
// 8·2·15·128 = 30720 in magnitude: no saturation), then one `vpmaddwd` per group makes the
// i32 row sums — the same integers as `vpdpbusd`. Bit-identical to `gemm::gemm_ref`.
gemm_driver!("avx2,fma", 2);

/// Tokens `t0 .. t0 + T`, rows `8·half .. 8·half + 8` of [`gemm_impl`].
///
/// # Safety
/// As for [`gemm_impl`], `t0 + T ≤ a.n` and `half < 2`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_tile<const T: usize, const LO: bool, const MIN: bool>(
    p: &Panel,
    a: &ActBatch<'_>,
    t0: usize,
    half: usize,
    out: &mut [f32],
) {
    let ga = a.groups;
    let z = match p.zero {
        Zero::Point(z) => z,
        Zero::Min => 0,
    };
    let ones = _mm256_set1_epi16(1);
    let (lv, qs, lo) = (p.levels.as_ptr(), a.qs.as_ptr(), a.lo.as_ptr());
    let mut acc = [_mm256_setzero_ps(); T];
    for g in 0..p.groups {
        let mut hi = [_mm256_setzero_si256(); T];
        let mut lw = [_mm256_setzero_si256(); T];
        // SAFETY: g < p.groups, so the group's GROUP_BYTES levels and PANEL scales are in the
        // panel (this half's 32 bytes of each chunk, 8 scales); token t0 + j < a.n and
        // g < p.groups ≤ ga, so its 32 activation bytes at 32·((t0 + j)·ga + g) are in qs
        // (and lo, when LO), and its scales at (t0 + j)·ga + g in d/s/isum (`gemm::check`).
        unsafe {
            let wp = lv.add(g * gemm::GROUP_BYTES + 32 * half);
            for k in 0..8 {
                let w = _mm256_loadu_si256(wp.add(64 * k) as *const __m256i);
                for j in 0..T {
                    let off = ((t0 + j) * ga + g) * 32 + 4 * k;
                    let x = _mm256_set1_epi32(rd32(qs.add(off) as *const u8));
                    hi[j] = _mm256_add_epi16(hi[j], _mm256_maddubs_epi16(w, x));
                    if LO {
                        let x = _mm256_set1_epi32(rd32(lo.add(off) as *const u8));
                        lw[j] = _mm256_add_epi16(lw[j], _mm256_maddubs_epi16(w, x));
                    }
                }
            }
            let dw = _mm256_loadu_ps(p.dw.as_ptr().add(g * PANEL + 8 * half));
            let mw = _mm256_loadu_ps(p.mw.as_ptr().add(g * PANEL + 8 * half));
            for j in 0..T {
                let gi = (t0 + j) * ga + g;
                let h = _mm256_madd_epi16(hi[j], ones);
                let mut s = if LO {
                    _mm256_add_epi32(_mm256_slli_epi32::<8>(h), _mm256_madd_epi16(lw[j], ones))
                } else {
                    h
                };
                if !MIN {
                    s = _mm256_sub_epi32(s, _mm256_set1_epi32(z * *a.isum.get_unchecked(gi)));
                }
                let sc = _mm256_mul_ps(dw, _mm256_set1_ps(*a.d.get_unchecked(gi)));
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), sc, acc[j]);
                if MIN {
                    acc[j] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*a.s.get_unchecked(gi)), acc[j]);
                }
            }
        }
    }
    for (j, v) in acc.into_iter().enumerate() {
        // SAFETY: out holds a.n·PANEL values (`gemm::check`) and t0 + j < a.n.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add((t0 + j) * PANEL + 8 * half), v) };
    }
}

/// `gemm::pack` with 256-bit vectors for full panels of `Q4`/`Q4Sym`/`Q2` (the AVX2 micro-
/// kernel's types): per half panel, each group's bytes of the 8 rows are loaded and
/// transposed so that one vector holds the same 4-byte chunk of every row; the same panel
/// bit for bit. Other types and partial panels take the portable `gemm::pack`.
fn gemm_pack(
    qt: QuantType,
    block: usize,
    bytes: &[u8],
    rb: usize,
    r0: usize,
    nr: usize,
    p: &mut Panel,
) {
    let fast = nr == PANEL
        && matches!(qt, QuantType::Q4 | QuantType::Q4Sym | QuantType::Q2)
        && bytes.len() >= (r0 + PANEL) * rb;
    if !fast {
        return gemm::pack(qt, block, bytes, rb, r0, nr, p);
    }
    prefetch_next_panel(bytes, rb, r0);
    let (_, bb, gpb, groups) = gemm::prepare(qt, block, rb, nr, p);
    // SAFETY: this table is only handed out after detecting AVX2/F16C; rows r0..r0+16 lie in
    // `bytes` (checked above) and `prepare` sized the panel.
    unsafe { pack_impl(qt, bb, gpb, groups, bytes[r0 * rb..].as_ptr(), rb, p) }
}

/// Ask for the panel after rows `r0 .. r0 + PANEL` of a tensor (`rb` bytes per row; usually
/// this thread's next task) to come into L2 while this one is multiplied, so that packing it
/// does not wait on 16 row streams from memory.
pub(super) fn prefetch_next_panel(bytes: &[u8], rb: usize, r0: usize) {
    let start = ((r0 + PANEL) * rb).min(bytes.len());
    let next = &bytes[start..bytes.len().min((r0 + 2 * PANEL) * rb)];
    for l in (0..next.len()).step_by(64) {
        // SAFETY: a prefetch never faults; the address is inside `next`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(next.as_ptr().add(l) as *const i8) };
    }
}

/// # Safety
/// AVX2/F16C must be available; `base` must point at 16 rows of `rb` bytes, each holding
/// `groups / gpb` blocks of `bb` bytes of a `Q4`/`Q4Sym`/`Q2` tensor; `p` must be sized for
/// `groups` (`gemm::prepare`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_impl(
    qt: QuantType,
    bb: usize,
    gpb: usize,
    groups: usize,
    base: *const u8,
    rb: usize,
    p: &mut Panel,
) {
    let (hdr, gbytes, asym) = match qt {
        QuantType::Q4 => (4, 16, true),
        QuantType::Q4Sym => (2, 16, false),
        _ => (4, 8, true), // Q2
    };
    let sh = gpb.trailing_zeros();
    let (lv, dw, mw) = (p.levels.as_mut_ptr(), p.dw.as_mut_ptr(), p.mw.as_mut_ptr());
    let nib = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(3);
    for half in 0..2 {
        let hb = base.wrapping_add(8 * half * rb);
        for g in 0..groups {
            let blk = (g >> sh) * bb;
            let o = blk + hdr + (g & (gpb - 1)) * gbytes;
            // SAFETY: g < groups, so the group's 8 chunk vectors and 16 scales are in the
            // panel (`prepare`); every load reads inside block g >> sh of one of the rows.
            unsafe {
                let h = dwords8(hb.add(blk), rb);
                _mm256_storeu_ps(dw.add(g * PANEL + 8 * half), f16_lanes::<false>(h));
                let m = if asym {
                    f16_lanes::<true>(h)
                } else {
                    _mm256_setzero_ps()
                };
                _mm256_storeu_ps(mw.add(g * PANEL + 8 * half), m);
                let out = |k: usize, v: __m256i| {
                    let at = lv.add(g * gemm::GROUP_BYTES + 64 * k + 32 * half);
                    _mm256_storeu_si256(at as *mut __m256i, v)
                };
                if gbytes == 16 {
                    let t = rows8_dwords4::<16>(hb, rb, o);
                    for (j, t) in t.into_iter().enumerate() {
                        out(j, _mm256_and_si256(t, nib));
                        out(j + 4, _mm256_and_si256(_mm256_srli_epi32::<4>(t), nib));
                    }
                } else {
                    let [a, b, _, _] = rows8_dwords4::<8>(hb, rb, o);
                    out(0, _mm256_and_si256(a, two));
                    out(1, _mm256_and_si256(b, two));
                    out(2, _mm256_and_si256(_mm256_srli_epi32::<2>(a), two));
                    out(3, _mm256_and_si256(_mm256_srli_epi32::<2>(b), two));
                    out(4, _mm256_and_si256(_mm256_srli_epi32::<4>(a), two));
                    out(5, _mm256_and_si256(_mm256_srli_epi32::<4>(b), two));
                    out(6, _mm256_and_si256(_mm256_srli_epi32::<6>(a), two));
                    out(7, _mm256_and_si256(_mm256_srli_epi32::<6>(b), two));
                }
            }
        }
    }
}

/// The dwords `0..4` of the `BYTES` (16, or 8: dwords 2 and 3 are then zero) bytes at
/// `base + i·rb + off` of 8 rows, transposed: vector `k` holds row `i`'s dword `k` in lane `i`.
///
/// # Safety
/// AVX2 must be available, and `BYTES` bytes at `base + i·rb + off` readable for `i < 8`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn rows8_dwords4<const BYTES: usize>(
    base: *const u8,
    rb: usize,
    off: usize,
) -> [__m256i; 4] {
    // SAFETY: per the contract.
    let ld = |i: usize| unsafe {
        let p = base.add(i * rb + off) as *const __m128i;
        if BYTES == 16 {
            _mm_loadu_si128(p)
        } else {
            _mm_loadl_epi64(p)
        }
    };
    // z[j] = rows j, j + 4 in its two 128-bit lanes
    let z: [__m256i; 4] = std::array::from_fn(|j| _mm256_set_m128i(ld(j + 4), ld(j)));
    let t0 = _mm256_unpacklo_epi32(z[0], z[1]);
    let t1 = _mm256_unpackhi_epi32(z[0], z[1]);
    let t2 = _mm256_unpacklo_epi32(z[2], z[3]);
    let t3 = _mm256_unpackhi_epi32(z[2], z[3]);
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

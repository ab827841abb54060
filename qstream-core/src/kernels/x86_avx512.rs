//! x86-64 AVX-512 VNNI kernels: the integer dots use `vpdpbusd` on 256-bit vectors
//! (AVX512VL + AVX512VNNI), which multiplies u8 × i8 and accumulates four products per i32
//! lane in one instruction, exactly (no i16 intermediate). Everything else is the AVX2 code.
//!
//! The private wrappers are only reachable through [`KERNELS`], which
//! `dispatch::kernel_set` hands out only after detecting AVX2/FMA/F16C and
//! AVX512F/BW/VL/VNNI.

use std::arch::x86_64::*;

use super::dispatch::{ActBatch, ActRow, Isa, KernelSet};
use super::gemm::{self, Panel, Zero, PANEL};
use super::x86_avx2 as avx2;
use super::x86_avx2::{
    dwords8, f16_lanes, f16x2, headers8, hsum, hsum4_i32_ps, hsum_i32, int_combine, n_blocks,
    pf_ahead, rd32, unpack_2bit, unpack_highbit, unpack_nibbles,
};

/// The AVX-512 table.
pub(super) static KERNELS: KernelSet = KernelSet {
    isa: Isa::Avx512,
    quantize_act: avx2::quantize_act,
    quantize_act16: avx2::quantize_act16,
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
    dot_f32: avx2::dot_f32,
    dot_f16: avx2::dot_f16,
    dot_bf16: avx2::dot_bf16,
    dot: avx2::dot,
    axpy: avx2::axpy,
    dots: avx2::dots,
    axpys: avx2::axpys,
    gemm: Some(gemm),
    gemm_max_level: 255,
};

/// Σ u8·i8 over 32 bytes as 8 i32 lanes (one `vpdpbusd`).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
fn dot_u8i8(w: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x)
}

/// `acc +` Σ u8·i8 over 32 bytes (one accumulating `vpdpbusd`).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
fn dot_u8i8_acc(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, w, x)
}

super::x86_avx2::q_kernels!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot_u8i8,
    dot_u8i8_acc
);

/// The packed-panel micro-kernel ([`super::gemm`]) on 512-bit vectors: lane `i` of each
/// accumulator is panel row `i`; tiles of four tokens (the last `n mod 4` one tile), so each
/// weight vector is loaded once per four tokens and each 4-byte activation broadcast feeds
/// all 16 rows. Bit-identical to `gemm::gemm_ref`.
fn gemm(p: &Panel, a: &ActBatch<'_>, out: &mut [f32]) {
    assert!(gemm::check(p, a, out), "gemm: shapes");
    let lo = !a.lo.is_empty();
    // SAFETY: this table is only handed out after detecting AVX512F/BW/VL/VNNI (and AVX2,
    // FMA, F16C); the shapes were checked above.
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
/// AVX512F/VNNI and FMA must be available; `gemm::check(p, a, out)` must hold, and
/// `a.lo` must be non-empty iff `LO`, `p.zero == Zero::Min` iff `MIN`.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_impl<const LO: bool, const MIN: bool>(p: &Panel, a: &ActBatch<'_>, out: &mut [f32]) {
    let mut t = 0;
    // SAFETY (every call): per the contract; each tile reads tokens t..t+T < a.n.
    unsafe {
        while t + 4 <= a.n {
            gemm_tile::<4, LO, MIN>(p, a, t, out);
            t += 4;
        }
        match a.n - t {
            3 => gemm_tile::<3, LO, MIN>(p, a, t, out),
            2 => gemm_tile::<2, LO, MIN>(p, a, t, out),
            1 => gemm_tile::<1, LO, MIN>(p, a, t, out),
            _ => {}
        }
    }
}

/// Tokens `t0 .. t0 + T` of [`gemm_impl`].
///
/// # Safety
/// As for [`gemm_impl`], and `t0 + T ≤ a.n`.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_tile<const T: usize, const LO: bool, const MIN: bool>(
    p: &Panel,
    a: &ActBatch<'_>,
    t0: usize,
    out: &mut [f32],
) {
    let ga = a.groups;
    let z = match p.zero {
        Zero::Point(z) => z,
        Zero::Min => 0,
    };
    let (lv, qs, lo) = (p.levels.as_ptr(), a.qs.as_ptr(), a.lo.as_ptr());
    let mut acc = [_mm512_setzero_ps(); T];
    for g in 0..p.groups {
        let mut hi = [_mm512_setzero_si512(); T];
        let mut lw = [_mm512_setzero_si512(); T];
        // SAFETY: g < p.groups, so the group's GROUP_BYTES levels and PANEL scales are in the
        // panel; token t0 + j < a.n and g < p.groups ≤ ga, so its 32 activation bytes at
        // 32·((t0 + j)·ga + g) are in qs (and lo, when LO), and its scales at
        // (t0 + j)·ga + g in d/s/isum (`gemm::check`).
        unsafe {
            let wp = lv.add(g * gemm::GROUP_BYTES);
            for k in 0..8 {
                let w = _mm512_loadu_si512(wp.add(64 * k) as *const _);
                for j in 0..T {
                    let off = ((t0 + j) * ga + g) * 32 + 4 * k;
                    let x = _mm512_set1_epi32(rd32(qs.add(off) as *const u8));
                    hi[j] = _mm512_dpbusd_epi32(hi[j], w, x);
                    if LO {
                        let x = _mm512_set1_epi32(rd32(lo.add(off) as *const u8));
                        lw[j] = _mm512_dpbusd_epi32(lw[j], w, x);
                    }
                }
            }
            let dw = _mm512_loadu_ps(p.dw.as_ptr().add(g * PANEL));
            let mw = _mm512_loadu_ps(p.mw.as_ptr().add(g * PANEL));
            for j in 0..T {
                let gi = (t0 + j) * ga + g;
                let mut s = if LO {
                    _mm512_add_epi32(_mm512_slli_epi32::<8>(hi[j]), lw[j])
                } else {
                    hi[j]
                };
                if !MIN {
                    s = _mm512_sub_epi32(s, _mm512_set1_epi32(z * *a.isum.get_unchecked(gi)));
                }
                let sc = _mm512_mul_ps(dw, _mm512_set1_ps(*a.d.get_unchecked(gi)));
                acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[j]);
                if MIN {
                    acc[j] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*a.s.get_unchecked(gi)), acc[j]);
                }
            }
        }
    }
    for (j, v) in acc.into_iter().enumerate() {
        // SAFETY: out holds a.n·PANEL values (`gemm::check`) and t0 + j < a.n.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((t0 + j) * PANEL), v) };
    }
}

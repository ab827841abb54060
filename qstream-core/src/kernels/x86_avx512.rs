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
use crate::quant::QuantType;

/// The AVX-512 table.
pub(super) static KERNELS: KernelSet = KernelSet {
    isa: Isa::Avx512,
    quantize_act: avx2::quantize_act,
    quantize_act16: avx2::quantize_act16,
    rms_norm_act: avx2::rms_norm_act,
    silu_mul_act: avx2::silu_mul_act,
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
    gemm_pack,
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

// The packed-panel micro-kernel ([`super::gemm`]) on 512-bit vectors: lane `i` of each
// accumulator is panel row `i`; tiles of four tokens (the last `n mod 4` one tile), so each
// weight vector is loaded once per four tokens and each 4-byte activation broadcast feeds
// all 16 rows. Bit-identical to `gemm::gemm_ref`.
avx2::gemm_driver!("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni", 1);

/// Tokens `t0 .. t0 + T` of [`gemm_impl`] (the whole panel: `_half` is always 0).
///
/// # Safety
/// As for [`gemm_impl`], and `t0 + T ≤ a.n`.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_tile<const T: usize, const LO: bool, const MIN: bool>(
    p: &Panel,
    a: &ActBatch<'_>,
    t0: usize,
    _half: usize,
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

/// `gemm::pack` with 512-bit vectors for full panels of `Q4`/`Q4Sym`/`Q2`/`Q8`: each
/// group's bytes of the 16 rows are loaded and transposed so that one vector holds the same
/// 4-byte chunk of every row, the block headers come from one `vpgatherdd` and `vcvtph2ps`;
/// the same panel bit for bit. Other types and partial panels take the
/// portable `gemm::pack`.
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
        && matches!(
            qt,
            QuantType::Q4 | QuantType::Q4Sym | QuantType::Q2 | QuantType::Q8
        )
        && PANEL * rb <= i32::MAX as usize
        && bytes.len() >= (r0 + PANEL) * rb;
    if !fast {
        return gemm::pack(qt, block, bytes, rb, r0, nr, p);
    }
    avx2::prefetch_next_panel(bytes, rb, r0);
    let (_, bb, gpb, groups) = gemm::prepare(qt, block, rb, nr, p);
    // SAFETY: this table is only handed out after detecting AVX512F/BW/VL (and AVX2/F16C);
    // rows r0..r0+16 lie in `bytes` (checked above) and `prepare` sized the panel.
    unsafe { pack_impl(qt, bb, gpb, groups, bytes[r0 * rb..].as_ptr(), rb, p) }
}

/// # Safety
/// AVX512F/BW/VL must be available; `base` must point at 16 rows of `rb` bytes, each
/// holding `groups / gpb` blocks of `bb` bytes of a `Q4`/`Q4Sym`/`Q2`/`Q8` tensor, with
/// `16·rb ≤ i32::MAX`; `p` must be sized for `groups` (`gemm::prepare`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn pack_impl(
    qt: QuantType,
    bb: usize,
    gpb: usize,
    groups: usize,
    base: *const u8,
    rb: usize,
    p: &mut Panel,
) {
    let rows = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(rb as i32),
    );
    // the dword at byte `off` of each of the 16 rows
    // SAFETY (every call): off + 4 ≤ rb for the offsets used below (inside a block of the
    // row), so each lane reads 4 bytes of its row.
    let gather = |off: usize| unsafe {
        _mm512_i32gather_epi32::<1>(
            _mm512_add_epi32(rows, _mm512_set1_epi32(off as i32)),
            base as _,
        )
    };
    let (hdr, gbytes, asym) = match qt {
        QuantType::Q4 => (4, 16, true),
        QuantType::Q4Sym => (2, 16, false),
        QuantType::Q2 => (4, 8, true),
        _ => (2, 32, false), // Q8
    };
    let sh = gpb.trailing_zeros();
    let (lv, dw, mw) = (p.levels.as_mut_ptr(), p.dw.as_mut_ptr(), p.mw.as_mut_ptr());
    let nib = _mm512_set1_epi32(0x0F0F_0F0F);
    let two = _mm512_set1_epi32(0x0303_0303);
    let f16 = |v: __m512i| _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
    for g in 0..groups {
        let blk = (g >> sh) * bb;
        let o = blk + hdr + (g & (gpb - 1)) * gbytes;
        // SAFETY: g < groups, so the group's 8 chunk vectors and 16 scales are in the panel
        // (`prepare`); the gathers read inside block g >> sh of each row.
        unsafe {
            let h = gather(blk);
            _mm512_storeu_ps(dw.add(g * PANEL), f16(h));
            let m = if asym {
                f16(_mm512_srli_epi32::<16>(h))
            } else {
                _mm512_setzero_ps()
            };
            _mm512_storeu_ps(mw.add(g * PANEL), m);
            let out = |k: usize, v: __m512i| {
                _mm512_storeu_si512(lv.add(g * gemm::GROUP_BYTES + 64 * k) as _, v)
            };
            match qt {
                QuantType::Q4 | QuantType::Q4Sym => {
                    let t = rows16_dwords4::<16>(base, rb, o);
                    for (j, t) in t.into_iter().enumerate() {
                        out(j, _mm512_and_si512(t, nib));
                        out(j + 4, _mm512_and_si512(_mm512_srli_epi32::<4>(t), nib));
                    }
                }
                QuantType::Q2 => {
                    let [a, b, _, _] = rows16_dwords4::<8>(base, rb, o);
                    out(0, _mm512_and_si512(a, two));
                    out(1, _mm512_and_si512(b, two));
                    out(2, _mm512_and_si512(_mm512_srli_epi32::<2>(a), two));
                    out(3, _mm512_and_si512(_mm512_srli_epi32::<2>(b), two));
                    out(4, _mm512_and_si512(_mm512_srli_epi32::<4>(a), two));
                    out(5, _mm512_and_si512(_mm512_srli_epi32::<4>(b), two));
                    out(6, _mm512_and_si512(_mm512_srli_epi32::<6>(a), two));
                    out(7, _mm512_and_si512(_mm512_srli_epi32::<6>(b), two));
                }
                _ => {
                    let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
                    let lo = rows16_dwords4::<16>(base, rb, o);
                    let hi = rows16_dwords4::<16>(base, rb, o + 16);
                    for (k, t) in lo.into_iter().chain(hi).enumerate() {
                        out(k, _mm512_xor_si512(t, flip));
                    }
                }
            }
        }
    }
}

/// The dwords `0..4` of the `BYTES` (16, or 8: dwords 2 and 3 are then zero) bytes at
/// `base + i·rb + off` of 16 rows, transposed: vector `k` holds row `i`'s dword `k` in lane
/// `i` (plain loads and an in-lane 4×4 transpose; `vpgatherdd` is microcoded on AMD Zen).
///
/// # Safety
/// AVX512F must be available, and `BYTES` bytes at `base + i·rb + off` readable for `i < 16`.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn rows16_dwords4<const BYTES: usize>(
    base: *const u8,
    rb: usize,
    off: usize,
) -> [__m512i; 4] {
    // SAFETY: per the contract.
    let ld = |i: usize| unsafe {
        let p = base.add(i * rb + off) as *const __m128i;
        if BYTES == 16 {
            _mm_loadu_si128(p)
        } else {
            _mm_loadl_epi64(p)
        }
    };
    // z[j] = rows j, j + 4, j + 8, j + 12 in its four 128-bit lanes
    let z: [__m512i; 4] = std::array::from_fn(|j| {
        let v = _mm512_castsi128_si512(ld(j));
        let v = _mm512_inserti32x4::<1>(v, ld(j + 4));
        let v = _mm512_inserti32x4::<2>(v, ld(j + 8));
        _mm512_inserti32x4::<3>(v, ld(j + 12))
    });
    let t0 = _mm512_unpacklo_epi32(z[0], z[1]);
    let t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    let t2 = _mm512_unpacklo_epi32(z[2], z[3]);
    let t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    [
        _mm512_unpacklo_epi64(t0, t2),
        _mm512_unpackhi_epi64(t0, t2),
        _mm512_unpacklo_epi64(t1, t3),
        _mm512_unpackhi_epi64(t1, t3),
    ]
}

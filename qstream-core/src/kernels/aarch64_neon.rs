//! AArch64 NEON kernels (compiled only for aarch64; the x86 CI machine runs them under
//! `qemu-aarch64`, see docs/benchmarks.md).
//!
//! Two levels share this code: [`KERNELS`] (`Isa::Neon`) computes each 32-value group's
//! `Σ q_w·q_x` with `vmull_s8` (i8 × i8 → i16, exact), `vpaddlq_s16`/`vpadalq_s16` (pairwise
//! widening to i32) and `vaddvq_s32`; [`KERNELS_DOT`] (`Isa::NeonDot`, CPUs with the dot-product
//! extension) does the same sums with two `sdot` (four i8 products per i32 lane). The
//! integers are exact either way; with 16-bit activations each group is dotted with both planes
//! (`256·Σ q_w·qs + Σ q_w·lo`, exact in i32). The groups are then combined in exactly the scalar
//! reference's float order, so the results are bit-identical to `scalar::dot_*` at both
//! activation precisions. Activation quantization and the f16/bf16 rows use the scalar
//! reference; f32 dots use 4 `vfmaq_f32` accumulators. No packed-panel kernel yet: prompt
//! batches run the row kernels.

use std::arch::aarch64::*;

use super::dispatch::{ActRow, Isa, KernelSet};
use super::scalar;
use crate::quant::float::read_f16;

/// The NEON table.
pub(super) static KERNELS: KernelSet = KernelSet {
    isa: Isa::Neon,
    quantize_act: scalar::quantize_act,
    quantize_act16: scalar::quantize_act16,
    rms_norm_act: scalar::rms_norm_act,
    silu_mul_act: scalar::silu_mul_act,
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
    dot_f16: crate::quant::float::dot_f16_ref,
    dot_bf16: crate::quant::float::dot_bf16_ref,
    dot,
    axpy,
    dots: scalar::dots,
    axpys: scalar::axpys,
    gemm: None,
    gemm_pack: super::gemm::pack,
    gemm_max_level: 0,
};

/// The NEON + dot-product (`sdot`) table: handed out only after detecting `dotprod`.
pub(super) static KERNELS_DOT: KernelSet = KernelSet {
    isa: Isa::NeonDot,
    dot_q4: dot_q4_sdot,
    dot_q4sym: dot_q4sym_sdot,
    dot_q8: dot_q8_sdot,
    dot_q4_x4: dot_q4_x4_sdot,
    dot_q4sym_x4: dot_q4sym_x4_sdot,
    dot_q8_x4: dot_q8_x4_sdot,
    dot_q2: dot_q2_sdot,
    dot_q2_x4: dot_q2_x4_sdot,
    dot_q3: dot_q3_sdot,
    dot_mxfp4: dot_mxfp4_sdot,
    ..KERNELS
};

// Multi-token dots: four single-token NEON calls (bit-identical by construction).
scalar::x4_by_single!(dot_q4_x4, dot_q4, "`dot_q4` for four activations.");
scalar::x4_by_single!(dot_q4sym_x4, dot_q4sym, "`dot_q4sym` for four activations.");
scalar::x4_by_single!(dot_q8_x4, dot_q8, "`dot_q8` for four activations.");
scalar::x4_by_single!(dot_q2_x4, dot_q2, "`dot_q2` for four activations.");
scalar::x4_by_single!(
    dot_q4_x4_sdot,
    dot_q4_sdot,
    "`dot_q4_sdot` for four activations."
);
scalar::x4_by_single!(
    dot_q4sym_x4_sdot,
    dot_q4sym_sdot,
    "`dot_q4sym_sdot` for four activations."
);
scalar::x4_by_single!(
    dot_q8_x4_sdot,
    dot_q8_sdot,
    "`dot_q8_sdot` for four activations."
);
scalar::x4_by_single!(
    dot_q2_x4_sdot,
    dot_q2_sdot,
    "`dot_q2_sdot` for four activations."
);

/// Blocks of a row the kernels may touch (bounded by the row and by the activation).
#[inline]
fn n_blocks(block: usize, bb: usize, row: &[u8], a: &ActRow<'_>) -> usize {
    (row.len() / bb).min(a.groups() * 32 / block)
}

/// `acc + Σ a·b` per i32 lane over groups of four i8 products (`sdot`).
///
/// # Safety
/// The CPU must have the dot-product extension (`dotprod`).
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    // SAFETY: the caller guarantees `dotprod`; the instruction reads and writes registers only.
    unsafe {
        std::arch::asm!(
            ".arch_extension dotprod",
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) r,
            in(vreg) a,
            in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// `Σ w·x` over 32 i8 pairs (`w` as two 16-lane halves), with `sdot` when `DOT`.
///
/// # Safety
/// `DOT` only on CPUs with `dotprod`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn idot32<const DOT: bool>(
    w0: int8x16_t,
    w1: int8x16_t,
    x0: int8x16_t,
    x1: int8x16_t,
) -> i32 {
    if DOT {
        // SAFETY: DOT only with dotprod (the contract).
        return vaddvq_s32(unsafe { sdot(sdot(vdupq_n_s32(0), w0, x0), w1, x1) });
    }
    let mut s = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));
    s = vpadalq_s16(s, vmull_high_s8(w0, x0));
    s = vpadalq_s16(s, vmull_s8(vget_low_s8(w1), vget_low_s8(x1)));
    s = vpadalq_s16(s, vmull_high_s8(w1, x1));
    vaddvq_s32(s)
}

/// Group `gi`'s integer dot `Σ q_w·q_x` with the activation, both planes at 16 bits
/// (`256·Σ q_w·qs + Σ q_w·lo`, exact in i32): `w` gives the group's weights as two i8 halves.
///
/// # Safety
/// `DOT` only on CPUs with `dotprod`; `gi < a.groups()`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn group_dot<const DOT: bool>(w: (int8x16_t, int8x16_t), a: &ActRow<'_>, gi: usize) -> i32 {
    // SAFETY: gi < groups, so 32 bytes at 32·gi are in qs (and in lo when it is a plane).
    unsafe {
        let plane = |x: *const i8| idot32::<DOT>(w.0, w.1, vld1q_s8(x), vld1q_s8(x.add(16)));
        let hi = plane(a.qs.as_ptr().add(32 * gi));
        if a.has_lo() {
            256 * hi + plane(a.lo.as_ptr().add(32 * gi))
        } else {
            hi
        }
    }
}

/// One 16-byte nibble group (at `qs[0..16]`) as its 32 levels in two i8 halves.
#[inline]
#[target_feature(enable = "neon")]
fn nibbles(qs: &[u8]) -> (int8x16_t, int8x16_t) {
    assert!(qs.len() >= 16);
    // SAFETY: the assert above bounds the 16-byte load.
    let raw = unsafe { vld1q_u8(qs.as_ptr()) };
    let m = vdupq_n_u8(0x0F);
    (
        vreinterpretq_s8_u8(vandq_u8(raw, m)),
        vreinterpretq_s8_u8(vshrq_n_u8::<4>(raw)),
    )
}

/// The tables' safe wrappers of a NEON integer dot: `$name` (plain NEON) and `$dot` (`sdot`).
macro_rules! neon_dot {
    ($name:ident, $dot:ident, $impl:ident, with_block) => {
        fn $name(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting NEON.
            unsafe { $impl::<false>(block, row, a) }
        }

        fn $dot(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting NEON and dotprod.
            unsafe { $impl::<true>(block, row, a) }
        }
    };
    ($name:ident, $dot:ident, $impl:ident) => {
        fn $name(_block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting NEON.
            unsafe { $impl::<false>(row, a) }
        }

        fn $dot(_block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
            // SAFETY: this table is only handed out after detecting NEON and dotprod.
            unsafe { $impl::<true>(row, a) }
        }
    };
}

neon_dot!(dot_q4, dot_q4_sdot, dot_q4_impl, with_block);

#[target_feature(enable = "neon")]
unsafe fn dot_q4_impl<const DOT: bool>(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let block = block.max(32);
    let bb = 4 + block / 2;
    let gpb = block / 32;
    let (mut acc, mut acc_m) = (0f32, 0f32);
    for b in 0..n_blocks(block, bb, row, &a) {
        let blk = &row[b * bb..(b + 1) * bb];
        let (dw, mw) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        for g in 0..gpb {
            let gi = b * gpb + g;
            // SAFETY: gi < nb·gpb ≤ a.groups() (n_blocks); DOT per the contract.
            let i = unsafe { group_dot::<DOT>(nibbles(&blk[4 + 16 * g..]), &a, gi) };
            acc += (dw * a.d[gi]) * i as f32;
            acc_m += mw * a.s[gi];
        }
    }
    acc + acc_m
}

neon_dot!(dot_q4sym, dot_q4sym_sdot, dot_q4sym_impl, with_block);

#[target_feature(enable = "neon")]
unsafe fn dot_q4sym_impl<const DOT: bool>(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let block = block.max(32);
    let bb = 2 + block / 2;
    let gpb = block / 32;
    let mut acc = 0f32;
    for b in 0..n_blocks(block, bb, row, &a) {
        let blk = &row[b * bb..(b + 1) * bb];
        let dw = read_f16(&blk[0..2]);
        for g in 0..gpb {
            let gi = b * gpb + g;
            // SAFETY: gi < nb·gpb ≤ a.groups() (n_blocks); DOT per the contract.
            let i = unsafe { group_dot::<DOT>(nibbles(&blk[2 + 16 * g..]), &a, gi) };
            acc += (dw * a.d[gi]) * (i - 8 * a.isum[gi]) as f32;
        }
    }
    acc
}

neon_dot!(dot_q8, dot_q8_sdot, dot_q8_impl);

#[target_feature(enable = "neon")]
unsafe fn dot_q8_impl<const DOT: bool>(row: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for b in 0..n_blocks(32, 34, row, &a) {
        let blk = &row[b * 34..(b + 1) * 34];
        let dw = read_f16(&blk[0..2]);
        // SAFETY: blk has 34 bytes (32 from offset 2); b < a.groups() (n_blocks); DOT per
        // the contract.
        let i = unsafe {
            let w = blk.as_ptr().add(2) as *const i8;
            group_dot::<DOT>((vld1q_s8(w), vld1q_s8(w.add(16))), &a, b)
        };
        acc += (dw * a.d[b]) * i as f32;
    }
    acc
}

/// 32 two-bit levels of a group (8 bytes, byte `j` holding values `j, j+8, j+16, j+24` at
/// bit offsets 0, 2, 4, 6) as two 16-lane halves in value order.
#[inline]
#[target_feature(enable = "neon")]
fn unpack_2bit(lows: &[u8]) -> (uint8x16_t, uint8x16_t) {
    assert!(lows.len() >= 8);
    // SAFETY: the assert above bounds the 8-byte load.
    let v = unsafe { vld1_u8(lows.as_ptr()) };
    let m = vdup_n_u8(3);
    (
        vcombine_u8(vand_u8(v, m), vand_u8(vshr_n_u8::<2>(v), m)),
        vcombine_u8(vand_u8(vshr_n_u8::<4>(v), m), vshr_n_u8::<6>(v)),
    )
}

/// Bit 2 of a group's 32 three-bit levels (4 bytes, bit `i` for value `i`) as two 16-lane
/// halves of 0 or 4.
#[inline]
#[target_feature(enable = "neon")]
fn unpack_highbit(h: &[u8]) -> (uint8x16_t, uint8x16_t) {
    assert!(h.len() >= 4);
    // SAFETY: the table below is 16 readable bytes.
    let bits =
        unsafe { vld1q_u8([1u8, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128].as_ptr()) };
    let four = vdupq_n_u8(4);
    let half = |b0: u8, b1: u8| {
        let v = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
        vandq_u8(vtstq_u8(v, bits), four)
    };
    (half(h[0], h[1]), half(h[2], h[3]))
}

neon_dot!(dot_q2, dot_q2_sdot, dot_q2_impl, with_block);

/// Same group order and float operations as `scalar::dot_q2` (bit-identical).
#[target_feature(enable = "neon")]
unsafe fn dot_q2_impl<const DOT: bool>(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let block = block.max(32);
    let bb = crate::quant::q2::block_bytes(block);
    let gpb = block / 32;
    let (mut acc, mut acc_m) = (0f32, 0f32);
    for b in 0..n_blocks(block, bb, row, &a) {
        let blk = &row[b * bb..(b + 1) * bb];
        let (dw, mw) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        for g in 0..gpb {
            let gi = b * gpb + g;
            let (w0, w1) = unpack_2bit(&blk[4 + 8 * g..]);
            // SAFETY: gi < nb·gpb ≤ a.groups() (n_blocks); DOT per the contract.
            let i = unsafe { group_dot::<DOT>(signed(w0, w1), &a, gi) };
            acc += (dw * a.d[gi]) * i as f32;
            acc_m += mw * a.s[gi];
        }
    }
    acc + acc_m
}

neon_dot!(dot_q3, dot_q3_sdot, dot_q3_impl, with_block);

/// Same group order and float operations as `scalar::dot_q3` (bit-identical).
#[target_feature(enable = "neon")]
unsafe fn dot_q3_impl<const DOT: bool>(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let block = block.max(32);
    let bb = crate::quant::q3::block_bytes(block);
    let gpb = block / 32;
    let (mut acc, mut acc_m) = (0f32, 0f32);
    for b in 0..n_blocks(block, bb, row, &a) {
        let blk = &row[b * bb..(b + 1) * bb];
        let (dw, mw) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        for g in 0..gpb {
            let gi = b * gpb + g;
            let (l0, l1) = unpack_2bit(&blk[4 + 8 * g..]);
            let (h0, h1) = unpack_highbit(&blk[4 + block / 4 + 4 * g..]);
            // SAFETY: gi < nb·gpb ≤ a.groups() (n_blocks); DOT per the contract.
            let i = unsafe { group_dot::<DOT>(signed(vorrq_u8(l0, h0), vorrq_u8(l1, h1)), &a, gi) };
            acc += (dw * a.d[gi]) * i as f32;
            acc_m += mw * a.s[gi];
        }
    }
    acc + acc_m
}

neon_dot!(dot_mxfp4, dot_mxfp4_sdot, dot_mxfp4_impl);

/// Same block order and float operations as `scalar::dot_mxfp4` (bit-identical).
#[target_feature(enable = "neon")]
unsafe fn dot_mxfp4_impl<const DOT: bool>(row: &[u8], a: ActRow<'_>) -> f32 {
    // SAFETY: MXFP4_X2 is 16 readable bytes.
    let table = unsafe { vld1q_s8(scalar::MXFP4_X2.as_ptr()) };
    let mut acc = 0f32;
    for b in 0..n_blocks(32, 17, row, &a) {
        let blk = &row[b * 17..(b + 1) * 17];
        let dw = scalar::mxfp4_half_scale(blk[0]);
        // SAFETY: blk has 17 bytes (16 from offset 1); b < a.groups() (n_blocks); DOT per
        // the contract.
        let i = unsafe {
            let raw = vld1q_u8(blk.as_ptr().add(1));
            let lo = vandq_u8(raw, vdupq_n_u8(0x0F));
            let hi = vshrq_n_u8::<4>(raw);
            group_dot::<DOT>((vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi)), &a, b)
        };
        acc += (dw * a.d[b]) * i as f32;
    }
    acc
}

/// 32 unsigned levels (< 128, as two halves) reinterpreted as i8.
#[inline]
#[target_feature(enable = "neon")]
fn signed(w0: uint8x16_t, w1: uint8x16_t) -> (int8x16_t, int8x16_t) {
    (vreinterpretq_s8_u8(w0), vreinterpretq_s8_u8(w1))
}

fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    // SAFETY: this table is only handed out after detecting NEON.
    unsafe { dot_f32_impl(row, x) }
}

#[target_feature(enable = "neon")]
unsafe fn dot_f32_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = (row.len() / 4).min(x.len());
    let (rp, xp) = (row.as_ptr(), x.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4k + 4 ≤ n; the row load is a byte load (no alignment needed).
            unsafe {
                let w = vreinterpretq_f32_u8(vld1q_u8(rp.add(4 * (i + 4 * k))));
                *a = vfmaq_f32(*a, w, vld1q_f32(xp.add(i + 4 * k)));
            }
        }
        i += 16;
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    while i < n {
        s +=
            f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]) * x[i];
        i += 1;
    }
    s
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: this table is only handed out after detecting NEON.
    unsafe { dot_impl(a, b) }
}

#[target_feature(enable = "neon")]
unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n.
        unsafe {
            acc[0] = vfmaq_f32(
                acc[0],
                vld1q_f32(a.as_ptr().add(i)),
                vld1q_f32(b.as_ptr().add(i)),
            );
            acc[1] = vfmaq_f32(
                acc[1],
                vld1q_f32(a.as_ptr().add(i + 4)),
                vld1q_f32(b.as_ptr().add(i + 4)),
            );
        }
        i += 8;
    }
    let mut s = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: this table is only handed out after detecting NEON.
    unsafe { axpy_impl(a, x, y) }
}

#[target_feature(enable = "neon")]
unsafe fn axpy_impl(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 ≤ n ≤ both lengths.
        unsafe {
            let v = vfmaq_n_f32(
                vld1q_f32(y.as_ptr().add(i)),
                vld1q_f32(x.as_ptr().add(i)),
                a,
            );
            vst1q_f32(y.as_mut_ptr().add(i), v);
        }
        i += 4;
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}

//! x86-64 AVX-512 VNNI kernels: the integer dots use `vpdpbusd` on 256-bit vectors
//! (AVX512VL + AVX512VNNI), which multiplies u8 × i8 and accumulates four products per i32
//! lane in one instruction, exactly (no i16 intermediate). Everything else is the AVX2 code.
//!
//! The private wrappers are only reachable through [`KERNELS`], which
//! `dispatch::kernel_set` hands out only after detecting AVX2/FMA/F16C and
//! AVX512F/BW/VL/VNNI.

use std::arch::x86_64::*;

use super::dispatch::{ActRow, Isa, KernelSet};
use super::x86_avx2 as avx2;
use super::x86_avx2::{
    dwords8, f16_lanes, f16x2, headers8, hsum, hsum4_i32_ps, hsum_i32, int_combine, n_blocks,
    pf_ahead, unpack_2bit, unpack_highbit, unpack_nibbles,
};

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

//! ggml block formats → f32, exactly as ggml's `dequantize_row_*` (and `gguf.quants`) compute
//! them: the same f32 operations in the same order, so results are bit-identical.
//!
//! Block layouts (fp16 fields little-endian):
//! - `Q4_0` (18 B / 32): `d`, `qs[16]`; value `j` is `qs[j] & 15`, `j+16` is `qs[j] >> 4`; `x = d·(q−8)`.
//! - `Q4_1` (20 B / 32): `d`, `m`, `qs[16]`; `x = d·q + m`.
//! - `Q5_0` (22 B / 32): `d`, `qh: u32`, `qs[16]`; bit `j` of `qh` is the 5th bit of value `j`; `x = d·(q−16)`.
//! - `Q5_1` (24 B / 32): `d`, `m`, `qh`, `qs[16]`; `x = d·q + m`.
//! - `Q8_0` (34 B / 32): `d`, `qs: i8[32]`; `x = q·d`.
//! - `Q2_K` (84 B / 256): `scales[16]` (low nibble scale, high nibble min), `qs[64]`, `d`, `dmin`.
//! - `Q3_K` (110 B / 256): `hmask[32]`, `qs[64]`, `scales[12]` (16 × 6 bit), `d`.
//! - `Q4_K` (144 B / 256): `d`, `dmin`, `scales[12]` (8 × 6-bit scale + 8 × 6-bit min), `qs[128]`.
//! - `Q5_K` (176 B / 256): `d`, `dmin`, `scales[12]`, `qh[32]`, `qs[128]`.
//! - `Q6_K` (210 B / 256): `ql[128]`, `qh[64]`, `scales: i8[16]`, `d`.
//! - `MXFP4` (17 B / 32): `e`, `qs[16]`; `x = 2·FP4[q] · 2^(e−128)` (ggml doubles the table and halves the scale).

use super::parse::ggml_type as t;
use super::parse::{ggml_type_block, ggml_type_name};
use crate::{Error, Result};

#[inline]
fn f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Whether [`dequantize`] handles ggml type `id`.
pub fn supported(id: u32) -> bool {
    matches!(
        id,
        t::F32
            | t::F16
            | t::BF16
            | t::Q4_0
            | t::Q4_1
            | t::Q5_0
            | t::Q5_1
            | t::Q8_0
            | t::Q2_K
            | t::Q3_K
            | t::Q4_K
            | t::Q5_K
            | t::Q6_K
            | t::MXFP4
    )
}

/// Dequantize `bytes` (whole blocks of ggml type `id`) into `out` (`out.len()` values).
pub fn dequantize(id: u32, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let Some((block, bb)) = ggml_type_block(id) else {
        return Err(Error::UnsupportedQuant(format!("ggml type id {id}")));
    };
    if !supported(id) {
        return Err(Error::UnsupportedQuant(format!(
            "ggml type {} cannot be decoded",
            ggml_type_name(id)
        )));
    }
    if !out.len().is_multiple_of(block) || bytes.len() != out.len() / block * bb {
        return Err(Error::corrupt(format!(
            "{}: {} bytes for {} values",
            ggml_type_name(id),
            bytes.len(),
            out.len()
        )));
    }
    let blocks = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(block));
    match id {
        t::F32 => {
            for (b, o) in blocks {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        t::F16 => {
            for (b, o) in blocks {
                o[0] = f16(b, 0);
            }
        }
        t::BF16 => {
            for (b, o) in blocks {
                o[0] = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        t::Q4_0 => blocks.for_each(|(b, o)| q4_0(b, o)),
        t::Q4_1 => blocks.for_each(|(b, o)| q4_1(b, o)),
        t::Q5_0 => blocks.for_each(|(b, o)| q5_0(b, o)),
        t::Q5_1 => blocks.for_each(|(b, o)| q5_1(b, o)),
        t::Q8_0 => blocks.for_each(|(b, o)| q8_0(b, o)),
        t::Q2_K => blocks.for_each(|(b, o)| q2_k(b, o)),
        t::Q3_K => blocks.for_each(|(b, o)| q3_k(b, o)),
        t::Q4_K => blocks.for_each(|(b, o)| q4_k(b, o)),
        t::Q5_K => blocks.for_each(|(b, o)| q5_k(b, o)),
        t::Q6_K => blocks.for_each(|(b, o)| q6_k(b, o)),
        t::MXFP4 => blocks.for_each(|(b, o)| mxfp4(b, o)),
        _ => unreachable!("checked by supported()"),
    }
    Ok(())
}

fn q4_0(b: &[u8], o: &mut [f32]) {
    let d = f16(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        o[j] = d * ((qs[j] & 15) as i32 - 8) as f32;
        o[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

fn q4_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (f16(b, 0), f16(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        o[j] = d * (qs[j] & 15) as f32 + m;
        o[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

fn q5_0(b: &[u8], o: &mut [f32]) {
    let d = f16(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let lo = (qs[j] & 15) as u32 | ((qh >> j) & 1) << 4;
        let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        o[j] = d * (lo as i32 - 16) as f32;
        o[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

fn q5_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (f16(b, 0), f16(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let lo = (qs[j] & 15) as u32 | ((qh >> j) & 1) << 4;
        let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        o[j] = d * lo as f32 + m;
        o[j + 16] = d * hi as f32 + m;
    }
}

fn q8_0(b: &[u8], o: &mut [f32]) {
    let d = f16(b, 0);
    for j in 0..32 {
        o[j] = (b[2 + j] as i8) as f32 * d;
    }
}

fn q2_k(b: &[u8], o: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let (d, dmin) = (f16(b, 80), f16(b, 82));
    for h in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                let e = h * 128 + s * 32 + l;
                let sc = scales[e / 16];
                let dl = d * (sc & 15) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let q = (qs[h * 32 + l] >> (2 * s)) & 3;
                o[e] = dl * q as f32 - ml;
            }
        }
    }
}

fn q3_k(b: &[u8], o: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d = f16(b, 108);
    let mut scales = [0f32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let lo = (sc[i % 8] >> (4 * (i / 8))) & 15;
        let hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = d * ((lo | hi << 4) as i32 - 32) as f32;
    }
    for h in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                let e = h * 128 + s * 32 + l;
                let ql = ((qs[h * 32 + l] >> (2 * s)) & 3) as i32;
                let j = h * 4 + s; // bit of hmask
                let hbit = ((hmask[l] >> j) & 1) as i32;
                let q = ql - if hbit == 0 { 4 } else { 0 };
                o[e] = scales[e / 16] * q as f32;
            }
        }
    }
}

/// 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block.
#[inline]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn q4_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16(b, 0), f16(b, 2));
    let sc = &b[4..16];
    let qs = &b[16..144];
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, sc);
        let dl = d * s as f32;
        let ml = dmin * m as f32;
        let (c, k) = (j / 2, j % 2);
        for l in 0..32 {
            let q = (qs[c * 32 + l] >> (4 * k)) & 15;
            o[j * 32 + l] = dl * q as f32 - ml;
        }
    }
}

fn q5_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16(b, 0), f16(b, 2));
    let sc = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, sc);
        let dl = d * s as f32;
        let ml = dmin * m as f32;
        let (c, k) = (j / 2, j % 2);
        for l in 0..32 {
            let q = ((qs[c * 32 + l] >> (4 * k)) & 15) | (((qh[l] >> j) & 1) << 4);
            o[j * 32 + l] = dl * q as f32 - ml;
        }
    }
}

fn q6_k(b: &[u8], o: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = f16(b, 208);
    for h in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                let e = h * 128 + s * 32 + l;
                let lo = (ql[h * 64 + (s % 2) * 32 + l] >> (4 * (s / 2))) & 15;
                let hi = (qh[h * 32 + l] >> (2 * s)) & 3;
                let q = (lo | hi << 4) as i32 - 32;
                let dl = d * (scales[e / 16] as i8) as f32;
                o[e] = dl * q as f32;
            }
        }
    }
}

/// ggml's doubled E2M1 table.
const MXFP4_KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(e−128)` (so `e = 255` gives `2^127`, not NaN).
#[inline]
fn e8m0_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000u32 << e)
    } else {
        f32::from_bits(((e as u32) - 1) << 23)
    }
}

fn mxfp4(b: &[u8], o: &mut [f32]) {
    let d = e8m0_half(b[0]);
    for j in 0..16 {
        o[j] = d * MXFP4_KVALUES[(b[1 + j] & 15) as usize] as f32;
        o[j + 16] = d * MXFP4_KVALUES[(b[1 + j] >> 4) as usize] as f32;
    }
}

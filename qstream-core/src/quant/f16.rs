//! Plain floating-point storage: F32, F16 and BF16 rows (little-endian arrays, no blocks).
//!
//! Every function here is total: lengths that do not match simply limit the work to the
//! shorter of the two buffers (callers size buffers with [`super::QuantType::row_bytes`]).

use half::{bf16, f16};

/// Write `src` as little-endian f32 into `dst` (`4 * src.len()` bytes).
pub fn quantize_row_f32(src: &[f32], dst: &mut [u8]) {
    for (v, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// Read `out.len()` little-endian f32 values from `src`.
pub fn dequantize_row_f32(src: &[u8], out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

/// Dot product of an f32 row with `x` (uses `x.len()` values).
pub fn dot_f32_ref(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (s, xv) in row.chunks_exact(4).zip(x) {
        acc += f32::from_le_bytes([s[0], s[1], s[2], s[3]]) * xv;
    }
    acc
}

/// Write `src` as little-endian IEEE half precision (round to nearest even) into `dst`.
pub fn quantize_row_f16(src: &[f32], dst: &mut [u8]) {
    for (v, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
    }
}

/// Read `out.len()` little-endian f16 values from `src`.
pub fn dequantize_row_f16(src: &[u8], out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16::from_le_bytes([s[0], s[1]]).to_f32();
    }
}

/// Dot product of an f16 row with `x` (uses `x.len()` values).
pub fn dot_f16_ref(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (s, xv) in row.chunks_exact(2).zip(x) {
        acc += f16::from_le_bytes([s[0], s[1]]).to_f32() * xv;
    }
    acc
}

/// Write `src` as little-endian bfloat16 (round to nearest even, NaN preserved) into `dst`.
pub fn quantize_row_bf16(src: &[f32], dst: &mut [u8]) {
    for (v, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
    }
}

/// Read `out.len()` little-endian bf16 values from `src`.
pub fn dequantize_row_bf16(src: &[u8], out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = bf16::from_le_bytes([s[0], s[1]]).to_f32();
    }
}

/// Dot product of a bf16 row with `x` (uses `x.len()` values).
pub fn dot_bf16_ref(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (s, xv) in row.chunks_exact(2).zip(x) {
        acc += bf16::from_le_bytes([s[0], s[1]]).to_f32() * xv;
    }
    acc
}

/// Round an f32 to the nearest f16 and back (the value a stored f16 scale will have).
#[inline]
pub fn round_f16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// Read a little-endian f16 at `b[0..2]` as f32.
#[inline]
pub fn read_f16(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Write `v` as a little-endian f16 into `b[0..2]`.
#[inline]
pub fn write_f16(b: &mut [u8], v: f32) {
    b[..2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_roundtrip_exact_bytes() {
        let src = [1.0f32, -2.5, 0.0];
        let mut b = [0u8; 12];
        quantize_row_f32(&src, &mut b);
        assert_eq!(&b[..4], &[0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(&b[4..8], &[0x00, 0x00, 0x20, 0xc0]);
        let mut out = [0f32; 3];
        dequantize_row_f32(&b, &mut out);
        assert_eq!(out, src);
        assert_eq!(dot_f32_ref(&b, &[1.0, 2.0]), 1.0 - 5.0);
    }

    #[test]
    fn f16_known_bits() {
        // 1.0 = 0x3C00, -2.0 = 0xC000, 65504 = 0x7BFF, 1/3 rounds to 0x3555.
        let src = [1.0f32, -2.0, 65504.0, 1.0 / 3.0];
        let mut b = [0u8; 8];
        quantize_row_f16(&src, &mut b);
        assert_eq!(b, [0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x55, 0x35]);
        let mut out = [0f32; 4];
        dequantize_row_f16(&b, &mut out);
        assert_eq!(out[..3], src[..3]);
        assert_eq!(out[3], 0.333_251_95);
        let x = [2.0f32, 1.0, 0.0];
        assert_eq!(dot_f16_ref(&b, &x), 2.0 - 2.0);
    }

    #[test]
    fn bf16_known_bits() {
        // 1.0 = 0x3F80, -0.5 = 0xBF00; 1.00390625 (=1+2^-8) ties to even → 1.0.
        let src = [1.0f32, -0.5, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0];
        let mut b = [0u8; 8];
        quantize_row_bf16(&src, &mut b);
        assert_eq!(b, [0x80, 0x3f, 0x00, 0xbf, 0x80, 0x3f, 0x82, 0x3f]);
        let mut out = [0f32; 4];
        dequantize_row_bf16(&b, &mut out);
        assert_eq!(out, [1.0, -0.5, 1.0, 1.015_625]);
        assert_eq!(dot_bf16_ref(&b, &[1.0, 4.0, 1.0, 0.0]), 0.0);
    }
}

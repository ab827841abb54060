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
    f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// f16 bits to f32, exactly as `half::f16::to_f32`, in a few inlined integer and float
/// operations (no call, no run-time feature test: it sits in per-weight loops such as the
/// outlier corrections). Normal and subnormal values: the exponent and mantissa bits moved
/// into f32 position are the value times 2⁻¹¹², so one exact multiply by 2¹¹² rescales
/// them; infinities and NaNs (quiet bit set, payload kept) take the f32 all-ones exponent.
#[inline]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let em = (h & 0x7fff) as u32;
    let bits = if em >= 0x7c00 {
        let nan = if em > 0x7c00 { 0x0040_0000 } else { 0 };
        0x7f80_0000 | ((em & 0x3ff) << 13) | nan
    } else {
        (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits()
    };
    f32::from_bits(bits | sign)
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
    fn f16_bits_to_f32_matches_half_on_all_inputs() {
        for h in 0..=u16::MAX {
            let want = f16::from_bits(h).to_f32();
            let got = f16_bits_to_f32(h);
            assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
        }
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

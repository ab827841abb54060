//! MXFP4 (OCP microscaling FP4): blocks of 32 E2M1 values sharing one E8M0 scale.
//!
//! Layout (17 bytes): `u8 e` (scale `2^(e−127)`; `e = 255` is NaN and never written), then
//! 16 bytes where byte `j` holds element `j` in its low nibble and element `j + 16` in its
//! high nibble. Nibble → value: [`FP4_VALUES`]; `x = FP4[n] · 2^(e−127)`.
//!
//! The quantizer picks the smallest `e` with `amax / 2^(e−127) ≤ 6` (the largest E2M1
//! magnitude), clamped to `0..=254`, and rounds each value to the nearest E2M1 value
//! (ties to the even mantissa, as OCP's round-to-nearest-even).

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 17;

/// E2M1 value of each nibble.
pub const FP4_VALUES: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// `2^(e−127)` as f32 (`e = 0` is the subnormal 2^−127); NaN for `e = 255`.
#[inline]
pub fn e8m0_to_f32(e: u8) -> f32 {
    match e {
        0 => f32::from_bits(0x0040_0000),
        255 => f32::NAN,
        e => f32::from_bits((e as u32) << 23),
    }
}

/// Nibble of the E2M1 value nearest to `v` (`v` already divided by the block scale).
#[inline]
fn nearest_fp4(v: f32) -> u8 {
    let a = v.abs();
    // Midpoints between consecutive magnitudes; ties go to the even index (even mantissa).
    let idx: u8 = if a <= 0.25 {
        0
    } else if a < 0.75 {
        1
    } else if a <= 1.25 {
        2
    } else if a < 1.75 {
        3
    } else if a <= 2.5 {
        4
    } else if a < 3.5 {
        5
    } else if a <= 5.0 {
        6
    } else {
        7
    };
    if v < 0.0 && idx != 0 {
        idx | 8
    } else {
        idx
    }
}

/// Shared exponent for a block whose largest magnitude is `amax`.
fn choose_e(amax: f32) -> u8 {
    if amax.is_nan() || amax <= 0.0 || !amax.is_finite() {
        return if amax.is_infinite() { 254 } else { 0 };
    }
    let mut e = ((amax / 6.0).log2().ceil() as i32 + 127).clamp(0, 254);
    // Correct any rounding of log2: smallest e with amax / 2^(e-127) <= 6.
    while e < 254 && amax / e8m0_to_f32(e as u8) > 6.0 {
        e += 1;
    }
    while e > 0 && amax / e8m0_to_f32((e - 1) as u8) <= 6.0 {
        e -= 1;
    }
    e as u8
}

/// Quantize one row (last block zero-padded) into `ceil(len/32) · 17` bytes of `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (bi, blk) in dst.chunks_exact_mut(BLOCK_BYTES).enumerate() {
        let start = (bi * BLOCK).min(src.len());
        let end = (start + BLOCK).min(src.len());
        let mut x = [0f32; BLOCK];
        x[..end - start].copy_from_slice(&src[start..end]);
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let e = choose_e(amax);
        let inv = 1.0 / e8m0_to_f32(e);
        blk[0] = e;
        for j in 0..16 {
            let lo = nearest_fp4(x[j] * inv);
            let hi = nearest_fp4(x[j + 16] * inv);
            blk[1 + j] = lo | (hi << 4);
        }
    }
}

/// Dequantize `out.len()` values (an `e = 255` block gives NaN).
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    for (o, blk) in out.chunks_mut(BLOCK).zip(src.chunks_exact(BLOCK_BYTES)) {
        let s = e8m0_to_f32(blk[0]);
        for (i, v) in o.iter_mut().enumerate() {
            let b = blk[1 + (i % 16)];
            let n = if i < 16 { b & 0x0F } else { b >> 4 };
            *v = FP4_VALUES[n as usize] * s;
        }
    }
}

/// Scalar reference dot product of an MXFP4 row with `x` (uses `x.len()` values).
pub fn dot_ref(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (xs, blk) in x.chunks(BLOCK).zip(row.chunks_exact(BLOCK_BYTES)) {
        let s = e8m0_to_f32(blk[0]);
        let mut sum = 0f32;
        for (i, xv) in xs.iter().enumerate() {
            let b = blk[1 + (i % 16)];
            let n = if i < 16 { b & 0x0F } else { b >> 4 };
            sum += FP4_VALUES[n as usize] * xv;
        }
        acc += s * sum;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        // amax = 12 → e = ceil(log2(2)) + 127 = 128, scale 2.
        let mut src = [0f32; 32];
        src[0] = 12.0; // 6 → nibble 7
        src[1] = -1.0; // -0.5 → nibble 9
        src[2] = 2.5; // 1.25 → tie → 1.0 (even) → nibble 2
        src[16] = -7.0; // -3.5 → tie → -4 (even) → nibble 14
        src[17] = 0.4; // 0.2 → 0
        src[18] = 5.0; // 2.5 → tie → 2 → nibble 4
        let mut b = [0u8; 17];
        quantize_row(&src, &mut b);
        assert_eq!(b[0], 128);
        assert_eq!(b[1], 7 | (14 << 4));
        assert_eq!(b[2], 9);
        assert_eq!(b[3], 2 | (4 << 4));
        assert!(b[4..].iter().all(|&v| v == 0));
        let mut out = [0f32; 32];
        dequantize_row(&b, &mut out);
        assert_eq!(out[..3], [12.0, -1.0, 2.0]);
        assert_eq!(out[16..19], [-8.0, 0.0, 4.0]);
    }

    #[test]
    fn scale_edges() {
        assert_eq!(choose_e(6.0), 127);
        assert_eq!(choose_e(6.000_001), 128);
        assert_eq!(choose_e(3.0), 126);
        assert_eq!(choose_e(0.0), 0);
        assert_eq!(choose_e(f32::MAX), 253);
        assert_eq!(choose_e(f32::INFINITY), 254);
        assert_eq!(choose_e(1e-45), 0);
        let mut out = [0f32; 2];
        let mut blk = [0x11u8; 17];
        blk[0] = 255;
        dequantize_row(&blk, &mut out);
        assert!(out[0].is_nan());
        blk[0] = 0;
        dequantize_row(&blk, &mut out);
        assert_eq!(out[0], 0.5 * 2f32.powi(-127));
    }
}

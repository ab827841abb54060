//! Q8: 8-bit symmetric blocks of 32 (bit-identical to GGUF `Q8_0`).
//!
//! Block layout (34 bytes): `f16 d` then 32 × `i8 q`; `x = d · q`.
//! The quantizer is ggml's `quantize_row_q8_0_ref`: `d = amax / 127`,
//! `q = roundf(x · (1/d))` (half away from zero), with `1/d` taken from the f32 `d`.

use super::float::{read_f16, write_f16};

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 34;

/// Quantize one row (`src.len()` values, last block zero-padded) into `dst`
/// (`ceil(len/32) · 34` bytes).
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (bi, blk) in dst.chunks_exact_mut(BLOCK_BYTES).enumerate() {
        let start = bi * BLOCK;
        if start >= src.len() && !src.is_empty() {
            break;
        }
        let mut x = [0f32; BLOCK];
        let end = (start + BLOCK).min(src.len());
        if start < end {
            x[..end - start].copy_from_slice(&src[start..end]);
        }
        quantize_block(&x, blk);
    }
}

/// Quantize exactly one block of 32 values into 34 bytes.
pub fn quantize_block(x: &[f32; BLOCK], blk: &mut [u8]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(&mut blk[0..2], d);
    for (q, v) in blk[2..2 + BLOCK].iter_mut().zip(x) {
        *q = ((v * id).round() as i8) as u8;
    }
}

/// Dequantize `out.len()` values from `src`.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    for (o, blk) in out.chunks_mut(BLOCK).zip(src.chunks_exact(BLOCK_BYTES)) {
        let d = read_f16(blk);
        for (v, q) in o.iter_mut().zip(&blk[2..]) {
            *v = d * (*q as i8) as f32;
        }
    }
}

/// Scalar reference dot product of a Q8 row with `x` (uses `x.len()` values).
pub fn dot_ref(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (xs, blk) in x.chunks(BLOCK).zip(row.chunks_exact(BLOCK_BYTES)) {
        let d = read_f16(blk);
        let mut s = 0f32;
        for (xv, q) in xs.iter().zip(&blk[2..]) {
            s += (*q as i8) as f32 * xv;
        }
        acc += d * s;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        // amax = 127 → d = 1.0 (f16 0x3C00), q = round(x): 2.5 → 3, -2.5 → -3 (away from zero).
        let mut src = [0f32; 32];
        src[0] = 127.0;
        src[1] = -127.0;
        src[2] = 2.5;
        src[3] = -2.5;
        src[4] = 0.49;
        let mut b = [0u8; 34];
        quantize_row(&src, &mut b);
        assert_eq!(&b[..7], &[0x00, 0x3c, 127, 0x81, 3, 0xfd, 0]);
        assert!(b[7..].iter().all(|&v| v == 0));
        let mut out = [0f32; 5];
        dequantize_row(&b, &mut out);
        assert_eq!(out, [127.0, -127.0, 3.0, -3.0, 0.0]);
    }

    #[test]
    fn zero_block_and_padding() {
        let src = [0f32; 3];
        let mut b = [0xAAu8; 34];
        quantize_row(&src, &mut b);
        assert!(b.iter().all(|&v| v == 0));
        // A 33-value row is 2 blocks; the second holds one value, padded with zeros.
        let src: Vec<f32> = (0..33).map(|i| i as f32 - 16.0).collect();
        let mut b = vec![0u8; 68];
        quantize_row(&src, &mut b);
        assert_eq!(
            read_f16(&b[34..]),
            super::super::float::round_f16(16.0 / 127.0)
        );
        assert_eq!(b[36] as i8, 127);
        assert!(b[37..].iter().all(|&v| v == 0));
    }
}

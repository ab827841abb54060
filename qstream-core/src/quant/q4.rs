//! Q4 (asymmetric, `x = d·q + m`) and Q4Sym (symmetric, `x = d·(q − 8)`), blocks of
//! 32/64/128/256 values.
//!
//! Layouts (little-endian):
//! - Q4: `f16 d, f16 m`, then `B/2` nibble bytes (`4 + B/2` bytes). B = 32 is GGUF `Q4_1`.
//! - Q4Sym: `f16 d`, then `B/2` nibble bytes (`2 + B/2` bytes). B = 32 is GGUF `Q4_0`.
//!
//! Nibble bytes are `B/32` groups of 16 bytes; in group `g`, byte `j` holds value
//! `32g + j` in its low nibble and value `32g + j + 16` in its high nibble.
//!
//! [`quantize_row`]/[`quantize_row_sym`] use the error-minimising search
//! ([`super::search`]); [`quantize_row_minmax`]/[`quantize_row_sym_minmax`] are ggml's
//! reference rules and produce bytes identical to ggml/gguf-py for B = 32.

use super::float::{read_f16, write_f16};
use super::search;

/// Bytes of one Q4 block of `block` values.
pub const fn block_bytes(block: usize) -> usize {
    4 + block / 2
}

/// Bytes of one Q4Sym block of `block` values.
pub const fn block_bytes_sym(block: usize) -> usize {
    2 + block / 2
}

/// Pack `q.len()` (a multiple of 32) 4-bit levels into `q.len()/2` bytes.
pub fn pack_nibbles(q: &[u8], out: &mut [u8]) {
    for (qs, os) in q.chunks_exact(32).zip(out.chunks_exact_mut(16)) {
        for j in 0..16 {
            os[j] = (qs[j] & 0x0F) | ((qs[j + 16] & 0x0F) << 4);
        }
    }
}

/// Level of value `i` of a block from its nibble bytes.
#[inline]
pub fn nibble(qs: &[u8], i: usize) -> u8 {
    let b = qs[(i / 32) * 16 + (i % 16)];
    if i % 32 < 16 {
        b & 0x0F
    } else {
        b >> 4
    }
}

/// Unpack the first `out.len()` levels of a block.
#[inline]
fn unpack(qs: &[u8], out: &mut [u8]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = nibble(qs, i);
    }
}

/// Quantize one row with the error-minimising search (or plain min/max when
/// [`search::set_enabled`]`(false)`). `importance` is per value of the row (length `src.len()`).
/// `dst` holds `ceil(len/block)` blocks of [`block_bytes`].
pub fn quantize_row(block: usize, src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    search::quantize_row_asym(
        block,
        src,
        importance,
        15,
        search::enabled(),
        block_bytes(block),
        dst,
        pack_nibbles,
    );
}

/// Quantize one row with ggml's plain min/max rule (GGUF `Q4_1`-identical for block 32).
pub fn quantize_row_minmax(block: usize, src: &[f32], dst: &mut [u8]) {
    search::quantize_row_asym(
        block,
        src,
        None,
        15,
        false,
        block_bytes(block),
        dst,
        pack_nibbles,
    );
}

fn quantize_row_sym_impl(
    block: usize,
    src: &[f32],
    importance: Option<&[f32]>,
    searched: bool,
    dst: &mut [u8],
) {
    let block = block.clamp(32, search::MAX_BLOCK);
    let mut xbuf = [0f32; search::MAX_BLOCK];
    let mut w = [0f32; search::MAX_BLOCK];
    let mut q = [0u8; search::MAX_BLOCK];
    for (bi, blk) in dst.chunks_exact_mut(block_bytes_sym(block)).enumerate() {
        let start = (bi * block).min(src.len());
        let end = (start + block).min(src.len());
        let len = end - start;
        // A whole block is read in place; the last, partial one is zero-padded.
        let x: &[f32] = if len == block {
            &src[start..end]
        } else {
            xbuf[..len].copy_from_slice(&src[start..end]);
            xbuf[len..block].fill(0.0);
            &xbuf[..block]
        };
        let d = if searched {
            // Without importance a whole block has all weights 1: unweighted search
            // (same result as a buffer of ones, which is not built).
            let wb = if importance.is_none() && len == block {
                None
            } else {
                for (i, wi) in w[..block].iter_mut().enumerate() {
                    *wi = if i < len {
                        importance.map_or(1.0, |imp| imp.get(start + i).copied().unwrap_or(1.0))
                    } else {
                        0.0
                    };
                }
                Some(&w[..block])
            };
            search::search_sym(x, wb, 2, 1, &mut q[..block])
        } else {
            search::minmax_sym(x, &mut q[..block])
        };
        write_f16(&mut blk[0..2], d);
        pack_nibbles(&q[..block], &mut blk[2..]);
    }
}

/// Quantize one row to Q4Sym with the error-minimising search (or plain when disabled).
pub fn quantize_row_sym(block: usize, src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    quantize_row_sym_impl(block, src, importance, search::enabled(), dst);
}

/// Quantize one row to Q4Sym with ggml's plain rule (GGUF `Q4_0`-identical for block 32).
pub fn quantize_row_sym_minmax(block: usize, src: &[f32], dst: &mut [u8]) {
    quantize_row_sym_impl(block, src, None, false, dst);
}

/// Dequantize `out.len()` values of a Q4 row.
pub fn dequantize_row(block: usize, src: &[u8], out: &mut [f32]) {
    let block = block.max(32);
    let mut q = [0u8; search::MAX_BLOCK];
    for (o, blk) in out
        .chunks_mut(block)
        .zip(src.chunks_exact(block_bytes(block)))
    {
        let (d, m) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        unpack(&blk[4..], &mut q[..o.len()]);
        for (v, l) in o.iter_mut().zip(&q) {
            *v = d * *l as f32 + m;
        }
    }
}

/// Dequantize `out.len()` values of a Q4Sym row.
pub fn dequantize_row_sym(block: usize, src: &[u8], out: &mut [f32]) {
    let block = block.max(32);
    let mut q = [0u8; search::MAX_BLOCK];
    for (o, blk) in out
        .chunks_mut(block)
        .zip(src.chunks_exact(block_bytes_sym(block)))
    {
        let d = read_f16(&blk[0..2]);
        unpack(&blk[2..], &mut q[..o.len()]);
        for (v, l) in o.iter_mut().zip(&q) {
            *v = d * (*l as i32 - 8) as f32;
        }
    }
}

/// Value `i` of a Q4 row (`None` if the row is too short).
pub fn dequantize_one(block: usize, row: &[u8], i: usize) -> Option<f32> {
    let bb = block_bytes(block);
    let blk = row.get((i / block) * bb..(i / block + 1) * bb)?;
    Some(read_f16(&blk[0..2]) * nibble(&blk[4..], i % block) as f32 + read_f16(&blk[2..4]))
}

/// Scalar reference dot product of a Q4 row with `x` (uses `x.len()` values):
/// per block `d·Σ q·x + m·Σ x`.
pub fn dot_ref(block: usize, row: &[u8], x: &[f32]) -> f32 {
    let block = block.max(32);
    let mut acc = 0f32;
    for (xs, blk) in x.chunks(block).zip(row.chunks_exact(block_bytes(block))) {
        let (d, m) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        let (mut sqx, mut sx) = (0f32, 0f32);
        for (i, xv) in xs.iter().enumerate() {
            sqx += nibble(&blk[4..], i) as f32 * xv;
            sx += xv;
        }
        acc += d * sqx + m * sx;
    }
    acc
}

/// Scalar reference dot product of a Q4Sym row with `x` (uses `x.len()` values).
pub fn dot_sym_ref(block: usize, row: &[u8], x: &[f32]) -> f32 {
    let block = block.max(32);
    let mut acc = 0f32;
    for (xs, blk) in x
        .chunks(block)
        .zip(row.chunks_exact(block_bytes_sym(block)))
    {
        let d = read_f16(&blk[0..2]);
        let mut s = 0f32;
        for (i, xv) in xs.iter().enumerate() {
            s += (nibble(&blk[2..], i) as i32 - 8) as f32 * xv;
        }
        acc += d * s;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_hand_computed_block() {
        // x_i = i/2 for i in 0..32 → min 0, max 15.5, d = 15.5/15, q_i = trunc(i/2 · 15/15.5 + 0.5).
        let src: Vec<f32> = (0..32).map(|i| i as f32 * 0.5).collect();
        let mut b = [0u8; 20];
        quantize_row_minmax(32, &src, &mut b);
        // f16(15.5/15 = 1.0333..) = 0x3C22 (1.033203125); m = 0.
        assert_eq!(&b[..4], &[0x22, 0x3c, 0x00, 0x00]);
        let q: Vec<u8> = (0..32)
            .map(|i| ((i as f32 * 0.5) * (15.0 / 15.5) + 0.5) as u8)
            .collect();
        assert_eq!(q[..4], [0, 0, 1, 1]);
        assert_eq!(q[31], 15);
        for j in 0..16 {
            assert_eq!(b[4 + j], q[j] | (q[j + 16] << 4), "byte {j}");
        }
        let mut out = [0f32; 32];
        dequantize_row(32, &b, &mut out);
        for i in 0..32 {
            assert_eq!(out[i], 1.033_203_1 * q[i] as f32);
        }
    }

    #[test]
    fn q4_layout_block64() {
        // Values chosen so that level == i % 16, with d = 1, m = 0: check the group layout.
        let mut src = [0f32; 64];
        for (i, v) in src.iter_mut().enumerate() {
            *v = ((i * 7) % 16) as f32;
        }
        src[0] = 0.0;
        src[1] = 15.0;
        let mut b = [0u8; 36];
        quantize_row_minmax(64, &src, &mut b);
        assert_eq!(&b[..4], &[0x00, 0x3c, 0x00, 0x00]);
        // Group 1 (values 32..64) starts at byte 4 + 16; byte j = v[32+j] | v[48+j] << 4.
        for g in 0..2 {
            for j in 0..16 {
                let lo = src[32 * g + j] as u8;
                let hi = src[32 * g + j + 16] as u8;
                assert_eq!(b[4 + 16 * g + j], lo | (hi << 4));
            }
        }
        for (i, v) in src.iter().enumerate() {
            assert_eq!(dequantize_one(64, &b, i), Some(*v));
        }
        assert_eq!(dequantize_one(64, &b, 64), None);
    }

    #[test]
    fn q4sym_hand_computed_block() {
        // max |x| = -4 (negative) → d = 0.5; q = min(15, trunc(x/0.5 + 8.5)).
        let mut src = [0f32; 32];
        src[0] = -4.0;
        src[1] = 3.5;
        src[2] = 1.2; // 2.4 + 8.5 = 10.9 → 10
        src[16] = 3.9; // 7.8 + 8.5 = 16.3 → 15 (clamped)
        src[17] = -0.3; // -0.6 + 8.5 = 7.9 → 7
        let mut b = [0u8; 18];
        quantize_row_sym_minmax(32, &src, &mut b);
        assert_eq!(&b[..2], &[0x00, 0x38]); // f16 0.5
        assert_eq!(b[2], 15 << 4); // value 0 → level 0, value 16 → 15
        assert_eq!(b[3], 15 | (7 << 4));
        assert_eq!(b[4], 10 | (8 << 4));
        assert!(b[5..].iter().all(|&v| v == 0x88));
        let mut out = [0f32; 32];
        dequantize_row_sym(32, &b, &mut out);
        assert_eq!(out[..3], [-4.0, 3.5, 1.0]);
        assert_eq!(out[16..18], [3.5, -0.5]);
        assert_eq!(out[3], 0.0);
    }

    #[test]
    fn searched_sym_is_not_worse() {
        let src: Vec<f32> = (0..256)
            .map(|i| ((i as f32) * 0.37).sin() * (1.0 + (i % 7) as f32))
            .collect();
        for block in [32, 64, 128, 256] {
            let bb = block_bytes_sym(block) * (256 / block);
            let (mut a, mut s) = (vec![0u8; bb], vec![0u8; bb]);
            quantize_row_sym_minmax(block, &src, &mut a);
            quantize_row_sym_impl(block, &src, None, true, &mut s);
            let (mut oa, mut os) = (vec![0f32; 256], vec![0f32; 256]);
            dequantize_row_sym(block, &a, &mut oa);
            dequantize_row_sym(block, &s, &mut os);
            let ea: f32 = src.iter().zip(&oa).map(|(x, y)| (x - y).powi(2)).sum();
            let es: f32 = src.iter().zip(&os).map(|(x, y)| (x - y).powi(2)).sum();
            assert!(es < ea, "block {block}: searched {es} vs plain {ea}");
        }
    }
}

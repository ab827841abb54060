//! Q2: 2-bit asymmetric blocks (`x = d·q + m`, q ∈ 0..=3) of 32/64/128/256 values.
//!
//! Layout (`4 + B/4` bytes): `f16 d, f16 m`, then `B/4` bytes of 2-bit levels: per
//! 32-value group 8 bytes; byte `j` holds values `j, j+8, j+16, j+24` of the group at bit
//! offsets 0, 2, 4, 6 (the same low-bit layout as [`super::q3`]).

use super::float::read_f16;
use super::search;

/// Bytes of one Q2 block of `block` values.
pub const fn block_bytes(block: usize) -> usize {
    4 + block / 4
}

/// Pack `q.len()` (a multiple of 32) levels' low 2 bits into `q.len()/4` bytes.
pub fn pack_low2(q: &[u8], out: &mut [u8]) {
    for (qs, os) in q.chunks_exact(32).zip(out.chunks_exact_mut(8)) {
        for j in 0..8 {
            os[j] = (qs[j] & 3)
                | ((qs[j + 8] & 3) << 2)
                | ((qs[j + 16] & 3) << 4)
                | ((qs[j + 24] & 3) << 6);
        }
    }
}

/// Low 2 bits of value `i` of a block from its low-bit bytes.
#[inline]
pub fn low2(lows: &[u8], i: usize) -> u8 {
    let k = i % 32;
    (lows[(i / 32) * 8 + (k % 8)] >> (2 * (k / 8))) & 3
}

/// Quantize one row with the error-minimising search (or plain min/max when
/// [`search::set_enabled`]`(false)`). `importance` is per value of the row.
pub fn quantize_row(block: usize, src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    search::quantize_row_asym(
        block,
        src,
        importance,
        3,
        search::enabled(),
        block_bytes(block),
        dst,
        pack_low2,
    );
}

/// Quantize one row with the plain min/max rule (`d = (max−min)/3`, `m = min`).
pub fn quantize_row_minmax(block: usize, src: &[f32], dst: &mut [u8]) {
    search::quantize_row_asym(
        block,
        src,
        None,
        3,
        false,
        block_bytes(block),
        dst,
        pack_low2,
    );
}

/// Dequantize `out.len()` values of a Q2 row.
pub fn dequantize_row(block: usize, src: &[u8], out: &mut [f32]) {
    let block = block.max(32);
    for (o, blk) in out
        .chunks_mut(block)
        .zip(src.chunks_exact(block_bytes(block)))
    {
        let (d, m) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        for (i, v) in o.iter_mut().enumerate() {
            *v = d * low2(&blk[4..], i) as f32 + m;
        }
    }
}

/// Value `i` of a Q2 row (`None` if the row is too short).
pub fn dequantize_one(block: usize, row: &[u8], i: usize) -> Option<f32> {
    let bb = block_bytes(block);
    let blk = row.get((i / block) * bb..(i / block + 1) * bb)?;
    Some(read_f16(&blk[0..2]) * low2(&blk[4..], i % block) as f32 + read_f16(&blk[2..4]))
}

/// Scalar reference dot product of a Q2 row with `x` (uses `x.len()` values).
pub fn dot_ref(block: usize, row: &[u8], x: &[f32]) -> f32 {
    let block = block.max(32);
    let mut acc = 0f32;
    for (xs, blk) in x.chunks(block).zip(row.chunks_exact(block_bytes(block))) {
        let (d, m) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        let (mut sqx, mut sx) = (0f32, 0f32);
        for (i, xv) in xs.iter().enumerate() {
            sqx += low2(&blk[4..], i) as f32 * xv;
            sx += xv;
        }
        acc += d * sqx + m * sx;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        // Values i % 4 with one value per level extreme: min 0, max 3 → d = 1, m = 0, q = x.
        let src: Vec<f32> = (0..32).map(|i| ((i / 8) % 4) as f32).collect();
        let mut b = [0u8; 12];
        quantize_row_minmax(32, &src, &mut b);
        assert_eq!(&b[..4], &[0x00, 0x3c, 0x00, 0x00]);
        // byte j holds values j (0), j+8 (1), j+16 (2), j+24 (3): 0 | 1<<2 | 2<<4 | 3<<6 = 0xE4.
        assert!(b[4..].iter().all(|&v| v == 0xE4));
        let mut out = [0f32; 32];
        dequantize_row(32, &b, &mut out);
        assert_eq!(out.to_vec(), src);
    }

    #[test]
    fn offset_and_padding() {
        // 5 values (block padded with zeros): min -1, max 3.5 → d = 1.5, m = -1.
        let src = [-1.0f32, -0.4, 0.9, 2.0, 3.5];
        let mut b = [0u8; 12];
        quantize_row_minmax(32, &src, &mut b);
        // f16(1.5) = 0x3E00, f16(-1) = 0xBC00.
        assert_eq!(&b[..4], &[0x00, 0x3e, 0x00, 0xbc]);
        // q = trunc((x+1)/1.5 + 0.5): -1→0, -0.4→0 (0.9), 0.9→1 (1.77), 2→2 (2.5), 3.5→3 (3.5).
        // The zero padding is level 1 (trunc(1/1.5 + 0.5) = 1).
        let q = [0u8, 0, 1, 2, 3, 1, 1];
        for (i, &l) in q.iter().enumerate() {
            assert_eq!(low2(&b[4..], i), l);
        }
        let mut out = [0f32; 5];
        dequantize_row(32, &b, &mut out);
        assert_eq!(out, [-1.0, -1.0, 0.5, 2.0, 3.5]);
        assert_eq!(dequantize_one(32, &b, 4), Some(3.5));
        assert_eq!(dequantize_one(32, &b, 32), None);
    }
}

//! Q3: 3-bit asymmetric blocks (`x = d·q + m`, q ∈ 0..=7) of 32/64/128/256 values.
//!
//! Layout (`4 + 3B/8` bytes): `f16 d, f16 m`, then `B/4` bytes of low 2 bits (per 32-value
//! group 8 bytes; byte `j` holds values `j, j+8, j+16, j+24` at bit offsets 0, 2, 4, 6),
//! then `B/8` bytes of high bits (per 32-value group a little-endian `u32` whose bit `i`
//! is bit 2 of value `i` of the group).

use super::float::read_f16;
use super::q2::{low2, pack_low2};
use super::search;

/// Bytes of one Q3 block of `block` values.
pub const fn block_bytes(block: usize) -> usize {
    4 + 3 * block / 8
}

/// Pack `q.len()` (a multiple of 32) 3-bit levels: `q.len()/4` low-bit bytes then
/// `q.len()/8` high-bit bytes.
pub fn pack3(q: &[u8], out: &mut [u8]) {
    let nlow = q.len() / 4;
    let (lows, highs) = out.split_at_mut(nlow.min(out.len()));
    pack_low2(q, lows);
    for (qs, hs) in q.chunks_exact(32).zip(highs.chunks_exact_mut(4)) {
        let mut bits = 0u32;
        for (i, l) in qs.iter().enumerate() {
            bits |= (((l >> 2) & 1) as u32) << i;
        }
        hs.copy_from_slice(&bits.to_le_bytes());
    }
}

/// Level of value `i` of a block from its payload (`block/4` low bytes then high bytes).
#[inline]
pub fn level(payload: &[u8], block: usize, i: usize) -> u8 {
    let h = &payload[block / 4..];
    let hb = (h[(i / 32) * 4 + (i % 32) / 8] >> (i % 8)) & 1;
    low2(payload, i) | (hb << 2)
}

/// Quantize one row with the error-minimising search (or plain min/max when
/// [`search::set_enabled`]`(false)`). `importance` is per value of the row.
pub fn quantize_row(block: usize, src: &[f32], importance: Option<&[f32]>, dst: &mut [u8]) {
    search::quantize_row_asym(
        block,
        src,
        importance,
        7,
        search::enabled(),
        block_bytes(block),
        dst,
        pack3,
    );
}

/// Quantize one row with the plain min/max rule (`d = (max−min)/7`, `m = min`).
pub fn quantize_row_minmax(block: usize, src: &[f32], dst: &mut [u8]) {
    search::quantize_row_asym(block, src, None, 7, false, block_bytes(block), dst, pack3);
}

/// Dequantize `out.len()` values of a Q3 row.
pub fn dequantize_row(block: usize, src: &[u8], out: &mut [f32]) {
    let block = block.max(32);
    for (o, blk) in out
        .chunks_mut(block)
        .zip(src.chunks_exact(block_bytes(block)))
    {
        let (d, m) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        for (i, v) in o.iter_mut().enumerate() {
            *v = d * level(&blk[4..], block, i) as f32 + m;
        }
    }
}

/// Value `i` of a Q3 row (`None` if the row is too short).
pub fn dequantize_one(block: usize, row: &[u8], i: usize) -> Option<f32> {
    let bb = block_bytes(block);
    let blk = row.get((i / block) * bb..(i / block + 1) * bb)?;
    Some(read_f16(&blk[0..2]) * level(&blk[4..], block, i % block) as f32 + read_f16(&blk[2..4]))
}

/// Scalar reference dot product of a Q3 row with `x` (uses `x.len()` values).
pub fn dot_ref(block: usize, row: &[u8], x: &[f32]) -> f32 {
    let block = block.max(32);
    let mut acc = 0f32;
    for (xs, blk) in x.chunks(block).zip(row.chunks_exact(block_bytes(block))) {
        let (d, m) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        let (mut sqx, mut sx) = (0f32, 0f32);
        for (i, xv) in xs.iter().enumerate() {
            sqx += level(&blk[4..], block, i) as f32 * xv;
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
        // Values (i % 8): min 0, max 7 → d = 1, m = 0, q = x.
        let src: Vec<f32> = (0..32).map(|i| (i % 8) as f32).collect();
        let mut b = [0u8; 16];
        quantize_row_minmax(32, &src, &mut b);
        assert_eq!(&b[..4], &[0x00, 0x3c, 0x00, 0x00]);
        // Low byte j: value j, j+8, j+16, j+24 all have level j → low bits (j&3) repeated.
        for j in 0..8u8 {
            let l = j & 3;
            assert_eq!(
                b[4 + j as usize],
                l | (l << 2) | (l << 4) | (l << 6),
                "low byte {j}"
            );
        }
        // High bit i set iff (i % 8) >= 4: 0xF0 in every byte.
        assert_eq!(&b[12..16], &[0xF0; 4]);
        let mut out = [0f32; 32];
        dequantize_row(32, &b, &mut out);
        assert_eq!(out.to_vec(), src);
    }

    #[test]
    fn block64_layout() {
        // Second group all at level 7, first group at 0; min 0 max 7.
        let mut src = [0f32; 64];
        src[32..].fill(7.0);
        let mut b = [0u8; 28];
        quantize_row_minmax(64, &src, &mut b);
        assert_eq!(&b[..4], &[0x00, 0x3c, 0x00, 0x00]);
        assert_eq!(&b[4..12], &[0; 8]);
        assert_eq!(&b[12..20], &[0xFF; 8]);
        assert_eq!(&b[20..24], &[0; 4]);
        assert_eq!(&b[24..28], &[0xFF; 4]);
        assert_eq!(dequantize_one(64, &b, 40), Some(7.0));
        assert_eq!(dequantize_one(64, &b, 31), Some(0.0));
    }
}

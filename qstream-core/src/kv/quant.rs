//! Block codecs of the quantized KV types and their scalar reference kernels.
//!
//! A head vector of `head_dim` values (a multiple of [`BLOCK`]) is stored as
//! `head_dim / 32` blocks of 32 values, each a little-endian header followed by codes:
//!
//! | codec   | block bytes | header            | codes                                                      |
//! |---------|-------------|-------------------|------------------------------------------------------------|
//! | `q8`    | 34          | `d: f16`          | 32 × i8 `c`, `x ≈ d·c`, `c ∈ [−127, 127]`                  |
//! | `q4`    | 20          | `d: f16, m: f16`  | 16 bytes, byte `j` = `c[j] ∣ c[j+16] << 4`; `x ≈ d·c + m`  |
//! | `q3`    | 16          | `d: f16, m: f16`  | 8 bytes low 2 bits as `q2`, then a u32 of the high bits (bit `i` = `c[i] >> 2`) |
//! | `q2`    | 12          | `d: f16, m: f16`  | 8 bytes, byte `j` = `c[j] ∣ c[j+8]<<2 ∣ c[j+16]<<4 ∣ c[j+24]<<6` |
//! | `qins8` | 34          | `s: f16`          | 32 bytes, sign bit 7 + 7-bit inverse-magnitude code `k`: `x = ±s·2^(−k/16)`, `k = 127` is 0 |
//!
//! `q8` is symmetric (`d = max|x| / 127`); `q4`/`q3`/`q2` are asymmetric with unsigned
//! codes, `(d, m)` starting from min/max and refined by least squares on the codes. `qins8` is a logarithmic code
//! after IntLLM's QINS: the code grows as the magnitude shrinks, so small values keep
//! about 4 % relative precision instead of a fixed absolute step; it is decoded through a
//! 256-entry table ([`qins8_lut`]).
//!
//! Integer-domain attention quantizes the query once per head ([`QueryQ8`]: symmetric
//! 8-bit per block, an f32 scale and the sum of the codes per block). A score is then
//! `Σ_b d_q[b]·(d_k[b]·Σ_j q_j·c_j + m_k[b]·Σ_j q_j)`, the inner sums in integers.

use std::sync::OnceLock;

use half::f16;

/// Values per quantization block (along `head_dim`).
pub const BLOCK: usize = 32;

/// Largest `head_dim` of a quantized KV type (the query is quantized into stack buffers).
pub const MAX_HEAD_DIM: usize = 512;

/// A block codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Symmetric 8-bit.
    Q8,
    /// Asymmetric 4-bit.
    Q4,
    /// Asymmetric 3-bit.
    Q3,
    /// Asymmetric 2-bit.
    Q2,
    /// Sign + 7-bit logarithmic magnitude with a per-block scale.
    Qins8,
}

impl Codec {
    /// Bytes of one block of [`BLOCK`] values.
    pub const fn block_bytes(self) -> usize {
        match self {
            Codec::Q8 | Codec::Qins8 => 34,
            Codec::Q4 => 20,
            Codec::Q3 => 16,
            Codec::Q2 => 12,
        }
    }

    /// Code width in bits.
    pub const fn bits(self) -> u32 {
        match self {
            Codec::Q8 | Codec::Qins8 => 8,
            Codec::Q4 => 4,
            Codec::Q3 => 3,
            Codec::Q2 => 2,
        }
    }
}

#[inline]
fn rd16(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[inline]
fn wr16(b: &mut [u8], at: usize, v: f32) -> f32 {
    let h = f16::from_f32(v);
    b[at..at + 2].copy_from_slice(&h.to_bits().to_le_bytes());
    h.to_f32()
}

/// The `qins8` decode table: `lut[code]` for a unit scale.
pub fn qins8_lut() -> &'static [f32; 256] {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut t = [0f32; 256];
        for (c, v) in t.iter_mut().enumerate() {
            let k = (c & 0x7f) as i32;
            let mag = if k == 127 {
                0.0
            } else {
                (-(k as f32) / 16.0).exp2()
            };
            *v = if c & 0x80 != 0 { -mag } else { mag };
        }
        t
    })
}

fn qins8_code(r: f32) -> u8 {
    // r = x / s, |r| ≤ 1 (up to f16 rounding of s).
    let sign = if r < 0.0 { 0x80u8 } else { 0 };
    let a = r.abs();
    if a == 0.0 || !a.is_finite() {
        return sign | 127;
    }
    let k = (-16.0 * a.log2()).round();
    let k = if k < 0.0 { 0.0 } else { k };
    if k > 126.0 {
        // Below the smallest magnitude: zero or the smallest, whichever is nearer.
        let smallest = (-126f32 / 16.0).exp2();
        return sign | if a < smallest / 2.0 { 127 } else { 126 };
    }
    sign | k as u8
}

/// Encode `x` (a multiple of [`BLOCK`] values) into `out` (`x.len() / 32` blocks).
pub fn encode(codec: Codec, x: &[f32], out: &mut [u8]) {
    let bb = codec.block_bytes();
    debug_assert!(x.len().is_multiple_of(BLOCK) && out.len() == x.len() / BLOCK * bb);
    for (xs, o) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(bb)) {
        match codec {
            Codec::Q8 => {
                let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = wr16(o, 0, amax / 127.0);
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                for (c, v) in o[2..].iter_mut().zip(xs) {
                    *c = ((v * inv).round().clamp(-127.0, 127.0) as i8) as u8;
                }
            }
            Codec::Qins8 => {
                let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                let s = wr16(o, 0, amax);
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                for (c, v) in o[2..].iter_mut().zip(xs) {
                    *c = qins8_code(v * inv);
                }
            }
            Codec::Q4 | Codec::Q3 | Codec::Q2 => {
                let qmax = ((1u32 << codec.bits()) - 1) as f32;
                let mut c = [0u8; BLOCK];
                let (d, m) = fit_asym(xs, qmax, &mut c);
                wr16(o, 0, d);
                wr16(o, 2, m);
                pack(codec, &c, &mut o[4..]);
            }
        }
    }
}

/// f16 rounding of `v`.
#[inline]
fn r16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// Asymmetric fit of one block to codes `0..=qmax`: start from min/max, then a few rounds
/// of least-squares refits of `(d, m)` on the codes (as llama.cpp's k-quants do), keeping
/// the fit with the smallest squared error. `d` and `m` are returned f16-rounded, and the
/// codes are computed with the rounded values.
fn fit_asym(xs: &[f32], qmax: f32, c: &mut [u8; BLOCK]) -> (f32, f32) {
    let lo = xs.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut d, mut m) = ((hi - lo).max(0.0) / qmax, lo);
    let mut best = (f32::INFINITY, 0f32, r16(lo));
    let mut tmp = [0u8; BLOCK];
    for _ in 0..4 {
        let (d16, m16) = (r16(d), r16(m));
        let inv = if d16 > 0.0 { 1.0 / d16 } else { 0.0 };
        let mut err = 0f32;
        let (mut sc, mut scc, mut scx, mut sx) = (0f32, 0f32, 0f32, 0f32);
        for (t, x) in tmp.iter_mut().zip(xs) {
            let q = ((x - m16) * inv).round().clamp(0.0, qmax);
            *t = q as u8;
            let e = x - (d16 * q + m16);
            err += e * e;
            sc += q;
            scc += q * q;
            scx += q * x;
            sx += x;
        }
        if err < best.0 {
            best = (err, d16, m16);
            c.copy_from_slice(&tmp);
        }
        let n = BLOCK as f32;
        let den = n * scc - sc * sc;
        if d16 <= 0.0 || den <= 0.0 {
            break;
        }
        let nd = (n * scx - sc * sx) / den;
        if !nd.is_finite() || nd <= 0.0 {
            break;
        }
        d = nd;
        m = (sx - nd * sc) / n;
    }
    if best.0 == f32::INFINITY {
        c.fill(0);
    }
    (best.1, best.2)
}

fn pack(codec: Codec, c: &[u8; BLOCK], o: &mut [u8]) {
    match codec {
        Codec::Q4 => {
            for (j, b) in o[..16].iter_mut().enumerate() {
                *b = c[j] | (c[j + 16] << 4);
            }
        }
        Codec::Q2 | Codec::Q3 => {
            for (j, b) in o[..8].iter_mut().enumerate() {
                *b = (c[j] & 3)
                    | ((c[j + 8] & 3) << 2)
                    | ((c[j + 16] & 3) << 4)
                    | ((c[j + 24] & 3) << 6);
            }
            if codec == Codec::Q3 {
                let mut h = 0u32;
                for (i, v) in c.iter().enumerate() {
                    h |= ((*v as u32 >> 2) & 1) << i;
                }
                o[8..12].copy_from_slice(&h.to_le_bytes());
            }
        }
        _ => unreachable!("pack: unsigned codecs only"),
    }
}

/// The unsigned codes of one `q4`/`q3`/`q2` block (its bytes after the header).
#[inline]
pub fn unpack(codec: Codec, o: &[u8], c: &mut [u8; BLOCK]) {
    match codec {
        Codec::Q4 => {
            for (j, b) in o[..16].iter().enumerate() {
                c[j] = b & 15;
                c[j + 16] = b >> 4;
            }
        }
        Codec::Q2 | Codec::Q3 => {
            for (j, &b) in o[..8].iter().enumerate() {
                c[j] = b & 3;
                c[j + 8] = (b >> 2) & 3;
                c[j + 16] = (b >> 4) & 3;
                c[j + 24] = b >> 6;
            }
            if codec == Codec::Q3 {
                let h = u32::from_le_bytes([o[8], o[9], o[10], o[11]]);
                for (i, v) in c.iter_mut().enumerate() {
                    *v |= (((h >> i) & 1) as u8) << 2;
                }
            }
        }
        _ => unreachable!("unpack: unsigned codecs only"),
    }
}

/// Decode one row (`out.len()` values) of `codec` blocks.
pub fn decode(codec: Codec, row: &[u8], out: &mut [f32]) {
    out.fill(0.0);
    axpy_ref(codec, 1.0, row, out);
}

/// `out += w · decode(row)` (scalar reference).
pub fn axpy_ref(codec: Codec, w: f32, row: &[u8], out: &mut [f32]) {
    let bb = codec.block_bytes();
    for (o, blk) in out.chunks_exact_mut(BLOCK).zip(row.chunks_exact(bb)) {
        match codec {
            Codec::Q8 => {
                let wd = w * rd16(blk, 0);
                for (o, c) in o.iter_mut().zip(&blk[2..]) {
                    *o += wd * (*c as i8) as f32;
                }
            }
            Codec::Qins8 => {
                let ws = w * rd16(blk, 0);
                let lut = qins8_lut();
                for (o, c) in o.iter_mut().zip(&blk[2..]) {
                    *o += ws * lut[*c as usize];
                }
            }
            _ => {
                let (wd, wm) = (w * rd16(blk, 0), w * rd16(blk, 2));
                let mut c = [0u8; BLOCK];
                unpack(codec, &blk[4..], &mut c);
                for (o, c) in o.iter_mut().zip(&c) {
                    *o += wd * *c as f32 + wm;
                }
            }
        }
    }
}

/// A query head vector quantized to symmetric 8 bits per block, on the stack.
pub struct QueryQ8 {
    /// Codes, `n_blocks × 32`.
    pub q: [i8; MAX_HEAD_DIM],
    /// Scale of each block.
    pub d: [f32; MAX_HEAD_DIM / BLOCK],
    /// Sum of the codes of each block.
    pub s: [i32; MAX_HEAD_DIM / BLOCK],
    /// Number of blocks.
    pub nb: usize,
}

impl QueryQ8 {
    /// Quantize `x` (a multiple of [`BLOCK`] values, at most [`MAX_HEAD_DIM`]).
    pub fn new(x: &[f32]) -> QueryQ8 {
        assert!(x.len() <= MAX_HEAD_DIM && x.len().is_multiple_of(BLOCK));
        let mut r = QueryQ8 {
            q: [0; MAX_HEAD_DIM],
            d: [0.0; MAX_HEAD_DIM / BLOCK],
            s: [0; MAX_HEAD_DIM / BLOCK],
            nb: x.len() / BLOCK,
        };
        for (b, xs) in x.chunks_exact(BLOCK).enumerate() {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut s = 0i32;
            for (q, v) in r.q[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(xs) {
                *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                s += *q as i32;
            }
            r.d[b] = d;
            r.s[b] = s;
        }
        r
    }
}

/// `dot(query, decode(row))` in the integer domain (scalar reference).
pub fn dot_ref(codec: Codec, q: &QueryQ8, row: &[u8]) -> f32 {
    let bb = codec.block_bytes();
    let mut acc = 0f32;
    for (b, blk) in row.chunks_exact(bb).take(q.nb).enumerate() {
        let qb = &q.q[b * BLOCK..(b + 1) * BLOCK];
        match codec {
            Codec::Q8 => {
                let mut s = 0i32;
                for (a, c) in qb.iter().zip(&blk[2..]) {
                    s += *a as i32 * (*c as i8) as i32;
                }
                acc += q.d[b] * rd16(blk, 0) * s as f32;
            }
            Codec::Qins8 => {
                let lut = qins8_lut();
                let mut s = 0f32;
                for (a, c) in qb.iter().zip(&blk[2..]) {
                    s += *a as f32 * lut[*c as usize];
                }
                acc += q.d[b] * rd16(blk, 0) * s;
            }
            _ => {
                let mut c = [0u8; BLOCK];
                unpack(codec, &blk[4..], &mut c);
                let mut s = 0i32;
                for (a, c) in qb.iter().zip(&c) {
                    s += *a as i32 * *c as i32;
                }
                acc += q.d[b] * (rd16(blk, 0) * s as f32 + rd16(blk, 2) * q.s[b] as f32);
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let u = (s as f32 / u32::MAX as f32) * 2.0 - 1.0;
                u * if i % 17 == 3 { 8.0 } else { 1.0 }
            })
            .collect()
    }

    const ALL: [Codec; 5] = [Codec::Q8, Codec::Q4, Codec::Q3, Codec::Q2, Codec::Qins8];

    #[test]
    fn roundtrip_error_within_step() {
        let x = data(128, 1);
        for codec in ALL {
            let mut row = vec![0u8; 4 * codec.block_bytes()];
            encode(codec, &x, &mut row);
            let mut y = vec![0f32; 128];
            decode(codec, &row, &mut y);
            for (b, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let lo = xs.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let amax = lo.abs().max(hi.abs());
                // the least-squares fit may clamp a few extremes: at most 1.5 steps
                let tol = match codec {
                    Codec::Q8 => amax / 127.0 * 0.51 + amax * 1e-3,
                    Codec::Qins8 => amax * 0.03,
                    _ => (hi - lo) / ((1 << codec.bits()) - 1) as f32 * 1.5 + amax * 2e-3,
                };
                for (a, b2) in xs.iter().zip(ys) {
                    let tol = if codec == Codec::Qins8 {
                        tol.max(a.abs() * 0.025)
                    } else {
                        tol
                    };
                    assert!((a - b2).abs() <= tol, "{codec:?} block {b}: {a} vs {b2}");
                }
            }
        }
    }

    #[test]
    fn least_squares_fit_beats_min_max() {
        let x = data(32 * 64, 4);
        for codec in [Codec::Q4, Codec::Q3, Codec::Q2] {
            let qmax = ((1u32 << codec.bits()) - 1) as f32;
            let (mut fit, mut minmax) = (0f64, 0f64);
            for xs in x.chunks(32) {
                let mut row = vec![0u8; codec.block_bytes()];
                encode(codec, xs, &mut row);
                let mut y = [0f32; 32];
                decode(codec, &row, &mut y);
                fit += xs
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>();
                let lo = xs.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (hi - lo) / qmax;
                minmax += xs
                    .iter()
                    .map(|v| {
                        let q = ((v - lo) / d).round().clamp(0.0, qmax);
                        ((v - (lo + d * q)) as f64).powi(2)
                    })
                    .sum::<f64>();
            }
            eprintln!("{codec:?}: squared error {fit:.3} (min/max {minmax:.3})");
            assert!(fit < minmax, "{codec:?}: {fit} vs {minmax}");
        }
    }

    #[test]
    fn integer_dot_matches_f32_dot_of_decoded() {
        let x = data(128, 2);
        let qx = data(128, 3);
        let q = QueryQ8::new(&qx);
        let mut qd = vec![0f32; 128];
        for (i, v) in qd.iter_mut().enumerate() {
            *v = q.q[i] as f32 * q.d[i / 32];
        }
        for codec in ALL {
            let mut row = vec![0u8; 4 * codec.block_bytes()];
            encode(codec, &x, &mut row);
            let mut k = vec![0f32; 128];
            decode(codec, &row, &mut k);
            let want: f32 = qd.iter().zip(&k).map(|(a, b)| a * b).sum();
            let got = dot_ref(codec, &q, &row);
            assert!(
                (want - got).abs() <= 1e-4 * want.abs().max(1.0),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn qins8_codes_cover_zero_and_extremes() {
        let lut = qins8_lut();
        assert_eq!(lut[127], 0.0);
        assert_eq!(lut[0], 1.0);
        assert_eq!(lut[0x80], -1.0);
        assert_eq!(qins8_code(0.0), 127);
        assert_eq!(qins8_code(-1.0), 0x80);
        assert_eq!(qins8_code(1e-9), 127);
        let c = qins8_code(0.5);
        assert_eq!(lut[c as usize], 0.5);
    }
}

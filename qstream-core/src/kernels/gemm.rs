//! Packed-panel matrix products for prompt batches.
//!
//! A prompt batch multiplies every weight row by many activation rows. The single-row
//! kernels reduce each (row, token, group) dot horizontally and decode every weight group
//! again for every token pair; here instead a [`Panel`] of [`PANEL`] consecutive rows is
//! unpacked once into an interleaved layout — for each 32-value group and each 4-value
//! chunk of it, the 4 levels of row 0, then of row 1, … — so one vector holds the same
//! chunk of every row of the panel. A micro-kernel ([`GemmFn`]) then broadcasts 4
//! activation bytes and multiply-accumulates them into one i32 lane per row
//! (`vpdpbusd`): no horizontal sums, each loaded weight vector serves several tokens and
//! each broadcast serves every row of the panel. The panel is rebuilt per call from the
//! mapped weights (the file stays zero-copy); unpacking costs a few operations per weight,
//! which a batch of dozens of tokens amortises.
//!
//! Levels are stored as unsigned bytes: the type's own levels for `Q2`/`Q3`/`Q4`
//! (asymmetric, value `d·q + m`), and `q + z` for the symmetric types (`Q4Sym`: the stored
//! nibble, `z = 8`; `Q8`: `z = 128`; `Mxfp4`: twice the E2M1 value, `z = 12`), whose zero
//! point is taken off in the integer domain: per (row, token, group)
//! `S = Σ level·q_x − z·isum_x` (exact), then in f32
//! `acc = fma(S, d_w·d_x, acc)` and, for asymmetric types, `acc = fma(m_w, s_x, acc)`,
//! group by group in order. [`gemm_ref`] is that arithmetic written out, and the SIMD
//! micro-kernels give bit-identical results (same integers, same fused operations in the
//! same order).

use super::dispatch::ActBatch;
use crate::quant::float::read_f16;
use crate::quant::QuantType;

/// Rows per panel (one 512-bit vector of i32 lanes; two 256-bit halves at the AVX2 level).
pub const PANEL: usize = 16;

/// Bytes of one group of a panel: 32 levels × [`PANEL`] rows.
pub const GROUP_BYTES: usize = 32 * PANEL;

/// Micro-kernel: `out[t·PANEL + i] = dot(row i of p, token t of a)` for every token of `a`
/// (`out` holds `a.n · PANEL` values).
///
/// Preconditions (checked by [`check`], which the callers run): `p.groups ≤ a.groups`, the
/// activation buffers are as long as `a.n` rows of `a.groups` groups, `out` is long enough.
pub type GemmFn = fn(p: &Panel, a: &ActBatch<'_>, out: &mut [f32]);

/// A level's [`pack`] (same arguments, same panel bit for bit).
pub type PackFn =
    fn(qt: QuantType, block: usize, bytes: &[u8], rb: usize, r0: usize, nr: usize, p: &mut Panel);

/// How a panel's integer sums become floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Zero {
    /// Asymmetric levels: `+ m_w·s_x` per group.
    #[default]
    Min,
    /// Symmetric levels with zero point `z`: `S − z·isum_x` in the integer domain.
    Point(i32),
}

/// [`PANEL`] rows of one dense quantized type, unpacked (see the module docs).
#[derive(Default, Debug)]
pub struct Panel {
    /// `levels[((g·8 + k)·PANEL + i)·4 + b]` = level of row `i`, value `32·g + 4·k + b`
    pub levels: Vec<u8>,
    /// `dw[g·PANEL + i]`: row `i`'s scale for group `g`
    pub dw: Vec<f32>,
    /// `mw[g·PANEL + i]`: row `i`'s minimum for group `g` (asymmetric types)
    pub mw: Vec<f32>,
    /// groups per row
    pub groups: usize,
    /// rows actually filled (the others are zero)
    pub rows: usize,
    /// zero-point treatment of the type
    pub zero: Zero,
}

/// Whether [`pack`] handles `qt` (dense quantized types; not outlier or float types).
pub fn packable(qt: QuantType) -> bool {
    matches!(
        qt,
        QuantType::Q2
            | QuantType::Q3
            | QuantType::Q4
            | QuantType::Q4Sym
            | QuantType::Q8
            | QuantType::Mxfp4
    )
}

/// Largest unsigned level [`pack`] stores for `qt` (the AVX2 micro-kernel's `u8 × i8` pair
/// sums saturate at 16 bits, so it takes only types whose levels stay ≤ 127).
pub fn max_level(qt: QuantType) -> u32 {
    match qt {
        QuantType::Q2 => 3,
        QuantType::Q3 => 7,
        QuantType::Q4 | QuantType::Q4Sym => 15,
        QuantType::Mxfp4 => 24,
        _ => 255,
    }
}

/// Size `p` for rows `nr` of a `qt` tensor with `rb` bytes per row and set its metadata;
/// returns `(block, block bytes, groups per block, groups)` (the effective block: 32 for
/// `Q8`/`Mxfp4`, at least 32 otherwise).
pub(super) fn prepare(
    qt: QuantType,
    block: usize,
    rb: usize,
    nr: usize,
    p: &mut Panel,
) -> (usize, usize, usize, usize) {
    assert!(packable(qt) && nr <= PANEL, "gemm::pack {qt} {nr}");
    let block = if matches!(qt, QuantType::Q8 | QuantType::Mxfp4) {
        32
    } else {
        block.max(32)
    };
    let bb = qt.block_bytes(block);
    let gpb = block / 32;
    let groups = rb / bb * gpb;
    p.groups = groups;
    p.rows = nr;
    p.zero = match qt {
        QuantType::Q4Sym => Zero::Point(8),
        QuantType::Q8 => Zero::Point(128),
        QuantType::Mxfp4 => Zero::Point(12),
        _ => Zero::Min,
    };
    p.levels.resize(groups * GROUP_BYTES, 0);
    p.dw.resize(groups * PANEL, 0.0);
    p.mw.resize(groups * PANEL, 0.0);
    (block, bb, gpb, groups)
}

/// Unpack rows `r0 .. r0 + nr` (`nr ≤ PANEL`) of a dense `qt` tensor (`bytes`, `rb` bytes
/// per row, `block` values per block) into `p`, covering the row's whole blocks. Rows past
/// `nr` get zero levels and scales. `qt` must be [`packable`] and `bytes` must hold the rows.
pub fn pack(
    qt: QuantType,
    block: usize,
    bytes: &[u8],
    rb: usize,
    r0: usize,
    nr: usize,
    p: &mut Panel,
) {
    let (block, bb, gpb, groups) = prepare(qt, block, rb, nr, p);
    // every entry of rows < nr is written below; rows ≥ nr are zeroed
    if nr < PANEL {
        for g in 0..groups {
            for k in 0..8 {
                let o = (g * 8 + k) * PANEL;
                p.levels[4 * (o + nr)..4 * (o + PANEL)].fill(0);
            }
            p.dw[g * PANEL + nr..(g + 1) * PANEL].fill(0.0);
            p.mw[g * PANEL + nr..(g + 1) * PANEL].fill(0.0);
        }
    }
    let (levels, dw, mw) = (&mut p.levels[..], &mut p.dw[..], &mut p.mw[..]);
    for i in 0..nr {
        let row = &bytes[(r0 + i) * rb..(r0 + i + 1) * rb];
        for (b, blk) in row.chunks_exact(bb).enumerate() {
            for gi in 0..gpb {
                let g = b * gpb + gi;
                let (words, d, m) = unpack_group(qt, block, blk, gi);
                dw[g * PANEL + i] = d;
                mw[g * PANEL + i] = m;
                for (k, w) in words.iter().enumerate() {
                    let o = 4 * ((g * 8 + k) * PANEL + i);
                    levels[o..o + 4].copy_from_slice(&w.to_le_bytes());
                }
            }
        }
    }
}

/// The little-endian u32 at `p[i..i + 4]`.
#[inline(always)]
fn le32(p: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(p[i..i + 4].try_into().expect("4 bytes"))
}

/// Bit `b` of a nibble moved to bit 2 of byte `b` (the `Q3` high bits of four values).
const SPREAD_HIGH: [u32; 16] = {
    let mut t = [0u32; 16];
    let mut n = 0;
    while n < 16 {
        let mut b = 0;
        while b < 4 {
            t[n] |= (((n >> b) & 1) as u32) << (8 * b + 2);
            b += 1;
        }
        n += 1;
    }
    t
};

/// Group `gi` of block `blk` as unsigned levels (see the module docs), four per word
/// (word `k` = values `4k .. 4k + 4`, little-endian), and `(d_w, m_w)`.
#[inline]
fn unpack_group(qt: QuantType, block: usize, blk: &[u8], gi: usize) -> ([u32; 8], f32, f32) {
    const NIB: u32 = 0x0F0F_0F0F;
    // 16 nibble bytes: values 0..16 low nibbles, 16..32 high nibbles
    let nibbles = |p: &[u8]| -> [u32; 8] {
        let v = [le32(p, 0), le32(p, 4), le32(p, 8), le32(p, 12)];
        [
            v[0] & NIB,
            v[1] & NIB,
            v[2] & NIB,
            v[3] & NIB,
            (v[0] >> 4) & NIB,
            (v[1] >> 4) & NIB,
            (v[2] >> 4) & NIB,
            (v[3] >> 4) & NIB,
        ]
    };
    // 8 low-bit bytes: byte j holds values j, j+8, j+16, j+24 at bits 0, 2, 4, 6
    let low2 = |p: &[u8]| -> [u32; 8] {
        let (a, b) = (le32(p, 0), le32(p, 4));
        std::array::from_fn(|k| {
            let v = if k % 2 == 0 { a } else { b };
            (v >> (2 * (k / 2))) & 0x0303_0303
        })
    };
    let hdr = |blk: &[u8]| (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
    match qt {
        QuantType::Q4 => {
            let (d, m) = hdr(blk);
            (nibbles(&blk[4 + 16 * gi..4 + 16 * gi + 16]), d, m)
        }
        QuantType::Q4Sym => (
            nibbles(&blk[2 + 16 * gi..2 + 16 * gi + 16]),
            read_f16(&blk[0..2]),
            0.0,
        ),
        QuantType::Q2 => {
            let (d, m) = hdr(blk);
            (low2(&blk[4 + 8 * gi..4 + 8 * gi + 8]), d, m)
        }
        QuantType::Q3 => {
            let (d, m) = hdr(blk);
            let mut w = low2(&blk[4 + 8 * gi..4 + 8 * gi + 8]);
            // bit v of the group's 4 high bytes is value v's bit 2
            let h = &blk[4 + block / 4 + 4 * gi..4 + block / 4 + 4 * gi + 4];
            for (k, w) in w.iter_mut().enumerate() {
                *w |= SPREAD_HIGH[((h[k / 2] >> (4 * (k % 2))) & 0x0F) as usize];
            }
            (w, d, m)
        }
        QuantType::Q8 => {
            // q + 128 = q ^ 0x80 per byte
            let w = std::array::from_fn(|k| le32(blk, 2 + 4 * k) ^ 0x8080_8080);
            (w, read_f16(&blk[0..2]), 0.0)
        }
        QuantType::Mxfp4 => {
            let lvl = |n: u8| (super::scalar::MXFP4_X2[n as usize] + 12) as u8;
            let mut q = [0u8; 32];
            for j in 0..16 {
                let b = blk[1 + j];
                q[j] = lvl(b & 0x0F);
                q[j + 16] = lvl(b >> 4);
            }
            let w = std::array::from_fn(|k| le32(&q, 4 * k));
            (w, super::scalar::mxfp4_half_scale(blk[0]), 0.0)
        }
        _ => unreachable!("unpack_group: {qt} is not packable"),
    }
}

/// Whether `p`, `a` and `out` satisfy the [`GemmFn`] preconditions.
pub fn check(p: &Panel, a: &ActBatch<'_>, out: &[f32]) -> bool {
    let g = a.groups;
    p.groups <= g
        && p.levels.len() >= p.groups * GROUP_BYTES
        && p.dw.len() >= p.groups * PANEL
        && p.mw.len() >= p.groups * PANEL
        && a.qs.len() >= a.n * 32 * g
        && (a.lo.is_empty() || a.lo.len() >= a.n * 32 * g)
        && a.d.len() >= a.n * g
        && a.s.len() >= a.n * g
        && a.isum.len() >= a.n * g
        && out.len() >= a.n * PANEL
}

/// The reference micro-kernel (see the module docs for the arithmetic; `f32::mul_add` is
/// the fused multiply-add of the SIMD levels).
pub fn gemm_ref(p: &Panel, a: &ActBatch<'_>, out: &mut [f32]) {
    assert!(check(p, a, out), "gemm_ref: shapes");
    let g_all = a.groups;
    let two = !a.lo.is_empty();
    for t in 0..a.n {
        for i in 0..PANEL {
            let mut acc = 0f32;
            for g in 0..p.groups {
                let x0 = (t * g_all + g) * 32;
                let mut s = 0i32;
                for k in 0..8 {
                    for b in 0..4 {
                        let w = p.levels[((g * 8 + k) * PANEL + i) * 4 + b] as i32;
                        let c = x0 + 4 * k + b;
                        let x = if two {
                            256 * a.qs[c] as i32 + a.lo[c] as i32
                        } else {
                            a.qs[c] as i32
                        };
                        s += w * x;
                    }
                }
                let ga = t * g_all + g;
                if let Zero::Point(z) = p.zero {
                    s -= z * a.isum[ga];
                }
                acc = (s as f32).mul_add(p.dw[g * PANEL + i] * a.d[ga], acc);
                if p.zero == Zero::Min {
                    acc = p.mw[g * PANEL + i].mul_add(a.s[ga], acc);
                }
            }
            out[t * PANEL + i] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{kernel_set, scalar, ActBits, Isa, QuantAct};
    use crate::quant::{self, QuantParams};
    use crate::test_util::lcg_data as data;

    /// A `rows × cols` tensor of `qt` (MXFP4 from raw bytes: the converter only imports it).
    fn tensor(
        qt: QuantType,
        block: usize,
        rows: usize,
        cols: usize,
        seed: u32,
    ) -> (Vec<u8>, usize) {
        let rb = qt.row_bytes(block, cols);
        if qt == QuantType::Mxfp4 {
            let r = data(rows * rb, seed);
            let b = (0..rows * rb)
                .map(|i| {
                    let v = ((r[i] + 0.5) * 256.0) as u8;
                    if i % 17 == 0 {
                        120 + v % 12 // E8M0 exponents near 1
                    } else {
                        v
                    }
                })
                .collect();
            return (b, rb);
        }
        let w = data(rows * cols, seed);
        let p = QuantParams {
            block_size: block,
            ..QuantParams::default()
        };
        (quant::quantize(qt, &w, rows, cols, &p).unwrap(), rb)
    }

    const CASES: [(QuantType, usize); 9] = [
        (QuantType::Q4, 32),
        (QuantType::Q4, 64),
        (QuantType::Q4Sym, 32),
        (QuantType::Q4Sym, 128),
        (QuantType::Q8, 32),
        (QuantType::Q2, 32),
        (QuantType::Q2, 256),
        (QuantType::Q3, 64),
        (QuantType::Mxfp4, 32),
    ];

    #[test]
    fn simd_levels_bit_identical_to_reference() {
        let scalar = kernel_set(Isa::Scalar).unwrap();
        let cols: usize = 320;
        for (qt, block) in CASES {
            let groups = cols.div_ceil(block) * block / 32;
            let (b, rb) = tensor(qt, block, 37, cols, 3);
            for bits in [ActBits::Eight, ActBits::Sixteen] {
                for n in [1, 3, 4, 9] {
                    let xs = data(n * cols, 5 + n as u32);
                    let mut act = QuantAct::new();
                    act.quantize(scalar, &xs, n, cols, groups, bits);
                    let a = act.batch();
                    let mut p = Panel::default();
                    for (r0, nr) in [(0, 16), (16, 16), (32, 5)] {
                        pack(qt, block, &b, rb, r0, nr, &mut p);
                        let mut want = vec![0f32; n * PANEL];
                        gemm_ref(&p, &a, &mut want);
                        for isa in Isa::ALL {
                            let Some(k) = kernel_set(isa) else { continue };
                            let Some(f) = k.gemm else { continue };
                            if max_level(qt) > k.gemm_max_level {
                                continue;
                            }
                            let mut got = vec![f32::NAN; n * PANEL];
                            f(&p, &a, &mut got);
                            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                assert_eq!(
                                    g.to_bits(),
                                    w.to_bits(),
                                    "{isa:?} {qt} B{block} {bits:?} n={n} rows {r0}+{nr} [{i}]: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn level_packers_bit_identical_to_pack() {
        let cols: usize = 320;
        for (qt, block) in CASES {
            let (b, rb) = tensor(qt, block, 40, cols, 13);
            for (r0, nr) in [(0, 16), (24, 16), (32, 7)] {
                let mut want = Panel::default();
                pack(qt, block, &b, rb, r0, nr, &mut want);
                for isa in Isa::ALL {
                    let Some(k) = kernel_set(isa) else { continue };
                    // a reused panel: stale contents must not leak through
                    let mut got = Panel::default();
                    (k.gemm_pack)(qt, block, &b, rb, 0, 16, &mut got);
                    (k.gemm_pack)(qt, block, &b, rb, r0, nr, &mut got);
                    let what = format!("{isa:?} {qt} B{block} rows {r0}+{nr}");
                    assert_eq!(got.levels, want.levels, "{what}");
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got.dw), bits(&want.dw), "{what}");
                    assert_eq!(bits(&got.mw), bits(&want.mw), "{what}");
                    assert_eq!(
                        (got.groups, got.rows, got.zero),
                        (want.groups, want.rows, want.zero)
                    );
                }
            }
        }
    }

    #[test]
    fn reference_matches_the_row_kernels() {
        // The packed arithmetic is the scalar row kernels' (same integers), in another f32
        // order: equal within a few ulps of the sum of the terms' magnitudes.
        let k = kernel_set(Isa::Scalar).unwrap();
        let cols: usize = 256;
        for (qt, block) in CASES {
            let groups = cols.div_ceil(block) * block / 32;
            let rows = 21;
            let (b, rb) = tensor(qt, block, rows, cols, 7);
            let row_kernel = match qt {
                QuantType::Q4 => scalar::dot_q4,
                QuantType::Q4Sym => scalar::dot_q4sym,
                QuantType::Q8 => scalar::dot_q8,
                QuantType::Q2 => scalar::dot_q2,
                QuantType::Q3 => scalar::dot_q3,
                _ => scalar::dot_mxfp4,
            };
            for bits in [ActBits::Eight, ActBits::Sixteen] {
                let n = 5;
                let xs = data(n * cols, 11);
                let mut act = QuantAct::new();
                act.quantize(k, &xs, n, cols, groups, bits);
                let mut p = Panel::default();
                for r0 in [0, 16] {
                    let nr = (rows - r0).min(PANEL);
                    pack(qt, block, &b, rb, r0, nr, &mut p);
                    let mut got = vec![0f32; n * PANEL];
                    gemm_ref(&p, &act.batch(), &mut got);
                    for t in 0..n {
                        for i in 0..PANEL {
                            let g = got[t * PANEL + i];
                            if i >= nr {
                                assert_eq!(g, 0.0, "padding row");
                                continue;
                            }
                            let row = &b[(r0 + i) * rb..(r0 + i + 1) * rb];
                            let want = row_kernel(block, row, act.row(t));
                            // |terms| ≤ max|w|·Σ|x| ≤ 8 · 128 for these data
                            let tol = 1e-5 * (1.0 + want.abs()) + 2e-4;
                            assert!(
                                (g - want).abs() <= tol,
                                "{qt} B{block} {bits:?} t{t} row {}: {g} vs {want}",
                                r0 + i
                            );
                        }
                    }
                }
            }
        }
    }
}

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
    p.levels.clear();
    p.levels.resize(groups * GROUP_BYTES, 0);
    p.dw.clear();
    p.dw.resize(groups * PANEL, 0.0);
    p.mw.clear();
    p.mw.resize(groups * PANEL, 0.0);
    let mut q = [0u8; 32];
    for i in 0..nr {
        let row = &bytes[(r0 + i) * rb..(r0 + i + 1) * rb];
        for (b, blk) in row.chunks_exact(bb).enumerate() {
            for gi in 0..gpb {
                let g = b * gpb + gi;
                let (dw, mw) = unpack_group(qt, block, blk, gi, &mut q);
                p.dw[g * PANEL + i] = dw;
                p.mw[g * PANEL + i] = mw;
                let base = g * GROUP_BYTES + 4 * i;
                for k in 0..8 {
                    let o = base + 4 * PANEL * k;
                    p.levels[o..o + 4].copy_from_slice(&q[4 * k..4 * k + 4]);
                }
            }
        }
    }
}

/// Group `gi` of block `blk` as unsigned levels (see the module docs) and `(d_w, m_w)`.
#[inline]
fn unpack_group(
    qt: QuantType,
    block: usize,
    blk: &[u8],
    gi: usize,
    q: &mut [u8; 32],
) -> (f32, f32) {
    let nib = |q: &mut [u8; 32], p: &[u8]| {
        for j in 0..16 {
            q[j] = p[j] & 0x0F;
            q[j + 16] = p[j] >> 4;
        }
    };
    let low2 = |q: &mut [u8; 32], p: &[u8]| {
        for j in 0..8 {
            for s in 0..4 {
                q[j + 8 * s] = (p[j] >> (2 * s)) & 3;
            }
        }
    };
    match qt {
        QuantType::Q4 => {
            nib(q, &blk[4 + 16 * gi..4 + 16 * gi + 16]);
            (read_f16(&blk[0..2]), read_f16(&blk[2..4]))
        }
        QuantType::Q4Sym => {
            nib(q, &blk[2 + 16 * gi..2 + 16 * gi + 16]);
            (read_f16(&blk[0..2]), 0.0)
        }
        QuantType::Q2 => {
            low2(q, &blk[4 + 8 * gi..4 + 8 * gi + 8]);
            (read_f16(&blk[0..2]), read_f16(&blk[2..4]))
        }
        QuantType::Q3 => {
            low2(q, &blk[4 + 8 * gi..4 + 8 * gi + 8]);
            let h = &blk[4 + block / 4 + 4 * gi..4 + block / 4 + 4 * gi + 4];
            for (k, v) in q.iter_mut().enumerate() {
                *v |= ((h[k / 8] >> (k % 8)) & 1) << 2;
            }
            (read_f16(&blk[0..2]), read_f16(&blk[2..4]))
        }
        QuantType::Q8 => {
            for (v, b) in q.iter_mut().zip(&blk[2..34]) {
                *v = b.wrapping_add(128);
            }
            (read_f16(&blk[0..2]), 0.0)
        }
        QuantType::Mxfp4 => {
            for j in 0..16 {
                let b = blk[1 + j];
                q[j] = (super::scalar::MXFP4_X2[(b & 0x0F) as usize] + 12) as u8;
                q[j + 16] = (super::scalar::MXFP4_X2[(b >> 4) as usize] + 12) as u8;
            }
            (super::scalar::mxfp4_half_scale(blk[0]), 0.0)
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

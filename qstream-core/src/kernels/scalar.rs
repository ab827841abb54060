//! Scalar reference kernels: the oracle every SIMD kernel is tested against.

use crate::quant::{self, QuantType};

/// Rows `rows` of a dense-type weight times `n` activation vectors.
///
/// `bytes` is the whole tensor (`rb` bytes per row); `xs` is `n × cols`; the result for
/// row `r` and vector `t` goes to `out(t, r)`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_rows_dense(
    qt: QuantType,
    block: usize,
    bytes: &[u8],
    rb: usize,
    xs: &[f32],
    cols: usize,
    n: usize,
    rows: std::ops::Range<usize>,
    mut out: impl FnMut(usize, usize, f32),
) {
    for r in rows {
        let row = &bytes[r * rb..(r + 1) * rb];
        for t in 0..n {
            out(
                t,
                r,
                quant::dot_row_ref(qt, block, row, &xs[t * cols..(t + 1) * cols]),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// q8-activation integer kernels (reference for the SIMD levels).
//
// Float operations happen in a fixed, documented order: per 32-value group the integer dot
// `i = Σ q_w·q_x` is exact; then `acc += (d_w·d_x)·i` and, for asymmetric types,
// `acc_m += m_w·s_x`; the result is `acc + acc_m`. The SIMD levels of `Q2`/`Q3`/`Mxfp4`
// keep exactly this order (bit-identical results); those of `Q4`/`Q4Sym`/`Q8` accumulate in
// vector lanes (same integers, f32 summation order differs).
// ---------------------------------------------------------------------------------------

use super::dispatch::{ActRow, ActRowMut};
use crate::quant::float::read_f16;

/// Values `32·g .. 32·g + 32` of `x` (zero past its end) and their largest magnitude.
#[inline]
fn group_values(x: &[f32], g: usize) -> ([f32; 32], f32) {
    let mut v = [0f32; 32];
    let start = (32 * g).min(x.len());
    let end = (32 * g + 32).min(x.len());
    v[..end - start].copy_from_slice(&x[start..end]);
    let amax = v.iter().fold(0f32, |a, b| a.max(b.abs()));
    (v, amax)
}

/// Quantize `x` to q8 groups of 32 (`out` decides the number of groups; values past
/// `x.len()` are zero). Round half to even, `d = amax / 127`.
pub fn quantize_act(x: &[f32], out: ActRowMut<'_>) {
    let groups = out.groups(false);
    for g in 0..groups {
        let (v, amax) = group_values(x, g);
        let d = amax / 127.0;
        let id = if amax != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, xv) in out.qs[32 * g..32 * g + 32].iter_mut().zip(&v) {
            let r = ((xv * id).round_ties_even() as i32).clamp(-128, 127);
            *q = r as i8;
            sum += r;
        }
        out.d[g] = d;
        out.isum[g] = sum;
        out.s[g] = d * sum as f32;
    }
}

/// Quantize `x` to 16-bit groups of 32 split into two 8-bit planes (the activation of
/// [`ActBits::Sixteen`](super::ActBits)): `d = amax / 32512`, `q = round(x / d)` (half to
/// even), `qs = ⌊(q + 128) / 256⌋ ∈ −127..=127`, `lo = q − 256·qs ∈ −128..=127` with −128
/// moved to −127 (so both planes stay in −127..=127 — the sign trick of the kernels needs
/// that — at the cost of one step `d` on those values). `isum`/`s` are of `256·qs + lo`.
/// The reference of every level's `quantize_act16` (the NEON level uses it as is).
pub fn quantize_act16(x: &[f32], out: ActRowMut<'_>) {
    let groups = out.groups(true);
    for g in 0..groups {
        let (v, amax) = group_values(x, g);
        let d = amax / 32512.0;
        let id = if amax != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        let (qs, lo) = (
            &mut out.qs[32 * g..32 * g + 32],
            &mut out.lo[32 * g..32 * g + 32],
        );
        for k in 0..32 {
            // |v·id| ≤ 32512·(1 + ε) < 2²², where adding and subtracting 1.5·2²³ rounds to
            // the nearest integer, ties to even — exactly `round_ties_even`, but inlined
            // (that one is a libm call without SSE4.1, 4 % of a decode step)
            const MAGIC: f32 = 12_582_912.0;
            let q = (((v[k] * id) + MAGIC - MAGIC) as i32).clamp(-32512, 32512);
            let h = (q + 128) >> 8;
            let l = (q - 256 * h).max(-127);
            qs[k] = h as i8;
            lo[k] = l as i8;
            sum += 256 * h + l;
        }
        out.d[g] = d;
        out.isum[g] = sum;
        out.s[g] = d * sum as f32;
    }
}

/// `quantize_act16` when `out` has a low plane, else `quantize_act` (how the fused
/// producers choose the precision).
#[inline]
pub fn quantize_act_any(x: &[f32], out: ActRowMut<'_>) {
    if out.lo.is_empty() {
        quantize_act(x, out)
    } else {
        quantize_act16(x, out)
    }
}

/// `Σ x²` in the order of the SIMD levels: eight lane sums over the full chunks of 8
/// (lane `j` adds `x[8i + j]²` in order), combined as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`,
/// then the tail values added one by one.
pub fn sum_sq(x: &[f32]) -> f32 {
    let mut l = [0f32; 8];
    let full = x.len() / 8 * 8;
    for c in x[..full].chunks_exact(8) {
        for j in 0..8 {
            l[j] += c[j] * c[j];
        }
    }
    let a = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let mut s = (a[0] + a[2]) + (a[1] + a[3]);
    for v in &x[full..] {
        s += v * v;
    }
    s
}

/// RMSNorm (`out = w ⊙ (x · inv)`, `inv = 1 / sqrt(sum_sq(x) / len + eps)`) over the values
/// `x`, `w` and `out` all hold, then, when `act` is given, `out` quantized into it
/// ([`quantize_act_any`]). The reference of every level's `rms_norm_act`.
pub fn rms_norm_act(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], act: Option<ActRowMut<'_>>) {
    let len = x.len().min(w.len()).min(out.len());
    let (x, out) = (&x[..len], &mut out[..len]);
    let inv = 1.0 / (sum_sq(x) / len as f32 + eps).sqrt();
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * inv);
    }
    if let Some(a) = act {
        quantize_act_any(out, a);
    }
}

/// Clamp bounds of [`exp_approx`]'s argument (`2ⁿ` stays a normal float).
const EXP_LO: f32 = -87.3;
const EXP_HI: f32 = 88.3;

/// `eᵗ` by Cephes' `expf` (`n = round(t·log2 e)`, `r = t − n·ln 2` in two parts, degree-5
/// polynomial, times `2ⁿ`) with plain multiplies and adds in a fixed order, so that the SIMD
/// levels compute the same bits; `t` is clamped to `[−87.3, 88.3]` (NaN goes to −87.3, as
/// `maxps` does). Relative error within 2·10⁻⁷ of `f32::exp` on that range (tested).
#[inline]
pub fn exp_approx(t: f32) -> f32 {
    let t = if t > EXP_LO { t } else { EXP_LO };
    let t = if t < EXP_HI { t } else { EXP_HI };
    // |t·log2 e| < 2²²: adding and subtracting 1.5·2²³ rounds to nearest, ties to even
    const MAGIC: f32 = 12_582_912.0;
    let n = (t * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = t - n * EXP_C1;
    let r = r - n * EXP_C2;
    let mut p = EXP_P[0];
    for c in &EXP_P[1..] {
        p = p * r + c;
    }
    let y = (p * (r * r) + r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// `ln 2` in two parts (the first exact in 9 bits, so `n·EXP_C1` is exact).
pub(super) const EXP_C1: f32 = 0.693_359_4;
pub(super) const EXP_C2: f32 = -2.121_944_4e-4;
/// Cephes `expf` polynomial, highest degree first.
pub(super) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_6e-1,
    0.5,
];
/// [`exp_approx`]'s clamp bounds, for the SIMD levels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) const EXP_BOUNDS: (f32, f32) = (EXP_LO, EXP_HI);

/// SiLU `x / (1 + e⁻ˣ)` with [`exp_approx`] (relative error within 4·10⁻⁷ of
/// `nn::silu`, tested).
#[inline]
pub fn silu_approx(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

/// `gate = silu_approx(gate) ⊙ up` over the values both hold, then, when `act` is given,
/// those values quantized into it ([`quantize_act_any`]). The reference of every level's
/// `silu_mul_act`.
pub fn silu_mul_act(gate: &mut [f32], up: &[f32], act: Option<ActRowMut<'_>>) {
    let len = gate.len().min(up.len());
    let gate = &mut gate[..len];
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu_approx(*g) * u;
    }
    if let Some(a) = act {
        quantize_act_any(gate, a);
    }
}

/// Low/high nibble `i` (0..32) of a 16-byte packed group.
#[inline]
fn nib(qs: &[u8], i: usize) -> i32 {
    if i < 16 {
        (qs[i] & 0x0F) as i32
    } else {
        (qs[i - 16] >> 4) as i32
    }
}

/// Blocks of a row (`bb` bytes each, `block` values) the activation covers.
#[inline]
fn n_blocks(row: &[u8], bb: usize, block: usize, a: &ActRow<'_>) -> usize {
    (row.len() / bb).min(a.groups() * 32 / block)
}

/// `Q4` row × q8 activation.
pub fn dot_q4(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let block = block.max(32);
    dot_scale_min(block, 4 + block / 2, row, a, |blk, g, k| {
        nib(&blk[4 + 16 * g..4 + 16 * g + 16], k)
    })
}

/// Shared body of the scale+min integer dots (`Q4`, `Q2`, `Q3`; blocks of `bb` bytes that
/// start with f16 `d_w`, `m_w`): per 32-value group `g`,
/// `acc += (d_w·d_x)·Σ_k level(blk, g, k)·q_x[k]`, `acc_m += m_w·s_x`; returns `acc + acc_m`.
#[inline]
fn dot_scale_min(
    block: usize,
    bb: usize,
    row: &[u8],
    a: ActRow<'_>,
    level: impl Fn(&[u8], usize, usize) -> i32,
) -> f32 {
    let gpb = block / 32;
    let (mut acc, mut acc_m) = (0f32, 0f32);
    for b in 0..n_blocks(row, bb, block, &a) {
        let blk = &row[b * bb..(b + 1) * bb];
        let (dw, mw) = (read_f16(&blk[0..2]), read_f16(&blk[2..4]));
        for g in 0..gpb {
            let gi = b * gpb + g;
            let i: i32 = (0..32).map(|k| level(blk, g, k) * a.q(32 * gi + k)).sum();
            acc += (dw * a.d[gi]) * i as f32;
            acc_m += mw * a.s[gi];
        }
    }
    acc + acc_m
}

/// `Q4Sym` row × q8 activation: `Σ (q_w − 8)·q_x = Σ q_w·q_x − 8·isum`.
pub fn dot_q4sym(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let block = block.max(32);
    let bb = 2 + block / 2;
    let gpb = block / 32;
    let mut acc = 0f32;
    for b in 0..n_blocks(row, bb, block, &a) {
        let blk = &row[b * bb..(b + 1) * bb];
        let dw = read_f16(&blk[0..2]);
        for g in 0..gpb {
            let gi = b * gpb + g;
            let qs = &blk[2 + 16 * g..2 + 16 * g + 16];
            let i: i32 = (0..32).map(|k| nib(qs, k) * a.q(32 * gi + k)).sum();
            acc += (dw * a.d[gi]) * (i - 8 * a.isum[gi]) as f32;
        }
    }
    acc
}

/// Four single-token calls of `$f` (the multi-token reference and the fallback of levels
/// without a dedicated multi-token kernel).
macro_rules! x4_by_single {
    ($name:ident, $f:path, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(block: usize, row: &[u8], a: [super::dispatch::ActRow<'_>; 4]) -> [f32; 4] {
            a.map(|a| $f(block, row, a))
        }
    };
}
#[allow(unused_imports)] // used by the NEON level only
pub(super) use x4_by_single;

x4_by_single!(dot_q4_x4, dot_q4, "[`dot_q4`] for four activations.");
x4_by_single!(
    dot_q4sym_x4,
    dot_q4sym,
    "[`dot_q4sym`] for four activations."
);
x4_by_single!(dot_q8_x4, dot_q8, "[`dot_q8`] for four activations.");
x4_by_single!(dot_q2_x4, dot_q2, "[`dot_q2`] for four activations.");

/// `Q8` row × q8 activation (block 32).
pub fn dot_q8(_block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for b in 0..n_blocks(row, 34, 32, &a) {
        let blk = &row[b * 34..(b + 1) * 34];
        let dw = read_f16(&blk[0..2]);
        let i: i32 = (0..32)
            .map(|k| blk[2 + k] as i8 as i32 * a.q(32 * b + k))
            .sum();
        acc += (dw * a.d[b]) * i as f32;
    }
    acc
}

/// Level `k` (0..32) of a 32-value group's 2-bit low bytes (8 bytes, `q2` layout).
#[inline]
fn low2(lows: &[u8], k: usize) -> i32 {
    ((lows[k % 8] >> (2 * (k / 8))) & 3) as i32
}

/// `Q2` row × q8 activation: per group `acc += (d_w·d_x)·Σ q_w·q_x`, `acc_m += m_w·s_x`.
pub fn dot_q2(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let block = block.max(32);
    dot_scale_min(block, quant::q2::block_bytes(block), row, a, |blk, g, k| {
        low2(&blk[4 + 8 * g..4 + 8 * g + 8], k)
    })
}

/// `Q3` row × q8 activation (same float order as [`dot_q2`]).
pub fn dot_q3(block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let block = block.max(32);
    dot_scale_min(block, quant::q3::block_bytes(block), row, a, |blk, g, k| {
        let highs = &blk[4 + block / 4 + 4 * g..4 + block / 4 + 4 * g + 4];
        let h = ((highs[k / 8] >> (k % 8)) & 1) as i32;
        low2(&blk[4 + 8 * g..4 + 8 * g + 8], k) | (h << 2)
    })
}

/// E2M1 value of each MXFP4 nibble, times 2 (integers in −12..=12).
pub const MXFP4_X2: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half the E8M0 scale `2^(e−127)` (exact for every `e`; NaN for 255), the weight scale of
/// the doubled E2M1 integers [`MXFP4_X2`].
#[inline]
pub fn mxfp4_half_scale(e: u8) -> f32 {
    quant::mxfp4::e8m0_to_f32(e) * 0.5
}

/// `Mxfp4` row × q8 activation: per block `acc += (s/2 · d_x) · Σ (2·fp4)·q_x`.
pub fn dot_mxfp4(_block: usize, row: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for b in 0..n_blocks(row, 17, 32, &a) {
        let blk = &row[b * 17..(b + 1) * 17];
        let dw = mxfp4_half_scale(blk[0]);
        let i: i32 = (0..32)
            .map(|k| {
                let byte = blk[1 + k % 16];
                let n = if k < 16 { byte & 0x0F } else { byte >> 4 };
                MXFP4_X2[n as usize] as i32 * a.q(32 * b + k)
            })
            .sum();
        acc += (dw * a.d[b]) * i as f32;
    }
    acc
}

/// Plain f32 dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += a · x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Attention scores: `out[i] = q · keys[i·d..(i+1)·d]` with `d = q.len()`, for every `i`
/// both `out` and `keys` cover.
pub fn dots(q: &[f32], keys: &[f32], out: &mut [f32]) {
    if q.is_empty() {
        return;
    }
    for (o, k) in out.iter_mut().zip(keys.chunks_exact(q.len())) {
        *o = dot(q, k);
    }
}

/// Attention values: `out += Σ_i w[i] · vals[i·d..(i+1)·d]` with `d = out.len()`, for every
/// `i` both `w` and `vals` cover.
pub fn axpys(w: &[f32], vals: &[f32], out: &mut [f32]) {
    if out.is_empty() {
        return;
    }
    let d = out.len();
    for (a, v) in w.iter().zip(vals.chunks_exact(d)) {
        axpy(*a, v, out);
    }
}

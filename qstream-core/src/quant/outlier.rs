//! Outlier-aware types (`Q2Outlier`, `Q3Outlier`, `Q4Outlier`): a dense tensor of the base
//! type plus the weights whose removal most lowers the dense part's error, kept exactly as
//! f16.
//!
//! Tensor bytes (little-endian):
//! ```text
//! [dense: rows × row_bytes(base) — base-type rows, outliers excluded from each block's range]
//! [u32 n_outliers]
//! [u32 row_ptr[rows + 1]]   prefix offsets into the arrays below (row_ptr[0] = 0, row_ptr[rows] = n)
//! [u32 col[n]]              column of each outlier; strictly increasing within a row
//! [f16 val[n]]              its value
//! ```
//! There are `k` outliers (see "Across tensors" below), ordered by (row, col). In the dense
//! part their positions were quantized as 0 with weight 0 (so they do not widen the block
//! range); dequantization overwrites those positions with the f16 value (with GPTQ,
//! `quantize_gptq`, the value is the weight after the error feedback of the columns before
//! it). The sections after the dense part are not 4-byte aligned in general, so accessors
//! hand out byte slices and decoded iterators.
//!
//! **Selection** (a converter choice; readers do not depend on it). A removed weight helps
//! only by narrowing its block's range: with 4 levels (q2) one extreme value in a block of
//! 32 wastes most of the grid, while a globally large |w| in a block that is wide anyway
//! gains little. So each block (of the dense part's block size, within a row) is scored by
//! an error model of its dense fit, `E = Σw · range²` over its remaining entries of positive
//! weight (w = importance of the column, or 1; a uniform grid over the range leaves each
//! value an error ∝ step², the step ∝ range). For `j = 1..=s` removals (`s` = 4, or 4× the
//! block's expected share `frac·block` if larger, at most 64) the best split into the `a`
//! smallest and `j − a` largest entries gives the gain `F(j) = E(0, 0) − min_a E(a, j − a)`;
//! the slopes of the upper concave hull of `F` are the block's marginal gains (non-
//! increasing, so taking a prefix of them is consistent), and the `k` largest marginal
//! gains of the whole tensor choose how many entries each block gives up (ties: lower
//! block index first). When the blocks have fewer candidates than `k` (very large
//! fractions, or mostly zero-importance columns) the rest are the largest
//! |w|·sqrt(importance) not yet taken (ties by lower flat index) — the selection used before
//! 2026-11-30 for all of them (docs/quality.md compares the two).
//!
//! **Across tensors** the count `k` is the caller's: `ceil(outlier_frac · numel)` by
//! default, or [`QuantParams::outlier_count`]. The converter's default spreads the whole
//! model's budget with [`selection_gains`] and [`allocate`]: the same marginal gains,
//! compared between tensors (with an importance, divided by its mean), so that a tensor
//! whose blocks have wilder extremes takes more outliers than a smooth one.

use super::float::{read_f16, write_f16};
use super::{q2, q3, q4, QuantParams, QuantType};
use crate::error::{Error, Result};

/// Bytes of the dense part of an outlier tensor (`None` on overflow or a non-outlier type).
fn dense_bytes(qt: QuantType, block: usize, rows: usize, cols: usize) -> Option<usize> {
    if !qt.is_outlier() || !qt.valid_block(block) {
        return None;
    }
    qt.base().row_bytes(block, cols).checked_mul(rows)
}

/// The outlier count of a tensor of `numel` weights at fraction `frac`:
/// `ceil(frac · numel)`.
pub fn count_for(frac: f32, numel: usize) -> usize {
    // `frac` is an f32 (0.05 is 0.0500000007): shave its representation error so that
    // 0.05 × 160 gives 8 outliers, not 9.
    (frac as f64 * numel as f64 * (1.0 - 1e-7)).ceil() as usize
}

/// Quantize a row-major `rows × cols` tensor to an outlier type `qt` (see the module docs).
pub fn quantize(
    qt: QuantType,
    data: &[f32],
    rows: usize,
    cols: usize,
    params: &QuantParams<'_>,
) -> Result<Vec<u8>> {
    quantize_impl(qt, data, rows, cols, params, None, Select::Error)
}

/// [`quantize`] with GPTQ error feedback (`quant::gptq`) for the dense part: the outliers
/// are chosen the same way, then the dense rows are swept with `f`; each outlier stores
/// its error-updated value.
pub fn quantize_gptq(
    qt: QuantType,
    data: &[f32],
    rows: usize,
    cols: usize,
    params: &QuantParams<'_>,
    f: &super::gptq::GptqFactor,
) -> Result<Vec<u8>> {
    quantize_impl(qt, data, rows, cols, params, Some(f), Select::Error)
}

/// How the outliers are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Select {
    /// Global top-k of |w| (|w|·sqrt(importance)): the selection before 2026-11-30, kept
    /// as the tests' reference.
    #[cfg_attr(not(test), allow(dead_code))]
    Magnitude,
    /// Largest block error reductions (the module docs).
    Error,
}

fn quantize_impl(
    qt: QuantType,
    data: &[f32],
    rows: usize,
    cols: usize,
    params: &QuantParams<'_>,
    gptq: Option<&super::gptq::GptqFactor>,
    select: Select,
) -> Result<Vec<u8>> {
    let block = params.block_size;
    if !qt.is_outlier() {
        return Err(Error::InvalidArgument(format!(
            "{qt} is not an outlier type"
        )));
    }
    let dense_len = dense_bytes(qt, block, rows, cols).ok_or_else(|| {
        Error::InvalidArgument(format!("block size {block} is not valid for {qt}"))
    })?;
    let numel = rows
        .checked_mul(cols)
        .filter(|n| *n == data.len())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "tensor data has {} values, shape is {rows}x{cols}",
                data.len()
            ))
        })?;
    if cols > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{cols} columns do not fit the outlier index"
        )));
    }
    if let Some(imp) = params.importance {
        if imp.len() != cols {
            return Err(Error::InvalidArgument(format!(
                "importance has {} values for {cols} columns",
                imp.len()
            )));
        }
    }
    let frac = params.outlier_frac;
    if !(0.0..=1.0).contains(&frac) {
        return Err(Error::InvalidArgument(format!(
            "outlier_frac {frac} is not in [0, 1]"
        )));
    }
    let k = params
        .outlier_count
        .unwrap_or_else(|| count_for(frac, numel))
        .min(numel);
    if k > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{k} outliers do not fit a u32 count"
        )));
    }

    let mut is_out = vec![false; numel];
    let taken = match select {
        Select::Magnitude => 0,
        Select::Error => select_by_error(
            data,
            cols,
            block,
            params.importance,
            frac as f64,
            k,
            &mut is_out,
        ),
    };
    // Magnitude, or the rest when the blocks ran out of candidates (fractions above
    // ≈ 4/block·MAX_STEPS, or many zero-importance columns).
    if taken < k {
        select_by_magnitude(data, cols, params.importance, k - taken, &mut is_out);
    }

    let rb = qt.base().row_bytes(block, cols);
    let total = dense_len + 4 + 4 * (rows + 1) + 6 * k;
    let mut out = vec![0u8; total];
    let (dense, tail) = out.split_at_mut(dense_len);
    let values: std::borrow::Cow<'_, [f32]> = if let Some(f) = gptq {
        let (bytes, upd) = super::gptq::quantize_dense(
            qt.base(),
            block,
            data,
            rows,
            cols,
            Some(&is_out),
            params.importance,
            f,
        )?;
        dense.copy_from_slice(&bytes);
        std::borrow::Cow::Owned(upd)
    } else {
        let mut buf = vec![0f32; cols];
        let mut w = vec![0f32; cols];
        for r in 0..rows {
            let src = &data[r * cols..(r + 1) * cols];
            let flags = &is_out[r * cols..(r + 1) * cols];
            for c in 0..cols {
                let base_w = params.importance.map_or(1.0, |imp| imp[c]);
                if flags[c] {
                    buf[c] = 0.0;
                    w[c] = 0.0;
                } else {
                    buf[c] = src[c];
                    w[c] = base_w;
                }
            }
            let dst = &mut dense[r * rb..(r + 1) * rb];
            match qt.base() {
                QuantType::Q2 => q2::quantize_row(block, &buf, Some(&w), dst),
                QuantType::Q3 => q3::quantize_row(block, &buf, Some(&w), dst),
                _ => q4::quantize_row(block, &buf, Some(&w), dst),
            }
        }
        std::borrow::Cow::Borrowed(data)
    };
    tail[0..4].copy_from_slice(&(k as u32).to_le_bytes());
    let (ptrs, rest) = tail[4..].split_at_mut(4 * (rows + 1));
    let (colb, valb) = rest.split_at_mut(4 * k);
    let mut n = 0usize;
    ptrs[0..4].copy_from_slice(&0u32.to_le_bytes());
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            if is_out[i] {
                colb[4 * n..4 * n + 4].copy_from_slice(&(c as u32).to_le_bytes());
                write_f16(&mut valb[2 * n..2 * n + 2], values[i]);
                n += 1;
            }
        }
        ptrs[4 * (r + 1)..4 * (r + 2)].copy_from_slice(&(n as u32).to_le_bytes());
    }
    debug_assert_eq!(n, k);
    Ok(out)
}

/// Magnitude selection: marks the `k` entries not yet in `is_out` with the largest score
/// |w| (|w|·sqrt(importance[col]) with importance), ties by lower flat index.
fn select_by_magnitude(
    data: &[f32],
    cols: usize,
    importance: Option<&[f32]>,
    k: usize,
    is_out: &mut [bool],
) {
    // Threshold = k-th largest score; take every score > t, then score == t in index order.
    let scale: Option<Vec<f32>> =
        importance.map(|imp| imp.iter().map(|v| v.max(0.0).sqrt()).collect());
    let score = |i: usize, v: f32| match &scale {
        Some(sc) => v.abs() * sc[i % cols],
        None => v.abs(),
    };
    let sc = |i: usize| {
        if is_out[i] {
            f32::NEG_INFINITY
        } else {
            score(i, data[i])
        }
    };
    let free = is_out.iter().filter(|o| !**o).count();
    let k = k.min(free);
    if k == 0 {
        return;
    }
    let mut mags: Vec<f32> = (0..data.len()).map(sc).collect();
    let pos = data.len() - k;
    let (_, t, _) = mags.select_nth_unstable_by(pos, |a, b| a.total_cmp(b));
    let t = *t;
    drop(mags);
    let mut new = vec![false; data.len()];
    let mut taken = 0usize;
    for (i, nw) in new.iter_mut().enumerate() {
        if sc(i).total_cmp(&t).is_gt() {
            *nw = true;
            taken += 1;
        }
    }
    for (i, nw) in new.iter_mut().enumerate() {
        if taken == k {
            break;
        }
        if sc(i).total_cmp(&t).is_eq() && !*nw {
            *nw = true;
            taken += 1;
        }
    }
    for (o, nw) in is_out.iter_mut().zip(new) {
        *o |= nw;
    }
}

/// Most removal steps per block the error-gain selection considers (see [`select_by_error`]).
const MAX_STEPS: usize = 64;

/// Removal steps per block considered for an outlier fraction `frac` of blocks of `block`
/// values: 4, or 4× the block's expected share if that is larger (capped at [`MAX_STEPS`]).
fn steps_per_block(frac: f64, block: usize) -> usize {
    ((4.0 * frac * block as f64).ceil() as usize).clamp(4, MAX_STEPS)
}

/// Key of a block entry in the block's total order — by value (`f32::total_cmp` order),
/// ties by column — as one integer: order-preserving bits of the value, then the column.
#[inline]
fn entry_key(v: f32, col: usize) -> u64 {
    let b = v.to_bits();
    let ord = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    ((ord as u64) << 32) | col as u64
}

/// The value of an [`entry_key`].
#[inline]
fn key_value(k: u64) -> f32 {
    let ord = (k >> 32) as u32;
    f32::from_bits(if ord >> 31 == 1 {
        ord & 0x7fff_ffff
    } else {
        !ord
    })
}

/// The column of an [`entry_key`].
#[inline]
fn key_col(k: u64) -> usize {
    (k & 0xffff_ffff) as usize
}

/// One block's `steps + 1` smallest and largest entries of positive weight and their total
/// weight: the scratch of [`select_by_error`].
struct BlockScratch {
    /// Entries of positive weight.
    n: usize,
    /// Their total weight.
    w: f64,
    /// Entries kept in `lo` / `hi` (`min(n, steps + 1)`).
    len: usize,
    /// Keys of the smallest entries, ascending.
    lo: [u64; MAX_STEPS + 1],
    /// Keys of the largest entries, descending.
    hi: [u64; MAX_STEPS + 1],
    /// `lo_w[a]` = weight of `lo[..a]`.
    lo_w: [f64; MAX_STEPS + 2],
    /// `hi_w[b]` = weight of `hi[..b]`.
    hi_w: [f64; MAX_STEPS + 2],
}

impl Default for BlockScratch {
    fn default() -> Self {
        BlockScratch {
            n: 0,
            w: 0.0,
            len: 0,
            lo: [0; MAX_STEPS + 1],
            hi: [0; MAX_STEPS + 1],
            lo_w: [0.0; MAX_STEPS + 2],
            hi_w: [0.0; MAX_STEPS + 2],
        }
    }
}

impl BlockScratch {
    /// Load the block `x` (columns `c0..c0 + x.len()`), keeping its `steps + 1`
    /// (≤ `MAX_STEPS + 1`) smallest and largest finite entries whose weight
    /// (`importance[col]` or 1) is positive.
    fn load(&mut self, x: &[f32], c0: usize, importance: Option<&[f32]>, steps: usize) {
        match importance {
            Some(imp) => self.load_w::<true>(x, c0, imp, steps),
            None => self.load_w::<false>(x, c0, &[], steps),
        }
    }

    /// [`Self::load`] with weights `imp` (`W`) or all weights 1 (`!W`, `imp` not read).
    #[inline(always)]
    fn load_w<const W: bool>(&mut self, x: &[f32], c0: usize, imp: &[f32], steps: usize) {
        let cap = (steps + 1).min(MAX_STEPS + 1);
        let (mut n, mut wsum, mut len) = (0usize, 0f64, 0usize);
        let (lo, hi) = (&mut self.lo, &mut self.hi);
        let imp = if W { &imp[c0..c0 + x.len()] } else { imp };
        for (i, v) in x.iter().enumerate() {
            if W {
                let w = imp[i];
                if !(w > 0.0 && v.is_finite()) {
                    continue;
                }
                wsum += w as f64;
            } else if !v.is_finite() {
                continue;
            }
            n += 1;
            let k = entry_key(*v, c0 + i);
            if len < cap {
                // both lists take it: insertion into sorted prefixes
                let mut p = len;
                while p > 0 && lo[p - 1] > k {
                    lo[p] = lo[p - 1];
                    p -= 1;
                }
                lo[p] = k;
                let mut p = len;
                while p > 0 && hi[p - 1] < k {
                    hi[p] = hi[p - 1];
                    p -= 1;
                }
                hi[p] = k;
                len += 1;
                continue;
            }
            if k < lo[cap - 1] {
                let mut p = cap - 1;
                while p > 0 && lo[p - 1] > k {
                    lo[p] = lo[p - 1];
                    p -= 1;
                }
                lo[p] = k;
            }
            if k > hi[cap - 1] {
                let mut p = cap - 1;
                while p > 0 && hi[p - 1] < k {
                    hi[p] = hi[p - 1];
                    p -= 1;
                }
                hi[p] = k;
            }
        }
        if !W {
            wsum = n as f64;
        }
        (self.n, self.w, self.len) = (n, wsum, len);
        let weight = |k: u64| if W { imp[key_col(k) - c0] as f64 } else { 1.0 };
        let (mut a, mut b) = (0f64, 0f64);
        self.lo_w[0] = 0.0;
        self.hi_w[0] = 0.0;
        for i in 0..len {
            a += weight(self.lo[i]);
            b += weight(self.hi[i]);
            self.lo_w[i + 1] = a;
            self.hi_w[i + 1] = b;
        }
    }

    /// Error model of the block's dense fit with its `a` smallest and `b` largest entries
    /// removed (`a, b ≤ steps`): the remaining weight times the squared range — a uniform
    /// grid over the range leaves each value a squared error ∝ step², and the step ∝ range
    /// (the constant factor is the same for every block of a tensor and left out).
    fn err(&self, a: usize, b: usize) -> f64 {
        if a + b >= self.n {
            return 0.0;
        }
        // a + b < n: the a smallest and b largest are disjoint, lo[a] and hi[b] exist and
        // are the remaining minimum and maximum.
        let r = (key_value(self.hi[b]) - key_value(self.lo[a])) as f64;
        (self.w - self.lo_w[a] - self.hi_w[b]).max(0.0) * r * r
    }
}

/// Per block: the slopes of the upper concave hull of the best error reduction `F(j)`
/// (over removing the `a` smallest and `j − a` largest entries, `j = 1..=steps`) into
/// `slopes` (non-increasing; `−∞` for steps beyond the block's entries), and the best `a`
/// for each `j` into `best_a` (`steps + 1` entries).
fn block_gains(sc: &BlockScratch, steps: usize, slopes: &mut [f32], best_a: &mut [u8]) {
    let cb = steps.min(sc.n);
    let e0 = sc.err(0, 0);
    let mut f = [0f64; MAX_STEPS + 1];
    best_a.fill(0);
    for j in 1..=cb {
        let (mut bf, mut ba) = (f64::NEG_INFINITY, 0usize);
        for a in 0..=j {
            let g = e0 - sc.err(a, j - a);
            if g > bf {
                bf = g;
                ba = a;
            }
        }
        f[j] = bf;
        best_a[j] = ba as u8;
    }
    // Upper concave hull of (j, f[j]), j = 0..=cb (monotone chain).
    let mut hull = [0usize; MAX_STEPS + 1];
    let mut h = 0usize;
    for j in 0..=cb {
        while h >= 2 {
            let (p, q) = (hull[h - 2], hull[h - 1]);
            // drop q if it lies on or below the segment p → j
            if (f[q] - f[p]) * (j - p) as f64 <= (f[j] - f[p]) * (q - p) as f64 {
                h -= 1;
            } else {
                break;
            }
        }
        hull[h] = j;
        h += 1;
    }
    for w in hull[..h].windows(2) {
        let (p, q) = (w[0], w[1]);
        let s = ((f[q] - f[p]) / (q - p) as f64) as f32;
        slopes[p..q].fill(s);
    }
    slopes[cb..].fill(f32::NEG_INFINITY);
}

/// The error-gain selection's per-block marginal gains of a tensor (see the module docs).
struct Slopes {
    /// Removal steps considered per block.
    steps: usize,
    /// Blocks per row.
    nbr: usize,
    /// `rows × nbr × steps` slopes, non-increasing within a block (`−∞` past its entries).
    slopes: Vec<f32>,
    /// `rows × nbr × (steps + 1)`: the best number of smallest entries for `j` removals.
    best_a: Vec<u8>,
}

fn block_slopes(
    data: &[f32],
    cols: usize,
    block: usize,
    importance: Option<&[f32]>,
    frac: f64,
) -> Slopes {
    use rayon::prelude::*;
    let rows = data.len() / cols.max(1);
    let block = block.max(1);
    let nbr = cols.div_ceil(block);
    let steps = steps_per_block(frac, block);
    let mut slopes = vec![0f32; rows * nbr * steps];
    let mut best_a = vec![0u8; rows * nbr * (steps + 1)];
    if cols == 0 {
        return Slopes {
            steps,
            nbr,
            slopes,
            best_a,
        };
    }
    slopes
        .par_chunks_mut(nbr * steps)
        .zip(best_a.par_chunks_mut(nbr * (steps + 1)))
        .enumerate()
        .for_each_init(BlockScratch::default, |sc, (r, (sl, ba))| {
            let row = &data[r * cols..(r + 1) * cols];
            for b in 0..nbr {
                let (c0, c1) = (b * block, ((b + 1) * block).min(cols));
                sc.load(&row[c0..c1], c0, importance, steps);
                block_gains(
                    sc,
                    steps,
                    &mut sl[b * steps..(b + 1) * steps],
                    &mut ba[b * (steps + 1)..(b + 1) * (steps + 1)],
                );
            }
        });
    Slopes {
        steps,
        nbr,
        slopes,
        best_a,
    }
}

/// The error-gain selection's marginal gains of a whole tensor, largest first (at most
/// `cap` of them), for spreading one outlier budget over several tensors ([`allocate`]).
/// With an importance, the gains are divided by its mean, so that tensors whose inputs
/// differ in scale compare as unweighted ones do (the importance still decides which
/// entries of a tensor gain most). Quantizing the tensor with
/// [`QuantParams::outlier_count`] `= Some(k)` (same `frac`, block size and importance)
/// takes exactly the gains this list ranks first (ties in block order).
pub fn selection_gains(
    data: &[f32],
    cols: usize,
    block: usize,
    importance: Option<&[f32]>,
    frac: f32,
    cap: usize,
) -> Vec<f32> {
    let s = block_slopes(data, cols, block, importance, frac as f64);
    let mut g: Vec<f32> = s.slopes.into_iter().filter(|v| v.is_finite()).collect();
    if cap < g.len() {
        g.select_nth_unstable_by(cap, |a, b| b.total_cmp(a));
        g.truncate(cap);
    }
    g.sort_unstable_by(|a, b| b.total_cmp(a));
    if let Some(imp) = importance {
        let mean = imp.iter().map(|v| v.max(0.0) as f64).sum::<f64>() / imp.len().max(1) as f64;
        if mean > 0.0 {
            g.iter_mut().for_each(|v| *v = (*v as f64 / mean) as f32);
        }
    }
    g
}

/// Spread the total of `counts` (each tensor's own outlier count) over the tensors by
/// their [`selection_gains`] (`gains[t]`, descending): the budget goes to the largest gains
/// of all tensors (ties to earlier tensors). Returns the new counts, with the same sum
/// unless the tensors have fewer gains than the budget, in which case each tensor first
/// takes all of its gains and the rest is given back to tensors below their own count.
pub fn allocate(gains: &[Vec<f32>], counts: &[usize]) -> Vec<usize> {
    assert_eq!(gains.len(), counts.len(), "one gain list per tensor");
    let total: usize = counts.iter().sum();
    let mut all: Vec<f32> = gains.iter().flatten().copied().collect();
    let t = if total == 0 {
        f32::INFINITY
    } else if total > all.len() {
        f32::NEG_INFINITY
    } else {
        *all.select_nth_unstable_by(total - 1, |a, b| b.total_cmp(a))
            .1
    };
    drop(all);
    let mut out: Vec<usize> = gains
        .iter()
        .map(|g| g.partition_point(|v| v.total_cmp(&t).is_gt()))
        .collect();
    let mut left = total.saturating_sub(out.iter().sum());
    for (c, g) in out.iter_mut().zip(gains) {
        let ties = g.partition_point(|v| v.total_cmp(&t).is_ge()) - *c;
        let n = ties.min(left);
        *c += n;
        left -= n;
    }
    for (c, &own) in out.iter_mut().zip(counts) {
        if left > 0 && *c < own {
            let n = (own - *c).min(left);
            *c += n;
            left -= n;
        }
    }
    out
}

/// Error-gain outlier selection (see the module docs): marks up to `k` entries of `is_out`
/// (all `false` on entry), among the `steps_per_block` smallest and largest entries of
/// positive weight of each block; returns how many it marked (`k` unless the blocks have
/// fewer candidates).
fn select_by_error(
    data: &[f32],
    cols: usize,
    block: usize,
    importance: Option<&[f32]>,
    frac: f64,
    k: usize,
    is_out: &mut [bool],
) -> usize {
    use rayon::prelude::*;
    if k == 0 || cols == 0 {
        return 0;
    }
    let Slopes {
        steps,
        nbr,
        slopes,
        best_a,
        ..
    } = block_slopes(data, cols, block, importance, frac);
    let rows = data.len() / cols;
    let block = block.max(1);
    // Threshold = the k-th largest finite slope: every slope above it, then slopes equal
    // to it in block order (within a block the slopes are non-increasing, so each block
    // takes a prefix of its steps).
    let mut finite: Vec<f32> = slopes.iter().copied().filter(|s| s.is_finite()).collect();
    let t = if k >= finite.len() {
        f32::NEG_INFINITY
    } else {
        let pos = finite.len() - k;
        *finite.select_nth_unstable_by(pos, |a, b| a.total_cmp(b)).1
    };
    drop(finite);
    let mut count = vec![0u8; rows * nbr];
    let mut taken = 0usize;
    for (cnt, sl) in count.iter_mut().zip(slopes.chunks_exact(steps)) {
        let m = sl.iter().take_while(|s| s.is_finite() && **s > t).count();
        *cnt = m as u8;
        taken += m;
    }
    for (cnt, sl) in count.iter_mut().zip(slopes.chunks_exact(steps)) {
        while taken < k
            && sl
                .get(*cnt as usize)
                .is_some_and(|s| s.is_finite() && *s == t)
        {
            *cnt += 1;
            taken += 1;
        }
    }
    drop(slopes);
    is_out
        .par_chunks_mut(cols)
        .zip(count.par_chunks(nbr))
        .enumerate()
        .map_init(BlockScratch::default, |sc, (r, (flags, cnt))| {
            let row = &data[r * cols..(r + 1) * cols];
            let mut n = 0usize;
            for (b, &j) in cnt.iter().enumerate().filter(|(_, j)| **j > 0) {
                let j = j as usize;
                let (c0, c1) = (b * block, ((b + 1) * block).min(cols));
                sc.load(&row[c0..c1], c0, importance, steps);
                let a = best_a[(r * nbr + b) * (steps + 1) + j] as usize;
                for e in sc.lo[..a].iter().chain(&sc.hi[..j - a]) {
                    flags[key_col(*e)] = true;
                }
                n += j;
            }
            n
        })
        .sum()
}

#[inline]
fn read_u32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// A validated, zero-copy view of an outlier tensor's bytes.
#[derive(Debug, Clone, Copy)]
pub struct OutlierView<'a> {
    qt: QuantType,
    block: usize,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    n: usize,
    dense: &'a [u8],
    row_ptr: &'a [u8],
    col: &'a [u8],
    val: &'a [u8],
}

impl<'a> OutlierView<'a> {
    /// Check only the section sizes of `bytes` (O(1)) and split it — for tensors already
    /// validated by [`Self::parse`] (e.g. at bind time), so per-token kernels do not rescan
    /// every outlier. The row pointers and columns are not checked: on a corrupt tensor the
    /// accessors may panic (slice bounds) but never read out of bounds.
    pub fn parse_sizes(
        qt: QuantType,
        block: usize,
        bytes: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        if !qt.is_outlier() {
            return Err(Error::InvalidArgument(format!(
                "{qt} is not an outlier type"
            )));
        }
        let bad = |msg: String| {
            Error::corrupt(format!("{qt} tensor {rows}x{cols} (block {block}): {msg}"))
        };
        let dense_len = dense_bytes(qt, block, rows, cols)
            .ok_or_else(|| bad("bad block size or shape".into()))?;
        let ptr_len = rows
            .checked_add(1)
            .and_then(|r| r.checked_mul(4))
            .ok_or_else(|| bad("row count overflows".into()))?;
        let head = dense_len
            .checked_add(4 + ptr_len)
            .ok_or_else(|| bad("size overflows".into()))?;
        if bytes.len() < head {
            return Err(bad(format!("{} bytes, need at least {head}", bytes.len())));
        }
        let n = read_u32(&bytes[dense_len..dense_len + 4], 0) as usize;
        let total = n
            .checked_mul(6)
            .and_then(|v| v.checked_add(head))
            .ok_or_else(|| bad(format!("{n} outliers overflow")))?;
        if bytes.len() != total {
            return Err(bad(format!(
                "{} bytes, {n} outliers need exactly {total}",
                bytes.len()
            )));
        }
        let view = OutlierView {
            qt,
            block,
            rows,
            cols,
            row_bytes: qt.base().row_bytes(block, cols),
            n,
            dense: &bytes[..dense_len],
            row_ptr: &bytes[dense_len + 4..head],
            col: &bytes[head..head + 4 * n],
            val: &bytes[head + 4 * n..],
        };
        Ok(view)
    }

    /// Parse and validate `bytes` as a `rows × cols` tensor of outlier type `qt`.
    /// Every size and index is checked: the byte length must match `n_outliers` exactly,
    /// `row_ptr` must start at 0, be non-decreasing and end at `n_outliers`, and each row's
    /// columns must be `< cols` and strictly increasing. Violations give [`Error::Corrupt`].
    pub fn parse(
        qt: QuantType,
        block: usize,
        bytes: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        let view = Self::parse_sizes(qt, block, bytes, rows, cols)?;
        let (row_ptr, col, n) = (view.row_ptr, view.col, view.n);
        let bad = |msg: String| {
            Error::corrupt(format!("{qt} tensor {rows}x{cols} (block {block}): {msg}"))
        };
        if read_u32(row_ptr, 0) != 0 {
            return Err(bad("row_ptr[0] is not 0".into()));
        }
        let mut prev = 0usize;
        for r in 0..rows {
            let end = read_u32(row_ptr, r + 1) as usize;
            if end < prev || end > n {
                return Err(bad(format!(
                    "row_ptr[{}] = {end} (previous {prev}, n {n})",
                    r + 1
                )));
            }
            let mut last: Option<u32> = None;
            for i in prev..end {
                let c = read_u32(col, i);
                if c as usize >= cols {
                    return Err(bad(format!(
                        "outlier {i} in row {r} has column {c} >= {cols}"
                    )));
                }
                if last.is_some_and(|l| c <= l) {
                    return Err(bad(format!(
                        "outlier columns of row {r} are not strictly increasing"
                    )));
                }
                last = Some(c);
            }
            prev = end;
        }
        if prev != n {
            return Err(bad(format!("row_ptr ends at {prev}, n_outliers is {n}")));
        }
        Ok(view)
    }

    /// The outlier type.
    pub fn qtype(&self) -> QuantType {
        self.qt
    }
    /// The dense base type (q2/q3/q4).
    pub fn base(&self) -> QuantType {
        self.qt.base()
    }
    /// Block size of the dense part.
    pub fn block(&self) -> usize {
        self.block
    }
    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Total number of outliers.
    pub fn n_outliers(&self) -> usize {
        self.n
    }
    /// The whole dense part (`rows × row_bytes` bytes of the base type).
    pub fn dense(&self) -> &'a [u8] {
        self.dense
    }
    /// Bytes of one dense row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Dense row `r` (panics if `r >= rows`).
    pub fn dense_row(&self, r: usize) -> &'a [u8] {
        &self.dense[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Index range of row `r`'s outliers in the column/value arrays.
    pub fn outlier_range(&self, r: usize) -> std::ops::Range<usize> {
        read_u32(self.row_ptr, r) as usize..read_u32(self.row_ptr, r + 1) as usize
    }

    /// Row `r`'s outliers as raw bytes: (little-endian u32 columns, little-endian f16 values).
    pub fn outliers_in_row(&self, r: usize) -> (&'a [u8], &'a [u8]) {
        let rg = self.outlier_range(r);
        (
            &self.col[4 * rg.start..4 * rg.end],
            &self.val[2 * rg.start..2 * rg.end],
        )
    }

    /// Row `r`'s outliers decoded as `(column, value)`, in increasing column order.
    pub fn outliers(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + 'a {
        let (c, v) = self.outliers_in_row(r);
        c.chunks_exact(4).zip(v.chunks_exact(2)).map(|(c, v)| {
            (
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize,
                read_f16(v),
            )
        })
    }

    /// The dense part's (quantized) value at `(r, c)` — what an outlier overwrites.
    pub fn dense_value(&self, r: usize, c: usize) -> f32 {
        let row = self.dense_row(r);
        match self.base() {
            QuantType::Q2 => q2::dequantize_one(self.block, row, c),
            QuantType::Q3 => q3::dequantize_one(self.block, row, c),
            _ => q4::dequantize_one(self.block, row, c),
        }
        .unwrap_or(0.0)
    }

    /// Dequantize row `r` into `out` (`out.len()` values, normally `cols`): the dense row,
    /// then each outlier overwrites its position.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        super::dequantize_row(self.base(), self.block, self.dense_row(r), out);
        for (c, v) in self.outliers(r) {
            if let Some(o) = out.get_mut(c) {
                *o = v;
            }
        }
    }

    /// Every outlier decoded once into an [`OutlierDeltas`] table: `(column, v − dense)` per
    /// outlier, `v` its value and `dense` the dense value it replaces
    /// ([`Self::dense_value`]), with each row's start. `Tensor::outlier_deltas` builds it on
    /// first use so the kernels' per-token corrections are one multiply-add each.
    pub fn deltas(&self) -> OutlierDeltas {
        let mut starts = Vec::with_capacity(self.rows + 1);
        let mut entries = Vec::with_capacity(self.n);
        starts.push(0);
        for r in 0..self.rows {
            entries.extend(
                self.outliers(r)
                    .map(|(c, v)| (c as u32, v - self.dense_value(r, c))),
            );
            starts.push(entries.len());
        }
        OutlierDeltas {
            qt: self.qt,
            block: self.block,
            rows: self.rows,
            cols: self.cols,
            starts,
            entries,
        }
    }

    /// Scalar reference dot product of row `r` with `x` (uses `x.len()` values): the dense
    /// dot plus, for each outlier, `(val − dense_value) · x[col]`, so it equals the dot of
    /// [`Self::dequantize_row`]'s output with `x` up to float rounding.
    pub fn dot_row_ref(&self, r: usize, x: &[f32]) -> f32 {
        let mut acc = super::dot_row_ref(self.base(), self.block, self.dense_row(r), x);
        for (c, v) in self.outliers(r) {
            if let Some(xv) = x.get(c) {
                acc += (v - self.dense_value(r, c)) * xv;
            }
        }
        acc
    }
}

/// The outliers of an outlier tensor decoded for the kernels ([`OutlierView::deltas`]):
/// per row, `(column, value − dense value)` in increasing column order. A row's dot is its
/// dense dot plus `Σ delta·x[column]`. 8 bytes per outlier in memory (the file keeps 6).
#[derive(Debug, Clone)]
pub struct OutlierDeltas {
    qt: QuantType,
    block: usize,
    rows: usize,
    cols: usize,
    /// row `r`'s entries are `entries[starts[r]..starts[r + 1]]`
    starts: Vec<usize>,
    entries: Vec<(u32, f32)>,
}

impl OutlierDeltas {
    /// Row `r`'s `(column, value − dense value)` pairs (panics if `r >= rows`).
    #[inline]
    pub fn row(&self, r: usize) -> &[(u32, f32)] {
        &self.entries[self.starts[r]..self.starts[r + 1]]
    }

    /// Whether the table was built for a `rows × cols` tensor of type `qt`, block `block`.
    pub fn matches(&self, qt: QuantType, block: usize, rows: usize, cols: usize) -> bool {
        (self.qt, self.block, self.rows, self.cols) == (qt, block, rows, cols)
    }

    /// Number of outliers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the tensor has no outliers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(frac: f32) -> QuantParams<'static> {
        QuantParams {
            outlier_count: None,
            block_size: 32,
            outlier_frac: frac,
            importance: None,
        }
    }

    #[test]
    fn hand_built_layout() {
        // 2 × 32 tensor, values 0.01·c; two spikes. frac 2/64 → exactly those two outliers.
        let mut data: Vec<f32> = (0..64).map(|i| (i % 32) as f32 * 0.01).collect();
        data[5] = 100.0;
        data[32 + 7] = -50.0;
        let b = quantize(QuantType::Q4Outlier, &data, 2, 32, &params(2.0 / 64.0)).unwrap();
        let dense = 2 * 20;
        assert_eq!(b.len(), dense + 4 + 12 + 8 + 4);
        assert_eq!(&b[dense..dense + 4], &2u32.to_le_bytes());
        assert_eq!(
            &b[dense + 4..dense + 16],
            &[0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]
        );
        assert_eq!(&b[dense + 16..dense + 24], &[5, 0, 0, 0, 7, 0, 0, 0]);
        // f16(100) = 0x5640, f16(-50) = 0xD240.
        assert_eq!(&b[dense + 24..], &[0x40, 0x56, 0x40, 0xd2]);
        let v = OutlierView::parse(QuantType::Q4Outlier, 32, &b, 2, 32).unwrap();
        assert_eq!(v.n_outliers(), 2);
        assert_eq!(v.outliers(1).collect::<Vec<_>>(), vec![(7, -50.0)]);
        let mut out = [0f32; 32];
        v.dequantize_row(0, &mut out);
        assert_eq!(out[5], 100.0);
        // The dense range ignored the spike: the rest is within half a step of 0.31/15.
        for c in (0..32).filter(|&c| c != 5) {
            assert!(
                (out[c] - c as f32 * 0.01).abs() <= 0.011,
                "col {c}: {}",
                out[c]
            );
        }
    }

    #[test]
    fn deltas_are_value_minus_dense_per_row() {
        let mut data: Vec<f32> = (0..3 * 64).map(|i| ((i * 37) % 17) as f32 * 0.01).collect();
        data[3] = 9.0;
        data[64 + 40] = -7.0;
        data[64 + 41] = 5.0;
        let b = quantize(QuantType::Q2Outlier, &data, 3, 64, &params(3.0 / 192.0)).unwrap();
        let v = OutlierView::parse(QuantType::Q2Outlier, 32, &b, 3, 64).unwrap();
        let d = v.deltas();
        assert_eq!(d.len(), 3);
        assert!(d.matches(QuantType::Q2Outlier, 32, 3, 64));
        assert!(!d.matches(QuantType::Q2Outlier, 32, 64, 3));
        for r in 0..3 {
            let want: Vec<(u32, f32)> = v
                .outliers(r)
                .map(|(c, x)| (c as u32, x - v.dense_value(r, c)))
                .collect();
            assert_eq!(d.row(r), &want[..]);
        }
        assert_eq!(d.row(1).iter().map(|e| e.0).collect::<Vec<_>>(), [40, 41]);
        assert!(d.row(2).is_empty());
    }

    #[test]
    fn zero_fraction_and_shape_errors() {
        let data = vec![1.0f32; 40];
        let b = quantize(QuantType::Q2Outlier, &data, 1, 40, &params(0.0)).unwrap();
        assert_eq!(b.len(), 2 * 12 + 4 + 8);
        assert!(OutlierView::parse(QuantType::Q2Outlier, 32, &b, 1, 40).is_ok());
        assert!(quantize(QuantType::Q2Outlier, &data, 2, 40, &params(0.0)).is_err());
        assert!(quantize(QuantType::Q2Outlier, &data, 1, 40, &params(1.5)).is_err());
        assert!(quantize(QuantType::Q2, &data, 1, 40, &params(0.1)).is_err());
        assert!(OutlierView::parse(QuantType::Q2Outlier, 48, &b, 1, 40).is_err());
    }

    /// Weighted squared error of the dequantized tensor against `data`.
    fn recon_err(b: &[u8], data: &[f32], rows: usize, cols: usize, imp: Option<&[f32]>) -> f64 {
        let v = OutlierView::parse(QuantType::Q2Outlier, 32, b, rows, cols).unwrap();
        let mut out = vec![0f32; cols];
        let mut e = 0f64;
        for r in 0..rows {
            v.dequantize_row(r, &mut out);
            for c in 0..cols {
                let d = (out[c] - data[r * cols + c]) as f64;
                e += imp.map_or(1.0, |i| i[c] as f64) * d * d;
            }
        }
        e
    }

    fn q2o(data: &[f32], rows: usize, cols: usize, p: &QuantParams<'_>, s: Select) -> Vec<u8> {
        quantize_impl(QuantType::Q2Outlier, data, rows, cols, p, None, s).unwrap()
    }

    #[test]
    fn error_selection_prefers_the_block_range_outlier() {
        // Block 0: 31 values evenly in [−0.5, 0.5] and 1.0 at column 7 (it alone stretches
        // the block's range by half). Block 1: 32 values evenly in [−1.1, 1.1] (its ends are
        // the tensor's largest |w| but removing one shrinks its range by 3%). One outlier.
        let mut data: Vec<f32> = (0..31).map(|j| -0.5 + j as f32 / 30.0).collect();
        data.insert(7, 1.0);
        data.extend((0..32).map(|c| -1.1 + 2.2 * c as f32 / 31.0));
        let p = params(1.0 / 64.0);
        for sel in [Select::Error, Select::Magnitude] {
            let b = q2o(&data, 1, 64, &p, sel);
            let v = OutlierView::parse(QuantType::Q2Outlier, 32, &b, 1, 64).unwrap();
            let got: Vec<usize> = v.outliers(0).map(|(c, _)| c).collect();
            // magnitude: |−1.1| = |1.1|, the lower index wins
            let want = if sel == Select::Magnitude { 32 } else { 7 };
            assert_eq!(got, vec![want], "{sel:?}");
        }
        // And it is the better choice for the dense error.
        let e_mag = recon_err(
            &q2o(&data, 1, 64, &p, Select::Magnitude),
            &data,
            1,
            64,
            None,
        );
        let e_err = recon_err(&q2o(&data, 1, 64, &p, Select::Error), &data, 1, 64, None);
        assert!(
            e_err < 0.95 * e_mag,
            "error-gain {e_err} vs magnitude {e_mag}"
        );
    }

    #[test]
    fn error_selection_takes_both_ends_when_one_is_not_enough() {
        // Block 0: 30 values evenly in [−0.3, 0.3] with +1 at column 3 and −1 at column 20
        // (removing one end leaves the range at 1.3 of 2); block 1: evenly in [−0.8, 0.8].
        // Two outliers: both ends of block 0.
        let mut data = vec![0f32; 64];
        let mut j = 0;
        for c in 0..32 {
            if c != 3 && c != 20 {
                data[c] = -0.3 + 0.6 * j as f32 / 29.0;
                j += 1;
            }
            data[32 + c] = -0.8 + 1.6 * c as f32 / 31.0;
        }
        data[3] = 1.0;
        data[20] = -1.0;
        let b = q2o(&data, 1, 64, &params(2.0 / 64.0), Select::Error);
        let v = OutlierView::parse(QuantType::Q2Outlier, 32, &b, 1, 64).unwrap();
        let got: Vec<usize> = v.outliers(0).map(|(c, _)| c).collect();
        assert_eq!(got, vec![3, 20]);
    }

    /// Deterministic heavy-tailed values: Gaussian-ish with a few large spikes, row scales
    /// varying 1..8.
    fn heavy(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut st = seed;
        let mut u = || {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((st >> 11) as f64 / (1u64 << 53) as f64) as f32
        };
        let mut v = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            let scale = 1.0 + (r % 8) as f32;
            for _ in 0..cols {
                let g = (u() + u() + u() + u() - 2.0) * 1.7;
                let spike = if u() < 0.01 { 6.0 * (u() - 0.5) } else { 0.0 };
                v.push(scale * 0.01 * (g + spike));
            }
        }
        v
    }

    #[test]
    fn error_selection_counts_layout_and_block_extremes() {
        for &(rows, cols) in &[(3usize, 100usize), (8, 64), (1, 33), (5, 256)] {
            let data = heavy(rows, cols, (rows * cols) as u64);
            let imp: Vec<f32> = (0..cols)
                .map(|c| {
                    if c % 7 == 3 {
                        0.0
                    } else {
                        0.5 + (c % 5) as f32
                    }
                })
                .collect();
            for &frac in &[0.0f32, 0.005, 0.03, 0.1, 0.5, 1.0] {
                for imp in [None, Some(&imp[..])] {
                    for sel in [Select::Error] {
                        let p = QuantParams {
                            outlier_count: None,
                            block_size: 32,
                            outlier_frac: frac,
                            importance: imp,
                        };
                        let b = q2o(&data, rows, cols, &p, sel);
                        let v =
                            OutlierView::parse(QuantType::Q2Outlier, 32, &b, rows, cols).unwrap();
                        let numel = rows * cols;
                        let k = ((frac as f64 * numel as f64 * (1.0 - 1e-7)).ceil() as usize)
                            .min(numel);
                        assert_eq!(v.n_outliers(), k, "{rows}x{cols} {frac} {sel:?}");
                        let mut out = vec![0f32; cols];
                        let mut flags = vec![false; numel];
                        for r in 0..rows {
                            v.dequantize_row(r, &mut out);
                            for (c, val) in v.outliers(r) {
                                assert_eq!(val, half::f16::from_f32(data[r * cols + c]).to_f32());
                                assert_eq!(out[c], val);
                                flags[r * cols + c] = true;
                            }
                        }
                        // While the per-block steps suffice (4 per block of 32 = 12.5%),
                        // each block's outliers are its smallest and largest entries of
                        // positive weight, and no zero-weight entry is taken.
                        if frac > 0.1 {
                            continue;
                        }
                        let w = |c: usize| imp.map_or(1.0, |i| i[c]);
                        for r in 0..rows {
                            for c0 in (0..cols).step_by(32) {
                                let cs = c0..(c0 + 32).min(cols);
                                let kept =
                                    cs.clone().filter(|&c| !flags[r * cols + c] && w(c) > 0.0);
                                let (lo, hi) = kept.fold((f32::MAX, f32::MIN), |(l, h), c| {
                                    let x = data[r * cols + c];
                                    (l.min(x), h.max(x))
                                });
                                for c in cs.filter(|&c| flags[r * cols + c]) {
                                    let x = data[r * cols + c];
                                    assert!(w(c) > 0.0, "zero-weight column {c} taken");
                                    assert!(x <= lo || x >= hi, "{x} inside [{lo}, {hi}]");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn error_selection_lowers_dense_error_on_heavy_tailed_rows() {
        let (rows, cols) = (64, 512);
        let data = heavy(rows, cols, 7);
        let imp: Vec<f32> = (0..cols).map(|c| 0.2 + ((c * 37) % 11) as f32).collect();
        for frac in [0.005f32, 0.01, 0.02] {
            for imp in [None, Some(&imp[..])] {
                let p = QuantParams {
                    outlier_count: None,
                    block_size: 32,
                    outlier_frac: frac,
                    importance: imp,
                };
                let e: Vec<f64> = [Select::Magnitude, Select::Error]
                    .iter()
                    .map(|s| recon_err(&q2o(&data, rows, cols, &p, *s), &data, rows, cols, imp))
                    .collect();
                assert!(e[1] < 0.99 * e[0], "frac {frac}: {e:?}");
            }
        }
    }

    #[test]
    fn allocate_keeps_the_total_and_follows_the_gains() {
        // the 5 largest of all gains: 9, 8, 7 (tensor 0), 6 (tensor 1), then the tie at 5
        // goes to the earlier tensor
        let gains = vec![vec![9.0, 8.0, 7.0, 5.0], vec![6.0, 5.0, 1.0], vec![0.5]];
        assert_eq!(allocate(&gains, &[2, 2, 1]), vec![4, 1, 0]);
        assert_eq!(allocate(&gains, &[0, 0, 0]), vec![0, 0, 0]);
        // more budget than gains: every gain, then the rest back to tensors under their count
        assert_eq!(allocate(&gains, &[3, 3, 4]), vec![4, 3, 3]);
        // no gains at all (e.g. all-zero importance): each tensor keeps its own count
        assert_eq!(allocate(&[vec![], vec![]], &[2, 3]), vec![2, 3]);
    }

    #[test]
    fn selection_gains_rank_what_outlier_count_takes() {
        let (rows, cols) = (16, 256);
        let data = heavy(rows, cols, 11);
        let imp: Vec<f32> = (0..cols).map(|c| 0.5 + ((c * 13) % 7) as f32).collect();
        for imp in [None, Some(&imp[..])] {
            let g = selection_gains(&data, cols, 32, imp, 0.005, usize::MAX);
            assert!(g.windows(2).all(|w| w[0] >= w[1]));
            assert!(g.iter().all(|v| v.is_finite() && *v >= 0.0));
            // an explicit count equal to the fraction's is the same tensor
            let k = count_for(0.005, rows * cols);
            let mut p = QuantParams {
                outlier_count: None,
                block_size: 32,
                outlier_frac: 0.005,
                importance: imp,
            };
            let a = quantize(QuantType::Q2Outlier, &data, rows, cols, &p).unwrap();
            p.outlier_count = Some(k);
            assert_eq!(
                a,
                quantize(QuantType::Q2Outlier, &data, rows, cols, &p).unwrap()
            );
            // and a larger count keeps what the smaller one took
            p.outlier_count = Some(3 * k);
            let b = quantize(QuantType::Q2Outlier, &data, rows, cols, &p).unwrap();
            let (va, vb) = (
                OutlierView::parse(QuantType::Q2Outlier, 32, &a, rows, cols).unwrap(),
                OutlierView::parse(QuantType::Q2Outlier, 32, &b, rows, cols).unwrap(),
            );
            assert_eq!(vb.n_outliers(), 3 * k);
            for r in 0..rows {
                let cb: Vec<usize> = vb.outliers(r).map(|(c, _)| c).collect();
                assert!(va.outliers(r).all(|(c, _)| cb.contains(&c)), "row {r}");
            }
        }
    }

    #[test]
    fn global_allocation_lowers_the_total_error() {
        // a heavy-tailed tensor and a Gaussian one of the same size: the same total budget,
        // spread by the gains, leaves less error than the same fraction of each
        let (rows, cols) = (64, 512);
        let a = heavy(rows, cols, 3);
        let mut st = 5u64;
        let b: Vec<f32> = (0..rows * cols)
            .map(|_| {
                st = st
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = |s: u64, k: u32| ((s >> k) & 0xffff) as f32 / 65536.0;
                (u(st, 11) + u(st, 27) + u(st, 43) - 1.5) * 0.02
            })
            .collect();
        let frac = 0.005f32;
        let own = [count_for(frac, rows * cols); 2];
        let gains: Vec<Vec<f32>> = [&a, &b]
            .iter()
            .map(|d| selection_gains(d, cols, 32, None, frac, 8 * own[0]))
            .collect();
        let counts = allocate(&gains, &own);
        assert_eq!(counts.iter().sum::<usize>(), 2 * own[0]);
        assert!(counts[0] > counts[1], "{counts:?}");
        let total = |ks: &[usize]| -> f64 {
            [&a, &b]
                .iter()
                .zip(ks)
                .map(|(d, k)| {
                    let p = QuantParams {
                        outlier_count: Some(*k),
                        block_size: 32,
                        outlier_frac: frac,
                        importance: None,
                    };
                    let q = quantize(QuantType::Q2Outlier, d, rows, cols, &p).unwrap();
                    recon_err(&q, d, rows, cols, None)
                })
                .sum()
        };
        let (e_own, e_global) = (total(&own), total(&counts));
        assert!(e_global < 0.99 * e_own, "{e_global} vs {e_own}");
    }

    #[test]
    fn entry_keys_order_like_total_cmp_then_column() {
        let vals = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for (i, &a) in vals.iter().enumerate() {
            for (j, &b) in vals.iter().enumerate() {
                for (ca, cb) in [(0usize, 1usize), (7, 7), (9, 2)] {
                    let want = a.total_cmp(&b).then(ca.cmp(&cb));
                    assert_eq!(entry_key(a, ca).cmp(&entry_key(b, cb)), want, "{i} {j}");
                }
            }
            assert_eq!(key_value(entry_key(a, 5)).to_bits(), a.to_bits());
            assert_eq!(key_col(entry_key(a, 123_456)), 123_456);
        }
    }
}

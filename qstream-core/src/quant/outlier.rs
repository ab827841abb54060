//! Outlier-aware types (`Q2Outlier`, `Q3Outlier`, `Q4Outlier`): a dense tensor of the base
//! type plus the largest-magnitude weights kept exactly as f16.
//!
//! Tensor bytes (little-endian):
//! ```text
//! [dense: rows × row_bytes(base) — base-type rows, outliers excluded from each block's range]
//! [u32 n_outliers]
//! [u32 row_ptr[rows + 1]]   prefix offsets into the arrays below (row_ptr[0] = 0, row_ptr[rows] = n)
//! [u32 col[n]]              column of each outlier; strictly increasing within a row
//! [f16 val[n]]              its value
//! ```
//! Outliers are the `ceil(outlier_frac · numel)` largest |w| of the whole tensor
//! (|w|·sqrt(importance of its column) when `QuantParams::importance` is given; ties broken
//! by lower flat index), ordered by (row, col). In the dense part their positions were
//! quantized as 0 with weight 0 (so they do not widen the block range); dequantization
//! overwrites those positions with the f16 value (with GPTQ, `quantize_gptq`, the value is
//! the weight after the error feedback of the columns before it). The sections after the dense part are
//! not 4-byte aligned in general, so accessors hand out byte slices and decoded iterators.

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

/// Quantize a row-major `rows × cols` tensor to an outlier type `qt` (see the module docs).
pub fn quantize(
    qt: QuantType,
    data: &[f32],
    rows: usize,
    cols: usize,
    params: &QuantParams<'_>,
) -> Result<Vec<u8>> {
    quantize_impl(qt, data, rows, cols, params, None)
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
    quantize_impl(qt, data, rows, cols, params, Some(f))
}

fn quantize_impl(
    qt: QuantType,
    data: &[f32],
    rows: usize,
    cols: usize,
    params: &QuantParams<'_>,
    gptq: Option<&super::gptq::GptqFactor>,
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
    // `frac` is an f32 (0.05 is 0.0500000007): shave its representation error so that
    // 0.05 × 160 gives 8 outliers, not 9.
    let k = ((frac as f64 * numel as f64 * (1.0 - 1e-7)).ceil() as usize).min(numel);
    if k > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{k} outliers do not fit a u32 count"
        )));
    }

    // Threshold = k-th largest score; take every score > t, then score == t in index order.
    // The score is |w|, or |w|·sqrt(importance[col]) with importance (the outliers that
    // would cost the most weighted error in the dense part).
    let scale: Option<Vec<f32>> = params
        .importance
        .map(|imp| imp.iter().map(|v| v.max(0.0).sqrt()).collect());
    let score = |i: usize, v: f32| match &scale {
        Some(sc) => v.abs() * sc[i % cols],
        None => v.abs(),
    };
    let mut is_out = vec![false; numel];
    if k > 0 {
        let mut mags: Vec<f32> = data.iter().enumerate().map(|(i, v)| score(i, *v)).collect();
        let pos = numel - k;
        let (_, t, _) = mags.select_nth_unstable_by(pos, |a, b| a.total_cmp(b));
        let t = *t;
        drop(mags);
        let mut taken = 0usize;
        for (i, v) in data.iter().enumerate() {
            if score(i, *v).total_cmp(&t).is_gt() {
                is_out[i] = true;
                taken += 1;
            }
        }
        for (i, v) in data.iter().enumerate() {
            if taken == k {
                break;
            }
            if score(i, *v).total_cmp(&t).is_eq() && !is_out[i] {
                is_out[i] = true;
                taken += 1;
            }
        }
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
}

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

/// As [`matmul_rows_dense`] for an outlier type: each row is dequantized (dense part plus
/// its outliers) by `dequantize_row(r, buf)` into `buf` (`cols` values), then dotted in f32.
pub fn matmul_rows_outlier(
    dequantize_row: impl Fn(usize, &mut [f32]),
    xs: &[f32],
    cols: usize,
    n: usize,
    rows: std::ops::Range<usize>,
    buf: &mut [f32],
    mut out: impl FnMut(usize, usize, f32),
) {
    for r in rows {
        dequantize_row(r, buf);
        for t in 0..n {
            let x = &xs[t * cols..(t + 1) * cols];
            out(t, r, buf.iter().zip(x).map(|(a, b)| a * b).sum());
        }
    }
}

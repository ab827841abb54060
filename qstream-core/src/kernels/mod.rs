//! Matrix-vector kernels over quantized weights.
//!
//! [`matvec`] and [`matmul`] are the only entry points the forward passes use. Today they
//! run the scalar reference (`scalar.rs`, built on `quant::dot_row_ref`) with output rows
//! split across the current rayon pool; SIMD kernels with run-time dispatch go behind the
//! same two functions.
//!
//! Preconditions (checked when a model binds its tensors, so a malformed file is an
//! error there, never a panic here): the tensor's byte length matches its type, block and
//! shape; `x`/`out` lengths match the shape.

use rayon::prelude::*;

use crate::quant::outlier::OutlierView;
use crate::tensor::Tensor;

pub mod scalar;

/// Check once (at bind time) that `w`'s bytes can be used by the kernels.
pub fn validate(w: &Tensor) -> crate::Result<()> {
    let (rows, cols) = (w.rows(), w.cols());
    if !w.qtype.valid_block(w.block) {
        return Err(crate::Error::corrupt(format!(
            "tensor {}: block {} invalid for {}",
            w.name, w.block, w.qtype
        )));
    }
    if w.qtype.is_outlier() {
        OutlierView::parse(w.qtype, w.block, w.bytes(), rows, cols)
            .map_err(|e| crate::Error::corrupt(format!("tensor {}: {e}", w.name)))?;
        return Ok(());
    }
    let need = w.qtype.row_bytes(w.block, cols).checked_mul(rows);
    if need != Some(w.bytes().len()) {
        return Err(crate::Error::corrupt(format!(
            "tensor {} {:?} {} (block {}) needs {:?} bytes, has {}",
            w.name,
            w.shape,
            w.qtype,
            w.block,
            need,
            w.bytes().len()
        )));
    }
    Ok(())
}

/// `out[r] = dot(row r of w, x)`; `x` has `w.cols()` values, `out` `w.rows()`.
pub fn matvec(w: &Tensor, x: &[f32], out: &mut [f32]) {
    matmul(w, x, 1, out)
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: only used by `matmul`, whose tasks write disjoint index sets of one live slice.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Send + Sync` wrapper).
    #[inline]
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Batched `out[t·rows + r] = dot(row r of w, xs[t·cols..])` for `t < n`:
/// `xs` is `n × cols`, `out` is `n × rows`. Each weight row is read once for all `n` vectors.
pub fn matmul(w: &Tensor, xs: &[f32], n: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert_eq!(xs.len(), n * cols, "matmul {}: input length", w.name);
    assert_eq!(out.len(), n * rows, "matmul {}: output length", w.name);
    if rows == 0 || n == 0 {
        return;
    }
    // Rows per task: enough work per task (≈ 32k multiply-adds) and ≥ 4 tasks per thread
    // when the matrix is large.
    let threads = rayon::current_num_threads().max(1);
    let min_rows = (32 * 1024 / (cols * n).max(1)).max(1);
    let chunk = rows.div_ceil(threads * 4).max(min_rows).min(rows);
    let n_chunks = rows.div_ceil(chunk);
    let ptr = OutPtr(out.as_mut_ptr());
    let write = move |t: usize, r: usize, v: f32| {
        debug_assert!(t < n && r < rows);
        // SAFETY: `t < n`, `r < rows`, so the index is inside `out` (length n·rows, asserted
        // above); each (t, r) is written by exactly one task since tasks own disjoint row
        // ranges; `out` is borrowed mutably for the whole call.
        unsafe { *ptr.get().add(t * rows + r) = v };
    };

    if w.qtype.is_outlier() {
        let view = match OutlierView::parse(w.qtype, w.block, w.bytes(), rows, cols) {
            Ok(v) => v,
            Err(_) => {
                // Unreachable for bound tensors (validated by `validate`); never read garbage.
                out.fill(f32::NAN);
                return;
            }
        };
        (0..n_chunks).into_par_iter().for_each(|c| {
            let r0 = c * chunk;
            let mut buf = vec![0f32; cols];
            scalar::matmul_rows_outlier(
                |r, b| view.dequantize_row(r, b),
                xs,
                cols,
                n,
                r0..(r0 + chunk).min(rows),
                &mut buf,
                write,
            );
        });
        return;
    }
    let rb = w.qtype.row_bytes(w.block, cols);
    let bytes = w.bytes();
    assert!(bytes.len() >= rb * rows, "matmul {}: tensor bytes", w.name);
    (0..n_chunks).into_par_iter().for_each(|c| {
        let r0 = c * chunk;
        scalar::matmul_rows_dense(
            w.qtype,
            w.block,
            bytes,
            rb,
            xs,
            cols,
            n,
            r0..(r0 + chunk).min(rows),
            write,
        );
    });
}

/// Dequantize row `r` of `w` (e.g. a token embedding) into `out` (`w.cols()` values).
pub fn get_row(w: &Tensor, r: usize, out: &mut [f32]) {
    let cols = w.cols();
    if w.qtype.is_outlier() {
        match OutlierView::parse(w.qtype, w.block, w.bytes(), w.rows(), cols) {
            Ok(v) => v.dequantize_row(r, out),
            Err(_) => out.fill(f32::NAN),
        }
        return;
    }
    let rb = w.qtype.row_bytes(w.block, cols);
    crate::quant::dequantize_row(w.qtype, w.block, &w.bytes()[r * rb..(r + 1) * rb], out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantType;

    fn naive(w: &[f32], rows: usize, cols: usize, xs: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n * rows];
        for t in 0..n {
            for r in 0..rows {
                out[t * rows + r] = (0..cols).map(|c| w[r * cols + c] * xs[t * cols + c]).sum();
            }
        }
        out
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn matmul_matches_naive_on_any_pool_size() {
        let (rows, cols, n) = (301, 70, 5);
        let w = data(rows * cols, 1);
        let xs = data(n * cols, 2);
        let want = naive(&w, rows, cols, &xs, n);
        let t32 = Tensor::from_f32("w", vec![rows, cols], &w);
        let h: Vec<u8> = w
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let t16 = Tensor::from_bytes("w16", QuantType::F16, 1, vec![rows, cols], &h);
        let w16: Vec<f32> = w.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect();
        let want16 = naive(&w16, rows, cols, &xs, n);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut out = vec![0f32; n * rows];
                matmul(&t32, &xs, n, &mut out);
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5);
                }
                matmul(&t16, &xs, n, &mut out);
                for (a, b) in out.iter().zip(&want16) {
                    assert!((a - b).abs() < 1e-5);
                }
                let mut one = vec![0f32; rows];
                matvec(&t32, &xs[cols..2 * cols], &mut one);
                assert_eq!(one, out_row(&t32, &xs, n, 1));
            });
        }
    }

    fn out_row(w: &Tensor, xs: &[f32], n: usize, t: usize) -> Vec<f32> {
        let rows = w.rows();
        let mut out = vec![0f32; n * rows];
        matmul(w, xs, n, &mut out);
        out[t * rows..(t + 1) * rows].to_vec()
    }

    #[test]
    fn validate_rejects_short_bytes() {
        let t = Tensor::from_f32("w", vec![4, 4], &[0.0; 15]);
        assert!(matches!(validate(&t), Err(crate::Error::Corrupt(m)) if m.contains("w")));
        let t = Tensor::from_bytes("q", QuantType::Q8, 32, vec![2, 40], &[0u8; 2 * 34]);
        assert!(validate(&t).is_err());
        let t = Tensor::from_bytes("q", QuantType::Q8, 32, vec![2, 40], &[0u8; 4 * 34]);
        assert!(validate(&t).is_ok());
    }
}

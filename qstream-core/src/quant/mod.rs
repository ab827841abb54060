//! Block quantization formats.
//!
//! Every weight tensor in a QSF file has one [`QuantType`]. Dense types store each row
//! independently as `ceil(cols / block) ` blocks (a row is zero-padded up to a whole
//! block); outlier types store a dense tensor of their base type followed by a sparse
//! list of FP16 outliers grouped by row (see `outlier.rs` and docs/qsf.md).
//!
//! On-disk ids are the explicit discriminants below (ids 0..=10 are the original QStream's
//! numbering; 11.. are QSF v2 additions). Never renumber.
//!
//! | type | id | block | bytes / block | bits per weight |
//! |---|---|---|---|---|
//! | `Q2` | 0 | 32/64/128/256 | 4 + B/4 | 2 + 32/B |
//! | `Q3` | 2 | 32/64/128/256 | 4 + 3B/8 | 3 + 32/B |
//! | `Q4` | 3 | 32/64/128/256 | 4 + B/2 | 4 + 32/B (B=32 is GGUF Q4_1) |
//! | `Q4Sym` | 4 | 32/64/128/256 | 2 + B/2 | 4 + 16/B (B=32 is GGUF Q4_0) |
//! | `Q8` | 6 | 32 | 34 | 8.5 (GGUF Q8_0) |
//! | `F16` | 7 | 1 | 2 | 16 |
//! | `Q2Outlier` | 9 | as Q2 | Q2 + outliers | ≈ 2 + 32/B + 48·frac |
//! | `Q4Outlier` | 10 | as Q4 | Q4 + outliers | ≈ 4 + 32/B + 48·frac |
//! | `Q3Outlier` | 11 | as Q3 | Q3 + outliers | ≈ 3 + 32/B + 48·frac |
//! | `F32` | 12 | 1 | 4 | 32 |
//! | `Bf16` | 13 | 1 | 2 | 16 |
//! | `Mxfp4` | 14 | 32 | 17 | 4.25 |

use crate::error::{Error, Result};

/// f32 / f16 / bf16 rows (file `f16.rs`; the module is not named `f16` to avoid the primitive type).
#[path = "f16.rs"]
pub mod float;
pub mod gptq;
pub mod mxfp4;
pub mod outlier;
pub mod q2;
pub mod q3;
pub mod q4;
pub mod q8;
pub mod rotate;
pub mod search;

/// A tensor storage type. Discriminants are the on-disk ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum QuantType {
    /// 2-bit asymmetric: `x = d·q + m`, q ∈ 0..=3.
    Q2 = 0,
    /// 3-bit asymmetric: `x = d·q + m`, q ∈ 0..=7.
    Q3 = 2,
    /// 4-bit asymmetric: `x = d·q + m`, q ∈ 0..=15 (block 32 is bit-identical to GGUF Q4_1).
    Q4 = 3,
    /// 4-bit symmetric: `x = d·(q − 8)` (block 32 is bit-identical to GGUF Q4_0).
    Q4Sym = 4,
    /// 8-bit symmetric, block 32: `x = d·q`, q ∈ −127..=127 (bit-identical to GGUF Q8_0).
    Q8 = 6,
    /// IEEE half precision.
    F16 = 7,
    /// [`QuantType::Q2`] plus FP16 outliers.
    Q2Outlier = 9,
    /// [`QuantType::Q4`] plus FP16 outliers.
    Q4Outlier = 10,
    /// [`QuantType::Q3`] plus FP16 outliers.
    Q3Outlier = 11,
    /// IEEE single precision.
    F32 = 12,
    /// bfloat16.
    Bf16 = 13,
    /// OCP MXFP4: 32 E2M1 values sharing one E8M0 scale.
    Mxfp4 = 14,
}

impl QuantType {
    /// All supported types.
    pub const ALL: [QuantType; 12] = [
        QuantType::Q2,
        QuantType::Q3,
        QuantType::Q4,
        QuantType::Q4Sym,
        QuantType::Q8,
        QuantType::F16,
        QuantType::Q2Outlier,
        QuantType::Q4Outlier,
        QuantType::Q3Outlier,
        QuantType::F32,
        QuantType::Bf16,
        QuantType::Mxfp4,
    ];

    /// The type with on-disk id `id`, if QStream supports it.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| *t as u8 == id)
    }

    /// The on-disk id.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Short lowercase name (`q4`, `q4_sym`, `q2_outlier`, `f32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Q2 => "q2",
            QuantType::Q3 => "q3",
            QuantType::Q4 => "q4",
            QuantType::Q4Sym => "q4_sym",
            QuantType::Q8 => "q8",
            QuantType::F16 => "f16",
            QuantType::Q2Outlier => "q2_outlier",
            QuantType::Q4Outlier => "q4_outlier",
            QuantType::Q3Outlier => "q3_outlier",
            QuantType::F32 => "f32",
            QuantType::Bf16 => "bf16",
            QuantType::Mxfp4 => "mxfp4",
        }
    }

    /// Parse a name as printed by [`QuantType::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.name() == s)
    }

    /// True for the outlier-aware variants.
    pub fn is_outlier(self) -> bool {
        matches!(
            self,
            QuantType::Q2Outlier | QuantType::Q3Outlier | QuantType::Q4Outlier
        )
    }

    /// The dense type an outlier variant stores its non-outlier weights in (identity otherwise).
    pub fn base(self) -> Self {
        match self {
            QuantType::Q2Outlier => QuantType::Q2,
            QuantType::Q3Outlier => QuantType::Q3,
            QuantType::Q4Outlier => QuantType::Q4,
            t => t,
        }
    }

    /// True for f32/f16/bf16 (no blocks).
    pub fn is_float(self) -> bool {
        matches!(self, QuantType::F32 | QuantType::F16 | QuantType::Bf16)
    }

    /// Whether `block` is a valid block size for this type.
    pub fn valid_block(self, block: usize) -> bool {
        match self.base() {
            QuantType::F32 | QuantType::F16 | QuantType::Bf16 => block == 1,
            QuantType::Q8 | QuantType::Mxfp4 => block == 32,
            _ => matches!(block, 32 | 64 | 128 | 256),
        }
    }

    /// Default block size.
    pub fn default_block(self) -> usize {
        if self.is_float() {
            1
        } else {
            32
        }
    }

    /// Bytes of one block of `block` values of the dense (base) type.
    pub fn block_bytes(self, block: usize) -> usize {
        match self.base() {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::Bf16 => 2,
            QuantType::Q8 => 34,
            QuantType::Mxfp4 => 17,
            QuantType::Q4 => 4 + block / 2,
            QuantType::Q4Sym => 2 + block / 2,
            QuantType::Q3 => 4 + 3 * block / 8,
            QuantType::Q2 => 4 + block / 4,
            _ => unreachable!("base() returns a dense type"),
        }
    }

    /// Bytes of one row of `cols` values of the dense (base) type.
    pub fn row_bytes(self, block: usize, cols: usize) -> usize {
        cols.div_ceil(block) * self.block_bytes(block)
    }

    /// Nominal bits per weight of the dense part (outliers not counted).
    pub fn bits_per_weight(self, block: usize) -> f64 {
        self.block_bytes(block) as f64 * 8.0 / block as f64
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Options for [`quantize`].
#[derive(Debug, Clone, Copy)]
pub struct QuantParams<'a> {
    /// Values per block (ignored by float types; 32 for q8/mxfp4).
    pub block_size: usize,
    /// Fraction of each tensor's weights kept as FP16 by the outlier types (chosen by the
    /// error they remove from their blocks, `quant::outlier`).
    pub outlier_frac: f32,
    /// Optional per-column importance (length `cols`) weighting the squared error.
    pub importance: Option<&'a [f32]>,
    /// Exact number of outliers for an outlier type, overriding `outlier_frac` for the
    /// count (the selection still uses `outlier_frac` for its per-block search depth): set
    /// by a converter that spreads one budget over all tensors
    /// ([`outlier::selection_gains`]). `None`: `ceil(outlier_frac · numel)`.
    pub outlier_count: Option<usize>,
}

impl Default for QuantParams<'_> {
    fn default() -> Self {
        QuantParams {
            block_size: 32,
            outlier_frac: 0.005,
            importance: None,
            outlier_count: None,
        }
    }
}

fn check_shape(qt: QuantType, block: usize, len: usize, rows: usize, cols: usize) -> Result<()> {
    if !qt.valid_block(block) {
        return Err(Error::InvalidArgument(format!(
            "block size {block} is not valid for {qt}"
        )));
    }
    if rows.checked_mul(cols) != Some(len) {
        return Err(Error::InvalidArgument(format!(
            "tensor data has {len} values, shape is {rows}x{cols}"
        )));
    }
    Ok(())
}

/// Quantize a row-major `rows × cols` f32 tensor to `qt`. Returns the tensor's bytes.
pub fn quantize(
    qt: QuantType,
    data: &[f32],
    rows: usize,
    cols: usize,
    params: &QuantParams<'_>,
) -> Result<Vec<u8>> {
    let block = if qt.is_float() { 1 } else { params.block_size };
    check_shape(qt, block, data.len(), rows, cols)?;
    if qt.is_outlier() {
        return outlier::quantize(qt, data, rows, cols, params);
    }
    let rb = qt.row_bytes(block, cols);
    let mut out = vec![0u8; rb * rows];
    for (r, dst) in out.chunks_exact_mut(rb.max(1)).enumerate().take(rows) {
        quantize_row(
            qt,
            block,
            &data[r * cols..(r + 1) * cols],
            params.importance,
            dst,
        );
    }
    Ok(out)
}

/// Quantize one row of a dense type into `dst` (exactly `qt.row_bytes(block, src.len())` bytes).
pub fn quantize_row(
    qt: QuantType,
    block: usize,
    src: &[f32],
    importance: Option<&[f32]>,
    dst: &mut [u8],
) {
    match qt {
        QuantType::F32 => float::quantize_row_f32(src, dst),
        QuantType::F16 => float::quantize_row_f16(src, dst),
        QuantType::Bf16 => float::quantize_row_bf16(src, dst),
        QuantType::Q8 => q8::quantize_row(src, dst),
        QuantType::Q4 => q4::quantize_row(block, src, importance, dst),
        QuantType::Q4Sym => q4::quantize_row_sym(block, src, importance, dst),
        QuantType::Q3 => q3::quantize_row(block, src, importance, dst),
        QuantType::Q2 => q2::quantize_row(block, src, importance, dst),
        QuantType::Mxfp4 => mxfp4::quantize_row(src, dst),
        QuantType::Q2Outlier | QuantType::Q3Outlier | QuantType::Q4Outlier => {
            panic!("quantize_row: outlier types are quantized per tensor")
        }
    }
}

/// Dequantize one row of a dense type: `src` holds `qt.row_bytes(block, out.len())` bytes.
pub fn dequantize_row(qt: QuantType, block: usize, src: &[u8], out: &mut [f32]) {
    match qt.base() {
        QuantType::F32 => float::dequantize_row_f32(src, out),
        QuantType::F16 => float::dequantize_row_f16(src, out),
        QuantType::Bf16 => float::dequantize_row_bf16(src, out),
        QuantType::Q8 => q8::dequantize_row(src, out),
        QuantType::Q4 => q4::dequantize_row(block, src, out),
        QuantType::Q4Sym => q4::dequantize_row_sym(block, src, out),
        QuantType::Q3 => q3::dequantize_row(block, src, out),
        QuantType::Q2 => q2::dequantize_row(block, src, out),
        QuantType::Mxfp4 => mxfp4::dequantize_row(src, out),
        _ => unreachable!(),
    }
}

/// Scalar reference dot product of one dense row with `x` (the oracle for SIMD kernels).
pub fn dot_row_ref(qt: QuantType, block: usize, row: &[u8], x: &[f32]) -> f32 {
    match qt.base() {
        QuantType::F32 => float::dot_f32_ref(row, x),
        QuantType::F16 => float::dot_f16_ref(row, x),
        QuantType::Bf16 => float::dot_bf16_ref(row, x),
        QuantType::Q8 => q8::dot_ref(row, x),
        QuantType::Q4 => q4::dot_ref(block, row, x),
        QuantType::Q4Sym => q4::dot_sym_ref(block, row, x),
        QuantType::Q3 => q3::dot_ref(block, row, x),
        QuantType::Q2 => q2::dot_ref(block, row, x),
        QuantType::Mxfp4 => mxfp4::dot_ref(row, x),
        _ => unreachable!(),
    }
}

/// Total bytes of a `rows × cols` tensor of a dense type; `None` for outlier types
/// (their size depends on the data) or on overflow.
pub fn dense_tensor_bytes(qt: QuantType, block: usize, rows: usize, cols: usize) -> Option<usize> {
    if qt.is_outlier() {
        return None;
    }
    qt.row_bytes(block, cols).checked_mul(rows)
}

/// Dequantize a whole tensor (dense or outlier) to f32, row-major.
pub fn dequantize(
    qt: QuantType,
    block: usize,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>> {
    let mut out = vec![0f32; rows * cols];
    if qt.is_outlier() {
        let view = outlier::OutlierView::parse(qt, block, bytes, rows, cols)?;
        for r in 0..rows {
            view.dequantize_row(r, &mut out[r * cols..(r + 1) * cols]);
        }
        return Ok(out);
    }
    let rb = qt.row_bytes(block, cols);
    if bytes.len() != rb * rows {
        return Err(Error::corrupt(format!(
            "{qt} tensor {rows}x{cols} (block {block}) needs {} bytes, has {}",
            rb * rows,
            bytes.len()
        )));
    }
    for r in 0..rows {
        dequantize_row(
            qt,
            block,
            &bytes[r * rb..(r + 1) * rb],
            &mut out[r * cols..(r + 1) * cols],
        );
    }
    Ok(out)
}

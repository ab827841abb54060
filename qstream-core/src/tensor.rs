//! Typed, borrowed views of tensor bytes.
//!
//! A [`Tensor`] is a name, a [`QuantType`], a block size, a shape and a byte range in a
//! [`Storage`] — either the memory-mapped file (zero copy) or an owned, 64-byte aligned
//! buffer (read-into-memory mode, decompressed LZ4 layers, repacked legacy files).

use std::sync::{Arc, OnceLock};

use crate::quant::outlier::{OutlierDeltas, OutlierView};
use crate::quant::QuantType;

/// An owned byte buffer whose start is 64-byte aligned.
pub struct AlignedBuf {
    words: Vec<[u64; 8]>,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        AlignedBuf {
            words: vec![[0u64; 8]; len.div_ceil(64)],
            len,
        }
    }

    /// Copy `bytes` into a new aligned buffer.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut b = Self::zeroed(bytes.len());
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }

    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice::<[u64; 8], u8>(&self.words)[..self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut bytemuck::cast_slice_mut::<[u64; 8], u8>(&mut self.words)[..len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Backing memory for tensors.
pub enum Storage {
    /// The file, memory-mapped read-only.
    Mmap(memmap2::Mmap),
    /// Bytes in memory.
    Owned(AlignedBuf),
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(b) => b.as_slice(),
        }
    }
}

/// A tensor: metadata plus a byte range in shared storage.
#[derive(Clone)]
pub struct Tensor {
    pub name: String,
    pub qtype: QuantType,
    /// values per quantization block (1 for float types)
    pub block: usize,
    /// `[rows, cols]` for matrices (rows = output features), `[n]` for vectors
    pub shape: Vec<usize>,
    /// Incoherence rotation group of the input dimension (`quant::rotate`), 0 = none: the
    /// stored rows are `R·w`, and the kernels rotate activations to match.
    pub rotation: usize,
    storage: Arc<Storage>,
    offset: usize,
    len: usize,
    /// Outlier types: the decoded outliers (built on first use, shared by clones; `None`
    /// inside when the bytes do not parse).
    deltas: Arc<OnceLock<Option<OutlierDeltas>>>,
}

impl Tensor {
    /// A tensor over `storage[offset..offset+len]`. The caller has validated the range.
    pub fn new(
        name: String,
        qtype: QuantType,
        block: usize,
        shape: Vec<usize>,
        storage: Arc<Storage>,
        offset: usize,
        len: usize,
    ) -> Self {
        assert!(
            offset + len <= storage.bytes().len(),
            "tensor range out of bounds"
        );
        Tensor {
            name,
            qtype,
            block,
            shape,
            rotation: 0,
            storage,
            offset,
            len,
            deltas: Arc::default(),
        }
    }

    /// The same tensor marked as stored rotated with group `g` (0 = not rotated).
    pub fn with_rotation(mut self, g: usize) -> Self {
        self.rotation = g;
        self
    }

    /// A tensor owning a copy of `bytes`.
    pub fn from_bytes(
        name: &str,
        qtype: QuantType,
        block: usize,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Self {
        let storage = Arc::new(Storage::Owned(AlignedBuf::from_slice(bytes)));
        Tensor::new(
            name.to_string(),
            qtype,
            block,
            shape,
            storage,
            0,
            bytes.len(),
        )
    }

    /// An f32 tensor owning `data`.
    pub fn from_f32(name: &str, shape: Vec<usize>, data: &[f32]) -> Self {
        Self::from_bytes(name, QuantType::F32, 1, shape, bytemuck::cast_slice(data))
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.offset..self.offset + self.len]
    }

    /// Number of rows (1 for vectors).
    pub fn rows(&self) -> usize {
        if self.shape.len() >= 2 {
            self.shape[..self.shape.len() - 1].iter().product()
        } else {
            1
        }
    }

    /// Number of columns (the contiguous axis).
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }

    /// Total number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Dequantize everything to f32 (for small tensors and reference paths).
    /// Rotated tensors are turned back (the result is the weight itself, not `R·w`).
    pub fn to_f32(&self) -> crate::Result<Vec<f32>> {
        let cols = self.cols();
        let mut v =
            crate::quant::dequantize(self.qtype, self.block, self.bytes(), self.rows(), cols)?;
        if self.rotation > 0 {
            for row in v.chunks_exact_mut(cols) {
                crate::quant::rotate::unrotate(row, self.rotation);
            }
        }
        Ok(v)
    }

    /// The bytes as `&[f32]` when the type is F32 and the data is aligned.
    pub fn as_f32(&self) -> Option<&[f32]> {
        if self.qtype != QuantType::F32 {
            return None;
        }
        bytemuck::try_cast_slice(self.bytes()).ok()
    }

    /// Outlier types (`Q2Outlier`…): every outlier decoded as `(column, value − dense value)`
    /// ([`OutlierView::deltas`]), built from the validated bytes on the first call and kept
    /// (about 8 bytes per outlier; clones share it). `None` for other types, bytes that do
    /// not parse, or when `qtype`/`block`/`shape` were changed after the first call.
    pub fn outlier_deltas(&self) -> Option<&OutlierDeltas> {
        if !self.qtype.is_outlier() {
            return None;
        }
        let (rows, cols) = (self.rows(), self.cols());
        self.deltas
            .get_or_init(|| {
                OutlierView::parse(self.qtype, self.block, self.bytes(), rows, cols)
                    .ok()
                    .map(|v| v.deltas())
            })
            .as_ref()
            .filter(|d| d.matches(self.qtype, self.block, rows, cols))
    }

    /// Rows `r0..r1` of a matrix as a tensor named `name` over the same storage (zero copy,
    /// same type, block and rotation): how a fused projection (`attn_qkv`) is split into its
    /// parts. `None` for outlier types (their rows are not contiguous byte runs), vectors,
    /// or a range past the rows or the bytes.
    pub fn rows_view(&self, name: &str, r0: usize, r1: usize) -> Option<Tensor> {
        if self.qtype.is_outlier() || self.shape.len() != 2 || r0 > r1 || r1 > self.shape[0] {
            return None;
        }
        let rb = self.qtype.row_bytes(self.block, self.cols());
        if rb.checked_mul(self.shape[0]) != Some(self.len) {
            return None;
        }
        Some(Tensor {
            name: name.to_string(),
            qtype: self.qtype,
            block: self.block,
            shape: vec![r1 - r0, self.cols()],
            rotation: self.rotation,
            storage: Arc::clone(&self.storage),
            offset: self.offset + r0 * rb,
            len: (r1 - r0) * rb,
            deltas: Arc::default(),
        })
    }

    /// True when the bytes live in the memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.storage, Storage::Mmap(_))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({} {} b{} {:?} {} bytes rot {})",
            self.name, self.qtype, self.block, self.shape, self.len, self.rotation
        )
    }
}

//! The QSF (Quantized Stream Format) file format. The normative description is
//! `docs/qsf.md`; this module implements it.
//!
//! File order: `[header 256 B][layer index 48 B × n_layer][metadata JSON][embedding section]
//! [tokenizer section][layer 0] … [layer N−1][final section]`, every section 64-byte aligned,
//! every tensor's data 64-byte aligned within its section payload, so a memory-mapped file is
//! used in place (zero copy) with aligned SIMD loads.
//!
//! - [`header`]: the 256-byte header (original QStream fields + versioned v2 extension).
//! - [`layer_index`]: 48-byte per-layer entries.
//! - [`section`]: section headers and the 128-byte tensor directory entries.
//! - [`reader`]: [`QsfFile`] — open (mmap or read), validate, verify, hand out tensors.
//! - [`writer`]: [`QsfWriter`] — streaming writer used by the converter.
//! - [`legacy`]: files written by the original C QStream (version 1).
//! - [`source`]: a QSF file as a converter source (`qstream convert OLD.qsf --quant keep`).

pub mod bytes;
pub mod header;
pub mod layer_index;
pub mod legacy;
pub mod reader;
pub mod section;
pub mod source;
pub mod writer;

pub use header::Header;
pub use layer_index::LayerEntry;
pub use reader::{LoadOptions, QsfFile};
pub use section::TensorEntry;
pub use writer::{QsfWriter, WriteTensor};

/// File magic: the u32 0x51534631 ("1FSQ" on disk).
pub const MAGIC: u32 = 0x5153_4631;
/// Format version written by this implementation.
pub const VERSION: u32 = 2;
/// Minor version written by this implementation (new optional fields bump it).
pub const MINOR_VERSION: u16 = 0;
/// Alignment of sections and tensor data.
pub const ALIGN: u64 = 64;
/// Header size.
pub const HEADER_SIZE: usize = 256;
/// Layer index entry size.
pub const LAYER_ENTRY_SIZE: usize = 48;
/// Tensor directory entry size.
pub const TENSOR_ENTRY_SIZE: usize = 128;

/// Round `x` up to a multiple of [`ALIGN`].
pub fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

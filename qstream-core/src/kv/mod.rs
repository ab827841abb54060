//! KV cache: the keys and values of every processed position, per session.
//!
//! [`KvCache`] (in `dense.rs`) stores K and V, each in its own [`KvType`] (exact f32, f16,
//! bf16, or a block-quantized type of `quant.rs`), in a layout made for attention:
//! `[layer][kv_head][pos][row]`, one row per head vector, so one head's keys for a range
//! of positions are contiguous. Quantized types are block-wise per head (blocks of
//! [`quant::BLOCK`] values along `head_dim`); their attention runs in the integer domain
//! (`simd.rs`): the query is quantized once per head to 8 bits and dotted with the key
//! codes, and values are accumulated straight from their codes.
//!
//! [`AttentionCache`] (in `attention.rs`) is a standalone one-layer cache with causal
//! attention, the object behind the C `qs_attn_cache_*` functions and Python's
//! `qstream.AttentionCache`.

pub mod attention;
pub mod dense;
pub mod quant;
pub mod simd;

pub use attention::{AttentionCache, AttentionParams};
pub use dense::{KvCache, KvLayer};

use quant::Codec;

/// Element type of K or V in the cache (chosen independently for each).
///
/// The `…h` types apply the randomized Hadamard rotation of `quant::rotate` along
/// `head_dim` before quantizing (the query, or for values the output, is rotated to
/// match), which spreads outlier channels over the block and lowers the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvType {
    /// 32-bit floats (exact).
    #[default]
    F32,
    /// IEEE half precision (half the memory).
    F16,
    /// bfloat16.
    Bf16,
    /// Symmetric 8-bit blocks of 32 (8.5 bits per value).
    Q8,
    /// Asymmetric 4-bit blocks of 32 (5 bits per value).
    Q4,
    /// Asymmetric 3-bit blocks of 32 (4 bits per value).
    Q3,
    /// Asymmetric 2-bit blocks of 32 (3 bits per value).
    Q2,
    /// IntLLM-style logarithmic 8-bit code (sign + 7-bit inverse magnitude, 8.5 bits).
    Qins8,
    /// [`KvType::Q8`] after a randomized Hadamard rotation.
    Q8H,
    /// [`KvType::Q4`] after a randomized Hadamard rotation.
    Q4H,
    /// [`KvType::Q3`] after a randomized Hadamard rotation.
    Q3H,
    /// [`KvType::Q2`] after a randomized Hadamard rotation.
    Q2H,
}

impl KvType {
    /// Every type.
    pub const ALL: [KvType; 12] = [
        KvType::F32,
        KvType::F16,
        KvType::Bf16,
        KvType::Q8,
        KvType::Q4,
        KvType::Q3,
        KvType::Q2,
        KvType::Qins8,
        KvType::Q8H,
        KvType::Q4H,
        KvType::Q3H,
        KvType::Q2H,
    ];

    /// Bytes per stored value, rounded up (f32 4, f16/bf16 2, quantized types 1); see
    /// [`KvType::row_bytes`] for the exact size.
    pub fn elem_bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 | KvType::Bf16 => 2,
            _ => 1,
        }
    }

    /// Bytes of one head vector of `head_dim` values (`head_dim` a multiple of 32 for
    /// the quantized types).
    pub fn row_bytes(self, head_dim: usize) -> usize {
        match self.codec() {
            None => head_dim * self.elem_bytes(),
            Some(c) => head_dim / quant::BLOCK * c.block_bytes(),
        }
    }

    /// Stored bits per value, scales included.
    pub fn bits_per_value(self) -> f32 {
        match self.codec() {
            None => 8.0 * self.elem_bytes() as f32,
            Some(c) => 8.0 * c.block_bytes() as f32 / quant::BLOCK as f32,
        }
    }

    /// The block codec of a quantized type.
    pub fn codec(self) -> Option<Codec> {
        match self {
            KvType::F32 | KvType::F16 | KvType::Bf16 => None,
            KvType::Q8 | KvType::Q8H => Some(Codec::Q8),
            KvType::Q4 | KvType::Q4H => Some(Codec::Q4),
            KvType::Q3 | KvType::Q3H => Some(Codec::Q3),
            KvType::Q2 | KvType::Q2H => Some(Codec::Q2),
            KvType::Qins8 => Some(Codec::Qins8),
        }
    }

    /// Whether the type stores Hadamard-rotated head vectors.
    pub fn rotated(self) -> bool {
        matches!(self, KvType::Q8H | KvType::Q4H | KvType::Q3H | KvType::Q2H)
    }

    /// Short lowercase name (`f32`, `f16`, `bf16`, `q8`, `q4`, `q3`, `q2`, `qins8`,
    /// `q8h`, `q4h`, `q3h`, `q2h`).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Bf16 => "bf16",
            KvType::Q8 => "q8",
            KvType::Q4 => "q4",
            KvType::Q3 => "q3",
            KvType::Q2 => "q2",
            KvType::Qins8 => "qins8",
            KvType::Q8H => "q8h",
            KvType::Q4H => "q4h",
            KvType::Q3H => "q3h",
            KvType::Q2H => "q2h",
        }
    }

    /// Parse a name as printed by [`KvType::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        KvType::ALL.iter().copied().find(|t| t.name() == s)
    }

    /// The stable integer code of the C API (`QS_KV_*`): the index in [`KvType::ALL`].
    pub fn code(self) -> u32 {
        KvType::ALL.iter().position(|t| *t == self).unwrap_or(0) as u32
    }

    /// The type of a C API code (see [`KvType::code`]).
    pub fn from_code(c: u32) -> Option<Self> {
        KvType::ALL.get(c as usize).copied()
    }
}

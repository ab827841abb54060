//! KV cache: the keys and values of every processed position, per session.
//!
//! [`KvCache`] (in `dense.rs`) stores K and V as f32 or f16 ([`KvType`]) in a layout made
//! for attention: `[layer][kv_head][pos][head_dim]`, so one head's keys for a range of
//! positions are contiguous.

pub mod dense;

pub use dense::{KvCache, KvLayer};

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvType {
    /// 32-bit floats (exact).
    #[default]
    F32,
    /// IEEE half precision (half the memory).
    F16,
}

impl KvType {
    /// Bytes per stored value.
    pub fn elem_bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }

    /// Short lowercase name (`f32`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        }
    }

    /// Parse a name as printed by [`KvType::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(KvType::F32),
            "f16" => Some(KvType::F16),
            _ => None,
        }
    }
}

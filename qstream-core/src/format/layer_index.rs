//! 48-byte layer index entries (docs/qsf.md §Layer index).

use super::bytes::{Cursor, Writer};
use super::LAYER_ENTRY_SIZE;
use crate::Result;

/// Compression of a layer's payload.
pub const COMPRESSION_NONE: u8 = 0;
/// Raw LZ4 block (lz4_flex), no size prefix.
pub const COMPRESSION_LZ4: u8 = 1;

/// One layer's location and integrity data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerEntry {
    /// file offset of the stored payload
    pub offset: u64,
    /// bytes on disk (compressed size when compressed)
    pub stored_size: u64,
    /// bytes after decompression (= stored_size when uncompressed)
    pub raw_size: u64,
    /// dominant quant type of the layer (informative)
    pub quant_type: u8,
    pub compression: u8,
    pub num_tensors: u16,
    /// CRC-32 of the stored bytes
    pub crc32_stored: u32,
    /// CRC-32 of the decompressed bytes
    pub crc32_raw: u32,
    pub importance: f32,
    /// bytes of weight data (without directory and padding)
    pub weight_bytes: u32,
    /// per-layer FFN width (0 = global)
    pub layer_ffn_dim: u32,
}

impl LayerEntry {
    /// Serialize to 48 bytes. Sizes ≥ 4 GiB use the v2 high words (bytes 40..48).
    pub fn to_bytes(&self) -> [u8; LAYER_ENTRY_SIZE] {
        let mut w = Writer::default();
        w.u64(self.offset);
        w.u32(self.stored_size as u32);
        w.u32(self.raw_size as u32);
        w.u8(self.quant_type);
        w.u8(self.compression);
        w.u16(self.num_tensors);
        w.u32(self.crc32_stored);
        w.u32(self.crc32_raw);
        w.f32(self.importance);
        w.u32(self.weight_bytes);
        w.u32(self.layer_ffn_dim);
        w.u32((self.stored_size >> 32) as u32);
        w.u32((self.raw_size >> 32) as u32);
        let mut out = [0u8; LAYER_ENTRY_SIZE];
        out.copy_from_slice(&w.buf);
        out
    }

    /// Parse one entry. `wide` (version ≥ 2) reads the high size words.
    pub fn parse(buf: &[u8], wide: bool) -> Result<LayerEntry> {
        let mut c = Cursor::new(buf, "layer index entry");
        let offset = c.u64()?;
        let stored_lo = c.u32()? as u64;
        let raw_lo = c.u32()? as u64;
        let mut e = LayerEntry {
            offset,
            quant_type: c.u8()?,
            compression: c.u8()?,
            num_tensors: c.u16()?,
            crc32_stored: c.u32()?,
            crc32_raw: c.u32()?,
            importance: c.f32()?,
            weight_bytes: c.u32()?,
            layer_ffn_dim: c.u32()?,
            ..Default::default()
        };
        let (hi_s, hi_r) = if wide {
            (c.u32()? as u64, c.u32()? as u64)
        } else {
            (0, 0)
        };
        e.stored_size = stored_lo | (hi_s << 32);
        e.raw_size = raw_lo | (hi_r << 32);
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_wide_sizes() {
        let e = LayerEntry {
            offset: 4096,
            stored_size: (5u64 << 32) + 7,
            raw_size: (6u64 << 32) + 9,
            quant_type: 3,
            compression: 1,
            num_tensors: 9,
            crc32_stored: 0xdead_beef,
            crc32_raw: 0x1234_5678,
            importance: 0.5,
            weight_bytes: 100,
            layer_ffn_dim: 0,
        };
        let b = e.to_bytes();
        assert_eq!(LayerEntry::parse(&b, true).unwrap(), e);
        let narrow = LayerEntry::parse(&b, false).unwrap();
        assert_eq!(narrow.stored_size, 7);
        assert!(LayerEntry::parse(&b[..40], true).is_err());
    }
}

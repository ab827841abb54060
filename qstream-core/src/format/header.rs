//! The 256-byte QSF header (docs/qsf.md §Header).
//!
//! Bytes 0..181 are laid out exactly as the original QStream writes them (version 1);
//! version 2 adds the fields at 184..256 and a second CRC over bytes 0..252.

use super::bytes::{Cursor, Writer};
use super::{HEADER_SIZE, MAGIC};
use crate::{Error, Result};

/// Flag: at least one layer is LZ4-compressed.
pub const FLAG_COMPRESSED: u16 = 1;

/// Parsed header. Field names follow docs/qsf.md.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub version: u32,
    pub header_size: u32,
    pub arch: u32,
    pub num_layers: u32,
    pub hidden_dim: u32,
    pub num_heads: u32,
    pub num_kv_heads: u32,
    pub vocab_size: u32,
    pub max_seq_len: u32,
    pub intermediate_dim: u32,
    pub head_dim: u32,
    pub quant_type: u8,
    pub activation: u8,
    pub norm_type: u8,
    pub pos_enc_type: u8,
    pub rope_theta: f32,
    pub norm_epsilon: f32,
    pub block_size: u32,
    pub layer_index_offset: u64,
    pub embedding_offset: u64,
    pub final_offset: u64,
    pub tokenizer_offset: u64,
    pub extended_config_offset: u64,
    pub calibration_offset: u64,
    pub importance_offset: u64,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    pub unk_token_id: u32,
    pub num_params_millions: u32,
    pub has_bias: u8,
    pub ffn_type: u8,
    pub attn_type: u8,
    pub weight_tying: u8,
    pub rope_scaling_type: u32,
    pub rope_scaling_factor: f32,
    pub sliding_window: u32,
    pub tie_word_embeddings: u32,
    pub total_file_size: u64,
    pub header_crc32: u32,
    pub endian_marker: u8,
    pub num_experts_u8: u8,
    pub num_active_experts: u8,
    pub moe_norm_topk: u8,
    pub expert_intermediate_dim: u32,
    // ---- version 2 extension (bytes 184..256) ----
    pub minor_version: u16,
    pub flags: u16,
    pub alignment: u32,
    pub metadata_offset: u64,
    pub metadata_size: u64,
    pub embedding_size: u64,
    pub tokenizer_size: u64,
    pub final_size: u64,
    pub num_experts: u32,
    pub metadata_crc32: u32,
    pub ext_crc32: u32,
}

impl Header {
    /// Serialize to exactly 256 bytes, computing both CRCs.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut w = Writer::default();
        w.u32(MAGIC);
        w.u32(self.version);
        w.u32(HEADER_SIZE as u32);
        for v in [
            self.arch,
            self.num_layers,
            self.hidden_dim,
            self.num_heads,
            self.num_kv_heads,
            self.vocab_size,
            self.max_seq_len,
            self.intermediate_dim,
            self.head_dim,
        ] {
            w.u32(v);
        }
        w.u8(self.quant_type);
        w.u8(self.activation);
        w.u8(self.norm_type);
        w.u8(self.pos_enc_type);
        w.f32(self.rope_theta);
        w.f32(self.norm_epsilon);
        w.u32(self.block_size);
        for v in [
            self.layer_index_offset,
            self.embedding_offset,
            self.final_offset,
            self.tokenizer_offset,
            self.extended_config_offset,
            self.calibration_offset,
            self.importance_offset,
        ] {
            w.u64(v);
        }
        for v in [
            self.bos_token_id,
            self.eos_token_id,
            self.pad_token_id,
            self.unk_token_id,
            self.num_params_millions,
        ] {
            w.u32(v);
        }
        w.u8(self.has_bias);
        w.u8(self.ffn_type);
        w.u8(self.attn_type);
        w.u8(self.weight_tying);
        w.u32(self.rope_scaling_type);
        w.f32(self.rope_scaling_factor);
        w.u32(self.sliding_window);
        w.u32(self.tie_word_embeddings);
        w.u64(self.total_file_size);
        debug_assert_eq!(w.buf.len(), 168);
        let crc = crc32fast::hash(&w.buf);
        w.u32(crc);
        w.u8(1); // endian marker
        w.u8(self.num_experts_u8);
        w.u8(self.num_active_experts);
        w.u8(self.moe_norm_topk);
        w.u8(0);
        w.u32(self.expert_intermediate_dim);
        debug_assert_eq!(w.buf.len(), 181);
        w.zeros(3);
        if self.version >= 2 {
            w.u16(self.minor_version);
            w.u16(self.flags);
            w.u32(self.alignment);
            w.u64(self.metadata_offset);
            w.u64(self.metadata_size);
            w.u64(self.embedding_size);
            w.u64(self.tokenizer_size);
            w.u64(self.final_size);
            w.u32(self.num_experts);
            w.u32(self.metadata_crc32);
            w.zeros(12);
            debug_assert_eq!(w.buf.len(), 252);
            let crc = crc32fast::hash(&w.buf);
            w.u32(crc);
        } else {
            w.zeros(HEADER_SIZE - w.buf.len());
        }
        let mut out = [0u8; HEADER_SIZE];
        out.copy_from_slice(&w.buf);
        out
    }

    /// Parse and validate the header's own structure (magic, version, CRCs).
    /// Offsets are validated against the file by the reader.
    pub fn parse(buf: &[u8]) -> Result<Header> {
        if buf.len() < 4 {
            return Err(Error::corrupt(format!(
                "file is {} bytes, too short for a QSF header",
                buf.len()
            )));
        }
        let mut c = Cursor::new(buf, "QSF header");
        if c.u32()? != MAGIC {
            return Err(Error::BadMagic { what: "QSF" });
        }
        if buf.len() < HEADER_SIZE {
            return Err(Error::corrupt(format!(
                "QSF header truncated: file is {} bytes",
                buf.len()
            )));
        }
        let mut h = Header {
            version: c.u32()?,
            header_size: c.u32()?,
            ..Default::default()
        };
        if h.version == 0 || h.version > super::VERSION {
            return Err(Error::UnsupportedVersion {
                what: "QSF",
                found: h.version,
                supported: super::VERSION,
            });
        }
        if h.header_size != HEADER_SIZE as u32 {
            return Err(Error::corrupt(format!(
                "header_size {} (expected 256)",
                h.header_size
            )));
        }
        h.arch = c.u32()?;
        h.num_layers = c.u32()?;
        h.hidden_dim = c.u32()?;
        h.num_heads = c.u32()?;
        h.num_kv_heads = c.u32()?;
        h.vocab_size = c.u32()?;
        h.max_seq_len = c.u32()?;
        h.intermediate_dim = c.u32()?;
        h.head_dim = c.u32()?;
        h.quant_type = c.u8()?;
        h.activation = c.u8()?;
        h.norm_type = c.u8()?;
        h.pos_enc_type = c.u8()?;
        h.rope_theta = c.f32()?;
        h.norm_epsilon = c.f32()?;
        h.block_size = c.u32()?;
        h.layer_index_offset = c.u64()?;
        h.embedding_offset = c.u64()?;
        h.final_offset = c.u64()?;
        h.tokenizer_offset = c.u64()?;
        h.extended_config_offset = c.u64()?;
        h.calibration_offset = c.u64()?;
        h.importance_offset = c.u64()?;
        h.bos_token_id = c.u32()?;
        h.eos_token_id = c.u32()?;
        h.pad_token_id = c.u32()?;
        h.unk_token_id = c.u32()?;
        h.num_params_millions = c.u32()?;
        h.has_bias = c.u8()?;
        h.ffn_type = c.u8()?;
        h.attn_type = c.u8()?;
        h.weight_tying = c.u8()?;
        h.rope_scaling_type = c.u32()?;
        h.rope_scaling_factor = c.f32()?;
        h.sliding_window = c.u32()?;
        h.tie_word_embeddings = c.u32()?;
        h.total_file_size = c.u64()?;
        h.header_crc32 = c.u32()?;
        let computed = crc32fast::hash(&buf[..168]);
        if computed != h.header_crc32 {
            return Err(Error::Checksum {
                what: "QSF header".into(),
                stored: h.header_crc32,
                computed,
            });
        }
        h.endian_marker = c.u8()?;
        if h.endian_marker != 1 {
            return Err(Error::corrupt(format!(
                "endian marker {:#04x} (only little-endian files, 0x01, exist)",
                h.endian_marker
            )));
        }
        h.num_experts_u8 = c.u8()?;
        h.num_active_experts = c.u8()?;
        h.moe_norm_topk = c.u8()?;
        let _reserved = c.u8()?;
        h.expert_intermediate_dim = c.u32()?;
        if h.version >= 2 {
            c.seek(184);
            h.minor_version = c.u16()?;
            h.flags = c.u16()?;
            h.alignment = c.u32()?;
            h.metadata_offset = c.u64()?;
            h.metadata_size = c.u64()?;
            h.embedding_size = c.u64()?;
            h.tokenizer_size = c.u64()?;
            h.final_size = c.u64()?;
            h.num_experts = c.u32()?;
            h.metadata_crc32 = c.u32()?;
            c.seek(252);
            h.ext_crc32 = c.u32()?;
            let computed = crc32fast::hash(&buf[..252]);
            if computed != h.ext_crc32 {
                return Err(Error::Checksum {
                    what: "QSF header extension".into(),
                    stored: h.ext_crc32,
                    computed,
                });
            }
            if h.alignment != super::ALIGN as u32 {
                return Err(Error::corrupt(format!(
                    "alignment {} (expected 64)",
                    h.alignment
                )));
            }
        } else {
            h.num_experts = h.num_experts_u8 as u32;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 2,
            header_size: 256,
            arch: 1,
            num_layers: 30,
            hidden_dim: 576,
            num_heads: 9,
            num_kv_heads: 3,
            vocab_size: 49152,
            max_seq_len: 8192,
            intermediate_dim: 1536,
            head_dim: 64,
            quant_type: 3,
            rope_theta: 100000.0,
            norm_epsilon: 1e-5,
            block_size: 32,
            layer_index_offset: 256,
            alignment: 64,
            metadata_offset: 1728,
            metadata_size: 500,
            total_file_size: 1 << 20,
            num_experts: 300,
            ..Default::default()
        }
    }

    #[test]
    fn roundtrip() {
        let h = sample();
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b"1FSQ");
        let mut p = Header::parse(&b).unwrap();
        p.header_crc32 = 0;
        p.ext_crc32 = 0;
        let mut q = h.clone();
        q.endian_marker = 1;
        assert_eq!(p, q);
    }

    #[test]
    fn rejects_bad_input() {
        let b = sample().to_bytes();
        let mut x = b;
        x[0] = 0;
        assert!(matches!(Header::parse(&x), Err(Error::BadMagic { .. })));
        assert!(matches!(Header::parse(&b[..100]), Err(Error::Corrupt(_))));
        let mut x = b;
        x[20] ^= 1; // inside the CRC-covered area
        assert!(matches!(Header::parse(&x), Err(Error::Checksum { .. })));
        let mut x = b;
        x[200] ^= 1; // inside the extension
        assert!(matches!(Header::parse(&x), Err(Error::Checksum { .. })));
        let mut h = sample();
        h.version = 3;
        let x = h.to_bytes();
        assert!(matches!(
            Header::parse(&x),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
    }
}

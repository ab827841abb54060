//! Streaming QSF writer (used by `convert`).
//!
//! Sections are written in file order as the converter produces them, so only one layer's
//! bytes are in memory at a time. Output goes to `<path>.tmp` and is renamed over `path`
//! only by [`QsfWriter::finish`]: a failed or interrupted conversion never leaves a
//! half-written file under the final name (and never destroys an existing one).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::bytes::Writer;
use super::header::{Header, FLAG_COMPRESSED};
use super::layer_index::{LayerEntry, COMPRESSION_LZ4, COMPRESSION_NONE};
use super::section::{build_payload, PayloadTensor};
use super::{align_up, ALIGN, HEADER_SIZE, LAYER_ENTRY_SIZE, MINOR_VERSION, VERSION};
use crate::import::TokenizerData;
use crate::model::config::{Activation, ModelConfig, NormType, RopeScaling};
use crate::model::names;
use crate::quant::QuantType;
use crate::{Error, Result};

/// A tensor handed to the writer. `name` is the name inside its section (for layers, without
/// the `blk.N.` prefix).
#[derive(Debug, Clone)]
pub struct WriteTensor {
    pub name: String,
    pub qtype: QuantType,
    pub block: usize,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
    /// incoherence rotation group of the input dimension (0 = none; `quant::rotate`)
    pub rotation: usize,
}

impl WriteTensor {
    fn as_payload(&self) -> PayloadTensor<'_> {
        PayloadTensor {
            name: &self.name,
            kind: names::original_kind(&self.name),
            qtype: self.qtype,
            block: self.block,
            shape: &self.shape,
            data: &self.data,
            rotation: self.rotation,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Embedding,
    Tokenizer,
    Layers,
    Final,
    Done,
}

/// Writes one QSF file. See the module docs.
pub struct QsfWriter {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    pos: u64,
    header: Header,
    layers: Vec<Option<LayerEntry>>,
    stage: Stage,
    next_layer: usize,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Original-header ids for rope scaling (3 yarn, 1 linear; 5 llama3 and 6 longrope are v2 additions).
fn rope_scaling_id(s: &Option<RopeScaling>) -> (u32, f32) {
    match s {
        None => (0, 1.0),
        Some(RopeScaling::Linear { factor }) => (1, *factor),
        Some(RopeScaling::Yarn { factor, .. }) => (3, *factor),
        Some(RopeScaling::Llama3 { factor, .. }) => (5, *factor),
        Some(RopeScaling::LongRope { .. }) => (6, 1.0),
    }
}

/// Fill the original header fields from a model config.
pub fn header_from_config(config: &ModelConfig, quant: QuantType, block: usize) -> Header {
    let (rs_type, rs_factor) =
        rope_scaling_id(&config.rope.as_ref().and_then(|r| r.scaling.clone()));
    let moe = config.moe.as_ref();
    Header {
        version: VERSION,
        header_size: HEADER_SIZE as u32,
        arch: config.arch.header_id(),
        num_layers: config.n_layer as u32,
        hidden_dim: config.n_embd as u32,
        num_heads: config.n_head as u32,
        num_kv_heads: config.n_head_kv as u32,
        vocab_size: config.n_vocab as u32,
        max_seq_len: config.n_ctx_train.min(u32::MAX as usize) as u32,
        intermediate_dim: config.n_ff as u32,
        head_dim: config.head_dim as u32,
        quant_type: quant.id(),
        activation: match config.act {
            Activation::Gelu => 0,
            Activation::GeluTanh => 1,
            Activation::Silu => 2,
            Activation::Relu => 3,
        },
        norm_type: match config.norm {
            NormType::LayerNorm => 0,
            NormType::RmsNorm => 2,
        },
        pos_enc_type: if config.rope.is_some() { 1 } else { 0 },
        rope_theta: config.rope.as_ref().map_or(0.0, |r| r.theta),
        norm_epsilon: config.norm_eps,
        block_size: block as u32,
        layer_index_offset: HEADER_SIZE as u64,
        bos_token_id: config.bos_token_id.unwrap_or(u32::MAX),
        eos_token_id: config.eos_token_ids.first().copied().unwrap_or(u32::MAX),
        pad_token_id: config.pad_token_id.unwrap_or(u32::MAX),
        unk_token_id: u32::MAX,
        has_bias: config.qkv_bias as u8,
        ffn_type: if moe.is_some() {
            3
        } else if config.gated_mlp {
            1
        } else {
            0
        },
        attn_type: 0,
        weight_tying: config.tie_embeddings as u8,
        rope_scaling_type: rs_type,
        rope_scaling_factor: rs_factor,
        sliding_window: config.sliding_window.unwrap_or(0) as u32,
        tie_word_embeddings: config.tie_embeddings as u32,
        endian_marker: 1,
        num_experts_u8: moe.map_or(0, |m| m.n_expert.min(255) as u8),
        num_active_experts: moe.map_or(0, |m| m.n_expert_used.min(255) as u8),
        moe_norm_topk: moe.is_some_and(|m| m.norm_topk_prob) as u8,
        expert_intermediate_dim: moe.map_or(0, |m| m.expert_ff as u32),
        minor_version: MINOR_VERSION,
        alignment: ALIGN as u32,
        num_experts: moe.map_or(0, |m| m.n_expert as u32),
        ..Default::default()
    }
}

impl QsfWriter {
    /// Start a file at `path` for a model with `config`. `quant`/`block` are the file's
    /// dominant type (recorded in the header; each tensor carries its own).
    pub fn create(
        path: &Path,
        config: &ModelConfig,
        quant: QuantType,
        block: usize,
    ) -> Result<Self> {
        config.validate()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut header = header_from_config(config, quant, block);
        header.num_params_millions = 0;
        let mut w = QsfWriter {
            tmp,
            path: path.to_path_buf(),
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            pos: 0,
            header,
            layers: vec![None; config.n_layer],
            stage: Stage::Embedding,
            next_layer: 0,
        };
        // placeholder header + index, rewritten by finish()
        let index_len = config.n_layer * LAYER_ENTRY_SIZE;
        w.write_raw(&vec![0u8; HEADER_SIZE + index_len])?;
        let json = serde_json::to_vec_pretty(config).map_err(|e| Error::Internal(e.to_string()))?;
        let off = w.align()?;
        w.header.metadata_offset = off;
        w.header.extended_config_offset = off;
        w.header.metadata_size = json.len() as u64;
        w.header.metadata_crc32 = crc32fast::hash(&json);
        w.write_raw(&json)?;
        Ok(w)
    }

    fn file(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("writer used after finish")
    }

    fn write_raw(&mut self, b: &[u8]) -> Result<()> {
        let tmp = self.tmp.clone();
        self.file().write_all(b).map_err(io_err(&tmp))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn align(&mut self) -> Result<u64> {
        let target = align_up(self.pos);
        let pad = (target - self.pos) as usize;
        self.write_raw(&vec![0u8; pad])?;
        Ok(self.pos)
    }

    fn expect_stage(&mut self, s: Stage) -> Result<()> {
        if self.stage != s {
            return Err(Error::Internal(format!(
                "QSF writer: expected {:?}, got {s:?}",
                self.stage
            )));
        }
        Ok(())
    }

    /// Write the embedding section (`token_embd`, optionally `pos_embd`).
    pub fn write_embedding(&mut self, tensors: &[WriteTensor]) -> Result<()> {
        self.expect_stage(Stage::Embedding)?;
        let emb = tensors
            .iter()
            .find(|t| t.name == names::TOKEN_EMBD)
            .ok_or_else(|| Error::InvalidArgument("embedding section needs token_embd".into()))?;
        let payload_t: Vec<_> = tensors.iter().map(|t| t.as_payload()).collect();
        let (payload, _) = build_payload(&payload_t)?;
        let mut h = Writer::default();
        h.u32(emb.qtype.id() as u32);
        h.u32(payload.len() as u32);
        h.u32(emb.shape[0] as u32);
        h.u32(*emb.shape.last().unwrap_or(&0) as u32);
        h.u8(COMPRESSION_NONE);
        h.zeros(3);
        h.u32(crc32fast::hash(&payload));
        h.u32(0);
        h.u32(0);
        h.pad_to(ALIGN as usize);
        let off = self.align()?;
        self.header.embedding_offset = off;
        self.write_raw(&h.buf)?;
        self.write_raw(&payload)?;
        self.header.embedding_size = self.pos - off;
        self.stage = Stage::Tokenizer;
        Ok(())
    }

    /// Write the tokenizer section.
    pub fn write_tokenizer(&mut self, tok: &TokenizerData, n_vocab: usize) -> Result<()> {
        self.expect_stage(Stage::Tokenizer)?;
        let template = tok.chat_template.clone().unwrap_or_default();
        let special =
            serde_json::to_vec(&tok.special_tokens).map_err(|e| Error::Internal(e.to_string()))?;
        let mut h = Writer::default();
        h.u32(0); // bpe family; the JSON says exactly what
        h.u32(n_vocab as u32);
        h.u32(0);
        h.u32(0);
        h.u32(tok.tokenizer_json.len() as u32);
        h.u32(template.len() as u32);
        h.u32(special.len() as u32);
        h.u32(super::reader::TOKENIZER_FLAG_JSON);
        let mut body =
            Vec::with_capacity(tok.tokenizer_json.len() + template.len() + special.len() + 4);
        body.extend_from_slice(tok.tokenizer_json.as_bytes());
        body.extend_from_slice(template.as_bytes());
        body.extend_from_slice(&special);
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let off = self.align()?;
        self.header.tokenizer_offset = off;
        self.write_raw(&h.buf)?;
        self.write_raw(&body)?;
        self.header.tokenizer_size = self.pos - off;
        self.stage = Stage::Layers;
        Ok(())
    }

    /// Write layer `idx` (layers must come in order 0..n_layer). With `compress`, the payload
    /// is stored as one raw LZ4 block when that makes it smaller.
    pub fn write_layer(
        &mut self,
        idx: usize,
        tensors: &[WriteTensor],
        compress: bool,
    ) -> Result<()> {
        self.expect_stage(Stage::Layers)?;
        if idx != self.next_layer || idx >= self.layers.len() {
            return Err(Error::Internal(format!(
                "QSF writer: layer {idx} out of order"
            )));
        }
        let payload_t: Vec<_> = tensors.iter().map(|t| t.as_payload()).collect();
        let (payload, _) = build_payload(&payload_t)?;
        let weight_bytes: usize = tensors.iter().map(|t| t.data.len()).sum();
        let dominant = tensors
            .iter()
            .max_by_key(|t| t.data.len())
            .map_or(0xFF, |t| t.qtype.id());
        let crc_raw = crc32fast::hash(&payload);
        let mut entry = LayerEntry {
            raw_size: payload.len() as u64,
            quant_type: dominant,
            num_tensors: tensors.len() as u16,
            crc32_raw: crc_raw,
            weight_bytes: weight_bytes.min(u32::MAX as usize) as u32,
            ..Default::default()
        };
        let off = self.align()?;
        entry.offset = off;
        let compressed = if compress && payload.len() > 1024 {
            let c = lz4_flex::block::compress(&payload);
            (c.len() < payload.len()).then_some(c)
        } else {
            None
        };
        match compressed {
            Some(c) => {
                entry.compression = COMPRESSION_LZ4;
                entry.stored_size = c.len() as u64;
                entry.crc32_stored = crc32fast::hash(&c);
                self.header.flags |= FLAG_COMPRESSED;
                self.write_raw(&c)?;
            }
            None => {
                entry.compression = COMPRESSION_NONE;
                entry.stored_size = payload.len() as u64;
                entry.crc32_stored = crc_raw;
                self.write_raw(&payload)?;
            }
        }
        self.layers[idx] = Some(entry);
        self.next_layer += 1;
        if self.next_layer == self.layers.len() {
            self.stage = Stage::Final;
        }
        Ok(())
    }

    /// Write the final section (`output_norm`, optional `output_norm.bias`, `output`, `output.bias`).
    pub fn write_final(&mut self, tensors: &[WriteTensor]) -> Result<()> {
        self.expect_stage(Stage::Final)?;
        let payload_t: Vec<_> = tensors.iter().map(|t| t.as_payload()).collect();
        let (payload, _) = build_payload(&payload_t)?;
        let size_of = |n: &str| {
            tensors
                .iter()
                .find(|t| t.name == n)
                .map_or(0, |t| t.data.len() as u32)
        };
        let head_type = if size_of(names::OUTPUT) == 0 {
            1
        } else if size_of("output.bias") > 0 {
            2
        } else {
            0
        };
        let mut h = Writer::default();
        h.u32(head_type);
        h.u32(size_of(names::OUTPUT_NORM));
        h.u32(size_of(names::OUTPUT));
        h.u32(crc32fast::hash(&payload));
        h.pad_to(ALIGN as usize);
        let off = self.align()?;
        self.header.final_offset = off;
        self.write_raw(&h.buf)?;
        self.write_raw(&payload)?;
        self.header.final_size = self.pos - off;
        self.stage = Stage::Done;
        Ok(())
    }

    /// Set the parameter count recorded in the header.
    pub fn set_num_params(&mut self, n: u64) {
        self.header.num_params_millions = (n / 1_000_000).min(u32::MAX as u64) as u32;
    }

    /// Write header and index, flush, and move the file into place. Returns the file size.
    pub fn finish(mut self) -> Result<u64> {
        self.expect_stage(Stage::Done)?;
        self.header.total_file_size = self.pos;
        let mut index = Vec::with_capacity(self.layers.len() * LAYER_ENTRY_SIZE);
        for e in &self.layers {
            let e = e
                .as_ref()
                .ok_or_else(|| Error::Internal("missing layer".into()))?;
            index.extend_from_slice(&e.to_bytes());
        }
        let header = self.header.to_bytes();
        let tmp = self.tmp.clone();
        let mut file = self.file.take().expect("finish once");
        let res = (|| -> std::io::Result<()> {
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header)?;
            file.write_all(&index)?;
            file.flush()?;
            file.get_ref().sync_all()?;
            Ok(())
        })();
        drop(file);
        res.map_err(io_err(&tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        Ok(self.pos)
    }
}

impl Drop for QsfWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

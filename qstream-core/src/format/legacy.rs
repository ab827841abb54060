//! Files in the original C QStream's layout (format version 1), docs/qsf.md §10.
//!
//! - [`open`] (called by [`QsfFile::open`] for version-1 files) validates the whole file —
//!   every offset and size overflow-checked and inside the file, every tensor header inside
//!   its layer, every data size consistent with type and shape, every CRC — and **repacks**
//!   each tensor into the v2 types in owned memory: the v1 block's fp16 scale/zero bits and
//!   integer levels are copied unchanged into the v2 block layout (no requantization), so
//!   a repacked tensor dequantizes to exactly the values its v1 blocks encode.
//! - [`write_v1`] writes the original layout byte for byte (used for interoperability tests
//!   and to hand models to the original engine).
//!
//! Version-1 type → v2 type: 2-bit asym → `q2`, 3-bit asym → `q3`, 4-bit asym → `q4`,
//! 4-bit sym → `q4_sym` (level = signed nibble + 8), 2/4-bit outlier → `q2_outlier` /
//! `q4_outlier` (same block size); 8-bit asym (`[fp16 scale][fp16 zero][u8 × B]`) has no
//! exact v2 type and becomes `f32` computed as `scale·q + zero`; fp16 matrices stay `f16`;
//! fp16 norms and biases become `f32`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use half::f16;

use super::bytes::{checked_range, Cursor, Writer};
use super::header::Header;
use super::layer_index::LayerEntry;
use super::reader::QsfFile;
use super::{align_up, HEADER_SIZE, LAYER_ENTRY_SIZE};
use crate::import::TokenizerData;
use crate::model::config::{
    Activation, Arch, ModelConfig, NormType, RopeConfig, RopeScaling, RopeStyle,
};
use crate::model::names;
use crate::quant::QuantType;
use crate::tensor::{Storage, Tensor};
use crate::{Error, Result};

/// Size of a version-1 tensor header inside a layer.
pub const TENSOR_HEADER_SIZE: usize = 24;
/// Size of the embedding section header.
pub const EMBEDDING_HEADER_SIZE: usize = 32;
/// Size of the tokenizer section header.
pub const TOKENIZER_HEADER_SIZE: usize = 32;
/// Size of the final section header.
pub const FINAL_HEADER_SIZE: usize = 16;
/// The original converter's default block size.
pub const DEFAULT_BLOCK: usize = 64;
/// Tensor `quant_type` meaning "the layer's default".
const LAYER_DEFAULT: u8 = 0xFF;
/// Tensor type id of the learned position embedding.
const KIND_POS_EMBD: u16 = 20;
/// First expert tensor type id (23 + 6e ...).
const KIND_FIRST_EXPERT: u16 = 23;
/// Largest LZ4 expansion ratio (a raw LZ4 block cannot expand data more than 255×).
const LZ4_MAX_RATIO: u64 = 255;

/// Tensors of a legacy file, repacked into QSF v2 types in memory.
#[derive(Clone, Default)]
pub struct LegacyTensors {
    /// `token_embd` (and `pos_embd` for learned positions).
    pub embedding: Vec<Tensor>,
    /// per layer, names without the `blk.N.` prefix
    pub layers: Vec<Vec<Tensor>>,
    /// `output_norm` (+ `.bias`), `output` (+ `.bias`) unless tied
    pub final_: Vec<Tensor>,
}

/// A version-1 storage type (the original's quant ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Quant {
    /// id 0: 2-bit asymmetric, 4 values per byte, LSB first.
    Q2,
    /// id 2: 3-bit asymmetric, one LSB-first bit stream per block.
    Q3,
    /// id 3: 4-bit asymmetric, low nibble first.
    Q4,
    /// id 4: 4-bit symmetric: fp16 scale, 2 reserved bytes, signed nibbles in [−8, 7].
    Q4Sym,
    /// id 6: 8-bit asymmetric `[fp16 scale][fp16 zero][u8 × B]`.
    Q8,
    /// id 7: IEEE half, no blocks.
    F16,
    /// id 9: 2-bit asymmetric plus fp16 outliers.
    Q2Outlier,
    /// id 10: 4-bit asymmetric plus fp16 outliers.
    Q4Outlier,
}

impl V1Quant {
    /// The original quant id.
    pub fn id(self) -> u8 {
        match self {
            V1Quant::Q2 => 0,
            V1Quant::Q3 => 2,
            V1Quant::Q4 => 3,
            V1Quant::Q4Sym => 4,
            V1Quant::Q8 => 6,
            V1Quant::F16 => 7,
            V1Quant::Q2Outlier => 9,
            V1Quant::Q4Outlier => 10,
        }
    }

    /// The type with original id `id`. Ids the original defines but QStream does not read
    /// (1 2-bit symmetric, 5 ternary, 8 mixed) and unknown ids are `UnsupportedQuant` errors.
    pub fn from_id(id: u8, what: &str) -> Result<Self> {
        Ok(match id {
            0 => V1Quant::Q2,
            2 => V1Quant::Q3,
            3 => V1Quant::Q4,
            4 => V1Quant::Q4Sym,
            6 => V1Quant::Q8,
            7 => V1Quant::F16,
            9 => V1Quant::Q2Outlier,
            10 => V1Quant::Q4Outlier,
            1 | 5 | 8 => {
                let n = [
                    "",
                    "2-bit symmetric",
                    "",
                    "",
                    "",
                    "ternary",
                    "",
                    "",
                    "mixed",
                ][id as usize];
                return Err(Error::UnsupportedQuant(format!(
                    "{what}: original quant type {id} ({n})"
                )));
            }
            _ => {
                return Err(Error::UnsupportedQuant(format!(
                    "{what}: unknown original quant type id {id}"
                )))
            }
        })
    }

    /// The dense type of an outlier type (identity otherwise).
    pub fn base(self) -> Self {
        match self {
            V1Quant::Q2Outlier => V1Quant::Q2,
            V1Quant::Q4Outlier => V1Quant::Q4,
            t => t,
        }
    }

    /// True for the outlier types.
    pub fn is_outlier(self) -> bool {
        matches!(self, V1Quant::Q2Outlier | V1Quant::Q4Outlier)
    }

    /// Bytes of one block of `block` values (of one value for F16).
    pub fn block_bytes(self, block: usize) -> usize {
        match self.base() {
            V1Quant::Q2 => 4 + block / 4,
            V1Quant::Q3 => 4 + 3 * block / 8,
            V1Quant::Q4 | V1Quant::Q4Sym => 4 + block / 2,
            V1Quant::Q8 => 4 + block,
            _ => 2,
        }
    }

    /// Bytes of one dense row of `cols` values (`None` on overflow).
    pub fn row_bytes(self, block: usize, cols: usize) -> Option<usize> {
        if self == V1Quant::F16 {
            cols.checked_mul(2)
        } else {
            cols.div_ceil(block).checked_mul(self.block_bytes(block))
        }
    }

    /// Bytes of a dense `rows × cols` tensor (`None` on overflow).
    pub fn dense_bytes(self, block: usize, rows: usize, cols: usize) -> Option<usize> {
        self.base().row_bytes(block, cols)?.checked_mul(rows)
    }
}

// ---------------------------------------------------------------------------------------
// v1 block packing

/// Level `i` of a v1 block, from the block's packed bytes (after its 4-byte header).
/// `packed` is exactly the block's packed bytes, so no read leaves the block.
fn v1_level(q: V1Quant, packed: &[u8], i: usize) -> u8 {
    match q.base() {
        V1Quant::Q2 => (packed[i / 4] >> (2 * (i % 4))) & 3,
        V1Quant::Q4 | V1Quant::Q4Sym => {
            if i.is_multiple_of(2) {
                packed[i / 2] & 0x0F
            } else {
                packed[i / 2] >> 4
            }
        }
        V1Quant::Q3 => {
            let mut v = 0u8;
            for k in 0..3 {
                let bit = 3 * i + k;
                v |= ((packed[bit / 8] >> (bit % 8)) & 1) << k;
            }
            v
        }
        _ => packed[i],
    }
}

/// Store level `v` as value `i` of a v1 block's packed bytes.
fn v1_set_level(q: V1Quant, packed: &mut [u8], i: usize, v: u8) {
    match q.base() {
        V1Quant::Q2 => packed[i / 4] |= (v & 3) << (2 * (i % 4)),
        V1Quant::Q4 | V1Quant::Q4Sym => packed[i / 2] |= (v & 0x0F) << (4 * (i % 2)),
        V1Quant::Q3 => {
            for k in 0..3 {
                let bit = 3 * i + k;
                packed[bit / 8] |= ((v >> k) & 1) << (bit % 8);
            }
        }
        _ => packed[i] = v,
    }
}

/// Quantize one v1 block of `x` (`x.len() ≤ block`, padding levels are 0) into `out`
/// (exactly `q.block_bytes(block)` bytes, zeroed). Min/max rule of the original:
/// scale = (max − min)/(2^bits − 1), zero = min; sym: scale = max|x|/7.
fn quantize_v1_block(q: V1Quant, x: &[f32], out: &mut [u8]) {
    let (hdr, packed) = out.split_at_mut(4);
    if q.base() == V1Quant::Q4Sym {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let s = f16::from_f32(amax / 7.0);
        hdr[0..2].copy_from_slice(&s.to_le_bytes());
        let s = s.to_f32();
        for (i, v) in x.iter().enumerate() {
            let l = if s > 0.0 {
                (v / s).round().clamp(-8.0, 7.0) as i8
            } else {
                0
            };
            v1_set_level(q, packed, i, (l as u8) & 0x0F);
        }
        return;
    }
    let nmax = match q.base() {
        V1Quant::Q2 => 3u32,
        V1Quant::Q3 => 7,
        V1Quant::Q4 => 15,
        _ => 255,
    };
    let mn = x.iter().fold(f32::INFINITY, |a, &v| a.min(v));
    let mx = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let (mn, mx) = if x.is_empty() { (0.0, 0.0) } else { (mn, mx) };
    let s = f16::from_f32((mx - mn) / nmax as f32);
    let z = f16::from_f32(mn);
    hdr[0..2].copy_from_slice(&s.to_le_bytes());
    hdr[2..4].copy_from_slice(&z.to_le_bytes());
    let (s, z) = (s.to_f32(), z.to_f32());
    for (i, v) in x.iter().enumerate() {
        let l = if s > 0.0 {
            ((v - z) / s).round().clamp(0.0, nmax as f32) as u8
        } else {
            0
        };
        v1_set_level(q, packed, i, l);
    }
}

/// Dense v1 encoding of a row-major `rows × cols` tensor.
fn quantize_v1_dense(q: V1Quant, block: usize, data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    if q == V1Quant::F16 {
        return data
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
    }
    let bb = q.block_bytes(block);
    let nb = cols.div_ceil(block);
    let mut out = vec![0u8; rows * nb * bb];
    for r in 0..rows {
        let row = &data[r * cols..(r + 1) * cols];
        for (b, x) in row.chunks(block).enumerate() {
            let o = (r * nb + b) * bb;
            quantize_v1_block(q, x, &mut out[o..o + bb]);
        }
    }
    out
}

/// v1 bytes of a tensor: dense, or `[n u32][n × (flat_index u32, value fp16)][dense]` for the
/// outlier types (the largest `outlier_frac` of |w|, zeroed in the dense copy).
fn quantize_v1(
    q: V1Quant,
    block: usize,
    data: &[f32],
    rows: usize,
    cols: usize,
    outlier_frac: f32,
) -> Vec<u8> {
    if !q.is_outlier() {
        return quantize_v1_dense(q, block, data, rows, cols);
    }
    let n = ((data.len() as f64) * outlier_frac as f64).ceil() as usize;
    let mut idx: Vec<usize> = (0..data.len()).collect();
    idx.sort_by(|&a, &b| data[b].abs().total_cmp(&data[a].abs()).then(a.cmp(&b)));
    idx.truncate(n.min(data.len()));
    idx.sort_unstable();
    let mut dense = data.to_vec();
    let mut out = Vec::new();
    out.extend_from_slice(&(idx.len() as u32).to_le_bytes());
    for &i in &idx {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(data[i]).to_le_bytes());
        dense[i] = 0.0;
    }
    out.extend_from_slice(&quantize_v1_dense(q.base(), block, &dense, rows, cols));
    out
}

// ---------------------------------------------------------------------------------------
// repacking v1 → v2

fn copy_hdr(dst: &mut [u8], src: &[u8], n: usize) {
    dst[..n].copy_from_slice(&src[..n]);
}

/// Repack one v1 dense block (`src`, exactly `q.block_bytes(block)` bytes) into the v2 block
/// `dst` (exactly the v2 type's block bytes, zeroed), keeping scale/zero bits and levels.
fn repack_block(q: V1Quant, block: usize, src: &[u8], dst: &mut [u8]) {
    let packed = &src[4..];
    match q.base() {
        V1Quant::Q4 => {
            copy_hdr(dst, src, 4);
            for i in 0..block {
                let l = v1_level(q, packed, i);
                dst[4 + (i / 32) * 16 + (i % 16)] |= l << (4 * ((i % 32) / 16));
            }
        }
        V1Quant::Q4Sym => {
            copy_hdr(dst, src, 2);
            for i in 0..block {
                // signed two's-complement nibble s ∈ [−8, 7] → v2 level s + 8 = nibble ^ 8
                let l = v1_level(q, packed, i) ^ 8;
                dst[2 + (i / 32) * 16 + (i % 16)] |= l << (4 * ((i % 32) / 16));
            }
        }
        V1Quant::Q2 | V1Quant::Q3 => {
            copy_hdr(dst, src, 4);
            let high_start = 4 + block / 4;
            for i in 0..block {
                let l = v1_level(q, packed, i);
                let (g, j) = (i / 32, i % 32);
                dst[4 + g * 8 + (j % 8)] |= (l & 3) << (2 * (j / 8));
                if q.base() == V1Quant::Q3 {
                    dst[high_start + g * 4 + j / 8] |= ((l >> 2) & 1) << (j % 8);
                }
            }
        }
        _ => unreachable!("repack_block: dense block types only"),
    }
}

/// The v2 type of a repacked dense v1 type.
fn v2_type(q: V1Quant) -> QuantType {
    match q {
        V1Quant::Q2 => QuantType::Q2,
        V1Quant::Q3 => QuantType::Q3,
        V1Quant::Q4 => QuantType::Q4,
        V1Quant::Q4Sym => QuantType::Q4Sym,
        V1Quant::Q8 => QuantType::F32,
        V1Quant::F16 => QuantType::F16,
        V1Quant::Q2Outlier => QuantType::Q2Outlier,
        V1Quant::Q4Outlier => QuantType::Q4Outlier,
    }
}

/// Repack a dense v1 tensor (`data` has exactly the dense size) into v2 bytes.
fn repack_dense(q: V1Quant, block: usize, data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    match q {
        V1Quant::F16 => data.to_vec(),
        V1Quant::Q8 => {
            let bb = q.block_bytes(block);
            let nb = cols.div_ceil(block);
            let mut out = Vec::with_capacity(rows * cols * 4);
            for r in 0..rows {
                for c in 0..cols {
                    let blk = &data[(r * nb + c / block) * bb..][..bb];
                    let s = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                    let z = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                    let v = s * blk[4 + c % block] as f32 + z;
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            out
        }
        _ => {
            let t = v2_type(q.base());
            let (sb, db) = (q.block_bytes(block), t.block_bytes(block));
            let nblocks = rows * cols.div_ceil(block);
            let mut out = vec![0u8; nblocks * db];
            for (s, d) in data.chunks_exact(sb).zip(out.chunks_exact_mut(db)) {
                repack_block(q, block, s, d);
            }
            out
        }
    }
}

/// Validate and repack one v1 tensor's data into a v2 [`Tensor`] named `name` with `shape`
/// (`rows × cols` values). `vector` tensors (norms, biases) must be fp16 and become f32.
fn repack_tensor(
    name: &str,
    q: V1Quant,
    block: usize,
    shape: Vec<usize>,
    data: &[u8],
    vector: bool,
) -> Result<Tensor> {
    let cols = *shape.last().unwrap_or(&1);
    let rows: usize = shape[..shape.len() - 1].iter().product::<usize>().max(1);
    let bad = |m: String| Error::corrupt(format!("version-1 tensor {name}: {m}"));
    if vector {
        if q != V1Quant::F16 {
            return Err(Error::UnsupportedQuant(format!(
                "version-1 tensor {name}: norms and biases must be fp16, found original type {}",
                q.id()
            )));
        }
        if rows.checked_mul(cols).and_then(|n| n.checked_mul(2)) != Some(data.len()) {
            return Err(bad(format!(
                "{} bytes for {rows}x{cols} fp16 values",
                data.len()
            )));
        }
        let v: Vec<f32> = data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        return Ok(Tensor::from_f32(name, shape, &v));
    }
    let dense = q
        .dense_bytes(block, rows, cols)
        .ok_or_else(|| bad(format!("shape {rows}x{cols} too large")))?;
    if !q.is_outlier() {
        if data.len() != dense {
            return Err(bad(format!(
                "original type {} {rows}x{cols} (block {block}) needs {dense} bytes, data_size is {}",
                q.id(),
                data.len()
            )));
        }
        let b = if q == V1Quant::F16 || q == V1Quant::Q8 {
            1
        } else {
            block
        };
        return Ok(Tensor::from_bytes(
            name,
            v2_type(q),
            b,
            shape,
            &repack_dense(q, block, data, rows, cols),
        ));
    }
    // outlier: [n u32][n × (flat_index u32, value f16)][dense]
    let mut c = Cursor::new(data, "version-1 outlier tensor");
    let n = c.u32()? as usize;
    let list_bytes = n
        .checked_mul(6)
        .ok_or_else(|| bad(format!("{n} outliers")))?;
    let expect = list_bytes
        .checked_add(4)
        .and_then(|x| x.checked_add(dense))
        .ok_or_else(|| bad(format!("{n} outliers")))?;
    if data.len() != expect {
        return Err(bad(format!(
            "{n} outliers + dense part need {expect} bytes, data_size is {}",
            data.len()
        )));
    }
    let numel = rows * cols;
    let mut list: Vec<(u32, [u8; 2])> = Vec::with_capacity(n);
    for _ in 0..n {
        let idx = c.u32()?;
        let v = c.take(2)?;
        if idx as usize >= numel {
            return Err(bad(format!("outlier index {idx} outside {numel} values")));
        }
        list.push((idx, [v[0], v[1]]));
    }
    list.sort_unstable_by_key(|e| e.0);
    if list.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(bad("duplicate outlier index".into()));
    }
    let dense_bytes = c.take(dense)?;
    // v2: [dense][n u32][row_ptr u32 × (rows+1)][col u32 × n][value f16 × n]
    let mut out = repack_dense(q.base(), block, dense_bytes, rows, cols);
    out.reserve(4 + 4 * (rows + 1) + 6 * n);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    let mut k = 0usize;
    for r in 0..=rows {
        while k < n && (list[k].0 as usize) < r * cols {
            k += 1;
        }
        out.extend_from_slice(&(k as u32).to_le_bytes());
    }
    for (idx, _) in &list {
        out.extend_from_slice(&((*idx as usize % cols) as u32).to_le_bytes());
    }
    for (_, v) in &list {
        out.extend_from_slice(v);
    }
    Ok(Tensor::from_bytes(name, v2_type(q), block, shape, &out))
}

// ---------------------------------------------------------------------------------------
// names and config

/// The in-layer name of original tensor type `kind` (docs/qsf.md §10).
fn kind_name(kind: u16) -> Option<&'static str> {
    Some(match kind {
        0 => names::ATTN_Q,
        1 => names::ATTN_K,
        2 => names::ATTN_V,
        3 => names::ATTN_OUT,
        4 => names::FFN_GATE,
        5 => names::FFN_UP,
        6 => names::FFN_DOWN,
        7 => names::ATTN_NORM,
        8 => names::FFN_NORM,
        9 => names::ATTN_Q_NORM,
        10 => names::ATTN_K_NORM,
        11 => "attn_q.bias",
        12 => "attn_k.bias",
        13 => "attn_v.bias",
        14 => "attn_output.bias",
        15 => "ffn_gate.bias",
        16 => "ffn_up.bias",
        17 => "ffn_down.bias",
        18 => names::ATTN_QKV,
        19 => "attn_qkv.bias",
        21 => "ffn_gate_inp",
        22 => "ffn_gate_inp.bias",
        _ => return None,
    })
}

/// Norm kinds (7..=10) may carry a bias as a second row.
fn is_norm_kind(kind: u16) -> bool {
    (7..=10).contains(&kind)
}

/// Kinds stored as fp16 vectors (norms, biases).
fn is_vector_kind(kind: u16) -> bool {
    is_norm_kind(kind) || (11..=17).contains(&kind) || kind == 19 || kind == 22
}

fn opt_id(v: u32, n_vocab: u32, what: &str) -> Result<Option<u32>> {
    if v == u32::MAX {
        Ok(None)
    } else if v < n_vocab {
        Ok(Some(v))
    } else {
        Err(Error::corrupt(format!(
            "{what} token id {v} outside the vocabulary ({n_vocab})"
        )))
    }
}

/// What the tensors of a file say about the architecture.
#[derive(Default)]
struct Traits {
    qk_norm: bool,
    gated: bool,
    qkv_bias: bool,
    tied: bool,
}

/// Build the model config from a v1 header (docs/qsf.md §10 for the mapping).
fn config_from_header(h: &Header, t: &Traits) -> Result<ModelConfig> {
    let unsupported = |m: String| Err(Error::UnsupportedArch(format!("version-1 file: {m}")));
    let arch = match h.arch {
        0 => Arch::Gpt2,
        1 => Arch::Llama,
        2 => Arch::Mistral,
        3 => Arch::Phi,
        4 => Arch::Gptj,
        5 if t.qk_norm => Arch::Qwen3,
        5 => Arch::Qwen2,
        6 => Arch::Gemma,
        a => return unsupported(format!("architecture id {a}")),
    };
    let (act, force_gated) = match h.activation {
        0 => (Activation::Gelu, false),
        1 => (Activation::GeluTanh, false),
        2 => (Activation::Silu, false),
        3 => (Activation::Relu, false),
        5 => (Activation::GeluTanh, true),
        a => return unsupported(format!("activation id {a}")),
    };
    let norm = match h.norm_type {
        0 => NormType::LayerNorm,
        2 => NormType::RmsNorm,
        n => return unsupported(format!("norm type {n} (post-norm)")),
    };
    let head_dim = if h.head_dim != 0 {
        h.head_dim as usize
    } else {
        h.hidden_dim.checked_div(h.num_heads).unwrap_or(0) as usize
    };
    let rope = match h.pos_enc_type {
        0 | 3 => None,
        1 => {
            let factor = h.rope_scaling_factor;
            let scaling = match h.rope_scaling_type {
                0 => None,
                1 => Some(RopeScaling::Linear { factor }),
                3 if factor.is_finite() && factor >= 1.0 => Some(RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: (h.max_seq_len as f32 / factor) as usize,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    mscale: None,
                    mscale_all_dim: None,
                    truncate: None,
                }),
                s => return unsupported(format!("rope scaling type {s} (factor {factor})")),
            };
            if !h.rope_theta.is_finite() || h.rope_theta <= 0.0 {
                return Err(Error::corrupt(format!(
                    "version-1 file: rope_theta {}",
                    h.rope_theta
                )));
            }
            Some(RopeConfig {
                theta: h.rope_theta,
                dim: head_dim,
                style: if arch == Arch::Gptj {
                    RopeStyle::Interleaved
                } else {
                    RopeStyle::Neox
                },
                scaling,
            })
        }
        p => return unsupported(format!("position encoding {p}")),
    };
    if h.num_experts_u8 > 1 {
        return unsupported(format!(
            "{} experts (MoE version-1 files are not read)",
            h.num_experts_u8
        ));
    }
    if !h.norm_epsilon.is_finite() || h.norm_epsilon < 0.0 {
        return Err(Error::corrupt(format!(
            "version-1 file: norm epsilon {}",
            h.norm_epsilon
        )));
    }
    let n_vocab = h.vocab_size;
    let cfg = ModelConfig {
        arch,
        n_layer: h.num_layers as usize,
        n_embd: h.hidden_dim as usize,
        n_head: h.num_heads as usize,
        n_head_kv: h.num_kv_heads as usize,
        head_dim,
        n_ff: h.intermediate_dim as usize,
        n_vocab: n_vocab as usize,
        n_ctx_train: h.max_seq_len as usize,
        norm,
        norm_eps: h.norm_epsilon,
        act,
        gated_mlp: t.gated || force_gated,
        rope,
        tie_embeddings: t.tied,
        qkv_bias: t.qkv_bias,
        qk_norm: t.qk_norm,
        sliding_window: (h.sliding_window != 0).then_some(h.sliding_window as usize),
        moe: None,
        bos_token_id: opt_id(h.bos_token_id, n_vocab, "bos")?,
        eos_token_ids: opt_id(h.eos_token_id, n_vocab, "eos")?
            .into_iter()
            .collect(),
        pad_token_id: opt_id(h.pad_token_id, n_vocab, "pad")?,
        add_bos: false,
        extra: Default::default(),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The shape a tensor must have under `cfg` (`None`: not checked).
fn expected_shape(cfg: &ModelConfig, name: &str, ffn: usize) -> Option<Vec<usize>> {
    let (e, q, kv) = (
        cfg.n_embd,
        cfg.n_head * cfg.head_dim,
        cfg.n_head_kv * cfg.head_dim,
    );
    Some(match name {
        names::ATTN_NORM | names::FFN_NORM | "attn_norm.bias" | "ffn_norm.bias" => vec![e],
        names::ATTN_Q_NORM | names::ATTN_K_NORM => vec![cfg.head_dim],
        names::ATTN_Q => vec![q, e],
        names::ATTN_K | names::ATTN_V => vec![kv, e],
        names::ATTN_OUT => vec![e, q],
        names::ATTN_QKV => vec![q + 2 * kv, e],
        names::FFN_GATE | names::FFN_UP => vec![ffn, e],
        names::FFN_DOWN => vec![e, ffn],
        "attn_q.bias" => vec![q],
        "attn_k.bias" | "attn_v.bias" => vec![kv],
        "attn_output.bias" | "ffn_down.bias" => vec![e],
        "ffn_gate.bias" | "ffn_up.bias" => vec![ffn],
        "attn_qkv.bias" => vec![q + 2 * kv],
        _ => return None,
    })
}

fn check_shape(t: &Tensor, want: Option<Vec<usize>>, where_: &str) -> Result<()> {
    match want {
        Some(w) if w != t.shape => Err(Error::corrupt(format!(
            "version-1 file: {where_} tensor {} has shape {:?}, the header implies {w:?}",
            t.name, t.shape
        ))),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// tokenizer

/// A byte-level BPE vocabulary as a version-1 file stores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct V1Vocab {
    /// token strings by id (byte-level BPE's printable form, e.g. `Ġthe`)
    pub tokens: Vec<String>,
    /// merges in rank order
    pub merges: Vec<(String, String)>,
}

impl V1Vocab {
    /// Extract the vocabulary (model vocab plus added tokens) and merges of a HuggingFace
    /// BPE `tokenizer.json`. Every id below the largest must be present.
    pub fn from_tokenizer_json(json: &str) -> Result<V1Vocab> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        let model = v
            .get("model")
            .ok_or_else(|| Error::Tokenizer("tokenizer.json has no model".into()))?;
        if model.get("type").and_then(|t| t.as_str()) != Some("BPE") {
            return Err(Error::Tokenizer(
                "version-1 files hold BPE tokenizers only".into(),
            ));
        }
        let mut by_id: HashMap<u64, String> = HashMap::new();
        if let Some(map) = model.get("vocab").and_then(|m| m.as_object()) {
            for (tok, id) in map {
                let id = id
                    .as_u64()
                    .ok_or_else(|| Error::Tokenizer(format!("token {tok:?}: bad id")))?;
                by_id.insert(id, tok.clone());
            }
        }
        for a in v
            .get("added_tokens")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(c)) = (
                a.get("id").and_then(|i| i.as_u64()),
                a.get("content").and_then(|c| c.as_str()),
            ) {
                by_id.insert(id, c.to_string());
            }
        }
        let n = by_id.keys().max().map_or(0, |m| m + 1);
        let mut tokens = Vec::with_capacity(n as usize);
        for id in 0..n {
            tokens.push(
                by_id
                    .remove(&id)
                    .ok_or_else(|| Error::Tokenizer(format!("token id {id} missing")))?,
            );
        }
        let mut merges = Vec::new();
        for m in model
            .get("merges")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            let pair = match m {
                serde_json::Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                serde_json::Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str())
                {
                    (Some(a), Some(b)) => Some((a.to_string(), b.to_string())),
                    _ => None,
                },
                _ => None,
            };
            merges.push(pair.ok_or_else(|| Error::Tokenizer(format!("bad merge {m}")))?);
        }
        Ok(V1Vocab { tokens, merges })
    }
}

/// A tokenizer.json for a byte-level BPE from a version-1 vocabulary. Tokens at the header's
/// bos/eos/pad/unk ids and tokens written `<|…|>` are special added tokens.
fn tokenizer_json(tokens: &[String], merges: &[(usize, usize)], special_ids: &[u32]) -> String {
    use serde_json::{json, Map, Value};
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), json!(id));
        let special = special_ids.contains(&(id as u32))
            || (t.len() > 4 && t.starts_with("<|") && t.ends_with("|>"));
        if special {
            added.push(
                json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}),
            );
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(a, b)| json!([tokens[a], tokens[b]]))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    })
    .to_string()
}

/// Parse and check the tokenizer section at `off`; returns its data and byte length.
fn parse_tokenizer(bytes: &[u8], off: u64, h: &Header) -> Result<(TokenizerData, u64)> {
    let len = bytes.len() as u64;
    let hdr = checked_range(
        "version-1 tokenizer header",
        off,
        TOKENIZER_HEADER_SIZE as u64,
        len,
    )?;
    let mut c = Cursor::new(&bytes[hdr], "version-1 tokenizer header");
    let kind = c.u32()?;
    let vocab_size = c.u32()?;
    let num_merges = c.u32()?;
    let _num_added = c.u32()?;
    let vocab_data = c.u32()? as u64;
    let merge_data = c.u32()? as u64;
    let added_data = c.u32()? as u64;
    let _flags = c.u32()?;
    if kind != 0 {
        return Err(Error::Tokenizer(format!(
            "version-1 tokenizer type {kind} (only byte-level BPE, 0, is read)"
        )));
    }
    if vocab_size != h.vocab_size {
        return Err(Error::corrupt(format!(
            "version-1 tokenizer has {vocab_size} tokens, header says {}",
            h.vocab_size
        )));
    }
    if merge_data != num_merges as u64 * 12 {
        return Err(Error::corrupt(format!(
            "{num_merges} merges in {merge_data} bytes"
        )));
    }
    let total = TOKENIZER_HEADER_SIZE as u64 + vocab_data + 4 + merge_data + added_data;
    let body = checked_range("version-1 tokenizer section", off, total, len)?;
    let sec = &bytes[body];
    let mut c = Cursor::new(sec, "version-1 tokenizer section");
    c.seek(TOKENIZER_HEADER_SIZE);
    let blob = c.take(vocab_data as usize)?;
    let stored = c.u32()?;
    let computed = crc32fast::hash(blob);
    if stored != computed {
        return Err(Error::Checksum {
            what: "version-1 tokenizer vocabulary".into(),
            stored,
            computed,
        });
    }
    let mut v = Cursor::new(blob, "version-1 vocabulary");
    let mut tokens = Vec::with_capacity(vocab_size.min(1 << 24) as usize);
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(tokens.capacity());
    for id in 0..vocab_size as usize {
        let n = v.u16()? as usize;
        let t = std::str::from_utf8(v.take(n)?)
            .map_err(|_| Error::corrupt(format!("version-1 token {id} is not UTF-8")))?;
        if index.insert(t, id).is_some() {
            return Err(Error::corrupt(format!(
                "version-1 vocabulary: token {t:?} appears twice"
            )));
        }
        tokens.push(t);
    }
    if v.pos() != blob.len() {
        return Err(Error::corrupt(
            "version-1 vocabulary: bytes after the last token",
        ));
    }
    let mut merges = Vec::with_capacity(num_merges as usize);
    for k in 0..num_merges {
        let (a, b, m) = (c.u32()? as usize, c.u32()? as usize, c.u32()? as usize);
        let tok = |i: usize| {
            tokens.get(i).copied().ok_or_else(|| {
                Error::corrupt(format!("version-1 merge {k} names unknown token id {i}"))
            })
        };
        let (ta, tb, tm) = (tok(a)?, tok(b)?, tok(m)?);
        if ta.len() + tb.len() != tm.len() || !tm.starts_with(ta) || !tm.ends_with(tb) {
            return Err(Error::corrupt(format!(
                "version-1 merge {k}: {ta:?} + {tb:?} does not make token {m} {tm:?}"
            )));
        }
        merges.push((a, b));
    }
    let owned: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    let special_ids = [
        h.bos_token_id,
        h.eos_token_id,
        h.pad_token_id,
        h.unk_token_id,
    ];
    let json = tokenizer_json(&owned, &merges, &special_ids);
    let mut special_tokens = Vec::new();
    for (role, id) in [
        ("bos", h.bos_token_id),
        ("eos", h.eos_token_id),
        ("pad", h.pad_token_id),
        ("unk", h.unk_token_id),
    ] {
        if let Some(t) = owned.get(id as usize) {
            special_tokens.push((role.to_string(), t.clone()));
        }
    }
    Ok((
        TokenizerData {
            tokenizer_json: json,
            chat_template: None,
            special_tokens,
        },
        total,
    ))
}

// ---------------------------------------------------------------------------------------
// reader

/// Everything parsed from a version-1 file.
struct Parsed {
    config: ModelConfig,
    layers: Vec<LayerEntry>,
    tokenizer: TokenizerData,
    tensors: LegacyTensors,
}

fn block_size(h: &Header) -> Result<usize> {
    match h.block_size {
        32 | 64 | 128 | 256 => Ok(h.block_size as usize),
        b => Err(Error::corrupt(format!(
            "version-1 header: block size {b} (32, 64, 128 or 256)"
        ))),
    }
}

/// Decompress (or borrow) a layer's raw bytes, checking both CRCs.
fn layer_raw<'a>(bytes: &'a [u8], i: usize, e: &LayerEntry) -> Result<std::borrow::Cow<'a, [u8]>> {
    let r = checked_range(
        &format!("version-1 layer {i}"),
        e.offset,
        e.stored_size,
        bytes.len() as u64,
    )?;
    let stored = &bytes[r];
    let c = crc32fast::hash(stored);
    if c != e.crc32_stored {
        return Err(Error::Checksum {
            what: format!("version-1 layer {i}"),
            stored: e.crc32_stored,
            computed: c,
        });
    }
    let raw: std::borrow::Cow<[u8]> = match e.compression {
        0 => {
            if e.stored_size != e.raw_size {
                return Err(Error::corrupt(format!(
                    "version-1 layer {i}: uncompressed but sizes differ"
                )));
            }
            std::borrow::Cow::Borrowed(stored)
        }
        // LZ4 and LZ4-HC both produce standard LZ4 blocks.
        1 | 2 => {
            if e.raw_size > e.stored_size * LZ4_MAX_RATIO + 16 {
                return Err(Error::corrupt(format!(
                    "version-1 layer {i}: {} compressed bytes cannot hold {} bytes",
                    e.stored_size, e.raw_size
                )));
            }
            let mut buf = vec![0u8; e.raw_size as usize];
            let n = lz4_flex::block::decompress_into(stored, &mut buf)
                .map_err(|err| Error::corrupt(format!("version-1 layer {i}: LZ4: {err}")))?;
            if n != buf.len() {
                return Err(Error::corrupt(format!(
                    "version-1 layer {i}: decompressed {n} bytes, index says {}",
                    e.raw_size
                )));
            }
            std::borrow::Cow::Owned(buf)
        }
        3 => {
            return Err(Error::UnsupportedQuant(format!(
                "version-1 layer {i}: zstd compression"
            )))
        }
        x => {
            return Err(Error::corrupt(format!(
                "version-1 layer {i}: compression type {x}"
            )))
        }
    };
    if e.compression != 0 {
        let c = crc32fast::hash(&raw);
        if c != e.crc32_raw {
            return Err(Error::Checksum {
                what: format!("version-1 layer {i} (decompressed)"),
                stored: e.crc32_raw,
                computed: c,
            });
        }
    }
    Ok(raw)
}

/// One tensor of a v1 layer before repacking.
struct RawTensor<'a> {
    kind: u16,
    q: V1Quant,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

fn parse_layer_tensors<'a>(raw: &'a [u8], i: usize, e: &LayerEntry) -> Result<Vec<RawTensor<'a>>> {
    let mut c = Cursor::new(raw, "version-1 layer");
    let mut out = Vec::with_capacity(e.num_tensors as usize);
    for k in 0..e.num_tensors {
        let what = format!("version-1 layer {i} tensor {k}");
        let kind = c.u16()?;
        let qid = c.u8()?;
        let layout = c.u8()?;
        let rows = c.u32()? as usize;
        let cols = c.u32()? as usize;
        let size = c.u32()? as usize;
        let _num_outliers = c.u32()?;
        let _reserved = c.u32()?;
        let qid = if qid == LAYER_DEFAULT {
            e.quant_type
        } else {
            qid
        };
        let q = V1Quant::from_id(qid, &what)?;
        match layout {
            0 => {}
            1 | 2 => {
                return Err(Error::UnsupportedQuant(format!(
                    "{what}: data layout {layout} (only row-major is read)"
                )))
            }
            l => return Err(Error::corrupt(format!("{what}: data layout {l}"))),
        }
        if rows == 0 || cols == 0 {
            return Err(Error::corrupt(format!("{what}: shape {rows}x{cols}")));
        }
        if kind >= KIND_FIRST_EXPERT {
            return Err(Error::UnsupportedArch(format!(
                "{what}: tensor type {kind} (MoE expert tensors in version-1 files are not read)"
            )));
        }
        if kind != KIND_POS_EMBD && kind_name(kind).is_none() {
            return Err(Error::corrupt(format!(
                "{what}: unknown tensor type {kind}"
            )));
        }
        let data = c.take(size)?;
        out.push(RawTensor {
            kind,
            q,
            rows,
            cols,
            data,
        });
    }
    if c.pos() != raw.len() {
        return Err(Error::corrupt(format!(
            "version-1 layer {i}: {} bytes after its {} tensors",
            raw.len() - c.pos(),
            e.num_tensors
        )));
    }
    Ok(out)
}

fn parse_all(bytes: &[u8], h: &Header) -> Result<Parsed> {
    let len = bytes.len() as u64;
    if h.total_file_size != len {
        return Err(Error::corrupt(format!(
            "file is {len} bytes but its header says {} (truncated or appended to)",
            h.total_file_size
        )));
    }
    let n_layer = h.num_layers as usize;
    if n_layer == 0 || n_layer > 4096 {
        return Err(Error::corrupt(format!("num_layers {n_layer}")));
    }
    let block = block_size(h)?;
    let index = checked_range(
        "layer index",
        h.layer_index_offset,
        (n_layer * LAYER_ENTRY_SIZE) as u64,
        len,
    )?;
    if index.start < HEADER_SIZE {
        return Err(Error::corrupt(format!(
            "layer index at {} overlaps the header",
            index.start
        )));
    }
    let mut regions: Vec<(u64, u64, String)> = vec![
        (0, HEADER_SIZE as u64, "header".into()),
        (index.start as u64, index.end as u64, "layer index".into()),
    ];

    // embedding
    let eo = h.embedding_offset;
    let ehdr = checked_range(
        "version-1 embedding header",
        eo,
        EMBEDDING_HEADER_SIZE as u64,
        len,
    )?;
    let mut c = Cursor::new(&bytes[ehdr], "version-1 embedding header");
    let eq = c.u32()?;
    let esize = c.u32()? as u64;
    let nvec = c.u32()? as usize;
    let edim = c.u32()? as usize;
    let ecomp = c.u8()?;
    let _ = c.take(3)?;
    let ecrc = c.u32()?;
    let eq = V1Quant::from_id(u8::try_from(eq).unwrap_or(0xFE), "version-1 embedding")?;
    if nvec != h.vocab_size as usize || edim != h.hidden_dim as usize {
        return Err(Error::corrupt(format!(
            "version-1 embedding is {nvec}x{edim}, header says {}x{}",
            h.vocab_size, h.hidden_dim
        )));
    }
    let erange = checked_range(
        "version-1 embedding table",
        eo + EMBEDDING_HEADER_SIZE as u64,
        esize,
        len,
    )?;
    regions.push((eo, erange.end as u64, "embedding".into()));
    let etable = &bytes[erange];
    let c = crc32fast::hash(etable);
    if c != ecrc {
        return Err(Error::Checksum {
            what: "version-1 embedding table".into(),
            stored: ecrc,
            computed: c,
        });
    }
    let etable: std::borrow::Cow<[u8]> = match ecomp {
        0 => std::borrow::Cow::Borrowed(etable),
        1 | 2 => {
            let want = if eq.is_outlier() {
                return Err(Error::UnsupportedQuant(
                    "compressed outlier embedding in a version-1 file".into(),
                ));
            } else {
                eq.dense_bytes(block, nvec, edim)
                    .filter(|&n| n as u64 <= esize * LZ4_MAX_RATIO + 16)
                    .ok_or_else(|| {
                        Error::corrupt("version-1 embedding: implausible compressed size")
                    })?
            };
            let mut buf = vec![0u8; want];
            let n = lz4_flex::block::decompress_into(etable, &mut buf)
                .map_err(|err| Error::corrupt(format!("version-1 embedding: LZ4: {err}")))?;
            if n != want {
                return Err(Error::corrupt("version-1 embedding: LZ4 size mismatch"));
            }
            std::borrow::Cow::Owned(buf)
        }
        x => {
            return Err(Error::UnsupportedQuant(format!(
                "version-1 embedding: compression type {x}"
            )))
        }
    };
    let token_embd = repack_tensor(
        names::TOKEN_EMBD,
        eq,
        block,
        vec![nvec, edim],
        &etable,
        false,
    )?;

    // tokenizer
    let (tokenizer, tsize) = parse_tokenizer(bytes, h.tokenizer_offset, h)?;
    regions.push((
        h.tokenizer_offset,
        h.tokenizer_offset + tsize,
        "tokenizer".into(),
    ));

    // layers
    let mut entries = Vec::with_capacity(n_layer);
    let mut raw_layers = Vec::with_capacity(n_layer);
    for i in 0..n_layer {
        let e = LayerEntry::parse(&bytes[index.start + i * LAYER_ENTRY_SIZE..], false)?;
        let raw = layer_raw(bytes, i, &e)?;
        regions.push((e.offset, e.offset + e.stored_size, format!("layer {i}")));
        raw_layers.push(raw);
        entries.push(e);
    }

    // final
    let fo = h.final_offset;
    let fhdr = checked_range("version-1 final header", fo, FINAL_HEADER_SIZE as u64, len)?;
    let mut c = Cursor::new(&bytes[fhdr], "version-1 final header");
    let head_type = c.u32()?;
    let norm_size = c.u32()? as u64;
    let head_size = c.u32()? as u64;
    let fcrc = c.u32()?;
    let frange = checked_range(
        "version-1 final section",
        fo + FINAL_HEADER_SIZE as u64,
        norm_size + head_size,
        len,
    )?;
    regions.push((fo, frange.end as u64, "final".into()));
    let fbody = &bytes[frange];
    let c = crc32fast::hash(fbody);
    if c != fcrc {
        return Err(Error::Checksum {
            what: "version-1 final section".into(),
            stored: fcrc,
            computed: c,
        });
    }

    regions.sort();
    for w in regions.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(Error::corrupt(format!(
                "version-1 sections {} and {} overlap",
                w[0].2, w[1].2
            )));
        }
    }

    // layer tensors (raw) and the traits they imply
    let mut parsed_layers = Vec::with_capacity(n_layer);
    let mut traits = Traits::default();
    for (i, (raw, e)) in raw_layers.iter().zip(&entries).enumerate() {
        let ts = parse_layer_tensors(raw, i, e)?;
        if i == 0 {
            traits.qk_norm = ts.iter().any(|t| t.kind == 9);
            traits.gated = ts.iter().any(|t| t.kind == 4);
            traits.qkv_bias = ts.iter().any(|t| t.kind == 11 || t.kind == 19);
        }
        parsed_layers.push(ts);
    }
    let hidden = h.hidden_dim as usize;
    let (norm_rows, head_bias) = match (norm_size, head_type) {
        (n, _) if n == 2 * hidden as u64 => (1, false),
        (n, _) if n == 4 * hidden as u64 => (2, false),
        (n, _) => {
            return Err(Error::corrupt(format!(
                "version-1 final norm is {n} bytes for hidden size {hidden}"
            )))
        }
    };
    let (norm_rows, head_bias) = match head_type {
        0 | 1 => (norm_rows, head_bias),
        2 => (norm_rows, true),
        t => return Err(Error::corrupt(format!("version-1 output head type {t}"))),
    };
    traits.tied = head_type == 1;
    if traits.tied && head_size != 0 {
        return Err(Error::corrupt(
            "version-1 tied output head with a non-empty head",
        ));
    }
    let config = config_from_header(h, &traits)?;

    // repack
    let mut embedding = vec![token_embd];
    let mut layers = Vec::with_capacity(n_layer);
    for (i, (ts, e)) in parsed_layers.iter().zip(&entries).enumerate() {
        let ffn = if e.layer_ffn_dim != 0 {
            e.layer_ffn_dim as usize
        } else {
            config.n_ff
        };
        let mut out: Vec<Tensor> = Vec::with_capacity(ts.len());
        for t in ts {
            if t.kind == KIND_POS_EMBD {
                embedding.push(repack_tensor(
                    names::POS_EMBD,
                    t.q,
                    block,
                    vec![t.rows, t.cols],
                    t.data,
                    false,
                )?);
                continue;
            }
            let name = kind_name(t.kind).unwrap_or("?");
            let where_ = format!("layer {i}");
            if is_vector_kind(t.kind) {
                let norm_with_bias = is_norm_kind(t.kind) && t.rows == 2 && t.cols > 2;
                if norm_with_bias {
                    let half = t.data.len() / 2;
                    if t.data.len() != t.cols * 4 {
                        return Err(Error::corrupt(format!(
                            "version-1 {where_} {name}: size {}",
                            t.data.len()
                        )));
                    }
                    out.push(repack_tensor(
                        name,
                        t.q,
                        block,
                        vec![t.cols],
                        &t.data[..half],
                        true,
                    )?);
                    let bias = format!("{name}.bias");
                    out.push(repack_tensor(
                        &bias,
                        t.q,
                        block,
                        vec![t.cols],
                        &t.data[half..],
                        true,
                    )?);
                } else {
                    if t.rows != 1 && t.cols != 1 {
                        return Err(Error::corrupt(format!(
                            "version-1 {where_} {name}: vector stored as {}x{}",
                            t.rows, t.cols
                        )));
                    }
                    out.push(repack_tensor(
                        name,
                        t.q,
                        block,
                        vec![t.rows * t.cols],
                        t.data,
                        true,
                    )?);
                }
            } else {
                out.push(repack_tensor(
                    name,
                    t.q,
                    block,
                    vec![t.rows, t.cols],
                    t.data,
                    false,
                )?);
            }
        }
        for t in &out {
            check_shape(
                t,
                expected_shape(&config, &t.name, ffn),
                &format!("layer {i}"),
            )?;
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(t) = out.iter().find(|t| !seen.insert(t.name.clone())) {
            return Err(Error::corrupt(format!(
                "version-1 layer {i}: tensor {} appears twice",
                t.name
            )));
        }
        layers.push(out);
    }
    for t in &embedding {
        if t.shape[1] != hidden {
            return Err(Error::corrupt(format!(
                "version-1 {} has {} columns",
                t.name, t.shape[1]
            )));
        }
    }

    // final section contents: norm (+bias) then head (+bias)
    let mut final_ = Vec::new();
    let nb = 2 * hidden;
    final_.push(repack_tensor(
        names::OUTPUT_NORM,
        V1Quant::F16,
        block,
        vec![hidden],
        &fbody[..nb],
        true,
    )?);
    if norm_rows == 2 {
        final_.push(repack_tensor(
            "output_norm.bias",
            V1Quant::F16,
            block,
            vec![hidden],
            &fbody[nb..2 * nb],
            true,
        )?);
    }
    let head = &fbody[norm_size as usize..];
    if !traits.tied {
        let vocab = h.vocab_size as usize;
        let (w, b) = if head_bias {
            let split = head
                .len()
                .checked_sub(2 * vocab)
                .ok_or_else(|| Error::corrupt("version-1 head bias missing"))?;
            head.split_at(split)
        } else {
            (head, &head[head.len()..])
        };
        let q = head_type_of(h, block, vocab, hidden, w)?;
        final_.push(repack_tensor(
            names::OUTPUT,
            q,
            block,
            vec![vocab, hidden],
            w,
            false,
        )?);
        if head_bias {
            final_.push(repack_tensor(
                "output.bias",
                V1Quant::F16,
                block,
                vec![vocab],
                b,
                true,
            )?);
        }
    }
    Ok(Parsed {
        config,
        layers: entries,
        tokenizer,
        tensors: LegacyTensors {
            embedding,
            layers,
            final_,
        },
    })
}

/// The storage type of the output head: the header's `quant_type` when the size fits it,
/// else the one dense type whose size equals the head's (docs/qsf.md §10).
fn head_type_of(
    h: &Header,
    block: usize,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> Result<V1Quant> {
    let fits = |q: V1Quant| -> bool {
        if q.is_outlier() {
            let n = data.get(..4).map_or(u64::MAX, |b| {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64
            });
            q.dense_bytes(block, rows, cols)
                .is_some_and(|d| (d as u64).checked_add(4 + 6 * n) == Some(data.len() as u64))
        } else {
            q.dense_bytes(block, rows, cols) == Some(data.len())
        }
    };
    if let Ok(q) = V1Quant::from_id(h.quant_type, "version-1 header") {
        if fits(q) {
            return Ok(q);
        }
    }
    let dense = [
        V1Quant::F16,
        V1Quant::Q8,
        V1Quant::Q4,
        V1Quant::Q3,
        V1Quant::Q2,
    ];
    let mut it = dense.iter().copied().filter(|&q| fits(q));
    match (it.next(), it.next()) {
        (Some(q), None) => Ok(q),
        _ => Err(Error::corrupt(format!(
            "version-1 output head: {} bytes fit no storage type for {rows}x{cols}",
            data.len()
        ))),
    }
}

/// Open a version-1 file: validate it completely (all checksums included) and repack its
/// tensors. `header` was parsed (and its CRC checked) by the caller.
pub fn open(path: &Path, storage: Arc<Storage>, header: Header) -> Result<QsfFile> {
    let p = parse_all(storage.bytes(), &header)?;
    Ok(QsfFile::from_legacy(
        path,
        storage,
        header,
        p.config,
        p.layers,
        p.tokenizer,
        p.tensors,
    ))
}

/// Verify a version-1 file's checksums (re-validates the whole file).
pub fn verify(bytes: &[u8], header: &Header, _layers: &[LayerEntry]) -> Result<()> {
    parse_all(bytes, header).map(|_| ())
}

// ---------------------------------------------------------------------------------------
// writer

/// A tensor handed to [`write_v1`]: global name (`token_embd`, `blk.N.attn_q`, `output`, ...),
/// shape and f32 values (row-major).
#[derive(Debug, Clone)]
pub struct V1Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Options of [`write_v1`].
#[derive(Debug, Clone, Copy)]
pub struct V1Options {
    /// type of weight matrices, the embedding and the output head
    pub quant: V1Quant,
    /// block size (32, 64, 128, 256)
    pub block: usize,
    /// LZ4-compress every layer over 1024 bytes (as the original does, even when LZ4 does not
    /// make it smaller)
    pub compress: bool,
    /// fraction of weights kept as outliers by the outlier types
    pub outlier_frac: f32,
}

impl Default for V1Options {
    fn default() -> Self {
        V1Options {
            quant: V1Quant::Q4,
            block: DEFAULT_BLOCK,
            compress: false,
            outlier_frac: 0.005,
        }
    }
}

fn align_vec(buf: &mut Vec<u8>) -> u64 {
    let n = align_up(buf.len() as u64);
    buf.resize(n as usize, 0);
    n
}

fn u32_size(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::InvalidArgument(format!("{what}: {n} bytes do not fit a version-1 file"))
    })
}

/// Write a version-1 (original QStream) file at `path`. The whole file is built in memory.
/// Configurations a version-1 header cannot describe (MoE, llama3/longrope RoPE scaling,
/// partial rotary, architectures without an original id, tensors without an original
/// tensor-type id) are `InvalidArgument` errors. Returns the file size.
pub fn write_v1(
    path: &Path,
    config: &ModelConfig,
    vocab: &V1Vocab,
    tensors: &[V1Tensor],
    opts: &V1Options,
) -> Result<u64> {
    let inval = |m: String| Err(Error::InvalidArgument(format!("version-1 writer: {m}")));
    config.validate()?;
    if !matches!(opts.block, 32 | 64 | 128 | 256) {
        return inval(format!("block size {}", opts.block));
    }
    if !matches!(
        config.arch,
        Arch::Llama
            | Arch::Mistral
            | Arch::Qwen2
            | Arch::Qwen3
            | Arch::Phi
            | Arch::Gemma
            | Arch::Gpt2
            | Arch::Gptj
    ) {
        return inval(format!(
            "architecture {} has no version-1 form",
            config.arch.name()
        ));
    }
    if config.moe.is_some() {
        return inval("MoE models".into());
    }
    if let Some(r) = &config.rope {
        if r.dim != config.head_dim {
            return inval("partial rotary embeddings".into());
        }
        if matches!(
            r.scaling,
            Some(RopeScaling::Llama3 { .. }) | Some(RopeScaling::LongRope { .. })
        ) {
            return inval("llama3/longrope RoPE scaling".into());
        }
    }
    if vocab.tokens.len() != config.n_vocab {
        return inval(format!(
            "{} tokens for n_vocab {}",
            vocab.tokens.len(),
            config.n_vocab
        ));
    }
    let by_name: HashMap<&str, &V1Tensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.data.len()
            || t.shape.is_empty()
            || t.shape.len() > 2
        {
            return inval(format!(
                "tensor {}: shape {:?} with {} values",
                t.name,
                t.shape,
                t.data.len()
            ));
        }
    }
    let get = |n: &str| {
        by_name
            .get(n)
            .copied()
            .ok_or_else(|| Error::InvalidArgument(format!("version-1 writer: missing tensor {n}")))
    };
    let (q, block) = (opts.quant, opts.block);
    let quant_matrix = |t: &V1Tensor| -> Vec<u8> {
        let (rows, cols) = (t.shape[0], *t.shape.last().unwrap_or(&1));
        let rows = if t.shape.len() == 1 { 1 } else { rows };
        quantize_v1(q, block, &t.data, rows, cols, opts.outlier_frac)
    };
    let f16_bytes = |d: &[f32]| -> Vec<u8> { quantize_v1_dense(V1Quant::F16, 1, d, 1, d.len()) };

    let mut h = super::writer::header_from_config(config, QuantType::Q4, block);
    h.version = 1;
    h.quant_type = q.id();
    h.extended_config_offset = 0;
    h.minor_version = 0;
    h.flags = 0;
    h.alignment = 0;
    h.num_experts = 0;
    h.rope_scaling_type = match config.rope.as_ref().and_then(|r| r.scaling.as_ref()) {
        None => 0,
        Some(RopeScaling::Linear { .. }) => 1,
        Some(_) => 3,
    };
    let n_layer = config.n_layer;
    let mut buf = vec![0u8; HEADER_SIZE + n_layer * LAYER_ENTRY_SIZE];

    // embedding
    let emb = get(names::TOKEN_EMBD)?;
    if emb.shape != [config.n_vocab, config.n_embd] {
        return inval(format!("token_embd shape {:?}", emb.shape));
    }
    let table = quant_matrix(emb);
    h.embedding_offset = align_vec(&mut buf);
    let mut w = Writer::default();
    w.u32(q.id() as u32);
    w.u32(u32_size(table.len(), "embedding")?);
    w.u32(config.n_vocab as u32);
    w.u32(config.n_embd as u32);
    w.u8(0);
    w.zeros(3);
    w.u32(crc32fast::hash(&table));
    w.u32(0);
    w.u32(0);
    buf.extend_from_slice(&w.buf);
    buf.extend_from_slice(&table);

    // tokenizer
    let ids: HashMap<&str, u32> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let mut blob = Vec::new();
    for t in &vocab.tokens {
        let n = u16::try_from(t.len())
            .map_err(|_| Error::InvalidArgument(format!("token of {} bytes", t.len())))?;
        blob.extend_from_slice(&n.to_le_bytes());
        blob.extend_from_slice(t.as_bytes());
    }
    let mut merges = Vec::with_capacity(vocab.merges.len() * 12);
    for (a, b) in &vocab.merges {
        let id = |s: &str| {
            ids.get(s).copied().ok_or_else(|| {
                Error::InvalidArgument(format!("merge token {s:?} not in vocabulary"))
            })
        };
        for v in [id(a)?, id(b)?, id(&format!("{a}{b}"))?] {
            merges.extend_from_slice(&v.to_le_bytes());
        }
    }
    h.tokenizer_offset = align_vec(&mut buf);
    let mut w = Writer::default();
    for v in [
        0,
        config.n_vocab as u32,
        vocab.merges.len() as u32,
        0,
        u32_size(blob.len(), "vocabulary")?,
        u32_size(merges.len(), "merges")?,
        0,
        0,
    ] {
        w.u32(v);
    }
    buf.extend_from_slice(&w.buf);
    buf.extend_from_slice(&blob);
    buf.extend_from_slice(&crc32fast::hash(&blob).to_le_bytes());
    buf.extend_from_slice(&merges);

    // layers
    let mut index = Vec::with_capacity(n_layer * LAYER_ENTRY_SIZE);
    for i in 0..n_layer {
        let prefix = format!("blk.{i}.");
        let mut items: Vec<(u16, &str, &V1Tensor)> = Vec::new();
        for t in tensors {
            let Some(local) = t.name.strip_prefix(&prefix) else {
                continue;
            };
            if local.ends_with(".bias")
                && is_norm_kind(names::original_kind(local.trim_end_matches(".bias")))
            {
                continue; // stored as the norm's second row
            }
            let kind = names::original_kind(local);
            if kind == 0xFFFF {
                return inval(format!("tensor {} has no version-1 tensor type", t.name));
            }
            items.push((kind, local, t));
        }
        items.sort_by_key(|x| x.0);
        let mut raw = Vec::new();
        let mut weight_bytes = 0usize;
        for (kind, local, t) in &items {
            let (rows, cols, qid, data) = if is_vector_kind(*kind) {
                let mut d = f16_bytes(&t.data);
                let mut rows = 1;
                if is_norm_kind(*kind) {
                    if let Some(b) = by_name.get(format!("{prefix}{local}.bias").as_str()) {
                        d.extend_from_slice(&f16_bytes(&b.data));
                        rows = 2;
                    }
                }
                (rows, t.data.len(), V1Quant::F16.id(), d)
            } else {
                if t.shape.len() != 2 {
                    return inval(format!("tensor {} must be 2-D", t.name));
                }
                (t.shape[0], t.shape[1], LAYER_DEFAULT, quant_matrix(t))
            };
            let mut w = Writer::default();
            w.u16(*kind);
            w.u8(qid);
            w.u8(0);
            w.u32(rows as u32);
            w.u32(cols as u32);
            w.u32(u32_size(data.len(), &t.name)?);
            w.u32(0);
            w.u32(0);
            raw.extend_from_slice(&w.buf);
            raw.extend_from_slice(&data);
            weight_bytes += data.len();
        }
        let off = align_vec(&mut buf);
        let crc_raw = crc32fast::hash(&raw);
        let mut e = LayerEntry {
            offset: off,
            raw_size: u32_size(raw.len(), "layer")? as u64,
            quant_type: q.id(),
            num_tensors: u16::try_from(items.len())
                .map_err(|_| Error::InvalidArgument("too many tensors".into()))?,
            crc32_raw: crc_raw,
            weight_bytes: u32_size(weight_bytes, "layer")?,
            ..Default::default()
        };
        // as the original: every layer over 1024 bytes, whether or not LZ4 makes it smaller
        let compressed =
            (opts.compress && raw.len() > 1024).then(|| lz4_flex::block::compress(&raw));
        match compressed {
            Some(c) => {
                e.compression = 1;
                e.stored_size = c.len() as u64;
                e.crc32_stored = crc32fast::hash(&c);
                buf.extend_from_slice(&c);
            }
            None => {
                e.stored_size = e.raw_size;
                e.crc32_stored = crc_raw;
                buf.extend_from_slice(&raw);
            }
        }
        index.extend_from_slice(&e.to_bytes());
    }

    // final
    let norm = get(names::OUTPUT_NORM)?;
    let mut body = f16_bytes(&norm.data);
    if let Some(b) = by_name.get("output_norm.bias") {
        body.extend_from_slice(&f16_bytes(&b.data));
    }
    let norm_size = body.len();
    let head_bias = by_name.get("output.bias");
    let head_type = if config.tie_embeddings {
        1
    } else {
        let head = get(names::OUTPUT)?;
        if head.shape != [config.n_vocab, config.n_embd] {
            return inval(format!("output shape {:?}", head.shape));
        }
        body.extend_from_slice(&quant_matrix(head));
        if let Some(b) = head_bias {
            body.extend_from_slice(&f16_bytes(&b.data));
            2
        } else {
            0
        }
    };
    h.final_offset = align_vec(&mut buf);
    let mut w = Writer::default();
    w.u32(head_type);
    w.u32(u32_size(norm_size, "final norm")?);
    w.u32(u32_size(body.len() - norm_size, "output head")?);
    w.u32(crc32fast::hash(&body));
    buf.extend_from_slice(&w.buf);
    buf.extend_from_slice(&body);

    h.total_file_size = buf.len() as u64;
    buf[..HEADER_SIZE].copy_from_slice(&h.to_bytes());
    buf[HEADER_SIZE..HEADER_SIZE + index.len()].copy_from_slice(&index);
    std::fs::write(path, &buf).map_err(|e| Error::io(path, e))?;
    Ok(buf.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q3_stream_and_repack_are_exact() {
        // levels 0..7 repeating; check the v1 bit stream and the v2 re-layout by hand
        let block = 32;
        let mut blk = vec![0u8; V1Quant::Q3.block_bytes(block)];
        for i in 0..block {
            v1_set_level(V1Quant::Q3, &mut blk[4..], i, (i % 8) as u8);
        }
        // value 0 = 0 (bits 0..3), value 1 = 1 (bits 3..6), value 2 = 2 (bits 6..9): byte0 = 0b10_001_000
        assert_eq!(blk[4], 0b1000_1000);
        for i in 0..block {
            assert_eq!(v1_level(V1Quant::Q3, &blk[4..], i), (i % 8) as u8);
        }
        let mut v2 = vec![0u8; QuantType::Q3.block_bytes(block)];
        repack_block(V1Quant::Q3, block, &blk, &mut v2);
        for i in 0..block {
            let low = (v2[4 + (i % 8)] >> (2 * (i / 8))) & 3;
            let high = (u32::from_le_bytes(v2[12..16].try_into().unwrap()) >> i) & 1;
            assert_eq!(low as u32 | (high << 2), (i % 8) as u32, "value {i}");
        }
    }

    #[test]
    fn q4_sym_signed_nibbles() {
        let mut blk = vec![0u8; V1Quant::Q4Sym.block_bytes(32)];
        blk[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        // value 0 = −8 (nibble 8), value 1 = 7 (nibble 7)
        blk[4] = 0x78;
        let mut v2 = vec![0u8; QuantType::Q4Sym.block_bytes(32)];
        repack_block(V1Quant::Q4Sym, 32, &blk, &mut v2);
        // v2 levels: value 0 → 0, value 1 → 15; byte j holds values j (low), j+16 (high)
        assert_eq!(v2[2] & 0x0F, 0);
        assert_eq!(v2[3] & 0x0F, 15);
    }
}

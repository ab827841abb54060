//! Files in the original C QStream's layout (format version 1), docs/qsf.md §10.
//!
//! What is read is what the original converter (`tools/convert_hf.py`, commit 892a00d)
//! really writes; docs/qsf.md §10 lists every place where that differs from the original's
//! own description (../shared/QSF-ORIGINAL.md). In short: the embedding header's
//! `compressed_size` is 0 for an uncompressed table; blocks run over the *flattened*
//! tensor (a block may straddle rows); 4-bit symmetric levels are stored offset by 8, not
//! as two's-complement nibbles; tensor types 7..10 are attention-norm weight/bias and
//! FFN-norm weight/bias; biases are separate fp16 tensors.
//!
//! - [`open`] (called by [`QsfFile::open`] for version-1 files) validates the whole file —
//!   every offset and size overflow-checked and inside the file, every tensor header inside
//!   its layer, every data size consistent with type and shape, every CRC — and **repacks**
//!   each tensor into the v2 types in owned memory: the v1 block's fp16 scale/zero bits and
//!   integer levels are copied unchanged into the v2 block layout (no requantization), so
//!   a repacked tensor dequantizes to exactly the values its v1 blocks encode. Only when
//!   blocks straddle rows (`cols` not a multiple of the block size, more than one row) is
//!   there no v2 block layout for them: such a tensor becomes `f32` holding exactly the
//!   values its blocks encode.
//! - Files the original converter wrote incompletely (it maps no gemma tensor, drops MoE
//!   experts of qwen2_moe and the MLA attention of deepseek_v2) or whose architecture
//!   QStream cannot express are validated completely (all checksums) and then refused with
//!   [`Error::UnsupportedArch`] naming the reason.
//! - [`write_v1`] writes what the original converter writes, field for field and (LZ4
//!   aside, whose encoder output differs between implementations) byte for byte; see its
//!   documentation for the two remaining differences.
//!
//! Version-1 type → v2 type: 2-bit asym → `q2`, 3-bit asym → `q3`, 4-bit asym → `q4`,
//! 4-bit sym → `q4_sym` (same level), 2/4-bit outlier → `q2_outlier` / `q4_outlier`
//! (same block size); 8-bit asym (`[fp16 scale][fp16 zero][u8 × B]`, defined by the
//! original but never written by its converter) has no exact v2 type and becomes `f32`
//! computed as `scale·q + zero`; fp16 matrices stay `f16`; fp16 norms and biases become
//! `f32`.

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
/// The original converter's outlier fraction when `--outlier-frac` is 0 (its default).
pub const DEFAULT_OUTLIER_FRAC: f64 = 0.005;
/// Tensor `quant_type` meaning "the layer's default".
const LAYER_DEFAULT: u8 = 0xFF;
/// Tensor type id of the learned position embedding.
const KIND_POS_EMBD: u16 = 20;
/// First expert tensor type id (expert e: gate 23+6e, gate bias 24+6e, up 25+6e, up bias
/// 26+6e, down 27+6e, down bias 28+6e).
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
    /// id 4: 4-bit symmetric: fp16 scale, 2 zero bytes, nibble = level s + 8 with s in
    /// [−7, 7] (what the converter writes; value = scale·(nibble − 8)).
    Q4Sym,
    /// id 6: 8-bit asymmetric `[fp16 scale][fp16 zero][u8 × B]` (never written by the
    /// original converter).
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
    /// (1 2-bit symmetric, 5 ternary, 8 mixed; its converter writes none of them) and
    /// unknown ids are `UnsupportedQuant` errors.
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
                let n = match id {
                    1 => "2-bit symmetric",
                    5 => "ternary",
                    _ => "mixed",
                };
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

    /// The converter's `--quant` name of this type (`None` for 8-bit, which it never writes).
    pub fn converter_name(self) -> Option<&'static str> {
        Some(match self {
            V1Quant::Q2 => "2bit",
            V1Quant::Q3 => "3bit",
            V1Quant::Q4 => "4bit",
            V1Quant::Q4Sym => "4bit_sym",
            V1Quant::F16 => "fp16",
            V1Quant::Q2Outlier => "2bit_outlier",
            V1Quant::Q4Outlier => "4bit_outlier",
            V1Quant::Q8 => return None,
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
            V1Quant::Q2 => 4 + (2 * block).div_ceil(8),
            V1Quant::Q3 => 4 + (3 * block).div_ceil(8),
            V1Quant::Q4 | V1Quant::Q4Sym => 4 + (4 * block).div_ceil(8),
            V1Quant::Q8 => 4 + block,
            _ => 2,
        }
    }

    /// Bytes of the dense encoding of a tensor of `numel` values: blocks of `block` values
    /// over the flattened tensor, the last one zero-padded (`None` on overflow).
    pub fn dense_bytes(self, block: usize, numel: usize) -> Option<usize> {
        if self.base() == V1Quant::F16 {
            numel.checked_mul(2)
        } else {
            numel
                .div_ceil(block)
                .checked_mul(self.base().block_bytes(block))
        }
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

/// Store level `v` as value `i` of a v1 block's packed bytes (zeroed beforehand).
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

/// Value `i` of one v1 dense block `blk` (header included).
fn v1_value(q: V1Quant, blk: &[u8], i: usize) -> f32 {
    let s = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
    let l = v1_level(q, &blk[4..], i);
    if q.base() == V1Quant::Q4Sym {
        s * (l as i32 - 8) as f32
    } else {
        s * l as f32 + f16::from_le_bytes([blk[2], blk[3]]).to_f32()
    }
}

/// The values a dense v1 encoding of `numel` values holds (`data` has exactly the dense
/// size), decoded over the flattened tensor.
fn dequant_dense(q: V1Quant, block: usize, data: &[u8], numel: usize) -> Vec<f32> {
    if q.base() == V1Quant::F16 {
        return data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
    }
    let bb = q.block_bytes(block);
    (0..numel)
        .map(|i| v1_value(q, &data[(i / block) * bb..][..bb], i % block))
        .collect()
}

/// Quantize one block the way the original converter does (numpy, float32 throughout):
/// asymmetric `scale = (max − min)/(2^bits − 1)` (0 when the range is ≤ 1e-30), levels
/// `round_half_even((x − min)·(1/scale))` clipped — computed with the f32 scale, not its
/// fp16 rounding — then scale and min stored as fp16; symmetric `scale = max|x|/7`, levels
/// `round_half_even(x/scale)` clipped to [−7, 7] and stored + 8, 2 zero bytes after the
/// scale. `x` holds exactly `block` values (padding zeros included); `out` is zeroed.
fn quantize_block_like_converter(q: V1Quant, x: &[f32], out: &mut [u8]) {
    let (hdr, packed) = out.split_at_mut(4);
    let tiny = 1e-30f32;
    if q.base() == V1Quant::Q4Sym {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = if amax > tiny { amax / 7.0 } else { 0.0 };
        let inv = if scale > tiny { 1.0 / scale } else { 0.0 };
        hdr[0..2].copy_from_slice(&f16::from_f32(scale).to_le_bytes());
        for (i, v) in x.iter().enumerate() {
            let l = (v * inv).round_ties_even().clamp(-7.0, 7.0) as i32 + 8;
            v1_set_level(q, packed, i, l as u8);
        }
        return;
    }
    let nmax = match q.base() {
        V1Quant::Q2 => 3.0f32,
        V1Quant::Q3 => 7.0,
        V1Quant::Q4 => 15.0,
        _ => 255.0,
    };
    let mn = x.iter().fold(f32::INFINITY, |a, &v| a.min(v));
    let mx = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let rng = mx - mn;
    let scale = if rng > tiny { rng / nmax } else { 0.0 };
    let inv = if scale > tiny { 1.0 / scale } else { 0.0 };
    hdr[0..2].copy_from_slice(&f16::from_f32(scale).to_le_bytes());
    hdr[2..4].copy_from_slice(&f16::from_f32(mn).to_le_bytes());
    for (i, v) in x.iter().enumerate() {
        let l = ((v - mn) * inv).round_ties_even().clamp(0.0, nmax);
        v1_set_level(q, packed, i, l as u8);
    }
}

/// Dense encoding of the flattened values `flat` as the converter writes it.
fn quantize_dense_like_converter(q: V1Quant, block: usize, flat: &[f32]) -> Vec<u8> {
    if q.base() == V1Quant::F16 {
        return flat
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
    }
    let bb = q.block_bytes(block);
    let nb = flat.len().div_ceil(block);
    let mut out = vec![0u8; nb * bb];
    let mut buf = vec![0f32; block];
    for (b, dst) in out.chunks_exact_mut(bb).enumerate() {
        let src = &flat[b * block..((b + 1) * block).min(flat.len())];
        buf[..src.len()].copy_from_slice(src);
        buf[src.len()..].fill(0.0);
        quantize_block_like_converter(q, &buf, dst);
    }
    out
}

/// The converter's outlier count for a tensor of `numel` values at fraction `frac`
/// (`--outlier-frac`, 0 = its default 0.005): `max(1, int(numel · frac))`.
pub fn converter_outlier_count(numel: usize, frac: f64) -> usize {
    let frac = if frac > 0.0 {
        frac
    } else {
        DEFAULT_OUTLIER_FRAC
    };
    ((numel as f64 * frac) as usize).max(1)
}

/// v1 bytes of a tensor as the converter writes them: dense, or for the outlier types
/// `[n u32][n × (flat_index u32, value fp16)][dense]` with the `n` largest |w| (ties: lower
/// index) zeroed in the dense copy. The converter lists the outliers in numpy
/// `argpartition` order; this lists them by increasing index (the only byte difference).
fn quantize_like_converter(q: V1Quant, block: usize, data: &[f32], frac: f64) -> Vec<u8> {
    if !q.is_outlier() {
        return quantize_dense_like_converter(q, block, data);
    }
    let n = converter_outlier_count(data.len(), frac).min(data.len());
    let mut idx: Vec<usize> = (0..data.len()).collect();
    idx.sort_by(|&a, &b| data[b].abs().total_cmp(&data[a].abs()).then(a.cmp(&b)));
    idx.truncate(n);
    idx.sort_unstable();
    let mut clean = data.to_vec();
    let mut out = Vec::with_capacity(4 + 6 * n);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for &i in &idx {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(data[i]).to_le_bytes());
        clean[i] = 0.0;
    }
    out.extend_from_slice(&quantize_dense_like_converter(q.base(), block, &clean));
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
                // the converter stores level s + 8 (s ∈ [−7, 7]); v2 q4_sym: value = d·(l − 8)
                let l = v1_level(q, packed, i);
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

/// True when the v1 blocks of a `rows × cols` tensor are also v2 row blocks: every row
/// starts a block (or there is one row).
fn blocks_follow_rows(block: usize, rows: usize, cols: usize) -> bool {
    rows == 1 || cols.is_multiple_of(block)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Repack a dense v1 tensor (`data` has exactly the dense size) into v2: `(type, block,
/// bytes)`.
fn repack_dense(
    q: V1Quant,
    block: usize,
    data: &[u8],
    rows: usize,
    cols: usize,
) -> (QuantType, usize, Vec<u8>) {
    match q {
        V1Quant::F16 => (QuantType::F16, 1, data.to_vec()),
        _ if q == V1Quant::Q8 || !blocks_follow_rows(block, rows, cols) => (
            QuantType::F32,
            1,
            f32_bytes(&dequant_dense(q, block, data, rows * cols)),
        ),
        _ => {
            let t = v2_type(q.base());
            let (sb, db) = (q.block_bytes(block), t.block_bytes(block));
            let nblocks = rows * cols.div_ceil(block);
            let mut out = vec![0u8; nblocks * db];
            for (s, d) in data.chunks_exact(sb).zip(out.chunks_exact_mut(db)) {
                repack_block(q, block, s, d);
            }
            (t, block, out)
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
    let numel = rows
        .checked_mul(cols)
        .ok_or_else(|| bad(format!("shape {rows}x{cols} too large")))?;
    if vector {
        if q != V1Quant::F16 {
            return Err(Error::UnsupportedQuant(format!(
                "version-1 tensor {name}: norms and biases must be fp16, found original type {}",
                q.id()
            )));
        }
        if numel.checked_mul(2) != Some(data.len()) {
            return Err(bad(format!(
                "{} bytes for {rows}x{cols} fp16 values",
                data.len()
            )));
        }
        return Ok(Tensor::from_f32(
            name,
            shape,
            &dequant_dense(q, block, data, numel),
        ));
    }
    let dense = q
        .dense_bytes(block, numel)
        .ok_or_else(|| bad(format!("shape {rows}x{cols} too large")))?;
    if !q.is_outlier() {
        if data.len() != dense {
            return Err(bad(format!(
                "original type {} {rows}x{cols} (block {block}) needs {dense} bytes, data_size is {}",
                q.id(),
                data.len()
            )));
        }
        let (t, b, bytes) = repack_dense(q, block, data, rows, cols);
        return Ok(Tensor::from_bytes(name, t, b, shape, &bytes));
    }
    // outlier: [n u32][n × (flat_index u32, value f16)][dense]
    let mut c = Cursor::new(data, "version-1 outlier tensor");
    let n = c.u32()? as usize;
    let expect = n
        .checked_mul(6)
        .and_then(|x| x.checked_add(4))
        .and_then(|x| x.checked_add(dense))
        .ok_or_else(|| bad(format!("{n} outliers")))?;
    if data.len() != expect {
        return Err(bad(format!(
            "{n} outliers + dense part need {expect} bytes, data_size is {}",
            data.len()
        )));
    }
    let mut list: Vec<(u32, [u8; 2])> = Vec::with_capacity(n);
    for _ in 0..n {
        let idx = c.u32()?;
        let v = c.take(2)?;
        if idx as usize >= numel {
            return Err(bad(format!("outlier index {idx} outside {numel} values")));
        }
        list.push((idx, [v[0], v[1]]));
    }
    // the converter lists them in argpartition order; v2 wants (row, col) order
    list.sort_unstable_by_key(|e| e.0);
    if list.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(bad("duplicate outlier index".into()));
    }
    let dense_bytes = c.take(dense)?;
    if !blocks_follow_rows(block, rows, cols) {
        // no v2 layout for blocks that straddle rows: the exact values as f32
        let mut v = dequant_dense(q.base(), block, dense_bytes, numel);
        for (idx, h) in &list {
            v[*idx as usize] = f16::from_le_bytes(*h).to_f32();
        }
        return Ok(Tensor::from_f32(name, shape, &v));
    }
    // v2: [dense][n u32][row_ptr u32 × (rows+1)][col u32 × n][value f16 × n]
    let (_, _, mut out) = repack_dense(q.base(), block, dense_bytes, rows, cols);
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

/// The in-layer name of original tensor type `kind` below the expert ids (docs/qsf.md §10;
/// the converter's and the original headers' ids: 7/8 attention-norm weight/bias, 9/10
/// FFN-norm weight/bias).
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
        8 => "attn_norm.bias",
        9 => names::FFN_NORM,
        10 => "ffn_norm.bias",
        11 => "attn_q.bias",
        12 => "attn_k.bias",
        13 => "attn_v.bias",
        14 => "attn_output.bias",
        15 => "ffn_gate.bias",
        16 => "ffn_up.bias",
        17 => "ffn_down.bias",
        18 => names::ATTN_QKV,
        19 => "attn_qkv.bias",
        20 => names::POS_EMBD,
        21 => "ffn_gate_inp",
        22 => "ffn_gate_inp.bias",
        _ => return None,
    })
}

/// The original tensor-type id of in-layer tensor `name` (inverse of [`kind_name`]).
fn kind_of(name: &str) -> Option<u16> {
    (0..KIND_FIRST_EXPERT).find(|&k| kind_name(k) == Some(name))
}

/// Name of expert tensor `kind` (≥ 23): `ffn_{gate,up,down}.{e}` (+ `.bias`).
fn expert_name(kind: u16) -> String {
    let r = kind - KIND_FIRST_EXPERT;
    let (e, j) = (r / 6, r % 6);
    let role = ["ffn_gate", "ffn_up", "ffn_down"][(j / 2) as usize];
    if j % 2 == 1 {
        format!("{role}.{e}.bias")
    } else {
        format!("{role}.{e}")
    }
}

/// Kinds stored as fp16 vectors (norms, biases).
fn is_vector_kind(kind: u16) -> bool {
    if kind >= KIND_FIRST_EXPERT {
        return (kind - KIND_FIRST_EXPERT) % 2 == 1;
    }
    (7..=17).contains(&kind) || kind == 19 || kind == 22
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
    gated: bool,
    qkv_bias: bool,
    tied: bool,
    /// number of distinct experts with tensors in any layer
    experts: usize,
    router: bool,
}

/// The header's architecture id as a QStream architecture.
fn arch_of(id: u32) -> Result<Arch> {
    let unsupported = |m: &str| {
        Err(Error::UnsupportedArch(format!(
            "version-1 file: architecture id {id} ({m})"
        )))
    };
    Ok(match id {
        0 => Arch::Gpt2,
        1 => Arch::Llama,
        2 => Arch::Mistral,
        3 => Arch::Phi,
        4 => Arch::Gptj,
        5 => Arch::Qwen2,
        6 => Arch::Gemma,
        7 => return unsupported("stablelm"),
        8 => Arch::Mixtral,
        9 => Arch::DeepseekV2,
        10 => Arch::GptOss,
        128 => {
            return unsupported(
                "\"custom\": the original converter writes it for every model type it has no \
                 id for, qwen2_moe among them, so the file does not say which model it holds",
            )
        }
        _ => return unsupported("unknown"),
    })
}

/// Build the model config from a v1 header (docs/qsf.md §10 for the mapping).
fn config_from_header(h: &Header, t: &Traits) -> Result<ModelConfig> {
    let unsupported = |m: String| Err(Error::UnsupportedArch(format!("version-1 file: {m}")));
    let arch = arch_of(h.arch)?;
    if h.num_experts_u8 > 1 || t.experts > 0 || t.router {
        return unsupported(format!(
            "{} with mixture of experts ({} experts in the header, {} with tensors): the \
             original converter writes MoE models incompletely (no shared experts, no \
             deepseek MLA attention, no experts at all for qwen2_moe), so version-1 MoE \
             files are not run; convert the HuggingFace folder with `qstream convert`",
            arch.name(),
            h.num_experts_u8,
            t.experts
        ));
    }
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
            // Phi rotates part of each head; the file does not say how much. transformers'
            // PhiConfig default (partial_rotary_factor 0.5) is assumed (docs/qsf.md §10).
            let dim = if arch == Arch::Phi {
                (head_dim / 2) & !1
            } else {
                head_dim
            };
            Some(RopeConfig {
                theta: h.rope_theta,
                dim,
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
        qk_norm: false,
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

/// The tensors every layer of `cfg` needs to run, as alternatives (any one name of a group).
fn required_groups(cfg: &ModelConfig) -> Vec<Vec<&'static str>> {
    let mut g = vec![
        vec![names::ATTN_NORM],
        vec![names::ATTN_Q, names::ATTN_QKV],
        vec![names::ATTN_OUT],
        vec![names::FFN_UP],
        vec![names::FFN_DOWN],
    ];
    if cfg.gated_mlp {
        g.push(vec![names::FFN_GATE]);
    }
    g
}

/// `UnsupportedArch` when some layer lacks a tensor the model needs (what the original
/// converter leaves out for architectures whose tensor names it does not map).
fn check_complete(cfg: &ModelConfig, layers: &[Vec<Tensor>]) -> Result<()> {
    for (i, ts) in layers.iter().enumerate() {
        for group in required_groups(cfg) {
            if !ts.iter().any(|t| group.contains(&t.name.as_str())) {
                return Err(Error::UnsupportedArch(format!(
                    "version-1 {} file: layer {i} has no {} tensor ({} tensors in the layer) — \
                     the original converter does not map this architecture's tensor names, so \
                     the file does not hold the model; convert the HuggingFace folder with \
                     `qstream convert`",
                    cfg.arch.name(),
                    group[0],
                    ts.len()
                )));
            }
        }
    }
    Ok(())
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
    // The converter writes the tokenizer's own count; the embedding may have more rows
    // (vocabularies padded to a multiple of 64 or 128), never fewer.
    if vocab_size > h.vocab_size {
        return Err(Error::corrupt(format!(
            "version-1 tokenizer has {vocab_size} tokens, the embedding only {}",
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
        // LZ4 and LZ4-HC both produce standard LZ4 blocks. (The converter compresses every
        // layer over 1024 bytes even when LZ4 makes it larger, as it does for fp16 layers.)
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
        let _num_outliers = c.u32()?; // always 0: the count is inside the data
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
        // 23 + 6e + j for 256 experts at most (the header's expert count is one byte)
        if kind >= KIND_FIRST_EXPERT + 6 * 256 {
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

/// Read and check the embedding section at `eo`: `(quant, stored end offset, raw table)`.
///
/// The converter writes `compressed_size = 0` when the table is not compressed: its length
/// then follows from the type and shape (for outlier types, from the count at its start).
/// A non-zero size must match (older QStream builds wrote the length). A compressed
/// table's decompressed length is not stored either; it is checked the same way after
/// decompression.
fn parse_embedding<'a>(
    bytes: &'a [u8],
    h: &Header,
    block: usize,
) -> Result<(V1Quant, u64, std::borrow::Cow<'a, [u8]>)> {
    let len = bytes.len() as u64;
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
    let _num_chunks = c.u32()?; // the converter: 1
    let _chunk_size = c.u32()?; // the converter: num_vectors
    let eq = V1Quant::from_id(u8::try_from(eq).unwrap_or(0xFE), "version-1 embedding")?;
    if nvec != h.vocab_size as usize || edim != h.hidden_dim as usize {
        return Err(Error::corrupt(format!(
            "version-1 embedding is {nvec}x{edim}, header says {}x{}",
            h.vocab_size, h.hidden_dim
        )));
    }
    let numel = nvec
        .checked_mul(edim)
        .ok_or_else(|| Error::corrupt("version-1 embedding: too large"))?;
    let dense = eq
        .dense_bytes(block, numel)
        .ok_or_else(|| Error::corrupt("version-1 embedding: too large"))? as u64;
    let table_off = eo + EMBEDDING_HEADER_SIZE as u64;
    let stored_size = match ecomp {
        0 => {
            let want = if eq.is_outlier() {
                let r = checked_range("version-1 embedding outlier count", table_off, 4, len)?;
                let n = u32::from_le_bytes(bytes[r].try_into().unwrap_or_default()) as u64;
                4 + 6 * n + dense
            } else {
                dense
            };
            if esize != 0 && esize != want {
                return Err(Error::corrupt(format!(
                    "version-1 embedding: compressed_size {esize} for an uncompressed table of \
                     {want} bytes"
                )));
            }
            want
        }
        1 | 2 if esize > 0 => esize,
        1 | 2 => return Err(Error::corrupt("version-1 embedding: LZ4 table of 0 bytes")),
        x => {
            return Err(Error::UnsupportedQuant(format!(
                "version-1 embedding: compression type {x}"
            )))
        }
    };
    let erange = checked_range("version-1 embedding table", table_off, stored_size, len)?;
    let end = erange.end as u64;
    let etable = &bytes[erange];
    let c = crc32fast::hash(etable);
    if c != ecrc {
        return Err(Error::Checksum {
            what: "version-1 embedding table".into(),
            stored: ecrc,
            computed: c,
        });
    }
    if ecomp == 0 {
        return Ok((eq, end, std::borrow::Cow::Borrowed(etable)));
    }
    // the largest the table can be: every value an outlier (bounded by what LZ4 can expand to)
    let most = if eq.is_outlier() {
        (numel as u64).saturating_mul(6).saturating_add(4 + dense)
    } else {
        dense
    };
    let cap = most.min(stored_size.saturating_mul(LZ4_MAX_RATIO).saturating_add(16));
    let mut buf = vec![0u8; cap as usize];
    let n = lz4_flex::block::decompress_into(etable, &mut buf)
        .map_err(|err| Error::corrupt(format!("version-1 embedding: LZ4: {err}")))?;
    buf.truncate(n);
    if !eq.is_outlier() && n as u64 != dense {
        return Err(Error::corrupt(format!(
            "version-1 embedding: decompressed {n} bytes, type and shape need {dense}"
        )));
    }
    Ok((eq, end, std::borrow::Cow::Owned(buf)))
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
    let (eq, eend, etable) = parse_embedding(bytes, h, block)?;
    regions.push((h.embedding_offset, eend, "embedding".into()));
    let (nvec, hidden) = (h.vocab_size as usize, h.hidden_dim as usize);

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

    // every tensor, repacked (which validates its size against type and shape)
    let token_embd = repack_tensor(
        names::TOKEN_EMBD,
        eq,
        block,
        vec![nvec, hidden],
        &etable,
        false,
    )?;
    let mut embedding = vec![token_embd];
    let mut traits = Traits::default();
    let mut experts = std::collections::BTreeSet::new();
    let mut layers = Vec::with_capacity(n_layer);
    for (i, (raw, e)) in raw_layers.iter().zip(&entries).enumerate() {
        let mut out: Vec<Tensor> = Vec::new();
        for t in parse_layer_tensors(raw, i, e)? {
            let name = match kind_name(t.kind) {
                Some(n) => n.to_string(),
                None => {
                    experts.insert((t.kind - KIND_FIRST_EXPERT) / 6);
                    expert_name(t.kind)
                }
            };
            let vector = is_vector_kind(t.kind);
            if vector && t.rows != 1 && t.cols != 1 {
                return Err(Error::corrupt(format!(
                    "version-1 layer {i} {name}: vector stored as {}x{}",
                    t.rows, t.cols
                )));
            }
            let shape = if vector {
                vec![t.rows * t.cols]
            } else {
                vec![t.rows, t.cols]
            };
            let x = repack_tensor(&name, t.q, block, shape, t.data, vector)?;
            if t.kind == KIND_POS_EMBD {
                embedding.push(x);
                continue;
            }
            traits.gated |= t.kind == 4;
            traits.qkv_bias |= matches!(t.kind, 11 | 19);
            traits.router |= t.kind == 21;
            if out.iter().any(|o| o.name == x.name) {
                return Err(Error::corrupt(format!(
                    "version-1 layer {i}: tensor {name} appears twice"
                )));
            }
            out.push(x);
        }
        layers.push(out);
    }
    traits.experts = experts.len();
    for t in &embedding {
        if t.shape[1] != hidden {
            return Err(Error::corrupt(format!(
                "version-1 {} has {} columns",
                t.name, t.shape[1]
            )));
        }
    }

    // final section contents: norm (+bias) then head (+bias)
    let norm_rows = match norm_size {
        n if n == 2 * hidden as u64 => 1,
        n if n == 4 * hidden as u64 => 2,
        n => {
            return Err(Error::corrupt(format!(
                "version-1 final norm is {n} bytes for hidden size {hidden}"
            )))
        }
    };
    let head_bias = match head_type {
        0 | 1 => false,
        2 => true,
        t => return Err(Error::corrupt(format!("version-1 output head type {t}"))),
    };
    traits.tied = head_type == 1;
    if traits.tied && head_size != 0 {
        return Err(Error::corrupt(
            "version-1 tied output head with a non-empty head",
        ));
    }
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
        let (w, b) = if head_bias {
            let split = head
                .len()
                .checked_sub(2 * nvec)
                .ok_or_else(|| Error::corrupt("version-1 head bias missing"))?;
            head.split_at(split)
        } else {
            (head, &head[head.len()..])
        };
        let q = head_type_of(h, block, nvec * hidden, w)?;
        final_.push(repack_tensor(
            names::OUTPUT,
            q,
            block,
            vec![nvec, hidden],
            w,
            false,
        )?);
        if head_bias {
            final_.push(repack_tensor(
                "output.bias",
                V1Quant::F16,
                block,
                vec![nvec],
                b,
                true,
            )?);
        }
    }

    // The file is intact. Can it run?
    let config = config_from_header(h, &traits)?;
    check_complete(&config, &layers)?;
    for (i, (ts, e)) in layers.iter().zip(&entries).enumerate() {
        let ffn = if e.layer_ffn_dim != 0 {
            e.layer_ffn_dim as usize
        } else {
            config.n_ff
        };
        for t in ts {
            check_shape(
                t,
                expected_shape(&config, &t.name, ffn),
                &format!("layer {i}"),
            )?;
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

/// The storage type of the output head: the header's `quant_type` when the size fits it
/// (the converter quantizes the head with the file's type), else the one dense type whose
/// size equals the head's (docs/qsf.md §10).
fn head_type_of(h: &Header, block: usize, numel: usize, data: &[u8]) -> Result<V1Quant> {
    let fits = |q: V1Quant| -> bool {
        if q.is_outlier() {
            let n = data.get(..4).map_or(u64::MAX, |b| {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64
            });
            q.dense_bytes(block, numel).is_some_and(|d| {
                n.checked_mul(6).and_then(|x| x.checked_add(4 + d as u64))
                    == Some(data.len() as u64)
            })
        } else {
            q.dense_bytes(block, numel) == Some(data.len())
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
            "version-1 output head: {} bytes fit no storage type for {numel} values",
            data.len()
        ))),
    }
}

/// Open a version-1 file: validate it completely (all checksums included) and repack its
/// tensors. `header` was parsed (and its CRC checked) by the caller. A file that is intact
/// but cannot run (see the module documentation) is an [`Error::UnsupportedArch`].
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

/// Options of [`write_v1`] — the original converter's command-line options.
#[derive(Debug, Clone, Copy)]
pub struct V1Options {
    /// `--quant`: type of weight matrices, the embedding and the output head (8-bit is not
    /// one of the converter's types and is refused)
    pub quant: V1Quant,
    /// `--block-size` (32, 64, 128, 256)
    pub block: usize,
    /// `--compress`: LZ4-compress the embedding table and every layer over 1024 bytes (as
    /// the original does, even when LZ4 makes them larger)
    pub compress: bool,
    /// `--outlier-frac` for the outlier types; 0 means the converter's default, 0.005
    pub outlier_frac: f64,
}

impl Default for V1Options {
    fn default() -> Self {
        V1Options {
            quant: V1Quant::Q4,
            block: DEFAULT_BLOCK,
            compress: false,
            outlier_frac: 0.0,
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

/// The in-layer tensors the converter writes for `arch`, in its order (the order of its
/// HuggingFace name table).
fn converter_layer_order(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Phi => &[
            names::ATTN_Q,
            names::ATTN_K,
            names::ATTN_V,
            names::ATTN_OUT,
            "attn_q.bias",
            "attn_k.bias",
            "attn_v.bias",
            "attn_output.bias",
            names::FFN_UP,
            "ffn_up.bias",
            names::FFN_DOWN,
            "ffn_down.bias",
            names::ATTN_NORM,
            "attn_norm.bias",
        ],
        _ => &[
            names::ATTN_Q,
            names::ATTN_K,
            names::ATTN_V,
            names::ATTN_OUT,
            names::FFN_GATE,
            names::FFN_UP,
            names::FFN_DOWN,
            names::ATTN_NORM,
            names::FFN_NORM,
            "attn_q.bias",
            "attn_k.bias",
            "attn_v.bias",
            "attn_output.bias",
        ],
    }
}

/// Write a version-1 file at `path` the way the original converter (`tools/convert_hf.py`
/// at 892a00d, numpy path) writes the same model: the same header fields (including its
/// parameter-count estimate, `num_active_experts` 2 and `expert_intermediate_dim` =
/// `n_ff` for dense models), the same embedding header (`compressed_size` 0 unless
/// compressed, one chunk of `n_vocab` vectors), the same tokenizer section, the same
/// tensor ids, order and headers, the same layer index and final section, and the same
/// quantized bytes (its float32 min/max arithmetic and round-half-to-even, blocks over the
/// flattened tensor). Two differences remain: outliers are listed by increasing index
/// (the converter lists them in numpy `argpartition` order), and LZ4 output comes from
/// `lz4_flex`, whose compressed bytes differ from the C library's (the decompressed bytes
/// are the same). The whole file is built in memory. Returns the file size.
///
/// Written are the families the converter writes completely and QStream can describe:
/// llama, mistral, qwen2 (dense, full rotary, no llama3/longrope RoPE scaling) and phi
/// (partial rotary over half of each head, the only fraction the file can imply).
/// Anything else is an `InvalidArgument` error: the converter would drop tensors of it.
pub fn write_v1(
    path: &Path,
    config: &ModelConfig,
    vocab: &V1Vocab,
    tensors: &[V1Tensor],
    opts: &V1Options,
) -> Result<u64> {
    let buf = build_v1(config, vocab, tensors, opts)?;
    std::fs::write(path, &buf).map_err(|e| Error::io(path, e))?;
    Ok(buf.len() as u64)
}

fn build_v1(
    config: &ModelConfig,
    vocab: &V1Vocab,
    tensors: &[V1Tensor],
    opts: &V1Options,
) -> Result<Vec<u8>> {
    let inval = |m: String| Err(Error::InvalidArgument(format!("version-1 writer: {m}")));
    config.validate()?;
    if !matches!(opts.block, 32 | 64 | 128 | 256) {
        return inval(format!("block size {}", opts.block));
    }
    if opts.quant == V1Quant::Q8 {
        return inval("8-bit is not a type of the original converter".into());
    }
    if !(0.0..=1.0).contains(&opts.outlier_frac) {
        return inval(format!("outlier fraction {}", opts.outlier_frac));
    }
    let c = config;
    let phi = c.arch == Arch::Phi;
    if !matches!(
        c.arch,
        Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Phi
    ) {
        return inval(format!(
            "architecture {}: the original converter writes only llama, mistral, qwen2 and \
             phi completely",
            c.arch.name()
        ));
    }
    if c.moe.is_some() || c.qk_norm {
        return inval("MoE or q/k-norm models".into());
    }
    let want_norm = if phi {
        NormType::LayerNorm
    } else {
        NormType::RmsNorm
    };
    if c.norm != want_norm {
        return inval(format!("{:?} for {}", c.norm, c.arch.name()));
    }
    let rope = match &c.rope {
        Some(r) => r,
        None => return inval("models without RoPE".into()),
    };
    let want_dim = if phi {
        (c.head_dim / 2) & !1
    } else {
        c.head_dim
    };
    if rope.dim != want_dim || rope.style != RopeStyle::Neox {
        return inval(format!(
            "rotary dims {} ({:?}) for head_dim {}",
            rope.dim, rope.style, c.head_dim
        ));
    }
    let (rope_scaling_type, rope_scaling_factor) = match &rope.scaling {
        None => (0, 1.0),
        Some(RopeScaling::Linear { factor }) => (1, *factor),
        Some(RopeScaling::Yarn { factor, .. }) => (3, *factor),
        Some(_) => return inval("llama3/longrope RoPE scaling".into()),
    };
    if vocab.tokens.len() > c.n_vocab {
        return inval(format!(
            "{} tokens for n_vocab {}",
            vocab.tokens.len(),
            c.n_vocab
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
    let quant_matrix = |t: &V1Tensor| quantize_like_converter(q, block, &t.data, opts.outlier_frac);
    let f16_bytes = |d: &[f32]| quantize_dense_like_converter(V1Quant::F16, 1, d);
    let order = converter_layer_order(c.arch);
    let mut ffn_bias = false;
    for t in tensors {
        if let Some((i, local)) = names::split_layer(&t.name) {
            if i >= c.n_layer || !order.contains(&local) {
                return inval(format!(
                    "tensor {}: the original converter writes no such tensor for {}",
                    t.name,
                    c.arch.name()
                ));
            }
            ffn_bias |= local.starts_with("ffn_") && local.ends_with(".bias");
        } else if ![
            names::TOKEN_EMBD,
            names::OUTPUT_NORM,
            "output_norm.bias",
            names::OUTPUT,
            "output.bias",
        ]
        .contains(&t.name.as_str())
        {
            return inval(format!("tensor {}", t.name));
        }
    }

    // header fields as the converter derives them from config.json
    let (h_dim, ff, n_vocab, n_layer) = (
        c.n_embd as u64,
        c.n_ff as u64,
        c.n_vocab as u64,
        c.n_layer as u64,
    );
    let params = n_vocab * h_dim + n_layer * (4 * h_dim * h_dim + 2 * h_dim * ff);
    let mut has_bias = if phi {
        0x03
    } else if c.qkv_bias && c.arch != Arch::Qwen2 {
        // config.json's attention_bias; Qwen2 configs have none (their biases are implied)
        0x03
    } else {
        0
    };
    if ffn_bias && !phi {
        has_bias |= 0x04; // mlp_bias
    }
    let tok = |v: Option<u32>| v.unwrap_or(u32::MAX);
    let mut h = Header {
        version: 1,
        header_size: HEADER_SIZE as u32,
        arch: c.arch.header_id(),
        num_layers: c.n_layer as u32,
        hidden_dim: c.n_embd as u32,
        num_heads: c.n_head as u32,
        num_kv_heads: c.n_head_kv as u32,
        vocab_size: c.n_vocab as u32,
        max_seq_len: c.n_ctx_train as u32,
        intermediate_dim: c.n_ff as u32,
        head_dim: c.head_dim as u32,
        quant_type: q.id(),
        activation: match c.act {
            Activation::Gelu => 0,
            Activation::GeluTanh => 1,
            Activation::Silu => 2,
            Activation::Relu => 3,
        },
        norm_type: if phi { 0 } else { 2 },
        pos_enc_type: 1,
        rope_theta: rope.theta,
        norm_epsilon: c.norm_eps,
        block_size: block as u32,
        layer_index_offset: HEADER_SIZE as u64,
        bos_token_id: tok(c.bos_token_id),
        eos_token_id: tok(c.eos_token_ids.first().copied()),
        pad_token_id: tok(c.pad_token_id),
        unk_token_id: u32::MAX,
        num_params_millions: (params / 1_000_000) as u32,
        has_bias,
        ffn_type: if phi { 0 } else { 1 },
        attn_type: 0,
        weight_tying: c.tie_embeddings as u8,
        rope_scaling_type,
        rope_scaling_factor,
        sliding_window: c.sliding_window.unwrap_or(0) as u32,
        tie_word_embeddings: c.tie_embeddings as u32,
        endian_marker: 1,
        num_experts_u8: 0,
        num_active_experts: 2,
        moe_norm_topk: 0,
        expert_intermediate_dim: c.n_ff as u32,
        ..Default::default()
    };
    let mut buf = vec![0u8; HEADER_SIZE + c.n_layer * LAYER_ENTRY_SIZE];

    // embedding: the whole table, LZ4-compressed as one block with --compress
    let emb = get(names::TOKEN_EMBD)?;
    if emb.shape != [c.n_vocab, c.n_embd] {
        return inval(format!("token_embd shape {:?}", emb.shape));
    }
    let table = quant_matrix(emb);
    let (table, comp) = if opts.compress {
        (lz4_flex::block::compress(&table), 1u8)
    } else {
        (table, 0u8)
    };
    h.embedding_offset = align_vec(&mut buf);
    let mut w = Writer::default();
    w.u32(q.id() as u32);
    w.u32(if comp != 0 {
        u32_size(table.len(), "embedding")?
    } else {
        0
    });
    w.u32(c.n_vocab as u32);
    w.u32(c.n_embd as u32);
    w.u8(comp);
    w.zeros(3);
    w.u32(crc32fast::hash(&table));
    w.u32(1); // num_chunks
    w.u32(c.n_vocab as u32); // chunk_size
    buf.extend_from_slice(&w.buf);
    buf.extend_from_slice(&table);

    // tokenizer: [header][u16 length + bytes per token][CRC-32 of that][merges]
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
        vocab.tokens.len() as u32,
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
    let mut index = Vec::with_capacity(c.n_layer * LAYER_ENTRY_SIZE);
    for i in 0..c.n_layer {
        let mut raw = Vec::new();
        let mut n_tensors = 0u16;
        for local in order {
            let Some(t) = by_name.get(names::layer_name(i, local).as_str()) else {
                continue;
            };
            let kind = kind_of(local).unwrap_or(u16::MAX);
            let (rows, cols, qid, data) = if is_vector_kind(kind) {
                (1, t.data.len(), V1Quant::F16.id(), f16_bytes(&t.data))
            } else {
                if t.shape.len() != 2 {
                    return inval(format!("tensor {} must be 2-D", t.name));
                }
                (t.shape[0], t.shape[1], q.id(), quant_matrix(t))
            };
            let mut w = Writer::default();
            w.u16(kind);
            w.u8(qid);
            w.u8(0); // row-major
            w.u32(rows as u32);
            w.u32(cols as u32);
            w.u32(u32_size(data.len(), &t.name)?);
            w.u32(0); // num_outliers: the count is inside the data
            w.u32(0);
            raw.extend_from_slice(&w.buf);
            raw.extend_from_slice(&data);
            n_tensors += 1;
        }
        let off = align_vec(&mut buf);
        let crc_raw = crc32fast::hash(&raw);
        let raw_size = u32_size(raw.len(), "layer")?;
        let mut e = LayerEntry {
            offset: off,
            raw_size: raw_size as u64,
            quant_type: q.id(),
            num_tensors: n_tensors,
            crc32_raw: crc_raw,
            weight_bytes: raw_size, // the converter: the whole decompressed layer
            ..Default::default()
        };
        // as the original: every layer over 1024 bytes, whether or not LZ4 makes it smaller
        let compressed =
            (opts.compress && raw.len() > 1024).then(|| lz4_flex::block::compress(&raw));
        match compressed {
            Some(z) => {
                e.compression = 1;
                e.stored_size = z.len() as u64;
                e.crc32_stored = crc32fast::hash(&z);
                buf.extend_from_slice(&z);
            }
            None => {
                e.stored_size = e.raw_size;
                e.crc32_stored = crc_raw;
                buf.extend_from_slice(&raw);
            }
        }
        index.extend_from_slice(&e.to_bytes());
    }

    // final: fp16 norm (+ bias), then the head in the file's type (+ fp16 bias)
    let norm = get(names::OUTPUT_NORM)?;
    let mut body = f16_bytes(&norm.data);
    if let Some(b) = by_name.get("output_norm.bias") {
        body.extend_from_slice(&f16_bytes(&b.data));
    }
    let norm_size = body.len();
    let head_type = if c.tie_embeddings {
        1
    } else {
        let head = get(names::OUTPUT)?;
        if head.shape != [c.n_vocab, c.n_embd] {
            return inval(format!("output shape {:?}", head.shape));
        }
        body.extend_from_slice(&quant_matrix(head));
        if let Some(b) = by_name.get("output.bias") {
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
    Ok(buf)
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
    fn q4_sym_levels_are_offset_by_8() {
        // the converter: x = −7·s → nibble 1, x = 7·s → nibble 15
        let s = 0.5f32;
        let mut x = vec![0f32; 32];
        x[0] = -7.0 * s;
        x[1] = 7.0 * s;
        x[2] = -s;
        let mut blk = vec![0u8; V1Quant::Q4Sym.block_bytes(32)];
        quantize_block_like_converter(V1Quant::Q4Sym, &x, &mut blk);
        assert_eq!(f16::from_le_bytes([blk[0], blk[1]]).to_f32(), s);
        assert_eq!(&blk[2..4], &[0, 0]);
        assert_eq!(blk[4], 0xF1); // value 0 → 1 (low), value 1 → 15 (high)
        assert_eq!(blk[5] & 0x0F, 7); // value 2 → −1 + 8
        assert_eq!(v1_value(V1Quant::Q4Sym, &blk, 0), -7.0 * s);
        assert_eq!(v1_value(V1Quant::Q4Sym, &blk, 3), 0.0);
        let mut v2 = vec![0u8; QuantType::Q4Sym.block_bytes(32)];
        repack_block(V1Quant::Q4Sym, 32, &blk, &mut v2);
        // v2 levels: byte j holds values j (low), j+16 (high); value = d·(l − 8)
        assert_eq!(v2[2] & 0x0F, 1);
        assert_eq!(v2[3] & 0x0F, 15);
        assert_eq!(v2[4] & 0x0F, 7);
    }

    #[test]
    fn rounding_is_half_to_even_with_the_f32_scale() {
        // range 0..15 over 15 levels: scale 1, values k + 0.5 round to the even neighbour
        let mut x: Vec<f32> = (0..32).map(|i| (i % 16) as f32).collect();
        x[1] = 0.5; // → 0
        x[3] = 2.5; // → 2
        x[5] = 3.5; // → 4
        let mut blk = vec![0u8; V1Quant::Q4.block_bytes(32)];
        quantize_block_like_converter(V1Quant::Q4, &x, &mut blk);
        let l = |i| v1_level(V1Quant::Q4, &blk[4..], i);
        assert_eq!((l(1), l(3), l(5)), (0, 2, 4));
    }

    #[test]
    fn blocks_run_over_the_flattened_tensor() {
        // 3 rows × 40 cols at block 32: 120 values → 4 blocks, the last padded with zeros
        let data: Vec<f32> = (0..120).map(|i| (i as f32 * 0.37).sin()).collect();
        let bytes = quantize_like_converter(V1Quant::Q4, 32, &data, 0.0);
        assert_eq!(bytes.len(), 4 * V1Quant::Q4.block_bytes(32));
        let t = repack_tensor("t", V1Quant::Q4, 32, vec![3, 40], &bytes, false).unwrap();
        assert_eq!(
            t.qtype,
            QuantType::F32,
            "blocks straddle rows: no v2 block layout"
        );
        let got = t.to_f32().unwrap();
        assert_eq!(got, dequant_dense(V1Quant::Q4, 32, &bytes, 120));
        for (g, x) in got.iter().zip(&data) {
            assert!((g - x).abs() < 0.07, "{g} vs {x}");
        }
        // 3 × 32 at block 32 maps block for block
        let bytes = quantize_like_converter(V1Quant::Q4, 32, &data[..96], 0.0);
        let t = repack_tensor("t", V1Quant::Q4, 32, vec![3, 32], &bytes, false).unwrap();
        assert_eq!(t.qtype, QuantType::Q4);
        assert_eq!(
            t.to_f32().unwrap(),
            dequant_dense(V1Quant::Q4, 32, &bytes, 96)
        );
    }

    #[test]
    fn outlier_count_follows_the_converter() {
        assert_eq!(converter_outlier_count(4096, 0.0), 20); // int(20.48)
        assert_eq!(converter_outlier_count(100, 0.0), 1); // max(1, 0)
        assert_eq!(converter_outlier_count(1000, 0.01), 10);
    }
}

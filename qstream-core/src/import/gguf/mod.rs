//! GGUF importer: a llama.cpp `.gguf` file as a [`ModelSource`].
//!
//! - [`parse`]: the container (header, metadata, tensor infos), memory-mapped and fully
//!   validated; [`GgufFile`] is usable on its own for any architecture.
//! - [`dequant`]: ggml block formats → f32, bit-identical to ggml / `gguf.quants`.
//! - [`vocab`]: the GGUF vocabulary → a HuggingFace `tokenizer.json` equal to the one
//!   transformers builds from the same file.
//! - [`config`]: `{arch}.*` metadata → [`ModelConfig`] for every dense family llama.cpp
//!   names (llama, mistral, qwen2, qwen3, phi2, phi3, gemma, gemma2, gemma3, gpt2, gptj,
//!   olmo2, starcoder2, granite).
//!
//! The canonical model equals what the HuggingFace importer makes of the same weights:
//!
//! - Names: GGUF `blk.N.attn_q.weight` → canonical `blk.N.attn_q` (`.weight` dropped, `.bias`
//!   kept); `position_embd` → `pos_embd`.
//! - Shapes: GGUF `ne[0]` is the contiguous axis, so a 2-D tensor `ne = [cols, rows]` becomes
//!   `[rows, cols]`; higher-rank tensors (stacked MoE experts) fold every outer dimension into
//!   the rows: `[ne[1]·ne[2]·…, ne[0]]`. Vectors stay `[n]`.
//! - What llama.cpp's converter changed is undone ([`Transform`]): the q/k row permutation of
//!   llama / mistral / granite (`LlamaModel.permute`, for its adjacent-pair "NORM" RoPE) is
//!   reversed so every family but GPT-J rotates halves ([`RopeStyle::Neox`]) like HF; gemma's
//!   RMSNorm scales, stored as `1 + w`, get the 1 taken off (exact in f32 for the usual
//!   `|w| ≤ 1`: Sterbenz); phi3's fused `ffn_up` (gate rows, then up rows) is split into
//!   `ffn_gate` / `ffn_up`.
//! - Tensors that are configuration, not weights, move into the config: `rope_freqs`
//!   (llama3 scaling), `rope_factors_long` / `rope_factors_short` (phi3 longrope); an `output`
//!   byte-identical to `token_embd` (a tied head written twice) is dropped.
//!
//! [`RopeStyle::Neox`]: crate::model::config::RopeStyle::Neox

use std::collections::HashMap;
use std::path::Path;

use crate::import::{ModelSource, NativeTensor, SourceTensor, TokenizerData};
use crate::model::config::{Arch, ModelConfig};
use crate::quant::QuantType;
use crate::{Error, Result};

pub mod config;
pub mod dequant;
pub mod parse;
mod vocab;

pub use parse::{ggml_type_block, ggml_type_name, GgufFile, MetaValue, TensorInfo};

/// How a canonical tensor is derived from the GGUF tensor it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// As stored.
    None,
    /// Undo `LlamaModel.permute`: within each of the `n_head` heads of `head_dim` rows, GGUF
    /// row `2j + h` (`j < n_rot/2`, `h ∈ {0, 1}`) is canonical row `h·n_rot/2 + j`; rows past
    /// `n_rot` stay.
    Unpermute {
        n_head: usize,
        head_dim: usize,
        n_rot: usize,
    },
    /// Subtract 1 from every value (gemma norms).
    MinusOne,
    /// Rows `start .. start + len` of the stored matrix.
    Rows { start: usize, len: usize },
}

impl Transform {
    /// Canonical row `r` comes from stored row `source_row(r)`.
    fn source_row(self, r: usize) -> usize {
        match self {
            Transform::Unpermute {
                head_dim, n_rot, ..
            } => {
                let (head, i) = (r / head_dim, r % head_dim);
                let half = n_rot / 2;
                let src = if i < n_rot {
                    let (h, j) = (i / half, i % half);
                    2 * j + h
                } else {
                    i
                };
                head * head_dim + src
            }
            Transform::Rows { start, .. } => start + r,
            Transform::None | Transform::MinusOne => r,
        }
    }
}

/// One canonical tensor: which GGUF tensor, and how.
#[derive(Debug, Clone, Copy)]
struct Entry {
    info: usize,
    transform: Transform,
}

/// A GGUF model file opened as a [`ModelSource`]. Tensor data stays in the mapped file and
/// is decoded on demand.
pub struct GgufModel {
    file: GgufFile,
    config: ModelConfig,
    tokenizer: TokenizerData,
    tensors: Vec<SourceTensor>,
    /// canonical name → source
    index: HashMap<String, Entry>,
}

impl std::fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufModel")
            .field("file", &self.file)
            .field("arch", &self.config.arch)
            .finish()
    }
}

/// Canonical QSF name of GGUF tensor `name`.
pub fn canonical_name(name: &str) -> &str {
    let n = name.strip_suffix(".weight").unwrap_or(name);
    match n {
        "position_embd" => "pos_embd",
        n => n,
    }
}

/// Canonical shape of GGUF dims `ne`.
pub fn canonical_shape(ne: &[u64]) -> Vec<usize> {
    match ne {
        [] => vec![],
        [n] => vec![*n as usize],
        [cols, outer @ ..] => vec![outer.iter().map(|&d| d as usize).product(), *cols as usize],
    }
}

/// Tensors whose values the config holds.
const CONFIG_TENSORS: &[&str] = &["rope_freqs", "rope_factors_long", "rope_factors_short"];

fn decode(file: &GgufFile, info: &TensorInfo, name: &str) -> Result<Vec<f32>> {
    let mut out = vec![0f32; info.numel];
    dequant::dequantize(info.ggml_type, file.tensor_bytes(info), &mut out).map_err(
        |e| match e {
            Error::UnsupportedQuant(m) => Error::UnsupportedQuant(format!("tensor {name}: {m}")),
            Error::Corrupt(m) => Error::Corrupt(format!("tensor {name}: {m}")),
            e => e,
        },
    )?;
    Ok(out)
}

impl GgufModel {
    /// Map, parse and validate `path`, and derive the config and tokenizer.
    ///
    /// Errors: [`Error::NotFound`]/[`Error::Io`], [`Error::BadMagic`] (not GGUF),
    /// [`Error::UnsupportedVersion`] (not v2/v3), [`Error::Corrupt`] (any structural
    /// problem), [`Error::UnsupportedQuant`] (unknown ggml type id),
    /// [`Error::UnsupportedArch`] (an architecture outside [`config::SUPPORTED`]).
    pub fn open(path: &Path) -> Result<GgufModel> {
        let file = GgufFile::open(path)?;
        let arch_name = file
            .get("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| Error::corrupt("GGUF: no general.architecture"))?
            .to_owned();
        let arch = config::arch_of(&arch_name)?;

        // Stored tensors under canonical names.
        let mut raw: HashMap<String, usize> = HashMap::with_capacity(file.tensor_infos().len());
        let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in file.tensor_infos().iter().enumerate() {
            let name = canonical_name(&t.name).to_owned();
            if raw.insert(name.clone(), i).is_some() {
                return Err(Error::corrupt(format!(
                    "GGUF: two tensors map to the name {name}"
                )));
            }
            shapes.insert(name, canonical_shape(&t.ne));
        }
        // A tied head written out twice.
        if let (Some(&o), Some(&e)) = (raw.get("output"), raw.get("token_embd")) {
            let (io, ie) = (&file.tensor_infos()[o], &file.tensor_infos()[e]);
            if io.ne == ie.ne
                && io.ggml_type == ie.ggml_type
                && file.tensor_bytes(io) == file.tensor_bytes(ie)
            {
                raw.remove("output");
                shapes.remove("output");
            }
        }
        // phi3: ffn_up holds the gate rows, then the up rows.
        let fused_gate_up = arch == Arch::Phi3 && !shapes.contains_key("blk.0.ffn_gate");

        let vocab = vocab::Vocab::read(&file)?;
        let load = |n: &str| -> Result<Vec<f32>> {
            let &i = raw
                .get(n)
                .ok_or_else(|| Error::corrupt(format!("GGUF: no tensor {n}")))?;
            decode(&file, &file.tensor_infos()[i], n)
        };
        let facts = config::TensorFacts {
            shapes: &shapes,
            load: &load,
        };
        let config = config::build(&file, &arch_name, &facts, vocab.as_ref())?;

        // Canonical tensors, in file order.
        let permute = config::permutes_qk(config.arch);
        let n_rot = config.rope.as_ref().map_or(0, |r| r.dim);
        let mut tensors = Vec::with_capacity(raw.len() + config.n_layer);
        let mut index = HashMap::with_capacity(raw.len() + config.n_layer);
        for (i, t) in file.tensor_infos().iter().enumerate() {
            let name = canonical_name(&t.name);
            if raw.get(name) != Some(&i) || CONFIG_TENSORS.contains(&name) {
                continue;
            }
            let shape = canonical_shape(&t.ne);
            let rest = crate::model::names::split_layer(name).map(|(_, r)| r);
            let mut add = |canon: String, shape: Vec<usize>, transform: Transform| {
                tensors.push(SourceTensor {
                    name: canon.clone(),
                    shape,
                    source_type: ggml_type_name(t.ggml_type).to_owned(),
                });
                index.insert(canon, Entry { info: i, transform });
            };
            let qk_heads = match rest {
                Some("attn_q" | "attn_q.bias") => Some(config.n_head),
                Some("attn_k" | "attn_k.bias") => Some(config.n_head_kv),
                _ => None,
            };
            if let (true, Some(n_head)) = (permute, qk_heads) {
                let hd = config.head_dim;
                if shape.first() != Some(&(n_head * hd)) || n_rot == 0 || n_rot > hd {
                    return Err(Error::corrupt(format!(
                        "GGUF: {} has shape {shape:?}, expected {n_head}×{hd} rows",
                        t.name
                    )));
                }
                add(
                    name.to_owned(),
                    shape,
                    Transform::Unpermute {
                        n_head,
                        head_dim: hd,
                        n_rot,
                    },
                );
            } else if fused_gate_up && rest == Some("ffn_up") {
                let ff = config.n_ff;
                if shape.len() != 2 || shape[0] != 2 * ff {
                    return Err(Error::corrupt(format!(
                        "GGUF: phi3 {} has shape {shape:?}, expected {} fused gate+up rows",
                        t.name,
                        2 * ff
                    )));
                }
                let layer = name.strip_suffix("ffn_up").unwrap_or(name);
                add(
                    format!("{layer}ffn_gate"),
                    vec![ff, shape[1]],
                    Transform::Rows { start: 0, len: ff },
                );
                add(
                    name.to_owned(),
                    vec![ff, shape[1]],
                    Transform::Rows { start: ff, len: ff },
                );
            } else if config::norms_plus_one(config.arch) && t.name.ends_with("norm.weight") {
                add(name.to_owned(), shape, Transform::MinusOne);
            } else {
                add(name.to_owned(), shape, Transform::None);
            }
        }

        let tokenizer = match &vocab {
            Some(v) => TokenizerData {
                tokenizer_json: v.tokenizer_json()?,
                chat_template: file
                    .get("tokenizer.chat_template")
                    .and_then(MetaValue::as_str)
                    .map(str::to_owned),
                special_tokens: [
                    ("bos", v.bos),
                    ("eos", v.eos),
                    ("unk", v.unk),
                    ("pad", v.pad),
                    ("eot", v.eot),
                ]
                .into_iter()
                .filter_map(|(role, id)| {
                    id.and_then(|i| v.text(i))
                        .map(|t| (role.to_owned(), t.to_owned()))
                })
                .collect(),
            },
            None => TokenizerData::default(),
        };
        Ok(GgufModel {
            file,
            config,
            tokenizer,
            tensors,
            index,
        })
    }

    /// All metadata, key → value (the low-level view).
    pub fn metadata(&self) -> &HashMap<String, MetaValue> {
        self.file.metadata()
    }

    /// The parsed container.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    fn entry(&self, name: &str) -> Result<Entry> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| Error::InvalidArgument(format!("GGUF has no tensor {name}")))
    }

    /// The GGUF tensor info behind canonical name `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        Ok(&self.file.tensor_infos()[self.entry(name)?.info])
    }

    /// How canonical tensor `name` is derived from its GGUF tensor.
    pub fn transform(&self, name: &str) -> Result<Transform> {
        Ok(self.entry(name)?.transform)
    }
}

/// Rows of `data` (`rows` equal rows) picked by `t`: canonical row `r` = stored row
/// `t.source_row(r)`.
fn pick_rows<T: Copy>(data: &[T], rows: usize, out_rows: usize, t: Transform) -> Result<Vec<T>> {
    if rows == 0 || !data.len().is_multiple_of(rows) {
        return Err(Error::corrupt(format!(
            "GGUF: {} elements do not split into {rows} rows",
            data.len()
        )));
    }
    let w = data.len() / rows;
    let mut out = Vec::with_capacity(out_rows * w);
    for r in 0..out_rows {
        let s = t.source_row(r);
        if s >= rows {
            return Err(Error::corrupt(format!(
                "GGUF: row {s} of a {rows}-row tensor"
            )));
        }
        out.extend_from_slice(&data[s * w..(s + 1) * w]);
    }
    Ok(out)
}

impl ModelSource for GgufModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn tokenizer(&self) -> &TokenizerData {
        &self.tokenizer
    }

    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let e = self.entry(name)?;
        let info = &self.file.tensor_infos()[e.info];
        let mut out = decode(&self.file, info, name)?;
        let rows = canonical_shape(&info.ne).first().copied().unwrap_or(1);
        match e.transform {
            Transform::None => {}
            Transform::MinusOne => out.iter_mut().for_each(|x| *x -= 1.0),
            t @ Transform::Unpermute { .. } => out = pick_rows(&out, rows, rows, t)?,
            t @ Transform::Rows { len, .. } => out = pick_rows(&out, rows, len, t)?,
        }
        Ok(out)
    }

    fn load_native(&self, name: &str) -> Result<Option<NativeTensor>> {
        use parse::ggml_type as t;
        let e = self.entry(name)?;
        let info = &self.file.tensor_infos()[e.info];
        let (qtype, block) = match info.ggml_type {
            t::F32 => (QuantType::F32, 1),
            t::F16 => (QuantType::F16, 1),
            t::BF16 => (QuantType::Bf16, 1),
            t::Q4_1 => (QuantType::Q4, 32),
            t::Q4_0 => (QuantType::Q4Sym, 32),
            t::Q8_0 => (QuantType::Q8, 32),
            // ggml: x = 2·FP4[q]·2^(e−128) = FP4[q]·2^(e−127), same byte layout as QSF's
            // Mxfp4. (They differ only for e = 255: ggml 2^127, QSF NaN; no encoder writes it.)
            t::MXFP4 => (QuantType::Mxfp4, 32),
            _ => return Ok(None),
        };
        let stored = self.file.tensor_bytes(info);
        let rows = canonical_shape(&info.ne).first().copied().unwrap_or(1);
        // Rows are whole blocks in every ggml type, so row moves keep the encoding.
        let bytes = match e.transform {
            Transform::None => stored.to_vec(),
            Transform::MinusOne if qtype == QuantType::F32 => self
                .load_f32(name)?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            Transform::MinusOne => return Ok(None),
            tr @ Transform::Unpermute { .. } => row_bytes(stored, rows, rows, tr)?,
            tr @ Transform::Rows { len, .. } => row_bytes(stored, rows, len, tr)?,
        };
        Ok(Some(NativeTensor {
            qtype,
            block,
            bytes,
        }))
    }
}

fn row_bytes(stored: &[u8], rows: usize, out_rows: usize, t: Transform) -> Result<Vec<u8>> {
    pick_rows(stored, rows, out_rows, t)
}

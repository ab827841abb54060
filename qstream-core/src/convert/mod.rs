//! Source model (GGUF file or HuggingFace folder) → QSF.
//!
//! Streams tensor by tensor from the memory-mapped source, quantizes rows in parallel on a
//! rayon pool, and writes each section as soon as it is complete, so the model is never held
//! twice. Output goes through [`QsfWriter`], which only renames the file into place on success.

pub mod calibrate;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::format::{QsfWriter, WriteTensor};
use crate::import::{open_source, ModelSource};
use crate::model::names;
use crate::quant::{self, QuantParams, QuantType};
use crate::{Error, Result};

/// Target type chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantChoice {
    /// Copy tensors whose source encoding is a QSF type bit-exactly; requantize the rest to q8.
    Keep,
    /// Quantize every weight matrix to this type.
    Type(QuantType),
    /// Mixed precision by tensor role (see [`Preset`]).
    Preset(Preset),
}

/// Mixed-precision presets, in the spirit of llama.cpp's `*_M` types: the token embedding
/// (also the output matrix when tied) and the tensors most sensitive to quantization
/// (`attn_v`, `ffn_down`, and on SmolLM2 above all `ffn_up`) get more bits than the rest.
/// Each is tuned to sit just under the whole-file size of the llama.cpp type of the same
/// name on SmolLM2-135M (whose 576-column matrices make llama.cpp fall back from k-quants
/// to 4/5/8-bit types); sizes, perplexities and the mixes tried are in docs/quality.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// embeddings/output and ffn_down q8; every other matrix q4 B=64 (≈ 6.2 bpw whole file).
    Q4M,
    /// embeddings/output q8; attn_q/k/v/output and ffn_down q4 B=32; ffn_up q4 B=64;
    /// ffn_gate q3 B=32 (≈ 5.5 bpw, just under llama.cpp's Q3_K_M file on SmolLM2).
    Q3M,
    /// embeddings/output q8; attn_v, ffn_down q4 B=32; ffn_up q4 B=64; attn_q/k/output
    /// q3 B=32; ffn_gate q2_outlier B=32 (≈ 5.2 bpw, just under llama.cpp's Q2_K file on
    /// SmolLM2).
    Q2M,
    /// `<type>+e8`: every matrix of the given type (block from `--block-size`) except the
    /// token embedding and output matrix, kept at q8 — what llama.cpp does for every
    /// k-quant (its output matrix is always ≥ Q6_K).
    EmbdQ8(QuantType),
}

impl Preset {
    /// CLI name (`q4_m`, `q3_m`, `q2_m`).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Q4M => "q4_m",
            Preset::Q3M => "q3_m",
            Preset::Q2M => "q2_m",
            Preset::EmbdQ8(_) => "+e8",
        }
    }

    /// The type recorded as the file's dominant type (the preset's lowest-bit type).
    pub fn base(self) -> (QuantType, usize) {
        match self {
            Preset::Q4M => (QuantType::Q4, 64),
            Preset::Q3M => (QuantType::Q3, 32),
            Preset::Q2M => (QuantType::Q2Outlier, 32),
            Preset::EmbdQ8(t) => (t, t.default_block()),
        }
    }

    /// Type and block for the matrix `name` (canonical GGUF-style name).
    pub fn plan(self, name: &str) -> (QuantType, usize) {
        if name == names::TOKEN_EMBD || name == names::OUTPUT {
            return (QuantType::Q8, 32);
        }
        let local = names::split_layer(name).map_or(name, |(_, rest)| rest);
        let (v, down) = (local == names::ATTN_V, local == names::FFN_DOWN);
        let attn = matches!(local, names::ATTN_Q | names::ATTN_K | names::ATTN_OUT);
        match self {
            Preset::Q4M if down => (QuantType::Q8, 32),
            Preset::Q4M => (QuantType::Q4, 64),
            Preset::Q3M | Preset::Q2M if v || down => (QuantType::Q4, 32),
            Preset::Q3M | Preset::Q2M if local == names::FFN_UP => (QuantType::Q4, 64),
            Preset::Q3M if attn => (QuantType::Q4, 32),
            Preset::Q2M if attn => (QuantType::Q3, 32),
            Preset::EmbdQ8(t) => (t, t.default_block()),
            p => p.base(),
        }
    }
}

impl QuantChoice {
    /// Parse a CLI name: `keep, f32, f16, bf16, 8bit, 4bit, 4bit_sym, 3bit, 2bit,
    /// 2bit_outlier, 3bit_outlier, 4bit_outlier, mxfp4` (QSF type names like `q4` also work).
    pub fn parse(s: &str) -> Result<Self> {
        let t = match s {
            "keep" => return Ok(QuantChoice::Keep),
            "q4_m" => return Ok(QuantChoice::Preset(Preset::Q4M)),
            "q3_m" => return Ok(QuantChoice::Preset(Preset::Q3M)),
            "q2_m" => return Ok(QuantChoice::Preset(Preset::Q2M)),
            s if s.ends_with("+e8") => {
                return match Self::parse(&s[..s.len() - 3])? {
                    QuantChoice::Type(t) if !t.is_float() => {
                        Ok(QuantChoice::Preset(Preset::EmbdQ8(t)))
                    }
                    _ => Err(Error::InvalidArgument(format!(
                        "{s}: +e8 needs a quantized type"
                    ))),
                };
            }
            "8bit" => QuantType::Q8,
            "4bit" => QuantType::Q4,
            "4bit_sym" => QuantType::Q4Sym,
            "3bit" => QuantType::Q3,
            "2bit" => QuantType::Q2,
            "2bit_outlier" => QuantType::Q2Outlier,
            "3bit_outlier" => QuantType::Q3Outlier,
            "4bit_outlier" => QuantType::Q4Outlier,
            other => QuantType::from_name(other).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown quant type {other:?} (expected one of: {})",
                    Self::NAMES.join(", ")
                ))
            })?,
        };
        Ok(QuantChoice::Type(t))
    }

    /// The names [`QuantChoice::parse`] accepts.
    pub const NAMES: [&'static str; 16] = [
        "keep",
        "f32",
        "f16",
        "bf16",
        "8bit",
        "4bit",
        "4bit_sym",
        "3bit",
        "2bit",
        "2bit_outlier",
        "3bit_outlier",
        "4bit_outlier",
        "mxfp4",
        "q4_m",
        "q3_m",
        "q2_m",
    ];
}

/// Conversion options.
#[derive(Debug, Clone)]
pub struct ConvertParams {
    pub quant: QuantChoice,
    /// block size for q2/q3/q4/q4_sym (32, 64, 128, 256)
    pub block_size: usize,
    /// fraction of weights kept as FP16 by the outlier types
    pub outlier_frac: f32,
    /// LZ4-compress layers
    pub compress: bool,
    /// worker threads (0 = all cores)
    pub n_threads: usize,
    /// Incoherence rotation (`quant::rotate`) of the quantized matrices below 8 bits:
    /// 0 = off, else the largest group size (each matrix uses the largest power of two
    /// dividing its columns, at most this; matrices with odd columns are not rotated).
    pub rotate: usize,
    /// Per-role overrides (`--tensor-type ROLE=TYPE[:BLOCK]`), applied to weight matrices
    /// before the preset/type: `ROLE` is a tensor's in-layer name (`attn_v`, `ffn_down`, …)
    /// or a global name (`token_embd`, `output`, `blk.3.ffn_up`).
    pub tensor_types: Vec<(String, QuantType, usize)>,
    /// GPTQ error feedback (`quant::gptq`) for the q2/q3/q4/q4_sym matrices (and their
    /// outlier variants) that have input statistics ([`calibrate::Imatrix::hessians`]);
    /// others are quantized as usual. Needs the Hessians; not combinable with `rotate`.
    pub gptq: bool,
    /// With `gptq`: sweep the columns in decreasing order of input energy (`diag H`), with
    /// block parameters fixed before the sweep ("act-order" with static groups).
    pub gptq_act_order: bool,
    /// How the outlier types' budget (`outlier_frac` of their weights) is spread over
    /// their tensors.
    pub outlier_alloc: OutlierAlloc,
}

impl ConvertParams {
    /// Check the settings — the one rule set the CLI, the C API and the Python package all
    /// apply (every conversion calls it before opening the source): `outlier_frac` finite
    /// in [0, 0.5); `block_size` 32, 64, 128 or 256; `rotate` 0 or a power of two ≥ 2;
    /// every `tensor_types` entry a non-empty role with a block valid for its type;
    /// `gptq_act_order` only with `gptq`; `gptq` not with `rotate`.
    /// [`Error::InvalidArgument`] names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if !(0.0..0.5).contains(&self.outlier_frac) {
            return bad(format!(
                "outlier fraction {} not in [0, 0.5)",
                self.outlier_frac
            ));
        }
        if !matches!(self.block_size, 32 | 64 | 128 | 256) {
            return bad(format!(
                "block size {} (expected 32, 64, 128 or 256)",
                self.block_size
            ));
        }
        if self.rotate != 0 && (self.rotate < 2 || !self.rotate.is_power_of_two()) {
            return bad(format!(
                "rotation group {}: must be 0 (off) or a power of two ≥ 2",
                self.rotate
            ));
        }
        for (role, t, block) in &self.tensor_types {
            if role.is_empty() {
                return bad("tensor type override with an empty role".into());
            }
            if !t.valid_block(*block) {
                return bad(format!(
                    "tensor type override {role}={t}:{block}: block {block} is not valid for {t}"
                ));
            }
        }
        if self.gptq_act_order && !self.gptq {
            return bad("GPTQ act-order (--gptq-act-order) needs GPTQ (--gptq)".into());
        }
        if self.gptq && self.rotate != 0 {
            return bad(
                "GPTQ (--gptq) cannot be combined with --rotate: the collected input \
                 statistics are of the unrotated inputs"
                    .into(),
            );
        }
        Ok(())
    }
}

/// How the outlier types' budget is spread over their tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutlierAlloc {
    /// `ceil(outlier_frac · numel)` outliers in every tensor.
    PerTensor,
    /// The same total, placed where the selection's error model gains most over all
    /// outlier tensors (`quant::outlier::allocate`; a tensor takes at most [`MAX_SHARE`]×
    /// its own count). Same file size; measured better than `PerTensor` in
    /// docs/quality.md.
    #[default]
    Global,
}

impl OutlierAlloc {
    /// Parse `tensor` or `global`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "tensor" => Ok(OutlierAlloc::PerTensor),
            "global" => Ok(OutlierAlloc::Global),
            _ => Err(Error::InvalidArgument(format!(
                "outlier allocation '{s}' (expected tensor or global)"
            ))),
        }
    }
}

/// Most outliers one tensor takes under [`OutlierAlloc::Global`], as a multiple of its own
/// count (also bounds the gains kept in memory to this many per outlier).
pub const MAX_SHARE: usize = 8;

impl Default for ConvertParams {
    fn default() -> Self {
        ConvertParams {
            quant: QuantChoice::Type(QuantType::Q4),
            block_size: 32,
            outlier_frac: 0.005,
            compress: false,
            n_threads: 0,
            rotate: 0,
            tensor_types: Vec::new(),
            gptq: false,
            gptq_act_order: false,
            outlier_alloc: OutlierAlloc::Global,
        }
    }
}

/// Progress report passed to the callback after each tensor.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub tensor: &'a str,
}

/// What a conversion did.
#[derive(Debug, Clone, Default)]
pub struct ConvertReport {
    pub n_params: u64,
    pub file_bytes: u64,
    /// whole-file bits per parameter
    pub bits_per_weight: f64,
    pub seconds: f64,
    /// tensors copied bit-exactly from the source
    pub n_copied: usize,
    /// (tensor, source type, QSF type) for tensors decoded and re-encoded
    pub requantized: Vec<(String, String, QuantType)>,
    /// count of tensors per QSF type
    pub types: BTreeMap<String, usize>,
}

/// Convert `src` (GGUF file or HF folder) to the QSF file `dst`.
/// `progress` returns `false` to cancel (the partial output is removed).
pub fn convert(
    src: &Path,
    dst: &Path,
    params: &ConvertParams,
    progress: &mut dyn FnMut(&Progress<'_>) -> bool,
) -> Result<ConvertReport> {
    params.validate()?;
    let source = open_source(src)?;
    convert_source(source.as_ref(), dst, params, progress)
}

/// [`convert`] with activation statistics (see [`calibrate`]) weighting each matrix's
/// quantization error by its per-column mean squared input.
pub fn convert_with_imatrix(
    src: &Path,
    dst: &Path,
    params: &ConvertParams,
    imatrix: Option<&calibrate::Imatrix>,
    progress: &mut dyn FnMut(&Progress<'_>) -> bool,
) -> Result<ConvertReport> {
    params.validate()?;
    let source = open_source(src)?;
    convert_source_with_imatrix(source.as_ref(), dst, params, imatrix, progress)
}

fn is_matrix(name: &str, shape: &[usize]) -> bool {
    shape.len() >= 2 && !name.ends_with(".bias") && !name.contains("norm")
}

/// Target type and block for one tensor.
fn plan(params: &ConvertParams, name: &str, shape: &[usize]) -> Option<(QuantType, usize)> {
    // 1-D tensors (norms, biases, sinks) are stored as f32: tiny and exact.
    if !is_matrix(name, shape) {
        return Some((QuantType::F32, 1));
    }
    let local = names::split_layer(name).map_or(name, |(_, rest)| rest);
    if let Some((_, t, b)) = params
        .tensor_types
        .iter()
        .find(|(role, _, _)| role == name || role == local)
    {
        return Some((*t, *b));
    }
    match params.quant {
        QuantChoice::Keep => None,
        QuantChoice::Preset(Preset::EmbdQ8(t))
            if name != names::TOKEN_EMBD && name != names::OUTPUT =>
        {
            plan(
                &ConvertParams {
                    quant: QuantChoice::Type(t),
                    ..params.clone()
                },
                name,
                shape,
            )
        }
        QuantChoice::Preset(p) => Some(p.plan(name)),
        QuantChoice::Type(t) => {
            let block = if t.is_float() {
                1
            } else if matches!(t, QuantType::Q8 | QuantType::Mxfp4) {
                32
            } else {
                params.block_size
            };
            Some((t, block))
        }
    }
}

/// The rotation group for a matrix quantized to `qt` (0 = not rotated): only types below
/// 8 bits gain from it.
fn rotation_for(params: &ConvertParams, name: &str, shape: &[usize], qt: QuantType) -> usize {
    if params.rotate == 0 || !is_matrix(name, shape) || qt.is_float() || matches!(qt, QuantType::Q8)
    {
        return 0;
    }
    quant::rotate::group_for(*shape.last().unwrap_or(&0), params.rotate).unwrap_or(0)
}

/// The per-column importance a matrix is quantized with (`None`: unweighted).
fn importance_for(
    imatrix: Option<&calibrate::Imatrix>,
    name: &str,
    shape: &[usize],
    rotation: usize,
) -> Option<Vec<f32>> {
    let cols = *shape.last().unwrap_or(&1);
    match (is_matrix(name, shape), rotation) {
        (false, _) => None,
        (true, 0) => imatrix.and_then(|im| im.importance(name, cols)),
        (true, g) => imatrix.and_then(|im| im.rotated_importance(name, cols, g)),
    }
}

/// A tensor's source values as they are quantized (rotated when `rotation` ≠ 0).
fn load_for_quant(
    source: &dyn ModelSource,
    name: &str,
    numel: usize,
    cols: usize,
    shape: &[usize],
    rotation: usize,
) -> Result<Vec<f32>> {
    let mut data = source.load_f32(name)?;
    if data.len() != numel {
        return Err(Error::corrupt(format!(
            "{name}: {} values for shape {shape:?}",
            data.len()
        )));
    }
    if rotation != 0 {
        data.par_chunks_mut(cols)
            .for_each(|row| quant::rotate::rotate(row, rotation));
    }
    Ok(data)
}

/// Outlier counts per tensor under [`OutlierAlloc::Global`]; empty for `PerTensor` or
/// fewer than two outlier tensors (each then takes `ceil(outlier_frac · numel)`).
fn outlier_budget(
    source: &dyn ModelSource,
    params: &ConvertParams,
    imatrix: Option<&calibrate::Imatrix>,
) -> Result<HashMap<String, usize>> {
    if params.outlier_alloc == OutlierAlloc::PerTensor {
        return Ok(HashMap::new());
    }
    let frac = params.outlier_frac;
    let cands: Vec<(&str, &[usize], QuantType, usize)> = source
        .tensors()
        .iter()
        .filter_map(|t| {
            let (qt, block) = plan(params, &t.name, &t.shape)?;
            qt.is_outlier()
                .then_some((t.name.as_str(), t.shape.as_slice(), qt, block))
        })
        .collect();
    if cands.len() < 2 {
        return Ok(HashMap::new());
    }
    let (mut gains, mut own) = (Vec::new(), Vec::new());
    for &(name, shape, qt, block) in &cands {
        let numel: usize = shape.iter().product();
        let cols = *shape.last().unwrap_or(&1);
        let rotation = rotation_for(params, name, shape, qt);
        let data = load_for_quant(source, name, numel, cols, shape, rotation)?;
        let imp = importance_for(imatrix, name, shape, rotation);
        let k = quant::outlier::count_for(frac, numel);
        gains.push(quant::outlier::selection_gains(
            &data,
            cols,
            block,
            imp.as_deref(),
            frac,
            k.saturating_mul(MAX_SHARE),
        ));
        own.push(k);
    }
    let counts = quant::outlier::allocate(&gains, &own);
    Ok(cands
        .iter()
        .zip(counts)
        .map(|(&(name, ..), c)| (name.to_string(), c))
        .collect())
}

struct Encoded {
    tensor: WriteTensor,
    copied: bool,
    requant_from: Option<String>,
    numel: usize,
}

fn encode(
    source: &dyn ModelSource,
    params: &ConvertParams,
    imatrix: Option<&calibrate::Imatrix>,
    budget: &HashMap<String, usize>,
    name: &str,
    shape: &[usize],
    src_type: &str,
) -> Result<Encoded> {
    let numel: usize = shape.iter().product();
    let rows = if shape.len() >= 2 {
        numel / shape[shape.len() - 1]
    } else {
        1
    };
    let cols = *shape.last().unwrap_or(&1);
    let local = names::split_layer(name)
        .map_or(name, |(_, rest)| rest)
        .to_string();
    let target = plan(params, name, shape);
    if target.is_none() || target.is_some_and(|(t, _)| t.is_float() && t != QuantType::F32) {
        // keep (or a float target): a native copy when the source type matches
        if let Some(native) = source.load_native(name)? {
            let wanted = target.map(|(t, _)| t);
            if wanted.is_none() || wanted == Some(native.qtype) {
                return Ok(Encoded {
                    tensor: WriteTensor {
                        name: local,
                        qtype: native.qtype,
                        block: native.block,
                        shape: shape.to_vec(),
                        data: native.bytes,
                        rotation: 0,
                    },
                    copied: true,
                    requant_from: None,
                    numel,
                });
            }
        }
    }
    let (qt, block) = target.unwrap_or((QuantType::Q8, 32));
    let rotation = rotation_for(params, name, shape, qt);
    let importance = importance_for(imatrix, name, shape, rotation);
    let importance = importance.as_deref();
    let outlier_count = budget.get(name).copied();
    let hessian = match imatrix {
        Some(im)
            if params.gptq
                && is_matrix(name, shape)
                && name != names::TOKEN_EMBD
                && quant::gptq::supports(qt) =>
        {
            im.hessians.get(name).filter(|h| h.cols == cols)
        }
        _ => None,
    };
    let data = load_for_quant(source, name, numel, cols, shape, rotation)?;
    let bytes = if let Some(h) = hessian {
        let qp = QuantParams {
            outlier_count,
            block_size: block,
            outlier_frac: params.outlier_frac,
            importance,
        };
        let f = h.factor(params.gptq_act_order)?;
        quant::gptq::quantize_tensor(qt, &data, rows, cols, &qp, &f)?
    } else if qt.is_outlier() {
        quant::quantize(
            qt,
            &data,
            rows,
            cols,
            &QuantParams {
                outlier_count,
                block_size: block,
                outlier_frac: params.outlier_frac,
                importance,
            },
        )?
    } else {
        if !qt.valid_block(block) {
            return Err(Error::InvalidArgument(format!(
                "block size {block} is not valid for {qt}"
            )));
        }
        let rb = qt.row_bytes(block, cols);
        let mut out = vec![0u8; rb * rows];
        // rows in parallel, in chunks big enough to amortise scheduling
        let chunk_rows = (16384 / cols.max(1)).max(1);
        out.par_chunks_mut(rb * chunk_rows)
            .zip(data.par_chunks(cols * chunk_rows))
            .for_each(|(dst, src)| {
                for (d, s) in dst.chunks_exact_mut(rb).zip(src.chunks_exact(cols)) {
                    quant::quantize_row(qt, block, s, importance, d);
                }
            });
        out
    };
    let native_same = matches!(params.quant, QuantChoice::Keep) && is_matrix(name, shape);
    Ok(Encoded {
        tensor: WriteTensor {
            name: local,
            qtype: qt,
            block,
            shape: shape.to_vec(),
            data: bytes,
            rotation,
        },
        copied: false,
        requant_from: native_same.then(|| src_type.to_string()),
        numel,
    })
}

/// Convert an opened source. See [`convert`].
pub fn convert_source(
    source: &dyn ModelSource,
    dst: &Path,
    params: &ConvertParams,
    progress: &mut dyn FnMut(&Progress<'_>) -> bool,
) -> Result<ConvertReport> {
    convert_source_with_imatrix(source, dst, params, None, progress)
}

/// [`convert_source`] with optional activation statistics (see [`convert_with_imatrix`]).
pub fn convert_source_with_imatrix(
    source: &dyn ModelSource,
    dst: &Path,
    params: &ConvertParams,
    imatrix: Option<&calibrate::Imatrix>,
    progress: &mut dyn FnMut(&Progress<'_>) -> bool,
) -> Result<ConvertReport> {
    let start = Instant::now();
    params.validate()?;
    if params.gptq && imatrix.is_none_or(|im| im.hessians.is_empty()) {
        return Err(Error::InvalidArgument(
            "GPTQ (--gptq) needs input second moments: calibrate with hessians \
             (`--calibrate TEXT --gptq`, or `--hessian FILE`)"
                .into(),
        ));
    }
    let config = source.config().clone();
    config.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(params.n_threads)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;

    // group tensors by section
    let mut embedding = Vec::new();
    let mut final_ = Vec::new();
    let mut layers: Vec<Vec<&crate::import::SourceTensor>> = vec![Vec::new(); config.n_layer];
    for t in source.tensors() {
        match names::split_layer(&t.name) {
            Some((i, _)) if i < config.n_layer => layers[i].push(t),
            Some((i, _)) => {
                return Err(Error::corrupt(format!(
                    "tensor {} is in layer {i} of {}",
                    t.name, config.n_layer
                )))
            }
            None if t.name == names::TOKEN_EMBD || t.name == names::POS_EMBD => embedding.push(t),
            None => final_.push(t),
        }
    }
    if embedding.iter().all(|t| t.name != names::TOKEN_EMBD) {
        return Err(Error::corrupt("source has no token embedding"));
    }
    let total = source.tensors().len();
    let (dom, dom_block) = match params.quant {
        QuantChoice::Keep => (QuantType::Q8, 32),
        QuantChoice::Preset(Preset::EmbdQ8(t)) => (
            t,
            if matches!(t, QuantType::Q8 | QuantType::Mxfp4) {
                32
            } else {
                params.block_size
            },
        ),
        QuantChoice::Preset(p) => p.base(),
        QuantChoice::Type(t) => (t, if t.is_float() { 1 } else { params.block_size }),
    };
    let budget = pool.install(|| outlier_budget(source, params, imatrix))?;
    let mut writer = QsfWriter::create(dst, &config, dom, dom_block)?;
    let mut report = ConvertReport::default();
    let mut done = 0usize;

    let run_group = |group: &[&crate::import::SourceTensor],
                     report: &mut ConvertReport,
                     done: &mut usize,
                     progress: &mut dyn FnMut(&Progress<'_>) -> bool|
     -> Result<Vec<WriteTensor>> {
        let encoded: Vec<Result<Encoded>> = pool.install(|| {
            group
                .par_iter()
                .map(|t| {
                    encode(
                        source,
                        params,
                        imatrix,
                        &budget,
                        &t.name,
                        &t.shape,
                        &t.source_type,
                    )
                })
                .collect()
        });
        let mut out = Vec::with_capacity(encoded.len());
        for (e, t) in encoded.into_iter().zip(group) {
            let e = e?;
            report.n_params += e.numel as u64;
            if e.copied {
                report.n_copied += 1;
            }
            if let Some(from) = e.requant_from {
                report
                    .requantized
                    .push((t.name.clone(), from, e.tensor.qtype));
            }
            *report
                .types
                .entry(e.tensor.qtype.name().to_string())
                .or_default() += 1;
            *done += 1;
            if !progress(&Progress {
                done: *done,
                total,
                tensor: &t.name,
            }) {
                return Err(Error::Cancelled);
            }
            out.push(e.tensor);
        }
        Ok(out)
    };

    let emb = run_group(&embedding, &mut report, &mut done, progress)?;
    writer.write_embedding(&emb)?;
    drop(emb);
    writer.write_tokenizer(source.tokenizer(), config.n_vocab)?;
    for (i, group) in layers.iter().enumerate() {
        let ts = run_group(group, &mut report, &mut done, progress)?;
        writer.write_layer(i, &ts, params.compress)?;
    }
    let fin = run_group(&final_, &mut report, &mut done, progress)?;
    writer.write_final(&fin)?;
    writer.set_num_params(report.n_params);
    report.file_bytes = writer.finish()?;
    report.bits_per_weight = report.file_bytes as f64 * 8.0 / report.n_params.max(1) as f64;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod preset_tests {
    use super::*;

    #[test]
    fn presets_parse_and_plan_by_role() {
        let p = |q: &str, block: usize| ConvertParams {
            quant: QuantChoice::parse(q).unwrap(),
            block_size: block,
            ..Default::default()
        };
        let m = [576usize, 1536];
        let q4m = p("q4_m", 32);
        assert_eq!(plan(&q4m, "token_embd", &m), Some((QuantType::Q8, 32)));
        assert_eq!(plan(&q4m, "blk.3.ffn_down", &m), Some((QuantType::Q8, 32)));
        assert_eq!(plan(&q4m, "blk.3.attn_v", &m), Some((QuantType::Q4, 64)));
        assert_eq!(plan(&q4m, "blk.3.attn_q", &m), Some((QuantType::Q4, 64)));
        assert_eq!(
            plan(&q4m, "blk.3.attn_norm", &[576]),
            Some((QuantType::F32, 1))
        );
        let q3m = p("q3_m", 32);
        assert_eq!(plan(&q3m, "blk.0.attn_v", &m), Some((QuantType::Q4, 32)));
        assert_eq!(
            plan(&q3m, "blk.0.attn_output", &m),
            Some((QuantType::Q4, 32))
        );
        assert_eq!(plan(&q3m, "blk.0.ffn_gate", &m), Some((QuantType::Q3, 32)));
        assert_eq!(plan(&q3m, "blk.0.ffn_up", &m), Some((QuantType::Q4, 64)));
        let q2m = p("q2_m", 32);
        assert_eq!(
            plan(&q2m, "blk.0.ffn_gate", &m),
            Some((QuantType::Q2Outlier, 32))
        );
        assert_eq!(plan(&q2m, "blk.0.ffn_up", &m), Some((QuantType::Q4, 64)));
        assert_eq!(plan(&q2m, "blk.0.attn_k", &m), Some((QuantType::Q3, 32)));
        assert_eq!(plan(&q2m, "blk.0.attn_v", &m), Some((QuantType::Q4, 32)));
        assert_eq!(plan(&q2m, "blk.0.ffn_down", &m), Some((QuantType::Q4, 32)));
        assert_eq!(plan(&q2m, "output", &m), Some((QuantType::Q8, 32)));
        // --tensor-type overrides by role or by global name
        let mut o = p("q2_m", 32);
        o.tensor_types = vec![
            ("ffn_up".into(), QuantType::Q3, 32),
            ("blk.1.attn_q".into(), QuantType::Q8, 32),
        ];
        assert_eq!(plan(&o, "blk.5.ffn_up", &m), Some((QuantType::Q3, 32)));
        assert_eq!(plan(&o, "blk.1.attn_q", &m), Some((QuantType::Q8, 32)));
        assert_eq!(plan(&o, "blk.2.attn_q", &m), Some((QuantType::Q3, 32)));
        assert_eq!(
            plan(&o, "blk.2.attn_norm", &[576]),
            Some((QuantType::F32, 1))
        );
        let e8 = p("3bit+e8", 64);
        assert_eq!(plan(&e8, "output", &m), Some((QuantType::Q8, 32)));
        assert_eq!(plan(&e8, "token_embd", &m), Some((QuantType::Q8, 32)));
        assert_eq!(plan(&e8, "blk.1.ffn_gate", &m), Some((QuantType::Q3, 64)));
        assert!(QuantChoice::parse("f16+e8").is_err());
        assert!(QuantChoice::parse("bogus+e8").is_err());
    }
}

//! HuggingFace model folders: `config.json` + `model.safetensors` (or a sharded
//! `model.safetensors.index.json`) + tokenizer files, read as a [`ModelSource`].
//!
//! Every safetensors file is memory-mapped and its header validated once with the
//! `safetensors` crate at [`HfModel::open`]; tensors are decoded lazily, one at a time, in
//! [`ModelSource::load_f32`] / [`ModelSource::load_native`], so the model is never held twice.
//!
//! Submodules: [`config`] (config.json → `ModelConfig`), [`names`] (HF → canonical names and
//! how fused/expert tensors are split or stacked), [`dequant`] (fp8 / AWQ / MXFP4 decoders).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::import::{ModelSource, NativeTensor, SourceTensor, TokenizerData};
use crate::model::config::{Arch, ModelConfig};
use crate::quant::QuantType;
use crate::{Error, Result};

pub mod config;
pub mod dequant;
pub mod names;

use dequant::ElemType;
use names::RowSel;

/// One tensor inside one mapped safetensors file.
#[derive(Debug, Clone)]
struct RawTensor {
    file: usize,
    dtype: ElemType,
    shape: Vec<usize>,
    /// absolute byte range in the mapped file
    start: usize,
    end: usize,
}

/// A logical HF tensor: one safetensors tensor, or the pieces of one quantized weight.
#[derive(Debug, Clone)]
enum Logical {
    Float {
        hf: String,
    },
    Fp8 {
        weight: String,
        scale: String,
    },
    Awq {
        qweight: String,
        qzeros: String,
        scales: String,
    },
    Mxfp4 {
        blocks: String,
        scales: String,
    },
}

/// One piece of a canonical tensor.
#[derive(Debug, Clone)]
struct Part {
    logical: String,
    expert: Option<usize>,
    transpose: bool,
    rows: RowSel,
}

/// How to build one canonical tensor.
#[derive(Debug, Clone)]
struct Recipe {
    parts: Vec<Part>,
    shape: Vec<usize>,
}

struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

/// A HuggingFace model folder opened for import.
pub struct HfModel {
    dir: PathBuf,
    files: Vec<MappedFile>,
    raw: HashMap<String, RawTensor>,
    logical: HashMap<String, (Logical, Vec<usize>)>,
    recipes: HashMap<String, Recipe>,
    tensors: Vec<SourceTensor>,
    config: ModelConfig,
    tokenizer: TokenizerData,
    fp8_block: (usize, usize),
    awq_group: Option<usize>,
}

impl std::fmt::Debug for HfModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfModel")
            .field("dir", &self.dir)
            .field("arch", &self.config.arch)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::corrupt(format!("{}: invalid JSON: {e}", path.display())))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Error::corrupt(format!(
            "{}: expected a JSON object",
            path.display()
        ))),
    }
}

fn read_optional_json(path: &Path) -> Result<Option<Map<String, Value>>> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The text of a special-token entry in tokenizer_config.json (string or `{content: ...}`).
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// Add the tensor name to a decode error's message, keeping its kind.
fn ctx(name: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Corrupt(m) => Error::Corrupt(format!("tensor {name}: {m}")),
        Error::UnsupportedQuant(m) => Error::UnsupportedQuant(format!("tensor {name}: {m}")),
        other => other,
    }
}

fn product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

impl HfModel {
    /// Open the HuggingFace folder `dir`: parse the configs and tokenizer files, map the
    /// safetensors file(s), validate every header and check tensor shapes against the config.
    pub fn open(dir: &Path) -> Result<HfModel> {
        if !dir.is_dir() {
            return Err(Error::NotFound {
                path: dir.to_path_buf(),
            });
        }
        let cfg = read_json(&dir.join("config.json"))?;
        let model_type = match cfg.get("model_type") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(Error::corrupt(format!(
                    "config.json: field `model_type` must be a string, found {v}"
                )))
            }
            None => return Err(Error::corrupt("config.json: missing field `model_type`")),
        };
        let arch = Arch::from_name(&model_type)
            .ok_or_else(|| Error::UnsupportedArch(model_type.clone()))?;
        let gen = read_optional_json(&dir.join("generation_config.json"))?;
        let mut config = config::model_config(arch, &model_type, &cfg, gen.as_ref())?;

        // Quantization settings.
        let q = cfg.get("quantization_config").and_then(|v| v.as_object());
        let mut fp8_block = (128, 128);
        let mut awq_group = None;
        if let Some(q) = q {
            let j = config::Json {
                file: "config.json (quantization_config)",
                map: q,
            };
            if let Some(Value::Array(b)) = q.get("weight_block_size") {
                let v: Vec<usize> = b
                    .iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as usize)
                    .collect();
                if v.len() != 2 || v.contains(&0) {
                    return Err(Error::corrupt(format!(
                        "config.json: quantization_config.weight_block_size must be two positive integers, found {b:?}"
                    )));
                }
                fp8_block = (v[0], v[1]);
            }
            awq_group = j.opt_usize(&["group_size", "q_group_size"])?;
            if let Some(m) = j.opt_str(&["quant_method"])? {
                if !matches!(m, "fp8" | "awq" | "mxfp4") {
                    return Err(Error::UnsupportedQuant(format!(
                        "quantization method `{m}` (supported: fp8, awq, mxfp4)"
                    )));
                }
            }
        }

        let tokenizer = Self::read_tokenizer(dir, &mut config)?;

        // Weights.
        let files = Self::weight_files(dir)?;
        let mut mapped = Vec::with_capacity(files.len());
        let mut raw = HashMap::new();
        for (fi, path) in files.iter().enumerate() {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the file is mapped read-only; QStream never writes to it, and the
            // documented contract (as for every mmap-based loader) is that model files are
            // not modified while a model is open.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            let (n, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
                Error::corrupt(format!(
                    "{}: invalid safetensors file: {e:?}",
                    path.display()
                ))
            })?;
            let base = 8 + n;
            for (name, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                let rt = RawTensor {
                    file: fi,
                    dtype: dequant::elem_type(info.dtype),
                    shape: info.shape.clone(),
                    start: base + s,
                    end: base + e,
                };
                if rt.end > map.len() {
                    return Err(Error::corrupt(format!(
                        "{}: tensor {name} extends past the end of the file",
                        path.display()
                    )));
                }
                if raw.insert(name.clone(), rt).is_some() {
                    return Err(Error::corrupt(format!(
                        "tensor {name} appears in more than one safetensors file"
                    )));
                }
            }
            mapped.push(MappedFile {
                path: path.clone(),
                map,
            });
        }

        let logical = Self::group_logical(&raw)?;
        let (recipes, tensors) = Self::build_recipes(arch, &logical)?;

        // Tied embeddings: no output head in the file means the head is the embedding.
        if !recipes.contains_key("output") {
            config.tie_embeddings = true;
        }
        let has = |n: &str| recipes.contains_key(n);
        config.qkv_bias = has("blk.0.attn_q.bias") || has("blk.0.attn_qkv.bias");
        config.qk_norm = config.qk_norm || has("blk.0.attn_q_norm");

        let mut model = HfModel {
            dir: dir.to_path_buf(),
            files: mapped,
            raw,
            logical,
            recipes,
            tensors,
            config,
            tokenizer,
            fp8_block,
            awq_group,
        };
        model.finish_listing();
        model.config.validate()?;
        model.check_shapes()?;
        Ok(model)
    }

    /// The folder this model was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
        let single = dir.join("model.safetensors");
        if single.exists() {
            return Ok(vec![single]);
        }
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let idx = read_json(&index)?;
            let wm = idx
                .get("weight_map")
                .and_then(|v| v.as_object())
                .ok_or_else(|| {
                    Error::corrupt(format!("{}: missing object `weight_map`", index.display()))
                })?;
            let mut files: Vec<String> = Vec::new();
            for (t, f) in wm {
                let f = f.as_str().ok_or_else(|| {
                    Error::corrupt(format!(
                        "{}: weight_map[{t}] is not a file name",
                        index.display()
                    ))
                })?;
                if f.contains('/') || f.contains('\\') || f.contains("..") {
                    return Err(Error::corrupt(format!(
                        "{}: shard name `{f}` is not a plain file name",
                        index.display()
                    )));
                }
                if !files.iter().any(|x| x == f) {
                    files.push(f.to_string());
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(Error::corrupt(format!(
                    "{}: empty weight_map",
                    index.display()
                )));
            }
            return Ok(files.into_iter().map(|f| dir.join(f)).collect());
        }
        Err(Error::NotFound { path: single })
    }

    fn read_tokenizer(dir: &Path, config: &mut ModelConfig) -> Result<TokenizerData> {
        let tj_path = dir.join("tokenizer.json");
        let tokenizer_json =
            std::fs::read_to_string(&tj_path).map_err(|e| Error::io(&tj_path, e))?;
        let tc = read_optional_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let jinja = dir.join("chat_template.jinja");
        let chat_template = if jinja.exists() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?)
        } else {
            match tc.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(list)) => {
                    // [{name, template}, ...]: take "default", else the first.
                    let pick = |want: Option<&str>| {
                        list.iter().find_map(|e| {
                            let name = e.get("name").and_then(|n| n.as_str());
                            let t = e.get("template").and_then(|t| t.as_str())?;
                            (want.is_none() || name == want).then(|| t.to_string())
                        })
                    };
                    pick(Some("default")).or_else(|| pick(None))
                }
                _ => None,
            }
        };
        let mut special_tokens = Vec::new();
        for role in ["bos", "eos", "pad", "unk"] {
            if let Some(t) = tc.get(&format!("{role}_token")).and_then(token_text) {
                special_tokens.push((role.to_string(), t));
            }
        }
        // add_bos: tokenizer_config says so, or tokenizer.json's post-processor prepends BOS.
        config.add_bos = match tc.get("add_bos_token").and_then(|v| v.as_bool()) {
            Some(b) => b,
            None => {
                let bos = special_tokens
                    .iter()
                    .find(|(r, _)| r == "bos")
                    .map(|(_, t)| t.clone());
                let tj: Value = serde_json::from_str(&tokenizer_json).map_err(|e| {
                    Error::corrupt(format!("{}: invalid JSON: {e}", tj_path.display()))
                })?;
                let first = tj
                    .pointer("/post_processor/single/0/SpecialToken/id")
                    .and_then(|v| v.as_str());
                matches!((first, bos), (Some(f), Some(b)) if f == b)
            }
        };
        Ok(TokenizerData {
            tokenizer_json,
            chat_template,
            special_tokens,
        })
    }

    /// Group raw safetensors tensors into logical tensors (quantized pieces together).
    fn group_logical(
        raw: &HashMap<String, RawTensor>,
    ) -> Result<HashMap<String, (Logical, Vec<usize>)>> {
        let mut out = HashMap::new();
        let mut names: Vec<&String> = raw.keys().collect();
        names.sort();
        for name in names {
            let t = &raw[name];
            if let Some(p) = name.strip_suffix(".qweight") {
                let (qz, sc) = (format!("{p}.qzeros"), format!("{p}.scales"));
                let (Some(z), Some(s)) = (raw.get(&qz), raw.get(&sc)) else {
                    return Err(Error::corrupt(format!(
                        "AWQ tensor {name} without {qz} / {sc}"
                    )));
                };
                if t.dtype != ElemType::I32
                    || z.dtype != ElemType::I32
                    || t.shape.len() != 2
                    || z.shape.len() != 2
                    || s.shape.len() != 2
                {
                    return Err(Error::corrupt(format!(
                        "AWQ tensor {p}: expected int32 qweight/qzeros and 2-D scales"
                    )));
                }
                let shape = vec![t.shape[1] * 8, t.shape[0]];
                out.insert(
                    format!("{p}.weight"),
                    (
                        Logical::Awq {
                            qweight: name.clone(),
                            qzeros: qz,
                            scales: sc,
                        },
                        shape,
                    ),
                );
                continue;
            }
            if let Some(p) = name
                .strip_suffix(".qzeros")
                .or_else(|| name.strip_suffix(".scales"))
            {
                if raw.contains_key(&format!("{p}.qweight")) {
                    continue;
                }
            }
            if let Some(p) = name.strip_suffix(".weight_scale_inv") {
                if raw
                    .get(&format!("{p}.weight"))
                    .is_some_and(|w| matches!(w.dtype, ElemType::F8E4M3 | ElemType::F8E5M2))
                {
                    continue;
                }
            }
            if let Some(p) = name.strip_suffix("_blocks") {
                let sc = format!("{p}_scales");
                if t.dtype == ElemType::U8 {
                    let Some(s) = raw.get(&sc) else {
                        return Err(Error::corrupt(format!("MXFP4 tensor {name} without {sc}")));
                    };
                    let r = t.shape.len();
                    if !(r == 3 || r == 4)
                        || t.shape[r - 1] != 16
                        || s.dtype != ElemType::U8
                        || s.shape[..] != t.shape[..r - 1]
                    {
                        return Err(Error::corrupt(format!(
                            "MXFP4 tensor {p}: blocks {:?} and scales {:?} do not match",
                            t.shape, s.shape
                        )));
                    }
                    let mut shape = t.shape[..r - 1].to_vec();
                    let last = shape.len() - 1;
                    shape[last] *= 32;
                    out.insert(
                        p.to_string(),
                        (
                            Logical::Mxfp4 {
                                blocks: name.clone(),
                                scales: sc,
                            },
                            shape,
                        ),
                    );
                    continue;
                }
            }
            if let Some(p) = name.strip_suffix("_scales") {
                if raw
                    .get(&format!("{p}_blocks"))
                    .is_some_and(|b| b.dtype == ElemType::U8)
                {
                    continue;
                }
            }
            if matches!(t.dtype, ElemType::F8E4M3 | ElemType::F8E5M2) {
                if let Some(p) = name.strip_suffix(".weight") {
                    let sc = format!("{p}.weight_scale_inv");
                    if raw.contains_key(&sc) {
                        out.insert(
                            name.clone(),
                            (
                                Logical::Fp8 {
                                    weight: name.clone(),
                                    scale: sc,
                                },
                                t.shape.clone(),
                            ),
                        );
                        continue;
                    }
                }
            }
            out.insert(
                name.clone(),
                (Logical::Float { hf: name.clone() }, t.shape.clone()),
            );
        }
        Ok(out)
    }

    /// Map logical tensors to canonical recipes; returns the recipes and the sorted listing.
    fn build_recipes(
        arch: Arch,
        logical: &HashMap<String, (Logical, Vec<usize>)>,
    ) -> Result<(HashMap<String, Recipe>, Vec<SourceTensor>)> {
        let mut pieces: BTreeMap<String, Vec<(usize, Part, String)>> = BTreeMap::new();
        let mut names: Vec<&String> = logical.keys().collect();
        names.sort();
        for name in names {
            let (kind, shape) = &logical[name];
            let in_out = !matches!(kind, Logical::Mxfp4 { .. });
            let src_type = match kind {
                Logical::Float { .. } => String::new(),
                Logical::Fp8 { .. } => "fp8".into(),
                Logical::Awq { .. } => "awq4".into(),
                Logical::Mxfp4 { .. } => "mxfp4".into(),
            };
            for m in names::map_name(arch, name, shape, in_out) {
                pieces.entry(m.canonical).or_default().push((
                    m.order,
                    Part {
                        logical: name.clone(),
                        expert: m.expert,
                        transpose: m.transpose,
                        rows: m.rows,
                    },
                    src_type.clone(),
                ));
            }
        }
        let mut recipes = HashMap::new();
        let mut listing = Vec::new();
        for (canon, mut ps) in pieces {
            ps.sort_by_key(|p| p.0);
            for (i, p) in ps.iter().enumerate() {
                if p.0 != i {
                    return Err(Error::corrupt(format!(
                        "tensor {canon}: pieces are not numbered 0..{} (missing or duplicate expert {i}; source {})",
                        ps.len(),
                        p.1.logical
                    )));
                }
            }
            let mut rows = 0usize;
            let mut cols: Option<usize> = None;
            let mut all_1d = true;
            let mut shape_override = None;
            for (_, part, _) in &ps {
                let (_, lshape) = &logical[&part.logical];
                let mut s: &[usize] = lshape;
                if let Some(e) = part.expert {
                    if s.is_empty() || e >= s[0] {
                        return Err(Error::corrupt(format!(
                            "tensor {}: expert {e} out of range for shape {s:?}",
                            part.logical
                        )));
                    }
                    s = &s[1..];
                }
                let (r, c) = match s.len() {
                    0 => (1, 1),
                    1 => (s[0], 1),
                    2 => {
                        all_1d = false;
                        if part.transpose {
                            (s[1], s[0])
                        } else {
                            (s[0], s[1])
                        }
                    }
                    _ => {
                        // Higher rank: only passed through whole.
                        if ps.len() != 1 || part.transpose || part.rows != RowSel::All {
                            return Err(Error::corrupt(format!(
                                "tensor {}: cannot split a {}-D tensor",
                                part.logical,
                                s.len()
                            )));
                        }
                        shape_override = Some(s.to_vec());
                        all_1d = false;
                        (s[0], product(&s[1..]).unwrap_or(0))
                    }
                };
                let n = part.rows.count(r).ok_or_else(|| {
                    Error::corrupt(format!(
                        "tensor {}: row selection does not fit",
                        part.logical
                    ))
                })?;
                match cols {
                    None => cols = Some(c),
                    Some(c0) if c0 != c => {
                        return Err(Error::corrupt(format!(
                            "tensor {canon}: pieces have different widths ({c0} vs {c})"
                        )))
                    }
                    _ => {}
                }
                rows += n;
            }
            let cols = cols.unwrap_or(0);
            let shape = if let Some(s) = shape_override {
                s
            } else if all_1d {
                vec![rows]
            } else {
                vec![rows, cols]
            };
            let src_type = if ps[0].2.is_empty() {
                // float: the raw dtype of the first piece's tensor
                match &logical[&ps[0].1.logical].0 {
                    Logical::Float { hf } => hf.clone(),
                    _ => String::new(),
                }
            } else {
                ps[0].2.clone()
            };
            listing.push(SourceTensor {
                name: canon.clone(),
                shape: shape.clone(),
                source_type: src_type,
            });
            recipes.insert(
                canon,
                Recipe {
                    parts: ps.into_iter().map(|p| p.1).collect(),
                    shape,
                },
            );
        }
        // Stable order: globals first, then layers in numeric order, then output tensors.
        let key = |n: &str| -> (u8, usize, String) {
            if let Some((i, rest)) = crate::model::names::split_layer(n) {
                (1, i, rest.to_string())
            } else if n.starts_with("output") {
                (2, 0, n.to_string())
            } else {
                (0, 0, n.to_string())
            }
        };
        listing.sort_by_key(|t| key(&t.name));
        Ok((recipes, listing))
    }

    /// Fill the float tensors' source type with their dtype names (done after grouping, when
    /// raw dtypes are at hand).
    fn finish_listing(&mut self) {
        for t in &mut self.tensors {
            if let Some(rt) = self.raw.get(&t.source_type) {
                t.source_type = rt.dtype.name().to_string();
            }
        }
    }

    fn raw_bytes(&self, name: &str) -> Result<(&RawTensor, &[u8])> {
        let t = self
            .raw
            .get(name)
            .ok_or_else(|| Error::corrupt(format!("tensor {name} missing")))?;
        let f = &self.files[t.file];
        let bytes = f.map.get(t.start..t.end).ok_or_else(|| {
            Error::corrupt(format!(
                "{}: tensor {name} is outside the file",
                f.path.display()
            ))
        })?;
        Ok((t, bytes))
    }

    /// Raw bytes of slice `expert` (along axis 0) of a raw tensor, or all of it.
    fn raw_slice(&self, name: &str, expert: Option<usize>) -> Result<(&RawTensor, &[u8])> {
        let (t, bytes) = self.raw_bytes(name)?;
        match expert {
            None => Ok((t, bytes)),
            Some(e) => {
                let n0 = t.shape.first().copied().unwrap_or(0);
                if e >= n0 || n0 == 0 {
                    return Err(Error::corrupt(format!("tensor {name}: no expert {e}")));
                }
                let per = bytes.len() / n0;
                Ok((t, &bytes[e * per..(e + 1) * per]))
            }
        }
    }

    /// Decode a logical tensor (or one expert's slice of it) to f32 in its logical layout.
    fn decode_logical(&self, name: &str, expert: Option<usize>) -> Result<Vec<f32>> {
        let (kind, shape) = self
            .logical
            .get(name)
            .ok_or_else(|| Error::corrupt(format!("tensor {name} missing")))?;
        let mut out = Vec::new();
        match kind {
            Logical::Float { hf } => {
                let (t, bytes) = self.raw_slice(hf, expert)?;
                dequant::decode_float(t.dtype, bytes, &mut out).map_err(ctx(hf))?;
            }
            Logical::Fp8 { weight, scale } => {
                if expert.is_some() {
                    return Err(Error::corrupt(format!("fp8 tensor {name} has no experts")));
                }
                let (t, bytes) = self.raw_bytes(weight)?;
                let mut w = Vec::new();
                dequant::decode_float(t.dtype, bytes, &mut w)?;
                let (st, sbytes) = self.raw_bytes(scale)?;
                let mut s = Vec::new();
                dequant::decode_float(st.dtype, sbytes, &mut s).map_err(ctx(scale))?;
                out = dequant::dequant_fp8(&w, shape[0], shape[1], &s, self.fp8_block)
                    .map_err(ctx(weight))?;
            }
            Logical::Awq {
                qweight,
                qzeros,
                scales,
            } => {
                if expert.is_some() {
                    return Err(Error::corrupt(format!("awq tensor {name} has no experts")));
                }
                let (n_out, n_in) = (shape[0], shape[1]);
                let (_, qw) = self.raw_bytes(qweight)?;
                let (_, qz) = self.raw_bytes(qzeros)?;
                let (st, sb) = self.raw_bytes(scales)?;
                let ng = st.shape[0];
                if ng == 0 || n_in % ng != 0 || st.shape[1] != n_out {
                    return Err(Error::corrupt(format!(
                        "awq tensor {scales}: shape {:?} does not fit a {n_in}×{n_out} weight",
                        st.shape
                    )));
                }
                let group = n_in / ng;
                if let Some(g) = self.awq_group {
                    if g != group {
                        return Err(Error::corrupt(format!(
                            "awq tensor {qweight}: group size {group} from the shapes, {g} in config.json"
                        )));
                    }
                }
                let mut s = Vec::new();
                dequant::decode_float(st.dtype, sb, &mut s)?;
                out = dequant::dequant_awq(qw, qz, &s, n_in, n_out, group).map_err(ctx(qweight))?;
            }
            Logical::Mxfp4 { blocks, scales } => {
                let (bt, bb) = self.raw_slice(blocks, expert)?;
                let (_, sb) = self.raw_slice(scales, expert)?;
                let r = bt.shape.len();
                let nb = bt.shape[r - 2];
                let rows = sb.len() / nb.max(1);
                out = dequant::dequant_mxfp4_hf(bb, sb, rows, nb).map_err(ctx(blocks))?;
            }
        }
        Ok(out)
    }

    /// `(rows, cols)` of a part before transposition/row selection.
    fn part_dims(&self, p: &Part) -> (usize, usize) {
        let s = &self.logical[&p.logical].1;
        let s = if p.expert.is_some() { &s[1..] } else { &s[..] };
        match s.len() {
            0 => (1, 1),
            1 => (s[0], 1),
            _ => (s[0], product(&s[1..]).unwrap_or(0)),
        }
    }

    fn recipe(&self, name: &str) -> Result<&Recipe> {
        self.recipes
            .get(name)
            .ok_or_else(|| Error::InvalidArgument(format!("no tensor named {name}")))
    }

    /// Check tensor shapes against config.json; a mismatch is a corrupt folder.
    fn check_shapes(&self) -> Result<()> {
        let c = &self.config;
        let q = c.n_head * c.head_dim;
        let kv = c.n_head_kv * c.head_dim;
        let e = c.n_embd;
        let mla = matches!(c.arch, Arch::DeepseekV2 | Arch::DeepseekV3);
        let mut expect: Vec<(String, Vec<usize>)> = vec![
            ("token_embd".into(), vec![c.n_vocab, e]),
            ("output".into(), vec![c.n_vocab, e]),
            ("output_norm".into(), vec![e]),
        ];
        for i in 0..c.n_layer {
            let b = |n: &str| format!("blk.{i}.{n}");
            expect.push((b("attn_norm"), vec![e]));
            if !mla {
                expect.push((b("attn_q"), vec![q, e]));
                expect.push((b("attn_k"), vec![kv, e]));
                expect.push((b("attn_v"), vec![kv, e]));
                expect.push((b("attn_output"), vec![e, q]));
                expect.push((b("attn_qkv"), vec![q + 2 * kv, e]));
            }
            if c.arch != Arch::GptOss {
                expect.push((b("ffn_up"), vec![c.n_ff, e]));
                expect.push((b("ffn_gate"), vec![c.n_ff, e]));
                expect.push((b("ffn_down"), vec![e, c.n_ff]));
            }
            if matches!(c.arch, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3) {
                expect.push((b("attn_q_norm"), vec![c.head_dim]));
                expect.push((b("attn_k_norm"), vec![c.head_dim]));
            }
            if let Some(m) = &c.moe {
                let ne = m.n_expert;
                expect.push((b("ffn_gate_inp"), vec![ne, e]));
                expect.push((b("ffn_gate_exps"), vec![ne * m.expert_ff, e]));
                expect.push((b("ffn_up_exps"), vec![ne * m.expert_ff, e]));
                expect.push((b("ffn_down_exps"), vec![ne * e, m.expert_ff]));
            }
        }
        for (n, want) in &expect {
            if let Some(r) = self.recipes.get(n) {
                if &r.shape != want {
                    return Err(Error::corrupt(format!(
                        "tensor {n} has shape {:?} but config.json implies {want:?}",
                        r.shape
                    )));
                }
            }
        }
        for t in &self.tensors {
            if let Some((i, _)) = crate::model::names::split_layer(&t.name) {
                if i >= c.n_layer {
                    return Err(Error::corrupt(format!(
                        "tensor {} belongs to layer {i} but config.json has {} layers",
                        t.name, c.n_layer
                    )));
                }
            }
        }
        let mut required = vec!["token_embd".to_string(), "output_norm".to_string()];
        for i in 0..c.n_layer {
            if !matches!(c.arch, Arch::Olmo2) {
                required.push(format!("blk.{i}.attn_norm"));
            }
        }
        for n in required {
            if !self.recipes.contains_key(&n) {
                return Err(Error::corrupt(format!(
                    "{}: required tensor {n} is missing",
                    self.dir.display()
                )));
            }
        }
        Ok(())
    }
}

impl ModelSource for HfModel {
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
        let r = self.recipe(name)?;
        let total = product(&r.shape).unwrap_or(0);
        let mut out = Vec::with_capacity(total);
        for p in &r.parts {
            let data = self.decode_logical(&p.logical, p.expert)?;
            let (mut rows, mut cols) = self.part_dims(p);
            if data.len() != rows * cols {
                return Err(Error::corrupt(format!(
                    "tensor {}: decoded {} values, expected {rows}×{cols}",
                    p.logical,
                    data.len()
                )));
            }
            let data = if p.transpose {
                let mut t = vec![0f32; data.len()];
                for rr in 0..rows {
                    for cc in 0..cols {
                        t[cc * rows + rr] = data[rr * cols + cc];
                    }
                }
                std::mem::swap(&mut rows, &mut cols);
                t
            } else {
                data
            };
            if p.rows == RowSel::All {
                out.extend_from_slice(&data);
            } else {
                for rr in p.rows.rows(rows) {
                    out.extend_from_slice(&data[rr * cols..(rr + 1) * cols]);
                }
            }
        }
        if out.len() != total {
            return Err(Error::Internal(format!(
                "tensor {name}: built {} values for shape {:?}",
                out.len(),
                r.shape
            )));
        }
        Ok(out)
    }

    fn load_native(&self, name: &str) -> Result<Option<NativeTensor>> {
        let r = self.recipe(name)?;
        // Float tensors, untransposed and whole: bytes as stored.
        let mut float_type = None;
        let mut all_float = true;
        for p in &r.parts {
            match &self.logical[&p.logical].0 {
                Logical::Float { hf } if !p.transpose && p.rows == RowSel::All => {
                    let t = &self.raw[hf];
                    let qt = match t.dtype {
                        ElemType::F32 => QuantType::F32,
                        ElemType::F16 => QuantType::F16,
                        ElemType::Bf16 => QuantType::Bf16,
                        _ => {
                            all_float = false;
                            break;
                        }
                    };
                    if float_type.is_some_and(|f| f != qt) {
                        all_float = false;
                        break;
                    }
                    float_type = Some(qt);
                }
                _ => {
                    all_float = false;
                    break;
                }
            }
        }
        if all_float {
            if let Some(qtype) = float_type {
                let mut bytes = Vec::new();
                for p in &r.parts {
                    if let Logical::Float { hf } = &self.logical[&p.logical].0 {
                        bytes.extend_from_slice(self.raw_slice(hf, p.expert)?.1);
                    }
                }
                return Ok(Some(NativeTensor {
                    qtype,
                    block: 1,
                    bytes,
                }));
            }
        }
        // MXFP4 experts: repack rows into QSF's block layout.
        if r.parts
            .iter()
            .all(|p| matches!(self.logical[&p.logical].0, Logical::Mxfp4 { .. }) && !p.transpose)
        {
            let mut bytes = Vec::new();
            for p in &r.parts {
                let Logical::Mxfp4 { blocks, scales } = &self.logical[&p.logical].0 else {
                    continue;
                };
                let (bt, bb) = self.raw_slice(blocks, p.expert)?;
                let (_, sb) = self.raw_slice(scales, p.expert)?;
                let nb = bt.shape[bt.shape.len() - 2];
                let rows = sb.len() / nb.max(1);
                if bb.len() != rows * nb * 16 || sb.len() != rows * nb {
                    return Err(Error::corrupt(format!("tensor {blocks}: size mismatch")));
                }
                for rr in p.rows.rows(rows) {
                    for k in 0..nb {
                        let i = rr * nb + k;
                        dequant::repack_mxfp4_block(&bb[i * 16..i * 16 + 16], sb[i], &mut bytes);
                    }
                }
            }
            return Ok(Some(NativeTensor {
                qtype: QuantType::Mxfp4,
                block: 32,
                bytes,
            }));
        }
        Ok(None)
    }
}

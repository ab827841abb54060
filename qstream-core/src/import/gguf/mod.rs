//! GGUF importer: a llama.cpp `.gguf` file as a [`ModelSource`].
//!
//! - [`parse`]: the container (header, metadata, tensor infos), memory-mapped and fully
//!   validated; [`GgufFile`] is usable on its own for any architecture.
//! - [`dequant`]: ggml block formats → f32, bit-identical to ggml / `gguf.quants`.
//! - [`vocab`]: the GGUF vocabulary → a HuggingFace `tokenizer.json` equal to the one
//!   transformers builds from the same file.
//!
//! Names: GGUF `blk.N.attn_q.weight` → canonical `blk.N.attn_q` (`.weight` dropped, `.bias`
//! kept). Shapes: GGUF `ne[0]` is the contiguous axis, so a 2-D tensor `ne = [cols, rows]`
//! becomes `[rows, cols]`; higher-rank tensors (stacked MoE experts) fold every outer
//! dimension into the rows: `[ne[1]·ne[2]·…, ne[0]]`. Vectors stay `[n]`.
//!
//! RoPE: llama.cpp's converter permutes the rows of Llama/Mistral `attn_q`/`attn_k` so its
//! "NORM" rope (rotating adjacent pairs `2i, 2i+1`) reproduces HF's rotate-half. The weights
//! are kept as stored and the config says [`RopeStyle::Interleaved`]; Qwen2/Qwen3 files are
//! not permuted and use NEOX ([`RopeStyle::Neox`]).

use std::collections::HashMap;
use std::path::Path;

use crate::import::{ModelSource, NativeTensor, SourceTensor, TokenizerData};
use crate::model::config::{
    Activation, Arch, ModelConfig, MoeConfig, NormType, RopeConfig, RopeScaling, RopeStyle,
};
use crate::quant::QuantType;
use crate::{Error, Result};

pub mod dequant;
pub mod parse;
mod vocab;

pub use parse::{ggml_type_block, ggml_type_name, GgufFile, MetaValue, TensorInfo};

/// A GGUF model file opened as a [`ModelSource`]. Tensor data stays in the mapped file and
/// is decoded on demand.
pub struct GgufModel {
    file: GgufFile,
    config: ModelConfig,
    tokenizer: TokenizerData,
    tensors: Vec<SourceTensor>,
    /// canonical name → index into `file.tensor_infos()`
    index: HashMap<String, usize>,
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
    name.strip_suffix(".weight").unwrap_or(name)
}

/// Canonical shape of GGUF dims `ne`.
pub fn canonical_shape(ne: &[u64]) -> Vec<usize> {
    match ne {
        [] => vec![],
        [n] => vec![*n as usize],
        [cols, outer @ ..] => vec![outer.iter().map(|&d| d as usize).product(), *cols as usize],
    }
}

impl GgufModel {
    /// Map, parse and validate `path`, and derive the config and tokenizer.
    ///
    /// Errors: [`Error::NotFound`]/[`Error::Io`], [`Error::BadMagic`] (not GGUF),
    /// [`Error::UnsupportedVersion`] (not v2/v3), [`Error::Corrupt`] (any structural
    /// problem), [`Error::UnsupportedQuant`] (unknown ggml type id),
    /// [`Error::UnsupportedArch`] (architecture other than llama/mistral/qwen2/qwen3).
    pub fn open(path: &Path) -> Result<GgufModel> {
        let file = GgufFile::open(path)?;
        let mut tensors = Vec::with_capacity(file.tensor_infos().len());
        let mut index = HashMap::with_capacity(file.tensor_infos().len());
        for (i, t) in file.tensor_infos().iter().enumerate() {
            let name = canonical_name(&t.name).to_owned();
            if index.insert(name.clone(), i).is_some() {
                return Err(Error::corrupt(format!(
                    "GGUF: two tensors map to the name {name}"
                )));
            }
            tensors.push(SourceTensor {
                name,
                shape: canonical_shape(&t.ne),
                source_type: ggml_type_name(t.ggml_type).to_owned(),
            });
        }
        let vocab = vocab::Vocab::read(&file)?;
        let config = build_config(&file, &index, vocab.as_ref())?;
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

    /// The GGUF tensor info behind canonical name `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.index
            .get(name)
            .map(|&i| &self.file.tensor_infos()[i])
            .ok_or_else(|| Error::InvalidArgument(format!("GGUF has no tensor {name}")))
    }
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
        let info = self.tensor_info(name)?;
        let mut out = vec![0f32; info.numel];
        dequant::dequantize(info.ggml_type, self.file.tensor_bytes(info), &mut out).map_err(
            |e| match e {
                Error::UnsupportedQuant(m) => {
                    Error::UnsupportedQuant(format!("tensor {name}: {m}"))
                }
                Error::Corrupt(m) => Error::Corrupt(format!("tensor {name}: {m}")),
                e => e,
            },
        )?;
        Ok(out)
    }

    fn load_native(&self, name: &str) -> Result<Option<NativeTensor>> {
        use parse::ggml_type as t;
        let info = self.tensor_info(name)?;
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
        Ok(Some(NativeTensor {
            qtype,
            block,
            bytes: self.file.tensor_bytes(info).to_vec(),
        }))
    }
}

/// Hyper-parameters from `{arch}.*` metadata and the tensor list.
fn build_config(
    f: &GgufFile,
    index: &HashMap<String, usize>,
    vocab: Option<&vocab::Vocab>,
) -> Result<ModelConfig> {
    let arch_name = f
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .ok_or_else(|| Error::corrupt("GGUF: no general.architecture"))?;
    let mut arch = match arch_name {
        "llama" => Arch::Llama,
        "mistral" => Arch::Mistral,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        other => {
            return Err(Error::UnsupportedArch(format!(
                "GGUF architecture {other:?} (supported: llama, mistral, qwen2, qwen3)"
            )))
        }
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let uint = |k: &str| -> Result<Option<usize>> {
        match f.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&x| x <= u32::MAX as u64)
                .map(|x| Some(x as usize))
                .ok_or_else(|| Error::corrupt(format!("GGUF: {} = {v:?}", key(k)))),
        }
    };
    let need = |k: &str| -> Result<usize> {
        uint(k)?.ok_or_else(|| Error::corrupt(format!("GGUF: missing {}", key(k))))
    };
    let float = |k: &str| -> Result<Option<f32>> {
        match f.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| Error::corrupt(format!("GGUF: {} = {v:?}", key(k)))),
        }
    };
    let n_layer = need("block_count")?;
    let n_embd = need("embedding_length")?;
    let n_ff = need("feed_forward_length")?;
    let n_head = need("attention.head_count")?;
    let n_head_kv = uint("attention.head_count_kv")?.unwrap_or(n_head);
    if n_head == 0 {
        return Err(Error::corrupt("GGUF: attention.head_count is 0"));
    }
    let head_dim = uint("attention.key_length")?.unwrap_or(n_embd / n_head);
    let n_vocab = match uint("vocab_size")? {
        Some(v) => v,
        None => vocab
            .map(|v| v.tokens.len())
            .or_else(|| {
                index
                    .get("token_embd")
                    .map(|&i| canonical_shape(&f.tensor_infos()[i].ne)[0])
            })
            .unwrap_or(0),
    };
    let scaling = match f.get(&key("rope.scaling.type")).and_then(MetaValue::as_str) {
        None | Some("none") => None,
        Some(kind) => {
            let factor = float("rope.scaling.factor")?.unwrap_or(1.0);
            let orig = uint("rope.scaling.original_context_length")?;
            match kind {
                "linear" => Some(RopeScaling::Linear { factor }),
                "yarn" => Some(RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: orig.ok_or_else(|| {
                        Error::corrupt("GGUF: yarn rope scaling without original_context_length")
                    })?,
                    beta_fast: float("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                    beta_slow: float("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                    mscale: None,
                    mscale_all_dim: None,
                    truncate: None,
                }),
                other => {
                    return Err(Error::UnsupportedArch(format!(
                        "GGUF rope scaling type {other:?}"
                    )))
                }
            }
        }
    };
    let style = match arch {
        Arch::Llama | Arch::Mistral => RopeStyle::Interleaved,
        _ => RopeStyle::Neox,
    };
    let rope = RopeConfig {
        theta: float("rope.freq_base")?.unwrap_or(10000.0),
        dim: uint("rope.dimension_count")?.unwrap_or(head_dim),
        style,
        scaling,
    };
    // Mixtral-style llama files carry expert counts.
    let n_expert = uint("expert_count")?.unwrap_or(0);
    let moe = if n_expert > 0 {
        if arch == Arch::Llama || arch == Arch::Mistral {
            arch = Arch::Mixtral;
        }
        Some(MoeConfig {
            n_expert,
            n_expert_used: uint("expert_used_count")?.unwrap_or(2),
            expert_ff: uint("expert_feed_forward_length")?.unwrap_or(n_ff),
            norm_topk_prob: true,
            n_shared_expert: 0,
            shared_expert_ff: 0,
        })
    } else {
        None
    };
    let has = |n: &str| index.contains_key(n);
    let (mut bos, mut eos_ids, mut pad, mut add_bos) = (None, Vec::new(), None, false);
    if let Some(v) = vocab {
        bos = v.bos;
        pad = v.pad;
        add_bos = v.add_bos;
        let extra = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>"]
            .into_iter()
            .filter_map(|t| v.find(t));
        for id in [v.eos, v.eot].into_iter().flatten().chain(extra) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    }
    let mut extra = serde_json::Map::new();
    if let Some(ft) = f.get("general.file_type").and_then(MetaValue::as_u64) {
        extra.insert("gguf_file_type".into(), ft.into());
    }
    let config = ModelConfig {
        arch,
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
        n_vocab,
        n_ctx_train: uint("context_length")?.unwrap_or(4096),
        norm: NormType::RmsNorm,
        norm_eps: float("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
        act: Activation::Silu,
        gated_mlp: true,
        rope: Some(rope),
        tie_embeddings: !has("output"),
        qkv_bias: has("blk.0.attn_q.bias"),
        qk_norm: has("blk.0.attn_q_norm"),
        sliding_window: uint("attention.sliding_window")?.filter(|&w| w > 0),
        moe,
        bos_token_id: bos,
        eos_token_ids: eos_ids,
        pad_token_id: pad,
        add_bos,
        extra,
    };
    config.validate()?;
    Ok(config)
}

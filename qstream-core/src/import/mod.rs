//! Importers: read a model in a foreign format (GGUF, HuggingFace safetensors folder)
//! as a [`ModelSource`] the converter turns into QSF.

use crate::model::config::ModelConfig;
use crate::quant::QuantType;
use crate::Result;

pub mod gguf;
pub mod hf;

/// Tokenizer and chat data carried from the source model into the QSF tokenizer section.
#[derive(Debug, Clone, Default)]
pub struct TokenizerData {
    /// A HuggingFace `tokenizer.json` (for GGUF sources, synthesised from the GGUF vocabulary).
    pub tokenizer_json: String,
    /// Jinja chat template, if the model has one.
    pub chat_template: Option<String>,
    /// Text of special tokens the template or stop logic refers to (bos/eos/eot ...), by role.
    pub special_tokens: Vec<(String, String)>,
}

/// One tensor as the source stores it.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    /// Canonical QSF name (`token_embd`, `blk.3.attn_q`, `output_norm`, ...; see `model::names`).
    pub name: String,
    /// Canonical shape: `[rows, cols]` row-major, rows = output features; `[n]` for vectors.
    pub shape: Vec<usize>,
    /// Human-readable source type (`Q4_1`, `F16`, `fp8_e4m3`, `awq4`, ...).
    pub source_type: String,
}

/// Tensor bytes already in a QSF type, copied bit-exactly by `--quant keep`.
#[derive(Debug, Clone)]
pub struct NativeTensor {
    pub qtype: QuantType,
    pub block: usize,
    pub bytes: Vec<u8>,
}

/// A model readable by the converter. Implementations read lazily from mapped files so
/// conversion never holds the model twice; they must be `Sync` so tensors load in parallel.
pub trait ModelSource: Sync {
    /// Hyper-parameters in QStream's terms.
    fn config(&self) -> &ModelConfig;
    /// Tokenizer and chat template.
    fn tokenizer(&self) -> &TokenizerData;
    /// Every tensor, canonical names and shapes, in a stable order.
    fn tensors(&self) -> &[SourceTensor];
    /// Decode tensor `name` to f32 (row-major, canonical shape).
    fn load_f32(&self, name: &str) -> Result<Vec<f32>>;
    /// The tensor's bytes when its source encoding is exactly a QSF type (GGUF Q4_1 → q4/32,
    /// Q4_0 → q4_sym/32, Q8_0 → q8, F32/F16/BF16, MXFP4); `None` otherwise.
    fn load_native(&self, name: &str) -> Result<Option<NativeTensor>>;
}

/// Open `path` as a GGUF file or a HuggingFace folder, by looking at it.
pub fn open_source(path: &std::path::Path) -> Result<Box<dyn ModelSource>> {
    if path.is_dir() {
        Ok(Box::new(hf::HfModel::open(path)?))
    } else if !path.exists() {
        Err(crate::Error::NotFound {
            path: path.to_path_buf(),
        })
    } else if crate::format::source::is_qsf(path) {
        // a QSF file (the original QStream's version 1, or version 2): upgrade / requantize
        Ok(Box::new(crate::format::source::QsfSource::open(path)?))
    } else {
        Ok(Box::new(gguf::GgufModel::open(path)?))
    }
}

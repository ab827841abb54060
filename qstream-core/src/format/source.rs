//! A QSF file (version 1 from the original QStream, or version 2) as a converter source:
//! `qstream convert OLD.qsf -o NEW.qsf --quant keep` rewrites it as QSF v2 with every tensor
//! copied bit-exactly in the type it has after opening (a version-1 file's blocks are
//! repacked without requantization, see [`super::legacy`]); any other `--quant` requantizes
//! from the decoded values.

use std::collections::HashMap;
use std::path::Path;

use super::{LoadOptions, QsfFile};
use crate::import::{ModelSource, NativeTensor, SourceTensor, TokenizerData};
use crate::model::config::ModelConfig;
use crate::model::names;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// An opened QSF file serving its tensors to the converter.
pub struct QsfSource {
    config: ModelConfig,
    tokenizer: TokenizerData,
    list: Vec<SourceTensor>,
    tensors: HashMap<String, Tensor>,
}

/// True when `path` starts with the QSF magic.
pub fn is_qsf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && u32::from_le_bytes(magic) == super::MAGIC
}

impl QsfSource {
    /// Open and fully verify `path` (every checksum).
    pub fn open(path: &Path) -> Result<QsfSource> {
        let f = QsfFile::open(
            path,
            &LoadOptions {
                use_mmap: true,
                verify_checksums: true,
            },
        )?;
        let legacy = f.is_legacy();
        let mut order: Vec<(String, Vec<usize>, String)> = Vec::new();
        let describe = |t: &Tensor| {
            if legacy {
                format!("qsf1:{}", t.qtype.name())
            } else {
                t.qtype.name().to_string()
            }
        };
        for t in f.embedding_tensors() {
            order.push((t.name.clone(), t.shape.clone(), describe(&t)));
        }
        for i in 0..f.layers().len() {
            for t in f.layer_tensors(i)? {
                order.push((names::layer_name(i, &t.name), t.shape.clone(), describe(&t)));
            }
        }
        for t in f.final_tensors() {
            order.push((t.name.clone(), t.shape.clone(), describe(&t)));
        }
        let (config, tokenizer, tensors) = f.into_parts()?;
        let list = order
            .into_iter()
            .map(|(name, shape, source_type)| SourceTensor {
                name,
                shape,
                source_type,
            })
            .collect();
        Ok(QsfSource {
            config,
            tokenizer,
            list,
            tensors,
        })
    }

    fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::InvalidArgument(format!("no tensor {name} in the QSF file")))
    }
}

impl ModelSource for QsfSource {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn tokenizer(&self) -> &TokenizerData {
        &self.tokenizer
    }
    fn tensors(&self) -> &[SourceTensor] {
        &self.list
    }
    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.get(name)?.to_f32()
    }
    fn load_native(&self, name: &str) -> Result<Option<NativeTensor>> {
        let t = self.get(name)?;
        if t.rotation != 0 {
            // a rotated tensor's bytes only mean something with its rotation, which the
            // converter does not carry over from a source
            return Ok(None);
        }
        Ok(Some(NativeTensor {
            qtype: t.qtype,
            block: t.block,
            bytes: t.bytes().to_vec(),
        }))
    }
}

//! Files written by the original C QStream (format version 1). Being written.

use std::path::Path;
use std::sync::Arc;

use super::header::Header;
use super::layer_index::LayerEntry;
use super::reader::QsfFile;
use crate::tensor::{Storage, Tensor};
use crate::{Error, Result};

/// Tensors of a legacy file, repacked into QSF v2 types in memory.
#[derive(Clone, Default)]
pub struct LegacyTensors {
    pub embedding: Vec<Tensor>,
    pub layers: Vec<Vec<Tensor>>,
    pub final_: Vec<Tensor>,
}

/// Open a version-1 file.
pub fn open(_path: &Path, _storage: Arc<Storage>, _header: Header) -> Result<QsfFile> {
    Err(Error::UnsupportedVersion {
        what: "QSF (legacy v1 reader not built yet)",
        found: 1,
        supported: 2,
    })
}

/// Verify a version-1 file's checksums.
pub fn verify(_bytes: &[u8], _header: &Header, _layers: &[LayerEntry]) -> Result<()> {
    Ok(())
}

//! GGUF v2/v3 container parser: header, metadata, tensor infos, data section.
//!
//! Layout (little-endian): `"GGUF"`, `u32 version`, `u64 n_tensors`, `u64 n_kv`, then `n_kv`
//! key/value pairs (`string key`, `u32 type`, value), then `n_tensors` tensor infos
//! (`string name`, `u32 n_dims`, `u64 ne[n_dims]`, `u32 ggml_type`, `u64 offset`), then
//! padding to `general.alignment` (default 32), then the data section; tensor offsets are
//! relative to its start. Strings are `u64 len` + bytes.
//!
//! Every count and offset is checked against the file size before anything is allocated or
//! read; malformed input yields [`Error::Corrupt`], never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Deepest array nesting accepted in metadata.
const MAX_ARRAY_DEPTH: usize = 8;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: usize = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    /// Elements all of one type (arrays may nest).
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::U64(v) => i64::try_from(v).ok(),
            MetaValue::I8(v) => Some(v as i64),
            MetaValue::I16(v) => Some(v as i64),
            MetaValue::I32(v) => Some(v as i64),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().map(|v| v as i64),
        }
    }

    /// The value as a float (floats and integers).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types: `(id, name, values per block, bytes per block)`.
const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

/// ggml type ids the importer handles specially.
pub mod ggml_type {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q5_0: u32 = 6;
    pub const Q5_1: u32 = 7;
    pub const Q8_0: u32 = 8;
    pub const Q2_K: u32 = 10;
    pub const Q3_K: u32 = 11;
    pub const Q4_K: u32 = 12;
    pub const Q5_K: u32 = 13;
    pub const Q6_K: u32 = 14;
    pub const BF16: u32 = 30;
    pub const MXFP4: u32 = 39;
}

/// The ggml name of type `id` (`"Q4_1"`, `"F16"`, ...), or `"unknown"`.
pub fn ggml_type_name(id: u32) -> &'static str {
    GGML_TYPES
        .iter()
        .find(|t| t.0 == id)
        .map(|t| t.1)
        .unwrap_or("unknown")
}

/// `(values per block, bytes per block)` of ggml type `id`, if known.
pub fn ggml_type_block(id: u32) -> Option<(usize, usize)> {
    GGML_TYPES.iter().find(|t| t.0 == id).map(|t| (t.2, t.3))
}

/// One tensor as the GGUF file describes it.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// GGUF dims, `ne[0]` is the contiguous axis.
    pub ne: Vec<u64>,
    /// ggml type id.
    pub ggml_type: u32,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Byte length of the data.
    pub size: usize,
    /// Number of values.
    pub numel: usize,
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    version: u32,
    metadata: HashMap<String, MetaValue>,
    /// Metadata keys in file order.
    keys: Vec<String>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: usize,
    data_offset: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_kv", &self.keys.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

/// Bounds-checked little-endian cursor over the mapped bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::corrupt(format!(
                "GGUF: {what} at offset {} needs {n} bytes, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must fit in the rest of the file at `min_each` bytes per item.
    fn count(&mut self, min_each: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let max = (self.remaining() / min_each.max(1)) as u64;
        if n > max {
            return Err(Error::corrupt(format!(
                "GGUF: {what} {n} at offset {at} cannot fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(1, what)?;
        let bytes = self.take(len, what)?;
        Ok(match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        })
    }

    /// Minimum encoded size of one value of metadata type `ty` (for count checks).
    fn min_size(ty: u32) -> usize {
        match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => 8,     // string: its u64 length
            9 => 4 + 8, // array: type + count
            _ => 8,     // u64 / i64 / f64
        }
    }

    fn value(&mut self, ty: u32, depth: usize, key: &str) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.u8(key)?),
            1 => MetaValue::I8(self.u8(key)? as i8),
            2 => MetaValue::U16(self.u16(key)?),
            3 => MetaValue::I16(self.u16(key)? as i16),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(self.u32(key)? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(Error::corrupt(format!(
                        "GGUF: metadata {key}: bool byte {b}"
                    )))
                }
            },
            8 => MetaValue::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::corrupt(format!(
                        "GGUF: metadata {key}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let et = self.u32(key)?;
                if et > 12 {
                    return Err(Error::corrupt(format!(
                        "GGUF: metadata {key}: unknown array element type {et}"
                    )));
                }
                let n = self.count(Self::min_size(et), key)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(et, depth + 1, key)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(self.u64(key)? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64(key)?)),
            t => {
                return Err(Error::corrupt(format!(
                    "GGUF: metadata {key}: unknown value type {t}"
                )))
            }
        })
    }
}

impl GgufFile {
    /// Map and parse `path`.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only and private to this struct; like every mmap-based
        // reader we rely on the file not being truncated while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path.to_path_buf(), map)
    }

    fn parse(path: PathBuf, map: memmap2::Mmap) -> Result<GgufFile> {
        let mut c = Cursor { buf: &map, pos: 0 };
        if c.remaining() < 4 || &map[..4] != b"GGUF" {
            return Err(Error::BadMagic { what: "GGUF" });
        }
        c.pos = 4;
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedVersion {
                what: "GGUF",
                found: version,
                supported: 3,
            });
        }
        // A tensor info is at least name len (8) + n_dims (4) + type (4) + offset (8).
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // A key/value pair is at least key len (8) + type (4) + 1 byte.
        if n_kv > (c.remaining() / 13) as u64 {
            return Err(Error::corrupt(format!(
                "GGUF: metadata count {n_kv} cannot fit in the file"
            )));
        }
        if n_tensors > (c.remaining() / 24) as u64 {
            return Err(Error::corrupt(format!(
                "GGUF: tensor count {n_tensors} cannot fit in the file"
            )));
        }
        let mut metadata = HashMap::with_capacity(n_kv as usize);
        let mut keys = Vec::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let v = c.value(ty, 0, &key)?;
            if metadata.insert(key.clone(), v).is_some() {
                return Err(Error::corrupt(format!(
                    "GGUF: duplicate metadata key {key}"
                )));
            }
            keys.push(key);
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => {
                    return Err(Error::corrupt(format!(
                        "GGUF: general.alignment {v:?} is not a power of two"
                    )))
                }
            },
        };
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor n_dims")? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::corrupt(format!(
                    "GGUF: tensor {name}: {n_dims} dimensions"
                )));
            }
            let mut ne = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                ne.push(c.u64("tensor dim")?);
            }
            let ty = c.u32("tensor type")?;
            let off = c.u64("tensor offset")?;
            infos.push((name, ne, ty, off));
        }
        let data_offset = c.pos.div_ceil(alignment) * alignment;
        if data_offset > map.len() {
            return Err(Error::corrupt(
                "GGUF: data section starts past the end of the file",
            ));
        }
        let data_len = map.len() - data_offset;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut by_name = HashMap::with_capacity(infos.len());
        for (name, ne, ty, off) in infos {
            let Some((block, bytes)) = ggml_type_block(ty) else {
                return Err(Error::UnsupportedQuant(format!(
                    "GGUF tensor {name}: unknown ggml type id {ty}"
                )));
            };
            let numel = ne
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= usize::MAX as u64 / 4)
                .ok_or_else(|| {
                    Error::corrupt(format!("GGUF: tensor {name}: dims {ne:?} overflow"))
                })? as usize;
            if ne[0] % block as u64 != 0 {
                return Err(Error::corrupt(format!(
                    "GGUF: tensor {name}: row length {} is not a multiple of the {} block ({block})",
                    ne[0],
                    ggml_type_name(ty)
                )));
            }
            let size = (numel / block)
                .checked_mul(bytes)
                .ok_or_else(|| Error::corrupt(format!("GGUF: tensor {name}: size overflows")))?;
            if off % alignment as u64 != 0 {
                return Err(Error::corrupt(format!(
                    "GGUF: tensor {name}: offset {off} not aligned to {alignment}"
                )));
            }
            if off > data_len as u64 || size > data_len - off as usize {
                return Err(Error::corrupt(format!(
                    "GGUF: tensor {name}: bytes {off}..{off}+{size} outside the {data_len}-byte data section"
                )));
            }
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(Error::corrupt(format!("GGUF: duplicate tensor {name}")));
            }
            tensors.push(TensorInfo {
                name,
                ne,
                ggml_type: ty,
                offset: data_offset + off as usize,
                size,
                numel,
            });
        }
        Ok(GgufFile {
            path,
            map,
            version,
            metadata,
            keys,
            tensors,
            by_name,
            alignment,
            data_offset,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata, key → value.
    pub fn metadata(&self) -> &HashMap<String, MetaValue> {
        &self.metadata
    }

    /// Metadata keys in file order.
    pub fn metadata_keys(&self) -> &[String] {
        &self.keys
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of GGUF tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (ranges were validated at open; an info that does not
    /// come from this file and lies outside it gives an empty slice).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        info.offset
            .checked_add(info.size)
            .and_then(|end| self.map.get(info.offset..end))
            .unwrap_or(&[])
    }

    /// `general.alignment` (default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }
}

//! QSF reader: maps (or reads) a file, validates every offset, size, type and shape before
//! use, and hands out zero-copy [`Tensor`]s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bytes::{checked_range, Cursor};
use super::header::Header;
use super::layer_index::{LayerEntry, COMPRESSION_LZ4, COMPRESSION_NONE};
use super::section::{parse_payload, verify_payload, TensorEntry};
use super::{ALIGN, HEADER_SIZE, LAYER_ENTRY_SIZE};
use crate::import::TokenizerData;
use crate::model::config::ModelConfig;
use crate::model::names;
use crate::tensor::{AlignedBuf, Storage, Tensor};
use crate::{Error, Result};

/// Tokenizer header flag: the section holds tokenizer.json + chat template + special tokens.
pub const TOKENIZER_FLAG_JSON: u32 = 0x100;

/// How to open a file.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Memory-map the file (zero copy). `false` reads it into memory.
    pub use_mmap: bool,
    /// Verify every checksum while opening (reads the whole file).
    pub verify_checksums: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            use_mmap: true,
            verify_checksums: false,
        }
    }
}

/// A tensor-carrying section (embedding or final) after validation.
#[derive(Debug, Clone)]
pub struct SectionInfo {
    /// file offset of the section
    pub offset: u64,
    /// total bytes including the section header
    pub size: u64,
    /// file offset of the payload
    pub payload_offset: u64,
    pub payload_size: u64,
    /// CRC-32 of the payload from the section header
    pub crc32: u32,
    pub entries: Vec<TensorEntry>,
}

/// An open QSF file.
pub struct QsfFile {
    path: PathBuf,
    storage: Arc<Storage>,
    header: Header,
    config: ModelConfig,
    layers: Vec<LayerEntry>,
    /// tensor directories of uncompressed layers (None for compressed ones until read)
    layer_dirs: Vec<Option<Vec<TensorEntry>>>,
    embedding: SectionInfo,
    final_: SectionInfo,
    tokenizer: TokenizerData,
    legacy: Option<super::legacy::LegacyTensors>,
}

fn map_or_read(path: &Path, use_mmap: bool) -> Result<Storage> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is a directory, not a QSF file",
            path.display()
        )));
    }
    if use_mmap && meta.len() > 0 {
        // SAFETY: the mapping is read-only; QStream never writes through it. As with every
        // mmap-based loader, truncating the file while it is mapped is not supported (it is
        // documented in docs/qsf.md); all offsets are validated against the mapped length.
        let m = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Storage::Mmap(m))
    } else {
        use std::io::Read;
        let mut buf = AlignedBuf::zeroed(meta.len() as usize);
        let mut f = file;
        f.read_exact(buf.as_mut_slice())
            .map_err(|e| Error::io(path, e))?;
        Ok(Storage::Owned(buf))
    }
}

impl QsfFile {
    /// Open and validate `path`.
    pub fn open(path: &Path, opts: &LoadOptions) -> Result<QsfFile> {
        let storage = Arc::new(map_or_read(path, opts.use_mmap)?);
        let bytes = storage.bytes();
        let header = Header::parse(bytes)?;
        let f = if header.version == 1 {
            super::legacy::open(path, storage.clone(), header)?
        } else {
            Self::open_v2(path, storage.clone(), header)?
        };
        if opts.verify_checksums {
            f.verify()?;
        }
        Ok(f)
    }

    fn open_v2(path: &Path, storage: Arc<Storage>, header: Header) -> Result<QsfFile> {
        let bytes = storage.bytes();
        let len = bytes.len() as u64;
        if header.total_file_size != len {
            return Err(Error::corrupt(format!(
                "file is {len} bytes but its header says {} (truncated or appended to)",
                header.total_file_size
            )));
        }
        let n_layer = header.num_layers as usize;
        if n_layer == 0 || n_layer > 4096 {
            return Err(Error::corrupt(format!("num_layers {n_layer}")));
        }
        if header.layer_index_offset != HEADER_SIZE as u64 {
            return Err(Error::corrupt(format!(
                "layer index at {} (expected 256)",
                header.layer_index_offset
            )));
        }
        let index_range =
            checked_range("layer index", 256, (n_layer * LAYER_ENTRY_SIZE) as u64, len)?;
        // metadata
        let meta_range = checked_range(
            "metadata",
            header.metadata_offset,
            header.metadata_size,
            len,
        )?;
        let meta = &bytes[meta_range.clone()];
        let crc = crc32fast::hash(meta);
        if crc != header.metadata_crc32 {
            return Err(Error::Checksum {
                what: "metadata".into(),
                stored: header.metadata_crc32,
                computed: crc,
            });
        }
        let config: ModelConfig = serde_json::from_slice(meta)
            .map_err(|e| Error::corrupt(format!("metadata JSON: {e}")))?;
        config.validate()?;
        if config.n_layer != n_layer {
            return Err(Error::corrupt(format!(
                "metadata says {} layers, header says {n_layer}",
                config.n_layer
            )));
        }
        // section ranges, all aligned and disjoint
        let mut regions: Vec<(u64, u64, String)> = vec![
            (0, index_range.end as u64, "header+index".into()),
            (
                meta_range.start as u64,
                meta_range.end as u64,
                "metadata".into(),
            ),
        ];
        let mut check_section = |name: &str, off: u64, size: u64| -> Result<()> {
            if !off.is_multiple_of(ALIGN) {
                return Err(Error::corrupt(format!(
                    "{name} section offset {off} not 64-aligned"
                )));
            }
            let r = checked_range(name, off, size, len)?;
            regions.push((r.start as u64, r.end as u64, name.to_string()));
            Ok(())
        };
        check_section("embedding", header.embedding_offset, header.embedding_size)?;
        check_section("tokenizer", header.tokenizer_offset, header.tokenizer_size)?;
        check_section("final", header.final_offset, header.final_size)?;
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let e = LayerEntry::parse(&bytes[index_range.start + i * LAYER_ENTRY_SIZE..], true)?;
            check_section(&format!("layer {i}"), e.offset, e.stored_size)?;
            match e.compression {
                COMPRESSION_NONE if e.stored_size != e.raw_size => {
                    return Err(Error::corrupt(format!(
                        "layer {i}: uncompressed but sizes differ"
                    )))
                }
                COMPRESSION_NONE | COMPRESSION_LZ4 => {}
                c => {
                    return Err(Error::UnsupportedQuant(format!(
                        "layer {i}: compression type {c}"
                    )))
                }
            }
            if e.raw_size > (1u64 << 40) {
                return Err(Error::corrupt(format!(
                    "layer {i}: raw size {}",
                    e.raw_size
                )));
            }
            // An LZ4 block expands at most 255×: reject before anything allocates raw_size.
            if e.compression == COMPRESSION_LZ4
                && e.raw_size > e.stored_size.saturating_mul(255).saturating_add(16)
            {
                return Err(Error::corrupt(format!(
                    "layer {i}: {} LZ4 bytes cannot hold {} bytes",
                    e.stored_size, e.raw_size
                )));
            }
            layers.push(e);
        }
        regions.sort();
        for w in regions.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(Error::corrupt(format!(
                    "sections {} and {} overlap",
                    w[0].2, w[1].2
                )));
            }
        }
        let embedding = parse_tensor_section(
            bytes,
            "embedding",
            header.embedding_offset,
            header.embedding_size,
            32,
        )?;
        let final_ =
            parse_tensor_section(bytes, "final", header.final_offset, header.final_size, 16)?;
        let tokenizer = parse_tokenizer(bytes, header.tokenizer_offset, header.tokenizer_size)?;
        let mut layer_dirs = Vec::with_capacity(n_layer);
        for (i, e) in layers.iter().enumerate() {
            if e.compression == COMPRESSION_NONE {
                let p = &bytes[e.offset as usize..(e.offset + e.stored_size) as usize];
                layer_dirs.push(Some(parse_payload(p, &format!("layer {i}"))?));
            } else {
                layer_dirs.push(None);
            }
        }
        Ok(QsfFile {
            path: path.to_path_buf(),
            storage,
            header,
            config,
            layers,
            layer_dirs,
            embedding,
            final_,
            tokenizer,
            legacy: None,
        })
    }

    /// Assemble a file object (used by the legacy reader).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_legacy(
        path: &Path,
        storage: Arc<Storage>,
        header: Header,
        config: ModelConfig,
        layers: Vec<LayerEntry>,
        tokenizer: TokenizerData,
        tensors: super::legacy::LegacyTensors,
    ) -> QsfFile {
        let empty = SectionInfo {
            offset: 0,
            size: 0,
            payload_offset: 0,
            payload_size: 0,
            crc32: 0,
            entries: vec![],
        };
        QsfFile {
            path: path.to_path_buf(),
            storage,
            header,
            config,
            layer_dirs: vec![None; layers.len()],
            layers,
            embedding: empty.clone(),
            final_: empty,
            tokenizer,
            legacy: Some(tensors),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn layers(&self) -> &[LayerEntry] {
        &self.layers
    }
    pub fn embedding_section(&self) -> &SectionInfo {
        &self.embedding
    }
    pub fn final_section(&self) -> &SectionInfo {
        &self.final_
    }
    pub fn tokenizer(&self) -> &TokenizerData {
        &self.tokenizer
    }
    /// True for files written by the original QStream (version 1).
    pub fn is_legacy(&self) -> bool {
        self.legacy.is_some()
    }
    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }
    /// True when the file is memory-mapped.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.storage, Storage::Mmap(_))
    }

    fn section_tensors(&self, s: &SectionInfo) -> Vec<Tensor> {
        s.entries
            .iter()
            .map(|e| {
                Tensor::new(
                    e.name.clone(),
                    e.qtype,
                    e.block,
                    e.shape.clone(),
                    self.storage.clone(),
                    (s.payload_offset + e.offset) as usize,
                    e.size as usize,
                )
                .with_rotation(e.rotation)
            })
            .collect()
    }

    /// The tensors of the embedding section (names as stored: `token_embd`, ...).
    pub fn embedding_tensors(&self) -> Vec<Tensor> {
        if let Some(l) = &self.legacy {
            return l.embedding.clone();
        }
        self.section_tensors(&self.embedding)
    }

    /// The tensors of the final section.
    pub fn final_tensors(&self) -> Vec<Tensor> {
        if let Some(l) = &self.legacy {
            return l.final_.clone();
        }
        self.section_tensors(&self.final_)
    }

    /// The tensors of layer `i` with their in-layer names (`attn_q`, ...). Compressed layers
    /// are decompressed (and validated) into memory here; uncompressed ones are zero-copy.
    pub fn layer_tensors(&self, i: usize) -> Result<Vec<Tensor>> {
        if let Some(l) = &self.legacy {
            return l
                .layers
                .get(i)
                .cloned()
                .ok_or_else(|| Error::InvalidArgument(format!("layer {i}")));
        }
        let e = self
            .layers
            .get(i)
            .ok_or_else(|| Error::InvalidArgument(format!("layer {i} of {}", self.layers.len())))?;
        let stored = &self.storage.bytes()[e.offset as usize..(e.offset + e.stored_size) as usize];
        if let Some(dir) = &self.layer_dirs[i] {
            return Ok(dir
                .iter()
                .map(|t| {
                    Tensor::new(
                        t.name.clone(),
                        t.qtype,
                        t.block,
                        t.shape.clone(),
                        self.storage.clone(),
                        (e.offset + t.offset) as usize,
                        t.size as usize,
                    )
                    .with_rotation(t.rotation)
                })
                .collect());
        }
        let mut buf = AlignedBuf::zeroed(e.raw_size as usize);
        let n = lz4_flex::block::decompress_into(stored, buf.as_mut_slice())
            .map_err(|err| Error::corrupt(format!("layer {i}: LZ4: {err}")))?;
        if n as u64 != e.raw_size {
            return Err(Error::corrupt(format!(
                "layer {i}: decompressed {n} bytes, index says {}",
                e.raw_size
            )));
        }
        // Decompression costs more than the CRC: never hand out a garbled decompressed layer.
        let raw_crc = crc32fast::hash(buf.as_slice());
        if raw_crc != e.crc32_raw {
            return Err(Error::Checksum {
                what: format!("layer {i} (decompressed)"),
                stored: e.crc32_raw,
                computed: raw_crc,
            });
        }
        let dir = parse_payload(buf.as_slice(), &format!("layer {i}"))?;
        let storage = Arc::new(Storage::Owned(buf));
        Ok(dir
            .into_iter()
            .map(|t| {
                Tensor::new(
                    t.name,
                    t.qtype,
                    t.block,
                    t.shape,
                    storage.clone(),
                    t.offset as usize,
                    t.size as usize,
                )
                .with_rotation(t.rotation)
            })
            .collect())
    }

    /// Every tensor under its global name (`token_embd`, `blk.N.attn_q`, `output`, ...).
    pub fn all_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut map = HashMap::new();
        for t in self
            .embedding_tensors()
            .into_iter()
            .chain(self.final_tensors())
        {
            map.insert(t.name.clone(), t);
        }
        for i in 0..self.layers.len() {
            for mut t in self.layer_tensors(i)? {
                t.name = names::layer_name(i, &t.name);
                map.insert(t.name.clone(), t);
            }
        }
        Ok(map)
    }

    /// Consume the file: config, tokenizer and every tensor by global name.
    pub fn into_parts(self) -> Result<(ModelConfig, TokenizerData, HashMap<String, Tensor>)> {
        let tensors = self.all_tensors()?;
        Ok((self.config, self.tokenizer, tensors))
    }

    /// Verify every checksum in the file: sections, layers (stored and decompressed) and
    /// every tensor's data.
    pub fn verify(&self) -> Result<()> {
        if self.legacy.is_some() {
            return super::legacy::verify(self.storage.bytes(), &self.header, &self.layers);
        }
        let bytes = self.storage.bytes();
        for (s, what) in [(&self.embedding, "embedding"), (&self.final_, "final")] {
            let p = &bytes[s.payload_offset as usize..(s.payload_offset + s.payload_size) as usize];
            let c = crc32fast::hash(p);
            if c != s.crc32 {
                return Err(Error::Checksum {
                    what: format!("{what} section"),
                    stored: s.crc32,
                    computed: c,
                });
            }
            verify_payload(p, &s.entries, what)?;
        }
        for (i, e) in self.layers.iter().enumerate() {
            let stored = &bytes[e.offset as usize..(e.offset + e.stored_size) as usize];
            let c = crc32fast::hash(stored);
            if c != e.crc32_stored {
                return Err(Error::Checksum {
                    what: format!("layer {i}"),
                    stored: e.crc32_stored,
                    computed: c,
                });
            }
            let raw: std::borrow::Cow<[u8]> = if e.compression == COMPRESSION_NONE {
                std::borrow::Cow::Borrowed(stored)
            } else {
                let mut buf = vec![0u8; e.raw_size as usize];
                lz4_flex::block::decompress_into(stored, &mut buf)
                    .map_err(|err| Error::corrupt(format!("layer {i}: LZ4: {err}")))?;
                std::borrow::Cow::Owned(buf)
            };
            let raw_crc = crc32fast::hash(&raw);
            if raw_crc != e.crc32_raw {
                return Err(Error::Checksum {
                    what: format!("layer {i} (decompressed)"),
                    stored: e.crc32_raw,
                    computed: raw_crc,
                });
            }
            let what = format!("layer {i}");
            let dir = parse_payload(&raw, &what)?;
            verify_payload(&raw, &dir, &what)?;
        }
        Ok(())
    }
}

fn parse_tensor_section(
    bytes: &[u8],
    what: &str,
    off: u64,
    size: u64,
    header_len: usize,
) -> Result<SectionInfo> {
    let sec = &bytes[off as usize..(off + size) as usize];
    if sec.len() < ALIGN as usize {
        return Err(Error::corrupt(format!(
            "{what} section is {} bytes",
            sec.len()
        )));
    }
    let mut c = Cursor::new(&sec[..header_len], "section header");
    let crc32 = if header_len == 32 {
        c.seek(20);
        c.u32()?
    } else {
        c.seek(12);
        c.u32()?
    };
    let payload = &sec[ALIGN as usize..];
    let entries = parse_payload(payload, what)?;
    Ok(SectionInfo {
        offset: off,
        size,
        payload_offset: off + ALIGN,
        payload_size: payload.len() as u64,
        crc32,
        entries,
    })
}

fn parse_tokenizer(bytes: &[u8], off: u64, size: u64) -> Result<TokenizerData> {
    let sec = &bytes[off as usize..(off + size) as usize];
    let mut c = Cursor::new(sec, "tokenizer section");
    let _kind = c.u32()?;
    let _vocab = c.u32()?;
    let _merges = c.u32()?;
    let _added = c.u32()?;
    let json_len = c.u32()? as usize;
    let tmpl_len = c.u32()? as usize;
    let special_len = c.u32()? as usize;
    let flags = c.u32()?;
    if flags & TOKENIZER_FLAG_JSON == 0 {
        return Err(Error::corrupt(
            "tokenizer section without JSON payload in a version-2 file",
        ));
    }
    let body_start = c.pos();
    let json = c.take(json_len)?;
    let tmpl = c.take(tmpl_len)?;
    let special = c.take(special_len)?;
    let body_end = c.pos();
    let stored = c.u32()?;
    let computed = crc32fast::hash(&sec[body_start..body_end]);
    if stored != computed {
        return Err(Error::Checksum {
            what: "tokenizer section".into(),
            stored,
            computed,
        });
    }
    let text = |b: &[u8], what: &str| -> Result<String> {
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::corrupt(format!("tokenizer {what} is not UTF-8")))
    };
    let special_tokens: Vec<(String, String)> = if special.is_empty() {
        vec![]
    } else {
        serde_json::from_slice(special)
            .map_err(|e| Error::corrupt(format!("tokenizer special tokens: {e}")))?
    };
    Ok(TokenizerData {
        tokenizer_json: text(json, "JSON")?,
        chat_template: if tmpl.is_empty() {
            None
        } else {
            Some(text(tmpl, "chat template")?)
        },
        special_tokens,
    })
}

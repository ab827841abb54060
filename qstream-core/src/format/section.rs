//! Section payloads and the 128-byte tensor directory (docs/qsf.md §Sections).
//!
//! Every tensor-carrying section (embedding, each layer, final) has a *payload*:
//! `[payload header 64 B][tensor directory: n × 128 B][pad to 64][tensor data, each 64-aligned]`.
//! Offsets in the directory are relative to the payload start, so a layer's payload can be
//! read (and LZ4-decompressed) on its own.

use super::bytes::{Cursor, Writer};
use super::{ALIGN, TENSOR_ENTRY_SIZE};
use crate::quant::{self, QuantType};
use crate::{Error, Result};

/// Payload header magic ("QSTD" on disk).
pub const PAYLOAD_MAGIC: u32 = 0x4454_5351;
/// Payload header size.
pub const PAYLOAD_HEADER_SIZE: usize = 64;
/// Longest tensor name (bytes of UTF-8).
pub const MAX_NAME: usize = 64;

/// One tensor directory entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    /// original QStream tensor-type id (`model::names::original_kind`), 0xFFFF if none
    pub kind: u16,
    pub qtype: QuantType,
    pub block: usize,
    pub shape: Vec<usize>,
    /// offset of the data from the payload start (64-aligned)
    pub offset: u64,
    pub size: u64,
    /// CRC-32 of the data
    pub crc32: u32,
    /// incoherence rotation group of the input dimension (`quant::rotate`), 0 = none
    /// (data_layout 1 on disk, the group in the u32 at offset 76)
    pub rotation: usize,
}

impl TensorEntry {
    pub fn rows(&self) -> usize {
        if self.shape.len() >= 2 {
            self.shape[..self.shape.len() - 1].iter().product()
        } else {
            1
        }
    }
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
}

/// A tensor to put into a payload.
pub struct PayloadTensor<'a> {
    pub name: &'a str,
    pub kind: u16,
    pub qtype: QuantType,
    pub block: usize,
    pub shape: &'a [usize],
    pub data: &'a [u8],
    /// rotation group (0 = none), see [`TensorEntry::rotation`]
    pub rotation: usize,
}

/// Build a payload from tensors. Returns the bytes and the directory.
pub fn build_payload(tensors: &[PayloadTensor<'_>]) -> Result<(Vec<u8>, Vec<TensorEntry>)> {
    let dir_end = PAYLOAD_HEADER_SIZE + tensors.len() * TENSOR_ENTRY_SIZE;
    let mut offset = super::align_up(dir_end as u64);
    let mut entries = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.name.len() > MAX_NAME || t.name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "tensor name {:?} must be 1..=64 bytes",
                t.name
            )));
        }
        if t.shape.is_empty() || t.shape.len() > 3 {
            return Err(Error::InvalidArgument(format!(
                "tensor {}: {} dims",
                t.name,
                t.shape.len()
            )));
        }
        if t.rotation != 0
            && (t.shape.len() < 2
                || !quant::rotate::valid_group(t.rotation, *t.shape.last().unwrap_or(&0)))
        {
            return Err(Error::InvalidArgument(format!(
                "tensor {}: rotation group {} invalid for shape {:?}",
                t.name, t.rotation, t.shape
            )));
        }
        entries.push(TensorEntry {
            name: t.name.to_string(),
            kind: t.kind,
            qtype: t.qtype,
            block: t.block,
            shape: t.shape.to_vec(),
            offset,
            size: t.data.len() as u64,
            crc32: crc32fast::hash(t.data),
            rotation: t.rotation,
        });
        offset = super::align_up(offset + t.data.len() as u64);
    }
    let mut w = Writer::default();
    w.u32(PAYLOAD_MAGIC);
    w.u32(tensors.len() as u32);
    w.u64(offset);
    w.pad_to(PAYLOAD_HEADER_SIZE);
    for e in &entries {
        let mut name = [0u8; MAX_NAME];
        name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        w.bytes(&name);
        w.u16(e.kind);
        w.u8(e.qtype.id());
        // data layout: 0 row-major, 1 row-major with rotated input dimension
        w.u8(u8::from(e.rotation != 0));
        w.u32(e.block as u32);
        w.u32(e.shape.len() as u32);
        w.u32(e.rotation as u32);
        for i in 0..3 {
            w.u64(e.shape.get(i).copied().unwrap_or(0) as u64);
        }
        w.u64(e.offset);
        w.u64(e.size);
        w.u32(e.crc32);
        w.u32(0);
    }
    w.buf.reserve(offset as usize - w.buf.len());
    for (t, e) in tensors.iter().zip(&entries) {
        w.buf.resize(e.offset as usize, 0);
        w.bytes(t.data);
    }
    w.buf.resize(offset as usize, 0);
    Ok((w.buf, entries))
}

/// Parse and validate a payload's directory. `what` names the section in errors.
/// Checks every name, type, block size, shape, range, alignment and data size.
pub fn parse_payload(payload: &[u8], what: &str) -> Result<Vec<TensorEntry>> {
    let bad = |m: String| Error::corrupt(format!("{what}: {m}"));
    let mut c = Cursor::new(payload, "section payload");
    if c.u32()? != PAYLOAD_MAGIC {
        return Err(bad("bad payload magic".into()));
    }
    let n = c.u32()? as usize;
    let declared = c.u64()?;
    if declared != payload.len() as u64 {
        return Err(bad(format!(
            "payload is {} bytes, header says {declared}",
            payload.len()
        )));
    }
    let max_n = payload.len().saturating_sub(PAYLOAD_HEADER_SIZE) / TENSOR_ENTRY_SIZE;
    if n > max_n {
        return Err(bad(format!(
            "{n} tensors cannot fit in {} bytes",
            payload.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        c.seek(PAYLOAD_HEADER_SIZE + i * TENSOR_ENTRY_SIZE);
        let raw_name = c.take(MAX_NAME)?;
        let len = raw_name.iter().position(|&b| b == 0).unwrap_or(MAX_NAME);
        let name = std::str::from_utf8(&raw_name[..len])
            .map_err(|_| bad(format!("tensor {i}: name is not UTF-8")))?
            .to_string();
        if name.is_empty() {
            return Err(bad(format!("tensor {i}: empty name")));
        }
        let kind = c.u16()?;
        let qid = c.u8()?;
        let qtype = QuantType::from_id(qid).ok_or_else(|| {
            Error::UnsupportedQuant(format!("{what}: tensor {name}: quant type id {qid}"))
        })?;
        let layout = c.u8()?;
        if layout > 1 {
            return Err(bad(format!(
                "tensor {name}: data layout {layout} (0 row-major and 1 rotated row-major exist)"
            )));
        }
        let block = c.u32()? as usize;
        if !qtype.valid_block(block) {
            return Err(bad(format!(
                "tensor {name}: block size {block} invalid for {qtype}"
            )));
        }
        let ndim = c.u32()? as usize;
        let rot_field = c.u32()? as usize; // layout 1: rotation group; layout 0: reserved
        let dims = [c.u64()?, c.u64()?, c.u64()?];
        if !(1..=3).contains(&ndim) {
            return Err(bad(format!("tensor {name}: {ndim} dims")));
        }
        let mut shape = Vec::with_capacity(ndim);
        let mut numel: u64 = 1;
        for &d in &dims[..ndim] {
            if d == 0 || d > u32::MAX as u64 {
                return Err(bad(format!("tensor {name}: dimension {d}")));
            }
            numel = numel
                .checked_mul(d)
                .filter(|&x| x <= (1u64 << 40))
                .ok_or_else(|| bad(format!("tensor {name}: shape {dims:?} too large")))?;
            shape.push(d as usize);
        }
        let offset = c.u64()?;
        let size = c.u64()?;
        let crc32 = c.u32()?;
        if offset % ALIGN != 0 {
            return Err(bad(format!(
                "tensor {name}: data offset {offset} not 64-aligned"
            )));
        }
        let dir_end = (PAYLOAD_HEADER_SIZE + n * TENSOR_ENTRY_SIZE) as u64;
        if offset < dir_end
            || offset
                .checked_add(size)
                .is_none_or(|e| e > payload.len() as u64)
        {
            return Err(bad(format!(
                "tensor {name}: data {offset}+{size} outside the payload"
            )));
        }
        let e = TensorEntry {
            name,
            kind,
            qtype,
            block,
            shape,
            offset,
            size,
            crc32,
            rotation: if layout == 1 { rot_field } else { 0 },
        };
        let (rows, cols) = (e.rows(), e.cols());
        if layout == 1 && (ndim < 2 || !quant::rotate::valid_group(rot_field, cols)) {
            return Err(bad(format!(
                "tensor {}: rotation group {rot_field} invalid for {cols} columns",
                e.name
            )));
        }
        match quant::dense_tensor_bytes(qtype, block, rows, cols) {
            Some(expect) if expect as u64 != size => {
                return Err(bad(format!(
                    "tensor {}: {qtype} {rows}x{cols} needs {expect} bytes, directory says {size}",
                    e.name
                )))
            }
            Some(_) => {}
            None => {
                let data = &payload[offset as usize..(offset + size) as usize];
                quant::outlier::OutlierView::parse(qtype, block, data, rows, cols)
                    .map_err(|err| bad(format!("tensor {}: {err}", e.name)))?;
            }
        }
        out.push(e);
    }
    // Overlap check: sort by offset, ranges must not intersect.
    let mut ranges: Vec<(u64, u64, &str)> = out
        .iter()
        .map(|e| (e.offset, e.offset + e.size, e.name.as_str()))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(bad(format!("tensors {} and {} overlap", w[0].2, w[1].2)));
        }
    }
    Ok(out)
}

/// Verify every tensor's data CRC in a payload.
pub fn verify_payload(payload: &[u8], entries: &[TensorEntry], what: &str) -> Result<()> {
    for e in entries {
        let data = &payload[e.offset as usize..(e.offset + e.size) as usize];
        let computed = crc32fast::hash(data);
        if computed != e.crc32 {
            return Err(Error::Checksum {
                what: format!("{what}: tensor {}", e.name),
                stored: e.crc32,
                computed,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip_and_corruption() {
        let a: Vec<u8> = (0..34u8).collect(); // one q8 block
        let b = vec![7u8; 12]; // 3 f32
        let (p, dir) = build_payload(&[
            PayloadTensor {
                name: "attn_q",
                kind: 0,
                qtype: QuantType::Q8,
                block: 32,
                shape: &[1, 32],
                data: &a,
                rotation: 0,
            },
            PayloadTensor {
                name: "attn_norm",
                kind: 7,
                qtype: QuantType::F32,
                block: 1,
                shape: &[3],
                data: &b,
                rotation: 0,
            },
        ])
        .unwrap();
        let parsed = parse_payload(&p, "layer 0").unwrap();
        assert_eq!(parsed, dir);
        assert_eq!(parsed[0].offset % 64, 0);
        assert_eq!(&p[parsed[1].offset as usize..][..12], &b[..]);
        verify_payload(&p, &parsed, "layer 0").unwrap();

        // every truncation is an error, never a panic
        for cut in [0, 3, 10, 64, 100, p.len() - 1] {
            assert!(parse_payload(&p[..cut], "layer 0").is_err(), "cut {cut}");
        }
        // wrong shape for the byte size
        let mut q = p.clone();
        q[64 + 80] = 2; // dims[0] of tensor 0: 1 -> 2 rows
        assert!(parse_payload(&q, "x").is_err());
        // corrupted data → checksum error
        let mut q = p.clone();
        let off = parsed[0].offset as usize;
        q[off] ^= 0xff;
        assert!(matches!(
            verify_payload(&q, &parsed, "x"),
            Err(Error::Checksum { .. })
        ));
        // unknown quant type
        let mut q = p.clone();
        q[64 + 66] = 200;
        assert!(matches!(
            parse_payload(&q, "x"),
            Err(Error::UnsupportedQuant(_))
        ));
    }

    #[test]
    fn rotated_entries_round_trip_and_bad_groups_are_rejected() {
        let a = vec![0u8; 2 * 34 * 2]; // q8 2x64
        let mk = |rotation: usize| {
            build_payload(&[PayloadTensor {
                name: "attn_q",
                kind: 0,
                qtype: QuantType::Q8,
                block: 32,
                shape: &[2, 64],
                data: &a,
                rotation,
            }])
        };
        let (p, dir) = mk(64).unwrap();
        assert_eq!(p[64 + 67], 1, "data_layout 1");
        let parsed = parse_payload(&p, "x").unwrap();
        assert_eq!(parsed, dir);
        assert_eq!(parsed[0].rotation, 64);
        // not rotated: layout 0, field 0 → rotation 0
        let (p0, _) = mk(0).unwrap();
        assert_eq!(p0[64 + 67], 0);
        assert_eq!(parse_payload(&p0, "x").unwrap()[0].rotation, 0);
        // the writer refuses groups that do not divide the columns / are not powers of two
        assert!(mk(48).is_err() && mk(128).is_err() && mk(1).is_err());
        // the reader too
        for bad in [0u32, 1, 48, 128] {
            let mut q = p.clone();
            q[64 + 76..64 + 80].copy_from_slice(&bad.to_le_bytes());
            assert!(parse_payload(&q, "x").is_err(), "group {bad}");
        }
        // unknown layouts stay errors
        let mut q = p.clone();
        q[64 + 67] = 2;
        assert!(parse_payload(&q, "x").is_err());
    }
}

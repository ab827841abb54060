//! Decoders for the element types and quantized layouts found in HuggingFace checkpoints:
//! f32/f16/bf16, FP8 (E4M3FN, E5M2) with block-wise `weight_scale_inv`, AutoAWQ GEMM
//! (`qweight`/`qzeros`/`scales`) and gpt-oss MXFP4 (`*_blocks`/`*_scales`).
//!
//! Every decoder is exact in f32 (no intermediate rounding) and bounds-checked: it is given
//! byte slices whose lengths the caller derived from validated safetensors headers, and
//! returns [`Error::Corrupt`] instead of indexing out of bounds if they disagree.

use crate::{Error, Result};

/// Element type of one safetensors tensor, as far as the importer understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    F16,
    Bf16,
    F8E4M3,
    F8E5M2,
    I32,
    U8,
    /// Any other safetensors dtype (kept so unknown tensors can still be listed).
    Other(&'static str),
}

impl ElemType {
    /// Bytes per element (1 for unknown types; their bytes are never decoded).
    pub fn size(self) -> usize {
        match self {
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F16 | ElemType::Bf16 => 2,
            ElemType::F8E4M3 | ElemType::F8E5M2 | ElemType::U8 | ElemType::Other(_) => 1,
        }
    }

    /// Human-readable name (used as `SourceTensor::source_type`).
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "F32",
            ElemType::F16 => "F16",
            ElemType::Bf16 => "BF16",
            ElemType::F8E4M3 => "fp8_e4m3",
            ElemType::F8E5M2 => "fp8_e5m2",
            ElemType::I32 => "I32",
            ElemType::U8 => "U8",
            ElemType::Other(s) => s,
        }
    }

    /// True for the types [`decode_float`] handles.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            ElemType::F32 | ElemType::F16 | ElemType::Bf16 | ElemType::F8E4M3 | ElemType::F8E5M2
        )
    }
}

/// Map a safetensors dtype to an [`ElemType`].
pub fn elem_type(d: safetensors::Dtype) -> ElemType {
    use safetensors::Dtype as D;
    match d {
        D::F32 => ElemType::F32,
        D::F16 => ElemType::F16,
        D::BF16 => ElemType::Bf16,
        D::F8_E4M3 => ElemType::F8E4M3,
        D::F8_E5M2 => ElemType::F8E5M2,
        D::I32 => ElemType::I32,
        D::U8 => ElemType::U8,
        D::BOOL => ElemType::Other("BOOL"),
        D::I8 => ElemType::Other("I8"),
        D::I16 => ElemType::Other("I16"),
        D::U16 => ElemType::Other("U16"),
        D::U32 => ElemType::Other("U32"),
        D::I64 => ElemType::Other("I64"),
        D::U64 => ElemType::Other("U64"),
        D::F64 => ElemType::Other("F64"),
        _ => ElemType::Other("unknown"),
    }
}

/// FP8 E4M3FN (no infinities; 0x7F/0xFF are NaN) to f32, exactly.
pub fn fp8_e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let e = ((b >> 3) & 0x0F) as i32;
    let m = (b & 0x07) as f32;
    if e == 0x0F && (b & 0x07) == 0x07 {
        return f32::NAN;
    }
    if e == 0 {
        // subnormal: m/8 · 2^(1−7)
        sign * m * (2.0f32).powi(-9)
    } else {
        sign * (1.0 + m / 8.0) * (2.0f32).powi(e - 7)
    }
}

/// FP8 E5M2 to f32, exactly (it is the top byte of an IEEE half).
pub fn fp8_e5m2_to_f32(b: u8) -> f32 {
    half::f16::from_bits((b as u16) << 8).to_f32()
}

/// Decode `bytes` of element type `t` to f32 (row-major, unchanged order).
pub fn decode_float(t: ElemType, bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
    out.clear();
    if !bytes.len().is_multiple_of(t.size()) {
        return Err(Error::corrupt(format!(
            "{} data of {} bytes is not a whole number of elements",
            t.name(),
            bytes.len()
        )));
    }
    match t {
        ElemType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        ElemType::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        ElemType::Bf16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        ElemType::F8E4M3 => out.extend(bytes.iter().map(|&b| fp8_e4m3_to_f32(b))),
        ElemType::F8E5M2 => out.extend(bytes.iter().map(|&b| fp8_e5m2_to_f32(b))),
        other => {
            return Err(Error::UnsupportedQuant(format!(
                "cannot decode {} elements as floats",
                other.name()
            )))
        }
    }
    Ok(())
}

/// Block-wise FP8: `W[r, c] = fp8[r, c] · scale_inv[r / br, c / bc]` (the "inverse" scale is
/// multiplied, as in DeepSeek-V3 / Qwen3-FP8 checkpoints). `scale_inv` has
/// `ceil(rows/br) · ceil(cols/bc)` entries, or a single entry for a per-tensor scale.
pub fn dequant_fp8(
    weight: &[f32],
    rows: usize,
    cols: usize,
    scale_inv: &[f32],
    block: (usize, usize),
) -> Result<Vec<f32>> {
    if weight.len() != rows * cols {
        return Err(Error::corrupt("fp8 weight size does not match its shape"));
    }
    if scale_inv.len() == 1 {
        return Ok(weight.iter().map(|w| w * scale_inv[0]).collect());
    }
    let (br, bc) = block;
    if br == 0 || bc == 0 {
        return Err(Error::corrupt("fp8 weight_block_size has a zero entry"));
    }
    let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
    if scale_inv.len() != sr * sc {
        return Err(Error::corrupt(format!(
            "fp8 weight_scale_inv has {} entries, expected {sr}×{sc} for a {rows}×{cols} weight in {br}×{bc} blocks",
            scale_inv.len()
        )));
    }
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let srow = &scale_inv[(r / br) * sc..(r / br + 1) * sc];
        let wrow = &weight[r * cols..(r + 1) * cols];
        out.extend(wrow.iter().enumerate().map(|(c, w)| w * srow[c / bc]));
    }
    Ok(out)
}

/// AutoAWQ packs output column `8c + AWQ_ORDER[i]` into nibble `i` of packed column `c`.
pub const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// Unpack one AWQ-packed int32 grid `[n, packed_cols]` to `[n, packed_cols · 8]` 4-bit values.
fn awq_unpack(packed: &[u8], n: usize, pc: usize) -> Result<Vec<u8>> {
    if packed.len() != n * pc * 4 {
        return Err(Error::corrupt(
            "awq packed tensor size does not match its shape",
        ));
    }
    let mut out = vec![0u8; n * pc * 8];
    for (k, w) in packed.chunks_exact(4).enumerate() {
        let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let (r, c) = (k / pc, k % pc);
        let base = r * pc * 8 + c * 8;
        for (i, &o) in AWQ_ORDER.iter().enumerate() {
            out[base + o] = ((v >> (4 * i)) & 0xF) as u8;
        }
    }
    Ok(out)
}

/// AWQ GEMM dequantization to the canonical `[out, in]` layout:
/// `W[o, i] = (q[i, o] − z[i / g, o]) · scales[i / g, o]`.
/// `qweight`: int32 `[n_in, n_out/8]`; `qzeros`: int32 `[n_in/g, n_out/8]`; `scales`: f32
/// (decoded) `[n_in/g, n_out]`.
pub fn dequant_awq(
    qweight: &[u8],
    qzeros: &[u8],
    scales: &[f32],
    n_in: usize,
    n_out: usize,
    group: usize,
) -> Result<Vec<f32>> {
    if !n_out.is_multiple_of(8) || group == 0 || !n_in.is_multiple_of(group) {
        return Err(Error::corrupt(format!(
            "awq: {n_in}×{n_out} weight does not fit group size {group} and 8 values per int32"
        )));
    }
    let ng = n_in / group;
    let q = awq_unpack(qweight, n_in, n_out / 8)?;
    let z = awq_unpack(qzeros, ng, n_out / 8)?;
    if scales.len() != ng * n_out {
        return Err(Error::corrupt(format!(
            "awq scales have {} entries, expected {ng}×{n_out}",
            scales.len()
        )));
    }
    let mut out = vec![0f32; n_in * n_out];
    for i in 0..n_in {
        let g = i / group;
        for o in 0..n_out {
            let qv = q[i * n_out + o] as f32 - z[g * n_out + o] as f32;
            out[o * n_in + i] = qv * scales[g * n_out + o];
        }
    }
    Ok(out)
}

/// E2M1 values by nibble.
pub const FP4_VALUES: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Decode rows of gpt-oss MXFP4: `blocks` holds `rows · nb` 16-byte blocks (byte j = element 2j
/// low nibble, 2j+1 high nibble), `scales` `rows · nb` E8M0 exponents; value =
/// `FP4[nibble] · 2^(scale − 127)`. Output `[rows, nb · 32]`.
pub fn dequant_mxfp4_hf(blocks: &[u8], scales: &[u8], rows: usize, nb: usize) -> Result<Vec<f32>> {
    if blocks.len() != rows * nb * 16 || scales.len() != rows * nb {
        return Err(Error::corrupt(
            "mxfp4 blocks/scales size does not match the shape",
        ));
    }
    let mut out = Vec::with_capacity(rows * nb * 32);
    for (blk, &s) in blocks.chunks_exact(16).zip(scales) {
        let scale = (2.0f32).powi(s as i32 - 127);
        for &b in blk {
            out.push(FP4_VALUES[(b & 0xF) as usize] * scale);
            out.push(FP4_VALUES[(b >> 4) as usize] * scale);
        }
    }
    Ok(out)
}

/// Repack one HF MXFP4 block (16 bytes, element 2j low / 2j+1 high) with its scale into the
/// QSF layout: `[e, 16 bytes]` with element j in the low nibble and j+16 in the high nibble.
pub fn repack_mxfp4_block(hf: &[u8], scale: u8, out: &mut Vec<u8>) {
    let mut vals = [0u8; 32];
    for (j, &b) in hf.iter().enumerate().take(16) {
        vals[2 * j] = b & 0xF;
        vals[2 * j + 1] = b >> 4;
    }
    out.push(scale);
    for j in 0..16 {
        out.push(vals[j] | (vals[j + 16] << 4));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_e4m3_known_values() {
        assert_eq!(fp8_e4m3_to_f32(0x00), 0.0);
        assert_eq!(fp8_e4m3_to_f32(0x38), 1.0); // e=7, m=0
        assert_eq!(fp8_e4m3_to_f32(0x7E), 448.0); // max finite
        assert_eq!(fp8_e4m3_to_f32(0x01), 2f32.powi(-9)); // min subnormal
        assert_eq!(fp8_e4m3_to_f32(0xC0), -2.0);
        assert!(fp8_e4m3_to_f32(0x7F).is_nan());
    }

    #[test]
    fn fp8_e5m2_known_values() {
        assert_eq!(fp8_e5m2_to_f32(0x3C), 1.0);
        assert_eq!(fp8_e5m2_to_f32(0x7B), 57344.0);
        assert_eq!(fp8_e5m2_to_f32(0xC0), -2.0);
    }

    #[test]
    fn awq_nibble_order() {
        // One input row, 8 outputs: nibble i holds output AWQ_ORDER[i]; value i+1.
        let mut v = 0u32;
        for i in 0..8 {
            v |= ((i as u32) + 1) << (4 * i);
        }
        let q = v.to_le_bytes();
        let z = 0u32.to_le_bytes();
        // group 1 → one group; scales 1.0
        let w = dequant_awq(&q, &z, &[1.0; 8], 1, 8, 1).unwrap();
        // output o gets nibble i where AWQ_ORDER[i] = o
        assert_eq!(w, vec![1.0, 5.0, 2.0, 6.0, 3.0, 7.0, 4.0, 8.0]);
    }

    #[test]
    fn mxfp4_repack_roundtrip() {
        let hf: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
        let dec = dequant_mxfp4_hf(&hf, &[128], 1, 1).unwrap();
        let mut q = Vec::new();
        repack_mxfp4_block(&hf, 128, &mut q);
        assert_eq!(q.len(), 17);
        for j in 0..16 {
            let lo = FP4_VALUES[(q[1 + j] & 0xF) as usize] * 2.0;
            let hi = FP4_VALUES[(q[1 + j] >> 4) as usize] * 2.0;
            assert_eq!(lo.to_bits(), dec[j].to_bits());
            assert_eq!(hi.to_bits(), dec[j + 16].to_bits());
        }
    }
}

//! The KV cache of a session: K and V each in its own [`KvType`].

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::quant::{self, Codec, QueryQ8, MAX_HEAD_DIM};
use super::{simd, KvType};
use crate::quant::rotate;
use crate::{Error, Result};

/// Storage of K or V for every layer, head and position.
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<u16>),
    Q(Vec<u8>, Codec),
}

fn zeroed<T: Clone>(n: usize, zero: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::OutOfMemory(format!("KV cache of {n} elements")))?;
    v.resize(n, zero);
    Ok(v)
}

impl Store {
    /// Room for `rows` head vectors of `head_dim` values.
    fn alloc(t: KvType, rows: usize, head_dim: usize) -> Result<Store> {
        let n = rows
            .checked_mul(match t.codec() {
                None => head_dim,
                Some(_) => t.row_bytes(head_dim),
            })
            .ok_or_else(|| Error::OutOfMemory("KV cache size overflows".into()))?;
        Ok(match t.codec() {
            Some(c) => Store::Q(zeroed(n, 0u8)?, c),
            None => match t {
                KvType::F16 => Store::F16(zeroed(n, f16::ZERO)?),
                KvType::Bf16 => Store::Bf16(zeroed(n, 0u16)?),
                _ => Store::F32(zeroed(n, 0f32)?),
            },
        })
    }

    /// Store head vector `src` as row `row`, rotating it first when `rot` is set.
    fn write(&mut self, row: usize, src: &[f32], rot: Option<usize>) {
        let hd = src.len();
        match self {
            Store::F32(v) => v[row * hd..(row + 1) * hd].copy_from_slice(src),
            Store::F16(v) => {
                for (d, s) in v[row * hd..(row + 1) * hd].iter_mut().zip(src) {
                    *d = f16::from_f32(*s);
                }
            }
            Store::Bf16(v) => {
                for (d, s) in v[row * hd..(row + 1) * hd].iter_mut().zip(src) {
                    *d = bf16_bits(*s);
                }
            }
            Store::Q(v, c) => {
                let rb = hd / quant::BLOCK * c.block_bytes();
                let dst = &mut v[row * rb..(row + 1) * rb];
                match rot {
                    Some(g) => {
                        let mut buf = [0f32; MAX_HEAD_DIM];
                        let x = &mut buf[..hd];
                        x.copy_from_slice(src);
                        rotate::rotate(x, g);
                        quant::encode(*c, x, dst);
                    }
                    None => quant::encode(*c, src, dst),
                }
            }
        }
    }

    fn slice(&self, rows: std::ops::Range<usize>, hd: usize) -> Slice<'_> {
        match self {
            Store::F32(v) => Slice::F32(&v[rows.start * hd..rows.end * hd]),
            Store::F16(v) => Slice::F16(&v[rows.start * hd..rows.end * hd]),
            Store::Bf16(v) => Slice::Bf16(&v[rows.start * hd..rows.end * hd]),
            Store::Q(v, c) => {
                let rb = hd / quant::BLOCK * c.block_bytes();
                Slice::Q(&v[rows.start * rb..rows.end * rb], *c)
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Store::F32(v) => v.len() * 4,
            Store::F16(v) => v.len() * 2,
            Store::Bf16(v) => v.len() * 2,
            Store::Q(v, _) => v.len(),
        }
    }
}

/// bf16 bits of `x`, rounded to nearest even (NaN stays NaN).
#[inline]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

#[inline]
fn bf16_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// The rotation group of a rotated type for `head_dim` (the largest power of two ≤ 256
/// dividing it).
fn rot_group(t: KvType, head_dim: usize) -> Option<usize> {
    if t.rotated() {
        rotate::group_for(head_dim, rotate::DEFAULT_MAX_GROUP)
    } else {
        None
    }
}

/// Keys and values of every layer for up to `n_ctx` positions.
///
/// Layout of K and V: `[layer][kv_head][pos][row]` (a row is one head vector in the
/// element type). The cache does not track how many positions are valid; the session
/// does (`n_past`).
pub struct KvCache {
    k_type: KvType,
    v_type: KvType,
    n_layer: usize,
    n_head_kv: usize,
    head_dim: usize,
    n_ctx: usize,
    k_rot: Option<usize>,
    v_rot: Option<usize>,
    k: Store,
    v: Store,
}

/// Check that `head_dim` suits `t` (quantized types: a multiple of 32, at most 512).
pub(crate) fn check_head_dim(t: KvType, head_dim: usize) -> Result<()> {
    if t.codec().is_some()
        && (head_dim == 0 || !head_dim.is_multiple_of(quant::BLOCK) || head_dim > MAX_HEAD_DIM)
    {
        return Err(Error::InvalidArgument(format!(
            "KV type {} needs head_dim a multiple of {} up to {MAX_HEAD_DIM} (got {head_dim})",
            t.name(),
            quant::BLOCK
        )));
    }
    Ok(())
}

impl KvCache {
    /// A zeroed cache with keys in `k_type` and values in `v_type`. Fails with
    /// [`Error::OutOfMemory`] when it cannot be allocated and [`Error::InvalidArgument`]
    /// when `head_dim` does not suit a quantized type (a multiple of 32, at most 512).
    pub fn new(
        k_type: KvType,
        v_type: KvType,
        n_layer: usize,
        n_head_kv: usize,
        head_dim: usize,
        n_ctx: usize,
    ) -> Result<KvCache> {
        check_head_dim(k_type, head_dim)?;
        check_head_dim(v_type, head_dim)?;
        let rows = n_layer
            .checked_mul(n_head_kv)
            .and_then(|x| x.checked_mul(n_ctx))
            .ok_or_else(|| Error::OutOfMemory("KV cache size overflows".into()))?;
        Ok(KvCache {
            k_type,
            v_type,
            n_layer,
            n_head_kv,
            head_dim,
            n_ctx,
            k_rot: rot_group(k_type, head_dim),
            v_rot: rot_group(v_type, head_dim),
            k: Store::alloc(k_type, rows, head_dim)?,
            v: Store::alloc(v_type, rows, head_dim)?,
        })
    }

    /// Element type of the keys (kept for callers of the single-type cache).
    pub fn kv_type(&self) -> KvType {
        self.k_type
    }

    /// Element type of the keys.
    pub fn k_type(&self) -> KvType {
        self.k_type
    }

    /// Element type of the values.
    pub fn v_type(&self) -> KvType {
        self.v_type
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held by K and V together.
    pub fn memory_bytes(&self) -> usize {
        self.k.bytes() + self.v.bytes()
    }

    /// Bytes of K and V for one position across all layers and heads.
    pub fn bytes_per_token(&self) -> usize {
        self.n_layer
            * self.n_head_kv
            * (self.k_type.row_bytes(self.head_dim) + self.v_type.row_bytes(self.head_dim))
    }

    /// Store the keys and values of position `pos` in `layer`: `k` and `v` are
    /// `n_head_kv × head_dim` (heads concatenated, as the projections produce them).
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        debug_assert!(layer < self.n_layer && pos < self.n_ctx);
        debug_assert!(k.len() == self.n_head_kv * hd && v.len() == k.len());
        for h in 0..self.n_head_kv {
            let row = (layer * self.n_head_kv + h) * self.n_ctx + pos;
            self.k.write(row, &k[h * hd..(h + 1) * hd], self.k_rot);
            self.v.write(row, &v[h * hd..(h + 1) * hd], self.v_rot);
        }
    }

    /// A read-only view of one layer for attention.
    pub fn layer(&self, layer: usize) -> KvLayer<'_> {
        let rows = self.n_head_kv * self.n_ctx;
        let r = layer * rows..(layer + 1) * rows;
        KvLayer {
            k: self.k.slice(r.clone(), self.head_dim),
            v: self.v.slice(r, self.head_dim),
            n_ctx: self.n_ctx,
            head_dim: self.head_dim,
            k_rot: self.k_rot,
            v_rot: self.v_rot,
        }
    }
}

#[derive(Clone, Copy)]
enum Slice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [u16]),
    Q(&'a [u8], Codec),
}

/// One layer of the cache: `[kv_head][pos][row]` for K and V.
#[derive(Clone, Copy)]
pub struct KvLayer<'a> {
    k: Slice<'a>,
    v: Slice<'a>,
    n_ctx: usize,
    head_dim: usize,
    k_rot: Option<usize>,
    v_rot: Option<usize>,
}

impl KvLayer<'_> {
    /// Index of the first row of head `h`, position `pos`.
    #[inline]
    fn row(&self, h: usize, pos: usize) -> usize {
        h * self.n_ctx + pos
    }

    /// Keys and values of KV head `h` for positions `start..start + len`
    /// (`len × head_dim` each) when the cache stores both as f32; `None` otherwise.
    pub fn head_f32(&self, h: usize, start: usize, len: usize) -> Option<(&[f32], &[f32])> {
        let hd = self.head_dim;
        let r = self.row(h, start) * hd..(self.row(h, start) + len) * hd;
        match (self.k, self.v) {
            (Slice::F32(k), Slice::F32(v)) => Some((&k[r.clone()], &v[r])),
            _ => None,
        }
    }

    /// `scores[i] = scale · dot(q, K[h][start + i])` for `i < scores.len()`.
    ///
    /// Quantized keys: `q` is rotated (rotated types) and quantized to 8 bits once, on
    /// the stack, and each score is an integer-domain dot (`simd::scores`).
    pub fn scores(&self, h: usize, start: usize, q: &[f32], scale: f32, scores: &mut [f32]) {
        let hd = self.head_dim;
        let (r0, n) = (self.row(h, start), scores.len());
        match self.k {
            Slice::F32(k) => {
                (crate::kernels::kernels().dots)(q, &k[r0 * hd..(r0 + n) * hd], scores);
                for s in scores.iter_mut() {
                    *s *= scale;
                }
            }
            Slice::F16(k) if hd <= MAX_HEAD_DIM => {
                // each key widened into a stack row (F16C when present), then the SIMD dot
                let dots = crate::kernels::kernels().dots;
                let mut buf = [0f32; MAX_HEAD_DIM];
                let keys = &k[r0 * hd..(r0 + n) * hd];
                for (i, key) in keys.chunks_exact(hd).enumerate() {
                    key.convert_to_f32_slice(&mut buf[..hd]);
                    dots(q, &buf[..hd], &mut scores[i..i + 1]);
                    scores[i] *= scale;
                }
            }
            Slice::Bf16(k) if hd <= MAX_HEAD_DIM => {
                let dots = crate::kernels::kernels().dots;
                let mut buf = [0f32; MAX_HEAD_DIM];
                let keys = &k[r0 * hd..(r0 + n) * hd];
                for (i, key) in keys.chunks_exact(hd).enumerate() {
                    for (d, b) in buf.iter_mut().zip(key) {
                        *d = bf16_f32(*b);
                    }
                    dots(q, &buf[..hd], &mut scores[i..i + 1]);
                    scores[i] *= scale;
                }
            }
            Slice::F16(k) => {
                let keys = &k[r0 * hd..(r0 + n) * hd];
                for (s, key) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
                    let mut acc = 0f32;
                    for (a, b) in q.iter().zip(key) {
                        acc += a * b.to_f32();
                    }
                    *s = acc * scale;
                }
            }
            Slice::Bf16(k) => {
                let keys = &k[r0 * hd..(r0 + n) * hd];
                for (s, key) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
                    let mut acc = 0f32;
                    for (a, b) in q.iter().zip(key) {
                        acc += a * bf16_f32(*b);
                    }
                    *s = acc * scale;
                }
            }
            Slice::Q(k, c) => {
                let rb = hd / quant::BLOCK * c.block_bytes();
                let rows = &k[r0 * rb..(r0 + n) * rb];
                let qq = match self.k_rot {
                    Some(g) => {
                        let mut buf = [0f32; MAX_HEAD_DIM];
                        let x = &mut buf[..hd];
                        x.copy_from_slice(q);
                        rotate::rotate(x, g);
                        QueryQ8::new(x)
                    }
                    None => QueryQ8::new(q),
                };
                simd::scores(c, &qq, rows, rb, scores);
                for s in scores.iter_mut() {
                    *s *= scale;
                }
            }
        }
    }

    /// `out = Σ_i weights[i] · V[h][start + i]`.
    ///
    /// Quantized values are accumulated from their codes (`simd::axpys`), with no
    /// dequantized copy; rotated types rotate `out` back at the end.
    pub fn weighted_values(&self, h: usize, start: usize, weights: &[f32], out: &mut [f32]) {
        let hd = self.head_dim;
        let (r0, n) = (self.row(h, start), weights.len());
        out.fill(0.0);
        match self.v {
            Slice::F32(v) => {
                (crate::kernels::kernels().axpys)(weights, &v[r0 * hd..(r0 + n) * hd], out)
            }
            Slice::F16(v) if hd <= MAX_HEAD_DIM => {
                let axpy = crate::kernels::kernels().axpy;
                let mut buf = [0f32; MAX_HEAD_DIM];
                let vals = &v[r0 * hd..(r0 + n) * hd];
                for (w, val) in weights.iter().zip(vals.chunks_exact(hd)) {
                    val.convert_to_f32_slice(&mut buf[..hd]);
                    axpy(*w, &buf[..hd], out);
                }
            }
            Slice::Bf16(v) if hd <= MAX_HEAD_DIM => {
                let axpy = crate::kernels::kernels().axpy;
                let mut buf = [0f32; MAX_HEAD_DIM];
                let vals = &v[r0 * hd..(r0 + n) * hd];
                for (w, val) in weights.iter().zip(vals.chunks_exact(hd)) {
                    for (d, b) in buf.iter_mut().zip(val) {
                        *d = bf16_f32(*b);
                    }
                    axpy(*w, &buf[..hd], out);
                }
            }
            Slice::F16(v) => {
                let vals = &v[r0 * hd..(r0 + n) * hd];
                for (w, val) in weights.iter().zip(vals.chunks_exact(hd)) {
                    for (o, x) in out.iter_mut().zip(val) {
                        *o += w * x.to_f32();
                    }
                }
            }
            Slice::Bf16(v) => {
                let vals = &v[r0 * hd..(r0 + n) * hd];
                for (w, val) in weights.iter().zip(vals.chunks_exact(hd)) {
                    for (o, x) in out.iter_mut().zip(val) {
                        *o += w * bf16_f32(*x);
                    }
                }
            }
            Slice::Q(v, c) => {
                let rb = hd / quant::BLOCK * c.block_bytes();
                simd::axpys(c, weights, &v[r0 * rb..(r0 + n) * rb], rb, out);
                if let Some(g) = self.v_rot {
                    rotate::unrotate(out, g);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_f32(bf16_bits(1.0)), 1.0);
        assert_eq!(bf16_f32(bf16_bits(-2.5)), -2.5);
        let x = 1.0 + 1.0 / 256.0; // exactly halfway between two bf16 values
        assert_eq!(bf16_f32(bf16_bits(x)), 1.0);
        assert!(bf16_f32(bf16_bits(f32::NAN)).is_nan());
    }
}

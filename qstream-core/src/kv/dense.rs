//! Dense (f32 / f16) KV cache.

use half::f16;

use super::KvType;
use crate::{Error, Result};

enum Buf {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Buf {
    fn alloc(kv_type: KvType, n: usize) -> Result<Buf> {
        let oom = |_| Error::OutOfMemory(format!("KV cache of {n} values"));
        Ok(match kv_type {
            KvType::F32 => {
                let mut v = Vec::new();
                v.try_reserve_exact(n).map_err(oom)?;
                v.resize(n, 0.0);
                Buf::F32(v)
            }
            KvType::F16 => {
                let mut v = Vec::new();
                v.try_reserve_exact(n).map_err(oom)?;
                v.resize(n, f16::ZERO);
                Buf::F16(v)
            }
        })
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Buf::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Buf::F16(v) => {
                for (d, s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(*s);
                }
            }
        }
    }
}

/// Keys and values of every layer for up to `n_ctx` positions.
///
/// Layout of K and V: `[layer][kv_head][pos][head_dim]`. The cache does not track how
/// many positions are valid; the session does (`n_past`).
pub struct KvCache {
    kv_type: KvType,
    n_layer: usize,
    n_head_kv: usize,
    head_dim: usize,
    n_ctx: usize,
    k: Buf,
    v: Buf,
}

impl KvCache {
    /// A zeroed cache. Fails with [`Error::OutOfMemory`] when it cannot be allocated.
    pub fn new(
        kv_type: KvType,
        n_layer: usize,
        n_head_kv: usize,
        head_dim: usize,
        n_ctx: usize,
    ) -> Result<KvCache> {
        let n = n_layer
            .checked_mul(n_head_kv)
            .and_then(|x| x.checked_mul(head_dim))
            .and_then(|x| x.checked_mul(n_ctx))
            .ok_or_else(|| Error::OutOfMemory("KV cache size overflows".into()))?;
        Ok(KvCache {
            kv_type,
            n_layer,
            n_head_kv,
            head_dim,
            n_ctx,
            k: Buf::alloc(kv_type, n)?,
            v: Buf::alloc(kv_type, n)?,
        })
    }

    /// Element type.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held by K and V together.
    pub fn memory_bytes(&self) -> usize {
        2 * self.n_layer * self.n_head_kv * self.head_dim * self.n_ctx * self.kv_type.elem_bytes()
    }

    /// Store the keys and values of position `pos` in `layer`: `k` and `v` are
    /// `n_head_kv × head_dim` (heads concatenated, as the projections produce them).
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        debug_assert!(layer < self.n_layer && pos < self.n_ctx);
        debug_assert!(k.len() == self.n_head_kv * hd && v.len() == k.len());
        for h in 0..self.n_head_kv {
            let at = ((layer * self.n_head_kv + h) * self.n_ctx + pos) * hd;
            self.k.write(at, &k[h * hd..(h + 1) * hd]);
            self.v.write(at, &v[h * hd..(h + 1) * hd]);
        }
    }

    /// A read-only view of one layer for attention.
    pub fn layer(&self, layer: usize) -> KvLayer<'_> {
        let stride = self.n_head_kv * self.n_ctx * self.head_dim;
        let r = layer * stride..(layer + 1) * stride;
        let (k, v) = match (&self.k, &self.v) {
            (Buf::F32(k), Buf::F32(v)) => (Slice::F32(&k[r.clone()]), Slice::F32(&v[r])),
            (Buf::F16(k), Buf::F16(v)) => (Slice::F16(&k[r.clone()]), Slice::F16(&v[r])),
            _ => unreachable!("K and V share one type"),
        };
        KvLayer {
            k,
            v,
            n_ctx: self.n_ctx,
            head_dim: self.head_dim,
        }
    }
}

#[derive(Clone, Copy)]
enum Slice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// One layer of the cache: `[kv_head][pos][head_dim]` for K and V.
#[derive(Clone, Copy)]
pub struct KvLayer<'a> {
    k: Slice<'a>,
    v: Slice<'a>,
    n_ctx: usize,
    head_dim: usize,
}

impl KvLayer<'_> {
    #[inline]
    fn at(&self, h: usize, pos: usize) -> usize {
        (h * self.n_ctx + pos) * self.head_dim
    }

    /// Keys and values of KV head `h` for positions `start..start + len`
    /// (`len × head_dim` each) when the cache stores f32; `None` for f16.
    pub fn head_f32(&self, h: usize, start: usize, len: usize) -> Option<(&[f32], &[f32])> {
        let r = self.at(h, start)..self.at(h, start) + len * self.head_dim;
        match (self.k, self.v) {
            (Slice::F32(k), Slice::F32(v)) => Some((&k[r.clone()], &v[r])),
            _ => None,
        }
    }

    /// `scores[i] = scale · dot(q, K[h][start + i])` for `i < scores.len()`.
    pub fn scores(&self, h: usize, start: usize, q: &[f32], scale: f32, scores: &mut [f32]) {
        let hd = self.head_dim;
        let base = self.at(h, start);
        match self.k {
            Slice::F32(k) => {
                let keys = &k[base..base + scores.len() * hd];
                for (s, key) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
                    let mut acc = 0f32;
                    for (a, b) in q.iter().zip(key) {
                        acc += a * b;
                    }
                    *s = acc * scale;
                }
            }
            Slice::F16(k) => {
                let keys = &k[base..base + scores.len() * hd];
                for (s, key) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
                    let mut acc = 0f32;
                    for (a, b) in q.iter().zip(key) {
                        acc += a * b.to_f32();
                    }
                    *s = acc * scale;
                }
            }
        }
    }

    /// `out = Σ_i weights[i] · V[h][start + i]`.
    pub fn weighted_values(&self, h: usize, start: usize, weights: &[f32], out: &mut [f32]) {
        let hd = self.head_dim;
        let base = self.at(h, start);
        out.fill(0.0);
        match self.v {
            Slice::F32(v) => {
                let vals = &v[base..base + weights.len() * hd];
                for (w, val) in weights.iter().zip(vals.chunks_exact(hd)) {
                    for (o, x) in out.iter_mut().zip(val) {
                        *o += w * x;
                    }
                }
            }
            Slice::F16(v) => {
                let vals = &v[base..base + weights.len() * hd];
                for (w, val) in weights.iter().zip(vals.chunks_exact(hd)) {
                    for (o, x) in out.iter_mut().zip(val) {
                        *o += w * x.to_f32();
                    }
                }
            }
        }
    }
}

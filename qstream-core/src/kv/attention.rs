//! A standalone KV cache with attention, for engines other than QStream's own models.
//!
//! Shapes (row-major f32): keys and values are `[n_tokens, n_kv_heads, head_dim]`,
//! queries and the output `[n_tokens, n_q_heads, head_dim]`. Query head `h` reads KV head
//! `h / (n_q_heads / n_kv_heads)`. The queries of [`AttentionCache::attend`] are the last
//! `n_tokens` cached positions: with causal masking query `i` sees positions
//! `0..=len − n_tokens + i`; without it every cached position.

use super::dense::{check_head_dim, KvCache};
use super::KvType;
use crate::{Error, Result};

/// Shape and types of an [`AttentionCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionParams {
    /// Values per head vector.
    pub head_dim: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Query heads (a multiple of `n_kv_heads`).
    pub n_q_heads: usize,
    /// Positions the cache can hold.
    pub capacity: usize,
    /// Element type of the keys.
    pub k_type: KvType,
    /// Element type of the values.
    pub v_type: KvType,
}

/// One layer of K/V for up to `capacity` positions plus causal softmax attention.
pub struct AttentionCache {
    p: AttentionParams,
    kv: KvCache,
    len: usize,
    att: Vec<f32>,
}

impl AttentionCache {
    /// An empty cache. Fails with [`Error::InvalidArgument`] on a zero size, a query head
    /// count that is not a multiple of the KV head count, or a `head_dim` a quantized type
    /// cannot take (a multiple of 32, at most 512); [`Error::OutOfMemory`] when the cache
    /// cannot be allocated.
    pub fn new(p: &AttentionParams) -> Result<AttentionCache> {
        if p.head_dim == 0 || p.n_kv_heads == 0 || p.n_q_heads == 0 || p.capacity == 0 {
            return Err(Error::InvalidArgument(format!(
                "attention cache: head_dim, n_kv_heads, n_q_heads and capacity must be > 0 \
                 (got {}, {}, {}, {})",
                p.head_dim, p.n_kv_heads, p.n_q_heads, p.capacity
            )));
        }
        if !p.n_q_heads.is_multiple_of(p.n_kv_heads) {
            return Err(Error::InvalidArgument(format!(
                "attention cache: n_q_heads {} is not a multiple of n_kv_heads {}",
                p.n_q_heads, p.n_kv_heads
            )));
        }
        check_head_dim(p.k_type, p.head_dim)?;
        check_head_dim(p.v_type, p.head_dim)?;
        let kv = KvCache::new(p.k_type, p.v_type, 1, p.n_kv_heads, p.head_dim, p.capacity)?;
        let mut att = Vec::new();
        att.try_reserve_exact(p.capacity)
            .map_err(|_| Error::OutOfMemory("attention scratch".into()))?;
        att.resize(p.capacity, 0.0);
        Ok(AttentionCache {
            p: *p,
            kv,
            len: 0,
            att,
        })
    }

    /// The parameters it was made with.
    pub fn params(&self) -> &AttentionParams {
        &self.p
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by K and V (the full capacity, allocated up front).
    pub fn memory_bytes(&self) -> usize {
        self.kv.memory_bytes()
    }

    /// Bytes of K and V per cached position.
    pub fn bytes_per_token(&self) -> usize {
        self.kv.bytes_per_token()
    }

    /// Append `n_tokens` positions: `k` and `v` are `[n_tokens, n_kv_heads, head_dim]`.
    pub fn append(&mut self, k: &[f32], v: &[f32], n_tokens: usize) -> Result<()> {
        let row = self.p.n_kv_heads * self.p.head_dim;
        let want = n_tokens.checked_mul(row);
        if want != Some(k.len()) || want != Some(v.len()) {
            return Err(Error::InvalidArgument(format!(
                "append: k and v must hold n_tokens × n_kv_heads × head_dim = {n_tokens} × {} × {} \
                 values (got {} and {})",
                self.p.n_kv_heads,
                self.p.head_dim,
                k.len(),
                v.len()
            )));
        }
        if n_tokens > self.p.capacity - self.len {
            return Err(Error::InvalidArgument(format!(
                "append: {n_tokens} tokens do not fit ({} of {} positions used)",
                self.len, self.p.capacity
            )));
        }
        for t in 0..n_tokens {
            let r = t * row..(t + 1) * row;
            self.kv.write(0, self.len + t, &k[r.clone()], &v[r]);
        }
        self.len += n_tokens;
        Ok(())
    }

    /// Attention of `n_tokens` queries `q` (`[n_tokens, n_q_heads, head_dim]`), the last
    /// `n_tokens` cached positions, into `out` (same shape). `scale` defaults to
    /// `1/√head_dim`. Softmax in f32; quantized K/V attend in the integer domain.
    pub fn attend(
        &mut self,
        q: &[f32],
        n_tokens: usize,
        causal: bool,
        scale: Option<f32>,
        out: &mut [f32],
    ) -> Result<()> {
        let (hd, nq) = (self.p.head_dim, self.p.n_q_heads);
        let want = n_tokens.checked_mul(nq * hd);
        if want != Some(q.len()) || want != Some(out.len()) {
            return Err(Error::InvalidArgument(format!(
                "attend: q and out must hold n_tokens × n_q_heads × head_dim = {n_tokens} × {nq} × {hd} \
                 values (got {} and {})",
                q.len(),
                out.len()
            )));
        }
        if n_tokens > self.len {
            return Err(Error::InvalidArgument(format!(
                "attend: {n_tokens} queries but only {} cached positions (the queries are the \
                 last n_tokens positions; append their keys and values first)",
                self.len
            )));
        }
        let scale = scale.unwrap_or(1.0 / (hd as f32).sqrt());
        if !scale.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "attend: scale {scale} is not finite"
            )));
        }
        let group = nq / self.p.n_kv_heads;
        let layer = self.kv.layer(0);
        for t in 0..n_tokens {
            let visible = if causal {
                self.len - n_tokens + t + 1
            } else {
                self.len
            };
            for h in 0..nq {
                let r = (t * nq + h) * hd..(t * nq + h + 1) * hd;
                let s = &mut self.att[..visible];
                layer.scores(h / group, 0, &q[r.clone()], scale, s);
                softmax(s);
                layer.weighted_values(h / group, 0, s, &mut out[r]);
            }
        }
        Ok(())
    }

    /// Drop every position from `len` on (`len` ≤ [`AttentionCache::len`]).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::InvalidArgument(format!(
                "truncate: {len} is beyond the {} cached positions",
                self.len
            )));
        }
        self.len = len;
        Ok(())
    }
}

/// Numerically stable softmax in place.
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

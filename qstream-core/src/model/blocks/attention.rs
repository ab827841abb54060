//! Causal self-attention over the KV cache: MHA / GQA / MQA (query head `h` reads KV head
//! `h / (n_head / n_head_kv)`), q/k/v from three matrices or one fused `attn_qkv`, optional
//! biases, q/k norms (per head or over the whole projection), RoPE from one of the model's
//! tables, query scale, soft-capped scores and a sliding window — per layer.
//!
//! The cache is used only through its interface (`KvCache::write`, `KvLayer::scores`,
//! `KvLayer::weighted_values`, `KvLayer::head_f32`); score soft-capping and windows happen
//! here, around it.

use rayon::prelude::*;

use super::{add_bias, project, Norm, Src};
use crate::kernels;
use crate::kv::KvCache;
use crate::model::{RunCtx, Scratch};
use crate::nn;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// How q and k are normalised before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// one norm of `head_dim` values per head (Qwen3, Gemma 3)
    PerHead,
    /// one norm over the whole projection (`n_head · head_dim`; OLMo 2)
    Whole,
}

/// Per-layer attention options.
#[derive(Debug, Clone, PartialEq)]
pub struct AttnSpec {
    /// multiplies `q·k` (default `head_dim^-0.5`)
    pub scale: f32,
    /// scores become `cap · tanh(s / cap)` before the softmax (Gemma 2)
    pub softcap: Option<f32>,
    /// keys `k` with `q − window < k ≤ q`; `None` = full causal attention
    pub window: Option<usize>,
    pub qk_norm: QkNorm,
    /// index of the layer's rotary table in `FamilySpec::ropes` (`None`: no RoPE)
    pub rope: Option<usize>,
}

/// The q/k/v projections.
// one per layer, bound once: the variants' size difference costs nothing
#[allow(clippy::large_enum_variant)]
pub enum Qkv {
    /// `[n_head·hd, d]`, `[n_head_kv·hd, d]`, `[n_head_kv·hd, d]` (a fused tensor split into
    /// zero-copy row views also lands here)
    Split { q: Tensor, k: Tensor, v: Tensor },
    /// `[(n_head + 2·n_head_kv)·hd, d]` rows q|k|v that cannot be split (outlier types)
    Fused(Tensor),
}

/// Weights of one attention block.
pub struct AttnWeights {
    pub qkv: Qkv,
    /// the stored projection tensors (reported to observers under their own names)
    pub stored: Vec<Tensor>,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    /// `[d, n_head·hd]`, optional bias `[d]`
    pub wo: Tensor,
    pub bo: Option<Vec<f32>>,
}

/// Model dimensions the block needs.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub d: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub hd: usize,
}

/// Least multiply-adds of one layer's attention (all heads) worth splitting across threads.
const ATTN_PAR_WORK: usize = 256 * 1024;

/// Attention of layer `l` for the `n` tokens at `pos..pos + n`: input from `src`, keys and
/// values written into `kv`, output projection in `s.proj[..n·d]`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    ctx: &RunCtx<'_>,
    spec: &AttnSpec,
    w: &AttnWeights,
    dims: Dims,
    l: usize,
    pos: usize,
    n: usize,
    src: Src<'_>,
    kv: &mut KvCache,
    s: &mut Scratch,
) -> Result<()> {
    let Dims {
        d,
        n_head,
        n_head_kv,
        hd,
    } = dims;
    let (q_dim, kv_dim) = (n_head * hd, n_head_kv * hd);
    let group = n_head / n_head_kv;
    let n_ctx = kv.n_ctx();
    let rope = match spec.rope {
        Some(i) => Some(
            s.ropes
                .get(i)
                .ok_or_else(|| Error::Internal(format!("layer {l}: rotary table {i} missing")))?,
        ),
        None => None,
    };
    // the stored tensors (1 fused or 3), as the observer sees them; no allocation
    let mut obs_buf: [&Tensor; 3] = [&w.wo; 3];
    for (o, t) in obs_buf.iter_mut().zip(&w.stored) {
        *o = t;
    }
    let obs = &obs_buf[..w.stored.len().min(3)];

    // ---- q, k, v (input norm fused into the first mat-mul) ----
    match &w.qkv {
        Qkv::Split { q, k, v } => project(
            ctx,
            src,
            &s.x,
            &mut s.xb,
            d,
            n,
            &[q, k, v],
            obs,
            &mut [
                &mut s.q[..n * q_dim],
                &mut s.k[..n * kv_dim],
                &mut s.v[..n * kv_dim],
            ],
        ),
        Qkv::Fused(t) => {
            let all = q_dim + 2 * kv_dim;
            if s.qkv.len() < n * all {
                s.qkv.resize(s.max_batch.max(n) * all, 0.0);
            }
            project(
                ctx,
                src,
                &s.x,
                &mut s.xb,
                d,
                n,
                &[t],
                obs,
                &mut [&mut s.qkv[..n * all]],
            );
            for tk in 0..n {
                let row = &s.qkv[tk * all..(tk + 1) * all];
                s.q[tk * q_dim..(tk + 1) * q_dim].copy_from_slice(&row[..q_dim]);
                s.k[tk * kv_dim..(tk + 1) * kv_dim].copy_from_slice(&row[q_dim..q_dim + kv_dim]);
                s.v[tk * kv_dim..(tk + 1) * kv_dim].copy_from_slice(&row[q_dim + kv_dim..]);
            }
        }
    }
    add_bias(&mut s.q[..n * q_dim], w.bq.as_deref());
    add_bias(&mut s.k[..n * kv_dim], w.bk.as_deref());
    add_bias(&mut s.v[..n * kv_dim], w.bv.as_deref());

    // ---- q/k norms, RoPE, cache write ----
    for t in 0..n {
        let q = &mut s.q[t * q_dim..(t + 1) * q_dim];
        let k = &mut s.k[t * kv_dim..(t + 1) * kv_dim];
        if let Some(qn) = &w.q_norm {
            qn.apply_inplace(q);
        }
        if let Some(kn) = &w.k_norm {
            kn.apply_inplace(k);
        }
        if let Some(rope) = rope {
            rope.apply_heads(q, hd, pos + t);
            rope.apply_heads(k, hd, pos + t);
        }
        kv.write(l, pos + t, k, &s.v[t * kv_dim..(t + 1) * kv_dim]);
    }

    // ---- heads in parallel; output head-major `[n_head][n][hd]` in att_out ----
    let layer = kv.layer(l);
    let q_all = &s.q[..n * q_dim];
    let (window, scale, cap) = (spec.window, spec.scale, spec.softcap);
    let head = |(h, (o, att)): (usize, (&mut [f32], &mut [f32]))| {
        for t in 0..n {
            let qh = &q_all[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
            nn::attention_capped(
                qh,
                &layer,
                h / group,
                pos + t,
                window,
                scale,
                cap,
                att,
                &mut o[t * hd..(t + 1) * hd],
            );
        }
    };
    // Threads only pay off when the heads have real work (long context or batch):
    // about 2·n·(pos + n)·hd flops per head.
    let work = n * (pos + n) * hd * n_head;
    if work >= ATTN_PAR_WORK && rayon::current_num_threads() > 1 {
        s.att_out[..n * q_dim]
            .par_chunks_mut(n * hd)
            .zip(s.att.par_chunks_mut(n_ctx))
            .enumerate()
            .for_each(head);
    } else {
        s.att_out[..n * q_dim]
            .chunks_mut(n * hd)
            .zip(s.att.chunks_mut(n_ctx))
            .enumerate()
            .for_each(head);
    }
    // Back to token-major `[n][n_head·hd]`, reusing q.
    for h in 0..n_head {
        for t in 0..n {
            s.q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd]
                .copy_from_slice(&s.att_out[(h * n + t) * hd..(h * n + t + 1) * hd]);
        }
    }

    // ---- output projection ----
    kernels::matmul_in(
        &ctx.kernels,
        &w.wo,
        &s.q[..n * q_dim],
        n,
        &mut s.proj[..n * d],
    );
    ctx.observe(&[&w.wo], &s.q[..n * q_dim], n);
    add_bias(&mut s.proj[..n * d], w.bo.as_deref());
    Ok(())
}

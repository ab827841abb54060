//! The blocks every family composes: [`norm`], [`attention`], [`mlp`] (rotary tables:
//! [`crate::nn::RopeTable`]). Each block reads its input from the [`Scratch`] as a [`Src`]
//! says and leaves its output in `Scratch::proj` (`n × n_embd`); the decoder adds it to the
//! residual stream. The blocks' inputs and outputs live in `super::Scratch`.

pub mod attention;
pub mod mlp;
pub mod moe;
pub mod norm;

pub use norm::{Norm, NormKind};

use super::RunCtx;
use crate::kernels;
use crate::nn;
use crate::tensor::Tensor;

/// Where a block's input rows come from.
#[derive(Clone, Copy)]
pub enum Src<'a> {
    /// the norm of the residual stream `Scratch::x`, computed into `Scratch::xb` inside the
    /// first mat-mul (fused producer)
    Norm(&'a Norm),
    /// the residual stream `Scratch::x` as it is (OLMo 2: no pre-norm)
    X,
    /// `Scratch::xb` as an earlier block left it (parallel blocks share one norm)
    Xb,
}

/// `outs[i] = ws[i] · rows(src)` for the first `n` rows (`d` values each), reporting the
/// input to the observer as the input of `obs` (the stored tensors, e.g. a fused `attn_qkv`
/// split into views for the kernels).
#[allow(clippy::too_many_arguments)]
pub(crate) fn project(
    ctx: &RunCtx<'_>,
    src: Src<'_>,
    x: &[f32],
    xb: &mut [f32],
    d: usize,
    n: usize,
    ws: &[&Tensor],
    obs: &[&Tensor],
    outs: &mut [&mut [f32]],
) {
    match src {
        Src::Norm(norm) => {
            let xb = &mut xb[..n * d];
            kernels::matmul_multi_prep_in(&ctx.kernels, ws, outs, xb, n, norm.prep(&x[..n * d]));
            ctx.observe(obs, xb, n);
        }
        Src::X => {
            kernels::matmul_multi_in(&ctx.kernels, ws, outs, &x[..n * d], n);
            ctx.observe(obs, &x[..n * d], n);
        }
        Src::Xb => {
            kernels::matmul_multi_in(&ctx.kernels, ws, outs, &xb[..n * d], n);
            ctx.observe(obs, &xb[..n * d], n);
        }
    }
}

/// Add `bias` to every row of `xs` (no-op without one).
#[inline]
pub(crate) fn add_bias(xs: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in xs.chunks_exact_mut(b.len()) {
            nn::add_inplace(row, b);
        }
    }
}

/// `x += scale · y` (`scale = 1` is a plain add, bit for bit).
#[inline]
pub(crate) fn add_scaled(x: &mut [f32], y: &[f32], scale: f32) {
    if scale == 1.0 {
        nn::add_inplace(x, y);
    } else {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b * scale;
        }
    }
}

//! Feed-forward blocks: gated (`down · (act(gate·x) ⊙ up·x)`: SwiGLU, GeGLU) or plain
//! (`down · act(up·x + b_up) + b_down`: GPT-2, Phi, GPT-J, StarCoder2), any activation,
//! optional biases. The activation is a fused producer of the down projection
//! (`Prep::Gated` / `Prep::Act`): computed and quantized in one pass.

use super::{add_bias, project, Src};
use crate::kernels::{self, Prep};
use crate::model::config::Activation;
use crate::model::{RunCtx, Scratch};
use crate::tensor::Tensor;

/// Weights of one MLP block (`d` = n_embd, `ff` = n_ff).
pub struct MlpWeights {
    /// `[ff, d]` (gated MLPs), optional bias `[ff]`
    pub gate: Option<Tensor>,
    pub b_gate: Option<Vec<f32>>,
    /// `[ff, d]`, optional bias `[ff]`
    pub up: Tensor,
    pub b_up: Option<Vec<f32>>,
    /// `[d, ff]`, optional bias `[d]`
    pub down: Tensor,
    pub b_down: Option<Vec<f32>>,
}

/// The MLP for `n` tokens: input from `src`, output in `s.proj[..n·d]`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    ctx: &RunCtx<'_>,
    act: Activation,
    w: &MlpWeights,
    d: usize,
    ff: usize,
    n: usize,
    src: Src<'_>,
    s: &mut Scratch,
) {
    match &w.gate {
        Some(g) => {
            project(
                ctx,
                src,
                &s.x,
                &mut s.xb,
                d,
                n,
                &[&w.up, g],
                &[&w.up, g],
                &mut [&mut s.hb2[..n * ff], &mut s.hb[..n * ff]],
            );
            add_bias(&mut s.hb[..n * ff], w.b_gate.as_deref());
            add_bias(&mut s.hb2[..n * ff], w.b_up.as_deref());
            // act(gate) ⊙ up, quantized for the down projection in the same pass
            kernels::matmul_multi_prep_in(
                &ctx.kernels,
                &[&w.down],
                &mut [&mut s.proj[..n * d]],
                &mut s.hb[..n * ff],
                n,
                Prep::Gated {
                    up: &s.hb2[..n * ff],
                    act,
                },
            );
        }
        None => {
            project(
                ctx,
                src,
                &s.x,
                &mut s.xb,
                d,
                n,
                &[&w.up],
                &[&w.up],
                &mut [&mut s.hb[..n * ff]],
            );
            // act(up + b), quantized for the down projection in the same pass
            kernels::matmul_multi_prep_in(
                &ctx.kernels,
                &[&w.down],
                &mut [&mut s.proj[..n * d]],
                &mut s.hb[..n * ff],
                n,
                Prep::Act {
                    b: w.b_up.as_deref(),
                    act,
                },
            );
        }
    }
    ctx.observe(&[&w.down], &s.hb[..n * ff], n);
    add_bias(&mut s.proj[..n * d], w.b_down.as_deref());
}

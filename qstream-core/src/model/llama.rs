//! Llama-family decoder: Llama 1/2/3 (incl. llama3 RoPE scaling), SmolLM, Mistral
//! (sliding window), Qwen2 (q/k/v biases), Qwen3 (per-head q/k RMSNorm).
//!
//! Pre-norm blocks: `x += Wo·attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x))`, then
//! `x += Wdown·(act(Wgate·n(x)) ⊙ Wup·n(x))`; final norm and LM head. MHA, GQA and MQA
//! (query head `h` reads KV head `h / (n_head / n_head_kv)`).

use std::collections::HashMap;

use rayon::prelude::*;

use super::names::{self, layer_name};
use super::{Architecture, LogitsFor, ModelConfig, Scratch};
use crate::kernels::{self, Prep};
use crate::kv::KvCache;
use crate::nn;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Weights of one transformer block (`d` = n_embd, `hd` = head_dim, `ff` = n_ff).
struct LayerWeights {
    /// `[d]`
    attn_norm: Vec<f32>,
    /// `[n_head·hd, d]`, optional bias `[n_head·hd]`
    wq: Tensor,
    bq: Option<Vec<f32>>,
    /// `[n_head_kv·hd, d]`, optional bias `[n_head_kv·hd]`
    wk: Tensor,
    bk: Option<Vec<f32>>,
    /// `[n_head_kv·hd, d]`, optional bias `[n_head_kv·hd]`
    wv: Tensor,
    bv: Option<Vec<f32>>,
    /// per-head RMSNorm weights `[hd]` (Qwen3)
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    /// `[d, n_head·hd]`, optional bias `[d]`
    wo: Tensor,
    bo: Option<Vec<f32>>,
    /// `[d]`
    ffn_norm: Vec<f32>,
    /// `[ff, d]` (absent for a plain MLP)
    w_gate: Option<Tensor>,
    /// `[ff, d]`
    w_up: Tensor,
    /// `[d, ff]`
    w_down: Tensor,
}

/// A bound Llama-family model.
pub struct Llama {
    cfg: ModelConfig,
    /// `[n_vocab, d]`
    token_embd: Tensor,
    layers: Vec<LayerWeights>,
    /// `[d]`
    output_norm: Vec<f32>,
    /// `[n_vocab, d]` (the token embedding when tied)
    output: Tensor,
}

/// Looks tensors up by canonical name and checks their shapes against the config.
struct Binder<'a> {
    tensors: &'a HashMap<String, Tensor>,
}

impl Binder<'_> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::corrupt(format!("missing tensor {name}")))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.shape != [rows, cols] {
            return Err(Error::corrupt(format!(
                "tensor {name}: shape {:?}, expected [{rows}, {cols}]",
                t.shape
            )));
        }
        kernels::validate(t)?;
        Ok(t.clone())
    }

    fn opt_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Option<Tensor>> {
        if self.tensors.contains_key(name) {
            self.matrix(name, rows, cols).map(Some)
        } else {
            Ok(None)
        }
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        let ok = t.shape == [n] || t.shape == [1, n];
        if !ok {
            return Err(Error::corrupt(format!(
                "tensor {name}: shape {:?}, expected [{n}]",
                t.shape
            )));
        }
        kernels::validate(t)?;
        t.to_f32()
            .map_err(|e| Error::corrupt(format!("tensor {name}: {e}")))
    }

    fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        if self.tensors.contains_key(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Llama {
    /// Bind and validate every tensor `config` needs.
    pub fn bind(config: &ModelConfig, tensors: &HashMap<String, Tensor>) -> Result<Llama> {
        let c = config;
        let (d, hd, ff, vocab) = (c.n_embd, c.head_dim, c.n_ff, c.n_vocab);
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_head_kv * hd);
        if c.moe.is_some() {
            return Err(Error::UnsupportedArch(format!(
                "{} with mixture of experts",
                c.arch.name()
            )));
        }
        if c.norm != super::config::NormType::RmsNorm {
            return Err(Error::UnsupportedArch(format!(
                "{} with LayerNorm",
                c.arch.name()
            )));
        }
        let b = Binder { tensors };
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| layer_name(i, s);
            let bias = |s: &str, len: usize, required: bool| -> Result<Option<Vec<f32>>> {
                let name = n(&format!("{s}.bias"));
                if required {
                    b.vector(&name, len).map(Some)
                } else {
                    b.opt_vector(&name, len)
                }
            };
            let (q_norm, k_norm) = if c.qk_norm {
                (
                    Some(b.vector(&n(names::ATTN_Q_NORM), hd)?),
                    Some(b.vector(&n(names::ATTN_K_NORM), hd)?),
                )
            } else {
                (None, None)
            };
            let w_gate = if c.gated_mlp {
                Some(b.matrix(&n(names::FFN_GATE), ff, d)?)
            } else {
                b.opt_matrix(&n(names::FFN_GATE), ff, d)?
            };
            layers.push(LayerWeights {
                attn_norm: b.vector(&n(names::ATTN_NORM), d)?,
                wq: b.matrix(&n(names::ATTN_Q), q_dim, d)?,
                bq: bias(names::ATTN_Q, q_dim, c.qkv_bias)?,
                wk: b.matrix(&n(names::ATTN_K), kv_dim, d)?,
                bk: bias(names::ATTN_K, kv_dim, c.qkv_bias)?,
                wv: b.matrix(&n(names::ATTN_V), kv_dim, d)?,
                bv: bias(names::ATTN_V, kv_dim, c.qkv_bias)?,
                q_norm,
                k_norm,
                wo: b.matrix(&n(names::ATTN_OUT), d, q_dim)?,
                bo: bias(names::ATTN_OUT, d, false)?,
                ffn_norm: b.vector(&n(names::FFN_NORM), d)?,
                w_gate,
                w_up: b.matrix(&n(names::FFN_UP), ff, d)?,
                w_down: b.matrix(&n(names::FFN_DOWN), d, ff)?,
            });
        }
        let token_embd = b.matrix(names::TOKEN_EMBD, vocab, d)?;
        let output = match b.opt_matrix(names::OUTPUT, vocab, d)? {
            Some(t) => t,
            None => token_embd.clone(), // tied head
        };
        Ok(Llama {
            cfg: c.clone(),
            token_embd,
            layers,
            output_norm: b.vector(names::OUTPUT_NORM, d)?,
            output,
        })
    }
}

/// Least multiply-adds of one layer's attention (all heads) worth splitting across threads.
const ATTN_PAR_WORK: usize = 256 * 1024;

fn add_bias(xs: &mut [f32], bias: &Option<Vec<f32>>) {
    if let Some(b) = bias {
        for row in xs.chunks_exact_mut(b.len()) {
            nn::add_inplace(row, b);
        }
    }
}

impl Architecture for Llama {
    fn forward(
        &self,
        tokens: &[u32],
        pos: usize,
        kv: &mut KvCache,
        s: &mut Scratch,
        which: LogitsFor,
        out: &mut [f32],
    ) -> Result<()> {
        let c = &self.cfg;
        let n = tokens.len();
        let (d, hd, ff, eps) = (c.n_embd, c.head_dim, c.n_ff, c.norm_eps);
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_head_kv * hd);
        let group = c.n_head / c.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let n_ctx = kv.n_ctx();
        if n == 0 || n > s.max_batch || pos + n > n_ctx {
            return Err(Error::Internal(format!(
                "forward: batch {n} at {pos} (n_ctx {n_ctx})"
            )));
        }

        // Token embeddings.
        for (t, &tok) in tokens.iter().enumerate() {
            kernels::get_row(&self.token_embd, tok as usize, &mut s.x[t * d..(t + 1) * d]);
        }

        for (l, w) in self.layers.iter().enumerate() {
            // ---- attention ----
            // RMSNorm into xb, quantized for the integer kernels in the same pass
            kernels::matmul_multi_prep(
                &[&w.wq, &w.wk, &w.wv],
                &mut [
                    &mut s.q[..n * q_dim],
                    &mut s.k[..n * kv_dim],
                    &mut s.v[..n * kv_dim],
                ],
                &mut s.xb[..n * d],
                n,
                Prep::RmsNorm {
                    x: &s.x[..n * d],
                    w: &w.attn_norm,
                    eps,
                },
            );
            add_bias(&mut s.q[..n * q_dim], &w.bq);
            add_bias(&mut s.k[..n * kv_dim], &w.bk);
            add_bias(&mut s.v[..n * kv_dim], &w.bv);
            for t in 0..n {
                let q = &mut s.q[t * q_dim..(t + 1) * q_dim];
                let k = &mut s.k[t * kv_dim..(t + 1) * kv_dim];
                if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
                    q.chunks_exact_mut(hd)
                        .for_each(|h| nn::rms_norm_inplace(h, qn, eps));
                    k.chunks_exact_mut(hd)
                        .for_each(|h| nn::rms_norm_inplace(h, kn, eps));
                }
                if let Some(rope) = &s.rope {
                    rope.apply_heads(q, hd, pos + t);
                    rope.apply_heads(k, hd, pos + t);
                }
                kv.write(l, pos + t, k, &s.v[t * kv_dim..(t + 1) * kv_dim]);
            }

            // Heads in parallel; output head-major `[n_head][n][hd]` in att_out.
            let layer = kv.layer(l);
            let q_all = &s.q[..n * q_dim];
            let window = c.sliding_window;
            let head = |(h, (o, att)): (usize, (&mut [f32], &mut [f32]))| {
                for t in 0..n {
                    let qh = &q_all[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
                    nn::attention(
                        qh,
                        &layer,
                        h / group,
                        pos + t,
                        window,
                        scale,
                        att,
                        &mut o[t * hd..(t + 1) * hd],
                    );
                }
            };
            // Threads only pay off when the heads have real work (long context or batch):
            // about 2·n·(pos + n)·hd flops per head.
            let work = n * (pos + n) * hd * c.n_head;
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
            for h in 0..c.n_head {
                for t in 0..n {
                    s.q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd]
                        .copy_from_slice(&s.att_out[(h * n + t) * hd..(h * n + t + 1) * hd]);
                }
            }
            kernels::matmul(&w.wo, &s.q[..n * q_dim], n, &mut s.proj[..n * d]);
            add_bias(&mut s.proj[..n * d], &w.bo);
            nn::add_inplace(&mut s.x[..n * d], &s.proj[..n * d]);

            // ---- MLP ----
            let norm = Prep::RmsNorm {
                x: &s.x[..n * d],
                w: &w.ffn_norm,
                eps,
            };
            match &w.w_gate {
                Some(g) => {
                    kernels::matmul_multi_prep(
                        &[&w.w_up, g],
                        &mut [&mut s.hb2[..n * ff], &mut s.hb[..n * ff]],
                        &mut s.xb[..n * d],
                        n,
                        norm,
                    );
                    // act(gate) ⊙ up, quantized for the down projection in the same pass
                    kernels::matmul_multi_prep(
                        &[&w.w_down],
                        &mut [&mut s.proj[..n * d]],
                        &mut s.hb[..n * ff],
                        n,
                        Prep::Gated {
                            up: &s.hb2[..n * ff],
                            act: c.act,
                        },
                    );
                }
                None => {
                    kernels::matmul_multi_prep(
                        &[&w.w_up],
                        &mut [&mut s.hb2[..n * ff]],
                        &mut s.xb[..n * d],
                        n,
                        norm,
                    );
                    let f: fn(f32) -> f32 = match c.act {
                        super::config::Activation::Silu => nn::silu,
                        super::config::Activation::Gelu => nn::gelu,
                        super::config::Activation::GeluTanh => nn::gelu_tanh,
                        super::config::Activation::Relu => |x| x.max(0.0),
                    };
                    for (h, u) in s.hb[..n * ff].iter_mut().zip(&s.hb2[..n * ff]) {
                        *h = f(*u);
                    }
                    kernels::matmul(&w.w_down, &s.hb[..n * ff], n, &mut s.proj[..n * d]);
                }
            }
            nn::add_inplace(&mut s.x[..n * d], &s.proj[..n * d]);
            s.trace_layer(l, pos, n, d);
        }

        // ---- final norm + LM head ----
        let vocab = c.n_vocab;
        match which {
            LogitsFor::Last => {
                let t = n - 1;
                kernels::matmul_multi_prep(
                    &[&self.output],
                    &mut [&mut out[..vocab]],
                    &mut s.xb[..d],
                    1,
                    Prep::RmsNorm {
                        x: &s.x[t * d..(t + 1) * d],
                        w: &self.output_norm,
                        eps,
                    },
                );
            }
            LogitsFor::All => {
                kernels::matmul_multi_prep(
                    &[&self.output],
                    &mut [&mut out[..n * vocab]],
                    &mut s.xb[..n * d],
                    n,
                    Prep::RmsNorm {
                        x: &s.x[..n * d],
                        w: &self.output_norm,
                        eps,
                    },
                );
            }
        }
        Ok(())
    }
}

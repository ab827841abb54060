//! The one decoder forward pass every dense family runs.
//!
//! A family ([`super::families`]) describes itself as a [`FamilySpec`]; [`Decoder::bind`]
//! binds the canonical tensors ([`super::names`]) that description needs, checking every
//! shape, and [`Decoder`]'s `forward` runs, for each layer, the wiring its [`LayerSpec`]
//! names:
//!
//! ```text
//! PreNorm   x += r·attn(n₁(x));            x += r·mlp(n₂(x))              Llama, GPT-2, …
//! Sandwich  x += r·n₃(attn(n₁(x)));        x += r·n₄(mlp(n₂(x)))          Gemma 2/3
//! PostNorm  x += r·n₃(attn(x));            x += r·n₄(mlp(x))              OLMo 2
//! Parallel  h = n₁(x);  x += r·attn(h) + r·mlp(h)                          Phi, GPT-J
//! ```
//!
//! with `n₁ = attn_norm`, `n₂ = ffn_norm`, `n₃ = post_attention_norm`, `n₄ = post_ffw_norm`
//! and `r` the residual scale (Granite). Around the layers: token embedding × `embd_scale`
//! (+ learned positions `pos_embd`), final norm, LM head (+ `output.bias`) × `logit_scale`,
//! soft-capped when `final_softcap` is set.

use std::collections::HashMap;

use super::blocks::attention::{self, AttnSpec, AttnWeights, Dims, QkNorm, Qkv};
use super::blocks::mlp::{self, MlpWeights};
use super::blocks::{add_bias, add_scaled, Norm, NormKind, Src};
use super::config::{Activation, ModelConfig, RopeConfig};
use super::names::{self, layer_name};
use super::{Architecture, LogitsFor, RunCtx, Scratch};
use crate::kernels;
use crate::kv::KvCache;
use crate::nn;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// How a layer's blocks are wired (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    PreNorm,
    Sandwich,
    PostNorm,
    Parallel,
}

/// How one layer composes the blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub wiring: Wiring,
    pub attn: AttnSpec,
    /// gated (gate/up/down) or plain (up/down) MLP
    pub gated: bool,
    pub act: Activation,
    /// multiplies each block's output before the residual add (Granite)
    pub residual_scale: f32,
}

/// How a family composes the blocks: the whole description of a dense architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilySpec {
    /// every norm of the model (block norms, q/k norms, final norm)
    pub norm: NormKind,
    pub layers: Vec<LayerSpec>,
    /// the rotary tables the layers index (`AttnSpec::rope`)
    pub ropes: Vec<RopeConfig>,
    /// multiplies the token embedding (Gemma `√d`, Granite `embedding_multiplier`)
    pub embd_scale: f32,
    /// learned absolute positions (`pos_embd`, GPT-2)
    pub pos_embd: bool,
    /// multiplies the logits (Granite `1 / logits_scaling`)
    pub logit_scale: f32,
    /// logits become `cap · tanh(z / cap)` (Gemma 2)
    pub final_softcap: Option<f32>,
}

impl FamilySpec {
    /// The Llama description of `c`: RMSNorm pre-norm layers, `head_dim^-0.5` scaling, the
    /// config's RoPE, window, q/k norm (per head), activation and MLP kind. Families start
    /// here and change what differs.
    pub fn llama_like(c: &ModelConfig) -> FamilySpec {
        let layer = LayerSpec {
            wiring: Wiring::PreNorm,
            attn: AttnSpec {
                scale: 1.0 / (c.head_dim as f32).sqrt(),
                softcap: None,
                window: c.sliding_window,
                qk_norm: if c.qk_norm {
                    QkNorm::PerHead
                } else {
                    QkNorm::None
                },
                rope: c.rope.as_ref().map(|_| 0),
            },
            gated: c.gated_mlp,
            act: c.act,
            residual_scale: 1.0,
        };
        FamilySpec {
            norm: match c.norm {
                super::config::NormType::RmsNorm => NormKind::Rms,
                super::config::NormType::LayerNorm => NormKind::Layer,
            },
            layers: vec![layer; c.n_layer],
            ropes: c.rope.iter().cloned().collect(),
            embd_scale: 1.0,
            pos_embd: false,
            logit_scale: 1.0,
            final_softcap: None,
        }
    }

    /// Set every layer's wiring.
    pub fn wiring(mut self, w: Wiring) -> FamilySpec {
        for l in &mut self.layers {
            l.wiring = w;
        }
        self
    }
}

/// Which layers use sliding-window attention: `extra.layer_types` (transformers ≥ 4.5x:
/// `"sliding_attention"` / `"full_attention"`), else `default(layer)`.
pub fn sliding_layers(c: &ModelConfig, default: impl Fn(usize) -> bool) -> Result<Vec<bool>> {
    match c.extra.get("layer_types").and_then(|v| v.as_array()) {
        Some(a) => {
            if a.len() != c.n_layer {
                return Err(Error::corrupt(format!(
                    "model config: layer_types has {} entries for {} layers",
                    a.len(),
                    c.n_layer
                )));
            }
            a.iter()
                .map(|v| match v.as_str() {
                    Some("sliding_attention") | Some("chunked_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    _ => Err(Error::corrupt(format!(
                        "model config: layer_types entry {v}"
                    ))),
                })
                .collect()
        }
        None => Ok((0..c.n_layer).map(default).collect()),
    }
}

/// One bound layer.
struct Layer {
    spec: LayerSpec,
    attn_norm: Option<Norm>,
    attn: AttnWeights,
    post_attn_norm: Option<Norm>,
    ffn_norm: Option<Norm>,
    mlp: MlpWeights,
    post_ffn_norm: Option<Norm>,
}

/// A bound dense decoder of any family.
pub struct Decoder {
    cfg: ModelConfig,
    spec: FamilySpec,
    /// `[n_vocab, d]`
    token_embd: Tensor,
    /// `[n_pos, d]` (learned positions)
    pos_embd: Option<Tensor>,
    layers: Vec<Layer>,
    output_norm: Norm,
    /// `[n_vocab, d]` (the token embedding when tied), optional bias `[n_vocab]`
    output: Tensor,
    output_bias: Option<Vec<f32>>,
}

/// Looks tensors up by canonical name and checks their shapes against the config.
struct Binder<'a> {
    tensors: &'a HashMap<String, Tensor>,
}

impl Binder<'_> {
    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

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
        if self.has(name) {
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
        if self.has(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The norm `name` of `n` values (bias `name.bias` for LayerNorm, when present).
    fn norm(&self, kind: NormKind, name: &str, n: usize, eps: f32) -> Result<Norm> {
        let w = self.vector(name, n)?;
        let b = if kind == NormKind::Layer {
            self.opt_vector(&format!("{name}.bias"), n)?
        } else {
            None
        };
        Ok(Norm::new(kind, w, b, eps))
    }
}

impl Decoder {
    /// Bind and validate every tensor `spec` needs.
    pub fn bind(
        config: &ModelConfig,
        spec: FamilySpec,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Decoder> {
        let c = config;
        let (d, hd, ff, vocab, eps) = (c.n_embd, c.head_dim, c.n_ff, c.n_vocab, c.norm_eps);
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_head_kv * hd);
        if spec.layers.len() != c.n_layer {
            return Err(Error::Internal(format!(
                "{}: {} layer specs for {} layers",
                c.arch.name(),
                spec.layers.len(),
                c.n_layer
            )));
        }
        let b = Binder { tensors };
        let nk = spec.norm;
        let mut layers = Vec::with_capacity(c.n_layer);
        for (i, ls) in spec.layers.iter().enumerate() {
            let n = |s: &str| layer_name(i, s);
            if let Some(r) = ls.attn.rope {
                let rc = spec.ropes.get(r).ok_or_else(|| {
                    Error::Internal(format!("layer {i}: rotary table {r} missing"))
                })?;
                if rc.dim > hd {
                    return Err(Error::corrupt(format!(
                        "rope dim {} > head_dim {hd}",
                        rc.dim
                    )));
                }
            }
            let bias = |s: &str, len: usize, required: bool| -> Result<Option<Vec<f32>>> {
                let name = n(&format!("{s}.bias"));
                if required {
                    b.vector(&name, len).map(Some)
                } else {
                    b.opt_vector(&name, len)
                }
            };
            // q/k/v: three matrices, or one fused `attn_qkv` split into row views
            let fused = n(names::ATTN_QKV);
            let (qkv, stored, bq, bk, bv) = if b.has(&fused) {
                let t = b.matrix(&fused, q_dim + 2 * kv_dim, d)?;
                let (fb, fe) = (q_dim, q_dim + kv_dim);
                let views = (
                    t.rows_view(&format!("{fused}[q]"), 0, fb),
                    t.rows_view(&format!("{fused}[k]"), fb, fe),
                    t.rows_view(&format!("{fused}[v]"), fe, fe + kv_dim),
                );
                let qkv = match views {
                    (Some(q), Some(k), Some(v)) => Qkv::Split { q, k, v },
                    _ => Qkv::Fused(t.clone()),
                };
                let (bq, bk, bv) = match bias(names::ATTN_QKV, q_dim + 2 * kv_dim, c.qkv_bias)? {
                    Some(all) => (
                        Some(all[..fb].to_vec()),
                        Some(all[fb..fe].to_vec()),
                        Some(all[fe..].to_vec()),
                    ),
                    None => (None, None, None),
                };
                (qkv, vec![t], bq, bk, bv)
            } else {
                let q = b.matrix(&n(names::ATTN_Q), q_dim, d)?;
                let k = b.matrix(&n(names::ATTN_K), kv_dim, d)?;
                let v = b.matrix(&n(names::ATTN_V), kv_dim, d)?;
                let stored = vec![q.clone(), k.clone(), v.clone()];
                (
                    Qkv::Split { q, k, v },
                    stored,
                    bias(names::ATTN_Q, q_dim, c.qkv_bias)?,
                    bias(names::ATTN_K, kv_dim, c.qkv_bias)?,
                    bias(names::ATTN_V, kv_dim, c.qkv_bias)?,
                )
            };
            let (q_norm, k_norm) = match ls.attn.qk_norm {
                QkNorm::None => (None, None),
                QkNorm::PerHead => (
                    Some(b.norm(nk, &n(names::ATTN_Q_NORM), hd, eps)?),
                    Some(b.norm(nk, &n(names::ATTN_K_NORM), hd, eps)?),
                ),
                QkNorm::Whole => (
                    Some(b.norm(nk, &n(names::ATTN_Q_NORM), q_dim, eps)?),
                    Some(b.norm(nk, &n(names::ATTN_K_NORM), kv_dim, eps)?),
                ),
            };
            let attn = AttnWeights {
                qkv,
                stored,
                bq,
                bk,
                bv,
                q_norm,
                k_norm,
                wo: b.matrix(&n(names::ATTN_OUT), d, q_dim)?,
                bo: bias(names::ATTN_OUT, d, false)?,
            };
            let gate = if ls.gated {
                Some(b.matrix(&n(names::FFN_GATE), ff, d)?)
            } else {
                None
            };
            let mlp = MlpWeights {
                b_gate: if gate.is_some() {
                    bias(names::FFN_GATE, ff, false)?
                } else {
                    None
                },
                gate,
                up: b.matrix(&n(names::FFN_UP), ff, d)?,
                b_up: bias(names::FFN_UP, ff, false)?,
                down: b.matrix(&n(names::FFN_DOWN), d, ff)?,
                b_down: bias(names::FFN_DOWN, d, false)?,
            };
            let w = ls.wiring;
            let norm = |name: &str| b.norm(nk, &n(name), d, eps);
            layers.push(Layer {
                spec: ls.clone(),
                attn_norm: match w {
                    Wiring::PostNorm => None,
                    _ => Some(norm(names::ATTN_NORM)?),
                },
                ffn_norm: match w {
                    Wiring::PreNorm | Wiring::Sandwich => Some(norm(names::FFN_NORM)?),
                    _ => None,
                },
                post_attn_norm: match w {
                    Wiring::Sandwich | Wiring::PostNorm => Some(norm(names::POST_ATTN_NORM)?),
                    _ => None,
                },
                post_ffn_norm: match w {
                    Wiring::Sandwich | Wiring::PostNorm => Some(norm(names::POST_FFW_NORM)?),
                    _ => None,
                },
                attn,
                mlp,
            });
        }
        let token_embd = b.matrix(names::TOKEN_EMBD, vocab, d)?;
        let pos_embd = if spec.pos_embd {
            let t = b.get(names::POS_EMBD)?;
            if t.shape.len() != 2 || t.cols() != d || t.rows() == 0 {
                return Err(Error::corrupt(format!(
                    "tensor {}: shape {:?}, expected [n_pos, {d}]",
                    names::POS_EMBD,
                    t.shape
                )));
            }
            kernels::validate(t)?;
            Some(t.clone())
        } else {
            None
        };
        let output = match b.opt_matrix(names::OUTPUT, vocab, d)? {
            Some(t) => t,
            None => token_embd.clone(), // tied head
        };
        Ok(Decoder {
            cfg: c.clone(),
            output_norm: b.norm(nk, names::OUTPUT_NORM, d, eps)?,
            output_bias: b.opt_vector(&format!("{}.bias", names::OUTPUT), vocab)?,
            spec,
            token_embd,
            pos_embd,
            layers,
            output,
        })
    }
}

/// The input of a block: its pre-norm of the residual stream, or the stream itself.
fn pre(norm: &Option<Norm>) -> Src<'_> {
    match norm {
        Some(n) => Src::Norm(n),
        None => Src::X,
    }
}

impl Architecture for Decoder {
    fn forward(
        &self,
        ctx: &RunCtx<'_>,
        tokens: &[u32],
        pos: usize,
        kv: &mut KvCache,
        s: &mut Scratch,
        which: LogitsFor,
        out: &mut [f32],
    ) -> Result<()> {
        let c = &self.cfg;
        let n = tokens.len();
        let (d, ff) = (c.n_embd, c.n_ff);
        let dims = Dims {
            d,
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            hd: c.head_dim,
        };
        let n_ctx = kv.n_ctx();
        if n == 0 || n > s.max_batch || pos + n > n_ctx {
            return Err(Error::Internal(format!(
                "forward: batch {n} at {pos} (n_ctx {n_ctx})"
            )));
        }

        // ---- embeddings ----
        for (t, &tok) in tokens.iter().enumerate() {
            let x = &mut s.x[t * d..(t + 1) * d];
            kernels::get_row(&self.token_embd, tok as usize, x);
            if self.spec.embd_scale != 1.0 {
                x.iter_mut().for_each(|v| *v *= self.spec.embd_scale);
            }
            if let Some(p) = &self.pos_embd {
                if pos + t >= p.rows() {
                    return Err(Error::InvalidArgument(format!(
                        "position {} past the model's {} learned positions",
                        pos + t,
                        p.rows()
                    )));
                }
                let row = &mut s.proj[..d];
                kernels::get_row(p, pos + t, row);
                nn::add_inplace(&mut s.x[t * d..(t + 1) * d], &s.proj[..d]);
            }
        }

        for (l, w) in self.layers.iter().enumerate() {
            let ls = &w.spec;
            let r = ls.residual_scale;
            // ---- attention ----
            attention::forward(
                ctx,
                &ls.attn,
                &w.attn,
                dims,
                l,
                pos,
                n,
                pre(&w.attn_norm),
                kv,
                s,
            )?;
            if let Some(pn) = &w.post_attn_norm {
                pn.apply_inplace(&mut s.proj[..n * d]);
            }
            add_scaled(&mut s.x[..n * d], &s.proj[..n * d], r);

            // ---- MLP ----
            let src = match ls.wiring {
                Wiring::Parallel => Src::Xb,
                _ => pre(&w.ffn_norm),
            };
            mlp::forward(ctx, ls.act, &w.mlp, d, ff, n, src, s);
            if let Some(pn) = &w.post_ffn_norm {
                pn.apply_inplace(&mut s.proj[..n * d]);
            }
            add_scaled(&mut s.x[..n * d], &s.proj[..n * d], r);
            ctx.layer_output(l, pos, &s.x[..n * d], n);
        }

        // ---- final norm + LM head ----
        let vocab = c.n_vocab;
        let (rows, x0) = match which {
            LogitsFor::Last => (1, (n - 1) * d),
            LogitsFor::All => (n, 0),
        };
        let out = &mut out[..rows * vocab];
        let xb = &mut s.xb[..rows * d];
        kernels::matmul_multi_prep_in(
            &ctx.kernels,
            &[&self.output],
            &mut [&mut *out],
            xb,
            rows,
            self.output_norm.prep(&s.x[x0..x0 + rows * d]),
        );
        ctx.observe(&[&self.output], xb, rows);
        add_bias(out, self.output_bias.as_deref());
        if self.spec.logit_scale != 1.0 {
            out.iter_mut().for_each(|v| *v *= self.spec.logit_scale);
        }
        if let Some(cap) = self.spec.final_softcap {
            nn::softcap(out, cap);
        }
        Ok(())
    }
}

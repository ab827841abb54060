//! Model architectures over shared building blocks ([`crate::nn`]).
//!
//! An architecture binds its weights from canonical tensor names (validating every shape
//! against the [`ModelConfig`]) and implements [`Architecture::forward`]. [`build`] is the
//! ONE registry: a new architecture is one file plus one line there.

pub mod config;
pub mod llama;
pub mod names;

use std::collections::HashMap;

pub use config::{Arch, ModelConfig};

use crate::kv::KvCache;
use crate::nn::RopeTable;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Which logits a forward pass produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last token of the batch (`out` holds `n_vocab` values).
    Last,
    /// Every token of the batch (`out` holds `n × n_vocab` values).
    All,
}

/// A bound, ready-to-run architecture (weights + forward pass).
pub trait Architecture: Send + Sync {
    /// Run `tokens` (positions `pos..pos + tokens.len()`) through the model: their keys and
    /// values are written into `kv`, logits into `out` as `which` says.
    ///
    /// The caller guarantees `tokens.len() ≤ scratch.max_batch`, `pos + tokens.len() ≤
    /// kv.n_ctx()` and every id `< n_vocab`.
    fn forward(
        &self,
        tokens: &[u32],
        pos: usize,
        kv: &mut KvCache,
        scratch: &mut Scratch,
        which: LogitsFor,
        out: &mut [f32],
    ) -> Result<()>;
}

/// Bind `tensors` for `config.arch` — the architecture registry.
pub fn build(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<Box<dyn Architecture>> {
    config.validate()?;
    match config.arch {
        Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 => {
            Ok(Box::new(llama::Llama::bind(config, tensors)?))
        }
        other => Err(Error::UnsupportedArch(other.name().to_string())),
    }
}

/// Observer of the residual stream after each block, for `qstream eval --trace`:
/// called as `hook(layer, pos, hidden)` once per layer and forward call, where `hidden`
/// holds the `n` tokens of the batch (positions `pos..pos + n`), `n × n_embd` values, after
/// block `layer` has added its output (attention and MLP). Set on a session with
/// [`crate::engine::Session::set_trace`]; an architecture calls it through
/// [`Scratch::trace_layer`].
pub type TraceHook = Box<dyn FnMut(usize, usize, &[f32]) + Send>;

/// Per-session activation buffers, sized once for a batch of up to `max_batch` tokens
/// and a context of `n_ctx` positions (llama2.c's `RunState`).
pub struct Scratch {
    /// most tokens one forward call processes
    pub max_batch: usize,
    /// residual stream `[max_batch][n_embd]`
    pub x: Vec<f32>,
    /// normed activations `[max_batch][n_embd]`
    pub xb: Vec<f32>,
    /// block output before the residual add `[max_batch][n_embd]`
    pub proj: Vec<f32>,
    /// queries `[max_batch][n_head · head_dim]`
    pub q: Vec<f32>,
    /// keys `[max_batch][n_head_kv · head_dim]`
    pub k: Vec<f32>,
    /// values `[max_batch][n_head_kv · head_dim]`
    pub v: Vec<f32>,
    /// attention output `[max_batch][n_head · head_dim]`
    pub att_out: Vec<f32>,
    /// attention scores, one row per head `[n_head][n_ctx]`
    pub att: Vec<f32>,
    /// MLP hidden `[max_batch][n_ff]` (gate)
    pub hb: Vec<f32>,
    /// MLP hidden `[max_batch][n_ff]` (up)
    pub hb2: Vec<f32>,
    /// rotary tables for `0..n_ctx` (None when the model has no RoPE)
    pub rope: Option<RopeTable>,
    /// per-layer observer of the residual stream (None: no tracing, the default)
    pub trace: Option<TraceHook>,
}

impl Scratch {
    /// Buffers for `config` with batches of up to `max_batch` tokens and `n_ctx` positions.
    pub fn new(config: &ModelConfig, max_batch: usize, n_ctx: usize) -> Result<Scratch> {
        let q_dim = config.n_head * config.head_dim;
        let kv_dim = config.n_head_kv * config.head_dim;
        let n_ff = config
            .n_ff
            .max(config.moe.as_ref().map_or(0, |m| m.expert_ff));
        let z = |n: usize| -> Result<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n)
                .map_err(|_| Error::OutOfMemory(format!("scratch buffer of {n} floats")))?;
            v.resize(n, 0.0);
            Ok(v)
        };
        Ok(Scratch {
            max_batch,
            x: z(max_batch * config.n_embd)?,
            xb: z(max_batch * config.n_embd)?,
            proj: z(max_batch * config.n_embd)?,
            q: z(max_batch * q_dim)?,
            k: z(max_batch * kv_dim)?,
            v: z(max_batch * kv_dim)?,
            att_out: z(max_batch * q_dim)?,
            att: z(config.n_head * n_ctx)?,
            hb: z(max_batch * n_ff)?,
            hb2: z(max_batch * n_ff)?,
            rope: match &config.rope {
                Some(r) => Some(RopeTable::new(r, n_ctx)?),
                None => None,
            },
            trace: None,
        })
    }

    /// Report the residual stream `x[..n · n_embd]` after block `layer` to the trace hook,
    /// if one is set (a branch per layer otherwise).
    #[inline]
    pub fn trace_layer(&mut self, layer: usize, pos: usize, n: usize, n_embd: usize) {
        if let Some(hook) = self.trace.as_mut() {
            hook(layer, pos, &self.x[..n * n_embd]);
        }
    }
}

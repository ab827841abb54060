//! Model architectures over shared building blocks.
//!
//! - [`blocks`]: norms (RMSNorm, RMSNorm `1 + w`, LayerNorm ± bias), attention (GQA/MQA,
//!   q/k norms per head or over the projection, biases, soft-capping, sliding windows,
//!   query scaling, fused or split q/k/v), MLPs (gated or plain, any activation, biases).
//!   Rotary tables (interleaved / NeoX, partial, linear / llama3 / yarn / longrope) live in
//!   [`crate::nn::RopeTable`].
//! - [`decoder`]: the ONE forward pass. A [`decoder::FamilySpec`] says how the blocks compose
//!   (a [`decoder::LayerSpec`] per layer: wiring pre-norm / sandwich / post-norm / parallel,
//!   attention options, MLP kind, residual scale) and which global extras apply (embedding
//!   scale, learned positions, logit scale and soft-cap).
//! - [`families`]: one short file per family that reads the [`ModelConfig`] into a
//!   `FamilySpec`; [`spec`] is the ONE registry: a new family is one file plus one line.
//!
//! Settings that may differ per model or per session (activation bits, exact mode, an
//! activation observer such as calibration) travel in a [`RunCtx`] passed to every forward
//! pass, never through process-wide statics.

pub mod blocks;
pub mod config;
pub mod decoder;
pub mod families;
pub mod names;

use std::collections::HashMap;
use std::sync::Arc;

pub use config::{Arch, ModelConfig};
pub use decoder::{FamilySpec, LayerSpec};

use crate::kernels::Settings;
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

/// Sees the input rows of every weight matrix a forward pass multiplies (calibration:
/// `convert::calibrate`), and, optionally, the hidden state after each layer (traces).
///
/// The model layer calls it; the kernels know nothing of it. Implementations must be cheap
/// or run only in tools (they are called once per mat-mul per forward call, not per row).
pub trait ActivationObserver: Send + Sync {
    /// `xs` (`n × cols`) is the input of every matrix in `ws` (they share it).
    fn observe(&self, ws: &[&Tensor], xs: &[f32], n: usize);

    /// The residual stream (`n × n_embd`, positions `pos..pos + n`) after layer `layer`.
    fn layer_output(&self, layer: usize, pos: usize, hidden: &[f32], n: usize) {
        let _ = (layer, pos, hidden, n);
    }
}

/// Per-call context of a forward pass: the kernel settings of the model/session that runs
/// it and its observer, if any.
#[derive(Clone, Copy, Default)]
pub struct RunCtx<'a> {
    /// numerics of the mat-muls (activation bits, exact mode)
    pub kernels: Settings,
    /// activation observer (calibration, traces)
    pub observer: Option<&'a dyn ActivationObserver>,
}

impl RunCtx<'_> {
    /// Report the input of `ws` to the observer, if any.
    #[inline]
    pub fn observe(&self, ws: &[&Tensor], xs: &[f32], n: usize) {
        if let Some(o) = self.observer {
            o.observe(ws, xs, n);
        }
    }

    /// Report layer `layer`'s output to the observer, if any.
    #[inline]
    pub fn layer_output(&self, layer: usize, pos: usize, hidden: &[f32], n: usize) {
        if let Some(o) = self.observer {
            o.layer_output(layer, pos, hidden, n);
        }
    }
}

/// A shareable observer handle (for `engine::SessionParams`).
#[derive(Clone)]
pub struct ObserverHandle(pub Arc<dyn ActivationObserver>);

impl std::fmt::Debug for ObserverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObserverHandle(..)")
    }
}

/// A bound, ready-to-run architecture (weights + forward pass).
pub trait Architecture: Send + Sync {
    /// Run `tokens` (positions `pos..pos + tokens.len()`) through the model: their keys and
    /// values are written into `kv`, logits into `out` as `which` says.
    ///
    /// The caller guarantees `tokens.len() ≤ scratch.max_batch`, `pos + tokens.len() ≤
    /// kv.n_ctx()` and every id `< n_vocab`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        ctx: &RunCtx<'_>,
        tokens: &[u32],
        pos: usize,
        kv: &mut KvCache,
        scratch: &mut Scratch,
        which: LogitsFor,
        out: &mut [f32],
    ) -> Result<()>;
}

/// The family description of `config.arch` — the architecture registry (one line each).
pub fn spec(config: &ModelConfig) -> Result<FamilySpec> {
    use families as f;
    match config.arch {
        Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 => f::llama::spec(config),
        Arch::Phi => f::phi::spec(config),
        Arch::Phi3 => f::phi3::spec(config),
        Arch::Gemma => f::gemma::spec(config),
        Arch::Gemma2 => f::gemma2::spec(config),
        Arch::Gemma3 => f::gemma3::spec(config),
        Arch::Gpt2 => f::gpt2::spec(config),
        Arch::Gptj => f::gptj::spec(config),
        Arch::Olmo2 => f::olmo2::spec(config),
        Arch::Starcoder2 => f::starcoder2::spec(config),
        Arch::Granite => f::granite::spec(config),
        other => Err(Error::UnsupportedArch(other.name().to_string())),
    }
}

/// Bind `tensors` for `config.arch`.
pub fn build(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<Box<dyn Architecture>> {
    config.validate()?;
    if config.moe.is_some() {
        return Err(Error::UnsupportedArch(format!(
            "{} with mixture of experts",
            config.arch.name()
        )));
    }
    let spec = spec(config)?;
    Ok(Box::new(decoder::Decoder::bind(config, spec, tensors)?))
}

/// Observer of the residual stream after each block, for `qstream eval --trace`:
/// called as `hook(layer, pos, hidden)` once per layer and forward call, where `hidden`
/// holds the `n` tokens of the batch (positions `pos..pos + n`), `n × n_embd` values, after
/// block `layer` has added its output (attention and MLP). Set on a session with
/// [`crate::engine::Session::set_trace`]; it runs as the session's
/// [`ActivationObserver::layer_output`].
pub type TraceHook = Box<dyn FnMut(usize, usize, &[f32]) + Send>;

/// A [`TraceHook`] as an [`ActivationObserver`] (sees only layer outputs).
pub(crate) struct TraceObserver(pub std::sync::Mutex<TraceHook>);

impl ActivationObserver for TraceObserver {
    fn observe(&self, _: &[&Tensor], _: &[f32], _: usize) {}

    fn layer_output(&self, layer: usize, pos: usize, hidden: &[f32], _n: usize) {
        let mut hook = self.0.lock().unwrap_or_else(|e| e.into_inner());
        hook(layer, pos, hidden);
    }
}

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
    /// fused q/k/v output of tensors that cannot be split (outlier types); grown on first
    /// use, then reused
    pub qkv: Vec<f32>,
    /// rotary tables for `0..n_ctx`, one per distinct RoPE of the family (Gemma 3: global
    /// and local); empty when the model has no RoPE
    pub ropes: Vec<RopeTable>,
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
        // the family's rotary tables (unknown families: the config's one, if any)
        let rope_cfgs = match spec(config) {
            Ok(s) => s.ropes,
            Err(_) => config.rope.iter().cloned().collect(),
        };
        let ropes = rope_cfgs
            .iter()
            .map(|r| RopeTable::new(r, n_ctx, config.n_ctx_train))
            .collect::<Result<Vec<_>>>()?;
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
            qkv: Vec::new(),
            ropes,
        })
    }
}

//! `Model` (loaded weights, shared, read-only) and `Session` (KV cache + scratch, one
//! conversation): the engine API the CLI, the C API and the Python package use.
//!
//! ```text
//! let model = Model::load(path, &ModelParams::default())?;      // Arc<Model>, Send + Sync
//! let mut s = Session::new(model.clone(), &SessionParams::default())?;
//! let logits = s.decode(&prompt_ids)?;                          // prefill (batched)
//! let out = s.generate(&prompt_ids, &GenerateParams::default(), &mut |t| { print!("{}", t.piece); true })?;
//! ```
//!
//! A `Model` owns a rayon thread pool; every forward pass runs inside it. Several sessions
//! may share one model from different threads. A session that asks for another thread count
//! runs on a pool of that size, built once per model and count and shared by every such
//! session.
//!
//! Cancellation ([`CancelHandle`]): a cancel stops the [`Session::decode`],
//! [`Session::decode_all`] or [`Session::generate`] call in progress — between prefill
//! chunks (at most [`CANCEL_CHUNK`] tokens each) and between sampled tokens — or, when none
//! is running, the next such call, before it does any work. The call that stops because of
//! it consumes it; [`CancelHandle::clear`] drops a pending cancel. A prefill that is
//! cancelled leaves the context as it was before the call.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::chat::ChatMessage;
use crate::import::TokenizerData;
use crate::kernels::{ActBits, Settings};
use crate::kv::{KvCache, KvType};
use crate::model::{self, Architecture, LogitsFor, ModelConfig, ObserverHandle, RunCtx, Scratch};
use crate::quant::QuantType;
use crate::sampling::{Sampler, SamplingParams};
use crate::tensor::Tensor;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Most tokens one forward call processes; longer prompts are run in chunks of this size.
pub const MAX_BATCH: usize = 512;

/// Most tokens one forward call processes while a [`CancelHandle`] has been handed out:
/// a cancel is seen between chunks, so this bounds how long a prefill runs on after one
/// (one chunk's time). Prefill speed was level with [`MAX_BATCH`]-token chunks in the one
/// (loaded-machine) measurement so far: docs/benchmarks.md, "Thread pools".
pub const CANCEL_CHUNK: usize = 128;

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct ModelParams {
    /// Memory-map the file (zero copy); `false` reads it into memory.
    pub use_mmap: bool,
    /// Worker threads of the model's pool; 0 = all available cores.
    pub n_threads: usize,
    /// Refuse to load when the weights take more bytes than this.
    pub ram_budget: Option<u64>,
    /// Verify every checksum while loading.
    pub verify_checksums: bool,
    /// Activation precision of this model's integer kernels; `None` = the process default
    /// (`kernels::set_act_bits`, `QSTREAM_ACT_BITS`). A session's setting wins over it.
    pub act_bits: Option<ActBits>,
    /// Run every mat-mul on the exact f32 reference path; `None` = the process default
    /// (`kernels::dispatch::set_exact`, `QSTREAM_EXACT`). A session's setting wins over it.
    pub exact: Option<bool>,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            use_mmap: true,
            n_threads: 0,
            ram_budget: None,
            verify_checksums: false,
            act_bits: None,
            exact: None,
        }
    }
}

/// Summary of a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub arch: model::Arch,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// number of weight values over all tensors
    pub n_params: u64,
    /// size of the model file (sum of tensor bytes for in-memory models)
    pub file_bytes: u64,
    /// tensor bytes × 8 / n_params
    pub bits_per_weight: f64,
    /// tensor count per storage type, most common first
    pub quant_types: Vec<(QuantType, usize)>,
}

/// Loaded weights + tokenizer + thread pool. Share as `Arc<Model>`.
pub struct Model {
    config: ModelConfig,
    tokenizer: Tokenizer,
    arch: Box<dyn Architecture>,
    pool: Arc<rayon::ThreadPool>,
    /// pools of other sizes asked for by sessions (`SessionParams::n_threads`), one per size
    other_pools: Mutex<Vec<Arc<rayon::ThreadPool>>>,
    info: ModelInfo,
    /// numerics overrides from `ModelParams`
    act_bits: Option<ActBits>,
    exact: Option<bool>,
}

fn thread_count(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn build_pool(n: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(n))
        .thread_name(|i| format!("qstream-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Internal(format!("thread pool: {e}")))
}

impl Model {
    /// Load a QSF file.
    pub fn load(path: &Path, params: &ModelParams) -> Result<Arc<Model>> {
        let file = crate::format::QsfFile::open(
            path,
            &crate::format::LoadOptions {
                use_mmap: params.use_mmap,
                verify_checksums: params.verify_checksums,
            },
        )?;
        let file_bytes = file.file_size();
        let (config, tok, tensors) = file.into_parts()?;
        Self::build(config, tok, tensors, params, Some(file_bytes))
    }

    /// Build a model from a config, tokenizer data and tensors with canonical global names
    /// (`token_embd`, `blk.N.attn_q`, `output_norm`, `output`, ...).
    pub fn from_parts(
        config: ModelConfig,
        tok: TokenizerData,
        tensors: HashMap<String, Tensor>,
        params: &ModelParams,
    ) -> Result<Arc<Model>> {
        Self::build(config, tok, tensors, params, None)
    }

    fn build(
        config: ModelConfig,
        tok: TokenizerData,
        tensors: HashMap<String, Tensor>,
        params: &ModelParams,
        file_bytes: Option<u64>,
    ) -> Result<Arc<Model>> {
        let arch = model::build(&config, &tensors)?;
        let tokenizer = Tokenizer::from_data(&tok, &config)?;
        let mut n_params = 0u64;
        let mut bytes = 0u64;
        let mut types: HashMap<QuantType, usize> = HashMap::new();
        for t in tensors.values() {
            n_params += t.numel() as u64;
            bytes += t.bytes().len() as u64;
            *types.entry(t.qtype).or_default() += 1;
        }
        if let Some(budget) = params.ram_budget {
            if bytes > budget {
                return Err(Error::BudgetExceeded {
                    needed: bytes,
                    budget,
                });
            }
        }
        let mut quant_types: Vec<(QuantType, usize)> = types.into_iter().collect();
        quant_types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.id().cmp(&b.0.id())));
        let info = ModelInfo {
            arch: config.arch,
            n_vocab: config.n_vocab,
            n_ctx_train: config.n_ctx_train,
            n_layer: config.n_layer,
            n_embd: config.n_embd,
            n_head: config.n_head,
            n_head_kv: config.n_head_kv,
            n_params,
            file_bytes: file_bytes.unwrap_or(bytes),
            bits_per_weight: if n_params > 0 {
                bytes as f64 * 8.0 / n_params as f64
            } else {
                0.0
            },
            quant_types,
        };
        Ok(Arc::new(Model {
            config,
            tokenizer,
            arch,
            pool: build_pool(params.n_threads)?,
            other_pools: Mutex::new(Vec::new()),
            info,
            act_bits: params.act_bits,
            exact: params.exact,
        }))
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Summary (architecture, sizes, storage types).
    pub fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    /// The kernel settings this model's sessions run with unless they override them.
    pub fn kernel_settings(&self) -> Settings {
        Settings::with(self.act_bits, self.exact)
    }

    /// Threads in the model's pool.
    pub fn n_threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The pool with `n` threads (0 = the model's own): the model's, or one built on first
    /// use and shared by every later session asking for that size.
    fn pool_for(&self, n: usize) -> Result<Arc<rayon::ThreadPool>> {
        if n == 0 || n == self.n_threads() {
            return Ok(self.pool.clone());
        }
        let mut pools = self.other_pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.iter().find(|p| p.current_num_threads() == n) {
            return Ok(p.clone());
        }
        let p = build_pool(n)?;
        pools.push(p.clone());
        Ok(p)
    }

    /// Render the model's chat template; [`Error::InvalidArgument`] if it has none.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.tokenizer
            .apply_chat_template(messages, add_generation_prompt)
    }
}

/// Options for a session.
#[derive(Debug, Clone, Default)]
pub struct SessionParams {
    /// Context size in tokens; 0 = the model's training context capped at 4096.
    pub n_ctx: usize,
    /// KV cache element type of K and V (unless `type_k` / `type_v` override it).
    pub kv_type: KvType,
    /// Element type of the cached keys; `None` = `kv_type`.
    pub type_k: Option<KvType>,
    /// Element type of the cached values; `None` = `kv_type`.
    pub type_v: Option<KvType>,
    /// Threads for this session's forward passes; 0 = the model's pool.
    pub n_threads: usize,
    /// Activation precision for this session; `None` = the model's (`ModelParams::act_bits`).
    pub act_bits: Option<ActBits>,
    /// Exact f32 reference path for this session; `None` = the model's (`ModelParams::exact`).
    pub exact: Option<bool>,
    /// Sees every mat-mul input and layer output of this session's forward passes
    /// (calibration, traces).
    pub observer: Option<ObserverHandle>,
}

/// Stops a session's running decode/generate from any thread (see the module docs for
/// the exact semantics).
#[derive(Debug, Clone)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    /// Stop the call in progress at its next check (between prefill chunks or sampled
    /// tokens) or, if none is running, the next call. Only sets an atomic flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a cancel is pending (issued and not yet consumed by a call).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Drop a pending cancel, so that the next call runs.
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Consume a pending cancel: `true` (and cleared) if there was one.
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// Options for [`Session::generate`].
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop when the generated text contains one of these (it is cut from the output).
    pub stop_strings: Vec<String>,
    /// Stop on the model's end-of-sequence ids.
    pub stop_on_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_strings: Vec::new(),
            stop_on_eos: true,
        }
    }
}

/// One generated token as passed to the streaming callback.
#[derive(Debug, Clone, Copy)]
pub struct GeneratedToken<'a> {
    pub id: u32,
    /// New text, UTF-8-safe; "" while a character is incomplete or while the text could be
    /// the start of a stop string (it is released with a later token).
    pub piece: &'a str,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` generated, or the context window is full.
    MaxTokens,
    /// An end-of-sequence token was sampled.
    Eos,
    /// A stop string appeared in the text.
    StopString,
    /// The callback returned `false`.
    Callback,
    /// [`CancelHandle::cancel`] was called (before, during the prefill or between tokens).
    Cancelled,
}

/// Result of [`Session::generate`].
#[derive(Debug, Clone)]
pub struct GenerateOutput {
    /// Sampled ids (including the EOS that ended generation, if any).
    pub tokens: Vec<u32>,
    /// Generated text, stop string removed.
    pub text: String,
    pub stop_reason: StopReason,
    /// Prompt tokens decoded by this call (0 when the prefill was cancelled: the context
    /// is then as it was before the call).
    pub n_prompt: usize,
    pub prompt_secs: f64,
    pub gen_secs: f64,
}

/// One conversation: KV cache, scratch buffers and the last logits. `Send`; one thread
/// at a time.
pub struct Session {
    model: Arc<Model>,
    /// the pool forward passes run in (the model's, or one of `SessionParams::n_threads`)
    pool: Arc<rayon::ThreadPool>,
    kv: KvCache,
    scratch: Scratch,
    logits: Vec<f32>,
    /// `logits` belong to the last id of `history` (or are zeros with an empty history);
    /// false after `truncate` removed that id, until they are recomputed
    logits_fresh: bool,
    /// ids in the KV cache, in order
    history: Vec<u32>,
    n_ctx: usize,
    /// tokens per forward call (≤ scratch.max_batch)
    batch: usize,
    cancel: CancelHandle,
    /// a cancel handle was handed out: prefill in chunks of at most `CANCEL_CHUNK`
    cancellable: std::cell::Cell<bool>,
    act_bits: Option<ActBits>,
    exact: Option<bool>,
    observer: Option<ObserverHandle>,
    /// the observer of `SessionParams` (what `set_trace(None)` restores)
    base_observer: Option<ObserverHandle>,
}

// Sessions move between threads (one at a time); models are shared.
const _: () = {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    #[allow(dead_code)]
    fn check() {
        assert_send::<Session>();
        assert_send_sync::<Model>();
        assert_send_sync::<CancelHandle>();
    }
};

impl Session {
    /// A fresh session on `model`.
    pub fn new(model: Arc<Model>, params: &SessionParams) -> Result<Session> {
        let c = model.config();
        let n_ctx = if params.n_ctx == 0 {
            c.n_ctx_train.clamp(1, 4096)
        } else {
            params.n_ctx
        };
        let kv = KvCache::new(
            params.type_k.unwrap_or(params.kv_type),
            params.type_v.unwrap_or(params.kv_type),
            c.n_layer,
            c.n_head_kv,
            c.head_dim,
            n_ctx,
        )?;
        let scratch = Scratch::new(c, MAX_BATCH.min(n_ctx), n_ctx)?;
        let pool = model.pool_for(params.n_threads)?;
        let mut history = Vec::new();
        history
            .try_reserve_exact(n_ctx)
            .map_err(|_| Error::OutOfMemory("token history".into()))?;
        Ok(Session {
            logits: vec![0.0; c.n_vocab],
            logits_fresh: true,
            model,
            pool,
            kv,
            scratch,
            history,
            n_ctx,
            batch: MAX_BATCH.min(n_ctx),
            cancel: CancelHandle(Arc::new(AtomicBool::new(false))),
            cancellable: std::cell::Cell::new(false),
            act_bits: params.act_bits,
            exact: params.exact,
            observer: params.observer.clone(),
            base_observer: params.observer.clone(),
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    fn check(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("decode: no tokens".into()));
        }
        let needed = self.history.len() + tokens.len();
        if needed > self.n_ctx {
            return Err(Error::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        let n_vocab = self.model.config().n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} ≥ n_vocab {n_vocab}"
            )));
        }
        Ok(())
    }

    /// Run `tokens` through the model in chunks; `all` receives every position's logits.
    /// A pending cancel is consumed before the first chunk and between chunks: the call
    /// then returns [`Error::Cancelled`] with the context as it was before it.
    fn run(&mut self, tokens: &[u32], mut all: Option<&mut [f32]>) -> Result<()> {
        let start = self.history.len();
        let fresh_before = self.logits_fresh;
        let mut touched = false;
        let step = if self.cancellable.get() {
            self.batch.min(CANCEL_CHUNK)
        } else {
            self.batch
        };
        let Session {
            model,
            pool,
            kv,
            scratch,
            logits,
            logits_fresh,
            history,
            cancel,
            act_bits,
            exact,
            observer,
            ..
        } = self;
        // session settings win over the model's, which win over the process defaults
        let ctx = RunCtx {
            kernels: Settings::with(act_bits.or(model.act_bits), exact.or(model.exact)),
            observer: observer.as_ref().map(|o| &*o.0),
        };
        let ctx = &ctx;
        let n_vocab = model.config.n_vocab;
        let arch = &model.arch;
        let r = pool.install(|| -> Result<()> {
            let mut done = 0;
            for chunk in tokens.chunks(step) {
                if cancel.take() {
                    return Err(Error::Cancelled);
                }
                let pos = history.len();
                // from here until the chunk is in `history`, `logits` may be half written
                *logits_fresh = false;
                touched = true;
                match all.as_deref_mut() {
                    Some(out) => {
                        let out = &mut out[done * n_vocab..(done + chunk.len()) * n_vocab];
                        arch.forward(ctx, chunk, pos, kv, scratch, LogitsFor::All, out)?;
                    }
                    None => arch.forward(ctx, chunk, pos, kv, scratch, LogitsFor::Last, logits)?,
                }
                history.extend_from_slice(chunk);
                *logits_fresh = all.is_none();
                done += chunk.len();
            }
            Ok(())
        });
        if let Err(e) = r {
            // nothing of this call stays: the cache positions it wrote are past `n_past`;
            // the logits are those of before the call unless a forward pass overwrote them
            self.history.truncate(start);
            self.logits_fresh = fresh_before && !touched;
            if self.history.is_empty() {
                self.logits.fill(0.0);
                self.logits_fresh = true;
            }
            return Err(e);
        }
        if let Some(out) = all {
            logits.copy_from_slice(&out[(tokens.len() - 1) * n_vocab..tokens.len() * n_vocab]);
            self.logits_fresh = true;
        }
        Ok(())
    }

    /// Append `tokens` to the context (batched prefill when several) and return the logits
    /// of the last one (`n_vocab` values). [`Error::ContextFull`] (nothing changed) when they
    /// do not fit; [`Error::Cancelled`] (nothing changed) when a cancel was pending or
    /// arrived during the prefill.
    pub fn decode(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.check(tokens)?;
        self.run(tokens, None)?;
        Ok(&self.logits)
    }

    /// As [`Session::decode`], returning the logits of every position
    /// (`tokens.len() × n_vocab`, row-major).
    pub fn decode_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.check(tokens)?;
        let n = tokens.len() * self.model.config().n_vocab;
        let mut out = Vec::new();
        out.try_reserve_exact(n)
            .map_err(|_| Error::OutOfMemory(format!("{n} logits")))?;
        out.resize(n, 0.0);
        self.run(tokens, Some(&mut out))?;
        Ok(out)
    }

    /// Observe the residual stream after every block (`qstream eval --trace`): `hook(layer,
    /// pos, hidden)` with `hidden` = `n × n_embd` values for positions `pos..pos + n` of the
    /// current forward call (see [`crate::model::TraceHook`]). `None` turns tracing off.
    /// The hook runs as the session's observer; `None` restores the observer the session
    /// was created with ([`SessionParams::observer`]).
    pub fn set_trace(&mut self, hook: Option<crate::model::TraceHook>) {
        self.observer = match hook {
            Some(h) => Some(ObserverHandle(Arc::new(crate::model::TraceObserver(
                std::sync::Mutex::new(h),
            )))),
            None => self.base_observer.clone(),
        };
    }

    /// Process prompts in chunks of at most `n` tokens (clamped to `1..=MAX_BATCH` and the
    /// context size). Smaller chunks use less cache per step; results are the same.
    pub fn set_batch_size(&mut self, n: usize) {
        self.batch = n.clamp(1, self.scratch.max_batch);
    }

    /// Logits of the last token in the context (zeros before the first decode), or an
    /// empty slice when [`Session::truncate`] removed the token they were computed for (and
    /// after a failed or cancelled decode): [`Session::refresh_logits`] recomputes them.
    pub fn logits(&self) -> &[f32] {
        if self.logits_fresh {
            &self.logits
        } else {
            &[]
        }
    }

    /// Logits of the last token in the context, recomputed (one forward pass of that token)
    /// when [`Session::truncate`] made the stored ones stale; zeros for an empty context.
    pub fn refresh_logits(&mut self) -> Result<&[f32]> {
        if !self.logits_fresh {
            let Some(&last) = self.history.last() else {
                self.logits.fill(0.0);
                self.logits_fresh = true;
                return Ok(&self.logits);
            };
            // re-run the last position: its cache entry is rewritten with the same values
            let n = self.history.len();
            self.history.truncate(n - 1);
            let pending = self.cancel.take();
            let r = self.run(&[last], None);
            if pending {
                self.cancel.cancel();
            }
            if let Err(e) = r {
                // `run` restored n − 1 ids; the last one's cache entry is still intact
                self.history.push(last);
                self.logits_fresh = false;
                return Err(e);
            }
        }
        Ok(&self.logits)
    }

    /// Sample the next token from the current logits (recomputed first if stale, see
    /// [`Session::refresh_logits`]) with the context as the penalty history. The token is
    /// not decoded. [`Error::InvalidArgument`] on an empty context.
    pub fn sample(&mut self, sampler: &mut Sampler) -> Result<u32> {
        if self.history.is_empty() {
            return Err(Error::InvalidArgument(
                "sample: empty context (decode a prompt first)".into(),
            ));
        }
        self.refresh_logits()?;
        Ok(sampler.sample(&self.logits, &self.history))
    }

    /// Tokens in the context.
    pub fn n_past(&self) -> usize {
        self.history.len()
    }

    /// The KV cache (read-only): its types, size, and the cached keys/values.
    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Context capacity.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The ids in the context, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.history
    }

    /// Forget the whole context.
    pub fn reset(&mut self) {
        self.history.clear();
        self.logits.fill(0.0);
        self.logits_fresh = true;
    }

    /// Keep only the first `n` positions (no-op when `n ≥ n_past`). The logits of the new
    /// last token are recomputed when next needed ([`Session::refresh_logits`],
    /// [`Session::sample`], [`Session::generate`] with an empty prompt); decoding new tokens
    /// first makes that unnecessary.
    pub fn truncate(&mut self, n: usize) {
        if n < self.history.len() {
            self.history.truncate(n);
            self.logits_fresh = false;
            if n == 0 {
                self.logits.fill(0.0);
                self.logits_fresh = true;
            }
        }
    }

    /// A handle that stops this session's decode/generate from another thread (see the
    /// module docs). From now on prefills run in chunks of at most [`CANCEL_CHUNK`] tokens
    /// so that a cancel is seen promptly.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancellable.set(true);
        self.cancel.clone()
    }

    /// Decode `prompt` (may be empty to continue from the last token in the context), then
    /// sample up to `params.max_tokens` tokens, streaming each to `on_token` (return `false`
    /// to stop). The last sampled token is not decoded into the cache.
    ///
    /// A cancel (see the module docs) pending on entry or arriving during the prefill
    /// returns [`StopReason::Cancelled`] with no tokens and the context unchanged; one
    /// arriving later stops before the next token is sampled. Invalid sampling parameters
    /// are [`Error::InvalidArgument`] ([`SamplingParams::validate`]).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&GeneratedToken) -> bool,
    ) -> Result<GenerateOutput> {
        params.sampling.validate()?;
        let t0 = Instant::now();
        let cancelled = |prompt_secs: f64| GenerateOutput {
            tokens: Vec::new(),
            text: String::new(),
            stop_reason: StopReason::Cancelled,
            n_prompt: 0,
            prompt_secs,
            gen_secs: 0.0,
        };
        if !prompt.is_empty() {
            match self.decode(prompt) {
                Err(Error::Cancelled) => return Ok(cancelled(t0.elapsed().as_secs_f64())),
                r => r?,
            };
        } else if self.history.is_empty() {
            return Err(Error::InvalidArgument(
                "generate: empty prompt and empty context".into(),
            ));
        } else {
            if self.cancel.take() {
                return Ok(cancelled(0.0));
            }
            self.refresh_logits()?;
        }
        let prompt_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();

        let model = self.model.clone();
        let tok = model.tokenizer();
        let eos = &model.config().eos_token_ids;
        let mut stream = tok.decode_stream(true);
        let mut sampler = Sampler::new(&params.sampling);
        let stops: Vec<&str> = params
            .stop_strings
            .iter()
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .collect();

        let mut tokens = Vec::with_capacity(params.max_tokens.min(self.n_ctx));
        let mut text = String::new();
        let mut emitted = 0usize;
        let stop_reason = loop {
            if tokens.len() >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.cancel.take() {
                break StopReason::Cancelled;
            }
            let id = sampler.sample(&self.logits, &self.history);
            tokens.push(id);
            let is_eos = params.stop_on_eos && (eos.contains(&id) || tok.is_eos(id));
            if let Some(p) = stream.step(id)? {
                if !is_eos {
                    text.push_str(&p);
                }
            }
            let hit = stops
                .iter()
                .filter_map(|s| text[emitted..].find(s).map(|i| emitted + i))
                .min();
            let last = is_eos
                || hit.is_some()
                || tokens.len() >= params.max_tokens
                || self.history.len() >= self.n_ctx;
            let end = match hit {
                Some(i) => i,
                None if last => text.len(),
                None => held_back_start(&text, emitted, &stops),
            };
            let piece = &text[emitted..end];
            emitted = end;
            let go_on = on_token(&GeneratedToken { id, piece });
            if let Some(i) = hit {
                text.truncate(i);
                break StopReason::StopString;
            }
            if is_eos {
                break StopReason::Eos;
            }
            if !go_on {
                break StopReason::Callback;
            }
            if tokens.len() >= params.max_tokens || self.history.len() >= self.n_ctx {
                break StopReason::MaxTokens;
            }
            match self.decode(&[id]) {
                Err(Error::Cancelled) => break StopReason::Cancelled,
                r => r?,
            };
        };
        Ok(GenerateOutput {
            tokens,
            text,
            stop_reason,
            n_prompt: prompt.len(),
            prompt_secs,
            gen_secs: t1.elapsed().as_secs_f64(),
        })
    }
}

/// The first char boundary `i ≥ from` such that `text[i..]` is a prefix of a stop string
/// (text from there on could still become a stop string); `text.len()` when none.
fn held_back_start(text: &str, from: usize, stops: &[&str]) -> usize {
    for (i, _) in text[from..].char_indices() {
        let tail = &text[from + i..];
        if stops.iter().any(|s| s.starts_with(tail)) {
            return from + i;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::held_back_start;

    #[test]
    fn hold_back_partial_stop_strings() {
        assert_eq!(held_back_start("hello <", 0, &["<end>"]), 6);
        assert_eq!(held_back_start("hello <e", 2, &["<end>"]), 6);
        assert_eq!(held_back_start("hello", 0, &["<end>"]), 5);
        assert_eq!(held_back_start("héllo\n", 0, &["\n\n"]), 6);
    }
}

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
//! may share one model from different threads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::chat::ChatMessage;
use crate::import::TokenizerData;
use crate::kv::{KvCache, KvType};
use crate::model::{self, Architecture, LogitsFor, ModelConfig, Scratch};
use crate::quant::QuantType;
use crate::sampling::{Sampler, SamplingParams};
use crate::tensor::Tensor;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Most tokens one forward call processes; longer prompts are run in chunks of this size.
pub const MAX_BATCH: usize = 512;

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
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            use_mmap: true,
            n_threads: 0,
            ram_budget: None,
            verify_checksums: false,
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
    pool: rayon::ThreadPool,
    /// per-token matmul workers (same thread count as `pool`)
    spin: crate::kernels::pool::SpinPool,
    info: ModelInfo,
}

fn thread_count(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn build_pool(n: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(n))
        .thread_name(|i| format!("qstream-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("thread pool: {e}")))
}

fn build_spin(n: usize) -> Result<crate::kernels::pool::SpinPool> {
    crate::kernels::pool::SpinPool::new(thread_count(n))
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
                return Err(Error::OutOfMemory(format!(
                    "weights take {bytes} bytes, the RAM budget is {budget}"
                )));
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
            spin: build_spin(params.n_threads)?,
            info,
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

    /// Threads in the model's pool.
    pub fn n_threads(&self) -> usize {
        self.pool.current_num_threads()
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
}

/// Stops a running [`Session::generate`] from any thread.
#[derive(Debug, Clone)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    /// Ask the generation in progress to stop after the current token.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a cancel is pending.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
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
    /// [`CancelHandle::cancel`] was called.
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
    /// Prompt tokens decoded by this call.
    pub n_prompt: usize,
    pub prompt_secs: f64,
    pub gen_secs: f64,
}

/// One conversation: KV cache, scratch buffers and the last logits. `Send`; one thread
/// at a time.
pub struct Session {
    model: Arc<Model>,
    /// own pools when `SessionParams::n_threads` asks for them
    pool: Option<(rayon::ThreadPool, crate::kernels::pool::SpinPool)>,
    kv: KvCache,
    scratch: Scratch,
    logits: Vec<f32>,
    /// ids in the KV cache, in order
    history: Vec<u32>,
    n_ctx: usize,
    /// tokens per forward call (≤ scratch.max_batch)
    batch: usize,
    cancel: Arc<AtomicBool>,
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
        let pool = if params.n_threads > 0 && params.n_threads != model.n_threads() {
            Some((build_pool(params.n_threads)?, build_spin(params.n_threads)?))
        } else {
            None
        };
        let mut history = Vec::new();
        history
            .try_reserve_exact(n_ctx)
            .map_err(|_| Error::OutOfMemory("token history".into()))?;
        Ok(Session {
            logits: vec![0.0; c.n_vocab],
            model,
            pool,
            kv,
            scratch,
            history,
            n_ctx,
            batch: MAX_BATCH.min(n_ctx),
            cancel: Arc::new(AtomicBool::new(false)),
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
    fn run(&mut self, tokens: &[u32], mut all: Option<&mut [f32]>) -> Result<()> {
        let Session {
            model,
            pool,
            kv,
            scratch,
            logits,
            history,
            batch,
            ..
        } = self;
        let (pool, spin) = match pool {
            Some((p, s)) => (&*p, &*s),
            None => (&model.pool, &model.spin),
        };
        let n_vocab = model.config.n_vocab;
        let arch = &model.arch;
        pool.install(|| {
            crate::kernels::pool::with_pool(spin, || -> Result<()> {
                let mut done = 0;
                for chunk in tokens.chunks(*batch) {
                    let pos = history.len();
                    match all.as_deref_mut() {
                        Some(out) => {
                            let out = &mut out[done * n_vocab..(done + chunk.len()) * n_vocab];
                            arch.forward(chunk, pos, kv, scratch, LogitsFor::All, out)?;
                        }
                        None => arch.forward(chunk, pos, kv, scratch, LogitsFor::Last, logits)?,
                    }
                    history.extend_from_slice(chunk);
                    done += chunk.len();
                }
                Ok(())
            })
        })?;
        if let Some(out) = all {
            logits.copy_from_slice(&out[(tokens.len() - 1) * n_vocab..tokens.len() * n_vocab]);
        }
        Ok(())
    }

    /// Append `tokens` to the context (batched prefill when several) and return the logits
    /// of the last one (`n_vocab` values). [`Error::ContextFull`] (nothing changed) when they
    /// do not fit.
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

    /// Process prompts in chunks of at most `n` tokens (clamped to `1..=MAX_BATCH` and the
    /// context size). Smaller chunks use less cache per step; results are the same.
    pub fn set_batch_size(&mut self, n: usize) {
        self.batch = n.clamp(1, self.scratch.max_batch);
    }

    /// Logits of the last decoded token (zeros before the first decode).
    pub fn logits(&self) -> &[f32] {
        &self.logits
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
    }

    /// Keep only the first `n` positions (no-op when `n ≥ n_past`). [`Session::logits`] is
    /// stale until the next decode.
    pub fn truncate(&mut self, n: usize) {
        self.history.truncate(n);
    }

    /// A handle that stops [`Session::generate`] from another thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(self.cancel.clone())
    }

    /// Decode `prompt` (may be empty to continue from the current logits), then sample up to
    /// `params.max_tokens` tokens, streaming each to `on_token` (return `false` to stop).
    /// The last sampled token is not decoded into the cache.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&GeneratedToken) -> bool,
    ) -> Result<GenerateOutput> {
        self.cancel.store(false, Ordering::SeqCst);
        let t0 = Instant::now();
        if !prompt.is_empty() {
            self.decode(prompt)?;
        } else if self.history.is_empty() {
            return Err(Error::InvalidArgument(
                "generate: empty prompt and empty context".into(),
            ));
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
            if self.cancel.load(Ordering::SeqCst) {
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
            self.decode(&[id])?;
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

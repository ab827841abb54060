//! `qstream.Model` and `qstream.TokenStream`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use numpy::ndarray::Array2;
use numpy::PyArray2;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use qstream_core::chat::ChatMessage;
use qstream_core::engine::{
    GenerateOutput, GenerateParams, Model, ModelParams, Session, SessionParams, StopReason,
};
use qstream_core::kv::KvType;
use qstream_core::sampling::SamplingParams;

use crate::errors::{attached, detached, guard, Fail};

/// How often a long call run without the GIL checks for Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Parse a KV cache type name (`what` names the argument in the error).
pub(crate) fn kv_type_arg(py: Python<'_>, what: &str, s: Option<&str>) -> PyResult<Option<KvType>> {
    match s {
        None => Ok(None),
        Some(s) => KvType::from_name(s).map(Some).ok_or_else(|| {
            let names: Vec<&str> = KvType::ALL.iter().map(|t| t.name()).collect();
            Fail::Arg(format!(
                "{what}={s:?}: expected one of {}",
                names.join(", ")
            ))
            .into_pyerr(py)
        }),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A loaded model plus one idle session kept for reuse (so repeated calls do not
/// reallocate the KV cache).
pub struct Shared {
    pub model: Arc<Model>,
    /// largest context a call gets
    n_ctx_cap: usize,
    idle: Mutex<Option<Session>>,
    /// KV cache types of K and V (`cache_type_k=` / `cache_type_v=`; None = f32).
    cache_types: (Option<KvType>, Option<KvType>),
}

impl Shared {
    /// A session holding at least `needed` tokens (capped at the model's context).
    fn session(&self, needed: usize) -> Result<Session, Fail> {
        let want = needed.clamp(1, self.n_ctx_cap);
        if let Some(mut s) = lock(&self.idle).take() {
            if s.n_ctx() >= want {
                s.reset();
                return Ok(s);
            }
        }
        // round up so that slightly longer follow-up calls reuse it
        let n_ctx = want.div_ceil(256).saturating_mul(256).min(self.n_ctx_cap);
        Ok(Session::new(
            self.model.clone(),
            &self.session_params(n_ctx),
        )?)
    }

    /// Session parameters of `n_ctx` positions with this model's KV cache types.
    fn session_params(&self, n_ctx: usize) -> SessionParams {
        SessionParams {
            n_ctx,
            type_k: self.cache_types.0,
            type_v: self.cache_types.1,
            ..Default::default()
        }
    }

    /// Keep `s` for the next call (the larger one wins).
    fn put(&self, s: Session) {
        let mut idle = lock(&self.idle);
        if idle.as_ref().is_none_or(|o| o.n_ctx() < s.n_ctx()) {
            *idle = Some(s);
        }
    }

    /// Run `Session::generate` on `prompt`; `on_token` returns false to stop.
    fn generate(
        &self,
        prompt: &[u32],
        gp: &GenerateParams,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<GenerateOutput, Fail> {
        if prompt.is_empty() {
            return Err(Fail::Arg("the prompt is empty (no tokens)".into()));
        }
        let mut s = self.session(prompt.len().saturating_add(gp.max_tokens))?;
        let r = s.generate(prompt, gp, &mut |t| on_token(t.id, t.piece));
        self.put(s);
        Ok(r?)
    }
}

/// A prompt: text (tokenized with special tokens, i.e. BOS when the model wants one) or ids.
#[derive(FromPyObject)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

impl Prompt {
    fn ids(&self, model: &Model) -> Result<Vec<u32>, Fail> {
        match self {
            Prompt::Text(t) => Ok(model.tokenizer().encode(t, true)?),
            Prompt::Ids(ids) => Ok(ids.clone()),
        }
    }
}

/// `stop=`: one string or a list of strings.
#[derive(FromPyObject)]
pub enum StopArg {
    One(String),
    Many(Vec<String>),
}

/// Sampling and length options shared by generate/stream/chat.
#[derive(Clone, Copy)]
struct Knobs {
    max_tokens: usize,
    temperature: f32,
    top_k: i64,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    seed: Option<u64>,
}

fn random_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl Knobs {
    fn params(self, stop: Option<StopArg>, stop_on_eos: bool) -> Result<GenerateParams, Fail> {
        let bad = |m: String| Err(Fail::Arg(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if self.top_k < 0 {
            return bad(format!("top_k must be ≥ 0 (0 = off), got {}", self.top_k));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        let stop_strings = match stop {
            None => Vec::new(),
            Some(StopArg::One(s)) => vec![s],
            Some(StopArg::Many(v)) => v,
        };
        Ok(GenerateParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k as usize,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                seed: self.seed.unwrap_or_else(random_seed),
                ..SamplingParams::default()
            },
            stop_strings,
            stop_on_eos,
        })
    }
}

fn messages(list: &Bound<'_, PyAny>) -> PyResult<Vec<ChatMessage>> {
    let mut out = Vec::new();
    for item in list.try_iter()? {
        let item = item?;
        let role: String = item.get_item("role")?.extract()?;
        let content: String = item.get_item("content")?.extract()?;
        out.push(ChatMessage::new(role, content));
    }
    Ok(out)
}

fn stop_reason_name(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens => "max_tokens",
        StopReason::Eos => "eos",
        StopReason::StopString => "stop_string",
        StopReason::Callback => "stopped",
        StopReason::Cancelled => "cancelled",
    }
}

/// A loaded QSF model. Thread-safe: several Python threads may call one model at once
/// (each call gets its own KV cache). Use as a context manager or call `close()`.
#[pyclass(frozen, module = "qstream", name = "Model")]
pub struct PyModel {
    shared: RwLock<Option<Arc<Shared>>>,
    path: String,
}

impl PyModel {
    fn get(&self) -> Result<Arc<Shared>, Fail> {
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Fail::Closed("the model"))
    }

    fn get_py(&self, py: Python<'_>) -> PyResult<Arc<Shared>> {
        self.get().map_err(|e| e.into_pyerr(py))
    }

    /// Generate with the GIL released, checking for Ctrl-C between tokens.
    fn run_generate(
        &self,
        py: Python<'_>,
        prompt: PromptSource,
        gp: GenerateParams,
    ) -> PyResult<GenerateOutput> {
        let shared = self.get_py(py)?;
        let mut interrupt: Option<PyErr> = None;
        let out = detached(py, || {
            let ids = prompt.ids(&shared.model)?;
            let mut last = Instant::now();
            shared.generate(&ids, &gp, &mut |_, _| {
                if last.elapsed() >= SIGNAL_CHECK {
                    last = Instant::now();
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        interrupt = Some(e);
                        return false;
                    }
                }
                true
            })
        })?;
        match interrupt {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn start_stream(
        &self,
        py: Python<'_>,
        prompt: PromptSource,
        gp: GenerateParams,
    ) -> PyResult<TokenStream> {
        let shared = self.get_py(py)?;
        TokenStream::start(shared, prompt, gp).map_err(|e| e.into_pyerr(py))
    }
}

/// Where the prompt ids come from (tokenized off the GIL).
pub enum PromptSource {
    Prompt(Prompt),
    Chat(Vec<ChatMessage>),
}

impl PromptSource {
    fn ids(&self, model: &Model) -> Result<Vec<u32>, Fail> {
        match self {
            PromptSource::Prompt(p) => p.ids(model),
            PromptSource::Chat(m) => {
                let text = model.apply_chat_template(m, true)?;
                Ok(model.tokenizer().encode(&text, true)?)
            }
        }
    }
}

#[pymethods]
impl PyModel {
    /// Load a QSF model file.
    ///
    /// threads: worker threads (None = all cores); mmap: memory-map the file (False reads it
    /// into RAM); budget: refuse to load when the weights take more bytes than this;
    /// n_ctx: largest context window a call may use (None = the model's training context);
    /// verify: check every CRC while loading; cache_type_k / cache_type_v: KV cache element
    /// type of the keys / values ("f32" default, "f16", "bf16", "q8", "q4", "q3", "q2",
    /// "qins8", or the Hadamard-rotated "q8h", "q4h", "q3h", "q2h").
    #[new]
    #[pyo3(signature = (path, *, threads=None, mmap=true, budget=None, n_ctx=None, verify=false, cache_type_k=None, cache_type_v=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        threads: Option<usize>,
        mmap: bool,
        budget: Option<u64>,
        n_ctx: Option<usize>,
        verify: bool,
        cache_type_k: Option<&str>,
        cache_type_v: Option<&str>,
    ) -> PyResult<Self> {
        let cache_types = (
            kv_type_arg(py, "cache_type_k", cache_type_k)?,
            kv_type_arg(py, "cache_type_v", cache_type_v)?,
        );
        if threads == Some(0) {
            return Err(
                Fail::Arg("threads must be ≥ 1 (or None for all cores)".into()).into_pyerr(py),
            );
        }
        if n_ctx == Some(0) {
            return Err(Fail::Arg("n_ctx must be ≥ 1".into()).into_pyerr(py));
        }
        let params = ModelParams {
            use_mmap: mmap,
            n_threads: threads.unwrap_or(0),
            ram_budget: budget,
            verify_checksums: verify,
        };
        let p = path.clone();
        let model = detached(py, move || Ok(Model::load(&p, &params)?))?;
        let train = model.config().n_ctx_train;
        let cap = n_ctx.unwrap_or(if train > 0 { train } else { 4096 });
        Ok(PyModel {
            shared: RwLock::new(Some(Arc::new(Shared {
                model,
                n_ctx_cap: cap,
                idle: Mutex::new(None),
                cache_types,
            }))),
            path: path.display().to_string(),
        })
    }

    /// Release the weights and caches. Calls in progress on other threads finish; every
    /// later call raises `ClosedError`. Idempotent.
    fn close(&self) {
        let old = self
            .shared
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(old);
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// The path the model was loaded from.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        match self.get() {
            Ok(s) => format!(
                "<qstream.Model {:?} arch={} n_params={}>",
                self.path,
                s.model.config().arch.name(),
                s.model.info().n_params
            ),
            Err(_) => format!("<qstream.Model {:?} closed>", self.path),
        }
    }

    /// Summary of the model: arch, sizes, n_params, file_bytes, bits_per_weight,
    /// quant_types ({type: tensor count}), n_threads, n_ctx (the per-call cap),
    /// bos/eos ids, chat_template (str or None) and config (the full ModelConfig).
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get_py(py)?;
        let m = &s.model;
        let i = m.info();
        let d = PyDict::new(py);
        d.set_item("path", &self.path)?;
        d.set_item("arch", i.arch.name())?;
        d.set_item("n_vocab", i.n_vocab)?;
        d.set_item("n_ctx_train", i.n_ctx_train)?;
        d.set_item("n_ctx", s.n_ctx_cap)?;
        d.set_item("n_layer", i.n_layer)?;
        d.set_item("n_embd", i.n_embd)?;
        d.set_item("n_head", i.n_head)?;
        d.set_item("n_head_kv", i.n_head_kv)?;
        d.set_item("n_params", i.n_params)?;
        d.set_item("file_bytes", i.file_bytes)?;
        d.set_item("bits_per_weight", i.bits_per_weight)?;
        let q = PyDict::new(py);
        for (t, n) in &i.quant_types {
            q.set_item(t.name(), n)?;
        }
        d.set_item("quant_types", q)?;
        d.set_item("n_threads", m.n_threads())?;
        d.set_item("bos_token_id", m.tokenizer().bos())?;
        d.set_item("eos_token_ids", m.tokenizer().eos_ids().to_vec())?;
        d.set_item("chat_template", m.tokenizer().chat_template())?;
        d.set_item("config", crate::config_dict(py, m.config())?)?;
        Ok(d)
    }

    /// Text → token ids. `add_special` adds BOS (when the model wants it) and whatever the
    /// tokenizer's post-processor adds.
    #[pyo3(signature = (text, add_special=true))]
    fn tokenize(&self, py: Python<'_>, text: String, add_special: bool) -> PyResult<Vec<u32>> {
        let s = self.get_py(py)?;
        detached(py, || Ok(s.model.tokenizer().encode(&text, add_special)?))
    }

    /// Token ids → text. `skip_special` drops special tokens such as `<|im_end|>`.
    #[pyo3(signature = (ids, skip_special=false))]
    fn detokenize(&self, py: Python<'_>, ids: Vec<u32>, skip_special: bool) -> PyResult<String> {
        let s = self.get_py(py)?;
        detached(py, || Ok(s.model.tokenizer().decode(&ids, skip_special)?))
    }

    /// Render `messages` (a list of {"role", "content"} dicts) with the model's chat template.
    #[pyo3(signature = (messages, add_generation_prompt=true))]
    fn apply_chat_template(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        add_generation_prompt: bool,
    ) -> PyResult<String> {
        let s = self.get_py(py)?;
        let msgs = self::messages(messages)?;
        detached(py, || {
            Ok(s.model.apply_chat_template(&msgs, add_generation_prompt)?)
        })
    }

    /// Generate text from `prompt` (a str, tokenized with BOS when the model wants one, or a
    /// list of token ids) and return it. temperature 0 = greedy; seed None = random.
    /// Generation stops at max_tokens, at an end-of-sequence token, or when one of `stop`
    /// (a str or list of str) appears (the stop string is not returned).
    #[pyo3(signature = (prompt, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, seed=None, stop=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: usize,
        temperature: f32,
        top_k: i64,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        seed: Option<u64>,
        stop: Option<StopArg>,
    ) -> PyResult<String> {
        let k = Knobs {
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
        };
        let gp = attached(py, || k.params(stop, true))?;
        Ok(self
            .run_generate(py, PromptSource::Prompt(prompt), gp)?
            .text)
    }

    /// Generate from token ids and return the generated ids (greedy by default).
    /// stop_on_eos=False keeps going past end-of-sequence tokens.
    #[pyo3(signature = (ids, max_tokens=16, *, temperature=0.0, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, seed=None, stop_on_eos=true))]
    #[allow(clippy::too_many_arguments)]
    fn generate_ids(
        &self,
        py: Python<'_>,
        ids: Vec<u32>,
        max_tokens: usize,
        temperature: f32,
        top_k: i64,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        seed: Option<u64>,
        stop_on_eos: bool,
    ) -> PyResult<Vec<u32>> {
        let k = Knobs {
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
        };
        let gp = attached(py, || k.params(None, stop_on_eos))?;
        let out = self.run_generate(py, PromptSource::Prompt(Prompt::Ids(ids)), gp)?;
        Ok(out.tokens)
    }

    /// Like `generate`, but returns a `TokenStream` that yields text pieces as they are
    /// generated. Breaking out of the loop (or `close()`) stops generation.
    #[pyo3(signature = (prompt, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, seed=None, stop=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: usize,
        temperature: f32,
        top_k: i64,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        seed: Option<u64>,
        stop: Option<StopArg>,
    ) -> PyResult<TokenStream> {
        let k = Knobs {
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
        };
        let gp = attached(py, || k.params(stop, true))?;
        self.start_stream(py, PromptSource::Prompt(prompt), gp)
    }

    /// Chat: render `messages` (list of {"role": ..., "content": ...}) with the model's chat
    /// template, generate the assistant's reply and return it.
    #[pyo3(signature = (messages, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, seed=None, stop=None))]
    #[allow(clippy::too_many_arguments)]
    fn chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        max_tokens: usize,
        temperature: f32,
        top_k: i64,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        seed: Option<u64>,
        stop: Option<StopArg>,
    ) -> PyResult<String> {
        let msgs = self::messages(messages)?;
        let k = Knobs {
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
        };
        let gp = attached(py, || k.params(stop, true))?;
        Ok(self.run_generate(py, PromptSource::Chat(msgs), gp)?.text)
    }

    /// Streaming `chat`: returns a `TokenStream` of text pieces.
    #[pyo3(signature = (messages, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, seed=None, stop=None))]
    #[allow(clippy::too_many_arguments)]
    fn chat_stream(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        max_tokens: usize,
        temperature: f32,
        top_k: i64,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        seed: Option<u64>,
        stop: Option<StopArg>,
    ) -> PyResult<TokenStream> {
        let msgs = self::messages(messages)?;
        let k = Knobs {
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
        };
        let gp = attached(py, || k.params(stop, true))?;
        self.start_stream(py, PromptSource::Chat(msgs), gp)
    }

    /// Logits for every position of `ids` from one forward pass (no BOS is added):
    /// a fresh float32 array of shape (len(ids), n_vocab).
    fn logits<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let s = self.get_py(py)?;
        let n_vocab = s.model.config().n_vocab;
        let n = ids.len();
        let v = detached(py, || {
            if ids.is_empty() {
                return Err(Fail::Arg("logits: no token ids".into()));
            }
            let mut sess = Session::new(s.model.clone(), &s.session_params(n))?;
            Ok(sess.decode_all(&ids)?)
        })?;
        let arr = Array2::from_shape_vec((n, n_vocab), v)
            .map_err(|e| Fail::Panic(format!("logits shape: {e}")).into_pyerr(py))?;
        Ok(PyArray2::from_owned_array(py, arr))
    }

    /// Perplexity of `text` (str or token ids) with llama.cpp's method: the tokens are cut
    /// into non-overlapping chunks of `ctx` tokens (the first token of each chunk replaced by
    /// BOS when the model adds one); each chunk is evaluated from an empty context and only
    /// the predictions for its second half are scored. Returns exp(mean negative
    /// log-likelihood). Needs at least `ctx` tokens.
    #[pyo3(signature = (text, ctx=512))]
    fn perplexity(&self, py: Python<'_>, text: Prompt, ctx: usize) -> PyResult<f64> {
        let s = self.get_py(py)?;
        let mut interrupt: Option<PyErr> = None;
        let ppl = detached(py, || {
            if ctx < 4 {
                return Err(Fail::Arg(format!("ctx must be ≥ 4, got {ctx}")));
            }
            let model = &s.model;
            let ids = text.ids(model)?;
            let n_chunk = ids.len() / ctx;
            if n_chunk == 0 {
                return Err(Fail::Arg(format!(
                    "perplexity needs at least ctx = {ctx} tokens, the text has {}",
                    ids.len()
                )));
            }
            let bos = if model.config().add_bos {
                model.tokenizer().bos()
            } else {
                None
            };
            let n_vocab = model.config().n_vocab;
            let first = ctx / 2;
            let mut sess = Session::new(model.clone(), &s.session_params(ctx))?;
            let mut nll = 0.0f64;
            let mut count = 0usize;
            let mut chunk = vec![0u32; ctx];
            for c in 0..n_chunk {
                if let Err(e) = Python::attach(|py| py.check_signals()) {
                    interrupt = Some(e);
                    return Ok(f64::NAN);
                }
                let orig = &ids[c * ctx..(c + 1) * ctx];
                chunk.copy_from_slice(orig);
                if let Some(b) = bos {
                    chunk[0] = b;
                }
                sess.reset();
                let logits = sess.decode_all(&chunk)?;
                for j in first..ctx - 1 {
                    let row = &logits[j * n_vocab..(j + 1) * n_vocab];
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
                    let target = orig[j + 1] as usize;
                    let lp = row.get(target).copied().unwrap_or(f32::NEG_INFINITY) as f64;
                    nll += max + sum.ln() - lp;
                    count += 1;
                }
            }
            Ok((nll / count as f64).exp())
        })?;
        match interrupt {
            Some(e) => Err(e),
            None => Ok(ppl),
        }
    }
}

/// Messages from the generation thread of a stream.
enum Msg {
    Token { id: u32, piece: String },
    Done(Result<GenerateOutput, Fail>),
}

struct StreamState {
    /// `true` = run one more step; dropped to stop the worker
    go: Option<SyncSender<bool>>,
    rx: Receiver<Msg>,
    worker: Option<JoinHandle<()>>,
    tokens: Vec<u32>,
    text: String,
    stop_reason: Option<&'static str>,
    finished: bool,
}

impl StreamState {
    /// Stop the worker and wait for it (it is parked between steps, so this is quick).
    fn stop(&mut self) {
        self.go = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        if !self.finished {
            self.finished = true;
            if self.stop_reason.is_none() {
                self.stop_reason = Some("stopped");
            }
        }
    }
}

/// Iterator over generated text pieces (returned by `Model.stream` / `Model.chat_stream`).
///
/// Each `next()` runs one generation step with the GIL released. Breaking out of the loop,
/// `close()`, or leaving a `with` block stops generation; `cancel()` may be called from
/// another thread. `tokens`, `text` and `stop_reason` describe what was generated so far.
#[pyclass(frozen, module = "qstream", name = "TokenStream")]
pub struct TokenStream {
    st: Mutex<StreamState>,
    cancelled: Arc<AtomicBool>,
}

impl TokenStream {
    fn start(shared: Arc<Shared>, prompt: PromptSource, gp: GenerateParams) -> Result<Self, Fail> {
        let (go_tx, go_rx) = sync_channel::<bool>(1);
        let (tx, rx) = sync_channel::<Msg>(1);
        let cancelled = Arc::new(AtomicBool::new(false));
        let cancel2 = cancelled.clone();
        let worker = std::thread::Builder::new()
            .name("qstream-stream".into())
            .spawn(move || {
                // park until the first next()
                if go_rx.recv() != Ok(true) {
                    return;
                }
                let res = guard(|| {
                    let ids = prompt.ids(&shared.model)?;
                    shared.generate(&ids, &gp, &mut |id, piece| {
                        if tx
                            .send(Msg::Token {
                                id,
                                piece: piece.to_string(),
                            })
                            .is_err()
                        {
                            return false;
                        }
                        // park until the next next(); a dropped sender stops generation
                        go_rx.recv() == Ok(true) && !cancel2.load(Ordering::SeqCst)
                    })
                });
                let _ = tx.send(Msg::Done(res));
            })
            .map_err(|e| Fail::Core(qstream_core::Error::Internal(format!("spawn: {e}"))))?;
        Ok(TokenStream {
            st: Mutex::new(StreamState {
                go: Some(go_tx),
                rx,
                worker: Some(worker),
                tokens: Vec::new(),
                text: String::new(),
                stop_reason: None,
                finished: false,
            }),
            cancelled,
        })
    }

    fn state(&self) -> Result<MutexGuard<'_, StreamState>, Fail> {
        match self.st.try_lock() {
            Ok(g) => Ok(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Ok(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => Err(Fail::Busy("the stream")),
        }
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        lock(&self.st).stop();
    }
}

#[pymethods]
impl TokenStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<String> {
        let mut st = self.state().map_err(|e| e.into_pyerr(py))?;
        loop {
            if st.finished {
                return Err(PyStopIteration::new_err(()));
            }
            if let Err(e) = py.check_signals() {
                st.stop();
                return Err(e);
            }
            let StreamState { go, rx, .. } = &mut *st;
            let (go, rx) = (&*go, &mut *rx);
            let msg = py.detach(move || {
                let go = go.as_ref()?;
                go.send(true).ok()?;
                rx.recv().ok()
            });
            match msg {
                Some(Msg::Token { id, piece }) => {
                    st.tokens.push(id);
                    if !piece.is_empty() {
                        st.text.push_str(&piece);
                        return Ok(piece);
                    }
                }
                Some(Msg::Done(r)) => {
                    st.finished = true;
                    st.go = None;
                    if let Some(w) = st.worker.take() {
                        let _ = py.detach(|| w.join());
                    }
                    match r {
                        Ok(out) => {
                            st.stop_reason = Some(if self.cancelled.load(Ordering::SeqCst) {
                                "cancelled"
                            } else {
                                stop_reason_name(out.stop_reason)
                            });
                            st.text = out.text;
                        }
                        Err(e) => {
                            st.stop_reason = Some("error");
                            return Err(e.into_pyerr(py));
                        }
                    }
                }
                None => {
                    st.stop();
                    return Err(
                        Fail::Panic("the generation thread ended unexpectedly".into())
                            .into_pyerr(py),
                    );
                }
            }
        }
    }

    /// Stop generation now (idempotent). Further iteration raises StopIteration.
    fn close(&self, py: Python<'_>) {
        let mut st = lock(&self.st);
        let s: &mut StreamState = &mut st;
        py.detach(move || s.stop());
    }

    /// Ask the generation to stop after the current token; safe from any thread.
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// Ids generated so far (including an end-of-sequence id that ended generation).
    #[getter]
    fn tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let st = self.state().map_err(|e| e.into_pyerr(py))?;
        PyList::new(py, &st.tokens)
    }

    /// Text generated so far (stop string removed once generation ended).
    #[getter]
    fn text(&self, py: Python<'_>) -> PyResult<String> {
        let st = self.state().map_err(|e| e.into_pyerr(py))?;
        Ok(st.text.clone())
    }

    /// Why generation ended: "max_tokens", "eos", "stop_string", "stopped" (closed or
    /// broken out of), "cancelled", "error"; None while running.
    #[getter]
    fn stop_reason(&self, py: Python<'_>) -> PyResult<Option<&'static str>> {
        let st = self.state().map_err(|e| e.into_pyerr(py))?;
        Ok(st.stop_reason)
    }
}

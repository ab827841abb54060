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

/// Sampling and length options shared by every generation method (Model and Session).
#[derive(Clone, Copy)]
struct Knobs {
    max_tokens: usize,
    temperature: f32,
    top_k: i64,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    presence_penalty: f32,
    frequency_penalty: f32,
    repeat_last_n: usize,
    seed: Option<u64>,
    stop_on_eos: bool,
}

/// [`Knobs`] from the same-named arguments of a generation method.
macro_rules! knobs {
    ($max_tokens:ident, $temperature:ident, $top_k:ident, $top_p:ident, $min_p:ident,
     $repeat_penalty:ident, $presence_penalty:ident, $frequency_penalty:ident,
     $repeat_last_n:ident, $seed:ident, $stop_on_eos:ident) => {
        Knobs {
            max_tokens: $max_tokens,
            temperature: $temperature,
            top_k: $top_k,
            top_p: $top_p,
            min_p: $min_p,
            repeat_penalty: $repeat_penalty,
            presence_penalty: $presence_penalty,
            frequency_penalty: $frequency_penalty,
            repeat_last_n: $repeat_last_n,
            seed: $seed,
            stop_on_eos: $stop_on_eos,
        }
    };
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
    fn params(self, stop: Option<StopArg>) -> Result<GenerateParams, Fail> {
        if self.top_k < 0 {
            return Err(Fail::Arg(format!(
                "top_k must be ≥ 0 (0 = off), got {}",
                self.top_k
            )));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !v.is_finite() {
                return Err(Fail::Arg(format!("{name} must be finite, got {v}")));
            }
        }
        let stop_strings = match stop {
            None => Vec::new(),
            Some(StopArg::One(s)) => vec![s],
            Some(StopArg::Many(v)) => v,
        };
        let sampling = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k as usize,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed.unwrap_or_else(random_seed),
        };
        sampling.validate()?; // core's rule set, shared with the CLI and the C API
        Ok(GenerateParams {
            max_tokens: self.max_tokens,
            sampling,
            stop_strings,
            stop_on_eos: self.stop_on_eos,
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
/// (each call gets its own KV cache; `session()` keeps one across calls). Use as a
/// context manager or call `close()`.
#[pyclass(frozen, module = "qstream", name = "Model")]
pub struct PyModel {
    shared: RwLock<Option<Arc<Shared>>>,
    path: String,
}

/// One generation to run: gets the per-token callback (`false` stops), returns the outcome.
type Job =
    Box<dyn FnOnce(&mut dyn FnMut(u32, &str) -> bool) -> Result<GenerateOutput, Fail> + Send>;

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

    /// A generation on a pooled session (fresh context).
    fn job(&self, py: Python<'_>, prompt: PromptSource, gp: GenerateParams) -> PyResult<Job> {
        let shared = self.get_py(py)?;
        Ok(Box::new(move |cb| {
            let ids = prompt.ids(&shared.model)?;
            shared.generate(&ids, &gp, cb)
        }))
    }
}

/// Run `job` with the GIL released, checking for Ctrl-C between tokens.
fn run_blocking(py: Python<'_>, job: Job) -> PyResult<GenerateOutput> {
    let mut interrupt: Option<PyErr> = None;
    let out = detached(py, || {
        let mut last = Instant::now();
        job(&mut |_, _| {
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

/// The text, or with `details` a [`GenerateResult`].
fn output(py: Python<'_>, out: GenerateOutput, details: bool) -> PyResult<Py<PyAny>> {
    if details {
        let r = GenerateResult::new(&out, stop_reason_name(out.stop_reason));
        Ok(Py::new(py, r)?.into_any())
    } else {
        Ok(out.text.into_pyobject(py)?.into_any().unbind())
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
            ..Default::default()
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

    /// A persistent session: a KV cache kept across calls (`generate`, `stream`, `chat`
    /// continue where the last call ended), with `reset()` and `truncate(n)`. n_ctx: its
    /// context window in tokens (None = the model's `n_ctx`). One call at a time (a
    /// concurrent one raises `BusyError`); it keeps the weights alive until closed.
    #[pyo3(signature = (*, n_ctx=None))]
    fn session(&self, py: Python<'_>, n_ctx: Option<usize>) -> PyResult<PySession> {
        let s = self.get_py(py)?;
        if n_ctx == Some(0) {
            return Err(Fail::Arg("n_ctx must be ≥ 1".into()).into_pyerr(py));
        }
        let n_ctx = n_ctx.unwrap_or(s.n_ctx_cap);
        let session = detached(py, || {
            Ok(Session::new(s.model.clone(), &s.session_params(n_ctx))?)
        })?;
        Ok(PySession {
            n_ctx: session.n_ctx(),
            state: Arc::new(Mutex::new(Some(SessState {
                session,
                pending: None,
                stale: false,
            }))),
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Generate text from `prompt` (a str, tokenized with BOS when the model wants one, or a
    /// list of token ids) and return it; with `details=True` a `GenerateResult` (text, tokens,
    /// stop_reason, token counts, timings). Each call starts from an empty context (use
    /// `session()` to keep one across calls). temperature 0 = greedy; seed None = random.
    /// presence_penalty/frequency_penalty are subtracted once / per occurrence from the logits
    /// of tokens in the last `repeat_last_n`. Generation stops at max_tokens, at an
    /// end-of-sequence token (unless stop_on_eos=False), or when one of `stop` (a str or list
    /// of str) appears (the stop string is not returned).
    #[pyo3(signature = (prompt, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, seed=None, stop=None, stop_on_eos=true, details=false))]
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
        presence_penalty: f32,
        frequency_penalty: f32,
        repeat_last_n: usize,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_on_eos: bool,
        details: bool,
    ) -> PyResult<Py<PyAny>> {
        let gp = attached(py, || {
            knobs!(
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                frequency_penalty,
                repeat_last_n,
                seed,
                stop_on_eos
            )
            .params(stop)
        })?;
        let out = run_blocking(py, self.job(py, PromptSource::Prompt(prompt), gp)?)?;
        output(py, out, details)
    }

    /// Like `generate` (same options and defaults), returning the generated token ids
    /// (including an end-of-sequence id that ended generation).
    #[pyo3(signature = (prompt, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, seed=None, stop=None, stop_on_eos=true))]
    #[allow(clippy::too_many_arguments)]
    fn generate_ids(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: usize,
        temperature: f32,
        top_k: i64,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        presence_penalty: f32,
        frequency_penalty: f32,
        repeat_last_n: usize,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_on_eos: bool,
    ) -> PyResult<Vec<u32>> {
        let gp = attached(py, || {
            knobs!(
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                frequency_penalty,
                repeat_last_n,
                seed,
                stop_on_eos
            )
            .params(stop)
        })?;
        let out = run_blocking(py, self.job(py, PromptSource::Prompt(prompt), gp)?)?;
        Ok(out.tokens)
    }

    /// Like `generate`, but returns a `TokenStream` that yields text pieces as they are
    /// generated. Breaking out of the loop (or `close()`) stops generation.
    #[pyo3(signature = (prompt, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, seed=None, stop=None, stop_on_eos=true))]
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
        presence_penalty: f32,
        frequency_penalty: f32,
        repeat_last_n: usize,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_on_eos: bool,
    ) -> PyResult<TokenStream> {
        let gp = attached(py, || {
            knobs!(
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                frequency_penalty,
                repeat_last_n,
                seed,
                stop_on_eos
            )
            .params(stop)
        })?;
        let job = self.job(py, PromptSource::Prompt(prompt), gp)?;
        TokenStream::start(job).map_err(|e| e.into_pyerr(py))
    }

    /// Chat: render `messages` (list of {"role": ..., "content": ...}) with the model's chat
    /// template, generate the assistant's reply and return it (a `GenerateResult` with
    /// `details=True`). Options as for `generate`.
    #[pyo3(signature = (messages, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, seed=None, stop=None, stop_on_eos=true, details=false))]
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
        presence_penalty: f32,
        frequency_penalty: f32,
        repeat_last_n: usize,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_on_eos: bool,
        details: bool,
    ) -> PyResult<Py<PyAny>> {
        let msgs = self::messages(messages)?;
        let gp = attached(py, || {
            knobs!(
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                frequency_penalty,
                repeat_last_n,
                seed,
                stop_on_eos
            )
            .params(stop)
        })?;
        let out = run_blocking(py, self.job(py, PromptSource::Chat(msgs), gp)?)?;
        output(py, out, details)
    }

    /// Streaming `chat`: returns a `TokenStream` of text pieces.
    #[pyo3(signature = (messages, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, seed=None, stop=None, stop_on_eos=true))]
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
        presence_penalty: f32,
        frequency_penalty: f32,
        repeat_last_n: usize,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_on_eos: bool,
    ) -> PyResult<TokenStream> {
        let msgs = self::messages(messages)?;
        let gp = attached(py, || {
            knobs!(
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                frequency_penalty,
                repeat_last_n,
                seed,
                stop_on_eos
            )
            .params(stop)
        })?;
        let job = self.job(py, PromptSource::Chat(msgs), gp)?;
        TokenStream::start(job).map_err(|e| e.into_pyerr(py))
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
            let model = &s.model;
            let ids = text.ids(model)?;
            let mut sess = Session::new(model.clone(), &s.session_params(ctx.max(4)))?;
            // core's implementation, shared with the CLI; Ctrl-C is checked per chunk
            let r = qstream_core::perplexity::perplexity(&mut sess, &ids, ctx, 0, &mut |_, _| {
                match Python::attach(|py| py.check_signals()) {
                    Ok(()) => true,
                    Err(e) => {
                        interrupt = Some(e);
                        false
                    }
                }
            });
            match r {
                Err(qstream_core::Error::Cancelled) if interrupt.is_some() => Ok(f64::NAN),
                r => Ok(r?.ppl()),
            }
        })?;
        match interrupt {
            Some(e) => Err(e),
            None => Ok(ppl),
        }
    }
}

/// The outcome of a generation (`generate(..., details=True)`, `chat(..., details=True)`,
/// `TokenStream.result`); the same fields as the C API's `qs_generate_result`.
#[pyclass(frozen, module = "qstream", name = "GenerateResult")]
pub struct GenerateResult {
    text: String,
    tokens: Vec<u32>,
    stop_reason: &'static str,
    n_prompt: usize,
    prompt_secs: f64,
    gen_secs: f64,
}

impl GenerateResult {
    fn new(out: &GenerateOutput, stop_reason: &'static str) -> Self {
        GenerateResult {
            text: out.text.clone(),
            tokens: out.tokens.clone(),
            stop_reason,
            n_prompt: out.n_prompt,
            prompt_secs: out.prompt_secs,
            gen_secs: out.gen_secs,
        }
    }
}

#[pymethods]
impl GenerateResult {
    /// The generated text (a stop string that ended generation removed).
    #[getter]
    fn text(&self) -> &str {
        &self.text
    }

    /// The generated ids (including an end-of-sequence id that ended generation).
    #[getter]
    fn tokens(&self) -> Vec<u32> {
        self.tokens.clone()
    }

    /// Why generation ended: "max_tokens" (or the context is full), "eos", "stop_string",
    /// "stopped" (closed, broken out of, or interrupted), "cancelled".
    #[getter]
    fn stop_reason(&self) -> &'static str {
        self.stop_reason
    }

    /// Prompt tokens decoded by this call (in a session: only the new ones).
    #[getter]
    fn n_prompt(&self) -> usize {
        self.n_prompt
    }

    /// Tokens sampled (`len(tokens)`).
    #[getter]
    fn n_generated(&self) -> usize {
        self.tokens.len()
    }

    /// Seconds spent on the prompt.
    #[getter]
    fn prompt_secs(&self) -> f64 {
        self.prompt_secs
    }

    /// Seconds spent generating.
    #[getter]
    fn gen_secs(&self) -> f64 {
        self.gen_secs
    }

    fn __repr__(&self) -> String {
        format!(
            "<qstream.GenerateResult stop_reason={:?} n_prompt={} n_generated={} prompt_secs={:.3} gen_secs={:.3}>",
            self.stop_reason,
            self.n_prompt,
            self.tokens.len(),
            self.prompt_secs,
            self.gen_secs
        )
    }
}

/// What a session call works on.
enum SessInput {
    Prompt(Prompt),
    Chat(Vec<ChatMessage>),
}

/// A session's state behind its lock.
struct SessState {
    session: Session,
    /// The last sampled token: part of the conversation but not yet in the KV cache (the
    /// engine does not decode it); decoded first by the next call.
    pending: Option<u32>,
    /// The logits are not those of the last token in the cache (after `truncate`).
    stale: bool,
}

impl SessState {
    /// Tokens of the conversation: the cache plus the pending token.
    fn tokens(&self) -> Vec<u32> {
        let mut v = self.session.tokens().to_vec();
        v.extend(self.pending);
        v
    }

    fn run(
        &mut self,
        input: &SessInput,
        gp: &GenerateParams,
        on_token: &mut dyn FnMut(u32, &str) -> bool,
    ) -> Result<GenerateOutput, Fail> {
        let model = self.session.model().clone();
        let ids = match input {
            SessInput::Prompt(p) => {
                let empty = self.session.n_past() == 0 && self.pending.is_none();
                let new = match p {
                    Prompt::Text(t) if t.is_empty() => Vec::new(),
                    Prompt::Text(t) => model.tokenizer().encode(t, empty)?,
                    Prompt::Ids(v) => v.clone(),
                };
                let mut ids: Vec<u32> = self.pending.into_iter().collect();
                ids.extend(new);
                if ids.is_empty() {
                    let n = self.session.n_past();
                    if n == 0 {
                        return Err(Fail::Arg(
                            "the prompt is empty and so is the session".into(),
                        ));
                    }
                    if self.stale {
                        // the logits belong to a removed position: recompute the last one
                        let last = self.session.tokens()[n - 1];
                        self.session.truncate(n - 1);
                        ids.push(last);
                    }
                }
                ids
            }
            SessInput::Chat(msgs) => {
                let text = model.apply_chat_template(msgs, true)?;
                let ids = model.tokenizer().encode(&text, true)?;
                if ids.is_empty() {
                    return Err(Fail::Arg("the rendered conversation is empty".into()));
                }
                // keep the cached prefix the conversation shares; decode at least one token
                let cached = self.session.tokens();
                let keep = cached
                    .iter()
                    .zip(&ids)
                    .take_while(|(a, b)| a == b)
                    .count()
                    .min(ids.len() - 1);
                if keep < cached.len() {
                    self.session.truncate(keep);
                    self.stale = true;
                }
                self.pending = None;
                ids[keep..].to_vec()
            }
        };
        let out = self
            .session
            .generate(&ids, gp, &mut |t| on_token(t.id, t.piece))?;
        self.pending = out.tokens.last().copied();
        self.stale = false;
        Ok(out)
    }
}

/// Releases a session's busy flag when dropped.
struct Claim(Arc<AtomicBool>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A persistent conversation on a model (from `Model.session()`): its KV cache is kept
/// across calls, so each call decodes only its new tokens. One call at a time: a second
/// concurrent call (or any call while one of its streams runs) raises `BusyError`.
#[pyclass(frozen, module = "qstream", name = "Session")]
pub struct PySession {
    state: Arc<Mutex<Option<SessState>>>,
    busy: Arc<AtomicBool>,
    n_ctx: usize,
}

impl PySession {
    fn claim(&self) -> Result<Claim, Fail> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Fail::Busy("the session"));
        }
        let c = Claim(self.busy.clone());
        if lock(&self.state).is_none() {
            return Err(Fail::Closed("the session"));
        }
        Ok(c)
    }

    /// Run `f` on the state now (short operations, with the GIL held).
    fn with<T>(&self, f: impl FnOnce(&mut SessState) -> T) -> Result<T, Fail> {
        let _c = self.claim()?;
        let mut g = lock(&self.state);
        let st = g.as_mut().ok_or(Fail::Closed("the session"))?;
        Ok(f(st))
    }

    fn job(&self, input: SessInput, gp: GenerateParams) -> Result<Job, Fail> {
        let claim = self.claim()?;
        let state = self.state.clone();
        Ok(Box::new(move |cb| {
            let _claim = claim;
            let mut g = lock(&state);
            let st = g.as_mut().ok_or(Fail::Closed("the session"))?;
            st.run(&input, &gp, cb)
        }))
    }
}

#[pymethods]
impl PySession {
    /// Append `prompt` (a str — tokenized with BOS only when the session is empty — or
    /// token ids; may be empty to continue) to the session and generate; returns the text (a
    /// `GenerateResult` with `details=True`, whose n_prompt counts the tokens decoded by this
    /// call). The generated tokens stay in the session. Options as for `Model.generate`.
    #[pyo3(signature = (prompt, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, seed=None, stop=None, stop_on_eos=true, details=false))]
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
        presence_penalty: f32,
        frequency_penalty: f32,
        repeat_last_n: usize,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_on_eos: bool,
        details: bool,
    ) -> PyResult<Py<PyAny>> {
        let gp = attached(py, || {
            knobs!(
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                frequency_penalty,
                repeat_last_n,
                seed,
                stop_on_eos
            )
            .params(stop)
        })?;
        let out = run_blocking(
            py,
            self.job(SessInput::Prompt(prompt), gp)
                .map_err(|e| e.into_pyerr(py))?,
        )?;
        output(py, out, details)
    }

    /// Streaming `generate`: returns a `TokenStream`; the session is busy until it ends.
    #[pyo3(signature = (prompt, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, seed=None, stop=None, stop_on_eos=true))]
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
        presence_penalty: f32,
        frequency_penalty: f32,
        repeat_last_n: usize,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_on_eos: bool,
    ) -> PyResult<TokenStream> {
        let gp = attached(py, || {
            knobs!(
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                frequency_penalty,
                repeat_last_n,
                seed,
                stop_on_eos
            )
            .params(stop)
        })?;
        let job = self
            .job(SessInput::Prompt(prompt), gp)
            .map_err(|e| e.into_pyerr(py))?;
        TokenStream::start(job).map_err(|e| e.into_pyerr(py))
    }

    /// Chat with the whole conversation `messages` (list of {"role", "content"} dicts,
    /// earlier turns included): the rendered conversation is compared with the session's
    /// tokens and only what differs is decoded, so a multi-turn chat does not re-process
    /// earlier turns. Returns the reply (a `GenerateResult` with `details=True`).
    #[pyo3(signature = (messages, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, seed=None, stop=None, stop_on_eos=true, details=false))]
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
        presence_penalty: f32,
        frequency_penalty: f32,
        repeat_last_n: usize,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_on_eos: bool,
        details: bool,
    ) -> PyResult<Py<PyAny>> {
        let msgs = self::messages(messages)?;
        let gp = attached(py, || {
            knobs!(
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                frequency_penalty,
                repeat_last_n,
                seed,
                stop_on_eos
            )
            .params(stop)
        })?;
        let out = run_blocking(
            py,
            self.job(SessInput::Chat(msgs), gp)
                .map_err(|e| e.into_pyerr(py))?,
        )?;
        output(py, out, details)
    }

    /// Streaming `chat`: returns a `TokenStream`; the session is busy until it ends.
    #[pyo3(signature = (messages, *, max_tokens=256, temperature=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, seed=None, stop=None, stop_on_eos=true))]
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
        presence_penalty: f32,
        frequency_penalty: f32,
        repeat_last_n: usize,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_on_eos: bool,
    ) -> PyResult<TokenStream> {
        let msgs = self::messages(messages)?;
        let gp = attached(py, || {
            knobs!(
                max_tokens,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                presence_penalty,
                frequency_penalty,
                repeat_last_n,
                seed,
                stop_on_eos
            )
            .params(stop)
        })?;
        let job = self
            .job(SessInput::Chat(msgs), gp)
            .map_err(|e| e.into_pyerr(py))?;
        TokenStream::start(job).map_err(|e| e.into_pyerr(py))
    }

    /// Forget the whole conversation (the cache is kept allocated).
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        attached(py, || {
            self.with(|s| {
                s.session.reset();
                s.pending = None;
                s.stale = false;
            })
        })
    }

    /// Keep only the first `n` tokens of the conversation (no-op when `n ≥ n_past`); the
    /// next call recomputes what it needs, it never samples from removed positions.
    fn truncate(&self, py: Python<'_>, n: usize) -> PyResult<()> {
        attached(py, || {
            self.with(|s| {
                let cached = s.session.n_past();
                if n >= cached + usize::from(s.pending.is_some()) {
                    return;
                }
                s.pending = None;
                if n < cached {
                    s.session.truncate(n);
                    s.stale = n > 0;
                }
            })
        })
    }

    /// Token ids of the conversation so far (prompts and generated tokens).
    #[getter]
    fn tokens(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        attached(py, || self.with(|s| s.tokens()))
    }

    /// Number of tokens in the conversation (`len(tokens)`; one more than `n_ctx` when the
    /// window filled up: the last sampled token, which did not fit).
    #[getter]
    fn n_past(&self, py: Python<'_>) -> PyResult<usize> {
        attached(py, || {
            self.with(|s| s.session.n_past() + usize::from(s.pending.is_some()))
        })
    }

    /// Context window in tokens.
    #[getter]
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Free the KV cache; later calls raise `ClosedError`. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        attached(py, || {
            let _c = match self.claim() {
                Ok(c) => c,
                Err(Fail::Closed(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            let old = lock(&self.state).take();
            drop(old);
            Ok(())
        })
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.state).is_none()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match lock(&self.state).as_ref() {
            Some(s) => format!(
                "<qstream.Session n_past={} n_ctx={}>",
                s.session.n_past() + usize::from(s.pending.is_some()),
                self.n_ctx
            ),
            None => "<qstream.Session closed>".to_string(),
        }
    }
}

/// Messages from the generation thread of a stream.
enum Msg {
    Token { id: u32, piece: String },
    Done(Result<GenerateOutput, Fail>),
}

/// The channel to the generation thread. Locked by `__next__` for a whole step (with the
/// GIL released), and by `close()` only with the GIL released, so the two never wait for
/// each other while one holds the GIL.
struct Chan {
    /// `true` = run one more step; dropped to stop the worker
    go: Option<SyncSender<bool>>,
    rx: Receiver<Msg>,
    worker: Option<JoinHandle<()>>,
}

impl Chan {
    /// Stop the worker and wait for it (it is parked between steps, so this is quick).
    fn stop(&mut self) {
        self.go = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// What a stream generated so far (locked only briefly, never across a step).
#[derive(Default)]
struct Progress {
    tokens: Vec<u32>,
    text: String,
    stop_reason: Option<&'static str>,
    finished: bool,
    result: Option<GenerateOutput>,
}

/// Iterator over generated text pieces (from `Model.stream` / `Model.chat_stream` /
/// `Session.stream` / `Session.chat_stream`).
///
/// Each `next()` runs one generation step with the GIL released. Breaking out of the loop,
/// `close()` (from any thread), or leaving a `with` block stops generation; `cancel()` may
/// be called from another thread. `tokens`, `text` and `stop_reason` describe what was
/// generated so far, `result` the outcome once it ended.
#[pyclass(frozen, module = "qstream", name = "TokenStream")]
pub struct TokenStream {
    chan: Mutex<Chan>,
    prog: Mutex<Progress>,
    cancelled: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
}

impl TokenStream {
    fn start(job: Job) -> Result<Self, Fail> {
        let (go_tx, go_rx) = sync_channel::<bool>(1);
        let (tx, rx) = sync_channel::<Msg>(1);
        let cancelled = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        let (cancel2, closing2) = (cancelled.clone(), closing.clone());
        let worker = std::thread::Builder::new()
            .name("qstream-stream".into())
            .spawn(move || {
                // park until the first next(); dropping the job releases what it holds
                if go_rx.recv() != Ok(true) {
                    return;
                }
                let res = guard(|| {
                    job(&mut |id, piece| {
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
                        go_rx.recv() == Ok(true)
                            && !cancel2.load(Ordering::SeqCst)
                            && !closing2.load(Ordering::SeqCst)
                    })
                });
                let _ = tx.send(Msg::Done(res));
            })
            .map_err(|e| Fail::Core(qstream_core::Error::Internal(format!("spawn: {e}"))))?;
        Ok(TokenStream {
            chan: Mutex::new(Chan {
                go: Some(go_tx),
                rx,
                worker: Some(worker),
            }),
            prog: Mutex::new(Progress::default()),
            cancelled,
            closing,
        })
    }

    /// Mark the stream ended by `close()` / an interrupt (keeps an earlier reason).
    fn mark_stopped(&self) {
        let mut p = lock(&self.prog);
        if !p.finished {
            p.finished = true;
            if p.stop_reason.is_none() {
                p.stop_reason = Some("stopped");
            }
        }
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        lock(&self.chan).stop();
    }
}

#[pymethods]
impl TokenStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<String> {
        let mut ch = match self.chan.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            // close() sets `closing` before it takes the lock to stop the worker: a step
            // racing with it ends the iteration instead of reporting a busy stream
            Err(std::sync::TryLockError::WouldBlock) if self.closing.load(Ordering::SeqCst) => {
                return Err(PyStopIteration::new_err(()))
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(Fail::Busy("the stream").into_pyerr(py))
            }
        };
        let ch: &mut Chan = &mut ch;
        loop {
            if lock(&self.prog).finished {
                return Err(PyStopIteration::new_err(()));
            }
            if self.closing.load(Ordering::SeqCst) {
                py.detach(|| ch.stop());
                self.mark_stopped();
                return Err(PyStopIteration::new_err(()));
            }
            if let Err(e) = py.check_signals() {
                py.detach(|| ch.stop());
                self.mark_stopped();
                return Err(e);
            }
            let Chan { go, rx, .. } = &mut *ch;
            let (go, rx) = (&*go, &mut *rx);
            let msg = py.detach(move || {
                let go = go.as_ref()?;
                go.send(true).ok()?;
                rx.recv().ok()
            });
            match msg {
                Some(Msg::Token { id, piece }) => {
                    let mut p = lock(&self.prog);
                    p.tokens.push(id);
                    if !piece.is_empty() {
                        p.text.push_str(&piece);
                        return Ok(piece);
                    }
                }
                Some(Msg::Done(r)) => {
                    ch.go = None;
                    if let Some(w) = ch.worker.take() {
                        let _ = py.detach(|| w.join());
                    }
                    let mut p = lock(&self.prog);
                    p.finished = true;
                    match r {
                        Ok(out) => {
                            p.stop_reason = Some(if self.closing.load(Ordering::SeqCst) {
                                "stopped"
                            } else if self.cancelled.load(Ordering::SeqCst) {
                                "cancelled"
                            } else {
                                stop_reason_name(out.stop_reason)
                            });
                            p.text = out.text.clone();
                            p.result = Some(out);
                        }
                        Err(e) => {
                            p.stop_reason = Some("error");
                            drop(p);
                            return Err(e.into_pyerr(py));
                        }
                    }
                }
                None => {
                    py.detach(|| ch.stop());
                    self.mark_stopped();
                    return Err(
                        Fail::Panic("the generation thread ended unexpectedly".into())
                            .into_pyerr(py),
                    );
                }
            }
        }
    }

    /// Stop generation now (idempotent; safe from any thread: it waits, without the GIL,
    /// for a step in progress to finish). Further iteration raises StopIteration.
    fn close(&self, py: Python<'_>) {
        self.closing.store(true, Ordering::SeqCst);
        let chan = &self.chan;
        py.detach(|| lock(chan).stop());
        self.mark_stopped();
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
        PyList::new(py, &lock(&self.prog).tokens)
    }

    /// Text generated so far (stop string removed once generation ended).
    #[getter]
    fn text(&self) -> String {
        lock(&self.prog).text.clone()
    }

    /// Why generation ended: "max_tokens", "eos", "stop_string", "stopped" (closed or
    /// broken out of), "cancelled", "error"; None while running.
    #[getter]
    fn stop_reason(&self) -> Option<&'static str> {
        lock(&self.prog).stop_reason
    }

    /// The `GenerateResult` once generation ran to its end (None while running, and
    /// after `close()` or an error).
    #[getter]
    fn result(&self) -> Option<GenerateResult> {
        let p = lock(&self.prog);
        let reason = p.stop_reason.unwrap_or("stopped");
        p.result.as_ref().map(|o| GenerateResult::new(o, reason))
    }
}

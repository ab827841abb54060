//! QStream Python bindings: the `qstream._qstream` extension module.
//!
//! The public Python surface is re-exported by `python/qstream/__init__.py`:
//! [`model::PyModel`] (`qstream.Model`), [`model::PySession`] (`qstream.Session`),
//! [`model::TokenStream`], [`model::GenerateResult`],
//! [`attention::PyAttentionCache`] (`qstream.AttentionCache`), `convert`, `info`, and the
//! exception hierarchy of [`errors`]. Every call into the engine runs with the GIL released
//! and inside a panic guard.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use qstream_core::convert::calibrate::CalibrationSource;
use qstream_core::convert::{ConvertParams, OutlierAlloc, Progress, QuantChoice};
use qstream_core::format::{LoadOptions, QsfFile};
use qstream_core::model::ModelConfig;

mod attention;
mod errors;
mod model;

use errors::{attached, detached, Fail};

/// `config` as a Python dict (through its JSON form).
pub(crate) fn config_dict<'py>(py: Python<'py>, c: &ModelConfig) -> PyResult<Bound<'py, PyAny>> {
    let s = serde_json::to_string(c)
        .map_err(|e| Fail::Panic(format!("config to JSON: {e}")).into_pyerr(py))?;
    py.import("json")?.call_method1("loads", (s,))
}

/// `progress=` as passed: a bool or a callable.
#[derive(FromPyObject)]
enum ProgressIn {
    Flag(bool),
    Func(Py<PyAny>),
}

/// Progress reporting requested by `convert(progress=...)`.
enum ProgressArg {
    Off,
    Stderr,
    Callback(Py<PyAny>),
}

/// `tensor_types=` values: "TYPE" or "TYPE:BLOCK".
fn tensor_override(
    role: &str,
    spec: &str,
    default_block: usize,
) -> Result<(String, qstream_core::quant::QuantType, usize), Fail> {
    let bad = |m: String| Fail::Arg(format!("tensor_types[{role:?}] = {spec:?}: {m}"));
    if role.is_empty() {
        return Err(bad("the role is empty".into()));
    }
    let (ty, block) = match spec.split_once(':') {
        Some((t, b)) => (
            t,
            Some(
                b.parse::<usize>()
                    .map_err(|_| bad(format!("block {b:?} is not a number")))?,
            ),
        ),
        None => (spec, None),
    };
    let QuantChoice::Type(t) = QuantChoice::parse(ty)? else {
        return Err(bad(format!("{ty} is not a single type")));
    };
    let block = match block {
        Some(b) => b,
        None if t.is_float() => 1,
        None if t.valid_block(default_block) => default_block,
        None => t.default_block(),
    };
    if !t.valid_block(block) {
        return Err(bad(format!("block {block} is not valid for {t}")));
    }
    Ok((role.to_string(), t, block))
}

/// Convert a GGUF file or HuggingFace model folder `src` to the QSF file `dst` (what
/// `qstream convert` does).
///
/// quant: "keep", "f32", "f16", "bf16", "8bit", "4bit", "4bit_sym", "3bit", "2bit",
/// "2bit_outlier", "3bit_outlier", "4bit_outlier", "mxfp4" (or a QSF type name such as
/// "q4"), a mixed-precision preset "q4_m", "q3_m", "q2_m", or "TYPE+e8" (token embedding
/// and output at 8 bits). block_size: 32/64/128/256 for the q2/q3/q4 types. outlier_frac:
/// fraction of the outlier types' weights kept in FP16, in [0, 0.5), spread over their
/// tensors by the error it removes ("global", the default) or of each tensor's weights
/// (outlier_alloc="tensor"). compress: LZ4-compress layers. rotate: incoherence rotation
/// group size (a power of two ≥ 2; None = off). tensor_types: per-role overrides, e.g.
/// {"ffn_down": "8bit", "attn_v": "4bit:32"}. calibrate: path of a calibration text (the
/// source is converted to 8bit in a temporary file and run over it; each matrix's error is
/// weighted by its inputs' mean squared activations); imatrix: statistics file, written
/// after calibrate, read without it; gptq: GPTQ error feedback (needs calibrate or hessian,
/// not with rotate); gptq_act_order; hessian: second-moment file, written after calibrate
/// with gptq, read without calibrate; calib_ctx / calib_chunks: chunk length and count (0 =
/// all). progress: False (the default) is silent, True prints a progress line to stderr, a
/// callable gets (done, total, tensor_name) after each tensor and may return False to
/// cancel. threads: worker threads (None = all cores). Ctrl-C cancels (the partial output
/// is removed). Returns a report dict.
#[pyfunction]
#[pyo3(
    text_signature = "(src, dst, *, quant='4bit', block_size=32, outlier_frac=0.005, outlier_alloc='global', compress=False, rotate=None, tensor_types=None, calibrate=None, imatrix=None, gptq=False, gptq_act_order=False, hessian=None, calib_ctx=256, calib_chunks=32, progress=False, threads=None)"
)]
#[pyo3(signature = (src, dst, *, quant="4bit", block_size=32, outlier_frac=0.005, outlier_alloc="global", compress=false, rotate=None, tensor_types=None, calibrate=None, imatrix=None, gptq=false, gptq_act_order=false, hessian=None, calib_ctx=256, calib_chunks=32, progress=ProgressIn::Flag(false), threads=None))]
#[allow(clippy::too_many_arguments)]
fn convert<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    quant: &str,
    block_size: usize,
    outlier_frac: f32,
    outlier_alloc: &str,
    compress: bool,
    rotate: Option<usize>,
    tensor_types: Option<BTreeMap<String, String>>,
    calibrate: Option<PathBuf>,
    imatrix: Option<PathBuf>,
    gptq: bool,
    gptq_act_order: bool,
    hessian: Option<PathBuf>,
    calib_ctx: usize,
    calib_chunks: usize,
    progress: ProgressIn,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let quant = QuantChoice::parse(quant).map_err(|e| Fail::Core(e).into_pyerr(py))?;
    let outlier_alloc =
        OutlierAlloc::parse(outlier_alloc).map_err(|e| Fail::Core(e).into_pyerr(py))?;
    let arg = |m: String| Err(Fail::Arg(m).into_pyerr(py));
    // block_size, outlier_frac, the rotation group and the GPTQ combinations are checked by
    // core's ConvertParams::validate below (one rule set with the CLI and the C API)
    let rotate = rotate.unwrap_or(0);
    if gptq && calibrate.is_none() && hessian.is_none() {
        return arg(
            "gptq needs calibrate= (a text file) or hessian= (a second-moment file)".into(),
        );
    }
    if calibrate.is_some() && calib_ctx < 4 {
        return arg(format!("calib_ctx must be ≥ 4, got {calib_ctx}"));
    }
    let tensor_types = tensor_types
        .unwrap_or_default()
        .iter()
        .map(|(role, spec)| tensor_override(role, spec, block_size))
        .collect::<Result<Vec<_>, Fail>>()
        .map_err(|e| e.into_pyerr(py))?;
    let prog = match progress {
        ProgressIn::Flag(true) => ProgressArg::Stderr,
        ProgressIn::Flag(false) => ProgressArg::Off,
        ProgressIn::Func(f) if f.bind(py).is_callable() => ProgressArg::Callback(f),
        ProgressIn::Func(f) if f.bind(py).is_none() => ProgressArg::Off,
        ProgressIn::Func(_) => {
            return Err(
                Fail::Arg("progress must be a bool, None or a callable".into()).into_pyerr(py),
            )
        }
    };
    let n_threads = threads.unwrap_or(0);
    let params = ConvertParams {
        quant,
        block_size,
        outlier_frac,
        outlier_alloc,
        compress,
        n_threads,
        rotate,
        tensor_types,
        gptq,
        gptq_act_order,
    };
    let calibration = CalibrationSource {
        text: calibrate,
        imatrix,
        hessians: gptq,
        hessian,
        ctx: calib_ctx,
        max_chunks: calib_chunks,
        n_threads,
    };
    // core's rule set, shared with the CLI and the C API
    params
        .validate()
        .map_err(|e| Fail::Core(e).into_pyerr(py))?;
    let mut interrupt: Option<PyErr> = None;
    let report = detached(py, || {
        let mut last = Instant::now();
        let mut cb = |p: &Progress<'_>| -> bool {
            let go_on = match &prog {
                ProgressArg::Callback(f) => Python::attach(|py| {
                    match f.call1(py, (p.done, p.total, p.tensor)) {
                        // None or anything truthy continues
                        Ok(r) if r.bind(py).is_none() || r.bind(py).is_truthy().unwrap_or(true) => {
                            true
                        }
                        Ok(_) => {
                            interrupt =
                                Some(Fail::Core(qstream_core::Error::Cancelled).into_pyerr(py));
                            false
                        }
                        Err(e) => {
                            interrupt = Some(e);
                            false
                        }
                    }
                }),
                ProgressArg::Stderr => {
                    eprint!("\rconverting [{}/{}] {:<40}", p.done, p.total, p.tensor);
                    if p.done == p.total {
                        eprintln!();
                    }
                    true
                }
                ProgressArg::Off => true,
            };
            if !go_on {
                return false;
            }
            if last.elapsed() < Duration::from_millis(50) {
                return true;
            }
            last = Instant::now();
            match Python::attach(|py| py.check_signals()) {
                Ok(()) => true,
                Err(e) => {
                    interrupt = Some(e);
                    false
                }
            }
        };
        let imatrix = match calibration.prepare(&src) {
            Ok(im) => im,
            Err(e) => return Ok(Err(e)),
        };
        Ok(qstream_core::convert::convert_with_imatrix(
            &src,
            &dst,
            &params,
            imatrix.as_ref(),
            &mut cb,
        ))
    })?;
    let report = match (report, interrupt) {
        (_, Some(e)) => return Err(e),
        (r, None) => r.map_err(|e| Fail::Core(e).into_pyerr(py))?,
    };
    let d = PyDict::new(py);
    d.set_item("n_params", report.n_params)?;
    d.set_item("file_bytes", report.file_bytes)?;
    d.set_item("bits_per_weight", report.bits_per_weight)?;
    d.set_item("seconds", report.seconds)?;
    d.set_item("n_copied", report.n_copied)?;
    d.set_item("types", report.types.clone())?;
    let req = PyList::empty(py);
    for (name, from, to) in &report.requantized {
        req.append((name, from, to.name()))?;
    }
    d.set_item("requantized", req)?;
    Ok(d)
}

/// Read a QSF file's header, config and tensor directory without loading a model.
/// Returns a dict: path, format_version, legacy, file_bytes, n_layer, compressed,
/// n_params, bits_per_weight, quant_types ({type: tensor count}), has_chat_template,
/// bos_token_id, eos_token_ids and config. verify=True also checks every CRC.
#[pyfunction]
#[pyo3(signature = (path, *, verify=false))]
fn info<'py>(py: Python<'py>, path: PathBuf, verify: bool) -> PyResult<Bound<'py, PyDict>> {
    struct Summary {
        version: u32,
        legacy: bool,
        file_bytes: u64,
        n_layer: usize,
        compressed: bool,
        n_params: u64,
        tensor_bytes: u64,
        types: BTreeMap<String, usize>,
        has_template: bool,
        config: ModelConfig,
    }
    let p = path.clone();
    let s = detached(py, move || {
        let f = QsfFile::open(
            &p,
            &LoadOptions {
                use_mmap: true,
                verify_checksums: verify,
            },
        )?;
        let tensors = f.all_tensors()?;
        let mut types = BTreeMap::new();
        let (mut n_params, mut tensor_bytes) = (0u64, 0u64);
        for t in tensors.values() {
            n_params += t.numel() as u64;
            tensor_bytes += t.bytes().len() as u64;
            *types.entry(t.qtype.name().to_string()).or_insert(0) += 1;
        }
        Ok(Summary {
            version: f.header().version,
            legacy: f.is_legacy(),
            file_bytes: f.file_size(),
            n_layer: f.layers().len(),
            compressed: f.layers().iter().any(|l| l.compression != 0),
            n_params,
            tensor_bytes,
            types,
            has_template: f.tokenizer().chat_template.is_some(),
            config: f.config().clone(),
        })
    })?;
    let d = PyDict::new(py);
    d.set_item("path", path.display().to_string())?;
    d.set_item("format_version", s.version)?;
    d.set_item("legacy", s.legacy)?;
    d.set_item("file_bytes", s.file_bytes)?;
    d.set_item("arch", s.config.arch.name())?;
    d.set_item("n_layer", s.n_layer)?;
    d.set_item("compressed", s.compressed)?;
    d.set_item("n_params", s.n_params)?;
    d.set_item(
        "bits_per_weight",
        if s.n_params > 0 {
            s.tensor_bytes as f64 * 8.0 / s.n_params as f64
        } else {
            0.0
        },
    )?;
    d.set_item("quant_types", s.types)?;
    d.set_item("has_chat_template", s.has_template)?;
    d.set_item("bos_token_id", s.config.bos_token_id)?;
    d.set_item("eos_token_ids", s.config.eos_token_ids.clone())?;
    d.set_item("config", config_dict(py, &s.config)?)?;
    Ok(d)
}

/// Set the activation precision of the integer kernels for the whole process: 16 (default;
/// next tokens agree with the exact f32 path) or 8 (llama.cpp's Q8_1 scheme: faster, lower
/// next-token agreement; measured in docs/benchmarks.md). Overrides QSTREAM_ACT_BITS. Raises InvalidArgumentError for any other value.
#[pyfunction]
fn set_act_bits(py: Python<'_>, bits: u32) -> PyResult<()> {
    attached(py, || {
        let b = qstream_core::kernels::ActBits::from_bits(bits)
            .ok_or_else(|| Fail::Arg(format!("act bits {bits}: expected 8 or 16")))?;
        qstream_core::kernels::set_act_bits(b);
        Ok(())
    })
}

/// The activation precision in use (8 or 16).
#[pyfunction]
fn act_bits() -> u32 {
    qstream_core::kernels::act_bits().bits()
}

/// QStream: CPU-first inference for quantized LLMs (native module).
#[pymodule]
fn _qstream(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::PyModel>()?;
    m.add_class::<model::TokenStream>()?;
    m.add_class::<model::PySession>()?;
    m.add_class::<model::GenerateResult>()?;
    m.add_class::<attention::PyAttentionCache>()?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(set_act_bits, m)?)?;
    m.add_function(wrap_pyfunction!(act_bits, m)?)?;
    errors::register(m)?;
    Ok(())
}

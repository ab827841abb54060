//! `qs_convert`: GGUF file or HuggingFace folder → QSF, and quantization type names.

use std::ffi::{c_char, c_void};
use std::path::PathBuf;

use qstream_core::convert::calibrate::CalibrationSource;
use qstream_core::convert::{self, ConvertParams, OutlierAlloc, Preset, QuantChoice};
use qstream_core::quant::QuantType;

use crate::ffi::{self, Versioned};
use crate::model::{progress, qs_progress_cb};
use crate::status::*;

/// Tensor storage types (`uint32_t`, the QSF on-disk ids) for `qs_convert_params.quant_type`,
/// `qs_model_quant_type` and `qs_quant_type_name`.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum qs_quant_type {
    QS_QUANT_Q2 = 0,
    QS_QUANT_Q3 = 2,
    QS_QUANT_Q4 = 3,
    QS_QUANT_Q4_SYM = 4,
    QS_QUANT_Q8 = 6,
    QS_QUANT_F16 = 7,
    QS_QUANT_Q2_OUTLIER = 9,
    QS_QUANT_Q4_OUTLIER = 10,
    QS_QUANT_Q3_OUTLIER = 11,
    QS_QUANT_F32 = 12,
    QS_QUANT_BF16 = 13,
    QS_QUANT_MXFP4 = 14,
    /// `qs_convert` only: copy tensors whose source type has a bit-exact QSF equivalent,
    /// requantize the rest to q8.
    QS_QUANT_KEEP = 255,
}

/// `QS_QUANT_KEEP` as an integer.
pub(crate) const QS_QUANT_KEEP: u32 = qs_quant_type::QS_QUANT_KEEP as u32;

/// Mixed-precision presets for `qs_convert_params.preset` (the CLI's `--quant q4_m` etc.).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum qs_preset {
    /// No preset: every weight matrix gets `quant_type`.
    QS_PRESET_NONE = 0,
    /// `q4_m`: embeddings/output and ffn_down q8, every other matrix q4 B=64.
    QS_PRESET_Q4_M = 1,
    /// `q3_m`: embeddings/output q8, attention and ffn_down q4, ffn_up q4 B=64, ffn_gate q3.
    QS_PRESET_Q3_M = 2,
    /// `q2_m`: as q3_m with attn_q/k/output q3 and ffn_gate q2_outlier.
    QS_PRESET_Q2_M = 3,
    /// `<type>+e8`: every matrix `quant_type` (a quantized type) except the token
    /// embedding and output matrix, kept at q8.
    QS_PRESET_EMBD_Q8 = 4,
}

/// One per-role type override (`qs_convert_params.tensor_types`; the CLI's
/// `--tensor-type ROLE=TYPE[:BLOCK]`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qs_tensor_type {
    /// NUL-terminated role: an in-layer name (`attn_v`, `ffn_down`, ...) or a global name
    /// (`token_embd`, `output`, `blk.3.ffn_up`).
    pub role: *const c_char,
    /// A `QS_QUANT_*` value (not `QS_QUANT_KEEP`).
    pub quant_type: u32,
    /// Values per block; 0 = `block_size` when valid for the type, else the type's default.
    pub block_size: u32,
}

/// Options for `qs_convert`. Get one from `qs_convert_default_params()`.
///
/// Published versions (`struct_size`): 24 bytes (up to `n_threads`), 28 (up to
/// `outlier_per_tensor`), and the full struct (presets, rotation, overrides, calibration).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qs_convert_params {
    /// `sizeof(qs_convert_params)`; set by `qs_convert_default_params()`.
    pub struct_size: u32,
    /// Target type of weight matrices, a `QS_QUANT_*` value. Default `QS_QUANT_Q4`.
    pub quant_type: u32,
    /// Values per block for q2/q3/q4/q4_sym: 32, 64, 128 or 256. Default 32.
    pub block_size: u32,
    /// Fraction of the *_OUTLIER tensors' weights kept as FP16, in [0, 0.5), spread over
    /// those tensors by the quantization error it removes (the CLI's `--outlier-alloc
    /// global`). Default 0.005.
    pub outlier_frac: f32,
    /// LZ4-compress each layer. Default false.
    pub compress: bool,
    /// Worker threads; 0 = all cores. Default 0.
    pub n_threads: u32,
    /// Keep `outlier_frac` of each *_OUTLIER tensor's weights instead of spreading the
    /// budget over all of them (the CLI's `--outlier-alloc tensor`). Default false.
    pub outlier_per_tensor: bool,
    /// A `QS_PRESET_*` value; anything but `QS_PRESET_NONE` replaces `quant_type`'s plan
    /// (`QS_PRESET_EMBD_Q8` uses `quant_type` for the other matrices). Default
    /// `QS_PRESET_NONE`.
    pub preset: u32,
    /// Incoherence rotation of the matrices quantized below 8 bits (the CLI's `--rotate
    /// N`): 0 = off, else the largest group size, a power of two ≥ 2. Default 0.
    pub rotate: u32,
    /// `n_tensor_types` per-role overrides, applied before the preset/type; NULL when
    /// `n_tensor_types` is 0. Default none.
    pub tensor_types: *const qs_tensor_type,
    pub n_tensor_types: usize,
    /// NUL-terminated path of a UTF-8 calibration text (the CLI's `--calibrate`): the source
    /// is converted to q8 in a temporary file and run over it, and each matrix's
    /// quantization error is weighted by its inputs' mean squared activations. NULL = none.
    /// Default NULL.
    pub calibration_path: *const c_char,
    /// NUL-terminated path of an activation statistics file (`--imatrix`): written after
    /// calibrating on `calibration_path`, read without it. NULL = none. Default NULL.
    pub imatrix_path: *const c_char,
    /// GPTQ error feedback for the q2/q3/q4/q4_sym matrices (`--gptq`): needs
    /// `calibration_path` or `hessian_path`; not with `rotate`. Default false.
    pub gptq: bool,
    /// With `gptq`: columns in decreasing order of input energy (`--gptq-act-order`).
    /// Default false.
    pub gptq_act_order: bool,
    /// NUL-terminated path of an input second-moment file for `gptq` (`--hessian`): written
    /// after calibrating with `gptq`, read without `calibration_path`. NULL = none.
    /// Default NULL.
    pub hessian_path: *const c_char,
    /// Calibration chunk length in tokens (≥ 4). Default 256.
    pub calib_ctx: u32,
    /// Calibrate on at most this many chunks; 0 = all. Default 32.
    pub calib_chunks: u32,
}

/// `qs_convert_params` as first published (up to `n_threads`).
#[repr(C)]
#[allow(dead_code)]
struct ConvertParamsV1 {
    struct_size: u32,
    quant_type: u32,
    block_size: u32,
    outlier_frac: f32,
    compress: bool,
    n_threads: u32,
}

/// Second published version (`outlier_per_tensor` appended).
#[repr(C)]
#[allow(dead_code)]
struct ConvertParamsV2 {
    v1: ConvertParamsV1,
    outlier_per_tensor: bool,
}

// SAFETY: repr(C), starts with `struct_size: u32`; pointers are validated when used, and
// the published sizes end on field boundaries.
unsafe impl Versioned for qs_convert_params {
    fn default_value() -> Self {
        qs_convert_params {
            struct_size: std::mem::size_of::<qs_convert_params>() as u32,
            quant_type: qs_quant_type::QS_QUANT_Q4 as u32,
            block_size: 32,
            outlier_frac: 0.005,
            compress: false,
            n_threads: 0,
            outlier_per_tensor: false,
            preset: qs_preset::QS_PRESET_NONE as u32,
            rotate: 0,
            tensor_types: std::ptr::null(),
            n_tensor_types: 0,
            calibration_path: std::ptr::null(),
            imatrix_path: std::ptr::null(),
            gptq: false,
            gptq_act_order: false,
            hessian_path: std::ptr::null(),
            calib_ctx: 256,
            calib_chunks: 32,
        }
    }

    fn sizes() -> &'static [usize] {
        const S: [usize; 3] = [
            std::mem::size_of::<ConvertParamsV1>(),
            std::mem::size_of::<ConvertParamsV2>(),
            std::mem::size_of::<qs_convert_params>(),
        ];
        &S
    }
}

/// A `QS_QUANT_*` value as a type (`None` for `QS_QUANT_KEEP`).
fn quant_of(v: u32, what: &str) -> CResult<Option<QuantType>> {
    if v == QS_QUANT_KEEP {
        return Ok(None);
    }
    match u8::try_from(v).ok().and_then(QuantType::from_id) {
        Some(t) => Ok(Some(t)),
        None => Err(Fail::invalid(format!(
            "{what} {v} is not a QS_QUANT_* value"
        ))),
    }
}

/// An optional NUL-terminated path field.
///
/// # Safety
/// `p` NULL or NUL-terminated.
unsafe fn opt_path(p: *const c_char, what: &str) -> CResult<Option<PathBuf>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: caller contract.
    unsafe { ffi::path(p, what) }.map(Some)
}

/// Everything `qs_convert` needs, checked before any work.
struct Plan {
    params: ConvertParams,
    calibration: CalibrationSource,
}

/// Validate `p` (every field, every pointer) into a conversion plan.
///
/// # Safety
/// Pointer fields of `p` follow the struct's documentation.
unsafe fn plan(p: &qs_convert_params) -> CResult<Plan> {
    let ty = quant_of(p.quant_type, "params->quant_type")?;
    let quant = match (p.preset, ty) {
        (0, None) => QuantChoice::Keep,
        (0, Some(t)) => QuantChoice::Type(t),
        (1, _) => QuantChoice::Preset(Preset::Q4M),
        (2, _) => QuantChoice::Preset(Preset::Q3M),
        (3, _) => QuantChoice::Preset(Preset::Q2M),
        (4, Some(t)) if !t.is_float() => QuantChoice::Preset(Preset::EmbdQ8(t)),
        (4, _) => {
            return Err(Fail::invalid(
                "params->preset QS_PRESET_EMBD_Q8 needs a quantized params->quant_type",
            ))
        }
        (v, _) => {
            return Err(Fail::invalid(format!(
                "params->preset {v} is not a QS_PRESET_* value"
            )))
        }
    };
    // outlier_frac, block_size, rotate, overrides, GPTQ: ConvertParams::validate (core)
    // SAFETY: `n_tensor_types` entries (caller contract).
    let raw = unsafe { ffi::slice(p.tensor_types, p.n_tensor_types, "params->tensor_types") }?;
    let mut tensor_types = Vec::with_capacity(raw.len());
    for (i, o) in raw.iter().enumerate() {
        let what = format!("params->tensor_types[{i}]");
        // SAFETY: NUL-terminated (caller contract).
        let role = unsafe { ffi::cstr(o.role, &format!("{what}.role")) }?;
        if role.is_empty() {
            return Err(Fail::invalid(format!("{what}.role is empty")));
        }
        let Some(t) = quant_of(o.quant_type, &format!("{what}.quant_type"))? else {
            return Err(Fail::invalid(format!(
                "{what}.quant_type: QS_QUANT_KEEP is not a type"
            )));
        };
        let block = match o.block_size as usize {
            0 if t.is_float() => 1,
            0 if t.valid_block(p.block_size as usize) => p.block_size as usize,
            0 => t.default_block(),
            b => b,
        };
        if !t.valid_block(block) {
            return Err(Fail::invalid(format!(
                "{what}: block {block} is not valid for {t}"
            )));
        }
        tensor_types.push((role.to_string(), t, block));
    }
    // SAFETY: NULL or NUL-terminated (caller contract).
    let text = unsafe { opt_path(p.calibration_path, "params->calibration_path") }?;
    let imatrix = unsafe { opt_path(p.imatrix_path, "params->imatrix_path") }?;
    let hessian = unsafe { opt_path(p.hessian_path, "params->hessian_path") }?;
    if p.gptq_act_order && !p.gptq {
        return Err(Fail::invalid("params->gptq_act_order needs params->gptq"));
    }
    if p.gptq && p.rotate != 0 {
        return Err(Fail::invalid(
            "params->gptq cannot be combined with params->rotate",
        ));
    }
    if p.gptq && text.is_none() && hessian.is_none() {
        return Err(Fail::invalid(
            "params->gptq needs params->calibration_path or params->hessian_path",
        ));
    }
    if text.is_some() && p.calib_ctx < 4 {
        return Err(Fail::invalid(format!(
            "params->calib_ctx {} must be ≥ 4",
            p.calib_ctx
        )));
    }
    let n_threads = p.n_threads as usize;
    Ok(Plan {
        params: ConvertParams {
            quant,
            block_size: p.block_size as usize,
            outlier_frac: p.outlier_frac,
            compress: p.compress,
            n_threads,
            rotate: p.rotate as usize,
            tensor_types,
            gptq: p.gptq,
            gptq_act_order: p.gptq_act_order,
            outlier_alloc: if p.outlier_per_tensor {
                OutlierAlloc::PerTensor
            } else {
                OutlierAlloc::Global
            },
        },
        calibration: CalibrationSource {
            text,
            imatrix,
            hessians: p.gptq,
            hessian,
            ctx: p.calib_ctx as usize,
            max_chunks: p.calib_chunks as usize,
            n_threads,
        },
    })
}

/// Default conversion options (see the field comments).
#[no_mangle]
pub extern "C" fn qs_convert_default_params() -> qs_convert_params {
    qs_convert_params::default_value()
}

/// Name of a `QS_QUANT_*` value ("q4", "q4_sym", "f32", "keep", ...): a static string;
/// NULL for an unknown value.
#[no_mangle]
pub extern "C" fn qs_quant_type_name(quant_type: u32) -> *const c_char {
    boundary_value(
        "qs_quant_type_name",
        std::ptr::null(),
        || {},
        || {
            if quant_type == QS_QUANT_KEEP {
                return Ok(c"keep".as_ptr());
            }
            Ok(
                match u8::try_from(quant_type).ok().and_then(QuantType::from_id) {
                    Some(t) => ffi::static_cstr(t.name()),
                    None => std::ptr::null(),
                },
            )
        },
    )
}

/// Convert `src` (a GGUF file or a HuggingFace model folder, NUL-terminated path) to the
/// QSF file `dst`, as `qstream convert` does (presets, overrides, rotation, calibration and
/// GPTQ per `params`; every field is checked before any work). With
/// `params->calibration_path` the source is first converted to q8 in a temporary file and
/// run over the text. `progress_cb` (may be NULL) is called after each tensor with the
/// tensor name; returning false cancels (`QS_STATUS_CANCELLED`, no output file is left).
///
/// # Safety
/// Paths NUL-terminated; `params` valid.
#[no_mangle]
pub unsafe extern "C" fn qs_convert(
    src: *const c_char,
    dst: *const c_char,
    params: *const qs_convert_params,
    progress_cb: qs_progress_cb,
    userdata: *mut c_void,
) -> qs_status {
    boundary(
        "qs_convert",
        || {},
        || {
            // SAFETY: argument contracts.
            let src = unsafe { ffi::path(src, "src") }?;
            let dst = unsafe { ffi::path(dst, "dst") }?;
            let p = unsafe { ffi::params(params, "params") }?;
            // SAFETY: the pointer fields follow the struct's documentation.
            let Plan {
                params: cp,
                calibration,
            } = unsafe { plan(&p) }?;
            cp.validate()?; // core's rule set, shared with the CLI and Python
            let with_src = |e: qstream_core::Error| {
                let mut f = Fail::from(e);
                f.msg = format!("{} -> {}: {}", src.display(), dst.display(), f.msg);
                f
            };
            let imatrix = calibration.prepare(&src).map_err(with_src)?;
            convert::convert_with_imatrix(&src, &dst, &cp, imatrix.as_ref(), &mut |pr| {
                progress(progress_cb, userdata, pr.done, pr.total, pr.tensor)
            })
            .map_err(with_src)?;
            Ok(())
        },
    )
}

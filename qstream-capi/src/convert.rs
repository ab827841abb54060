//! `qs_convert`: GGUF file or HuggingFace folder → QSF, and quantization type names.

use std::ffi::{c_char, c_void};

use qstream_core::convert::{self, ConvertParams, OutlierAlloc, QuantChoice};
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

/// Options for `qs_convert`. Get one from `qs_convert_default_params()`.
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
    /// Fraction of the *_OUTLIER tensors' weights kept as FP16, spread over those tensors
    /// by the quantization error it removes (the CLI's `--outlier-alloc global`). Default
    /// 0.005.
    pub outlier_frac: f32,
    /// LZ4-compress each layer. Default false.
    pub compress: bool,
    /// Worker threads; 0 = all cores. Default 0.
    pub n_threads: u32,
    /// Keep `outlier_frac` of each *_OUTLIER tensor's weights instead of spreading the
    /// budget over all of them (the CLI's `--outlier-alloc tensor`). Default false.
    pub outlier_per_tensor: bool,
}

// SAFETY: repr(C), starts with `struct_size: u32`, plain values.
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
        }
    }
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
    if quant_type == QS_QUANT_KEEP {
        return c"keep".as_ptr();
    }
    match u8::try_from(quant_type).ok().and_then(QuantType::from_id) {
        Some(t) => ffi::static_cstr(t.name()),
        None => std::ptr::null(),
    }
}

/// Convert `src` (a GGUF file or a HuggingFace model folder, NUL-terminated path) to the
/// QSF file `dst`. `progress_cb` (may be NULL) is called after each tensor with the tensor
/// name; returning false cancels (`QS_STATUS_CANCELLED`, no output file is left).
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
            let quant = if p.quant_type == QS_QUANT_KEEP {
                QuantChoice::Keep
            } else {
                match u8::try_from(p.quant_type).ok().and_then(QuantType::from_id) {
                    Some(t) => QuantChoice::Type(t),
                    None => {
                        return Err(Fail::invalid(format!(
                            "params->quant_type {} is not a QS_QUANT_* value",
                            p.quant_type
                        )))
                    }
                }
            };
            let cp = ConvertParams {
                quant,
                block_size: p.block_size as usize,
                outlier_frac: p.outlier_frac,
                compress: p.compress,
                n_threads: p.n_threads as usize,
                outlier_alloc: if p.outlier_per_tensor {
                    OutlierAlloc::PerTensor
                } else {
                    OutlierAlloc::Global
                },
                ..Default::default()
            };
            cp.validate()?; // core's rule set, shared with the CLI and Python
            convert::convert(&src, &dst, &cp, &mut |pr| {
                progress(progress_cb, userdata, pr.done, pr.total, pr.tensor)
            })
            .map_err(|e| {
                let mut f = Fail::from(e);
                f.msg = format!("{} -> {}: {}", src.display(), dst.display(), f.msg);
                f
            })?;
            Ok(())
        },
    )
}

//! # qstream-core
//!
//! The QStream engine: QSF file format, block quantization, importers (GGUF, HuggingFace),
//! the converter, SIMD kernels, model forward passes, KV cache, sampling and sessions.
//!
//! Module map (find a concept by its name):
//! - [`format`]: the QSF file format (header, layer index, sections, reader, writer).
//! - [`quant`]: block quantization types with scalar references.
//! - [`kernels`]: mat-vec/dot kernels with run-time SIMD dispatch.
//! - [`import`]: GGUF and HuggingFace readers.
//! - [`convert`]: source model → QSF.
//! - [`tokenizer`], [`chat`]: text ↔ tokens, chat templates.
//! - [`model`]: architectures over shared blocks ([`nn`]).
//! - [`kv`]: KV cache. [`sampling`]: samplers. [`engine`]: `Model` + `Session`.

pub mod chat;
pub mod convert;
pub mod engine;
pub mod error;
pub mod format;
pub mod import;
pub mod kernels;
pub mod kv;
pub mod model;
pub mod nn;
pub mod perplexity;
pub mod quant;
pub mod sampling;
pub mod tensor;
pub mod tokenizer;

pub use error::{Error, ErrorKind, Result};

/// Helpers shared by unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    /// `len` deterministic pseudo-random values in [-0.5, 0.5) (an LCG seeded with `seed`).
    pub fn lcg_data(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }
}

//! Helpers shared by the subcommands.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use qstream_core::engine::{Model, ModelParams, SessionParams};
use qstream_core::kernels::{set_act_bits, ActBits};
use qstream_core::kv::KvType;

/// Model-loading flags shared by run/chat/eval/perplexity/bench.
#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// worker threads (0 = all cores)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// read the file into memory instead of memory-mapping it
    #[arg(long)]
    pub no_mmap: bool,
    /// activation precision of the integer kernels: 16 (default; next tokens agree with the
    /// exact f32 path) or 8 (llama.cpp's Q8_1 scheme, faster); overrides QSTREAM_ACT_BITS
    #[arg(long, value_name = "8|16", value_parser = parse_act_bits)]
    pub act_bits: Option<ActBits>,
}

pub fn parse_act_bits(s: &str) -> std::result::Result<ActBits, String> {
    s.trim()
        .parse()
        .ok()
        .and_then(ActBits::from_bits)
        .ok_or_else(|| format!("{s:?}: expected 8 or 16"))
}

/// Load a model, returning it and the load time in seconds.
pub fn load(path: &Path, a: &LoadArgs) -> Result<(Arc<Model>, f64)> {
    if let Some(b) = a.act_bits {
        set_act_bits(b);
    }
    let t = Instant::now();
    let params = ModelParams {
        use_mmap: !a.no_mmap,
        n_threads: a.threads,
        ..Default::default()
    };
    let m = Model::load(path, &params)?;
    Ok((m, t.elapsed().as_secs_f64()))
}

/// Parse "1,2,3" into token ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| anyhow::anyhow!("--ids: {x:?} is not a token id"))
        })
        .collect()
}

/// KV cache flags shared by run/perplexity/bench (llama.cpp's names).
#[derive(clap::Args, Clone, Default)]
pub struct CacheArgs {
    /// KV cache type of the keys: f32 (default), f16, bf16, q8, q4, q3, q2, qins8, or a
    /// Hadamard-rotated q8h, q4h, q3h, q2h
    #[arg(long = "cache-type-k", value_name = "TYPE", value_parser = parse_kv_type)]
    pub cache_type_k: Option<KvType>,
    /// KV cache type of the values (same names as --cache-type-k)
    #[arg(long = "cache-type-v", value_name = "TYPE", value_parser = parse_kv_type)]
    pub cache_type_v: Option<KvType>,
}

impl CacheArgs {
    /// Session parameters with these cache types and context size `n_ctx`.
    pub fn session_params(&self, n_ctx: usize) -> SessionParams {
        SessionParams {
            n_ctx,
            type_k: self.cache_type_k,
            type_v: self.cache_type_v,
            ..Default::default()
        }
    }
}

pub fn parse_kv_type(s: &str) -> std::result::Result<KvType, String> {
    KvType::from_name(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = KvType::ALL.iter().map(|t| t.name()).collect();
        format!("{s:?}: expected one of {}", names.join(", "))
    })
}

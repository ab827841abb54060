//! Helpers shared by the subcommands.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use qstream_core::engine::{Model, ModelParams};

/// Model-loading flags shared by run/chat/eval/perplexity/bench.
#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// worker threads (0 = all cores)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// read the file into memory instead of memory-mapping it
    #[arg(long)]
    pub no_mmap: bool,
}

/// Load a model, returning it and the load time in seconds.
pub fn load(path: &Path, a: &LoadArgs) -> Result<(Arc<Model>, f64)> {
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

//! `qstream perplexity`: llama.cpp's method — split the tokenized text into non-overlapping
//! chunks of `ctx` tokens, evaluate each chunk from an empty cache, and score only the second
//! half of each chunk (every scored token has at least ctx/2 tokens of context). The
//! computation is core's [`qstream_core::perplexity::perplexity`], shared with Python.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use qstream_core::engine::Session;

use crate::common::{load, CacheArgs, LoadArgs};

#[derive(clap::Args)]
pub struct Args {
    /// QSF model file
    model: PathBuf,
    /// text file to score
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// tokens per chunk
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    ctx: usize,
    /// score at most this many chunks (0 = all)
    #[arg(long, default_value_t = 0)]
    chunks: usize,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(a: Args) -> Result<()> {
    let (model, _) = load(&a.model, &a.load)?;
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let tokens = model.tokenizer().encode(&text, false)?;
    let mut session = Session::new(model.clone(), &a.cache.session_params(a.ctx))?;
    let t = Instant::now();
    eprintln!(
        "{} tokens, {} chunks of {}",
        tokens.len(),
        tokens.len().checked_div(a.ctx).unwrap_or(0),
        a.ctx
    );
    let r = qstream_core::perplexity::perplexity(
        &mut session,
        &tokens,
        a.ctx,
        a.chunks,
        &mut |c, ppl| {
            eprint!("[{}]{ppl:.4} ", c + 1);
            true
        },
    )?;
    eprintln!();
    println!(
        "perplexity: {:.4} over {} scored tokens (ctx {}, {:.1} s)",
        r.ppl(),
        r.count,
        a.ctx,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

//! `qstream perplexity`: llama.cpp's method — split the tokenized text into non-overlapping
//! chunks of `ctx` tokens, evaluate each chunk from an empty cache, and score only the second
//! half of each chunk (every scored token has at least ctx/2 tokens of context).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
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

/// Negative log-likelihood sum and count over the second half of each chunk.
pub fn score(
    session: &mut Session,
    tokens: &[u32],
    ctx: usize,
    max_chunks: usize,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<(f64, usize)> {
    let n_vocab = session.model().config().n_vocab;
    let bos = session
        .model()
        .config()
        .bos_token_id
        .filter(|_| session.model().config().add_bos);
    let mut n_chunks = tokens.len() / ctx;
    if max_chunks > 0 {
        n_chunks = n_chunks.min(max_chunks);
    }
    if n_chunks == 0 {
        bail!(
            "text has {} tokens, fewer than one chunk of {ctx}",
            tokens.len()
        );
    }
    let first = ctx / 2;
    let (mut nll, mut count) = (0f64, 0usize);
    let mut chunk = vec![0u32; ctx];
    for c in 0..n_chunks {
        chunk.copy_from_slice(&tokens[c * ctx..(c + 1) * ctx]);
        if let Some(b) = bos {
            chunk[0] = b; // as llama.cpp: the chunk's first token is replaced by BOS
        }
        session.reset();
        let logits = session.decode_all(&chunk)?;
        for j in first..ctx - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            let target = tokens[c * ctx + j + 1] as usize;
            nll += -((row[target] - max) as f64 - sum.ln());
            count += 1;
        }
        on_chunk(c, (nll / count as f64).exp());
    }
    Ok((nll, count))
}

pub fn run(a: Args) -> Result<()> {
    let (model, _) = load(&a.model, &a.load)?;
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let tokens = model.tokenizer().encode(&text, false)?;
    if a.ctx < 4 {
        bail!("--ctx must be at least 4");
    }
    let mut session = Session::new(model.clone(), &a.cache.session_params(a.ctx))?;
    let t = Instant::now();
    eprintln!(
        "{} tokens, {} chunks of {}",
        tokens.len(),
        tokens.len() / a.ctx,
        a.ctx
    );
    let (nll, count) = score(&mut session, &tokens, a.ctx, a.chunks, |c, ppl| {
        eprint!("[{}]{ppl:.4} ", c + 1);
    })?;
    eprintln!();
    let ppl = (nll / count as f64).exp();
    println!(
        "perplexity: {ppl:.4} over {count} scored tokens (ctx {}, {:.1} s)",
        a.ctx,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

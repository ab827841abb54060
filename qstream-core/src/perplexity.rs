//! Perplexity with llama.cpp's method — the one implementation the CLI (`qstream
//! perplexity`), the Python package (`Model.perplexity`) and the C API use.
//!
//! The tokens are cut into non-overlapping chunks of `ctx` tokens; the first token of each
//! chunk is replaced by BOS when the model adds one; each chunk is evaluated from an empty
//! context, and only the predictions for its second half are scored (every scored token
//! has at least `ctx / 2` tokens of context). The result is exp(mean negative
//! log-likelihood) over the scored tokens.

use crate::engine::Session;
use crate::{Error, Result};

/// Negative log-likelihood over the scored tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// sum of −ln p(target) over the scored tokens
    pub nll: f64,
    /// scored tokens (`chunks × (ctx − 1 − ctx / 2)`)
    pub count: usize,
    /// chunks evaluated
    pub chunks: usize,
}

impl Perplexity {
    /// exp(nll / count).
    pub fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }
}

/// −ln softmax(row)[target], computed in f64 from the row's maximum.
pub fn nll_of(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lp = row.get(target).copied().unwrap_or(f32::NEG_INFINITY) as f64;
    max + sum.ln() - lp
}

/// Score `tokens` with chunks of `ctx` tokens on `session` (whose context must hold `ctx`;
/// it is reset for every chunk). At most `max_chunks` chunks (0 = all). `on_chunk(i, ppl so
/// far)` runs after each chunk; returning `false` stops with [`Error::Cancelled`].
///
/// [`Error::InvalidArgument`] when `ctx < 4`, the context is smaller than `ctx`, or there
/// are fewer than `ctx` tokens.
pub fn perplexity(
    session: &mut Session,
    tokens: &[u32],
    ctx: usize,
    max_chunks: usize,
    on_chunk: &mut dyn FnMut(usize, f64) -> bool,
) -> Result<Perplexity> {
    if ctx < 4 {
        return Err(Error::InvalidArgument(format!(
            "perplexity: ctx must be ≥ 4, got {ctx}"
        )));
    }
    if session.n_ctx() < ctx {
        return Err(Error::InvalidArgument(format!(
            "perplexity: ctx {ctx} exceeds the session's context {}",
            session.n_ctx()
        )));
    }
    let mut n_chunks = tokens.len() / ctx;
    if max_chunks > 0 {
        n_chunks = n_chunks.min(max_chunks);
    }
    if n_chunks == 0 {
        return Err(Error::InvalidArgument(format!(
            "perplexity needs at least ctx = {ctx} tokens, the text has {}",
            tokens.len()
        )));
    }
    let model = session.model().clone();
    let bos = model.tokenizer().bos().filter(|_| model.config().add_bos);
    let n_vocab = model.config().n_vocab;
    let first = ctx / 2;
    let mut r = Perplexity {
        nll: 0.0,
        count: 0,
        chunks: 0,
    };
    let mut chunk = vec![0u32; ctx];
    for c in 0..n_chunks {
        let orig = &tokens[c * ctx..(c + 1) * ctx];
        chunk.copy_from_slice(orig);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.reset();
        let logits = session.decode_all(&chunk)?;
        for j in first..ctx - 1 {
            r.nll += nll_of(
                &logits[j * n_vocab..(j + 1) * n_vocab],
                orig[j + 1] as usize,
            );
            r.count += 1;
        }
        r.chunks += 1;
        if !on_chunk(c, r.ppl()) {
            return Err(Error::Cancelled);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::nll_of;

    #[test]
    fn nll_is_cross_entropy() {
        // uniform over 4: −ln(1/4)
        assert!((nll_of(&[0.0; 4], 2) - 4f64.ln()).abs() < 1e-12);
        // logits ln(1), ln(3): p(1) = 3/4
        let row = [0.0f32, 3f32.ln()];
        assert!((nll_of(&row, 1) - (4.0f64 / 3.0).ln()).abs() < 1e-6);
        // large logits stay finite
        assert!((nll_of(&[1000.0, 1000.0], 0) - 2f64.ln()).abs() < 1e-9);
    }
}

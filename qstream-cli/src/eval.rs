//! `qstream eval`: one forward pass, logits for every position as .npy, optional comparison
//! with a reference (the fixtures' `reference.safetensors` format: `input_ids` i64 [1, T],
//! `logits` f32 [T, vocab]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use qstream_core::engine::{Session, SessionParams};

use crate::common::{load, parse_ids, LoadArgs};

#[derive(clap::Args)]
pub struct Args {
    /// QSF model file
    model: PathBuf,
    /// comma-separated token ids
    #[arg(long, conflicts_with = "text")]
    ids: Option<String>,
    /// text to tokenize (special tokens allowed)
    #[arg(long)]
    text: Option<String>,
    /// write float32 logits [positions, vocab] to this .npy file
    #[arg(long)]
    out: Option<PathBuf>,
    /// compare with a reference .safetensors (input_ids + logits); its input_ids are used when
    /// neither --ids nor --text is given
    #[arg(long)]
    compare: Option<PathBuf>,
    /// tolerance: fail when max |diff| > tol × max |reference logit|
    #[arg(long, default_value_t = 1e-4)]
    tol: f32,
    #[command(flatten)]
    load: LoadArgs,
}

struct Reference {
    ids: Vec<u32>,
    logits: Vec<f32>,
    n_vocab: usize,
}

fn read_reference(path: &Path) -> Result<Reference> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let ids_t = st
        .tensor("input_ids")
        .context("reference has no input_ids")?;
    let ids: Vec<u32> = match ids_t.dtype() {
        safetensors::Dtype::I64 => ids_t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()) as u32)
            .collect(),
        safetensors::Dtype::I32 => ids_t
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()) as u32)
            .collect(),
        d => bail!("input_ids has dtype {d:?}"),
    };
    let lt = st.tensor("logits").context("reference has no logits")?;
    if lt.dtype() != safetensors::Dtype::F32 || lt.shape().len() != 2 {
        bail!("reference logits must be f32 [positions, vocab]");
    }
    let logits: Vec<f32> = lt
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    Ok(Reference {
        ids,
        n_vocab: lt.shape()[1],
        logits,
    })
}

/// Write a 2-D float32 array as NumPy .npy (version 1.0).
pub fn write_npy(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    header.push('\n');
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    for v in data {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()?;
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let (model, _) = load(&a.model, &a.load)?;
    let reference = a.compare.as_deref().map(read_reference).transpose()?;
    let ids = match (&a.ids, &a.text, &reference) {
        (Some(s), _, _) => parse_ids(s)?,
        (None, Some(t), _) => model.tokenizer().encode(t, true)?,
        (None, None, Some(r)) => r.ids.clone(),
        _ => bail!("give --ids, --text or --compare"),
    };
    if ids.is_empty() {
        bail!("no tokens to evaluate");
    }
    let n_vocab = model.config().n_vocab;
    let mut session = Session::new(
        model.clone(),
        &SessionParams {
            n_ctx: ids.len().max(16),
            ..Default::default()
        },
    )?;
    let logits = session.decode_all(&ids)?;
    let t = ids.len();
    if let Some(out) = &a.out {
        write_npy(out, &logits, t, n_vocab)?;
        eprintln!("wrote {} ({t} × {n_vocab} float32)", out.display());
    }
    let Some(r) = reference else {
        let last = &logits[(t - 1) * n_vocab..];
        let (arg, val) = argmax(last);
        println!("{t} positions; last position argmax {arg} ({val:.4})");
        return Ok(());
    };
    if r.n_vocab != n_vocab || r.logits.len() != t * n_vocab {
        bail!(
            "reference has {} positions × {} vocab, model gives {t} × {n_vocab}",
            r.logits.len() / r.n_vocab.max(1),
            r.n_vocab
        );
    }
    let ref_max = r.logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    let mut agree = 0;
    println!("pos  max|diff|    rel       top1(ours/ref)");
    for p in 0..t {
        let ours = &logits[p * n_vocab..(p + 1) * n_vocab];
        let theirs = &r.logits[p * n_vocab..(p + 1) * n_vocab];
        let d = ours
            .iter()
            .zip(theirs)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        worst = worst.max(d);
        let (a1, _) = argmax(ours);
        let (b1, _) = argmax(theirs);
        agree += (a1 == b1) as usize;
        println!(
            "{p:>3}  {d:>10.3e}  {:>9.3e}  {a1}/{b1}{}",
            d / ref_max.max(1e-30),
            if a1 == b1 { "" } else { "  MISMATCH" }
        );
    }
    let rel = worst / ref_max.max(1e-30);
    println!(
        "max |diff| {worst:.3e}, relative {rel:.3e} (tol {:.1e}), top-1 agreement {agree}/{t}",
        a.tol
    );
    if rel > a.tol || agree != t {
        bail!("logits differ from the reference beyond tolerance");
    }
    Ok(())
}

fn argmax(v: &[f32]) -> (usize, f32) {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
}

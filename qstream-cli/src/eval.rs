//! `qstream eval`: one forward pass, logits for every position as .npy, optional comparison
//! with a reference (the fixtures' `reference.safetensors` format: `input_ids` i64 [1, T],
//! `logits` f32 [T, vocab]).
//!
//! `--trace FILE` also records the residual stream after every block and writes a trace:
//! a safetensors file with `input_ids` i64 [1, T], `logits` f32 [T, vocab] and
//! `hidden_states` f32 [n_layer, T, n_embd] (row `l` = the hidden states after block `l`,
//! before the final norm). `tests/make_trace.py` writes the same format with transformers.
//! When the `--compare` reference holds `hidden_states`, every layer is compared and the
//! first layer whose output departs (max |diff| > tol × max |reference|) is reported: the
//! block a new architecture gets wrong.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// tolerance: fail when max |diff| > tol × max |reference logit| (and, for a trace
    /// reference, when a layer's max |diff| > tol × max |reference hidden state|)
    #[arg(long, default_value_t = 1e-4)]
    tol: f32,
    /// write a trace (input_ids, logits, hidden_states after every block) to this
    /// .safetensors file
    #[arg(long)]
    trace: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
}

struct Reference {
    ids: Vec<u32>,
    logits: Vec<f32>,
    n_vocab: usize,
    /// `(n_layer, n_embd, values [n_layer][T][n_embd])` when the reference is a trace
    hidden: Option<(usize, usize, Vec<f32>)>,
}

fn f32_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect()
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
    let logits = f32_values(lt.data());
    let hidden = match st.tensor("hidden_states") {
        Err(_) => None,
        Ok(h) => {
            let sh = h.shape();
            if h.dtype() != safetensors::Dtype::F32 || sh.len() != 3 || sh[1] != ids.len() {
                bail!(
                    "reference hidden_states must be f32 [n_layer, {}, n_embd], found {:?} {sh:?}",
                    ids.len(),
                    h.dtype()
                );
            }
            Some((sh[0], sh[2], f32_values(h.data())))
        }
    };
    Ok(Reference {
        ids,
        n_vocab: lt.shape()[1],
        logits,
        hidden,
    })
}

/// Write a trace file (see the module docs).
fn write_trace(
    path: &Path,
    ids: &[u32],
    logits: &[f32],
    n_vocab: usize,
    hidden: &[f32],
    n_layer: usize,
    n_embd: usize,
) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let t = ids.len();
    let id_bytes: Vec<u8> = ids.iter().flat_map(|&i| (i as i64).to_le_bytes()).collect();
    let f = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (lb, hb) = (f(logits), f(hidden));
    let views = [
        (
            "input_ids",
            TensorView::new(Dtype::I64, vec![1, t], &id_bytes)?,
        ),
        (
            "logits",
            TensorView::new(Dtype::F32, vec![t, n_vocab], &lb)?,
        ),
        (
            "hidden_states",
            TensorView::new(Dtype::F32, vec![n_layer, t, n_embd], &hb)?,
        ),
    ];
    safetensors::serialize_to_file(views, &None, path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Per layer `(max |diff|, max |reference|)` of two traces `[n_layer][T][n_embd]`.
pub fn layer_diffs(ours: &[f32], theirs: &[f32], n_layer: usize) -> Vec<(f32, f32)> {
    let per = ours.len() / n_layer.max(1);
    (0..n_layer)
        .map(|l| {
            let (a, b) = (
                &ours[l * per..(l + 1) * per],
                &theirs[l * per..(l + 1) * per],
            );
            a.iter().zip(b).fold((0f32, 0f32), |(d, m), (x, y)| {
                (d.max((x - y).abs()), m.max(y.abs()))
            })
        })
        .collect()
}

/// The first layer whose relative difference exceeds `tol` (a NaN difference departs).
pub fn first_departing(diffs: &[(f32, f32)], tol: f32) -> Option<usize> {
    diffs
        .iter()
        .position(|&(d, m)| d.is_nan() || d > tol * m.max(1e-30))
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
    let t = ids.len();
    let (n_layer, n_embd) = (model.config().n_layer, model.config().n_embd);
    let want_trace = a.trace.is_some() || reference.as_ref().is_some_and(|r| r.hidden.is_some());
    let trace = want_trace.then(|| Arc::new(Mutex::new(vec![0f32; n_layer * t * n_embd])));
    if let Some(buf) = &trace {
        let buf = buf.clone();
        session.set_trace(Some(Box::new(move |layer, pos, hidden: &[f32]| {
            let n = hidden.len() / n_embd;
            if layer < n_layer && pos + n <= t {
                if let Ok(mut b) = buf.lock() {
                    let at = (layer * t + pos) * n_embd;
                    b[at..at + hidden.len()].copy_from_slice(hidden);
                }
            }
        })));
    }
    let logits = session.decode_all(&ids)?;
    session.set_trace(None);
    let trace: Option<Vec<f32>> = trace.map(|b| match Arc::try_unwrap(b) {
        Ok(m) => m.into_inner().unwrap_or_default(),
        Err(b) => b.lock().map(|v| v.clone()).unwrap_or_default(),
    });
    if let Some(out) = &a.out {
        write_npy(out, &logits, t, n_vocab)?;
        eprintln!("wrote {} ({t} × {n_vocab} float32)", out.display());
    }
    if let (Some(path), Some(h)) = (&a.trace, &trace) {
        write_trace(path, &ids, &logits, n_vocab, h, n_layer, n_embd)?;
        eprintln!(
            "wrote trace {} (logits {t} × {n_vocab}, hidden_states {n_layer} × {t} × {n_embd})",
            path.display()
        );
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
    let mut departed = None;
    if let (Some((rl, re, rh)), Some(ours)) = (&r.hidden, &trace) {
        if (*rl, *re) != (n_layer, n_embd) {
            bail!("reference trace has {rl} layers × {re} hidden, model has {n_layer} × {n_embd}");
        }
        let diffs = layer_diffs(ours, rh, n_layer);
        println!("layer  max|diff|    rel");
        for (l, (d, m)) in diffs.iter().enumerate() {
            println!("{l:>5}  {d:>10.3e}  {:>9.3e}", d / m.max(1e-30));
        }
        departed = first_departing(&diffs, a.tol);
        match departed {
            Some(l) => println!(
                "first layer that departs from the reference: {l} (rel {:.3e} > tol {:.1e})",
                diffs[l].0 / diffs[l].1.max(1e-30),
                a.tol
            ),
            None => println!("every layer within tol {:.1e}", a.tol),
        }
    }
    if let Some(l) = departed {
        bail!("hidden states depart from the reference at layer {l}");
    }
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

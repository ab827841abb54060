//! `qstream convert`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use qstream_core::convert::{self, calibrate, ConvertParams, OutlierAlloc, QuantChoice};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file, HuggingFace model folder, or QSF file (version 1 from the original QStream,
    /// or version 2): `--quant keep` upgrades it to version 2 keeping every block
    input: PathBuf,
    /// output QSF file
    #[arg(short, long)]
    output: PathBuf,
    /// keep, f32, f16, bf16, 8bit, 4bit, 4bit_sym, 3bit, 2bit, 2bit_outlier, 3bit_outlier, 4bit_outlier, mxfp4,
    /// or a mixed-precision preset: q4_m, q3_m, q2_m
    #[arg(short, long, default_value = "4bit")]
    quant: String,
    /// values per quantization block (32, 64, 128, 256)
    #[arg(long, default_value_t = 32)]
    block_size: usize,
    /// fraction of weights kept as FP16 by the *_outlier types
    #[arg(long, default_value_t = 0.005)]
    outlier_frac: f32,
    /// how the *_outlier types' budget is spread: `global` (--outlier-frac of all their
    /// weights, placed where it removes the most quantization error over all such tensors)
    /// or `tensor` (--outlier-frac of each tensor's weights); same file size
    #[arg(long, default_value = "global", value_parser = ["global", "tensor"])]
    outlier_alloc: String,
    /// LZ4-compress each layer
    #[arg(long)]
    compress: bool,
    /// worker threads (0 = all cores)
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// calibration text: run the model (converted to 8bit in a temporary file) over it and
    /// weight each matrix's quantization error by its inputs' mean squared activations
    #[arg(long, value_name = "TEXT")]
    calibrate: Option<PathBuf>,
    /// activation statistics file: written after --calibrate, read without it
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// GPTQ error feedback for the q2/q3/q4/q4_sym matrices (and outlier variants): needs
    /// the full input second moments, collected by --calibrate (or read from --hessian)
    #[arg(long)]
    gptq: bool,
    /// with --gptq: quantize the columns in decreasing order of input energy, block
    /// parameters fixed beforehand ("act-order")
    #[arg(long)]
    gptq_act_order: bool,
    /// input second-moment file for --gptq: written after --calibrate --gptq, read without
    /// --calibrate
    #[arg(long, value_name = "FILE")]
    hessian: Option<PathBuf>,
    /// calibration chunk length in tokens
    #[arg(long, default_value_t = 256)]
    calib_ctx: usize,
    /// calibrate on at most this many chunks (0 = all)
    #[arg(long, default_value_t = 32)]
    calib_chunks: usize,
    /// incoherence rotation of the matrices quantized below 8 bits: a randomized Hadamard
    /// transform of the input dimension over groups of the largest power of two dividing
    /// the columns, at most N (stored in the file; activations are rotated at run time)
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "256")]
    rotate: Option<usize>,
    /// override the type of the weight matrices of one role, e.g. `ffn_down=8bit` or
    /// `attn_v=4bit:32` (ROLE is an in-layer name like attn_q, ffn_down, or a global name
    /// like token_embd, output; BLOCK defaults to --block-size); repeatable
    #[arg(long, value_name = "ROLE=TYPE[:BLOCK]")]
    tensor_type: Vec<String>,
    /// print per-tensor details and a summary
    #[arg(short, long)]
    verbose: bool,
    /// no progress bar
    #[arg(long)]
    quiet: bool,
}

/// Parse `ROLE=TYPE[:BLOCK]` (see `--tensor-type`).
fn parse_tensor_type(
    s: &str,
    default_block: usize,
) -> Result<(String, qstream_core::quant::QuantType, usize)> {
    let (role, spec) = s
        .split_once('=')
        .with_context(|| format!("--tensor-type {s}: expected ROLE=TYPE[:BLOCK]"))?;
    let (ty, block) = match spec.split_once(':') {
        Some((t, b)) => (
            t,
            Some(
                b.parse::<usize>()
                    .with_context(|| format!("--tensor-type {s}: block"))?,
            ),
        ),
        None => (spec, None),
    };
    let QuantChoice::Type(t) = QuantChoice::parse(ty)? else {
        anyhow::bail!("--tensor-type {s}: {ty} is not a single type");
    };
    let block = match block {
        Some(b) => b,
        None if t.is_float() => 1,
        None if t.valid_block(default_block) => default_block,
        None => t.default_block(),
    };
    // the block and the role are checked by ConvertParams::validate
    Ok((role.to_string(), t, block))
}

pub fn run(a: Args) -> Result<()> {
    let params = ConvertParams {
        quant: QuantChoice::parse(&a.quant)?,
        block_size: a.block_size,
        outlier_frac: a.outlier_frac,
        outlier_alloc: OutlierAlloc::parse(&a.outlier_alloc)?,
        compress: a.compress,
        n_threads: a.threads,
        rotate: a.rotate.unwrap_or(0),
        tensor_types: a
            .tensor_type
            .iter()
            .map(|s| parse_tensor_type(s, a.block_size))
            .collect::<Result<_>>()?,
        gptq: a.gptq,
        gptq_act_order: a.gptq_act_order,
    };
    // core's rule set (shared with the C API and Python), before calibration does any work
    params.validate()?;
    if a.gptq && a.calibrate.is_none() && a.hessian.is_none() {
        anyhow::bail!("--gptq needs --calibrate TEXT or --hessian FILE");
    }
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let imatrix = match (&a.calibrate, &a.imatrix) {
        (Some(text), out) => {
            let text = std::fs::read_to_string(text)
                .with_context(|| format!("reading {}", text.display()))?;
            let tmp =
                std::env::temp_dir().join(format!("qstream-calib-{}.qsf", std::process::id()));
            let cp = ConvertParams {
                quant: QuantChoice::Type(qstream_core::quant::QuantType::Q8),
                n_threads: a.threads,
                ..Default::default()
            };
            let t = std::time::Instant::now();
            let res = convert::convert(&a.input, &tmp, &cp, &mut |_| true).and_then(|_| {
                calibrate::collect_with(&tmp, &text, a.calib_ctx, a.calib_chunks, a.threads, a.gptq)
            });
            let _ = std::fs::remove_file(&tmp);
            let im = res?;
            eprintln!(
                "calibrated {} matrices in {:.1} s",
                im.entries.keys().filter(|k| !k.contains('@')).count(),
                t.elapsed().as_secs_f64()
            );
            if let Some(out) = out {
                im.save(out)?;
            }
            if let (true, Some(h)) = (a.gptq, &a.hessian) {
                calibrate::save_hessians(&im, h)?;
            }
            Some(im)
        }
        (None, Some(f)) => Some(calibrate::Imatrix::load(f)?),
        (None, None) => None,
    };
    let imatrix = match (&a.calibrate, &a.hessian, a.gptq) {
        (None, Some(h), true) => {
            let mut im = imatrix.unwrap_or_default();
            im.hessians = calibrate::load_hessians(h)?;
            Some(im)
        }
        _ => imatrix,
    };
    let verbose = a.verbose;
    let report =
        convert::convert_with_imatrix(&a.input, &a.output, &params, imatrix.as_ref(), &mut |p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
            bar.set_message(p.tensor.to_string());
            if verbose {
                bar.println(format!("  {}", p.tensor));
            }
            true
        })?;
    bar.finish_and_clear();
    if !report.requantized.is_empty() {
        eprintln!(
            "note: {} tensors had no bit-exact QSF equivalent and were dequantized and requantized{}",
            report.requantized.len(),
            if verbose { ":" } else { " (-v lists them)" }
        );
        if verbose {
            for (n, from, to) in &report.requantized {
                eprintln!("  {n}: {from} -> {to}");
            }
        }
    }
    let types: Vec<String> = report
        .types
        .iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect();
    println!(
        "wrote {}: {:.1} MB, {} params, {:.3} bits/weight, {} tensors copied bit-exactly, types {} in {:.2} s",
        a.output.display(),
        report.file_bytes as f64 / 1e6,
        report.n_params,
        report.bits_per_weight,
        report.n_copied,
        types.join(" "),
        report.seconds
    );
    Ok(())
}

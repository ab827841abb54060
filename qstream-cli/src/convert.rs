//! `qstream convert`.

use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use qstream_core::convert::{self, ConvertParams, QuantChoice};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file or HuggingFace model folder
    input: PathBuf,
    /// output QSF file
    #[arg(short, long)]
    output: PathBuf,
    /// keep, f32, f16, bf16, 8bit, 4bit, 4bit_sym, 3bit, 2bit, 2bit_outlier, 3bit_outlier, 4bit_outlier, mxfp4
    #[arg(short, long, default_value = "4bit")]
    quant: String,
    /// values per quantization block (32, 64, 128, 256)
    #[arg(long, default_value_t = 32)]
    block_size: usize,
    /// fraction of weights kept as FP16 by the *_outlier types
    #[arg(long, default_value_t = 0.005)]
    outlier_frac: f32,
    /// LZ4-compress each layer
    #[arg(long)]
    compress: bool,
    /// worker threads (0 = all cores)
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// print per-tensor details and a summary
    #[arg(short, long)]
    verbose: bool,
    /// no progress bar
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    let params = ConvertParams {
        quant: QuantChoice::parse(&a.quant)?,
        block_size: a.block_size,
        outlier_frac: a.outlier_frac,
        compress: a.compress,
        n_threads: a.threads,
    };
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let verbose = a.verbose;
    let report = convert::convert(&a.input, &a.output, &params, &mut |p| {
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
    let types: Vec<String> = report.types.iter().map(|(k, v)| format!("{k}×{v}")).collect();
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

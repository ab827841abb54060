//! `qstream` — the QStream command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod common;
mod convert;
mod eval;
mod info;
mod perplexity;
mod run;

/// QStream: CPU-first inference for quantized LLMs.
#[derive(Parser)]
#[command(name = "qstream", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, or chat interactively when no prompt is given.
    #[command(alias = "chat")]
    Run(run::Args),
    /// Convert a GGUF file or a HuggingFace folder to QSF.
    Convert(convert::Args),
    /// Print a QSF file's header, hyper-parameters, layers and tokenizer.
    Info(info::Args),
    /// Measure prompt-processing and generation speed.
    Bench(bench::Args),
    /// Perplexity of a text file (llama.cpp's method).
    Perplexity(perplexity::Args),
    /// One forward pass: write logits, compare with a reference.
    Eval(eval::Args),
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Info(a) => info::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Eval(a) => eval::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Die quietly on a closed pipe (`qstream info x.qsf | head`) instead of panicking in print!.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

//! `qstream` — the QStream command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod convert;
mod info;

/// QStream: CPU-first inference for quantized LLMs.
#[derive(Parser)]
#[command(name = "qstream", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a GGUF file or a HuggingFace folder to QSF.
    Convert(convert::Args),
    /// Print a QSF file's header, hyper-parameters, layers and tokenizer.
    Info(info::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Convert(a) => convert::run(a),
        Command::Info(a) => info::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `qstream bench`: prompt processing (pp) and token generation (tg) speed, like llama-bench.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use qstream_core::engine::Session;

use crate::common::{load, CacheArgs, LoadArgs};

#[derive(clap::Args)]
pub struct Args {
    /// QSF model file
    model: PathBuf,
    /// prompt tokens
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    n_prompt: usize,
    /// generated tokens
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    n_gen: usize,
    /// threads (0 = all cores)
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    threads: usize,
    /// repetitions
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    reps: usize,
    /// read the file into memory instead of memory-mapping it
    #[arg(long)]
    no_mmap: bool,
    /// print results as JSON
    #[arg(long)]
    json: bool,
    /// activation precision of the integer kernels (8 or 16; default 16, or QSTREAM_ACT_BITS)
    #[arg(long, value_name = "8|16", value_parser = crate::common::parse_act_bits)]
    act_bits: Option<qstream_core::kernels::ActBits>,
    #[command(flatten)]
    cache: CacheArgs,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

pub fn run(a: Args) -> Result<()> {
    let la = LoadArgs {
        threads: a.threads,
        no_mmap: a.no_mmap,
        act_bits: a.act_bits,
    };
    let (model, load_s) = load(&a.model, &la)?;
    let cfg = model.config();
    let n_vocab = cfg.n_vocab as u32;
    // deterministic pseudo-random prompt tokens (as llama-bench)
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let prompt: Vec<u32> = (0..a.n_prompt.max(1))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n_vocab as u64) as u32
        })
        .collect();
    let mut session = Session::new(
        model.clone(),
        &a.cache.session_params(a.n_prompt + a.n_gen + 8),
    )?;
    // warm-up (page in the weights, size the scratch buffers)
    session.decode(&prompt[..prompt.len().min(8)])?;
    session.reset();
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..a.reps.max(1) {
        if a.n_prompt > 0 {
            session.reset();
            let t = Instant::now();
            session.decode(&prompt)?;
            pp.push(a.n_prompt as f64 / t.elapsed().as_secs_f64());
        }
        if a.n_gen > 0 {
            session.reset();
            session.decode(&prompt[..1])?;
            let mut tok = 0u32;
            let t = Instant::now();
            for _ in 0..a.n_gen {
                let logits = session.decode(&[tok])?;
                tok = logits
                    .iter()
                    .enumerate()
                    .fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
                        if x > bv {
                            (i, x)
                        } else {
                            (bi, bv)
                        }
                    })
                    .0 as u32;
            }
            tg.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
        }
    }
    let info = model.info();
    let threads = if a.threads == 0 {
        rayon::current_num_threads()
    } else {
        a.threads
    };
    let act = qstream_core::kernels::act_bits().bits();
    let (pm, ps) = mean_sd(&pp);
    let (tm, ts) = mean_sd(&tg);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": a.model.display().to_string(), "threads": threads, "load_s": load_s,
                "pp": a.n_prompt, "pp_tok_s": pm, "pp_sd": ps, "tg": a.n_gen, "tg_tok_s": tm, "tg_sd": ts,
                "pp_runs": pp, "tg_runs": tg, "bits_per_weight": info.bits_per_weight,
                "act_bits": act,
            })
        );
        return Ok(());
    }
    println!("| model | size | bpw | act bits | threads | test | t/s |");
    println!("|---|---|---|---|---|---|---|");
    let name = a
        .model
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let size = format!("{:.1} MB", info.file_bytes as f64 / 1e6);
    if !pp.is_empty() {
        println!(
            "| {name} | {size} | {:.2} | {act} | {threads} | pp{} | {pm:.1} ± {ps:.1} |",
            info.bits_per_weight, a.n_prompt
        );
    }
    if !tg.is_empty() {
        println!(
            "| {name} | {size} | {:.2} | {act} | {threads} | tg{} | {tm:.1} ± {ts:.1} |",
            info.bits_per_weight, a.n_gen
        );
    }
    Ok(())
}

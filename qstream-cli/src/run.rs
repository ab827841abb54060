//! `qstream run`: one completion from `-p`, or an interactive chat when `-p` is omitted.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use qstream_core::chat::ChatMessage;
use qstream_core::engine::{GenerateParams, Session};
use qstream_core::sampling::SamplingParams;

use crate::common::{load, CacheArgs, LoadArgs};

#[derive(clap::Args)]
pub struct Args {
    /// QSF model file
    model: PathBuf,
    /// prompt; without it, start an interactive chat
    #[arg(short, long)]
    prompt: Option<String>,
    /// wrap the prompt in the model's chat template (as one user turn)
    #[arg(long)]
    chat: bool,
    /// system message for chat mode
    #[arg(long)]
    system: Option<String>,
    /// tokens to generate
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    n: usize,
    /// temperature (0 = greedy); no short form: `-t` is the thread count in every command
    #[arg(long = "temp", default_value_t = 0.7)]
    temp: f32,
    /// top-k (0 = off)
    #[arg(short = 'k', long = "top-k", default_value_t = 40)]
    top_k: usize,
    /// top-p (1 = off)
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// min-p (0 = off)
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// repetition penalty (1 = off)
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// presence penalty (0 = off)
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// RNG seed
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// stop when this text is generated (repeatable)
    #[arg(long)]
    stop: Vec<String>,
    /// context length (0 = the model's, capped at 4096)
    #[arg(short = 'c', long = "ctx", default_value_t = 0)]
    ctx: usize,
    /// print load time and prompt/decode speed
    #[arg(short, long)]
    verbose: bool,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

impl Args {
    fn gen_params(&self) -> GenerateParams {
        GenerateParams {
            max_tokens: self.n,
            sampling: SamplingParams {
                temperature: self.temp,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                presence_penalty: self.presence_penalty,
                seed: self.seed,
                ..Default::default()
            },
            stop_strings: self.stop.clone(),
            stop_on_eos: true,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let (model, load_s) = load(&a.model, &a.load)?;
    if a.verbose {
        eprintln!("load: {:.3} s ({})", load_s, a.model.display());
    }
    let sp = a.cache.session_params(a.ctx);
    let mut session = Session::new(model.clone(), &sp)?;
    // Ctrl-C cancels the running answer; at the chat prompt it ends the program.
    let generating = Arc::new(AtomicBool::new(false));
    let cancel = Arc::new(Mutex::new(session.cancel_handle()));
    {
        let generating = generating.clone();
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || {
            if generating.load(Ordering::SeqCst) {
                if let Ok(c) = cancel.lock() {
                    c.cancel();
                }
            } else {
                eprintln!();
                std::process::exit(130);
            }
        });
    }
    let params = a.gen_params();
    match &a.prompt {
        Some(p) => {
            let text = if a.chat {
                let mut msgs = Vec::new();
                if let Some(s) = &a.system {
                    msgs.push(ChatMessage {
                        role: "system".into(),
                        content: s.clone(),
                    });
                }
                msgs.push(ChatMessage {
                    role: "user".into(),
                    content: p.clone(),
                });
                model.apply_chat_template(&msgs, true)?
            } else {
                p.clone()
            };
            let ids = model.tokenizer().encode(&text, true)?;
            if !a.chat {
                print!("{p}");
                let _ = std::io::stdout().flush();
            }
            generating.store(true, Ordering::SeqCst);
            let out = generate_streaming(&mut session, &ids, &params)?;
            generating.store(false, Ordering::SeqCst);
            println!();
            if a.verbose {
                print_stats(&out);
            }
        }
        None => chat_loop(&a, &model, &mut session, &params, &generating)?,
    }
    Ok(())
}

fn generate_streaming(
    session: &mut Session,
    ids: &[u32],
    params: &GenerateParams,
) -> Result<qstream_core::engine::GenerateOutput> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let out = session.generate(ids, params, &mut |t| {
        let _ = lock.write_all(t.piece.as_bytes());
        let _ = lock.flush();
        true
    })?;
    Ok(out)
}

fn print_stats(out: &qstream_core::engine::GenerateOutput) {
    let n_gen = out.tokens.len();
    eprintln!(
        "prompt: {} tokens in {:.3} s ({:.1} tok/s) | decode: {} tokens in {:.3} s ({:.1} tok/s) | stop: {:?}",
        out.n_prompt,
        out.prompt_secs,
        out.n_prompt as f64 / out.prompt_secs.max(1e-9),
        n_gen,
        out.gen_secs,
        n_gen as f64 / out.gen_secs.max(1e-9),
        out.stop_reason
    );
}

fn chat_loop(
    a: &Args,
    model: &Arc<qstream_core::engine::Model>,
    session: &mut Session,
    params: &GenerateParams,
    generating: &AtomicBool,
) -> Result<()> {
    let mut history: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &a.system {
        history.push(ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
    }
    eprintln!(
        "chat with {} — empty line or Ctrl-D to quit, Ctrl-C stops an answer",
        a.model.display()
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        if line.is_empty() {
            break;
        }
        history.push(ChatMessage {
            role: "user".into(),
            content: line,
        });
        let text = model.apply_chat_template(&history, true)?;
        let ids = model.tokenizer().encode(&text, true)?;
        // the whole conversation is re-encoded each turn (exact; a 135M model prefills fast)
        session.reset();
        generating.store(true, Ordering::SeqCst);
        let out = generate_streaming(session, &ids, params)?;
        generating.store(false, Ordering::SeqCst);
        println!();
        if a.verbose {
            print_stats(&out);
        }
        history.push(ChatMessage {
            role: "assistant".into(),
            content: out.text.trim().to_string(),
        });
    }
    Ok(())
}

//! Next-token argmax agreement of the fast path (8- and 16-bit activations) with the exact f32
//! reference path over the GPL-3 text (not a test; the CI test `smollm2_reference_path` runs 3
//! chunks of this).
//!
//! `cargo run --release -p qstream-core --example act_agreement -- MODEL.qsf [CHUNKS] [TEXT]`
//! scores `CHUNKS` (default 16) chunks of 128 tokens, every third chunk of the text, each from
//! an empty cache.
use qstream_core::engine::{Model, ModelParams, Session, SessionParams};
use qstream_core::kernels::dispatch::{set_act_bits, set_exact};
use qstream_core::kernels::ActBits;
use qstream_core::sampling::argmax;

fn argmaxes(logits: &[f32], n_vocab: usize) -> Vec<u32> {
    logits.chunks_exact(n_vocab).map(argmax).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        return Err("usage: act_agreement MODEL.qsf [CHUNKS] [TEXT]".into());
    };
    let n_chunks: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let text_path = args
        .get(3)
        .map(String::as_str)
        .unwrap_or("/usr/share/common-licenses/GPL-3");
    let model = Model::load(std::path::Path::new(path), &ModelParams::default())?;
    let text = std::fs::read_to_string(text_path)?;
    let ids = model.tokenizer().encode(&text, false)?;
    let n_vocab = model.config().n_vocab;
    let chunks: Vec<&[u32]> = ids.chunks_exact(128).step_by(3).take(n_chunks).collect();
    let run = |exact: bool| -> Result<Vec<u32>, Box<dyn std::error::Error>> {
        set_exact(exact);
        let mut s = Session::new(model.clone(), &SessionParams::default())?;
        let mut out = Vec::new();
        for c in &chunks {
            s.reset();
            out.extend(argmaxes(&s.decode_all(c)?, n_vocab));
        }
        Ok(out)
    };
    let reference = run(true)?;
    for bits in [ActBits::Sixteen, ActBits::Eight] {
        set_act_bits(bits);
        let fast = run(false)?;
        let same = reference.iter().zip(&fast).filter(|(a, b)| a == b).count();
        println!(
            "{}-bit activations: {same}/{} = {:.2}% of next-token argmaxes equal the exact path's",
            bits.bits(),
            reference.len(),
            100.0 * same as f64 / reference.len() as f64
        );
    }
    Ok(())
}

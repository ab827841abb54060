//! SmolLM2 `keep` (the GGUF's own Q4_1 blocks) through the exact f32 reference path
//! (dequantize + f32 dot, what transformers computes from the same GGUF) and through the fast
//! path (quantized activations, integer dots):
//! * the reference path's greedy continuations equal transformers' token for token;
//! * the fast path at its default 16-bit activations (`kernels::ActBits::Sixteen`) picks the
//!   same next token as the reference path on ≥ 98 % of the positions of a stretch of the
//!   GPL-3 text (the target). Measured: 384/384 here; 2046/2048 (99.9 %) over
//!   16 × 128 tokens. With 8-bit activations (llama.cpp's `Q8_1` scheme, `QSTREAM_ACT_BITS=8`)
//!   it is 94–96 % (1941/2048): the rounding of the activations to 8 bits itself, spread over
//!   every matrix; that figure is printed and guarded at 92 % against regressions.
//!
//! One test per binary: the path switches (`set_exact`, `set_act_bits`) are process-wide.

mod common;

use common::smollm2::{converted, greedy, refs};
use qstream_core::engine::{Model, ModelParams, Session, SessionParams};
use qstream_core::kernels::dispatch::{set_act_bits, set_exact};
use qstream_core::kernels::ActBits;
use qstream_core::sampling::argmax;

fn argmaxes(logits: &[f32], n_vocab: usize) -> Vec<u32> {
    logits.chunks_exact(n_vocab).map(argmax).collect()
}

#[test]
fn reference_path_matches_transformers_and_fast_path_agrees() {
    let Some(qsf) = converted("keep") else { return };
    let model = Model::load(&qsf, &ModelParams::default()).unwrap();

    set_exact(true);
    for c in refs().cases {
        let got = greedy(&model, &c.prompt_ids, c.greedy_ids.len());
        assert_eq!(
            got, c.greedy_ids,
            "reference-path greedy continuation of {:?}",
            c.prompt
        );
    }

    // Next-token argmaxes over GPL-3, in chunks of 128 tokens from an empty cache.
    let text = std::fs::read_to_string("/usr/share/common-licenses/GPL-3").unwrap_or_else(|_| {
        // not every system ships it; the greedy references above always apply
        refs()
            .cases
            .iter()
            .map(|c| c.prompt.clone())
            .collect::<Vec<_>>()
            .join("\n")
    });
    let ids = model.tokenizer().encode(&text, false).unwrap();
    let n_vocab = model.config().n_vocab;
    let chunks: Vec<&[u32]> = ids.chunks_exact(128).take(3).collect();
    assert!(!chunks.is_empty());
    let run = |exact: bool| -> Vec<u32> {
        set_exact(exact);
        let mut s = Session::new(model.clone(), &SessionParams::default()).unwrap();
        let mut out = Vec::new();
        for c in &chunks {
            s.reset();
            out.extend(argmaxes(&s.decode_all(c).unwrap(), n_vocab));
        }
        out
    };
    let reference = run(true);
    let agree = |fast: &[u32]| reference.iter().zip(fast).filter(|(a, b)| a == b).count();
    set_act_bits(ActBits::Eight);
    let same8 = agree(&run(false));
    set_act_bits(ActBits::Sixteen);
    let same16 = agree(&run(false));
    let n = reference.len();
    eprintln!("fast vs reference next-token argmax: 16-bit {same16}/{n}, 8-bit {same8}/{n}");
    assert!(
        same16 * 100 >= n * 98,
        "16-bit fast path agrees with the reference path on only {same16}/{n} positions"
    );
    assert!(
        same8 * 100 >= n * 92,
        "8-bit fast path agrees with the reference path on only {same8}/{n} positions"
    );
}

//! SmolLM2 `keep` (the GGUF's own Q4_1 blocks) through the exact f32 reference path
//! (dequantize + f32 dot, what transformers computes from the same GGUF) and through the fast
//! path (8-bit activations, integer dots):
//! * the reference path's greedy continuations equal transformers' token for token;
//! * the fast path picks the same next token as the reference path on most positions of a
//!   stretch of the GPL-3 text. Measured: 362/384 (94.3 %) here, 1274/1324 (96.2 %) over four
//!   1500-character GPL-3 segments with `qstream eval`; the loss is spread over every matrix
//!   (switching any one group — head, attention, FFN — to the exact path gains < 1.1 points), i.e.
//!   it is the 8-bit activation rounding itself. The 98 % target is not met yet; this
//!   guards against regressions at 92 %.
//!
//! One test per binary: the path switch (`kernels::dispatch::set_exact`) is process-wide.

mod common;

use common::smollm2::{converted, greedy, refs};
use qstream_core::engine::{Model, ModelParams, Session, SessionParams};
use qstream_core::kernels::dispatch::set_exact;

fn argmaxes(logits: &[f32], n_vocab: usize) -> Vec<usize> {
    logits
        .chunks_exact(n_vocab)
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
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
    let run = |exact: bool| -> Vec<usize> {
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
    let fast = run(false);
    let same = reference.iter().zip(&fast).filter(|(a, b)| a == b).count();
    eprintln!(
        "fast vs reference next-token argmax: {same}/{} positions",
        reference.len()
    );
    assert!(
        same * 100 >= reference.len() * 92,
        "fast path agrees with the reference path on only {same}/{} positions",
        reference.len()
    );
}

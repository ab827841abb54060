//! Parity with transformers: the tiny fixtures' logits (every prompt position, one
//! batched forward pass) and greedy generation through the KV cache (gen_ids, gen_logits).

mod tiny_fixture;

use qstream_core::engine::{Session, SessionParams};
use qstream_core::kv::KvType;
use tiny_fixture::{argmax, max_abs_diff, model, reference};

/// max |ours − transformers| allowed (README: 1e-4; correct implementations differ by ~1e-6).
const TOL: f32 = 1e-4;

fn check_prompt(name: &str) {
    let r = reference(name);
    let m = model(name, 2);
    let vocab = m.config().n_vocab;
    let mut s = Session::new(m, &SessionParams::default()).unwrap();
    let logits = s.decode_all(&r.input_ids).unwrap();
    assert_eq!(logits.len(), r.logits.len());
    for (t, (ours, theirs)) in logits.chunks(vocab).zip(r.logits.chunks(vocab)).enumerate() {
        let d = max_abs_diff(ours, theirs);
        assert!(d <= TOL, "{name}: position {t}: max |diff| {d}");
        assert_eq!(
            argmax(ours),
            argmax(theirs),
            "{name}: top-1 at position {t}"
        );
    }
    eprintln!(
        "{name}: prompt logits max |diff| {}",
        max_abs_diff(&logits, &r.logits)
    );
}

fn check_generation(name: &str, kv_type: KvType, tol: f32) {
    let r = reference(name);
    let m = model(name, 2);
    let vocab = m.config().n_vocab;
    let mut s = Session::new(
        m,
        &SessionParams {
            kv_type,
            ..Default::default()
        },
    )
    .unwrap();
    let mut logits = s.decode(&r.input_ids).unwrap().to_vec();
    let mut worst = 0f32;
    for (i, want) in r.gen_ids.iter().enumerate() {
        let d = max_abs_diff(&logits, &r.gen_logits[i * vocab..(i + 1) * vocab]);
        worst = worst.max(d);
        assert!(d <= tol, "{name} ({kv_type:?}): step {i}: max |diff| {d}");
        let id = argmax(&logits);
        assert_eq!(id, *want, "{name} ({kv_type:?}): greedy id at step {i}");
        if i + 1 < r.gen_ids.len() {
            logits = s.decode(&[id]).unwrap().to_vec();
        }
    }
    assert_eq!(s.n_past(), r.input_ids.len() + r.gen_ids.len() - 1);
    eprintln!("{name} ({kv_type:?}): generation logits max |diff| {worst}");
}

#[test]
fn llama_prompt_logits() {
    check_prompt("llama");
}

#[test]
fn llama_greedy_generation() {
    check_generation("llama", KvType::F32, TOL);
}

#[test]
fn llama_greedy_generation_f16_kv() {
    // f16 keys/values: rounding of ~5e-4 relative; the argmax margins are ≥ 1e-3 · logits.
    check_generation("llama", KvType::F16, 2e-2);
}

#[test]
fn mistral_prompt_logits() {
    check_prompt("mistral");
}

#[test]
fn mistral_greedy_generation() {
    // 24 + 16 positions with window 8: the cached path crosses the window many times.
    check_generation("mistral", KvType::F32, TOL);
}

#[test]
fn qwen2_prompt_logits() {
    check_prompt("qwen2");
}

#[test]
fn qwen2_greedy_generation() {
    check_generation("qwen2", KvType::F32, TOL);
}

#[test]
fn qwen3_prompt_logits() {
    check_prompt("qwen3");
}

#[test]
fn qwen3_greedy_generation() {
    check_generation("qwen3", KvType::F32, TOL);
}

//! Sampler behaviour: greedy, determinism, top-k/top-p/min-p, penalties (llama.cpp
//! semantics), empirical distributions against softmax, robustness to NaN/inf, and no
//! allocation per call after warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use qstream_core::sampling::{Sampler, SamplingParams};

/// Counts allocations made by the current thread.
struct Counting;
thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}
// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}

/// Deterministic pseudo-random logits in [-scale, scale).
fn logits(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn plain(temperature: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        repeat_last_n: 64,
        seed,
    }
}

fn softmax(l: &[f32], t: f32) -> Vec<f64> {
    let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = l
        .iter()
        .map(|&x| ((x as f64 - m) / t as f64).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn argmax(l: &[f32]) -> u32 {
    let mut b = 0;
    for i in 1..l.len() {
        if l[i] > l[b] {
            b = i;
        }
    }
    b as u32
}

/// Draw `n` samples and compare frequencies with `expected` (probabilities per id; ids with
/// probability 0 must never appear). Asserts a chi-square bound and a per-id bound.
fn check_distribution(s: &mut Sampler, l: &[f32], expected: &[f64], n: usize) {
    let mut counts = vec![0usize; l.len()];
    for _ in 0..n {
        counts[s.sample(l, &[]) as usize] += 1;
    }
    let mut chi2 = 0.0;
    let mut df = 0;
    for (i, (&c, &p)) in counts.iter().zip(expected).enumerate() {
        if p == 0.0 {
            assert_eq!(c, 0, "id {i} has probability 0 but was drawn {c} times");
            continue;
        }
        let e = p * n as f64;
        chi2 += (c as f64 - e).powi(2) / e;
        df += 1;
        let f = c as f64 / n as f64;
        assert!(
            (f - p).abs() < 0.01 + 0.05 * p,
            "id {i}: frequency {f} vs probability {p}"
        );
    }
    // chi-square with df-1 degrees of freedom: mean df-1, sd sqrt(2(df-1)); 6 sd is ~never
    let k = (df - 1) as f64;
    assert!(
        chi2 < k + 6.0 * (2.0 * k).sqrt() + 10.0,
        "chi2 {chi2} for {df} ids"
    );
}

#[test]
fn defaults_match_the_contract() {
    let p = SamplingParams::default();
    assert_eq!(
        (p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty),
        (0.7, 40, 0.9, 0.0, 1.0)
    );
    assert_eq!(
        (
            p.presence_penalty,
            p.frequency_penalty,
            p.repeat_last_n,
            p.seed
        ),
        (0.0, 0.0, 64, 42)
    );
}

#[test]
fn greedy_picks_argmax_lowest_on_ties() {
    let mut s = Sampler::new(&SamplingParams::greedy());
    for seed in 0..50 {
        let l = logits(seed, 1000, 5.0);
        assert_eq!(s.sample(&l, &[]), argmax(&l));
    }
    assert_eq!(s.sample(&[0.5, 2.0, -1.0, 2.0], &[]), 1);
    assert_eq!(s.sample(&[3.0, 3.0], &[]), 0);
}

#[test]
fn same_seed_same_tokens_different_seed_different() {
    let l = logits(7, 5000, 3.0);
    let run = |seed: u64| {
        let mut s = Sampler::new(&plain(1.0, seed));
        (0..200).map(|_| s.sample(&l, &[])).collect::<Vec<u32>>()
    };
    assert_eq!(run(1), run(1));
    assert_eq!(run(12345), run(12345));
    assert_ne!(run(1), run(2));
    // reseed restarts the stream
    let mut s = Sampler::new(&plain(1.0, 9));
    let a: Vec<u32> = (0..50).map(|_| s.sample(&l, &[])).collect();
    s.reseed(9);
    let b: Vec<u32> = (0..50).map(|_| s.sample(&l, &[])).collect();
    assert_eq!(a, b);
    // and with default settings (top-k 40, top-p 0.9)
    let run_default = |seed: u64| {
        let mut s = Sampler::new(&SamplingParams {
            seed,
            ..Default::default()
        });
        (0..200).map(|_| s.sample(&l, &[])).collect::<Vec<u32>>()
    };
    assert_eq!(run_default(5), run_default(5));
    assert_ne!(run_default(5), run_default(6));
}

#[test]
fn top_k_one_and_tiny_top_p_are_greedy() {
    for seed in 0..30 {
        let l = logits(seed, 2000, 4.0);
        let mut k1 = Sampler::new(&SamplingParams {
            top_k: 1,
            ..plain(1.5, seed)
        });
        let mut p0 = Sampler::new(&SamplingParams {
            top_p: 1e-6,
            ..plain(1.5, seed)
        });
        for _ in 0..5 {
            assert_eq!(k1.sample(&l, &[]), argmax(&l));
            assert_eq!(p0.sample(&l, &[]), argmax(&l));
        }
    }
}

#[test]
fn distribution_matches_softmax() {
    let l = logits(3, 12, 2.0);
    for t in [1.0f32, 0.5, 2.0] {
        let mut s = Sampler::new(&plain(t, 77));
        check_distribution(&mut s, &l, &softmax(&l, t), 200_000);
    }
}

#[test]
fn top_k_distribution_is_renormalised_top_k() {
    let l = logits(11, 20, 1.0);
    let mut order: Vec<usize> = (0..l.len()).collect();
    order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
    let p = softmax(&l, 1.0);
    let mut expected = vec![0.0; l.len()];
    let top: f64 = order[..5].iter().map(|&i| p[i]).sum();
    for &i in &order[..5] {
        expected[i] = p[i] / top;
    }
    let mut s = Sampler::new(&SamplingParams {
        top_k: 5,
        ..plain(1.0, 1)
    });
    check_distribution(&mut s, &l, &expected, 100_000);
}

#[test]
fn top_p_keeps_the_nucleus() {
    // probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625
    let l: Vec<f32> = [0.5f32, 0.25, 0.125, 0.0625, 0.0625]
        .iter()
        .map(|p| p.ln())
        .collect();
    // mass 0.8 needs the first three (0.875)
    let mut s = Sampler::new(&SamplingParams {
        top_p: 0.8,
        ..plain(1.0, 2)
    });
    check_distribution(
        &mut s,
        &l,
        &[4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0, 0.0, 0.0],
        100_000,
    );
    // exactly reaching the target stops there: 0.75 = first two
    let mut s = Sampler::new(&SamplingParams {
        top_p: 0.75,
        ..plain(1.0, 2)
    });
    check_distribution(&mut s, &l, &[2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0, 0.0], 50_000);
    // a large vocabulary (beyond the first partial sort) gives the same nucleus
    let big = logits(5, 49_152, 1.0);
    let p = softmax(&big, 1.0);
    let mut order: Vec<usize> = (0..big.len()).collect();
    order.sort_by(|&a, &b| big[b].total_cmp(&big[a]));
    let mut acc = 0.0;
    let keep = order.iter().take_while(|&&i| {
        let before = acc;
        acc += p[i];
        before < 0.5
    });
    let nucleus: std::collections::HashSet<u32> = keep.map(|&i| i as u32).collect();
    assert!(nucleus.len() > 256, "nucleus {}", nucleus.len());
    let mut s = Sampler::new(&SamplingParams {
        top_p: 0.5,
        ..plain(1.0, 3)
    });
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2_000 {
        let id = s.sample(&big, &[]);
        assert!(nucleus.contains(&id), "{id} outside the nucleus");
        seen.insert(id);
    }
    // ~1870 distinct ids expected from 2000 draws over ~14000 comparable ones
    assert!(seen.len() > 1500, "{} of {}", seen.len(), nucleus.len());
}

#[test]
fn min_p_filters_relative_to_max() {
    // probabilities 0.5, 0.3, 0.15, 0.05: min_p 0.2 → threshold 0.1 drops the last
    let l: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
    let mut s = Sampler::new(&SamplingParams {
        min_p: 0.2,
        ..plain(1.0, 4)
    });
    check_distribution(
        &mut s,
        &l,
        &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
        100_000,
    );
    // min_p 0.7 → threshold 0.35: only token 0
    let mut s = Sampler::new(&SamplingParams {
        min_p: 0.7,
        ..plain(1.0, 4)
    });
    assert!((0..1000).all(|_| s.sample(&l, &[]) == 0));
    // combined with top-p (sorted path)
    let mut s = Sampler::new(&SamplingParams {
        min_p: 0.2,
        top_p: 0.99,
        ..plain(1.0, 4)
    });
    check_distribution(
        &mut s,
        &l,
        &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
        50_000,
    );
}

#[test]
fn repetition_penalty_llama_cpp_semantics() {
    let greedy = |p: SamplingParams, l: &[f32], h: &[u32]| Sampler::new(&p).sample(l, h);
    let rp = |x: f32| SamplingParams {
        repeat_penalty: x,
        ..SamplingParams::greedy()
    };
    // positive logit divided: 2.0 / 1.5 = 1.33 < 1.9
    assert_eq!(greedy(rp(1.5), &[2.0, 1.9, -1.0], &[]), 0);
    assert_eq!(greedy(rp(1.5), &[2.0, 1.9, -1.0], &[0]), 1);
    assert_eq!(greedy(rp(1.04), &[2.0, 1.9, -1.0], &[0]), 0); // 1.92 > 1.9
                                                              // negative logit multiplied: -1.0 × 1.5 = -1.5 < -1.2
    assert_eq!(greedy(rp(1.5), &[-1.0, -1.2], &[0]), 1);
    // once per distinct id, not per occurrence: 2.0/1.2 = 1.67 > 1.6 even if repeated
    assert_eq!(greedy(rp(1.2), &[2.0, 1.6], &[0, 0, 0, 0]), 0);
    // only the last repeat_last_n ids count
    let p = SamplingParams {
        repeat_last_n: 2,
        ..rp(1.5)
    };
    assert_eq!(greedy(p.clone(), &[2.0, 1.9], &[0, 5, 5]), 0);
    assert_eq!(greedy(p, &[2.0, 1.9], &[5, 0]), 1);
    // repeat_last_n 0 disables
    assert_eq!(
        greedy(
            SamplingParams {
                repeat_last_n: 0,
                ..rp(1.5)
            },
            &[2.0, 1.9],
            &[0]
        ),
        0
    );
    // ids outside the vocabulary in the history are ignored
    assert_eq!(greedy(rp(1.5), &[2.0, 1.9], &[99, 0]), 1);
}

#[test]
fn presence_and_frequency_penalties() {
    let greedy = |p: SamplingParams, l: &[f32], h: &[u32]| Sampler::new(&p).sample(l, h);
    let pres = SamplingParams {
        presence_penalty: 0.2,
        ..SamplingParams::greedy()
    };
    assert_eq!(greedy(pres.clone(), &[1.0, 0.9], &[0]), 1);
    assert_eq!(greedy(pres, &[1.0, 0.7], &[0, 0, 0]), 0); // 0.8 > 0.7: once, not per count
    let freq = SamplingParams {
        frequency_penalty: 0.05,
        ..SamplingParams::greedy()
    };
    assert_eq!(greedy(freq.clone(), &[1.0, 0.9], &[0]), 0); // 0.95
    assert_eq!(greedy(freq, &[1.0, 0.9], &[0, 0, 0]), 1); // 0.85
}

#[test]
fn nan_and_inf_never_panic() {
    for params in [
        SamplingParams::greedy(),
        plain(1.0, 1),
        SamplingParams::default(),
    ] {
        let mut s = Sampler::new(&params);
        assert_eq!(s.sample(&[f32::NAN, 1.0, f32::NAN], &[]), 1);
        assert_eq!(s.sample(&[f32::NAN, f32::NAN], &[]), 0);
        assert_eq!(s.sample(&[f32::NEG_INFINITY; 4], &[]), 0);
        assert_eq!(s.sample(&[1.0, f32::INFINITY, 2.0], &[]), 1);
        assert_eq!(
            s.sample(&[f32::NEG_INFINITY, -3.0, f32::NAN], &[0, 1, 2]),
            1
        );
        assert_eq!(s.sample(&[], &[]), 0);
        // -inf tokens are never drawn
        for _ in 0..200 {
            assert_ne!(
                s.sample(&[0.0, f32::NEG_INFINITY, 0.0, f32::NAN], &[]) % 2,
                1
            );
        }
    }
    // degenerate parameters
    for p in [
        SamplingParams {
            temperature: f32::NAN,
            ..plain(1.0, 1)
        },
        SamplingParams {
            temperature: f32::INFINITY,
            ..plain(1.0, 1)
        },
        SamplingParams {
            top_p: -1.0,
            ..plain(1.0, 1)
        },
        SamplingParams {
            min_p: 5.0,
            ..plain(1.0, 1)
        },
        SamplingParams {
            repeat_penalty: 0.0,
            ..plain(1.0, 1)
        },
        SamplingParams {
            top_k: 1_000_000,
            ..plain(1e-30, 1)
        },
        SamplingParams {
            temperature: 1e30,
            ..plain(1.0, 1)
        },
    ] {
        let l = logits(1, 100, 3.0);
        let id = Sampler::new(&p).sample(&l, &[1, 2, 3]);
        assert!((id as usize) < l.len(), "{p:?}");
    }
}

#[test]
fn no_allocation_after_warm_up() {
    let l = logits(9, 49_152, 4.0);
    let history: Vec<u32> = (0..100).map(|i| i * 37 % 49_152).collect();
    for params in [
        SamplingParams::default(),
        SamplingParams {
            top_k: 0,
            min_p: 0.05,
            repeat_penalty: 1.1,
            frequency_penalty: 0.1,
            ..Default::default()
        },
        SamplingParams {
            top_k: 0,
            top_p: 0.999,
            ..Default::default()
        },
        SamplingParams::greedy(),
    ] {
        let mut s = Sampler::new(&params);
        s.sample(&l, &history);
        let before = allocs();
        for i in 0..20 {
            s.sample(&l, &history[..80 + i]);
        }
        assert_eq!(allocs(), before, "{params:?}");
    }
}

#[test]
fn large_vocab_speed() {
    // not a benchmark: guards against an accidental full sort per token (49152 ids)
    let l = logits(10, 49_152, 6.0);
    let mut s = Sampler::new(&SamplingParams::default());
    s.sample(&l, &[]);
    let t = std::time::Instant::now();
    for _ in 0..200 {
        s.sample(&l, &[]);
    }
    let per = t.elapsed().as_secs_f64() / 200.0;
    eprintln!("default sampler, vocab 49152: {:.1} µs/token", per * 1e6);
    assert!(per < 0.02, "{per} s per token");
}

#[test]
fn top_k_ties_keep_lowest_ids() {
    // 1000 equal logits: top-3 is ids 0, 1, 2 (ties rank by id), uniformly
    let l = vec![1.0f32; 1000];
    let mut s = Sampler::new(&SamplingParams {
        top_k: 3,
        ..plain(1.0, 8)
    });
    let mut expected = vec![0.0; 1000];
    expected[..3].fill(1.0 / 3.0);
    check_distribution(&mut s, &l, &expected, 30_000);
    // the k-th value tied with later ids
    let mut l = vec![0.0f32; 500];
    l[400] = 5.0;
    l[450] = 5.0;
    l[7] = 4.0;
    l[9] = 4.0;
    let mut s = Sampler::new(&SamplingParams {
        top_k: 3,
        ..plain(1.0, 8)
    });
    for _ in 0..2000 {
        let id = s.sample(&l, &[]);
        assert!([400, 450, 7].contains(&id), "{id}");
    }
}

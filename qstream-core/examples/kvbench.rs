//! Micro-benchmark of attention over the KV cache (not a test): one query head against
//! `N` cached positions, scores + softmax + weighted values, for f32 K/V (the SIMD f32
//! kernels `dots`/`axpys` of the model's fast path) and each quantized K/V pair (integer
//! query·key dots, values accumulated from their codes).
//!
//! `cargo run --release -p qstream-core --example kvbench [POSITIONS] [HEAD_DIM...]`
//! (default 2048 positions, head_dim 64 and 128). `QSTREAM_ISA=scalar` runs the
//! reference kernels.
use std::time::Instant;

use qstream_core::kv::{simd, KvCache, KvType};

fn lcg(s: &mut u64) -> f32 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn softmax(x: &mut [f32]) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0f32;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in x.iter_mut() {
        *v /= s;
    }
}

/// Best of 5 timings of 200 calls (after 20 warm-up calls), in seconds per call.
fn time(f: &mut dyn FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let reps = 200;
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(2048);
    let dims: Vec<usize> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![64, 128]
    };
    println!(
        "kernel level: {:?} (kv), {:?} (f32)",
        simd::level(),
        qstream_core::kernels::kernels().isa
    );
    println!("| head_dim | K | V | bytes/pos | µs/attention | vs f32 | µs scores | µs values |");
    println!("|---|---|---|---|---|---|---|---|");
    let pairs = [
        (KvType::F32, KvType::F32),
        (KvType::F16, KvType::F16),
        (KvType::Q8, KvType::Q8),
        (KvType::Q4, KvType::Q4),
        (KvType::Q4H, KvType::Q4),
        (KvType::Q4, KvType::Q3),
        (KvType::Q3, KvType::Q3),
        (KvType::Q2, KvType::Q2),
        (KvType::Q4, KvType::Qins8),
    ];
    for &hd in &dims {
        let mut s = 7u64;
        let k: Vec<f32> = (0..n * hd).map(|_| lcg(&mut s)).collect();
        let v: Vec<f32> = (0..n * hd).map(|_| lcg(&mut s)).collect();
        let q: Vec<f32> = (0..hd).map(|_| lcg(&mut s)).collect();
        let mut base = 0f64;
        for (kt, vt) in pairs {
            let mut cache = KvCache::new(kt, vt, 1, 1, hd, n).unwrap();
            for p in 0..n {
                cache.write(0, p, &k[p * hd..(p + 1) * hd], &v[p * hd..(p + 1) * hd]);
            }
            let layer = cache.layer(0);
            let mut att = vec![0f32; n];
            let mut out = vec![0f32; hd];
            let scale = 1.0 / (hd as f32).sqrt();
            let kern = qstream_core::kernels::kernels();
            let mut run = || {
                if let Some((keys, vals)) = layer.head_f32(0, 0, n) {
                    // the model's f32 fast path
                    (kern.dots)(&q, keys, &mut att);
                    for a in att.iter_mut() {
                        *a *= scale;
                    }
                    softmax(&mut att);
                    out.fill(0.0);
                    (kern.axpys)(&att, vals, &mut out);
                } else {
                    layer.scores(0, 0, &q, scale, &mut att);
                    softmax(&mut att);
                    layer.weighted_values(0, 0, &att, &mut out);
                }
                std::hint::black_box(&out);
            };
            let best = time(&mut run);
            // the two halves alone (the f32 rows: the SIMD f32 kernels)
            let mut sc = || {
                match layer.head_f32(0, 0, n) {
                    Some((keys, _)) => (kern.dots)(&q, keys, &mut att),
                    None => layer.scores(0, 0, &q, scale, &mut att),
                }
                std::hint::black_box(&att);
            };
            let t_scores = time(&mut sc);
            let w = vec![1.0 / n as f32; n];
            let mut va = || {
                match layer.head_f32(0, 0, n) {
                    Some((_, vals)) => {
                        out.fill(0.0);
                        (kern.axpys)(&w, vals, &mut out)
                    }
                    None => layer.weighted_values(0, 0, &w, &mut out),
                }
                std::hint::black_box(&out);
            };
            let t_values = time(&mut va);
            if kt == KvType::F32 && vt == KvType::F32 {
                base = best;
            }
            println!(
                "| {hd} | {} | {} | {} | {:.2} | {:.2}× | {:.2} | {:.2} |",
                kt.name(),
                vt.name(),
                kt.row_bytes(hd) + vt.row_bytes(hd),
                best * 1e6,
                base / best,
                t_scores * 1e6,
                t_values * 1e6
            );
        }
    }
}

//! Micro-benchmark of the integer dot kernels of every supported level (not a test):
//! single-token (`dot_*`) and four-token (`dot_*_x4`) kernels at 8- and 16-bit activations.
//!
//! `cargo run --release -p qstream-core --example kbench [ROWS COLS] [LEVEL]` (LEVEL: one of
//! scalar, avx2, avx512, neon, neondot; default all)
use qstream_core::kernels::{kernel_set, ActBits, Isa, QuantAct};
use qstream_core::quant::QuantType;
use std::time::Instant;

mod common;

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<usize> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    let only = raw.iter().find_map(|a| Isa::from_name(a));
    let (rows, cols) = (
        args.first().copied().unwrap_or(1536),
        args.get(1).copied().unwrap_or(576),
    );
    let x = common::activations(4, cols);
    for qt in common::TYPES {
        let (b, rb) = common::weights(qt, rows, cols);
        for isa in Isa::ALL {
            let Some(k) = kernel_set(isa) else { continue };
            if only.is_some_and(|o| o != isa) {
                continue;
            }
            let (f, f4) = match qt {
                QuantType::Q4 => (k.dot_q4, k.dot_q4_x4),
                QuantType::Q4Sym => (k.dot_q4sym, k.dot_q4sym_x4),
                QuantType::Q2 => (k.dot_q2, k.dot_q2_x4),
                _ => (k.dot_q8, k.dot_q8_x4),
            };
            for bits in [ActBits::Eight, ActBits::Sixteen] {
                let mut a = QuantAct::new();
                a.quantize(k, &x, 4, cols, cols / 32, bits);
                // minimum over passes: robust to other processes on the machine
                let (mut best1, mut best4) = (f64::MAX, f64::MAX);
                let mut s = 0f32;
                for _ in 0..100 {
                    let t0 = Instant::now();
                    for r in 0..rows {
                        s += f(32, &b[r * rb..(r + 1) * rb], a.row(0));
                    }
                    best1 = best1.min(t0.elapsed().as_secs_f64());
                    let t0 = Instant::now();
                    for r in 0..rows {
                        let v = f4(
                            32,
                            &b[r * rb..(r + 1) * rb],
                            [a.row(0), a.row(1), a.row(2), a.row(3)],
                        );
                        s += v[3];
                    }
                    best4 = best4.min(t0.elapsed().as_secs_f64());
                }
                let macs = (rows * cols) as f64;
                println!(
                    "{qt:>6} {:<7} {:>2}-bit: x1 {:6.2} GMAC/s ({:5.1} ns/row)  x4 {:6.2} GMAC/s  ({s:.1})",
                    isa.name(),
                    bits.bits(),
                    macs / best1 / 1e9,
                    best1 / rows as f64 * 1e9,
                    4.0 * macs / best4 / 1e9,
                );
            }
        }
    }
}

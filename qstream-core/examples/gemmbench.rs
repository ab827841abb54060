//! Micro-benchmark of the packed-panel path (not a test): packing and the micro-kernel of
//! each level that has one, on a `ROWS × COLS` matrix and `N` tokens.
//!
//! `cargo run --release -p qstream-core --example gemmbench [ROWS COLS N]`
use qstream_core::kernels::gemm::{self, Panel, PANEL};
use qstream_core::kernels::{kernel_set, ActBits, Isa, QuantAct};
use std::time::Instant;

mod common;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(1536);
    let cols = args.get(1).copied().unwrap_or(576);
    let n = args.get(2).copied().unwrap_or(128);
    let x = common::activations(n, cols);
    for qt in common::TYPES {
        let (b, rb) = common::weights(qt, rows, cols);
        for isa in Isa::ALL {
            let Some(k) = kernel_set(isa) else { continue };
            let Some(f) = k.gemm else { continue };
            if gemm::max_level(qt) > k.gemm_max_level {
                continue;
            }
            for bits in [ActBits::Eight, ActBits::Sixteen] {
                let mut a = QuantAct::new();
                a.quantize(k, &x, n, cols, cols / 32, bits);
                let batch = a.batch();
                let mut p = Panel::default();
                let mut out = vec![0f32; n * PANEL];
                let (mut bp, mut bg) = (f64::MAX, f64::MAX);
                for _ in 0..5 {
                    let t0 = Instant::now();
                    for r0 in (0..rows).step_by(PANEL) {
                        (k.gemm_pack)(qt, 32, &b, rb, r0, PANEL.min(rows - r0), &mut p);
                    }
                    bp = bp.min(t0.elapsed().as_secs_f64());
                    let t0 = Instant::now();
                    for _ in (0..rows).step_by(PANEL) {
                        f(&p, &batch, &mut out);
                    }
                    bg = bg.min(t0.elapsed().as_secs_f64());
                }
                let macs = (rows * cols * n) as f64;
                println!(
                    "{qt} {isa:?} {:2}-bit: pack {:6.2} ns/weight-row-group ({:5.2} ms), gemm {:6.1} GMAC/s ({:6.2} ms), pack share {:4.1}%",
                    bits_of(bits),
                    bp * 1e9 / (rows * cols / 32) as f64,
                    bp * 1e3,
                    macs / bg / 1e9,
                    bg * 1e3,
                    100.0 * bp / (bp + bg)
                );
            }
        }
    }
}

fn bits_of(b: ActBits) -> u32 {
    b.bits()
}

//! Micro-benchmark of the dot kernels of every supported level (not a test).
use qstream_core::kernels::{kernel_set, Isa, QuantAct};
use qstream_core::quant::{self, QuantParams, QuantType};
use std::time::Instant;

fn main() {
    let (rows, cols) = (1536usize, 576usize);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 31) % 100) as f32 / 100.0 - 0.5)
        .collect();
    for qt in [QuantType::Q4, QuantType::Q8] {
        let b = quant::quantize(qt, &w, rows, cols, &QuantParams::default()).unwrap();
        let rb = qt.row_bytes(32, cols);
        for isa in Isa::ALL {
            let Some(k) = kernel_set(isa) else { continue };
            let mut a = QuantAct::new();
            a.quantize(
                k,
                &x,
                1,
                cols,
                cols / 32,
                qstream_core::kernels::ActBits::Eight,
            );
            let f = if qt == QuantType::Q4 {
                k.dot_q4
            } else {
                k.dot_q8
            };
            // minimum over passes: robust to other processes on the machine
            let mut best = f64::MAX;
            let mut s = 0f32;
            for _ in 0..300 {
                let t0 = Instant::now();
                for r in 0..rows {
                    s += f(32, &b[r * rb..(r + 1) * rb], a.row(0));
                }
                best = best.min(t0.elapsed().as_secs_f64());
            }
            let macs = (rows * cols) as f64;
            println!(
                "{qt} {isa:?}: {:.2} GMAC/s, {:.1} ns/row ({s})",
                macs / best / 1e9,
                best / rows as f64 * 1e9
            );
        }
    }
}

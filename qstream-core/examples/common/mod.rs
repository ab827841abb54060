//! Data shared by the kernel micro-benchmarks (`kbench`, `gemmbench`): deterministic
//! weights and activations, and the quantized types both time.
use qstream_core::quant::{self, QuantParams, QuantType};

/// The dense types with integer kernels.
pub const TYPES: [QuantType; 4] = [
    QuantType::Q4,
    QuantType::Q4Sym,
    QuantType::Q8,
    QuantType::Q2,
];

/// A `rows × cols` weight matrix quantized to `qt` (block 32) and its row stride in bytes.
pub fn weights(qt: QuantType, rows: usize, cols: usize) -> (Vec<u8>, usize) {
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let b = quant::quantize(qt, &w, rows, cols, &QuantParams::default()).unwrap();
    (b, qt.row_bytes(32, cols))
}

/// `n` activation rows of `cols` values.
pub fn activations(n: usize, cols: usize) -> Vec<f32> {
    (0..n * cols)
        .map(|i| ((i * 31) % 100) as f32 / 100.0 - 0.5)
        .collect()
}

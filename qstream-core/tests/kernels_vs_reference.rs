//! Every SIMD kernel level this machine supports against the scalar reference
//! (`kernels::scalar`) and against the exact f32 path (`quant::dot_row_ref`).
//!
//! * Activation quantization: bit-identical to the scalar reference.
//! * Integer dots on "dyadic" data (power-of-two scales, activations exactly representable
//!   in q8, all sums exact in f32): bit-identical to the scalar reference *and* to the exact
//!   f64 dot of the dequantized weights — any nibble-order, scale or min-term mistake shows.
//! * Integer dots on random data: within f32 summation-order error of the scalar reference
//!   and within the activation-rounding bound `Σ_i |w_i|·d_x(i)/2` of `quant::dot_row_ref`.
//! * `Q2`/`Q3`/`Mxfp4` integer dots on random data, every block size, odd row counts:
//!   bit-identical to the scalar reference (their SIMD levels keep its float order).
//! * Outlier types through `matmul` (base integer kernel + FP16 outliers from their stored
//!   positions): within the activation-rounding bound of the dequantized rows' f32 dot.
//! * Float dots (f32/f16/bf16), `dot`, `axpy`: within f32 summation error of the references.
//! * `matmul`: results independent of batch size and thread count, close to the reference.

use qstream_core::kernels::{self, kernel_set, scalar, ActBits, ActRow, Isa, KernelSet, QuantAct};
use qstream_core::quant::{self, QuantParams, QuantType};
use qstream_core::tensor::Tensor;

/// xorshift64* in [-0.5, 0.5).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn levels() -> Vec<&'static KernelSet> {
    let v: Vec<_> = Isa::ALL.iter().filter_map(|&i| kernel_set(i)).collect();
    assert_eq!(v[0].isa, Isa::Scalar);
    eprintln!("levels: {:?}", v.iter().map(|k| k.isa).collect::<Vec<_>>());
    v
}

fn quantize_with(k: &KernelSet, x: &[f32], groups: usize) -> QuantAct {
    quantize_bits(k, x, groups, ActBits::Eight)
}

fn quantize_bits(k: &KernelSet, x: &[f32], groups: usize, bits: ActBits) -> QuantAct {
    let mut a = QuantAct::new();
    a.quantize(k, x, 1, x.len(), groups, bits);
    a
}

const BITS: [ActBits; 2] = [ActBits::Eight, ActBits::Sixteen];

/// 16-bit activations: `q = 256·qs + lo` within 1.5 steps of `x/d` (half a step of rounding,
/// plus one where `lo = −128` was moved to −127), both planes in −127..=127, `d = amax/32512`,
/// `isum = Σ q`, `s = d·isum` — the same on every level (one shared quantizer).
#[test]
fn quantize_act16_two_planes() {
    let mut rng = Rng(23);
    for k in levels() {
        for len in [1usize, 31, 32, 33, 576, 1536 + 5] {
            let mut x: Vec<f32> = (0..len).map(|_| rng.f() * 8.0).collect();
            if len > 40 {
                x[7] = 300.0; // an outlier: the rest of its group needs the low plane
                x[35] = 0.0;
                x[36] = -x[37]; // ties between lanes
                x[8] = 1.5 * (300.0 / 32512.0); // about 1.5 steps of group 0: a near-tie
            }
            let groups = len.div_ceil(32);
            let a = quantize_bits(k, &x, groups, ActBits::Sixteen);
            let r = a.row(0);
            assert!(r.has_lo());
            let want = quantize_bits(
                kernel_set(Isa::Scalar).unwrap(),
                &x,
                groups,
                ActBits::Sixteen,
            );
            assert!(
                row_eq(r, want.row(0)) && r.lo == want.row(0).lo,
                "{:?}",
                k.isa
            );
            for g in 0..groups {
                let xs: Vec<f32> = (32 * g..32 * g + 32)
                    .map(|i| x.get(i).copied().unwrap_or(0.0))
                    .collect();
                let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                assert_eq!(r.d[g], amax / 32512.0);
                let mut sum = 0i32;
                for (i, v) in xs.iter().enumerate() {
                    let j = 32 * g + i;
                    assert!((-127..=127).contains(&r.qs[j]) && (-127..=127).contains(&r.lo[j]));
                    let q = r.q(j);
                    assert_eq!(q, 256 * r.qs[j] as i32 + r.lo[j] as i32);
                    assert!(
                        (v - q as f32 * r.d[g]).abs() <= r.d[g] * 1.5 * (1.0 + 1e-5),
                        "g {g} i {i}: {v} vs {q}·{}",
                        r.d[g]
                    );
                    sum += q;
                }
                assert_eq!(r.isum[g], sum);
                assert_eq!(r.s[g].to_bits(), (r.d[g] * sum as f32).to_bits());
            }
        }
    }
}

fn row_eq(a: ActRow<'_>, b: ActRow<'_>) -> bool {
    a.qs == b.qs
        && a.isum == b.isum
        && a.d.iter().zip(b.d).all(|(x, y)| x.to_bits() == y.to_bits())
        && a.s.iter().zip(b.s).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn quantize_act_is_bit_identical() {
    let mut rng = Rng(7);
    for k in levels() {
        for len in [1usize, 5, 31, 32, 33, 64, 100, 576, 1536, 2048 + 7] {
            let mut x: Vec<f32> = (0..len).map(|_| rng.f() * 8.0).collect();
            if len > 3 {
                x[2] = 0.0;
                x[3] = -x[1]; // ties between lanes
            }
            let groups = len.div_ceil(256) * 8;
            let want = quantize_with(kernel_set(Isa::Scalar).unwrap(), &x, groups);
            let got = quantize_with(k, &x, groups);
            assert!(row_eq(want.row(0), got.row(0)), "{:?} len {len}", k.isa);
            // The reference itself: q = round(x/d) with d = amax/127, and isum.
            let r = want.row(0);
            for g in 0..groups {
                let xs: Vec<f32> = (32 * g..32 * g + 32)
                    .map(|i| x.get(i).copied().unwrap_or(0.0))
                    .collect();
                let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                assert_eq!(r.d[g], amax / 127.0);
                for (i, v) in xs.iter().enumerate() {
                    let q = r.qs[32 * g + i] as f32;
                    assert!(
                        (v - q * r.d[g]).abs() <= r.d[g] * 0.5 * (1.0 + 1e-6),
                        "g {g} i {i}"
                    );
                }
                assert_eq!(
                    r.isum[g],
                    r.qs[32 * g..32 * g + 32]
                        .iter()
                        .map(|&q| q as i32)
                        .sum::<i32>()
                );
            }
        }
        // An all-zero group: d = 0, q = 0.
        let z = quantize_with(k, &[0.0; 40], 2);
        assert!(z.row(0).d.iter().all(|&d| d == 0.0) && z.row(0).qs.iter().all(|&q| q == 0));
    }
}

fn dot_fn(k: &KernelSet, qt: QuantType) -> kernels::dispatch::DotQFn {
    match qt {
        QuantType::Q4 => k.dot_q4,
        QuantType::Q4Sym => k.dot_q4sym,
        QuantType::Q8 => k.dot_q8,
        QuantType::Q2 => k.dot_q2,
        QuantType::Q3 => k.dot_q3,
        QuantType::Mxfp4 => k.dot_mxfp4,
        _ => unreachable!(),
    }
}

fn f16(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// A row of `nb` blocks with power-of-two scales and small-integer minima.
fn dyadic_row(qt: QuantType, block: usize, nb: usize, rng: &mut Rng) -> Vec<u8> {
    let mut row = Vec::new();
    for _ in 0..nb {
        let d = [0.125f32, 0.0625][rng.below(2) as usize];
        match qt {
            QuantType::Q4 => {
                row.extend(f16(d));
                row.extend(f16((rng.below(33) as f32 - 16.0) * 0.0625));
                row.extend((0..block / 2).map(|_| rng.next() as u8));
            }
            QuantType::Q4Sym => {
                row.extend(f16(d));
                row.extend((0..block / 2).map(|_| rng.next() as u8));
            }
            QuantType::Q8 => {
                row.extend(f16(d));
                row.extend((0..32).map(|_| (rng.below(255) as i32 - 127) as i8 as u8));
            }
            QuantType::Q2 | QuantType::Q3 => {
                row.extend(f16(d));
                row.extend(f16((rng.below(33) as f32 - 16.0) * 0.0625));
                let payload = qt.block_bytes(block) - 4;
                row.extend((0..payload).map(|_| rng.next() as u8));
            }
            QuantType::Mxfp4 => {
                // scales 2^-1 and 2^0 keep every partial sum exact in f32
                row.push(126 + rng.below(2) as u8);
                row.extend((0..16).map(|_| rng.next() as u8));
            }
            _ => unreachable!(),
        }
    }
    row
}

/// Activations `m·2^-5` with |m| ≤ 127 and one ±127 per group: q8 represents them exactly.
fn dyadic_x(len: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x: Vec<f32> = (0..len)
        .map(|_| (rng.below(255) as f32 - 127.0) / 32.0)
        .collect();
    for g in 0..len / 32 {
        let i = 32 * g + rng.below(32) as usize;
        x[i] = if rng.below(2) == 0 {
            127.0 / 32.0
        } else {
            -127.0 / 32.0
        };
    }
    x
}

fn exact_dot(qt: QuantType, block: usize, row: &[u8], x: &[f32]) -> f64 {
    let mut w = vec![0f32; x.len()];
    quant::dequantize_row(qt, block, row, &mut w);
    w.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum()
}

const INT_CASES: [(QuantType, usize); 15] = [
    (QuantType::Q4, 32),
    (QuantType::Q4, 64),
    (QuantType::Q4, 128),
    (QuantType::Q4, 256),
    (QuantType::Q4Sym, 32),
    (QuantType::Q8, 32),
    (QuantType::Q2, 32),
    (QuantType::Q2, 64),
    (QuantType::Q2, 128),
    (QuantType::Q2, 256),
    (QuantType::Q3, 32),
    (QuantType::Q3, 64),
    (QuantType::Q3, 128),
    (QuantType::Q3, 256),
    (QuantType::Mxfp4, 32),
];

/// The types whose SIMD levels are bit-identical to the scalar reference on any data.
const BIT_EXACT_CASES: [(QuantType, usize); 5] = [
    (QuantType::Q3, 32),
    (QuantType::Q3, 64),
    (QuantType::Q3, 128),
    (QuantType::Q3, 256),
    (QuantType::Mxfp4, 32),
];

#[test]
fn q3_mxfp4_dots_bit_exact_on_random_data() {
    let mut rng = Rng(17);
    let sc = kernel_set(Isa::Scalar).unwrap();
    for k in levels() {
        for &(qt, block) in &BIT_EXACT_CASES {
            for (rows, groups, bits) in
                [(1usize, 1usize), (3, 2), (7, 5), (5, 18), (3, 33), (1, 64)]
                    .into_iter()
                    .flat_map(|(r, g)| BITS.map(|b| (r, g, b)))
            {
                let cols = groups * 32 - if groups > 2 { 7 } else { 0 };
                let w: Vec<f32> = (0..rows * cols)
                    .map(|_| rng.f() * (1.0 + 4.0 * rng.f()))
                    .collect();
                let p = QuantParams {
                    block_size: block,
                    ..Default::default()
                };
                let bytes = quant::quantize(qt, &w, rows, cols, &p).unwrap();
                let x: Vec<f32> = (0..cols).map(|_| rng.f() * 5.0).collect();
                let a = quantize_bits(k, &x, cols.div_ceil(block) * block / 32, bits);
                let rb = qt.row_bytes(block, cols);
                for r in 0..rows {
                    let row = &bytes[r * rb..(r + 1) * rb];
                    let want = dot_fn(sc, qt)(block, row, a.row(0));
                    let got = dot_fn(k, qt)(block, row, a.row(0));
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{:?} {qt}/{block} {bits:?} rows {rows} cols {cols} row {r}: {got} vs {want}",
                        k.isa
                    );
                }
            }
        }
    }
}

#[test]
fn integer_dots_bit_exact_on_dyadic_data() {
    let mut rng = Rng(11);
    let sc = kernel_set(Isa::Scalar).unwrap();
    let extra_sym = [(QuantType::Q4Sym, 64), (QuantType::Q4Sym, 256)];
    for k in levels() {
        for &(qt, block) in INT_CASES.iter().chain(&extra_sym) {
            for nb in [1usize, 2, 3, 5, 8, 17, 18] {
                if nb * block > 64 * 32 && block > 32 {
                    continue;
                }
                let len = nb * block;
                let row = dyadic_row(qt, block, nb, &mut rng);
                assert_eq!(row.len(), qt.row_bytes(block, len));
                let x = dyadic_x(len, &mut rng);
                // 16 bits represent these exactly too (q = 256·m, lo = 0)
                for bits in BITS {
                    let a = quantize_bits(sc, &x, len / 32, bits);
                    let want = dot_fn(sc, qt)(block, &row, a.row(0));
                    let got = dot_fn(k, qt)(block, &row, a.row(0));
                    let exact = exact_dot(qt, block, &row, &x);
                    assert_eq!(want as f64, exact, "scalar {qt}/{block} nb {nb} {bits:?}");
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{:?} {qt}/{block} nb {nb} {bits:?}",
                        k.isa
                    );
                }
            }
        }
    }
}

#[test]
fn integer_dots_on_random_data() {
    let mut rng = Rng(3);
    let sc = kernel_set(Isa::Scalar).unwrap();
    for k in levels() {
        for &(qt, block) in &INT_CASES {
            for (nb_total, bits) in [1usize, 2, 3, 7, 18, 33, 64]
                .into_iter()
                .flat_map(|n| BITS.map(|b| (n, b)))
            {
                // nb_total groups of 32 → cols; blocks of `block` cover it (zero padded).
                let cols = nb_total * 32 - if nb_total > 2 { 5 } else { 0 };
                let rows = 3;
                let w: Vec<f32> = (0..rows * cols)
                    .map(|_| rng.f() * (1.0 + rng.f()))
                    .collect();
                let bytes = quant::quantize(
                    qt,
                    &w,
                    rows,
                    cols,
                    &QuantParams {
                        block_size: block,
                        ..Default::default()
                    },
                )
                .unwrap();
                let x: Vec<f32> = (0..cols).map(|_| rng.f() * 3.0).collect();
                let groups = cols.div_ceil(block) * block / 32;
                let a = quantize_bits(k, &x, groups, bits);
                // rounding of the activation: |x − d·q| ≤ d/2 per value (8 bits), ≤ 1.5·d
                // (16 bits, see `quantize_act16_two_planes`)
                let steps = if bits == ActBits::Eight { 0.5 } else { 1.5 };
                let rb = qt.row_bytes(block, cols);
                for r in 0..rows {
                    let row = &bytes[r * rb..(r + 1) * rb];
                    let got = dot_fn(k, qt)(block, row, a.row(0));
                    let want = dot_fn(sc, qt)(block, row, a.row(0));
                    let mut wd = vec![0f32; cols];
                    quant::dequantize_row(qt, block, row, &mut wd);
                    let mag: f32 = wd.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum();
                    let ar = a.row(0);
                    let act_bound: f32 = wd
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v.abs() * ar.d[i / 32] * steps)
                        .sum();
                    assert!(
                        (got - want).abs() <= 2e-6 * mag.max(1e-3) * (nb_total as f32).sqrt(),
                        "{:?} {qt}/{block} {bits:?} cols {cols}: {got} vs scalar {want}",
                        k.isa
                    );
                    let exact = quant::dot_row_ref(qt, block, row, &x);
                    let tol = act_bound * 1.001 + 1e-5 * mag + 1e-6;
                    assert!(
                        (got - exact).abs() <= tol,
                        "{:?} {qt}/{block} {bits:?} cols {cols}: {got} vs exact {exact} (bound {tol})",
                        k.isa
                    );
                }
            }
        }
    }
}

fn dot_x4_fn(k: &KernelSet, qt: QuantType) -> kernels::dispatch::DotQ4xFn {
    match qt {
        QuantType::Q4 => k.dot_q4_x4,
        QuantType::Q4Sym => k.dot_q4sym_x4,
        QuantType::Q8 => k.dot_q8_x4,
        QuantType::Q2 => k.dot_q2_x4,
        _ => unreachable!(),
    }
}

/// The four-token kernels give, per token, exactly the same level's single-token result (and
/// at the scalar level the reference), on random data, every block size, padded rows, and
/// activations of unequal length.
#[test]
fn x4_dots_bit_identical_to_single_token() {
    let mut rng = Rng(17);
    let cases = [
        (QuantType::Q4, 32),
        (QuantType::Q4, 64),
        (QuantType::Q4, 128),
        (QuantType::Q4, 256),
        (QuantType::Q4Sym, 32),
        (QuantType::Q4Sym, 64),
        (QuantType::Q4Sym, 128),
        (QuantType::Q4Sym, 256),
        (QuantType::Q8, 32),
        (QuantType::Q2, 32),
        (QuantType::Q2, 128),
    ];
    for k in levels() {
        for &(qt, block) in &cases {
            for (nb_total, bits) in [1usize, 2, 3, 7, 18, 33, 64]
                .into_iter()
                .flat_map(|n| BITS.map(|b| (n, b)))
            {
                let cols = nb_total * 32 - if nb_total > 2 { 5 } else { 0 };
                let rows = 3;
                let w: Vec<f32> = (0..rows * cols)
                    .map(|_| rng.f() * (1.0 + rng.f()))
                    .collect();
                let bytes = quant::quantize(
                    qt,
                    &w,
                    rows,
                    cols,
                    &QuantParams {
                        block_size: block,
                        ..Default::default()
                    },
                )
                .unwrap();
                let groups = cols.div_ceil(block) * block / 32;
                let xs: Vec<f32> = (0..4 * cols).map(|_| rng.f() * 3.0).collect();
                let mut act = QuantAct::new();
                act.quantize(k, &xs, 4, cols, groups, bits);
                let rb = qt.row_bytes(block, cols);
                for r in 0..rows {
                    let row = &bytes[r * rb..(r + 1) * rb];
                    let a = [act.row(0), act.row(1), act.row(2), act.row(3)];
                    let got = dot_x4_fn(k, qt)(block, row, a);
                    for t in 0..4 {
                        let want = dot_fn(k, qt)(block, row, a[t]);
                        assert_eq!(
                            got[t].to_bits(),
                            want.to_bits(),
                            "{:?} {qt}/{block} {bits:?} cols {cols} token {t}: {} vs {want}",
                            k.isa,
                            got[t]
                        );
                    }
                    // one token's activation shorter by a block: still per-token exact
                    if groups * 32 / block > 1 {
                        let mut b = a;
                        let g = groups - block / 32;
                        let r1 = act.row(1);
                        b[1] = ActRow {
                            qs: &r1.qs[..32 * g],
                            lo: if r1.has_lo() { &r1.lo[..32 * g] } else { &[] },
                            d: &r1.d[..g],
                            s: &r1.s[..g],
                            isum: &r1.isum[..g],
                        };
                        let got = dot_x4_fn(k, qt)(block, row, b);
                        for t in 0..4 {
                            let want = dot_fn(k, qt)(block, row, b[t]);
                            assert_eq!(got[t].to_bits(), want.to_bits(), "{:?} short", k.isa);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn float_dots_and_vector_ops() {
    let mut rng = Rng(5);
    for k in levels() {
        for len in [1usize, 7, 8, 9, 31, 32, 33, 64, 100, 576, 1537] {
            let w: Vec<f32> = (0..len).map(|_| rng.f()).collect();
            let x: Vec<f32> = (0..len).map(|_| rng.f()).collect();
            let mag: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            for qt in [QuantType::F32, QuantType::F16, QuantType::Bf16] {
                let bytes = quant::quantize(qt, &w, 1, len, &QuantParams::default()).unwrap();
                let f = match qt {
                    QuantType::F32 => k.dot_f32,
                    QuantType::F16 => k.dot_f16,
                    _ => k.dot_bf16,
                };
                let got = f(&bytes, &x);
                let want = quant::dot_row_ref(qt, 1, &bytes, &x);
                assert!(
                    (got - want).abs() <= 1e-6 * mag * (len as f32).sqrt() + 1e-7,
                    "{:?} {qt} {len}",
                    k.isa
                );
            }
            let want: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!(((k.dot)(&w, &x) as f64 - want).abs() <= 1e-6 * mag as f64 + 1e-7);
            // attention: scores against `len / d` keys, weighted sum of as many value rows
            for d in [1usize, 8, 9, 64, 72] {
                let rows = len / d;
                let mut got = vec![0f32; rows];
                (k.dots)(&x[..d.min(len)], &w, &mut got);
                for (i, g) in got.iter().enumerate() {
                    let want: f64 = (0..d).map(|j| x[j] as f64 * w[i * d + j] as f64).sum();
                    let m: f64 = (0..d).map(|j| (x[j] * w[i * d + j]).abs() as f64).sum();
                    assert!(
                        (*g as f64 - want).abs() <= 1e-6 * m + 1e-7,
                        "{:?} dots {d}",
                        k.isa
                    );
                }
                let mut out = vec![0.5f32; d];
                (k.axpys)(&x[..rows], &w, &mut out);
                for (j, o) in out.iter().enumerate() {
                    let want: f64 = 0.5
                        + (0..rows)
                            .map(|i| x[i] as f64 * w[i * d + j] as f64)
                            .sum::<f64>();
                    let m: f64 = 0.5
                        + (0..rows)
                            .map(|i| (x[i] * w[i * d + j]).abs() as f64)
                            .sum::<f64>();
                    assert!(
                        (*o as f64 - want).abs() <= 2e-6 * m,
                        "{:?} axpys {d}",
                        k.isa
                    );
                }
            }
            let mut y = x.clone();
            (k.axpy)(0.75, &w, &mut y);
            for i in 0..len {
                assert!(
                    (y[i] - (x[i] + 0.75 * w[i])).abs() <= 1e-6,
                    "{:?} axpy {len}",
                    k.isa
                );
            }
        }
    }
}

/// `matmul` through the process's kernel level: thread-count independent; batch-size
/// independent within each path (below `GEMM_MIN_TOKENS` tokens the row kernels, equal to
/// `matvec`; from it the packed panels, equal across batch sizes and close to `matvec`);
/// close to the exact reference, for every weight type (including the dequantize path).
#[test]
fn matmul_is_batch_and_thread_independent() {
    let mut rng = Rng(9);
    let (rows, cols, n) = (301, 200, kernels::GEMM_MIN_TOKENS + 4);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.f()).collect();
    let xs: Vec<f32> = (0..n * cols).map(|_| rng.f() * 2.0).collect();
    for qt in [
        QuantType::Q4,
        QuantType::Q4Sym,
        QuantType::Q8,
        QuantType::Q3,
        QuantType::Q2,
        QuantType::Mxfp4,
        QuantType::F16,
        QuantType::Q4Outlier,
        QuantType::Q3Outlier,
        QuantType::Q2Outlier,
    ] {
        let block = if matches!(qt, QuantType::F16) { 1 } else { 32 };
        let bytes = quant::quantize(qt, &w, rows, cols, &QuantParams::default()).unwrap();
        let t = Tensor::from_bytes("w", qt, block, vec![rows, cols], &bytes);
        kernels::validate(&t).unwrap();
        let wd = quant::dequantize(qt, block, &bytes, rows, cols).unwrap();
        let mut first: Option<Vec<f32>> = None;
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let out = pool.install(|| {
                let mut out = vec![0f32; n * rows];
                kernels::matmul(&t, &xs, n, &mut out);
                // every smaller batch on the packed path agrees with the whole batch
                for m in kernels::GEMM_MIN_TOKENS..n {
                    let mut part = vec![0f32; m * rows];
                    kernels::matmul(&t, &xs[..m * cols], m, &mut part);
                    assert_eq!(part, out[..m * rows], "{qt}: batch {m}");
                }
                // below the packed path (multi-token kernels for n ≥ 4, remainders): every
                // batch bit-identical to one token at a time
                let parts: Vec<Vec<f32>> = (2..kernels::GEMM_MIN_TOKENS)
                    .map(|m| {
                        let mut part = vec![0f32; m * rows];
                        kernels::matmul(&t, &xs[..m * cols], m, &mut part);
                        part
                    })
                    .collect();
                for tk in 0..n {
                    let mut one = vec![0f32; rows];
                    kernels::matvec(&t, &xs[tk * cols..(tk + 1) * cols], &mut one);
                    for (i, part) in parts.iter().enumerate() {
                        if tk < i + 2 {
                            let m = i + 2;
                            assert_eq!(part[tk * rows..(tk + 1) * rows], one, "{qt}: batch {m}");
                        }
                    }
                    // the packed path: the same integers, f32 sums in another order
                    let got = &out[tk * rows..(tk + 1) * rows];
                    for (r, (g, o)) in got.iter().zip(&one).enumerate() {
                        assert!(
                            (g - o).abs() <= 1e-5 * (1.0 + o.abs()),
                            "{qt}: token {tk} row {r}: {g} vs {o}"
                        );
                    }
                }
                out
            });
            match &first {
                None => first = Some(out),
                Some(f) => assert_eq!(f, &out, "{qt}: threads {threads}"),
            }
        }
        let out = first.unwrap();
        for tk in 0..n {
            let x = &xs[tk * cols..(tk + 1) * cols];
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            for r in 0..rows {
                let wr = &wd[r * cols..(r + 1) * cols];
                let exact: f32 = wr.iter().zip(x).map(|(a, b)| a * b).sum();
                let l1: f32 = wr.iter().map(|v| v.abs()).sum();
                // q8 activations: each value off by at most amax/254
                let tol = l1 * amax / 254.0 * 1.01 + 1e-4;
                let got = out[tk * rows + r];
                assert!(
                    (got - exact).abs() <= tol,
                    "{qt} t {tk} r {r}: {got} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn matmul_multi_equals_separate_calls() {
    let mut rng = Rng(13);
    let cols = 96;
    let shapes = [64usize, 32, 32];
    let ts: Vec<Tensor> = shapes
        .iter()
        .map(|&rows| {
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.f()).collect();
            let b =
                quant::quantize(QuantType::Q4, &w, rows, cols, &QuantParams::default()).unwrap();
            Tensor::from_bytes("w", QuantType::Q4, 32, vec![rows, cols], &b)
        })
        .collect();
    for n in [1usize, 3] {
        let xs: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
        let mut a = vec![0f32; n * 64];
        let mut b = vec![0f32; n * 32];
        let mut c = vec![0f32; n * 32];
        kernels::matmul_multi(
            &[&ts[0], &ts[1], &ts[2]],
            &mut [&mut a, &mut b, &mut c],
            &xs,
            n,
        );
        for (t, o) in ts.iter().zip([&a, &b, &c]) {
            let mut want = vec![0f32; o.len()];
            kernels::matmul(t, &xs, n, &mut want);
            assert_eq!(&want, o);
        }
    }
    // the scalar reference of Q4 for a direct call, too
    let _ = scalar::dot_q4;
}

/// Outlier types: `matmul` (dense integer kernel, then each FP16 outlier applied from its
/// stored position) against the f32 dot of the dequantized rows, every base type and block
/// size, odd row counts, batches of 1 and 3.
#[test]
fn outlier_matmul_matches_dequantized_rows() {
    let mut rng = Rng(21);
    for qt in [
        QuantType::Q2Outlier,
        QuantType::Q3Outlier,
        QuantType::Q4Outlier,
    ] {
        for block in [32usize, 64, 128, 256] {
            let (rows, cols) = (37, 300);
            let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.f()).collect();
            // a few large weights, so the outliers matter
            for _ in 0..40 {
                w[rng.below((rows * cols) as u64) as usize] = 20.0 * rng.f();
            }
            let p = QuantParams {
                outlier_count: None,
                block_size: block,
                outlier_frac: 0.01,
                importance: None,
            };
            let bytes = quant::quantize(qt, &w, rows, cols, &p).unwrap();
            let t = Tensor::from_bytes("w", qt, block, vec![rows, cols], &bytes);
            kernels::validate(&t).unwrap();
            let wd = quant::dequantize(qt, block, &bytes, rows, cols).unwrap();
            for n in [1usize, 3, kernels::GEMM_MIN_TOKENS + 2] {
                let xs: Vec<f32> = (0..n * cols).map(|_| rng.f() * 2.0).collect();
                let mut out = vec![0f32; n * rows];
                kernels::matmul(&t, &xs, n, &mut out);
                // every smaller batch on the same path agrees
                let m0 = if n >= kernels::GEMM_MIN_TOKENS {
                    kernels::GEMM_MIN_TOKENS
                } else {
                    2
                };
                for m in m0..n {
                    let mut part = vec![0f32; m * rows];
                    kernels::matmul(&t, &xs[..m * cols], m, &mut part);
                    assert_eq!(part, out[..m * rows], "{qt}: batch {m}");
                }
                for tk in 0..n {
                    let x = &xs[tk * cols..(tk + 1) * cols];
                    // the q8 activation the kernels use: |x − x̂| ≤ d_g/2 per value
                    let groups = cols.div_ceil(block) * block / 32;
                    let a = quantize_with(kernel_set(Isa::Scalar).unwrap(), x, groups);
                    let d = a.row(0).d;
                    for r in 0..rows {
                        let wr = &wd[r * cols..(r + 1) * cols];
                        let exact: f64 = wr.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let mag: f32 = wr.iter().zip(x).map(|(a, b)| (a * b).abs()).sum();
                        let act: f32 = wr
                            .iter()
                            .enumerate()
                            .map(|(c, v)| v.abs() * d[c / 32] * 0.5)
                            .sum();
                        let tol = act * 1.001 + 2e-6 * mag + 1e-5;
                        let got = out[tk * rows + r];
                        assert!(
                            (got as f64 - exact).abs() <= tol as f64,
                            "{qt}/{block} n {n} t {tk} r {r}: {got} vs {exact} (bound {tol})"
                        );
                    }
                }
            }
        }
    }
}

/// Owned buffers of one activation row (for the fused producers, which fill an
/// `ActRowMut`).
struct ActBuf {
    qs: Vec<i8>,
    lo: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    isum: Vec<i32>,
}

impl ActBuf {
    fn new(groups: usize, two: bool) -> ActBuf {
        ActBuf {
            qs: vec![99; 32 * groups],
            lo: if two {
                vec![99; 32 * groups]
            } else {
                Vec::new()
            },
            d: vec![f32::NAN; groups],
            s: vec![f32::NAN; groups],
            isum: vec![7; groups],
        }
    }
    fn out(&mut self) -> kernels::ActRowMut<'_> {
        kernels::ActRowMut {
            qs: &mut self.qs,
            lo: &mut self.lo,
            d: &mut self.d,
            s: &mut self.s,
            isum: &mut self.isum,
        }
    }
    fn row(&self) -> ActRow<'_> {
        ActRow {
            qs: &self.qs,
            lo: &self.lo,
            d: &self.d,
            s: &self.s,
            isum: &self.isum,
        }
    }
}

fn bits_eq(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The fused producers (`rms_norm_act`, `silu_mul_act`) on every level: their f32 values
/// and quantized planes/scales are bit-identical to the scalar reference, and the planes
/// are exactly what quantizing those f32 values on their own gives (norm, then quantize);
/// padding groups (a block larger than the row) are zero as in `quantize_act`.
#[test]
fn fused_producers_are_bit_identical() {
    let mut rng = Rng(41);
    let sc = kernel_set(Isa::Scalar).unwrap();
    for k in levels() {
        for len in [1usize, 7, 8, 31, 32, 33, 100, 576, 1536 + 5] {
            let mut x: Vec<f32> = (0..len).map(|_| rng.f() * 6.0).collect();
            if len > 40 {
                x[3] = 40.0; // an outlier within group 0
                x[33] = 0.0;
            }
            let w: Vec<f32> = (0..len).map(|_| 1.0 + rng.f()).collect();
            let up: Vec<f32> = (0..len).map(|_| rng.f() * 3.0).collect();
            // the gate spans SiLU's interesting range, saturation included
            let gate: Vec<f32> = (0..len)
                .map(|i| if i % 17 == 5 { -120.0 } else { rng.f() * 24.0 })
                .collect();
            for pad in [0usize, 2] {
                let groups = len.div_ceil(32) + pad;
                for (two, bits) in [(false, ActBits::Eight), (true, ActBits::Sixteen)] {
                    // RMSNorm
                    let (mut o_k, mut o_s) = (vec![0f32; len], vec![0f32; len]);
                    let (mut a_k, mut a_s) = (ActBuf::new(groups, two), ActBuf::new(groups, two));
                    (k.rms_norm_act)(&x, &w, 1e-5, &mut o_k, Some(a_k.out()));
                    (sc.rms_norm_act)(&x, &w, 1e-5, &mut o_s, Some(a_s.out()));
                    assert!(bits_eq(&o_k, &o_s), "{:?} norm {len}", k.isa);
                    assert!(
                        row_eq(a_k.row(), a_s.row()) && a_k.lo == a_s.lo,
                        "{:?}",
                        k.isa
                    );
                    let want = quantize_bits(sc, &o_s, groups, bits);
                    assert!(row_eq(a_s.row(), want.row(0)) && a_s.lo == want.row(0).lo);
                    let mut o_plain = vec![0f32; len];
                    (k.rms_norm_act)(&x, &w, 1e-5, &mut o_plain, None);
                    assert!(bits_eq(&o_plain, &o_s), "{:?} unquantized norm", k.isa);
                    // against the textbook RMSNorm (sequential Σx²)
                    let mut nn_out = vec![0f32; len];
                    qstream_core::nn::rms_norm(&mut nn_out, &x, &w, 1e-5);
                    for (a, b) in o_s.iter().zip(&nn_out) {
                        assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-3), "{a} vs {b}");
                    }
                    // SiLU · up
                    let (mut g_k, mut g_s) = (gate.clone(), gate.clone());
                    let (mut a_k, mut a_s) = (ActBuf::new(groups, two), ActBuf::new(groups, two));
                    (k.silu_mul_act)(&mut g_k, &up, Some(a_k.out()));
                    (sc.silu_mul_act)(&mut g_s, &up, Some(a_s.out()));
                    assert!(bits_eq(&g_k, &g_s), "{:?} silu {len}", k.isa);
                    assert!(
                        row_eq(a_k.row(), a_s.row()) && a_k.lo == a_s.lo,
                        "{:?}",
                        k.isa
                    );
                    let want = quantize_bits(sc, &g_s, groups, bits);
                    assert!(row_eq(a_s.row(), want.row(0)) && a_s.lo == want.row(0).lo);
                    let mut g_plain = gate.clone();
                    (k.silu_mul_act)(&mut g_plain, &up, None);
                    assert!(bits_eq(&g_plain, &g_s), "{:?} unquantized silu", k.isa);
                    for ((a, g), u) in g_s.iter().zip(&gate).zip(&up) {
                        let b = qstream_core::nn::silu(*g) * u;
                        assert!((a - b).abs() <= 1e-6 * b.abs() + 1e-30, "{g}: {a} vs {b}");
                    }
                }
            }
        }
    }
}

/// `exp_approx` and `silu_approx` against the libm-based `f32::exp` / `nn::silu` over
/// their whole useful range: the stated bounds (2·10⁻⁷ and 4·10⁻⁷ relative).
#[test]
fn exp_and_silu_approx_bounds() {
    let (mut worst_e, mut worst_s) = (0f64, 0f64);
    let mut t = -87.0f32;
    while t < 88.0 {
        let e = scalar::exp_approx(t) as f64;
        let want = (t as f64).exp();
        worst_e = worst_e.max((e - want).abs() / want);
        let s = scalar::silu_approx(t) as f64;
        let want = t as f64 / (1.0 + (-(t as f64)).exp());
        if want != 0.0 {
            worst_s = worst_s.max((s - want).abs() / want.abs());
        }
        t += 0.000_37;
    }
    eprintln!("exp_approx max rel err {worst_e:e}, silu_approx {worst_s:e}");
    assert!(worst_e < 2e-7, "{worst_e}");
    assert!(worst_s < 4e-7, "{worst_s}");
    // saturation and special values
    assert_eq!(scalar::silu_approx(0.0), 0.0);
    assert!(scalar::silu_approx(-200.0).abs() < 1e-30);
    assert_eq!(scalar::silu_approx(200.0), 200.0);
    assert!(scalar::silu_approx(f32::NAN).is_nan());
}

/// `matmul_multi_prep` gives exactly what computing the rows and then `matmul_multi`
/// gives, for integer (fused path), float (computed, then passed on) and rotated parts,
/// at the process's activation precision (not switched here: other tests run matmuls
/// concurrently; `fused_producers_are_bit_identical` covers both); non-SiLU gates, the
/// LayerNorm and the plain MLP activation compute their rows with `nn` and quantize them in
/// the same call.
#[test]
fn matmul_multi_prep_equals_prep_then_matmul() {
    use qstream_core::kernels::Prep;
    use qstream_core::model::config::Activation;
    let mut rng = Rng(77);
    let (cols, n) = (96, 5);
    let x: Vec<f32> = (0..n * cols).map(|_| rng.f() * 4.0).collect();
    let nw: Vec<f32> = (0..cols).map(|_| 1.0 + rng.f()).collect();
    let up: Vec<f32> = (0..n * cols).map(|_| rng.f() * 2.0).collect();
    let p = QuantParams::default();
    let mk = |qt: QuantType, rows: usize, block: usize, rng: &mut Rng| {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f()).collect();
        let p = QuantParams {
            block_size: block,
            ..p
        };
        if qt == QuantType::F32 {
            return Tensor::from_f32("f", vec![rows, cols], &w);
        }
        let b = quant::quantize(qt, &w, rows, cols, &p).unwrap();
        Tensor::from_bytes("q", qt, block, vec![rows, cols], &b)
    };
    let q4 = mk(QuantType::Q4, 33, 64, &mut rng); // 96 cols in blocks of 64: padded groups
    let q8 = mk(QuantType::Q8, 17, 32, &mut rng);
    let f = mk(QuantType::F32, 9, 1, &mut rng);
    let rot = mk(QuantType::F32, 9, 1, &mut rng).with_rotation(32);
    let bits = kernels::act_bits();
    {
        for ws in [vec![&q4, &q8], vec![&f], vec![&q8, &f], vec![&rot]] {
            for prep in [
                Prep::RmsNorm {
                    x: &x,
                    w: &nw,
                    eps: 1e-6,
                },
                Prep::Gated {
                    up: &up,
                    act: Activation::Silu,
                },
                Prep::Gated {
                    up: &up,
                    act: Activation::GeluTanh,
                },
                Prep::LayerNorm {
                    x: &x,
                    w: &nw,
                    b: Some(&up[..cols]),
                    eps: 1e-5,
                },
                Prep::LayerNorm {
                    x: &x,
                    w: &nw,
                    b: None,
                    eps: 1e-5,
                },
                Prep::Act {
                    b: Some(&nw),
                    act: Activation::GeluTanh,
                },
                Prep::Act {
                    b: None,
                    act: Activation::Gelu,
                },
            ] {
                let mut want_x = x.clone();
                let k = kernels::kernels();
                for t in 0..n {
                    let r = &mut want_x[t * cols..(t + 1) * cols];
                    match prep {
                        Prep::RmsNorm { x, w, eps } => {
                            (k.rms_norm_act)(&x[t * cols..(t + 1) * cols], w, eps, r, None)
                        }
                        Prep::Gated {
                            up,
                            act: Activation::Silu,
                        } => (k.silu_mul_act)(r, &up[t * cols..(t + 1) * cols], None),
                        Prep::Gated { up, act } => {
                            qstream_core::nn::gated_act(r, &up[t * cols..(t + 1) * cols], act)
                        }
                        Prep::LayerNorm { x, w, b, eps } => {
                            qstream_core::nn::layer_norm(r, &x[t * cols..(t + 1) * cols], w, b, eps)
                        }
                        Prep::Act { b, act } => {
                            if let Some(b) = b {
                                qstream_core::nn::add_inplace(r, b);
                            }
                            qstream_core::nn::activate(r, act)
                        }
                    }
                }
                let mut want: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; n * w.rows()]).collect();
                {
                    let mut o: Vec<&mut [f32]> = want.iter_mut().map(|v| &mut v[..]).collect();
                    kernels::matmul_multi(&ws, &mut o, &want_x, n);
                }
                let mut got: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; n * w.rows()]).collect();
                let mut xs = x.clone();
                {
                    let mut o: Vec<&mut [f32]> = got.iter_mut().map(|v| &mut v[..]).collect();
                    kernels::matmul_multi_prep(&ws, &mut o, &mut xs, n, prep);
                }
                assert!(bits_eq(&xs, &want_x), "{bits:?}");
                for (g, w) in got.iter().zip(&want) {
                    assert!(bits_eq(g, w), "{bits:?}");
                }
            }
        }
    }
}

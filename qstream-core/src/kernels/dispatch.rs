//! Run-time kernel selection.
//!
//! A [`KernelSet`] is a table of function pointers for one instruction-set level
//! ([`Isa`]). [`kernels`] picks the best level the CPU supports once per process;
//! the environment variable `QSTREAM_ISA=scalar|avx2|avx512|neon|neondot` forces a level (a level
//! the CPU lacks falls back to the best available one, never to an illegal instruction).
//! [`kernel_set`] hands out the table of any supported level, which the tests use to run
//! every SIMD kernel against the scalar reference.
//!
//! `QSTREAM_EXACT=1` makes [`exact`] true: the matmul entry points then use the exact f32
//! reference path (`quant::dot_row_ref`) for every weight type.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use super::scalar;

/// Instruction-set level of a [`KernelSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust: the tested reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) + VNNI on top of [`Isa::Avx2`].
    Avx512,
    /// AArch64 NEON.
    Neon,
    /// AArch64 NEON with the dot-product extension (`sdot`).
    NeonDot,
}

impl Isa {
    /// All levels, lowest first.
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon, Isa::NeonDot];

    /// Lowercase name as accepted by `QSTREAM_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::NeonDot => "neondot",
        }
    }

    /// Parse a name as printed by [`Isa::name`].
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.iter().copied().find(|i| i.name() == s)
    }

    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.supported()
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => {
                Isa::Neon.supported() && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// One activation row quantized in groups of 32, at 8 bits (like ggml's `Q8_1`) or, with a
/// low plane, at about 15 bits ([`ActBits::Sixteen`]):
/// value `32·g + i` ≈ `d[g] · q[32·g + i]` with `q = qs` (8-bit) or `q = 256·qs + lo`
/// (16-bit; `qs` and `lo` both in −127..=127); `isum[g] = Σ_i q[32·g + i]` and
/// `s[g] = d[g] · isum[g]` (the term asymmetric weight types multiply by their minimum).
///
/// Invariant (kernels rely on it for the bounds of their loops, not for memory safety):
/// `qs.len() == 32 · d.len()`, `s.len() == isum.len() == d.len()`; `lo` is empty or as
/// long as `qs` (any other length is ignored: 8-bit).
#[derive(Clone, Copy, Debug)]
pub struct ActRow<'a> {
    /// quantized values (the high plane at 16 bits), `32 · groups`
    pub qs: &'a [i8],
    /// the low plane (16 bits), or empty (8 bits)
    pub lo: &'a [i8],
    /// scale per group
    pub d: &'a [f32],
    /// `d[g] · isum[g]`
    pub s: &'a [f32],
    /// sum of the group's quantized values
    pub isum: &'a [i32],
}

impl ActRow<'_> {
    /// Number of 32-value groups.
    #[inline]
    pub fn groups(&self) -> usize {
        self.d
            .len()
            .min(self.s.len())
            .min(self.isum.len())
            .min(self.qs.len() / 32)
    }

    /// Whether the row carries a low plane (16-bit activation).
    #[inline]
    pub fn has_lo(&self) -> bool {
        !self.lo.is_empty() && self.lo.len() == self.qs.len()
    }

    /// Quantized value `i` (`256·qs + lo` with a low plane).
    #[inline]
    pub fn q(&self, i: usize) -> i32 {
        if self.has_lo() {
            256 * self.qs[i] as i32 + self.lo[i] as i32
        } else {
            self.qs[i] as i32
        }
    }
}

/// `n` activation rows of `groups` groups each, stored back to back (row `t`'s group `g` at
/// index `t·groups + g` of `d`/`s`/`isum`, its values at `32·(t·groups + g)` of `qs`/`lo`):
/// the batch the packed-panel kernels ([`super::gemm`]) read. `lo` is empty at 8 bits.
#[derive(Clone, Copy, Debug)]
pub struct ActBatch<'a> {
    /// quantized values (the high plane at 16 bits)
    pub qs: &'a [i8],
    /// the low plane (16 bits), or empty (8 bits)
    pub lo: &'a [i8],
    /// scale per group
    pub d: &'a [f32],
    /// `d · isum` per group
    pub s: &'a [f32],
    /// sum of each group's quantized values
    pub isum: &'a [i32],
    /// groups per row
    pub groups: usize,
    /// rows (tokens)
    pub n: usize,
}

/// Mutable buffers for [`KernelSet::quantize_act`] (same shapes as [`ActRow`]).
pub struct ActRowMut<'a> {
    /// quantized values, `32 · groups`
    pub qs: &'a mut [i8],
    /// the low plane (`KernelSet::quantize_act16`), or empty
    pub lo: &'a mut [i8],
    /// scale per group
    pub d: &'a mut [f32],
    /// `d[g] · isum[g]`
    pub s: &'a mut [f32],
    /// sum of the group's quantized values
    pub isum: &'a mut [i32],
}

impl ActRowMut<'_> {
    /// Groups the buffers hold (the shortest of them; the low plane counts only when
    /// `two`, the 16-bit quantizers).
    #[inline]
    pub fn groups(&self, two: bool) -> usize {
        let g = self
            .d
            .len()
            .min(self.s.len())
            .min(self.isum.len())
            .min(self.qs.len() / 32);
        if two {
            g.min(self.lo.len() / 32)
        } else {
            g
        }
    }
}

/// RMSNorm of `x` with weight `w` into `out`, quantized into `act` when given
/// ([`KernelSet::rms_norm_act`]).
pub type RmsNormActFn =
    fn(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], act: Option<ActRowMut<'_>>);
/// Dot product of one quantized weight row (`block` values per block) with a q8 activation.
pub type DotQFn = fn(block: usize, row: &[u8], a: ActRow<'_>) -> f32;
/// Dot products of one quantized weight row with four q8 activations (four tokens): each
/// weight group is unpacked once. Result `k` is bit-identical to the same level's single-token
/// kernel on `a[k]`.
pub type DotQ4xFn = fn(block: usize, row: &[u8], a: [ActRow<'_>; 4]) -> [f32; 4];
/// Dot product of one float weight row (raw little-endian bytes) with f32 activations.
pub type DotFFn = fn(row: &[u8], x: &[f32]) -> f32;

/// Function table of one ISA level. Every kernel is total: mismatched lengths limit the
/// work to what both sides hold (callers size buffers correctly; nothing reads out of
/// bounds either way).
pub struct KernelSet {
    /// The level.
    pub isa: Isa,
    /// Quantize `x` (zero-padded to the buffer's groups) to q8 groups of 32.
    pub quantize_act: fn(x: &[f32], out: ActRowMut<'_>),
    /// Quantize `x` to 16-bit groups of 32 (two planes; bit-identical to
    /// `scalar::quantize_act16` at every level).
    pub quantize_act16: fn(x: &[f32], out: ActRowMut<'_>),
    /// RMSNorm fused with activation quantization: `out = w ⊙ x / sqrt(mean(x²) + eps)`
    /// (Σx² in the lane order of `scalar::sum_sq`), then, when `act` is given, `out`
    /// quantized into it exactly as `quantize_act16` (a non-empty `act.lo`) or `quantize_act`
    /// would — in the same pass (bit-identical to `scalar::rms_norm_act` at every level).
    pub rms_norm_act: RmsNormActFn,
    /// `gate = silu(gate) ⊙ up` (SiLU with `scalar::exp_approx`), then, when `act` is given,
    /// `gate` quantized into it as in [`KernelSet::rms_norm_act`] — in the same pass
    /// (bit-identical to `scalar::silu_mul_act` at every level).
    pub silu_mul_act: fn(gate: &mut [f32], up: &[f32], act: Option<ActRowMut<'_>>),
    /// `Q4` (asymmetric) weights × q8 activation.
    pub dot_q4: DotQFn,
    /// `Q4Sym` weights × q8 activation.
    pub dot_q4sym: DotQFn,
    /// `Q8` weights × q8 activation (`block` is ignored: always 32).
    pub dot_q8: DotQFn,
    /// [`KernelSet::dot_q4`] for four activations at once.
    pub dot_q4_x4: DotQ4xFn,
    /// [`KernelSet::dot_q4sym`] for four activations at once.
    pub dot_q4sym_x4: DotQ4xFn,
    /// [`KernelSet::dot_q8`] for four activations at once.
    pub dot_q8_x4: DotQ4xFn,
    /// `Q2` weights × q8 activation.
    pub dot_q2: DotQFn,
    /// [`KernelSet::dot_q2`] for four activations at once.
    pub dot_q2_x4: DotQ4xFn,
    /// `Q3` weights × q8 activation (bit-identical to `scalar::dot_q3` at every level).
    pub dot_q3: DotQFn,
    /// `Mxfp4` weights × q8 activation (`block` is ignored: always 32; bit-identical to
    /// `scalar::dot_mxfp4` at every level).
    pub dot_mxfp4: DotQFn,
    /// F32 weight row × f32.
    pub dot_f32: DotFFn,
    /// F16 weight row × f32.
    pub dot_f16: DotFFn,
    /// BF16 weight row × f32.
    pub dot_bf16: DotFFn,
    /// Plain f32 dot product (attention scores).
    pub dot: fn(a: &[f32], b: &[f32]) -> f32,
    /// `y += a · x`.
    pub axpy: fn(a: f32, x: &[f32], y: &mut [f32]),
    /// Attention scores of one query against consecutive keys (`scalar::dots`).
    pub dots: fn(q: &[f32], keys: &[f32], out: &mut [f32]),
    /// Attention output: weighted sum of consecutive value rows (`scalar::axpys`).
    pub axpys: fn(w: &[f32], vals: &[f32], out: &mut [f32]),
    /// Packed-panel micro-kernel for prompt batches (bit-identical to
    /// [`super::gemm::gemm_ref`]), if the level has one.
    pub gemm: Option<super::gemm::GemmFn>,
    /// The level's [`super::gemm::pack`] (bit-identical panels).
    pub gemm_pack: super::gemm::PackFn,
    /// Largest packed level ([`super::gemm::max_level`]) [`KernelSet::gemm`] takes.
    pub gemm_max_level: u32,
}

static SCALAR: KernelSet = KernelSet {
    isa: Isa::Scalar,
    quantize_act: scalar::quantize_act,
    quantize_act16: scalar::quantize_act16,
    rms_norm_act: scalar::rms_norm_act,
    silu_mul_act: scalar::silu_mul_act,
    dot_q4: scalar::dot_q4,
    dot_q4sym: scalar::dot_q4sym,
    dot_q8: scalar::dot_q8,
    dot_q4_x4: scalar::dot_q4_x4,
    dot_q4sym_x4: scalar::dot_q4sym_x4,
    dot_q8_x4: scalar::dot_q8_x4,
    dot_q2: scalar::dot_q2,
    dot_q2_x4: scalar::dot_q2_x4,
    dot_q3: scalar::dot_q3,
    dot_mxfp4: scalar::dot_mxfp4,
    dot_f32: crate::quant::float::dot_f32_ref,
    dot_f16: crate::quant::float::dot_f16_ref,
    dot_bf16: crate::quant::float::dot_bf16_ref,
    dot: scalar::dot,
    axpy: scalar::axpy,
    dots: scalar::dots,
    axpys: scalar::axpys,
    gemm: None,
    gemm_pack: super::gemm::pack,
    gemm_max_level: 0,
};

/// The kernel table of `isa`, or `None` when this CPU (or build target) cannot run it.
pub fn kernel_set(isa: Isa) -> Option<&'static KernelSet> {
    if !isa.supported() {
        return None;
    }
    match isa {
        Isa::Scalar => Some(&SCALAR),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(&super::x86_avx2::KERNELS),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(&super::x86_avx512::KERNELS),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Some(&super::aarch64_neon::KERNELS),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => Some(&super::aarch64_neon::KERNELS_DOT),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Every level this machine supports, lowest first.
pub fn supported() -> Vec<Isa> {
    Isa::ALL.iter().copied().filter(|i| i.supported()).collect()
}

/// The best supported level.
pub fn best() -> Isa {
    *supported().last().unwrap_or(&Isa::Scalar)
}

/// The process-wide kernel table (chosen once; see the module docs for `QSTREAM_ISA`).
#[inline]
pub fn kernels() -> &'static KernelSet {
    static K: OnceLock<&'static KernelSet> = OnceLock::new();
    K.get_or_init(|| {
        let want = std::env::var("QSTREAM_ISA")
            .ok()
            .and_then(|s| Isa::from_name(s.trim()));
        want.and_then(kernel_set)
            .or_else(|| kernel_set(best()))
            .unwrap_or(&SCALAR)
    })
}

/// Exact-path switch: 0 = off, 1 = on, 2 = not yet read from `QSTREAM_EXACT`.
static EXACT: AtomicU8 = AtomicU8::new(2);

/// Whether the matmul entry points use the exact f32 reference path (`QSTREAM_EXACT=1`, or
/// [`set_exact`]).
#[inline]
pub fn exact() -> bool {
    match EXACT.load(Ordering::Relaxed) {
        0 => false,
        1 => true,
        _ => {
            let on = std::env::var("QSTREAM_EXACT")
                .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
                .unwrap_or(false);
            // a concurrent `set_exact` wins over the environment
            let _ = EXACT.compare_exchange(2, on as u8, Ordering::Relaxed, Ordering::Relaxed);
            EXACT.load(Ordering::Relaxed) == 1
        }
    }
}

/// Turn the exact f32 reference path on or off for the whole process, overriding
/// `QSTREAM_EXACT`. Meant for tests and comparison tools that run both paths in one process;
/// it applies to mat-muls started afterwards (never switch it while another thread computes).
pub fn set_exact(on: bool) {
    EXACT.store(on as u8, Ordering::Relaxed);
}

/// Precision of the activations the integer kernels see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActBits {
    /// One q8 quantization per group of 32 (llama.cpp's `Q8_1`): fastest; next-token argmaxes
    /// agree with the exact path on about 95 % of positions on SmolLM2.
    Eight,
    /// 16-bit groups split into two 8-bit planes (`256·qs + lo`, step `amax/32512`): every
    /// integer dot runs on both planes; agrees with the exact path on about 99.9 %.
    Sixteen,
}

impl ActBits {
    /// 8 or 16.
    pub fn bits(self) -> u32 {
        match self {
            ActBits::Eight => 8,
            ActBits::Sixteen => 16,
        }
    }

    /// Parse `8` or `16`.
    pub fn from_bits(b: u32) -> Option<ActBits> {
        match b {
            8 => Some(ActBits::Eight),
            16 => Some(ActBits::Sixteen),
            _ => None,
        }
    }
}

/// Activation precision: 8 or 16; 0 = not yet read from `QSTREAM_ACT_BITS`.
static ACT_BITS: AtomicU8 = AtomicU8::new(0);

/// The default activation precision.
pub const DEFAULT_ACT_BITS: ActBits = ActBits::Sixteen;

/// The activation precision of the integer kernels: [`set_act_bits`], else
/// `QSTREAM_ACT_BITS=8|16`, else [`DEFAULT_ACT_BITS`].
#[inline]
pub fn act_bits() -> ActBits {
    let v = match ACT_BITS.load(Ordering::Relaxed) {
        0 => {
            let env = std::env::var("QSTREAM_ACT_BITS")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .and_then(ActBits::from_bits)
                .unwrap_or(DEFAULT_ACT_BITS);
            // a concurrent `set_act_bits` wins over the environment
            let _ = ACT_BITS.compare_exchange(
                0,
                env.bits() as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            ACT_BITS.load(Ordering::Relaxed)
        }
        v => v,
    };
    ActBits::from_bits(v as u32).unwrap_or(DEFAULT_ACT_BITS)
}

/// Set the activation precision for the whole process, overriding `QSTREAM_ACT_BITS`; it
/// applies to mat-muls started afterwards (never switch it while another thread computes).
pub fn set_act_bits(bits: ActBits) {
    ACT_BITS.store(bits.bits() as u8, Ordering::Relaxed);
}

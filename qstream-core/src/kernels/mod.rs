//! Matrix-vector kernels over quantized weights.
//!
//! [`matvec`], [`matmul`] and [`matmul_multi`] are the entry points the forward passes use.
//!
//! # Numerics: which path a weight takes
//!
//! * **Quantized weights (`Q2`, `Q3`, `Q4`, `Q4Sym`, `Q8`, `Mxfp4`)**: the activation row is
//!   quantized once per call in groups of 32 (`dispatch::ActRow`), and the dot products run
//!   in the integer domain: `Σ_groups d_w·d_x·Σ q_w·q_x (+ m_w·d_x·Σ q_x)` (MXFP4: `q_w` =
//!   2·E2M1 ∈ −12..=12, `d_w` = half the E8M0 scale). The activation precision
//!   ([`ActBits`]; per call in [`Settings`], which a model or session sets, with process
//!   defaults [`set_act_bits`] or `QSTREAM_ACT_BITS=8|16`):
//!   - **16 bits (default)**: `q_x = 256·hi + lo`, step `amax/32512`, both planes i8, so the
//!     same u8×i8 instructions run twice per group (`256·Σ q_w·hi + Σ q_w·lo`, exact in
//!     i32). On SmolLM2 the next-token argmax agrees with the exact f32 path on 99.9 % of
//!     positions; it costs about a third of the decode speed on the 2-core AMD test machine.
//!   - **8 bits**: `q_x` = one i8 per value, step `amax/127` (ggml's `Q8_1`, what llama.cpp
//!     does): relative error about `0.5/127` per value; argmax agreement 94–96 %.
//!
//!   Tests bound the rounding against `quant::dot_row_ref`. `Q3`/`Mxfp4` give
//!   bit-identical results at every level (`Q2` runs the chunked q4 body: summation order).
//! * **Float weights (`F32`, `F16`, `Bf16`)**: exact f32 activations, SIMD FMA dots (they
//!   differ from `quant::dot_row_ref` only by summation order). The tiny transformers
//!   parity fixtures use f32 weights, so they stay on an exact path.
//! * **Outlier types**: the base type's integer kernel over the dense part, then per row
//!   each FP16 outlier `(c, v)` adds `(v − dense(r, c))·x[c]` with the exact activation `x`
//!   — rows are never dequantized. The `(c, v − dense)` pairs are decoded once per tensor
//!   (`Tensor::outlier_deltas`, 8 bytes per outlier in memory), so a correction is one
//!   multiply-add. With the dense dot's
//!   `dense·x̂[c]` the position contributes `v·x[c] + dense·(x̂[c] − x[c])`: the outlier itself
//!   is exact, and the activation rounding is that of the replaced dense value, as at every
//!   other position (so the tests' bound `Σ |w|·d_x/2` holds). One float term per outlier: no
//!   lookup of the quantized activation.
//! * Exact mode (`Settings::exact`; process default `QSTREAM_EXACT=1`): every dense type
//!   uses the exact scalar reference
//!   `quant::dot_row_ref` (the pre-SIMD path), e.g. for debugging.
//!
//! * **Prompt batches** of at least [`GEMM_MIN_TOKENS`] tokens over dense quantized weights
//!   (and the dense part of outlier types) take the packed-panel path ([`gemm`]) where the
//!   level has a micro-kernel: 16 rows unpacked once into an interleaved layout, then
//!   multiplied with every token of the batch. Same integers per group as the row kernels;
//!   the f32 combine runs group by group per row instead of in group lanes, so results
//!   differ from the single-token kernels by f32 summation order only.
//!
//! * **Fused producers** ([`matmul_multi_prep`]): the forward passes hand the RMSNorm before
//!   a projection and the SiLU(gate)·up before the down projection to the matmul, which
//!   computes each 32-value group in registers, stores the f32 values (float weights,
//!   outlier fixes and activation observers read them) and quantizes the group in the same pass —
//!   the planes and scales are bit-identical to quantizing the stored values afterwards.
//!   RMSNorm sums `x²` in 8 lanes (`scalar::sum_sq`); SiLU uses a Cephes-polynomial `exp`
//!   (`scalar::exp_approx`, within 2·10⁻⁷ relative of `f32::exp`; SiLU within 4·10⁻⁷ of
//!   `nn::silu`), the same bits at every level, whether or not the parts quantize.
//!   The LayerNorm (`Prep::LayerNorm`), the other gated activations (GELU, exact or tanh)
//!   and the plain MLP's `act(up + b)` (`Prep::Act`) compute a row in f32 (`nn`) and
//!   quantize it with the level's quantizer inside the same call: one pass over `d` values
//!   each, next to the `d × rows` of the mat-mul (LayerNorm families pay no second
//!   activation pass).
//!
//! The kernel level (scalar / AVX2 / AVX-512 VNNI / NEON) is chosen once at run time
//! ([`dispatch::kernels`], `QSTREAM_ISA` forces one). For a given level, the value computed
//! for one (row, token) does not depend on the thread count, nor on the batch size within
//! each path (below [`GEMM_MIN_TOKENS`] tokens it equals the single-token value; from it,
//! it is the packed path's value for every batch size).
//!
//! # Threads
//!
//! Rows are split across the current rayon pool: single-token calls use a few large chunks
//! (about two per thread, none below ~64k multiply-adds), prompt batches use blocks of
//! 16 rows (one packed panel), each computed for every token while the rows are in L1
//! (cache blocking).
//! [`matmul_multi`] runs several matrices that share one input (Q/K/V, gate/up) in one
//! parallel region with one activation quantization.
//!
//! Preconditions (checked when a model binds its tensors, so a malformed file is an
//! error there, never a panic here): the tensor's byte length matches its type, block and
//! shape; `x`/`out` lengths match the shape.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::quant::outlier::{OutlierDeltas, OutlierView};
use crate::quant::QuantType;
use crate::tensor::Tensor;

#[cfg(target_arch = "aarch64")]
mod aarch64_neon;
pub mod dispatch;
pub mod gemm;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

pub use dispatch::{
    act_bits, kernel_set, kernels, set_act_bits, ActBatch, ActBits, ActRow, ActRowMut, Isa,
    KernelSet,
};

/// Numerics settings of one mat-mul call, passed down from the model or session that runs
/// it (`engine::ModelParams` / `engine::SessionParams`), so two models in one process can
/// differ. [`Settings::process`] gives the process-wide defaults ([`set_act_bits`] /
/// `QSTREAM_ACT_BITS`, [`dispatch::set_exact`] / `QSTREAM_EXACT`) that the plain entry points
/// ([`matmul`], [`matmul_multi`], [`matmul_multi_prep`]) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// activation precision of the integer kernels
    pub act_bits: ActBits,
    /// every dense type takes the exact f32 reference path (`quant::dot_row_ref`)
    pub exact: bool,
}

impl Settings {
    /// The process-wide defaults (read at each call: a later `set_act_bits` applies).
    #[inline]
    pub fn process() -> Settings {
        Settings {
            act_bits: dispatch::act_bits(),
            exact: dispatch::exact(),
        }
    }

    /// The process defaults with `act_bits` / `exact` overridden where given.
    pub fn with(act_bits: Option<ActBits>, exact: Option<bool>) -> Settings {
        let p = Settings::process();
        Settings {
            act_bits: act_bits.unwrap_or(p.act_bits),
            exact: exact.unwrap_or(p.exact),
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::process()
    }
}

/// Check once (at bind time) that `w`'s bytes can be used by the kernels.
pub fn validate(w: &Tensor) -> crate::Result<()> {
    let (rows, cols) = (w.rows(), w.cols());
    if !w.qtype.valid_block(w.block) {
        return Err(crate::Error::corrupt(format!(
            "tensor {}: block {} invalid for {}",
            w.name, w.block, w.qtype
        )));
    }
    if w.rotation != 0 && !crate::quant::rotate::valid_group(w.rotation, cols) {
        return Err(crate::Error::corrupt(format!(
            "tensor {}: rotation group {} invalid for {cols} columns",
            w.name, w.rotation
        )));
    }
    if w.qtype.is_outlier() {
        OutlierView::parse(w.qtype, w.block, w.bytes(), rows, cols)
            .map_err(|e| crate::Error::corrupt(format!("tensor {}: {e}", w.name)))?;
        return Ok(());
    }
    let need = w.qtype.row_bytes(w.block, cols).checked_mul(rows);
    if need != Some(w.bytes().len()) {
        return Err(crate::Error::corrupt(format!(
            "tensor {} {:?} {} (block {}) needs {:?} bytes, has {}",
            w.name,
            w.shape,
            w.qtype,
            w.block,
            need,
            w.bytes().len()
        )));
    }
    Ok(())
}

/// `out[r] = dot(row r of w, x)`; `x` has `w.cols()` values, `out` `w.rows()`.
pub fn matvec(w: &Tensor, x: &[f32], out: &mut [f32]) {
    matmul(w, x, 1, out)
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: only used by `matmul_multi`, whose tasks write disjoint index sets of live slices.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Send + Sync` wrapper).
    #[inline]
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Activation rows quantized in groups of 32 (see [`ActRow`]), `groups` per row, at 8 bits
/// or (with the low plane) 16 bits.
#[derive(Default)]
pub struct QuantAct {
    qs: Vec<i8>,
    /// the low plane (16 bits; empty at 8 bits)
    lo: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    isum: Vec<i32>,
    /// whether the last `quantize` filled the low plane
    two: bool,
    groups: usize,
    n: usize,
}

impl QuantAct {
    /// An empty buffer (grows on first use, then is reused).
    pub fn new() -> QuantAct {
        QuantAct::default()
    }

    /// Quantize `n` rows of `xs` (`cols` values each) into `groups` groups per row (values
    /// past `cols` are zero) at the precision `bits`, with the kernels of `k` (8 bits) or
    /// `quantize_act16` (16 bits).
    pub fn quantize(
        &mut self,
        k: &KernelSet,
        xs: &[f32],
        n: usize,
        cols: usize,
        groups: usize,
        bits: ActBits,
    ) {
        let two = bits == ActBits::Sixteen;
        self.fill(n, groups, bits, |t, out| {
            let x = &xs[t * cols..(t + 1) * cols];
            if two {
                (k.quantize_act16)(x, out);
            } else {
                (k.quantize_act)(x, out);
            }
        });
    }

    /// Compute the `n` rows of `xs` (`cols` values each) by `prep` and quantize them as
    /// [`QuantAct::quantize`] would, in one pass (the fused kernels of `k`).
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &mut self,
        k: &KernelSet,
        xs: &mut [f32],
        n: usize,
        cols: usize,
        groups: usize,
        bits: ActBits,
        prep: &Prep<'_>,
    ) {
        self.fill(n, groups, bits, |t, out| {
            prep.row(k, t, &mut xs[t * cols..(t + 1) * cols], Some(out))
        });
    }

    /// Size the buffers for `n` rows of `groups` groups at `bits` and hand each row's
    /// buffers to `f(t, row)`.
    fn fill(
        &mut self,
        n: usize,
        groups: usize,
        bits: ActBits,
        mut f: impl FnMut(usize, ActRowMut<'_>),
    ) {
        let g = n * groups;
        if self.d.len() < g {
            self.qs.resize(32 * g, 0);
            self.d.resize(g, 0.0);
            self.s.resize(g, 0.0);
            self.isum.resize(g, 0);
        }
        let two = bits == ActBits::Sixteen;
        if two && self.lo.len() < 32 * g {
            self.lo.resize(32 * g, 0);
        }
        self.groups = groups;
        self.n = n;
        self.two = two;
        for t in 0..n {
            let r = t * groups..(t + 1) * groups;
            let out = ActRowMut {
                qs: &mut self.qs[32 * r.start..32 * r.end],
                lo: if two {
                    &mut self.lo[32 * r.start..32 * r.end]
                } else {
                    &mut []
                },
                d: &mut self.d[r.clone()],
                s: &mut self.s[r.clone()],
                isum: &mut self.isum[r],
            };
            f(t, out);
        }
    }

    /// Row `t` (< the `n` of the last [`QuantAct::quantize`]).
    #[inline]
    pub fn row(&self, t: usize) -> ActRow<'_> {
        let r = t * self.groups..(t + 1) * self.groups;
        ActRow {
            qs: &self.qs[32 * r.start..32 * r.end],
            lo: if self.two {
                &self.lo[32 * r.start..32 * r.end]
            } else {
                &[]
            },
            d: &self.d[r.clone()],
            s: &self.s[r.clone()],
            isum: &self.isum[r],
        }
    }

    /// Every row of the last [`QuantAct::quantize`] as one batch.
    pub fn batch(&self) -> ActBatch<'_> {
        let g = self.n * self.groups;
        ActBatch {
            qs: &self.qs[..32 * g],
            lo: if self.two { &self.lo[..32 * g] } else { &[] },
            d: &self.d[..g],
            s: &self.s[..g],
            isum: &self.isum[..g],
            groups: self.groups,
            n: self.n,
        }
    }
}

thread_local! {
    /// The calling thread's activation buffer (sized by the largest call, then reused).
    static ACT: RefCell<QuantAct> = RefCell::new(QuantAct::new());
    /// The calling thread's rotated-activation buffer (tensors stored rotated).
    static ROT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A worker's packed panel, its `n × PANEL` results and one row's outlier corrections
    /// for every token (prompt batches; grow to the largest call, then are reused).
    static PANEL_BUF: RefCell<(gemm::Panel, Vec<f32>, Vec<f32>)> = RefCell::new(Default::default());
    /// The calling thread's transposed activations (outlier corrections of prompt batches).
    static XT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// How one weight's rows are dotted.
#[derive(Clone, Copy)]
enum Kind {
    /// Integer kernel on the q8 activation, with its four-token variant where the level has
    /// one.
    Q(dispatch::DotQFn, Option<dispatch::DotQ4xFn>),
    /// Float kernel on the f32 activation.
    F(dispatch::DotFFn),
    /// `quant::dot_row_ref` (exact mode).
    Ref,
}

/// The kernel of a dense type (outlier types: of their base type's dense part).
fn kind(k: &KernelSet, qt: QuantType, exact: bool) -> Kind {
    if exact {
        return Kind::Ref;
    }
    match qt {
        QuantType::Q2 | QuantType::Q2Outlier => Kind::Q(k.dot_q2, Some(k.dot_q2_x4)),
        QuantType::Q3 | QuantType::Q3Outlier => Kind::Q(k.dot_q3, None),
        QuantType::Q4 | QuantType::Q4Outlier => Kind::Q(k.dot_q4, Some(k.dot_q4_x4)),
        QuantType::Q4Sym => Kind::Q(k.dot_q4sym, Some(k.dot_q4sym_x4)),
        QuantType::Q8 => Kind::Q(k.dot_q8, Some(k.dot_q8_x4)),
        QuantType::Mxfp4 => Kind::Q(k.dot_mxfp4, None),
        QuantType::F32 => Kind::F(k.dot_f32),
        QuantType::F16 => Kind::F(k.dot_f16),
        QuantType::Bf16 => Kind::F(k.dot_bf16),
    }
}

/// One matrix of a [`matmul_multi`] call.
#[derive(Clone, Copy)]
struct Part<'a> {
    /// the (dense base) type of `bytes`
    qt: QuantType,
    block: usize,
    kind: Kind,
    /// the dense rows (`rb` bytes each)
    bytes: &'a [u8],
    rb: usize,
    rows: usize,
    out: OutPtr,
    /// outlier types: the outliers added to each dense row's dot
    outl: Option<&'a OutlierDeltas>,
}

/// Most matrices one [`matmul_multi`] call takes.
pub const MAX_PARTS: usize = 4;

/// Rows per cache block for prompt batches.
const ROW_BLOCK: usize = 16;
/// Least multiply-adds per task of a single-token call.
const MIN_TASK_WORK: usize = 64 * 1024;
/// Tasks per thread of a single-token call.
const TASKS_PER_THREAD: usize = 2;

/// Batched `out[t·rows + r] = dot(row r of w, xs[t·cols..])` for `t < n`:
/// `xs` is `n × cols`, `out` is `n × rows`.
pub fn matmul(w: &Tensor, xs: &[f32], n: usize, out: &mut [f32]) {
    matmul_multi(&[w], &mut [out], xs, n)
}

/// [`matmul`] with explicit [`Settings`].
pub fn matmul_in(set: &Settings, w: &Tensor, xs: &[f32], n: usize, out: &mut [f32]) {
    matmul_multi_in(set, &[w], &mut [out], xs, n)
}

/// [`matmul`] for several matrices with the same `cols` and the same input `xs`
/// (`ws.len() ≤ MAX_PARTS`; `outs[i]` is `n × ws[i].rows()`), in one parallel region
/// with one activation quantization.
pub fn matmul_multi(ws: &[&Tensor], outs: &mut [&mut [f32]], xs: &[f32], n: usize) {
    matmul_multi_in(&Settings::process(), ws, outs, xs, n)
}

/// [`matmul_multi`] with explicit [`Settings`].
pub fn matmul_multi_in(
    set: &Settings,
    ws: &[&Tensor],
    outs: &mut [&mut [f32]],
    xs: &[f32],
    n: usize,
) {
    assert!(
        ws.len() == outs.len() && ws.len() <= MAX_PARTS,
        "matmul_multi: parts"
    );
    if n == 0 || ws.is_empty() {
        return;
    }
    let cols = ws[0].cols();
    assert_eq!(xs.len(), n * cols, "matmul {}: input length", ws[0].name);
    for (w, o) in ws.iter().zip(outs.iter()) {
        assert_eq!(w.cols(), cols, "matmul {}: cols", w.name);
        assert_eq!(o.len(), n * w.rows(), "matmul {}: output length", w.name);
    }
    let g = ws[0].rotation;
    if ws.iter().any(|w| w.rotation != g) {
        // parts rotated differently (not written by the converter, but legal): one by one
        for (w, o) in ws.iter().zip(outs.iter_mut()) {
            matmul_multi_in(set, &[*w], &mut [&mut **o], xs, n);
        }
        return;
    }
    if g != 0 {
        // Stored rows are R·w: rotate the input once for all parts ((R·w)·(R·x) = w·x).
        let run = |xr: &mut Vec<f32>, outs: &mut [&mut [f32]]| {
            xr.resize(xs.len(), 0.0);
            crate::quant::rotate::rotate_rows(xs, cols, g, xr);
            matmul_parts(set, ws, outs, xr, n, cols, None);
        };
        ROT.with(|cell| match cell.try_borrow_mut() {
            Ok(mut xr) => run(&mut xr, outs),
            // re-entered on this thread: a private buffer
            Err(_) => run(&mut Vec::new(), outs),
        });
        return;
    }
    matmul_parts(set, ws, outs, xs, n, cols, None);
}

/// How [`matmul_multi_prep`] computes its input rows (each `cols` values) in place.
#[derive(Clone, Copy)]
pub enum Prep<'a> {
    /// RMSNorm: row `t` = `w ⊙ x_t / sqrt(mean(x_t²) + eps)` for row `t` of `x` (`n × cols`),
    /// by [`KernelSet::rms_norm_act`].
    RmsNorm {
        /// the input rows
        x: &'a [f32],
        /// the norm's weight (`cols`)
        w: &'a [f32],
        /// added to the mean square
        eps: f32,
    },
    /// LayerNorm: row `t` = `w ⊙ (x_t − mean) / sqrt(var + eps) + b` (`nn::layer_norm`),
    /// then quantized by the level's `quantize_act` / `quantize_act16` in the same call.
    LayerNorm {
        /// the input rows
        x: &'a [f32],
        /// the norm's weight (`cols`)
        w: &'a [f32],
        /// the norm's bias (`cols`), if any
        b: Option<&'a [f32]>,
        /// added to the variance
        eps: f32,
    },
    /// Gated MLP: row `t` (holding the gate) = `act(gate) ⊙ up_t` for row `t` of `up`
    /// (SiLU by [`KernelSet::silu_mul_act`], other activations by `nn::gated_act`, then
    /// quantized in the same call).
    Gated {
        /// the up projection (`n × cols`)
        up: &'a [f32],
        /// the activation
        act: crate::model::config::Activation,
    },
    /// Plain MLP: row `t` (holding the up projection) = `act(row + b)` in place
    /// (`nn::activate`), then quantized in the same call.
    Act {
        /// the up projection's bias (`cols`), if any
        b: Option<&'a [f32]>,
        /// the activation
        act: crate::model::config::Activation,
    },
}

impl Prep<'_> {
    /// Compute row `t` into `row` and, when given, quantize it into `act` in the same pass.
    fn row(&self, k: &KernelSet, t: usize, row: &mut [f32], act: Option<ActRowMut<'_>>) {
        use crate::model::config::Activation;
        let cols = row.len();
        let span = t * cols..(t + 1) * cols;
        match *self {
            Prep::RmsNorm { x, w, eps } => (k.rms_norm_act)(&x[span], w, eps, row, act),
            Prep::Gated {
                up,
                act: Activation::Silu,
            } => (k.silu_mul_act)(row, &up[span], act),
            Prep::Gated { up, act: a } => {
                crate::nn::gated_act(row, &up[span], a);
                quantize_any(k, row, act);
            }
            Prep::LayerNorm { x, w, b, eps } => {
                crate::nn::layer_norm(row, &x[span], w, b, eps);
                quantize_any(k, row, act);
            }
            Prep::Act { b, act: a } => {
                if let Some(b) = b {
                    crate::nn::add_inplace(row, b);
                }
                crate::nn::activate(row, a);
                quantize_any(k, row, act);
            }
        }
    }
}

/// Quantize `row` into `act` (when given) as `quantize_act16` (non-empty `act.lo`) or
/// `quantize_act` of level `k`.
#[inline]
fn quantize_any(k: &KernelSet, row: &[f32], act: Option<ActRowMut<'_>>) {
    if let Some(a) = act {
        if a.lo.is_empty() {
            (k.quantize_act)(row, a)
        } else {
            (k.quantize_act16)(row, a)
        }
    }
}

/// [`matmul_multi`] on inputs computed by `prep` into `xs` (`n × cols`): where the parts
/// quantize their activations (integer kernels, no rotation), the rows
/// are computed and quantized in one pass; otherwise computed, then passed on. `xs` holds
/// the computed rows afterwards either way (the same values).
pub fn matmul_multi_prep(
    ws: &[&Tensor],
    outs: &mut [&mut [f32]],
    xs: &mut [f32],
    n: usize,
    prep: Prep<'_>,
) {
    matmul_multi_prep_in(&Settings::process(), ws, outs, xs, n, prep)
}

/// [`matmul_multi_prep`] with explicit [`Settings`].
pub fn matmul_multi_prep_in(
    set: &Settings,
    ws: &[&Tensor],
    outs: &mut [&mut [f32]],
    xs: &mut [f32],
    n: usize,
    prep: Prep<'_>,
) {
    let k = kernels();
    let cols = ws.first().map_or(0, |w| w.cols());
    let fusable = cols > 0 && xs.len() == n * cols && ws.iter().all(|w| w.rotation == 0);
    if fusable && n > 0 {
        if let Some(groups) = act_groups(k, ws, cols, set.exact) {
            assert!(
                ws.len() == outs.len() && ws.len() <= MAX_PARTS,
                "matmul_multi: parts"
            );
            for (w, o) in ws.iter().zip(outs.iter()) {
                assert_eq!(w.cols(), cols, "matmul {}: cols", w.name);
                assert_eq!(o.len(), n * w.rows(), "matmul {}: output length", w.name);
            }
            let bits = set.act_bits;
            let mut run = |act: &mut QuantAct, outs: &mut [&mut [f32]]| {
                act.prepare(k, xs, n, cols, groups, bits, &prep);
                matmul_parts(set, ws, outs, xs, n, cols, Some(act));
            };
            ACT.with(|cell| match cell.try_borrow_mut() {
                Ok(mut act) => run(&mut act, outs),
                // re-entered on this thread: a private buffer
                Err(_) => run(&mut QuantAct::new(), outs),
            });
            return;
        }
    }
    if cols > 0 {
        for (t, row) in xs.chunks_exact_mut(cols).take(n).enumerate() {
            prep.row(k, t, row, None);
        }
    }
    matmul_multi_in(set, ws, outs, xs, n);
}

/// The activation groups per row the parts' integer kernels read (`None` when no part has
/// one: float weights, exact mode).
fn act_groups(k: &KernelSet, ws: &[&Tensor], cols: usize, exact: bool) -> Option<usize> {
    let mut groups = None;
    for w in ws {
        let qt = if w.qtype.is_outlier() {
            w.qtype.base()
        } else {
            w.qtype
        };
        if let Kind::Q(..) = kind(k, qt, exact) {
            let g = cols.div_ceil(w.block) * w.block / 32;
            groups = Some(groups.map_or(g, |h: usize| h.max(g)));
        }
    }
    groups
}

/// `matmul_multi` after the shape checks (`ready`: the activation, already quantized by
/// [`matmul_multi_prep`] for the groups these parts read).
fn matmul_parts(
    set: &Settings,
    ws: &[&Tensor],
    outs: &mut [&mut [f32]],
    xs: &[f32],
    n: usize,
    cols: usize,
    ready: Option<&QuantAct>,
) {
    let k = kernels();
    let empty = Part {
        qt: QuantType::F32,
        block: 1,
        kind: Kind::Ref,
        bytes: &[],
        rb: 0,
        rows: 0,
        out: OutPtr(std::ptr::null_mut()),
        outl: None,
    };
    // Outlier tensors without a usable cached table (`Tensor::outlier_deltas`: fields changed
    // after its first use, or bytes that do not parse): decoded for this call (or the panic).
    let owned: [Option<OutlierDeltas>; MAX_PARTS] = std::array::from_fn(|i| {
        let w = ws
            .get(i)
            .filter(|w| w.qtype.is_outlier() && w.outlier_deltas().is_none())?;
        match OutlierView::parse(w.qtype, w.block, w.bytes(), w.rows(), cols) {
            Ok(v) => Some(v.deltas()),
            Err(e) => panic!("matmul {}: {e}", w.name),
        }
    });
    let mut parts = [empty; MAX_PARTS];
    let mut groups = 0;
    let mut total_rows = 0;
    for (i, (w, o)) in ws.iter().zip(outs.iter_mut()).enumerate() {
        let rows = w.rows();
        let (qt, bytes, outl) = if w.qtype.is_outlier() {
            // Sizes only: the outliers themselves were validated when the table was built.
            let deltas = w.outlier_deltas().or(owned[i].as_ref());
            match OutlierView::parse_sizes(w.qtype, w.block, w.bytes(), rows, cols) {
                Ok(v) => (w.qtype.base(), v.dense(), deltas),
                Err(e) => panic!("matmul {}: {e}", w.name),
            }
        } else {
            (w.qtype, w.bytes(), None)
        };
        let rb = qt.row_bytes(w.block, cols);
        assert!(bytes.len() >= rb * rows, "matmul {}: tensor bytes", w.name);
        let kind = kind(k, qt, set.exact);
        if let Kind::Q(..) = kind {
            groups = groups.max(cols.div_ceil(w.block) * w.block / 32);
        }
        parts[i] = Part {
            qt,
            block: w.block,
            kind,
            bytes,
            rb,
            rows,
            out: OutPtr(o.as_mut_ptr()),
            outl,
        };
        total_rows += rows;
    }
    let parts = &parts[..ws.len()];
    if total_rows == 0 {
        return;
    }
    // The packed path's outlier corrections read each outlier column for every token: from
    // the activations transposed once per call (`cols × n`), not strided through `xs`.
    let needs_xt = parts
        .iter()
        .any(|p| p.outl.is_some() && matches!(p.kind, Kind::Q(..)) && gemm_for(p.qt, n).is_some());
    let run = |act: &QuantAct| {
        if !needs_xt {
            return run_parts(parts, act, xs, &[], cols, n, total_rows);
        }
        let go = |xt: &mut Vec<f32>| {
            xt.resize(n * cols, 0.0);
            // eight tokens at a time: eight read streams, runs of eight values written
            for t0 in (0..n).step_by(8) {
                let te = (t0 + 8).min(n);
                for c in 0..cols {
                    for t in t0..te {
                        xt[c * n + t] = xs[t * cols + c];
                    }
                }
            }
            run_parts(parts, act, xs, xt, cols, n, total_rows)
        };
        XT.with(|cell| match cell.try_borrow_mut() {
            Ok(mut xt) => go(&mut xt),
            // re-entered on this thread: a private buffer
            Err(_) => go(&mut Vec::new()),
        })
    };
    if let Some(act) = ready {
        debug_assert!(act.groups == groups && act.n == n);
        run(act);
        return;
    }
    if groups == 0 {
        run(&QuantAct::new());
        return;
    }
    ACT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut act) => {
            act.quantize(k, xs, n, cols, groups, set.act_bits);
            run(&act);
        }
        Err(_) => {
            // Re-entered on this thread (rayon ran another forward pass here while this
            // one waits): use a private buffer.
            let mut act = QuantAct::new();
            act.quantize(k, xs, n, cols, groups, set.act_bits);
            run(&act);
        }
    });
}

/// Split the rows of `parts` (concatenated) across the pool and compute them.
fn run_parts(
    parts: &[Part<'_>],
    act: &QuantAct,
    xs: &[f32],
    xt: &[f32],
    cols: usize,
    n: usize,
    total_rows: usize,
) {
    run_parts_on(
        rayon::current_num_threads().max(1),
        parts,
        act,
        xs,
        xt,
        cols,
        n,
        total_rows,
    )
}

#[allow(clippy::too_many_arguments)]
fn run_parts_on(
    threads: usize,
    parts: &[Part<'_>],
    act: &QuantAct,
    xs: &[f32],
    xt: &[f32],
    cols: usize,
    n: usize,
    total_rows: usize,
) {
    let chunk = if n == 1 {
        let work = total_rows * cols;
        let tasks = (work / MIN_TASK_WORK).clamp(1, threads * TASKS_PER_THREAD);
        total_rows.div_ceil(tasks)
    } else {
        ROW_BLOCK
    };
    let n_chunks = total_rows.div_ceil(chunk);
    let task = |c: usize| {
        let (g0, g1) = (c * chunk, ((c + 1) * chunk).min(total_rows));
        let mut base = 0;
        for p in parts {
            let (lo, hi) = (g0.max(base), g1.min(base + p.rows));
            if lo < hi {
                rows_of(p, act, xs, xt, cols, n, lo - base, hi - base);
            }
            base += p.rows;
        }
    };
    if n_chunks == 1 {
        task(0)
    } else {
        (0..n_chunks).into_par_iter().for_each(task)
    }
}

/// Rows `r0..r1` of one part for all `n` tokens.
/// `xt`: `xs` transposed (`cols × n`) where the packed path corrects outliers, else empty.
#[allow(clippy::too_many_arguments)]
fn rows_of(
    p: &Part<'_>,
    act: &QuantAct,
    xs: &[f32],
    xt: &[f32],
    cols: usize,
    n: usize,
    r0: usize,
    r1: usize,
) {
    let rows = p.rows;
    let out = p.out;
    let write = move |t: usize, r: usize, v: f32| {
        debug_assert!(t < n && r < rows);
        // SAFETY: `t < n`, `r < rows`, so the index is inside this part's output (length
        // n·rows, asserted by `matmul_multi`); each (t, r) is written by exactly one task
        // since tasks own disjoint row ranges; the output is borrowed mutably for the call.
        unsafe { *out.get().add(t * rows + r) = v };
    };
    let row = |r: usize| &p.bytes[r * p.rb..(r + 1) * p.rb];
    if let (Kind::Q(..), Some(gf)) = (p.kind, gemm_for(p.qt, n)) {
        // Prompt batch: packed panels of PANEL rows, every token per panel.
        return PANEL_BUF.with(|cell| {
            let (panel, buf, fix) = &mut *cell.borrow_mut();
            buf.resize(n * gemm::PANEL, 0.0);
            let batch = act.batch();
            for rb in (r0..r1).step_by(gemm::PANEL) {
                let re = (rb + gemm::PANEL).min(r1);
                (kernels().gemm_pack)(p.qt, p.block, p.bytes, p.rb, rb, re - rb, panel);
                gf(panel, &batch, buf);
                if let Some(o) = p.outl {
                    for (i, r) in (rb..re).enumerate() {
                        let d = o.row(r);
                        if d.is_empty() {
                            continue;
                        }
                        if xt.len() == n * cols {
                            // Σ_outliers delta·x[t][c] for every t at once (contiguous in xt),
                            // then added to the row's results
                            fix.clear();
                            fix.resize(n, 0.0);
                            for &(c, delta) in d {
                                if let Some(xc) = xt.get(c as usize * n..(c as usize + 1) * n) {
                                    for (f, v) in fix.iter_mut().zip(xc) {
                                        *f += delta * v;
                                    }
                                }
                            }
                            for (t, f) in fix.iter().enumerate() {
                                buf[t * gemm::PANEL + i] += f;
                            }
                        } else {
                            for t in 0..n {
                                let x = &xs[t * cols..(t + 1) * cols];
                                buf[t * gemm::PANEL + i] += outlier_fix(d, x);
                            }
                        }
                    }
                }
                let nr = re - rb;
                for t in 0..n {
                    let v = &buf[t * gemm::PANEL..t * gemm::PANEL + nr];
                    // SAFETY: t < n and rb + nr = re ≤ rows, so the run is inside this part's
                    // output (length n·rows, asserted by `matmul_multi`); this task owns rows
                    // rb..re (disjoint row ranges), and `v` is a separate buffer.
                    unsafe {
                        let dst = out.get().add(t * rows + rb);
                        if nr == gemm::PANEL {
                            // a fixed-size copy: inlined, not a memcpy call per token
                            let src = v.as_ptr() as *const [f32; gemm::PANEL];
                            (dst as *mut [f32; gemm::PANEL]).write_unaligned(src.read_unaligned());
                        } else {
                            std::ptr::copy_nonoverlapping(v.as_ptr(), dst, nr);
                        }
                    };
                }
            }
        });
    }
    match (p.kind, &p.outl) {
        (Kind::Q(f, Some(f4)), None) if n >= 4 => {
            // Tokens in groups of 4 (each weight group unpacked once per 4 tokens; results
            // bit-identical to `f`), the rest one by one; rows in blocks of ROW_BLOCK so a
            // block's weights stay in L1 across the token groups.
            let n4 = n - n % 4;
            for rb in (r0..r1).step_by(ROW_BLOCK) {
                let re = (rb + ROW_BLOCK).min(r1);
                for t in (0..n4).step_by(4) {
                    let a = [act.row(t), act.row(t + 1), act.row(t + 2), act.row(t + 3)];
                    for r in rb..re {
                        let v = f4(p.block, row(r), a);
                        for (k, v) in v.into_iter().enumerate() {
                            write(t + k, r, v);
                        }
                    }
                }
                for t in n4..n {
                    let a = act.row(t);
                    for r in rb..re {
                        write(t, r, f(p.block, row(r), a));
                    }
                }
            }
        }
        (Kind::Q(f, _), None) => {
            for t in 0..n {
                let a = act.row(t);
                for r in r0..r1 {
                    write(t, r, f(p.block, row(r), a));
                }
            }
        }
        (Kind::Q(f, _), Some(o)) if n == 1 => {
            // One token (decoding): each row's dense dot plus its outliers' terms.
            let a = act.row(0);
            let x = &xs[..cols];
            for r in r0..r1 {
                write(0, r, f(p.block, row(r), a) + outlier_fix(o.row(r), x));
            }
        }
        (Kind::Q(f, f4), Some(o)) => {
            // Blocks of ROW_BLOCK rows, each computed for every token while in L1; tokens in
            // groups of 4 where the type has a four-token kernel (bit-identical to `f`), the
            // rest one by one; the same outlier terms as for one token.
            let fix = |t: usize, r: usize| outlier_fix(o.row(r), &xs[t * cols..(t + 1) * cols]);
            let n4 = if f4.is_some() { n - n % 4 } else { 0 };
            for rb in (r0..r1).step_by(ROW_BLOCK) {
                let re = (rb + ROW_BLOCK).min(r1);
                if let Some(f4) = f4 {
                    for t in (0..n4).step_by(4) {
                        let a = [act.row(t), act.row(t + 1), act.row(t + 2), act.row(t + 3)];
                        for r in rb..re {
                            let v = f4(p.block, row(r), a);
                            for (k, v) in v.into_iter().enumerate() {
                                write(t + k, r, v + fix(t + k, r));
                            }
                        }
                    }
                }
                for t in n4..n {
                    let a = act.row(t);
                    for r in rb..re {
                        write(t, r, f(p.block, row(r), a) + fix(t, r));
                    }
                }
            }
        }
        (Kind::F(f), _) => {
            for t in 0..n {
                let x = &xs[t * cols..(t + 1) * cols];
                for r in r0..r1 {
                    write(t, r, f(row(r), x));
                }
            }
        }
        (Kind::Ref, None) => {
            for t in 0..n {
                let x = &xs[t * cols..(t + 1) * cols];
                for r in r0..r1 {
                    write(t, r, crate::quant::dot_row_ref(p.qt, p.block, row(r), x));
                }
            }
        }
        (Kind::Ref, Some(o)) => {
            for t in 0..n {
                let x = &xs[t * cols..(t + 1) * cols];
                for r in r0..r1 {
                    // `OutlierView::dot_row_ref`'s sum, in its order
                    let mut acc = crate::quant::dot_row_ref(p.qt, p.block, row(r), x);
                    for &(c, delta) in o.row(r) {
                        if let Some(xv) = x.get(c as usize) {
                            acc += delta * xv;
                        }
                    }
                    write(t, r, acc);
                }
            }
        }
    }
}

/// Fewest tokens a call needs to take the packed-panel path ([`gemm`]): with four, packing
/// is about 40 % of the path's time and it still runs about twice as fast as the four-token
/// row kernels (`gemmbench` vs `kbench`, AVX-512, 1536×576 q4); with fewer the single-token
/// kernels are the better trade.
pub const GEMM_MIN_TOKENS: usize = 4;

/// The packed-panel micro-kernel for `n` tokens of dense type `qt`, when the level has one
/// that takes the type and the batch is large enough.
fn gemm_for(qt: QuantType, n: usize) -> Option<gemm::GemmFn> {
    let k = kernels();
    match k.gemm {
        Some(f)
            if n >= GEMM_MIN_TOKENS
                && gemm::packable(qt)
                && gemm::max_level(qt) <= k.gemm_max_level =>
        {
            Some(f)
        }
        _ => None,
    }
}

/// What a row's outliers `(column c, v − dense)` (`v` the outlier, `dense` the dense value it
/// replaces) change in the row's dense integer dot with the exact activation `x`:
/// `Σ (v − dense)·x[c]` (module docs: the position then contributes `v·x[c]` plus the dense
/// value's activation rounding). Outliers past the activation are skipped (never the case for
/// bound tensors).
#[inline]
fn outlier_fix(outl: &[(u32, f32)], x: &[f32]) -> f32 {
    let mut fix = 0f32;
    for &(c, delta) in outl {
        if let Some(&xv) = x.get(c as usize) {
            fix += delta * xv;
        }
    }
    fix
}

/// Dequantize row `r` of `w` (e.g. a token embedding) into `out` (`w.cols()` values);
/// a rotated tensor's row is turned back (`Rᵀ·(R·w)`).
pub fn get_row(w: &Tensor, r: usize, out: &mut [f32]) {
    let cols = w.cols();
    if w.qtype.is_outlier() {
        // Sizes only (validated at bind time): a full parse would rescan every outlier of
        // the tensor for each token's embedding row.
        match OutlierView::parse_sizes(w.qtype, w.block, w.bytes(), w.rows(), cols) {
            Ok(v) => v.dequantize_row(r, out),
            Err(_) => out.fill(f32::NAN),
        }
    } else {
        let rb = w.qtype.row_bytes(w.block, cols);
        crate::quant::dequantize_row(w.qtype, w.block, &w.bytes()[r * rb..(r + 1) * rb], out);
    }
    if w.rotation != 0 {
        crate::quant::rotate::unrotate(out, w.rotation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantType;

    fn naive(w: &[f32], rows: usize, cols: usize, xs: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n * rows];
        for t in 0..n {
            for r in 0..rows {
                out[t * rows + r] = (0..cols).map(|c| w[r * cols + c] * xs[t * cols + c]).sum();
            }
        }
        out
    }

    use crate::test_util::lcg_data as data;

    #[test]
    fn matmul_matches_naive_on_any_pool_size() {
        let (rows, cols, n) = (301, 70, 5);
        let w = data(rows * cols, 1);
        let xs = data(n * cols, 2);
        let want = naive(&w, rows, cols, &xs, n);
        let t32 = Tensor::from_f32("w", vec![rows, cols], &w);
        let h: Vec<u8> = w
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let t16 = Tensor::from_bytes("w16", QuantType::F16, 1, vec![rows, cols], &h);
        let w16: Vec<f32> = w.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect();
        let want16 = naive(&w16, rows, cols, &xs, n);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut out = vec![0f32; n * rows];
                matmul(&t32, &xs, n, &mut out);
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5);
                }
                matmul(&t16, &xs, n, &mut out);
                for (a, b) in out.iter().zip(&want16) {
                    assert!((a - b).abs() < 1e-5);
                }
                let mut one = vec![0f32; rows];
                matvec(&t32, &xs[cols..2 * cols], &mut one);
                assert_eq!(one, out_row(&t32, &xs, n, 1));
            });
        }
    }

    fn out_row(w: &Tensor, xs: &[f32], n: usize, t: usize) -> Vec<f32> {
        let rows = w.rows();
        let mut out = vec![0f32; n * rows];
        matmul(w, xs, n, &mut out);
        out[t * rows..(t + 1) * rows].to_vec()
    }

    #[test]
    fn validate_rejects_short_bytes() {
        let t = Tensor::from_f32("w", vec![4, 4], &[0.0; 15]);
        assert!(matches!(validate(&t), Err(crate::Error::Corrupt(m)) if m.contains("w")));
        let t = Tensor::from_bytes("q", QuantType::Q8, 32, vec![2, 40], &[0u8; 2 * 34]);
        assert!(validate(&t).is_err());
        let t = Tensor::from_bytes("q", QuantType::Q8, 32, vec![2, 40], &[0u8; 4 * 34]);
        assert!(validate(&t).is_ok());
    }

    #[test]
    fn outlier_table_is_cached_and_checked() {
        let (rows, cols) = (5, 64);
        let p = crate::quant::QuantParams {
            outlier_frac: 0.05,
            ..Default::default()
        };
        let b = crate::quant::quantize(QuantType::Q2Outlier, &data(rows * cols, 7), rows, cols, &p)
            .unwrap();
        let t = Tensor::from_bytes("w", QuantType::Q2Outlier, 32, vec![rows, cols], &b);
        let first = t.outlier_deltas().unwrap() as *const _;
        // built once, shared by clones
        assert_eq!(t.clone().outlier_deltas().unwrap() as *const _, first);
        assert_eq!(t.outlier_deltas().unwrap().len(), 16);
        // a tensor whose shape changed after the first use does not get the stale table
        let mut u = t.clone();
        u.shape = vec![rows * 2, cols / 2];
        assert!(u.outlier_deltas().is_none());
        assert!(Tensor::from_f32("f", vec![2, 2], &[0.0; 4])
            .outlier_deltas()
            .is_none());
    }

    #[test]
    fn fused_parts_with_mixed_outlier_and_dense_types() {
        // A preset may store V as q3_outlier next to q2 Q/K: the fused call must give each part
        // exactly what it gives alone (it once sent every part down the outlier path: NaN).
        let (cols, n) = (64, 3);
        let xs = data(n * cols, 9);
        let p = crate::quant::QuantParams::default();
        let mk = |name: &str, qt: QuantType, rows: usize, seed: u32| {
            let w = data(rows * cols, seed);
            let b = crate::quant::quantize(qt, &w, rows, cols, &p).unwrap();
            Tensor::from_bytes(name, qt, 32, vec![rows, cols], &b)
        };
        let q = mk("q", QuantType::Q2, 40, 3);
        let v = mk("v", QuantType::Q3Outlier, 24, 4);
        let f = Tensor::from_f32("f", vec![8, cols], &data(8 * cols, 5));
        let (mut oq, mut ov, mut of) = (vec![0f32; n * 40], vec![0f32; n * 24], vec![0f32; n * 8]);
        matmul_multi(&[&q, &v, &f], &mut [&mut oq, &mut ov, &mut of], &xs, n);
        for (w, got) in [(&q, &oq), (&v, &ov), (&f, &of)] {
            let mut alone = vec![0f32; got.len()];
            matmul(w, &xs, n, &mut alone);
            assert!(got.iter().all(|x| x.is_finite()), "{}", w.name);
            assert_eq!(got, &alone, "{}", w.name);
        }
    }

    #[test]
    fn rotated_tensors_give_the_unrotated_products() {
        // 2 groups of 64 in 128 columns; weights stored as R·w, inputs rotated by matmul.
        let (rows, cols, n, g) = (37, 128, 4, 64);
        let w = data(rows * cols, 11);
        let xs = data(n * cols, 12);
        let want = naive(&w, rows, cols, &xs, n);
        let mut wr = w.clone();
        for row in wr.chunks_exact_mut(cols) {
            crate::quant::rotate::rotate(row, g);
        }
        let rot = Tensor::from_f32("wr", vec![rows, cols], &wr).with_rotation(g);
        let plain = Tensor::from_f32("w", vec![rows, cols], &w);
        let mut out = vec![0f32; n * rows];
        matmul(&rot, &xs, n, &mut out);
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // fused with an unrotated part: each part as alone
        let (mut o1, mut o2) = (vec![0f32; n * rows], vec![0f32; n * rows]);
        matmul_multi(&[&rot, &plain], &mut [&mut o1, &mut o2], &xs, n);
        assert_eq!(o1, out);
        for (a, b) in o2.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5);
        }
        // get_row and to_f32 give the weight itself
        let mut r = vec![0f32; cols];
        get_row(&rot, 5, &mut r);
        for (a, b) in r.iter().zip(&w[5 * cols..6 * cols]) {
            assert!((a - b).abs() < 1e-6);
        }
        let back = rot.to_f32().unwrap();
        assert!(back.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-6));
        // a quantized rotated tensor: the integer path on the rotated input equals the
        // reference dot of its dequantized (rotated) rows with the rotated input
        let p = crate::quant::QuantParams::default();
        let qb = crate::quant::quantize(QuantType::Q4, &wr, rows, cols, &p).unwrap();
        let q = Tensor::from_bytes("q", QuantType::Q4, 32, vec![rows, cols], &qb).with_rotation(g);
        matmul(&q, &xs, n, &mut out);
        let deq = crate::quant::dequantize(QuantType::Q4, 32, &qb, rows, cols).unwrap();
        let mut xr = vec![0f32; n * cols];
        crate::quant::rotate::rotate_rows(&xs, cols, g, &mut xr);
        let want_q = naive(&deq, rows, cols, &xr, n);
        for (a, b) in out.iter().zip(&want_q) {
            // activation q8 rounding: ≤ 0.5/127 relative per value (module docs)
            assert!((a - b).abs() < 2e-2, "{a} vs {b}");
        }
        // a bad group is rejected at bind time
        let bad = Tensor::from_f32("b", vec![rows, cols], &w).with_rotation(48);
        assert!(validate(&bad).is_err());
    }
}

//! Building blocks shared by every architecture: normalisation, rotary embeddings,
//! activations, softmax and attention over the KV cache.
//!
//! Everything works on f32 slices and allocates nothing; callers own the buffers.

use crate::kv::KvLayer;
use crate::model::config::{RopeConfig, RopeScaling, RopeStyle};
use crate::{Error, Result};

/// `out = x / sqrt(mean(x²) + eps) · w` (RMSNorm).
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * inv);
    }
}

/// RMSNorm in place.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for (v, g) in x.iter_mut().zip(w) {
        *v = g * (*v * inv);
    }
}

/// `out = (x − mean) / sqrt(var + eps) · w + b` (LayerNorm; `b` optional).
pub fn layer_norm(out: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
        *o = (v - mean) * inv * w[i] + b.map_or(0.0, |b| b[i]);
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SiLU: `x · σ(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Exact GELU: `x/2 · (1 + erf(x/√2))`.
#[inline]
pub fn gelu(x: f32) -> f32 {
    (0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2))) as f32
}

/// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`):
/// `x/2 · (1 + tanh(u)) = x / (1 + e^(−2u))`, `u = √(2/π)·(x + 0.044715·x³)`, with the
/// kernels' polynomial `exp` (`kernels::scalar::exp_approx`, 2·10⁻⁷ relative): branch-free,
/// so loops over it vectorize (within 6·10⁻⁷ of the `tanh` form, tested).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    let u = C * (x + 0.044715 * x * x * x);
    x / (1.0 + crate::kernels::scalar::exp_approx(-2.0 * u))
}

/// erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev fit).
fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        1.0 - r
    } else {
        r - 1.0
    }
}

/// Gated MLP activation in place: `gate[i] = act(gate[i]) · up[i]` (one loop per
/// activation, the function inlined, so the loop vectorizes).
pub fn gated_act(gate: &mut [f32], up: &[f32], act: crate::model::config::Activation) {
    use crate::model::config::Activation;
    #[inline(always)]
    fn each(gate: &mut [f32], up: &[f32], f: impl Fn(f32) -> f32) {
        for (g, u) in gate.iter_mut().zip(up) {
            *g = f(*g) * u;
        }
    }
    match act {
        Activation::Silu => each(gate, up, silu),
        Activation::Gelu => each(gate, up, gelu),
        Activation::GeluTanh => each(gate, up, gelu_tanh),
        Activation::Relu => each(gate, up, |x| x.max(0.0)),
    }
}

/// Activation in place: `x[i] = act(x[i])` (plain MLPs; one loop per activation).
pub fn activate(x: &mut [f32], act: crate::model::config::Activation) {
    use crate::model::config::Activation;
    #[inline(always)]
    fn each(x: &mut [f32], f: impl Fn(f32) -> f32) {
        for v in x.iter_mut() {
            *v = f(*v);
        }
    }
    match act {
        Activation::Silu => each(x, silu),
        Activation::Gelu => each(x, gelu),
        Activation::GeluTanh => each(x, gelu_tanh),
        Activation::Relu => each(x, |v| v.max(0.0)),
    }
}

/// Soft-capping in place: `x = cap · tanh(x / cap)` (Gemma 2's attention and final logits),
/// as `cap − 2·cap / (1 + e^(2x/cap))` with the kernels' polynomial `exp` (a vectorizable
/// loop; absolute error within 3·10⁻⁷·cap of the `tanh` form, tested).
pub fn softcap(x: &mut [f32], cap: f32) {
    let k = 2.0 / cap;
    for v in x.iter_mut() {
        *v = cap - 2.0 * cap / (1.0 + crate::kernels::scalar::exp_approx(*v * k));
    }
}

/// `x += y`.
#[inline]
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Precomputed rotary-embedding tables for positions `0..n_ctx`.
///
/// `cos[pos · half + i]`, `sin[..]` for the `half = dim / 2` frequencies; frequency scaling
/// (linear, llama3, yarn, longrope) is folded in. Neox pairs dimension `i` with `i + dim/2`;
/// Interleaved pairs `2i` with `2i + 1`; only the first `dim` values of a head rotate
/// (partial rotary: Phi, GPT-J).
///
/// Longrope (Phi-3): positions below `original_max_position_embeddings` use the short
/// factors, later positions the long ones (transformers switches the whole inverse-frequency
/// vector once the sequence passes that length, which gives the same values for every
/// position decoded one by one); cos/sin are scaled by
/// `sqrt(1 + ln(s)/ln(orig))` with `s = n_ctx_train / orig` (1 when `s ≤ 1`).
pub struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    n_ctx: usize,
    style: RopeStyle,
}

impl RopeTable {
    /// Build the tables for `n_ctx` positions of a model trained for `n_ctx_train`.
    pub fn new(cfg: &RopeConfig, n_ctx: usize, n_ctx_train: usize) -> Result<RopeTable> {
        let dim = cfg.dim;
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(Error::corrupt(format!("rope dim {dim}")));
        }
        let half = dim / 2;
        let inv_freq = inv_freq(cfg)?;
        // longrope: the long factors from `orig` on
        let long = match &cfg.scaling {
            Some(RopeScaling::LongRope {
                long_factor,
                original_max_position_embeddings,
                ..
            }) => Some((
                longrope_inv_freq(cfg, long_factor)?,
                *original_max_position_embeddings,
            )),
            _ => None,
        };
        let mscale = match &cfg.scaling {
            Some(RopeScaling::Yarn {
                factor,
                mscale,
                mscale_all_dim,
                ..
            }) => yarn_attention_factor(*factor, *mscale, *mscale_all_dim),
            Some(RopeScaling::LongRope {
                original_max_position_embeddings: orig,
                ..
            }) => {
                let s = n_ctx_train as f64 / (*orig).max(1) as f64;
                if s <= 1.0 || *orig <= 1 {
                    1.0
                } else {
                    (1.0 + s.ln() / (*orig as f64).ln()).sqrt() as f32
                }
            }
            _ => 1.0,
        };
        let mut cos = vec![0f32; n_ctx * half];
        let mut sin = vec![0f32; n_ctx * half];
        for pos in 0..n_ctx {
            let freqs = match &long {
                Some((lf, orig)) if pos >= *orig => lf,
                _ => &inv_freq,
            };
            for (i, f) in freqs.iter().enumerate() {
                // As transformers: the angle is an f32 product, cos/sin of that f32.
                let angle = (pos as f32 * f) as f64;
                cos[pos * half + i] = (angle.cos() as f32) * mscale;
                sin[pos * half + i] = (angle.sin() as f32) * mscale;
            }
        }
        Ok(RopeTable {
            cos,
            sin,
            half,
            n_ctx,
            style: cfg.style,
        })
    }

    /// Number of positions covered.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Rotate the first `dim` values of one head vector `x` for position `pos`.
    #[inline]
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let h = self.half;
        let cos = &self.cos[pos * h..(pos + 1) * h];
        let sin = &self.sin[pos * h..(pos + 1) * h];
        match self.style {
            RopeStyle::Neox => {
                let (a, b) = x[..2 * h].split_at_mut(h);
                for i in 0..h {
                    let (x0, x1) = (a[i], b[i]);
                    a[i] = x0 * cos[i] - x1 * sin[i];
                    b[i] = x1 * cos[i] + x0 * sin[i];
                }
            }
            RopeStyle::Interleaved => {
                for i in 0..h {
                    let (x0, x1) = (x[2 * i], x[2 * i + 1]);
                    x[2 * i] = x0 * cos[i] - x1 * sin[i];
                    x[2 * i + 1] = x1 * cos[i] + x0 * sin[i];
                }
            }
        }
    }

    /// Rotate every head of `x` (`n_head × head_dim`) for position `pos`.
    pub fn apply_heads(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        for head in x.chunks_exact_mut(head_dim) {
            self.apply(head, pos);
        }
    }
}

/// Inverse frequencies (f32, as transformers computes them) with scaling applied.
fn inv_freq(cfg: &RopeConfig) -> Result<Vec<f32>> {
    let dim = cfg.dim;
    let base: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / cfg.theta.powf((2 * i) as f32 / dim as f32))
        .collect();
    Ok(match &cfg.scaling {
        None => base,
        Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let old = *original_max_position_embeddings as f32;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
        Some(RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            truncate,
            ..
        }) => {
            let d = dim as f64;
            let theta = cfg.theta as f64;
            let orig = *original_max_position_embeddings as f64;
            let corr = |rot: f64| {
                d * (orig / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln())
            };
            let (mut low, mut high) = (corr(*beta_fast as f64), corr(*beta_slow as f64));
            if truncate.unwrap_or(true) {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let mut high = high.min(d - 1.0);
            if low == high {
                high += 0.001;
            }
            base.iter()
                .enumerate()
                .map(|(i, &f)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0) as f32;
                    let extra = 1.0 - ramp;
                    (f / factor) * (1.0 - extra) + f * extra
                })
                .collect()
        }
        Some(RopeScaling::LongRope { short_factor, .. }) => {
            return longrope_inv_freq(cfg, short_factor);
        }
    })
}

/// Longrope inverse frequencies `1 / (factor_i · theta^(2i/dim))` (transformers' order).
fn longrope_inv_freq(cfg: &RopeConfig, factors: &[f32]) -> Result<Vec<f32>> {
    let dim = cfg.dim;
    if factors.len() != dim / 2 {
        return Err(Error::corrupt(format!(
            "longrope: {} factors for {} rotary frequencies",
            factors.len(),
            dim / 2
        )));
    }
    Ok((0..dim / 2)
        .map(|i| 1.0 / (factors[i] * cfg.theta.powf((2 * i) as f32 / dim as f32)))
        .collect())
}

fn yarn_attention_factor(factor: f32, mscale: Option<f32>, mscale_all_dim: Option<f32>) -> f32 {
    let get = |scale: f32, m: f32| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    match (mscale, mscale_all_dim) {
        (Some(m), Some(a)) if m != 0.0 && a != 0.0 => get(factor, m) / get(factor, a),
        _ => get(factor, 1.0),
    }
}

/// The first key position visible from query position `pos` (causal, optional window:
/// key `k` is visible iff `pos − window < k ≤ pos`).
#[inline]
pub fn first_visible(pos: usize, window: Option<usize>) -> usize {
    match window {
        Some(w) if w > 0 => (pos + 1).saturating_sub(w),
        _ => 0,
    }
}

/// One head of attention for one query at position `pos`: scores against cached keys
/// `first_visible(pos, window)..=pos` of KV head `kv_head`, softmax, weighted sum of values.
/// `att` is scratch of at least `pos + 1` values; `out` is `head_dim` values.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    kv: &KvLayer<'_>,
    kv_head: usize,
    pos: usize,
    window: Option<usize>,
    scale: f32,
    att: &mut [f32],
    out: &mut [f32],
) {
    attention_capped(q, kv, kv_head, pos, window, scale, None, att, out)
}

/// [`attention`] with the scaled scores soft-capped (`cap · tanh(s / cap)`, Gemma 2) before
/// the softmax when `softcap` is given.
#[allow(clippy::too_many_arguments)]
pub fn attention_capped(
    q: &[f32],
    kv: &KvLayer<'_>,
    kv_head: usize,
    pos: usize,
    window: Option<usize>,
    scale: f32,
    softcap_at: Option<f32>,
    att: &mut [f32],
    out: &mut [f32],
) {
    let start = first_visible(pos, window);
    let scores = &mut att[..pos + 1 - start];
    if let Some((keys, vals)) = kv.head_f32(kv_head, start, scores.len()) {
        // f32 cache: SIMD dots and axpys of the selected kernel level.
        let k = crate::kernels::kernels();
        (k.dots)(q, keys, scores);
        for s in scores.iter_mut() {
            *s *= scale;
        }
        if let Some(c) = softcap_at {
            softcap(scores, c);
        }
        softmax(scores);
        out.fill(0.0);
        (k.axpys)(scores, vals, out);
        return;
    }
    kv.scores(kv_head, start, q, scale, scores);
    if let Some(c) = softcap_at {
        softcap(scores, c);
    }
    softmax(scores);
    kv.weighted_values(kv_head, start, scores, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_hand_values() {
        let mut x = [1.0f32, 2.0, 3.0];
        softmax(&mut x);
        // e^1, e^2, e^3 normalised
        let e = [1f64.exp(), 2f64.exp(), 3f64.exp()];
        let s: f64 = e.iter().sum();
        for i in 0..3 {
            assert!((x[i] as f64 - e[i] / s).abs() < 1e-6);
        }
    }

    #[test]
    fn rms_norm_hand_value() {
        let x = [3.0f32, 4.0];
        let mut out = [0f32; 2];
        rms_norm(&mut out, &x, &[1.0, 2.0], 0.0);
        let r = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6 && (out[1] - 8.0 / r).abs() < 1e-6);
    }

    #[test]
    fn gelu_values() {
        // torch.nn.functional.gelu(torch.tensor([1.0, -0.5]))
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-0.5) - -0.154_268_5).abs() < 1e-6);
        // gelu(approximate='tanh')(1.0)
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
    }

    #[test]
    fn fast_gelu_tanh_and_softcap_match_the_tanh_forms() {
        let mut x = -12.0f32;
        while x <= 12.0 {
            let want = 0.5
                * x as f64
                * (1.0 + (0.797_884_56 * (x as f64 + 0.044715 * (x as f64).powi(3))).tanh());
            let got = gelu_tanh(x) as f64;
            assert!(
                (got - want).abs() <= 6e-7 * want.abs().max(1.0),
                "gelu_tanh({x}): {got} vs {want}"
            );
            for cap in [30.0f32, 50.0] {
                let mut v = [x * 7.0];
                softcap(&mut v, cap);
                let want = cap as f64 * ((x as f64 * 7.0) / cap as f64).tanh();
                assert!(
                    (v[0] as f64 - want).abs() <= 3e-7 * cap as f64,
                    "softcap({x}): {} vs {want}",
                    v[0]
                );
            }
            x += 0.01;
        }
        assert!(gelu_tanh(-200.0).abs() < 1e-30);
        assert_eq!(gelu_tanh(200.0), 200.0);
    }

    #[test]
    fn rope_neox_and_interleaved() {
        let cfg = RopeConfig {
            theta: 10000.0,
            dim: 4,
            style: RopeStyle::Neox,
            scaling: None,
        };
        let t = RopeTable::new(&cfg, 4, 4).unwrap();
        let mut x = [1.0f32, 0.0, 0.0, 1.0];
        t.apply(&mut x, 1);
        // pair (0,2) angle 1, pair (1,3) angle 1/100
        let (c0, s0) = (1f32.cos(), 1f32.sin());
        let (c1, s1) = (0.01f32.cos(), 0.01f32.sin());
        assert!((x[0] - c0).abs() < 1e-6 && (x[2] - s0).abs() < 1e-6);
        assert!((x[1] - -s1).abs() < 1e-6 && (x[3] - c1).abs() < 1e-6);
        let t = RopeTable::new(
            &RopeConfig {
                style: RopeStyle::Interleaved,
                ..cfg
            },
            4,
            4,
        )
        .unwrap();
        let mut x = [1.0f32, 0.0, 0.0, 1.0];
        t.apply(&mut x, 1);
        assert!((x[0] - c0).abs() < 1e-6 && (x[1] - s0).abs() < 1e-6);
        assert!((x[2] - -s1).abs() < 1e-6 && (x[3] - c1).abs() < 1e-6);
    }

    #[test]
    fn window_semantics() {
        assert_eq!(first_visible(10, Some(8)), 3); // keys 3..=10: 8 tokens
        assert_eq!(first_visible(5, Some(8)), 0);
        assert_eq!(first_visible(5, None), 0);
    }
}

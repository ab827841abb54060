//! Normalisation layers: RMSNorm, RMSNorm with `1 + w` (Gemma; folded into the weight at
//! bind time, so it runs the same fused kernel), LayerNorm with or without bias.

use crate::kernels::Prep;
use crate::nn;

/// Which normalisation a family uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `w ⊙ x / sqrt(mean(x²) + eps)`
    Rms,
    /// `(1 + w) ⊙ x / sqrt(mean(x²) + eps)` (Gemma; stored as `1 + w`)
    RmsPlusOne,
    /// `w ⊙ (x − mean) / sqrt(var + eps) + b` (bias optional)
    Layer,
}

/// A bound norm: weight (already `1 + w` for [`NormKind::RmsPlusOne`]), optional bias, eps.
#[derive(Debug, Clone)]
pub struct Norm {
    /// RMS or LayerNorm (`RmsPlusOne` is stored as `Rms` with the folded weight)
    pub layer: bool,
    /// `[n]`
    pub w: Vec<f32>,
    /// `[n]` (LayerNorm only)
    pub b: Option<Vec<f32>>,
    pub eps: f32,
}

impl Norm {
    /// A norm of `kind` from its stored weight and bias.
    pub fn new(kind: NormKind, mut w: Vec<f32>, b: Option<Vec<f32>>, eps: f32) -> Norm {
        if kind == NormKind::RmsPlusOne {
            // transformers computes `x̂ · (1 + w)` in f32: the same product as `x̂ · w'`
            for v in &mut w {
                *v += 1.0;
            }
        }
        Norm {
            layer: kind == NormKind::Layer,
            w,
            b: if kind == NormKind::Layer { b } else { None },
            eps,
        }
    }

    /// The fused producer that computes this norm of the rows of `x` inside a mat-mul.
    pub fn prep<'a>(&'a self, x: &'a [f32]) -> Prep<'a> {
        if self.layer {
            Prep::LayerNorm {
                x,
                w: &self.w,
                b: self.b.as_deref(),
                eps: self.eps,
            }
        } else {
            Prep::RmsNorm {
                x,
                w: &self.w,
                eps: self.eps,
            }
        }
    }

    /// Normalise every `w.len()`-value chunk of `xs` in place (post-norms, q/k norms).
    pub fn apply_inplace(&self, xs: &mut [f32]) {
        let n = self.w.len();
        for row in xs.chunks_exact_mut(n) {
            if self.layer {
                layer_norm_inplace(row, &self.w, self.b.as_deref(), self.eps);
            } else {
                nn::rms_norm_inplace(row, &self.w, self.eps);
            }
        }
    }
}

/// LayerNorm in place (`nn::layer_norm`'s arithmetic).
fn layer_norm_inplace(x: &mut [f32], w: &[f32], b: Option<&[f32]>, eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v - mean) * inv * w[i] + b.map_or(0.0, |b| b[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_one_folds_and_layer_norm_in_place_matches() {
        let n = Norm::new(NormKind::RmsPlusOne, vec![0.0, 1.0], None, 0.0);
        let mut x = [3.0f32, 4.0];
        n.apply_inplace(&mut x);
        let r = 12.5f32.sqrt();
        assert!((x[0] - 3.0 / r).abs() < 1e-6 && (x[1] - 8.0 / r).abs() < 1e-6);
        let ln = Norm::new(
            NormKind::Layer,
            vec![1.0, 2.0, 0.5],
            Some(vec![0.1, 0.0, -0.1]),
            1e-5,
        );
        let x0 = [1.0f32, -2.0, 4.0];
        let mut want = [0f32; 3];
        nn::layer_norm(&mut want, &x0, &ln.w, ln.b.as_deref(), ln.eps);
        let mut got = x0;
        ln.apply_inplace(&mut got);
        assert_eq!(got, want);
    }
}

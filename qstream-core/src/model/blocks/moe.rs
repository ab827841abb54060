//! Mixture-of-Experts routing (the part of an MoE layer that chooses experts), shared by
//! every MoE family: softmax then top-k (Mixtral, Qwen2/3-MoE) or top-k then softmax,
//! normalised or not; sigmoid scores with a selection-only correction bias and
//! group-limited selection (DeepSeek V3); a routed scaling factor; and GPT-OSS's clamped
//! SwiGLU. Nothing here allocates: callers pass a scratch of [`Router::scratch_len`] floats.
//!
//! Status: routing and activation only. The expert FFNs, the decoder's dense-or-MoE layer
//! spec and the MoE families are not wired in yet (issue #17).

/// How router logits become expert scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreFn {
    /// softmax over all experts, then top-k (Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek V2)
    SoftmaxThenTopK,
    /// top-k on the logits, softmax over the k chosen (GPT-OSS)
    TopKThenSoftmax,
    /// `sigmoid(logit)` per expert (DeepSeek V3)
    Sigmoid,
}

/// How a group's score is formed for group-limited selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupScore {
    /// the best expert's score in the group (DeepSeek V2 `group_limited_greedy`)
    Max,
    /// the sum of the two best (biased) scores in the group (DeepSeek V3 `noaux_tc`)
    Top2Sum,
}

/// A router's configuration (from the model's config).
#[derive(Clone, Debug)]
pub struct Router {
    pub n_experts: usize,
    pub top_k: usize,
    pub score: ScoreFn,
    /// renormalise the k chosen weights to sum to 1 (`norm_topk_prob`)
    pub norm_topk: bool,
    /// multiply the final weights by this (`routed_scaling_factor`; 1 = none)
    pub scaling: f32,
    /// group-limited selection: `n_group` groups of `n_experts / n_group`, keep the
    /// `topk_group` best groups (1 group = no limit)
    pub n_group: usize,
    pub topk_group: usize,
    pub group_score: GroupScore,
}

/// Bad router configurations.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("MoE router: top_k {top_k} must be in 1..={n_experts}")]
    TopK { top_k: usize, n_experts: usize },
    #[error("MoE router: {n_experts} experts do not split into {n_group} groups, or topk_group {topk_group} is not in 1..={n_group}")]
    Groups {
        n_experts: usize,
        n_group: usize,
        topk_group: usize,
    },
}

impl Router {
    /// Check the configuration.
    pub fn validate(&self) -> Result<(), RouterError> {
        if self.top_k == 0 || self.top_k > self.n_experts {
            return Err(RouterError::TopK {
                top_k: self.top_k,
                n_experts: self.n_experts,
            });
        }
        let g = self.n_group.max(1);
        if !self.n_experts.is_multiple_of(g) || self.topk_group == 0 || self.topk_group > g {
            return Err(RouterError::Groups {
                n_experts: self.n_experts,
                n_group: self.n_group,
                topk_group: self.topk_group,
            });
        }
        Ok(())
    }

    /// Floats of scratch [`Router::route`] needs.
    pub fn scratch_len(&self) -> usize {
        2 * self.n_experts + self.n_group.max(1)
    }

    /// Choose `top_k` experts for one token from its router `logits` (`n_experts`), with an
    /// optional selection-only `bias` (DeepSeek V3 `e_score_correction_bias`: it changes
    /// which experts are chosen, not their weights). Writes the chosen expert ids to `idx`
    /// and their weights to `w` (both `top_k`), best first; ties go to the lower id.
    pub fn route(
        &self,
        logits: &[f32],
        bias: Option<&[f32]>,
        scratch: &mut [f32],
        idx: &mut [usize],
        w: &mut [f32],
    ) {
        let (ne, k) = (self.n_experts, self.top_k);
        debug_assert!(self.validate().is_ok());
        let (scores, rest) = scratch.split_at_mut(ne);
        let (sel, groups) = rest.split_at_mut(ne);
        // scores: what the weights come from; sel: what the selection ranks
        match self.score {
            ScoreFn::SoftmaxThenTopK => {
                scores.copy_from_slice(&logits[..ne]);
                softmax(scores);
            }
            ScoreFn::TopKThenSoftmax => scores.copy_from_slice(&logits[..ne]),
            ScoreFn::Sigmoid => {
                for (s, &l) in scores.iter_mut().zip(logits) {
                    *s = 1.0 / (1.0 + (-l).exp());
                }
            }
        }
        sel.copy_from_slice(scores);
        if let Some(b) = bias {
            for (s, &b) in sel.iter_mut().zip(b) {
                *s += b;
            }
        }
        let ng = self.n_group.max(1);
        if ng > 1 && self.topk_group < ng {
            let gs = ne / ng;
            for (g, out) in groups[..ng].iter_mut().enumerate() {
                let grp = &sel[g * gs..(g + 1) * gs];
                *out = match self.group_score {
                    GroupScore::Max => grp.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    GroupScore::Top2Sum => {
                        let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                        for &v in grp {
                            if v > a {
                                b = a;
                                a = v;
                            } else if v > b {
                                b = v;
                            }
                        }
                        if gs == 1 {
                            a
                        } else {
                            a + b
                        }
                    }
                };
            }
            // drop the groups outside the best `topk_group`
            for g in 0..ng {
                let better = (0..ng)
                    .filter(|&h| groups[h] > groups[g] || (groups[h] == groups[g] && h < g))
                    .count();
                if better >= self.topk_group {
                    sel[g * gs..(g + 1) * gs].fill(f32::NEG_INFINITY);
                }
            }
        }
        // top-k by selection score, best first, ties to the lower id (k is small)
        for j in 0..k {
            let mut best = usize::MAX;
            for e in 0..ne {
                if idx[..j].contains(&e) {
                    continue;
                }
                if best == usize::MAX || sel[e] > sel[best] {
                    best = e;
                }
            }
            idx[j] = best;
            w[j] = scores[best];
        }
        let w = &mut w[..k];
        if self.score == ScoreFn::TopKThenSoftmax {
            softmax(w);
        } else if self.norm_topk {
            let sum: f32 = w.iter().sum();
            let inv = 1.0
                / (sum
                    + if self.score == ScoreFn::Sigmoid {
                        1e-20
                    } else {
                        0.0
                    });
            w.iter_mut().for_each(|v| *v *= inv);
        }
        if self.scaling != 1.0 {
            w.iter_mut().for_each(|v| *v *= self.scaling);
        }
    }
}

fn softmax(x: &mut [f32]) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// GPT-OSS's clamped SwiGLU, in place into `gate`: `gate = min(gate, limit)`,
/// `up = clamp(up, -limit, limit)`, `out = (up + 1) · gate · sigmoid(alpha · gate)`.
pub fn clamped_swiglu(gate: &mut [f32], up: &[f32], alpha: f32, limit: f32) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let gc = g.min(limit);
        let uc = u.clamp(-limit, limit);
        *g = (uc + 1.0) * gc / (1.0 + (-alpha * gc).exp());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(score: ScoreFn, ne: usize, k: usize) -> Router {
        Router {
            n_experts: ne,
            top_k: k,
            score,
            norm_topk: false,
            scaling: 1.0,
            n_group: 1,
            topk_group: 1,
            group_score: GroupScore::Max,
        }
    }

    fn run(r: &Router, logits: &[f32], bias: Option<&[f32]>) -> (Vec<usize>, Vec<f32>) {
        r.validate().unwrap();
        let mut s = vec![0.0; r.scratch_len()];
        let (mut i, mut w) = (vec![0; r.top_k], vec![0.0; r.top_k]);
        r.route(logits, bias, &mut s, &mut i, &mut w);
        (i, w)
    }

    fn close(a: &[f32], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    // references computed with NumPy (float64) from the transformers routers' formulas
    const L: [f32; 8] = [0.3, -1.2, 2.0, 0.7, -0.4, 1.5, 0.1, -2.2];

    #[test]
    fn softmax_then_topk_plain_and_normalised() {
        let mut r = router(ScoreFn::SoftmaxThenTopK, 8, 2);
        let (i, w) = run(&r, &L, None);
        assert_eq!(i, [2, 5]);
        close(&w, &[0.42412592, 0.25724538]);
        r.norm_topk = true;
        let (_, w) = run(&r, &L, None);
        close(&w, &[0.62245933, 0.37754067]);
    }

    #[test]
    fn topk_then_softmax() {
        let r = router(ScoreFn::TopKThenSoftmax, 8, 3);
        let (i, w) = run(&r, &L, None);
        assert_eq!(i, [2, 5, 3]);
        close(&w, &[0.53218029, 0.32278366, 0.14503605]);
    }

    #[test]
    fn sigmoid_bias_groups_scaling() {
        // DeepSeek V3 noaux_tc: 4 groups of 2, keep 2 groups, top-3, normalised, ×2.5
        let r = Router {
            norm_topk: true,
            scaling: 2.5,
            n_group: 4,
            topk_group: 2,
            group_score: GroupScore::Top2Sum,
            ..router(ScoreFn::Sigmoid, 8, 3)
        };
        let bias = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.9];
        let (i, w) = run(&r, &L, Some(&bias));
        // biased group top-2 sums 0.806, 1.549, 1.219, 2.425 → groups 3 and 1; the bias
        // picks expert 7 over 3 but the weights are unbiased sigmoids
        assert_eq!(i, [6, 7, 2]);
        close(&w, &[0.87175333, 0.16564051, 1.46260615]);
    }

    #[test]
    fn clamped_swiglu_matches_formula() {
        let mut g = [-8.0f32, -0.5, 0.0, 1.0, 9.0];
        let u = [0.5f32, 10.0, 2.0, -9.0, 1.0];
        clamped_swiglu(&mut g, &u, 1.702, 7.0);
        close(
            &g,
            &[-1.46496433e-05, -1.19689251, 0.0, -5.0747746, 13.9999063],
        );
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(router(ScoreFn::Sigmoid, 8, 0).validate().is_err());
        assert!(router(ScoreFn::Sigmoid, 8, 9).validate().is_err());
        let r = Router {
            n_group: 3,
            topk_group: 1,
            ..router(ScoreFn::Sigmoid, 8, 2)
        };
        assert!(r.validate().is_err());
    }
}

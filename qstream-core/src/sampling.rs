//! Token sampling: penalties, temperature, top-k, top-p, min-p and a seeded PRNG.
//!
//! [`Sampler::sample`] applies, in order:
//! 1. NaN logits become −∞ (never chosen); +∞ becomes `f32::MAX`.
//! 2. Penalties over the last `repeat_last_n` ids of the history (llama.cpp semantics):
//!    repetition penalty once per distinct id (`logit > 0 → logit / p`, else `logit × p`),
//!    then `logit −= count × frequency_penalty + presence_penalty` (if count > 0).
//! 3. `temperature ≤ 0` (also NaN or ∞) or `top_k == 1`: greedy argmax, ties to the
//!    lowest id.
//! 4. Temperature scaling, then top-k, top-p (smallest most-probable set whose mass reaches
//!    `top_p`, at least one token) and min-p (keep `p ≥ min_p × p_max`), as HF's logits
//!    warpers order them.
//! 5. A draw from the remaining renormalised distribution with a xoshiro256** generator
//!    seeded by splitmix64(`seed`): same seed and inputs ⇒ same tokens, on any machine and
//!    for any thread count.
//!
//! Buffers are reused: after the first call (per vocabulary size) `sample` does not allocate.

/// Sampling settings. `Default` is temperature 0.7, top-k 40, top-p 0.9, no min-p, no
/// penalties, seed 42.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` = greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; `0` = off.
    pub top_k: usize,
    /// Nucleus sampling mass; `1.0` = off.
    pub top_p: f32,
    /// Drop tokens with probability below `min_p × p_max`; `0.0` = off.
    pub min_p: f32,
    /// Repetition penalty (llama.cpp); `1.0` = off.
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every token present in the window; `0` = off.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the window; `0` = off.
    pub frequency_penalty: f32,
    /// How many of the most recent history ids the penalties look at; `0` = none.
    pub repeat_last_n: usize,
    /// PRNG seed.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repeat_last_n: 64,
            seed: 42,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0), no penalties.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Check the settings — the one rule set the CLI, the C API and the Python package all
    /// apply: `temperature` finite and ≥ 0; `top_p` in (0, 1] (0 would keep no token);
    /// `min_p` in [0, 1]; `repeat_penalty` finite and > 0 (1 = off); presence and frequency
    /// penalties finite (any sign). [`crate::Error::InvalidArgument`] names the field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidArgument(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be finite and ≥ 0 (0 = greedy), got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!(
                "top_p must be in (0, 1] (1 = off), got {}",
                self.top_p
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!(
                "min_p must be in [0, 1] (0 = off), got {}",
                self.min_p
            ));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty must be finite and > 0 (1 = off), got {}",
                self.repeat_penalty
            ));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !v.is_finite() {
                return bad(format!("{name} must be finite (0 = off), got {v}"));
            }
        }
        Ok(())
    }

    fn penalties_active(&self) -> bool {
        self.repeat_last_n > 0
            && ((self.repeat_penalty > 0.0 && self.repeat_penalty != 1.0)
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

/// splitmix64 step (seeds xoshiro).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman & Vigna), seeded with splitmix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        Rng {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Index of the largest value, ties to the lowest index; NaN never wins; 0 if `v` is empty
/// or all NaN.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &x) in v.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        if !found || x > best_v {
            best = i;
            best_v = x;
            found = true;
        }
    }
    best as u32
}

/// Descending by logit, ties by ascending id: a total order, so selection is deterministic.
fn by_logit_desc(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// How many top candidates top-p first tries to settle within before sorting everything.
const TOP_P_FIRST_TRY: usize = 256;

/// A stateful sampler (owns its PRNG and scratch buffers). One per generation stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// working logits (sanitised, penalised)
    logits: Vec<f32>,
    /// candidates (logit, id); later their probabilities overwrite the logits
    cand: Vec<(f32, u32)>,
    /// occurrences per id in the penalty window (all zero between calls)
    counts: Vec<u32>,
    /// distinct ids whose count is non-zero
    touched: Vec<u32>,
}

impl Sampler {
    /// A sampler with `params`; the PRNG starts from `params.seed`.
    pub fn new(params: &SamplingParams) -> Sampler {
        Sampler {
            params: params.clone(),
            rng: Rng::new(params.seed),
            logits: Vec::new(),
            cand: Vec::new(),
            counts: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Restart the PRNG from `seed` (the same draws as a new sampler with that seed).
    pub fn reseed(&mut self, seed: u64) {
        self.params.seed = seed;
        self.rng = Rng::new(seed);
    }

    /// Pick the next token from `logits` (one per vocabulary id) given the ids so far
    /// (`history`, prompt included, for the penalties). Never panics: NaN logits are never
    /// chosen, and if no logit is finite the result is the argmax (0 when all are NaN/−∞).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let n = logits.len();
        if n == 0 {
            return 0;
        }
        self.logits.clear();
        self.logits.extend(logits.iter().map(|&x| {
            if x.is_nan() {
                f32::NEG_INFINITY
            } else if x == f32::INFINITY {
                f32::MAX
            } else {
                x
            }
        }));
        if self.params.penalties_active() {
            self.apply_penalties(history);
        }
        let p = &self.params;
        // NaN, ≤ 0 or infinite temperature: greedy
        if p.temperature.is_nan()
            || p.temperature <= 0.0
            || p.top_k == 1
            || !p.temperature.is_finite()
        {
            return argmax(&self.logits);
        }

        // candidates: every id that can still be chosen, or the top-k of them
        self.cand.clear();
        let k = p.top_k;
        if k > 0 && k < n {
            // one pass with a bounded buffer: keep what beats the current k-th best. Ids
            // come in ascending order, so an id equal to the k-th logit ranks after it.
            let cap = (2 * k).max(64);
            let mut thresh = f32::NEG_INFINITY;
            for (i, &l) in self.logits.iter().enumerate() {
                if l > thresh {
                    self.cand.push((l, i as u32));
                    if self.cand.len() == cap {
                        self.cand.select_nth_unstable_by(k - 1, by_logit_desc);
                        self.cand.truncate(k);
                        thresh = self.cand[k - 1].0;
                    }
                }
            }
            if self.cand.len() > k {
                self.cand.select_nth_unstable_by(k - 1, by_logit_desc);
                self.cand.truncate(k);
            }
        } else {
            self.cand.extend(
                self.logits
                    .iter()
                    .enumerate()
                    .filter(|(_, &l)| l > f32::NEG_INFINITY)
                    .map(|(i, &l)| (l, i as u32)),
            );
        }
        if self.cand.is_empty() {
            return argmax(&self.logits);
        }
        let mut sorted = false;

        // probabilities (unnormalised) at temperature T; the max first for stability
        let inv_t = 1.0 / p.temperature;
        let max_l = self
            .cand
            .iter()
            .map(|c| c.0)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for c in self.cand.iter_mut() {
            let e = ((c.0 - max_l) * inv_t).exp();
            c.0 = if e.is_finite() { e } else { 0.0 };
            sum += c.0 as f64;
        }

        // top-p on the sorted distribution
        if p.top_p < 1.0 && self.cand.len() > 1 {
            let target = (p.top_p.max(0.0) as f64) * sum;
            let mut keep = None;
            if self.cand.len() > TOP_P_FIRST_TRY {
                // usually a few hundred tokens hold the mass: sort those first
                self.cand
                    .select_nth_unstable_by(TOP_P_FIRST_TRY - 1, by_logit_desc);
                self.cand[..TOP_P_FIRST_TRY].sort_unstable_by(by_logit_desc);
                keep = nucleus(&self.cand[..TOP_P_FIRST_TRY], target);
            }
            let keep = match keep {
                Some(k) => k,
                None => {
                    self.cand.sort_unstable_by(by_logit_desc);
                    nucleus(&self.cand, target).unwrap_or(self.cand.len())
                }
            };
            sorted = true;
            self.cand.truncate(keep.max(1));
            sum = self.cand.iter().map(|c| c.0 as f64).sum();
        }

        // min-p relative to the most probable token
        if p.min_p > 0.0 && self.cand.len() > 1 {
            let p_max = self.cand.iter().map(|c| c.0).fold(0.0f32, f32::max);
            let thresh = p.min_p * p_max;
            if sorted {
                let keep = self.cand.iter().take_while(|c| c.0 >= thresh).count();
                self.cand.truncate(keep.max(1));
            } else {
                self.cand.retain(|c| c.0 >= thresh);
            }
            sum = self.cand.iter().map(|c| c.0 as f64).sum();
        }

        if self.cand.len() == 1 || sum.is_nan() || sum <= 0.0 {
            return self
                .cand
                .first()
                .map_or_else(|| argmax(&self.logits), |c| c.1);
        }
        let r = self.rng.next_f64() * sum;
        let mut acc = 0.0f64;
        for c in &self.cand {
            acc += c.0 as f64;
            if r < acc {
                return c.1;
            }
        }
        // rounding: the last token with non-zero probability
        self.cand
            .iter()
            .rev()
            .find(|c| c.0 > 0.0)
            .map_or(self.cand[0].1, |c| c.1)
    }

    /// Repetition / presence / frequency penalties over the window of `history`.
    fn apply_penalties(&mut self, history: &[u32]) {
        let n = self.logits.len();
        if self.counts.len() != n {
            self.counts.clear();
            self.counts.resize(n, 0);
        }
        let window = &history[history.len().saturating_sub(self.params.repeat_last_n)..];
        self.touched.clear();
        for &id in window {
            if let Some(c) = self.counts.get_mut(id as usize) {
                if *c == 0 {
                    self.touched.push(id);
                }
                *c += 1;
            }
        }
        let p = &self.params;
        let rp = if p.repeat_penalty > 0.0 {
            p.repeat_penalty
        } else {
            1.0
        };
        for &id in &self.touched {
            let i = id as usize;
            let count = self.counts[i];
            self.counts[i] = 0;
            let mut l = self.logits[i];
            if l == f32::NEG_INFINITY {
                continue;
            }
            if rp != 1.0 {
                l = if l > 0.0 { l / rp } else { l * rp };
            }
            l -= count as f32 * p.frequency_penalty + p.presence_penalty;
            self.logits[i] = if l.is_nan() { f32::NEG_INFINITY } else { l };
        }
    }
}

/// Number of leading (sorted, descending) candidates whose mass first reaches `target`;
/// `None` if all of `cand` does not reach it.
fn nucleus(cand: &[(f32, u32)], target: f64) -> Option<usize> {
    let mut acc = 0.0f64;
    for (i, c) in cand.iter().enumerate() {
        acc += c.0 as f64;
        if acc >= target {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_reference_stream() {
        // splitmix64 from 0: first outputs as published with the reference C code
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
        // xoshiro256** with state [1, 2, 3, 4] (reference implementation)
        let mut r = Rng { s: [1, 2, 3, 4] };
        assert_eq!(r.next_u64(), 11520);
        assert_eq!(r.next_u64(), 0);
        assert_eq!(r.next_u64(), 1_509_978_240);
        assert_eq!(r.next_u64(), 1_215_971_899_390_074_240);
    }

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[]), 0);
    }
}

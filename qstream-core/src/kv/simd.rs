//! Integer-domain attention kernels over quantized KV rows: scores of a [`QueryQ8`]
//! against key rows, and weighted sums of value rows straight from their codes.
//!
//! Levels ([`Level`]): the scalar reference of `quant.rs`, AVX2 (`vpmaddubsw` on the
//! unsigned codes × signed query codes; q8 keys through the `vpsignb` trick), and
//! AVX-512 VNNI (`vpdpbusd` on 256-bit vectors). The level follows the process-wide
//! kernel level (`QSTREAM_ISA`); every level is tested against the scalar reference.
//! Value kernels are f32 FMAs on the widened codes: 8 lanes at the AVX2 level, 16 at
//! the AVX-512 level.

use std::sync::OnceLock;

use super::quant::{self, Codec, QueryQ8};

/// Instruction-set level of the KV kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The scalar reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 plus AVX-512 F/BW/VL/VNNI (256-bit `vpdpbusd` for scores, 512-bit
    /// value accumulation).
    Vnni,
}

impl Level {
    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Vnni => {
                Level::Avx2.supported()
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vnni")
                    && std::is_x86_feature_detected!("avx512vl")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The level used by [`scores`] and [`axpys`]: the best one at or below the process-wide
/// kernel level (`QSTREAM_ISA=scalar` selects the reference).
pub fn level() -> Level {
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| {
        use crate::kernels::Isa;
        match crate::kernels::kernels().isa {
            Isa::Avx512 if Level::Vnni.supported() => Level::Vnni,
            Isa::Avx512 | Isa::Avx2 if Level::Avx2.supported() => Level::Avx2,
            _ => Level::Scalar,
        }
    })
}

/// `out[i] = dot(q, decode(rows[i]))` for `out.len()` rows of `rb` bytes.
#[inline]
pub fn scores(codec: Codec, q: &QueryQ8, rows: &[u8], rb: usize, out: &mut [f32]) {
    scores_at(level(), codec, q, rows, rb, out)
}

/// `out += Σ_i w[i] · decode(rows[i])` for `w.len()` rows of `rb` bytes.
#[inline]
pub fn axpys(codec: Codec, w: &[f32], rows: &[u8], rb: usize, out: &mut [f32]) {
    axpys_at(level(), codec, w, rows, rb, out)
}

/// [`scores`] at a given level (the scalar reference when the CPU lacks it).
pub fn scores_at(lv: Level, codec: Codec, q: &QueryQ8, rows: &[u8], rb: usize, out: &mut [f32]) {
    assert!(rows.len() >= out.len() * rb && rb == q.nb * codec.block_bytes());
    #[cfg(target_arch = "x86_64")]
    if codec != Codec::Qins8 && lv != Level::Scalar && lv.supported() {
        // SAFETY: the CPU supports the level (checked above); `rows` holds `out.len()`
        // rows of `rb` bytes and `q` has `rb / block_bytes` blocks (asserted above).
        unsafe {
            match (lv, codec) {
                (Level::Vnni, Codec::Q8) => x86::scores_vnni::<0>(q, rows, rb, out),
                (Level::Vnni, Codec::Q4) => x86::scores_vnni::<4>(q, rows, rb, out),
                (Level::Vnni, Codec::Q3) => x86::scores_vnni::<3>(q, rows, rb, out),
                (Level::Vnni, Codec::Q2) => x86::scores_vnni::<2>(q, rows, rb, out),
                (_, Codec::Q8) => x86::scores_avx2::<0>(q, rows, rb, out),
                (_, Codec::Q4) => x86::scores_avx2::<4>(q, rows, rb, out),
                (_, Codec::Q3) => x86::scores_avx2::<3>(q, rows, rb, out),
                (_, _) => x86::scores_avx2::<2>(q, rows, rb, out),
            }
        }
        return;
    }
    let _ = lv;
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(rb)) {
        *o = quant::dot_ref(codec, q, row);
    }
}

/// [`axpys`] at a given level (the scalar reference when the CPU lacks it).
pub fn axpys_at(lv: Level, codec: Codec, w: &[f32], rows: &[u8], rb: usize, out: &mut [f32]) {
    assert!(rows.len() >= w.len() * rb && rb == out.len() / quant::BLOCK * codec.block_bytes());
    assert!(out.len().is_multiple_of(quant::BLOCK));
    #[cfg(target_arch = "x86_64")]
    if lv != Level::Scalar && lv.supported() {
        // SAFETY: the CPU supports the level (checked above); `rows` holds `w.len()`
        // rows of `rb` bytes covering `out.len()` values (asserted above).
        unsafe {
            match (lv, codec) {
                (Level::Vnni, Codec::Q8) => x86::axpys_avx512::<0>(w, rows, rb, out),
                (Level::Vnni, Codec::Q4) => x86::axpys_avx512::<4>(w, rows, rb, out),
                (Level::Vnni, Codec::Q3) => x86::axpys_avx512::<3>(w, rows, rb, out),
                (Level::Vnni, Codec::Q2) => x86::axpys_avx512::<2>(w, rows, rb, out),
                (Level::Vnni, Codec::Qins8) => x86::axpys_avx512::<8>(w, rows, rb, out),
                (_, Codec::Q8) => x86::axpys_avx2::<0>(w, rows, rb, out),
                (_, Codec::Q4) => x86::axpys_avx2::<4>(w, rows, rb, out),
                (_, Codec::Q3) => x86::axpys_avx2::<3>(w, rows, rb, out),
                (_, Codec::Q2) => x86::axpys_avx2::<2>(w, rows, rb, out),
                (_, Codec::Qins8) => x86::axpys_avx2::<8>(w, rows, rb, out),
            }
        }
        return;
    }
    let _ = lv;
    for (wi, row) in w.iter().zip(rows.chunks_exact(rb)) {
        quant::axpy_ref(codec, *wi, row, out);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! `C` selects the codec: 0 = q8, 4 = q4, 3 = q3, 2 = q2, 8 = qins8.
    use std::arch::x86_64::*;

    use super::super::quant::{qins8_lut, QueryQ8, BLOCK};

    const fn block_bytes(c: u8) -> usize {
        match c {
            0 | 8 => 34,
            4 => 20,
            3 => 16,
            _ => 12,
        }
    }

    /// One f16 at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn h1(p: *const u8) -> f32 {
        // SAFETY: the caller guarantees two readable bytes at `p`.
        let bits = unsafe { (p as *const u16).read_unaligned() } as i32;
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }

    /// The two f16 `(d, m)` at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn h2(p: *const u8) -> (f32, f32) {
        // SAFETY: the caller guarantees four readable bytes at `p`.
        let bits = unsafe { (p as *const i32).read_unaligned() };
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// The 32 unsigned codes (element order) of a q4/q3/q2 block whose codes start at `p`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes<const C: u8>(p: *const u8) -> __m256i {
        // SAFETY (all reads): the caller guarantees the block's code bytes at `p`
        // (16 for q4, 12 for q3, 8 for q2).
        match C {
            4 => {
                let b = unsafe { _mm_loadu_si128(p as *const __m128i) };
                let m4 = _mm_set1_epi8(0x0f);
                let lo = _mm_and_si128(b, m4);
                let hi = _mm_and_si128(_mm_srli_epi16(b, 4), m4);
                _mm256_set_m128i(hi, lo)
            }
            _ => {
                let b = unsafe { (p as *const i64).read_unaligned() };
                let v = _mm256_srlv_epi64(_mm256_set1_epi64x(b), _mm256_setr_epi64x(0, 2, 4, 6));
                let low = _mm256_and_si256(v, _mm256_set1_epi8(3));
                if C == 3 {
                    let h = unsafe { (p.add(8) as *const i32).read_unaligned() };
                    let shuf = _mm256_setr_epi8(
                        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                        3, 3, 3, 3, 3, 3, 3,
                    );
                    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(h), shuf);
                    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
                    _mm256_or_si256(low, _mm256_and_si256(set, _mm256_set1_epi8(4)))
                } else {
                    low
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    macro_rules! dot_avx2 {
        ($u:expr, $s:expr) => {
            _mm256_madd_epi16(_mm256_maddubs_epi16($u, $s), _mm256_set1_epi16(1))
        };
    }
    macro_rules! dot_vnni {
        ($u:expr, $s:expr) => {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), $u, $s)
        };
    }

    macro_rules! scores_fn {
        ($name:ident, $feat:literal, $dot:ident) => {
            /// Scores of `q` against `out.len()` rows of `rb` bytes.
            ///
            /// # Safety
            /// The CPU has the enabled features; `rows` holds `out.len()` rows of `rb`
            /// bytes of `q.nb` blocks.
            #[target_feature(enable = $feat)]
            pub unsafe fn $name<const C: u8>(q: &QueryQ8, rows: &[u8], rb: usize, out: &mut [f32]) {
                let bb = block_bytes(C);
                let nb = q.nb;
                for (i, o) in out.iter_mut().enumerate() {
                    // SAFETY: row `i` lies inside `rows` (caller contract).
                    let row = unsafe { rows.as_ptr().add(i * rb) };
                    let mut acc = _mm256_setzero_ps();
                    let mut tail = 0f32;
                    for b in 0..nb {
                        // SAFETY (reads below): block `b` of the row and of the query are
                        // in bounds (`nb` blocks each).
                        let blk = unsafe { row.add(b * bb) };
                        let qv = unsafe {
                            _mm256_loadu_si256(q.q.as_ptr().add(b * BLOCK) as *const __m256i)
                        };
                        if C == 0 {
                            let d = unsafe { h1(blk) };
                            let k = unsafe { _mm256_loadu_si256(blk.add(2) as *const __m256i) };
                            let p = $dot!(_mm256_sign_epi8(k, k), _mm256_sign_epi8(qv, k));
                            acc = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(p),
                                _mm256_set1_ps(q.d[b] * d),
                                acc,
                            );
                        } else {
                            let (d, m) = unsafe { h2(blk) };
                            let c = unsafe { codes::<C>(blk.add(4)) };
                            let p = $dot!(c, qv);
                            acc = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(p),
                                _mm256_set1_ps(q.d[b] * d),
                                acc,
                            );
                            tail += q.d[b] * m * q.s[b] as f32;
                        }
                    }
                    *o = unsafe { hsum(acc) } + tail;
                }
            }
        };
    }

    scores_fn!(scores_avx2, "avx2,fma,f16c", dot_avx2);
    scores_fn!(scores_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", dot_vnni);

    /// `out += Σ_i w[i] · decode(row i)`, block by block with the 32 sums in registers.
    ///
    /// # Safety
    /// The CPU has AVX2/FMA/F16C; `rows` holds `w.len()` rows of `rb` bytes, each
    /// `out.len() / 32` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpys_avx2<const C: u8>(w: &[f32], rows: &[u8], rb: usize, out: &mut [f32]) {
        let bb = block_bytes(C);
        let lut = qins8_lut().as_ptr();
        for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
            let mut a = [_mm256_setzero_ps(); 4];
            let mut msum = 0f32;
            for (i, &wi) in w.iter().enumerate() {
                // SAFETY (reads below): block `b` of row `i` is in bounds (caller contract).
                let blk = unsafe { rows.as_ptr().add(i * rb + b * bb) };
                let (scale, bytes) = if C == 0 || C == 8 {
                    let s = unsafe { h1(blk) };
                    (s, unsafe {
                        _mm256_loadu_si256(blk.add(2) as *const __m256i)
                    })
                } else {
                    let (d, m) = unsafe { h2(blk) };
                    msum += wi * m;
                    (d, unsafe { codes::<C>(blk.add(4)) })
                };
                let ws = _mm256_set1_ps(wi * scale);
                let lo = _mm256_castsi256_si128(bytes);
                let hi = _mm256_extracti128_si256(bytes, 1);
                let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
                for (acc, p) in a.iter_mut().zip(parts) {
                    let x = match C {
                        0 => _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(p)),
                        // SAFETY: the indices are bytes, inside the 256-entry table.
                        8 => unsafe { _mm256_i32gather_ps(lut, _mm256_cvtepu8_epi32(p), 4) },
                        _ => _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(p)),
                    };
                    *acc = _mm256_fmadd_ps(x, ws, *acc);
                }
            }
            let m = _mm256_set1_ps(msum);
            for (g, acc) in a.iter().enumerate() {
                // SAFETY: `o` has 32 values; lane group `g` covers `8g..8g + 8`.
                unsafe {
                    let p = o.as_mut_ptr().add(8 * g);
                    _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), _mm256_add_ps(*acc, m)));
                }
            }
        }
    }

    /// The AVX-512 value kernel: 16-lane f32 accumulators, codes widened straight from
    /// memory (`vpmovzxbd` / `vpmovsxbd`).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL plus AVX2/FMA/F16C; `rows` holds `w.len()` rows of `rb`
    /// bytes, each `out.len() / 32` blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub unsafe fn axpys_avx512<const C: u8>(w: &[f32], rows: &[u8], rb: usize, out: &mut [f32]) {
        let bb = block_bytes(C);
        let lut = qins8_lut().as_ptr();
        let sh0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
        let sh1 = _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6);
        let idx0 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let idx1 = _mm512_add_epi32(idx0, _mm512_set1_epi32(16));
        let (m3, m15, one) = (
            _mm512_set1_epi32(3),
            _mm512_set1_epi32(15),
            _mm512_set1_epi32(1),
        );
        for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
            let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut msum = 0f32;
            for (i, &wi) in w.iter().enumerate() {
                // SAFETY (reads below): block `b` of row `i` is in bounds (caller contract).
                let blk = unsafe { rows.as_ptr().add(i * rb + b * bb) };
                let (s, x0, x1) = match C {
                    0 => unsafe {
                        let c0 = _mm_loadu_si128(blk.add(2) as *const __m128i);
                        let c1 = _mm_loadu_si128(blk.add(18) as *const __m128i);
                        (
                            h1(blk),
                            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c0)),
                            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c1)),
                        )
                    },
                    8 => unsafe {
                        let c0 =
                            _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.add(2) as *const __m128i));
                        let c1 =
                            _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.add(18) as *const __m128i));
                        // SAFETY: the indices are bytes, inside the 256-entry table.
                        (
                            h1(blk),
                            _mm512_i32gather_ps::<4>(c0, lut),
                            _mm512_i32gather_ps::<4>(c1, lut),
                        )
                    },
                    4 => unsafe {
                        let (d, m) = h2(blk);
                        msum += wi * m;
                        let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.add(4) as *const __m128i));
                        (
                            d,
                            _mm512_cvtepi32_ps(_mm512_and_si512(v, m15)),
                            _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(v)),
                        )
                    },
                    _ => unsafe {
                        let (d, m) = h2(blk);
                        msum += wi * m;
                        let b8 = (blk.add(4) as *const i64).read_unaligned();
                        let v = _mm512_cvtepu8_epi32(_mm_set1_epi64x(b8));
                        let mut c0 = _mm512_and_si512(_mm512_srlv_epi32(v, sh0), m3);
                        let mut c1 = _mm512_and_si512(_mm512_srlv_epi32(v, sh1), m3);
                        if C == 3 {
                            let h = _mm512_set1_epi32((blk.add(12) as *const i32).read_unaligned());
                            let h0 = _mm512_and_si512(_mm512_srlv_epi32(h, idx0), one);
                            let h1v = _mm512_and_si512(_mm512_srlv_epi32(h, idx1), one);
                            c0 = _mm512_or_si512(c0, _mm512_slli_epi32::<2>(h0));
                            c1 = _mm512_or_si512(c1, _mm512_slli_epi32::<2>(h1v));
                        }
                        (d, _mm512_cvtepi32_ps(c0), _mm512_cvtepi32_ps(c1))
                    },
                };
                let ws = _mm512_set1_ps(wi * s);
                a0 = _mm512_fmadd_ps(x0, ws, a0);
                a1 = _mm512_fmadd_ps(x1, ws, a1);
            }
            let m = _mm512_set1_ps(msum);
            // SAFETY: `o` has 32 values.
            unsafe {
                let p = o.as_mut_ptr();
                _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), _mm512_add_ps(a0, m)));
                let p = p.add(16);
                _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), _mm512_add_ps(a1, m)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(7);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let u = (s as f32 / u32::MAX as f32) * 2.0 - 1.0;
                u * if i % 13 == 5 { 6.0 } else { 1.0 }
            })
            .collect()
    }

    const ALL: [Codec; 5] = [Codec::Q8, Codec::Q4, Codec::Q3, Codec::Q2, Codec::Qins8];

    #[test]
    fn every_level_matches_the_scalar_reference() {
        for hd in [32usize, 64, 128, 256] {
            let n = 37;
            let x = data(n * hd, hd as u32);
            let q = QueryQ8::new(&data(hd, 99)[..]);
            let w = data(n, 5);
            for codec in ALL {
                let rb = hd / 32 * codec.block_bytes();
                let mut rows = vec![0u8; n * rb];
                for (xs, r) in x.chunks(hd).zip(rows.chunks_mut(rb)) {
                    quant::encode(codec, xs, r);
                }
                let mut want = vec![0f32; n];
                scores_at(Level::Scalar, codec, &q, &rows, rb, &mut want);
                let mut want_v = vec![0.5f32; hd];
                axpys_at(Level::Scalar, codec, &w, &rows, rb, &mut want_v);
                for lv in [Level::Avx2, Level::Vnni] {
                    if !lv.supported() {
                        eprintln!("{lv:?} not supported here; skipped");
                        continue;
                    }
                    let mut got = vec![0f32; n];
                    scores_at(lv, codec, &q, &rows, rb, &mut got);
                    for (a, b) in want.iter().zip(&got) {
                        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{lv:?} {codec:?}");
                    }
                    let mut got_v = vec![0.5f32; hd];
                    axpys_at(lv, codec, &w, &rows, rb, &mut got_v);
                    for (a, b) in want_v.iter().zip(&got_v) {
                        assert!(
                            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                            "{lv:?} {codec:?} v"
                        );
                    }
                }
            }
        }
    }
}

//! Calibration: per-input-channel mean squared activations of every weight matrix
//! (llama.cpp's "importance matrix"), used to weight the quantizers' squared error.
//!
//! [`collect`] runs a model over a text in chunks of `ctx` tokens in a session with an
//! activation observer (`model::ActivationObserver`, which the model layer calls with the
//! input of every mat-mul), and accumulates `Σ x_c²` and the row count for every matrix
//! by its canonical tensor name. [`Imatrix::importance`] gives `mean x_c²` per column.
//!
//! For tensors a conversion stores rotated (`--rotate`, `quant::rotate`), the importance
//! of stored column `j` is the mean of `(R_g·x)_j²` — the diagonal of the rotated second
//! moment, not of `x`'s. Calibration collects it too, for every group size `g` in
//! [`ROT_GROUPS`] that divides the matrix's columns, under the name `<tensor>@rot<g>`.
//!
//! File format (`--imatrix FILE`, little-endian):
//! ```text
//! "QSIMTX01"  magic (8 bytes)
//! u32 n_entries
//! n × { u32 name_len, name (UTF-8), u32 cols, u64 rows_seen, f32 mean_sq[cols] }
//! ```
//!
//! With `hessians` on ([`collect_with`], `convert --calibrate --gptq`), calibration also
//! accumulates the full input second moment `H = Σ x xᵀ` (cols × cols, upper triangle,
//! f64) for GPTQ (`quant::gptq`): once per distinct mat-mul input — matrices that share an
//! input (q/k/v, gate/up) share one [`Hessian`] (an `Arc`). On SmolLM2-135M that is
//! 30 × (3·576² + 1536²) × 8 bytes ≈ 0.8 GB. They are kept in [`Imatrix::hessians`], and
//! can be saved (`--hessian FILE`, [`save_hessians`]; little-endian):
//! ```text
//! "QSHESS01"  magic (8 bytes)
//! u32 n_inputs
//! n × { u32 n_names, n_names × { u32 name_len, name (UTF-8) }, u32 cols, u64 rows_seen,
//!       f32 mean[cols·(cols+1)/2]   // E[x_i x_j], j ≥ i, row by row }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use crate::engine::{Model, ModelParams, Session, SessionParams};
use crate::model::{ActivationObserver, ObserverHandle};
use crate::quant::gptq::{self, GptqFactor};
use crate::tensor::Tensor;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"QSIMTX01";
const HESS_MAGIC: &[u8; 8] = b"QSHESS01";

/// Input second moment of one mat-mul input (shared by the matrices that read it).
pub struct Hessian {
    /// columns (input dimension)
    pub cols: usize,
    /// activation rows accumulated
    pub rows: u64,
    /// `Σ x_i x_j` for `j ≥ i`, row-major cols × cols (entries below the diagonal are 0)
    pub sum: Vec<f64>,
    /// natural-order and act-order factors, computed on first use
    factor: [OnceLock<std::result::Result<Arc<GptqFactor>, String>>; 2],
}

impl Hessian {
    /// A Hessian from accumulated upper-triangle sums.
    pub fn new(cols: usize, rows: u64, sum: Vec<f64>) -> Self {
        Hessian {
            cols,
            rows,
            sum,
            factor: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The GPTQ factor of this `H` (damping [`gptq::DEFAULT_DAMP`]; columns in natural
    /// order, or in act-order), computed once and shared by every matrix reading this input.
    pub fn factor(&self, act_order: bool) -> Result<Arc<GptqFactor>> {
        self.factor[act_order as usize]
            .get_or_init(|| {
                let f = if act_order {
                    GptqFactor::new_act_order(&self.sum, self.cols, gptq::DEFAULT_DAMP)
                } else {
                    GptqFactor::new(&self.sum, self.cols, gptq::DEFAULT_DAMP)
                };
                f.map(Arc::new).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::InvalidArgument)
    }
}

impl std::fmt::Debug for Hessian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Hessian({}x{}, {} rows)",
            self.cols, self.cols, self.rows
        )
    }
}

impl PartialEq for Hessian {
    fn eq(&self, o: &Self) -> bool {
        self.cols == o.cols && self.rows == o.rows && self.sum == o.sum
    }
}

/// Add `n` rows of `xs` (n × cols) to the upper triangle `sum` of `Σ x xᵀ`: tiles of 16
/// rows of `sum` in parallel, each swept over all inputs (the tile stays in cache).
fn accumulate_upper(sum: &mut [f64], cols: usize, xs: &[f32], n: usize) {
    const T: usize = 16;
    sum.par_chunks_mut(T * cols)
        .enumerate()
        .for_each(|(ti, tile)| {
            let i0 = ti * T;
            for x in xs.chunks_exact(cols).take(n) {
                for (r, hrow) in tile.chunks_exact_mut(cols).enumerate() {
                    let i = i0 + r;
                    let xi = x[i] as f64;
                    if xi == 0.0 {
                        continue;
                    }
                    for (h, xj) in hrow[i..].iter_mut().zip(&x[i..]) {
                        *h += xi * *xj as f64;
                    }
                }
            }
        });
}

/// Hessians being accumulated: by the first matrix name of each input, plus aliases.
#[derive(Default)]
struct HessAcc {
    sums: BTreeMap<String, (usize, Vec<f64>, u64)>,
    alias: BTreeMap<String, String>,
}

impl HessAcc {
    fn add(&mut self, ws: &[&Tensor], xs: &[f32], n: usize) {
        let Some(first) = ws.first() else { return };
        let cols = first.cols();
        if cols == 0 || xs.len() < n * cols {
            return;
        }
        let key = first.name.clone();
        for w in ws {
            self.alias
                .entry(w.name.clone())
                .or_insert_with(|| key.clone());
        }
        if self.alias.get(&key) != Some(&key) {
            return; // this input is accumulated under another matrix's name
        }
        let e = self
            .sums
            .entry(key)
            .or_insert_with(|| (cols, vec![0.0; cols * cols], 0));
        if e.0 != cols {
            return;
        }
        accumulate_upper(&mut e.1, cols, xs, n);
        e.2 += n as u64;
    }

    fn finish(self) -> BTreeMap<String, Arc<Hessian>> {
        let shared: BTreeMap<String, Arc<Hessian>> = self
            .sums
            .into_iter()
            .map(|(k, (cols, sum, rows))| (k, Arc::new(Hessian::new(cols, rows, sum))))
            .collect();
        self.alias
            .into_iter()
            .filter_map(|(name, key)| shared.get(&key).map(|h| (name, Arc::clone(h))))
            .collect()
    }
}

/// Serialize the Hessians of `im` (see the module docs); inputs shared by several matrices
/// are written once.
pub fn hessians_to_bytes(im: &Imatrix) -> Vec<u8> {
    let mut groups: Vec<(Arc<Hessian>, Vec<&str>)> = Vec::new();
    for (name, h) in &im.hessians {
        match groups.iter_mut().find(|(g, _)| Arc::ptr_eq(g, h)) {
            Some((_, names)) => names.push(name),
            None => groups.push((Arc::clone(h), vec![name])),
        }
    }
    let mut b = HESS_MAGIC.to_vec();
    b.extend((groups.len() as u32).to_le_bytes());
    for (h, names) in &groups {
        b.extend((names.len() as u32).to_le_bytes());
        for n in names {
            b.extend((n.len() as u32).to_le_bytes());
            b.extend(n.as_bytes());
        }
        b.extend((h.cols as u32).to_le_bytes());
        b.extend(h.rows.to_le_bytes());
        let rows = h.rows.max(1) as f64;
        for i in 0..h.cols {
            for v in &h.sum[i * h.cols + i..(i + 1) * h.cols] {
                b.extend(((v / rows) as f32).to_le_bytes());
            }
        }
    }
    b
}

/// Parse [`hessians_to_bytes`] output into name → Hessian (shared inputs share one `Arc`).
pub fn hessians_from_bytes(b: &[u8]) -> Result<BTreeMap<String, Arc<Hessian>>> {
    let bad = |m: &str| Error::corrupt(format!("hessian file: {m}"));
    let mut c = crate::format::bytes::Cursor::new(b, "hessian file");
    if c.take(8)? != HESS_MAGIC {
        return Err(bad("bad magic"));
    }
    let n = c.u32()?;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let nn = c.u32()?;
        let mut names = Vec::new();
        for _ in 0..nn {
            let len = c.u32()? as usize;
            let name = std::str::from_utf8(c.take(len)?)
                .map_err(|_| bad("name is not UTF-8"))?
                .to_string();
            names.push(name);
        }
        let cols = c.u32()? as usize;
        let rows = c.u64()?;
        let tri = cols
            .checked_mul(cols + 1)
            .map(|v| v / 2)
            .and_then(|v| v.checked_mul(4))
            .ok_or_else(|| bad("size overflows"))?;
        let data = c.take(tri)?;
        let mut sum = vec![0f64; cols * cols];
        let mut it = data.chunks_exact(4);
        for i in 0..cols {
            for v in &mut sum[i * cols + i..(i + 1) * cols] {
                let q = it.next().ok_or_else(|| bad("truncated"))?;
                let m = f32::from_le_bytes([q[0], q[1], q[2], q[3]]) as f64;
                if !m.is_finite() {
                    return Err(bad("non-finite statistics"));
                }
                *v = m * rows as f64;
            }
        }
        let h = Arc::new(Hessian::new(cols, rows, sum));
        for name in names {
            out.insert(name, Arc::clone(&h));
        }
    }
    if c.pos() != b.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

/// Write the Hessians of `im` to `path` (see the module docs).
pub fn save_hessians(im: &Imatrix, path: &Path) -> Result<()> {
    std::fs::write(path, hessians_to_bytes(im)).map_err(|e| Error::io(path, e))
}

/// Read a Hessian file written by [`save_hessians`].
pub fn load_hessians(path: &Path) -> Result<BTreeMap<String, Arc<Hessian>>> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    hessians_from_bytes(&b)
}

/// Rotation group sizes whose statistics calibration collects (`<tensor>@rot<g>`).
pub const ROT_GROUPS: [usize; 5] = [16, 32, 64, 128, 256];

/// The imatrix entry name of `name`'s statistics under rotation group `g`.
pub fn rot_name(name: &str, g: usize) -> String {
    format!("{name}@rot{g}")
}

/// Per-matrix activation statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imatrix {
    /// canonical tensor name → (Σ x² per input column, rows observed)
    pub entries: BTreeMap<String, (Vec<f64>, u64)>,
    /// canonical tensor name → full input second moment, for GPTQ (empty unless
    /// collected with `hessians`; not part of the imatrix file, see [`save_hessians`])
    pub hessians: BTreeMap<String, Arc<Hessian>>,
}

impl Imatrix {
    /// Mean squared activation per column of `name` (`None` if never observed or if the
    /// column count differs). Columns never active get a small floor so no weight is
    /// ignored entirely.
    pub fn importance(&self, name: &str, cols: usize) -> Option<Vec<f32>> {
        let (sums, rows) = self.entries.get(name)?;
        if sums.len() != cols || *rows == 0 {
            return None;
        }
        let mean: Vec<f64> = sums.iter().map(|s| s / *rows as f64).collect();
        let avg = mean.iter().sum::<f64>() / cols.max(1) as f64;
        let floor = (avg * 1e-4).max(f64::MIN_POSITIVE);
        Some(mean.iter().map(|m| m.max(floor) as f32).collect())
    }

    /// Importance of the columns of `name` stored rotated with group `g`: the collected
    /// `<name>@rot<g>` statistics, or, for files without them, the approximation that
    /// ignores correlations between columns (each group's mean of the plain importance:
    /// `E[(R·x)_j²] = Σ_i R_ji² E[x_i²] + cross terms`, and `R_ji² = 1/g` inside a group).
    pub fn rotated_importance(&self, name: &str, cols: usize, g: usize) -> Option<Vec<f32>> {
        if let Some(v) = self.importance(&rot_name(name, g), cols) {
            return Some(v);
        }
        let mut v = self.importance(name, cols)?;
        if g == 0 || !cols.is_multiple_of(g) {
            return None;
        }
        for grp in v.chunks_exact_mut(g) {
            let m = grp.iter().sum::<f32>() / g as f32;
            grp.fill(m);
        }
        Some(v)
    }

    /// Add the rotated statistics (`<name>@rot<g>` for each `g` in [`ROT_GROUPS`] dividing
    /// `cols`) of `n` activation rows.
    pub fn add_rotated(&mut self, name: &str, xs: &[f32], n: usize, cols: usize) {
        if cols == 0 || xs.len() < n * cols {
            return;
        }
        // accumulate_rotated_sq walks g = 2, 4, …, 256; unused sizes get an empty vector
        let mut sums: Vec<Vec<f64>> = (1..=8)
            .map(|k| {
                let g = 1usize << k;
                if ROT_GROUPS.contains(&g) && cols.is_multiple_of(g) {
                    match self.entries.remove(&rot_name(name, g)) {
                        Some((v, _)) if v.len() == cols => v,
                        _ => vec![0.0; cols],
                    }
                } else {
                    Vec::new()
                }
            })
            .collect();
        let mut buf = vec![0f32; cols];
        for row in xs[..n * cols].chunks_exact(cols) {
            crate::quant::rotate::accumulate_rotated_sq(row, &mut buf, &mut sums);
        }
        let seen = self.entries.get(name).map_or(n as u64, |e| e.1);
        for (k, v) in sums.into_iter().enumerate() {
            if !v.is_empty() {
                self.entries.insert(rot_name(name, 1 << (k + 1)), (v, seen));
            }
        }
    }

    /// Add `n` activation rows of `cols` values for tensor `name`.
    pub fn add(&mut self, name: &str, xs: &[f32], n: usize, cols: usize) {
        if cols == 0 || xs.len() < n * cols {
            return;
        }
        let e = self
            .entries
            .entry(name.to_string())
            .or_insert_with(|| (vec![0.0; cols], 0));
        if e.0.len() != cols {
            return;
        }
        for row in xs[..n * cols].chunks_exact(cols) {
            for (s, v) in e.0.iter_mut().zip(row) {
                *s += (*v as f64) * (*v as f64);
            }
        }
        e.1 += n as u64;
    }

    /// Serialize (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend((self.entries.len() as u32).to_le_bytes());
        for (name, (sums, rows)) in &self.entries {
            b.extend((name.len() as u32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend((sums.len() as u32).to_le_bytes());
            b.extend(rows.to_le_bytes());
            for s in sums {
                let mean = if *rows > 0 { s / *rows as f64 } else { 0.0 };
                b.extend((mean as f32).to_le_bytes());
            }
        }
        b
    }

    /// Parse bytes written by [`Imatrix::to_bytes`]; malformed input is `Error::Corrupt`.
    pub fn from_bytes(b: &[u8]) -> Result<Imatrix> {
        let bad = |m: &str| Error::corrupt(format!("imatrix: {m}"));
        let mut pos = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let end = pos
                .checked_add(n)
                .filter(|e| *e <= b.len())
                .ok_or_else(|| bad("truncated"))?;
            let s = &b[pos..end];
            pos = end;
            Ok(s)
        };
        if take(8)? != MAGIC {
            return Err(bad("bad magic"));
        }
        let u32_at = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
        let n = u32_at(take(4)?);
        let mut entries = BTreeMap::new();
        for _ in 0..n {
            let len = u32_at(take(4)?);
            let name = std::str::from_utf8(take(len)?)
                .map_err(|_| bad("name is not UTF-8"))?
                .to_string();
            let cols = u32_at(take(4)?);
            let r = take(8)?;
            let rows = u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]);
            let data = take(cols.checked_mul(4).ok_or_else(|| bad("size overflows"))?)?;
            let sums: Vec<f64> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64 * rows as f64)
                .collect();
            if sums.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(bad(&format!("{name}: negative or non-finite statistics")));
            }
            entries.insert(name, (sums, rows));
        }
        if pos != b.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(Imatrix {
            entries,
            hessians: BTreeMap::new(),
        })
    }

    /// Write to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()).map_err(|e| Error::io(path, e))
    }

    /// Read from `path`.
    pub fn load(path: &Path) -> Result<Imatrix> {
        let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&b)
    }
}

/// The calibration observer: accumulates the statistics of every mat-mul input of the
/// session it is installed in (`SessionParams::observer`). Owned by that session, so
/// calibrations (and other models) in the same process do not see each other.
struct Collector {
    sink: Mutex<(Imatrix, Option<HessAcc>)>,
}

impl ActivationObserver for Collector {
    fn observe(&self, ws: &[&Tensor], xs: &[f32], n: usize) {
        let Ok(mut g) = self.sink.lock() else { return };
        let (im, hess) = &mut *g;
        for w in ws {
            im.add(&w.name, xs, n, w.cols());
            im.add_rotated(&w.name, xs, n, w.cols());
        }
        if let Some(h) = hess {
            h.add(ws, xs, n);
        }
    }
}

/// Run the QSF model at `model` over `text` in chunks of `ctx` tokens (at most
/// `max_chunks`, 0 = all) and return the activation statistics of every matrix.
pub fn collect(
    model: &Path,
    text: &str,
    ctx: usize,
    max_chunks: usize,
    n_threads: usize,
) -> Result<Imatrix> {
    collect_with(model, text, ctx, max_chunks, n_threads, false)
}

/// [`collect`], optionally also accumulating the full input second moments
/// ([`Imatrix::hessians`], for `convert --gptq`).
pub fn collect_with(
    model: &Path,
    text: &str,
    ctx: usize,
    max_chunks: usize,
    n_threads: usize,
    hessians: bool,
) -> Result<Imatrix> {
    let model = Model::load(
        model,
        &ModelParams {
            n_threads,
            ..Default::default()
        },
    )?;
    let tokens = model.tokenizer().encode(text, false)?;
    let ctx = ctx.max(4);
    let mut n_chunks = tokens.len() / ctx;
    if max_chunks > 0 {
        n_chunks = n_chunks.min(max_chunks);
    }
    if n_chunks == 0 {
        return Err(Error::InvalidArgument(format!(
            "calibration text has {} tokens, fewer than one chunk of {ctx}",
            tokens.len()
        )));
    }
    let collector = Arc::new(Collector {
        sink: Mutex::new((Imatrix::default(), hessians.then(HessAcc::default))),
    });
    let mut session = Session::new(
        model,
        &SessionParams {
            n_ctx: ctx,
            observer: Some(ObserverHandle(collector.clone())),
            ..Default::default()
        },
    )?;
    for c in 0..n_chunks {
        session.reset();
        session.decode(&tokens[c * ctx..(c + 1) * ctx])?;
    }
    drop(session);
    let (mut im, hess) = std::mem::take(
        &mut *collector
            .sink
            .lock()
            .map_err(|_| Error::Internal("imatrix lock poisoned".into()))?,
    );
    if let Some(h) = hess {
        im.hessians = h.finish();
    }
    Ok(im)
}

/// Where a conversion's activation statistics come from: the options of `qstream convert
/// --calibrate/--imatrix/--gptq/--hessian`, in one place for the CLI, C and Python.
#[derive(Debug, Clone)]
pub struct CalibrationSource {
    /// Calibration text file: the source is converted to q8 in a temporary file and run
    /// over it ([`collect_with`]).
    pub text: Option<std::path::PathBuf>,
    /// Activation statistics file: written after calibrating on `text`, read without it.
    pub imatrix: Option<std::path::PathBuf>,
    /// Also collect (or read from `hessian`) the full input second moments (for GPTQ).
    pub hessians: bool,
    /// Second-moment file: written after calibrating on `text` with `hessians`, read
    /// without `text`.
    pub hessian: Option<std::path::PathBuf>,
    /// Chunk length in tokens (default 256).
    pub ctx: usize,
    /// At most this many chunks (0 = all; default 32).
    pub max_chunks: usize,
    /// Worker threads (0 = all cores).
    pub n_threads: usize,
}

impl Default for CalibrationSource {
    fn default() -> Self {
        CalibrationSource {
            text: None,
            imatrix: None,
            hessians: false,
            hessian: None,
            ctx: 256,
            max_chunks: 32,
            n_threads: 0,
        }
    }
}

impl CalibrationSource {
    /// Collect (from `text`) or read (from `imatrix` / `hessian`) the statistics for
    /// converting `src`; `None` when no statistics were asked for.
    pub fn prepare(&self, src: &Path) -> Result<Option<Imatrix>> {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut im = match (&self.text, &self.imatrix) {
            (Some(text), out) => {
                let text = std::fs::read_to_string(text).map_err(|e| Error::io(text, e))?;
                let tmp = std::env::temp_dir().join(format!(
                    "qstream-calib-{}-{}.qsf",
                    std::process::id(),
                    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                let cp = super::ConvertParams {
                    quant: super::QuantChoice::Type(crate::quant::QuantType::Q8),
                    n_threads: self.n_threads,
                    ..Default::default()
                };
                let res = super::convert(src, &tmp, &cp, &mut |_| true).and_then(|_| {
                    collect_with(
                        &tmp,
                        &text,
                        self.ctx,
                        self.max_chunks,
                        self.n_threads,
                        self.hessians,
                    )
                });
                let _ = std::fs::remove_file(&tmp);
                let im = res?;
                if let Some(out) = out {
                    im.save(out)?;
                }
                if let (true, Some(h)) = (self.hessians, &self.hessian) {
                    save_hessians(&im, h)?;
                }
                return Ok(Some(im));
            }
            (None, Some(f)) => Some(Imatrix::load(f)?),
            (None, None) => None,
        };
        if let (true, Some(h)) = (self.hessians, &self.hessian) {
            let mut m = im.take().unwrap_or_default();
            m.hessians = load_hessians(h)?;
            im = Some(m);
        }
        Ok(im)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip_and_corruption() {
        let mut im = Imatrix::default();
        im.add("blk.0.attn_q.weight", &[1.0, 2.0, -3.0, 0.0], 2, 2);
        // column means of x²: (1 + 9)/2 = 5, (4 + 0)/2 = 2
        assert_eq!(
            im.importance("blk.0.attn_q.weight", 2),
            Some(vec![5.0, 2.0])
        );
        assert_eq!(im.importance("blk.0.attn_q.weight", 3), None);
        let b = im.to_bytes();
        assert_eq!(Imatrix::from_bytes(&b).unwrap(), im);
        for cut in 0..b.len() {
            assert!(Imatrix::from_bytes(&b[..cut]).is_err());
        }
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(Imatrix::from_bytes(&bad).is_err());
        let mut huge = b.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Imatrix::from_bytes(&huge).is_err());
    }

    #[test]
    fn zero_columns_get_a_floor() {
        let mut im = Imatrix::default();
        im.add("w", &[2.0, 0.0], 1, 2);
        let imp = im.importance("w", 2).unwrap();
        assert_eq!(imp[0], 4.0);
        assert!(imp[1] > 0.0 && imp[1] < 1e-3);
    }

    #[test]
    fn hessians_accumulate_share_and_round_trip() {
        // two inputs of 3 columns: x = (1, 2, 0), (0, 1, -1)
        let xs = [1.0f32, 2.0, 0.0, 0.0, 1.0, -1.0];
        let mut acc = HessAcc::default();
        let q = Tensor::from_f32("q", vec![2, 3], &[0.0; 6]);
        let k = Tensor::from_f32("k", vec![1, 3], &[0.0; 3]);
        acc.add(&[&q, &k], &xs, 2);
        let hs = acc.finish();
        assert!(Arc::ptr_eq(&hs["q"], &hs["k"]), "q and k share one input");
        let h = Arc::clone(&hs["q"]);
        assert_eq!(h.rows, 2);
        // upper triangle of Σ x xᵀ
        assert_eq!(h.sum, vec![1.0, 2.0, 0.0, 0.0, 5.0, -1.0, 0.0, 0.0, 1.0]);
        let im = Imatrix {
            entries: BTreeMap::new(),
            hessians: hs,
        };
        let b = hessians_to_bytes(&im);
        let back = hessians_from_bytes(&b).unwrap();
        assert_eq!(back.len(), 2);
        assert!(Arc::ptr_eq(&back["q"], &back["k"]));
        assert_eq!(*back["q"], *h);
        for cut in 0..b.len() {
            assert!(hessians_from_bytes(&b[..cut]).is_err());
        }
        // H is singular (2 inputs, 3 columns): damping still gives a factor
        assert!(h.factor(false).is_ok());
        assert!(h.factor(true).is_ok());
    }
}

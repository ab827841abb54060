//! `qstream.AttentionCache`: the standalone KV cache + attention on NumPy arrays.

use std::sync::Mutex;

use numpy::ndarray::Array3;
use numpy::{PyArray3, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::prelude::*;

use qstream_core::kv::{AttentionCache, AttentionParams, KvType};

use crate::errors::{attached, detached, Fail};
use crate::model::kv_type_arg;

/// A KV cache of one attention layer with causal attention, for other engines.
///
/// k and v are float32 arrays of shape (n_tokens, n_kv_heads, head_dim); q and the
/// result of attend() (n_tokens, n_q_heads, head_dim). Query head h reads KV head
/// h // (n_q_heads // n_kv_heads). k_type / v_type: "f32" (default), "f16", "bf16",
/// "q8", "q4", "q3", "q2", "qins8", "q8h", "q4h", "q3h", "q2h" (quantized types need
/// head_dim a multiple of 32, at most 512). C-contiguous arrays are read in place
/// (others are copied); every call runs with the GIL released. One thread at a time:
/// a concurrent call raises BusyError.
#[pyclass(name = "AttentionCache", module = "qstream")]
pub struct PyAttentionCache {
    inner: Mutex<AttentionCache>,
    p: AttentionParams,
}

fn data<'a>(
    a: &'a PyReadonlyArray3<'_, f32>,
    what: &str,
) -> Result<std::borrow::Cow<'a, [f32]>, Fail> {
    match a.as_slice() {
        Ok(s) => Ok(std::borrow::Cow::Borrowed(s)),
        Err(_) => {
            let v: Vec<f32> = a.as_array().iter().copied().collect();
            if v.len() != a.len() {
                return Err(Fail::Arg(format!("{what}: unreadable array")));
            }
            Ok(std::borrow::Cow::Owned(v))
        }
    }
}

impl PyAttentionCache {
    fn check(
        &self,
        a: &PyReadonlyArray3<'_, f32>,
        what: &str,
        heads: usize,
    ) -> Result<usize, Fail> {
        let s = a.shape();
        if s[1] != heads || s[2] != self.p.head_dim {
            return Err(Fail::Arg(format!(
                "{what} must have shape (n_tokens, {heads}, {}), got {s:?}",
                self.p.head_dim
            )));
        }
        Ok(s[0])
    }

    fn with<T>(&self, f: impl FnOnce(&mut AttentionCache) -> Result<T, Fail>) -> Result<T, Fail> {
        let mut g = match self.inner.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(Fail::Busy("AttentionCache is in use by another thread"))
            }
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        };
        f(&mut g)
    }
}

#[pymethods]
impl PyAttentionCache {
    /// An empty cache of `capacity` positions (allocated up front).
    #[new]
    #[pyo3(signature = (*, head_dim, n_kv_heads, n_q_heads=None, capacity=4096, k_type="f32", v_type="f32"))]
    fn new(
        py: Python<'_>,
        head_dim: usize,
        n_kv_heads: usize,
        n_q_heads: Option<usize>,
        capacity: usize,
        k_type: &str,
        v_type: &str,
    ) -> PyResult<Self> {
        let p = AttentionParams {
            head_dim,
            n_kv_heads,
            n_q_heads: n_q_heads.unwrap_or(n_kv_heads),
            capacity,
            k_type: kv_type_arg(py, "k_type", Some(k_type))?.unwrap_or(KvType::F32),
            v_type: kv_type_arg(py, "v_type", Some(v_type))?.unwrap_or(KvType::F32),
        };
        let c = detached(py, || Ok(AttentionCache::new(&p)?))?;
        Ok(PyAttentionCache {
            inner: Mutex::new(c),
            p,
        })
    }

    /// Append the keys and values of n_tokens positions (float32, shape
    /// (n_tokens, n_kv_heads, head_dim) each). Raises InvalidArgumentError when they do not
    /// fit (nothing is appended).
    fn append(
        &self,
        py: Python<'_>,
        k: PyReadonlyArray3<'_, f32>,
        v: PyReadonlyArray3<'_, f32>,
    ) -> PyResult<()> {
        let (n, nv) = attached(py, || {
            Ok((
                self.check(&k, "k", self.p.n_kv_heads)?,
                self.check(&v, "v", self.p.n_kv_heads)?,
            ))
        })?;
        if n != nv {
            return Err(Fail::Arg(format!("k has {n} tokens, v has {nv}")).into_pyerr(py));
        }
        let kd = attached(py, || data(&k, "k"))?;
        let vd = attached(py, || data(&v, "v"))?;
        let (kd, vd): (&[f32], &[f32]) = (&kd, &vd);
        detached(py, || self.with(|c| Ok(c.append(kd, vd, n)?)))
    }

    /// Attention of the queries q (float32, shape (n_tokens, n_q_heads, head_dim)), the
    /// last n_tokens cached positions: causal=True lets query i see positions up to its
    /// own (len - n_tokens + i), causal=False every cached position. scale defaults to
    /// 1/sqrt(head_dim). Returns a new float32 array of q's shape.
    #[pyo3(signature = (q, *, causal=true, scale=None))]
    fn attend<'py>(
        &self,
        py: Python<'py>,
        q: PyReadonlyArray3<'py, f32>,
        causal: bool,
        scale: Option<f32>,
    ) -> PyResult<Bound<'py, PyArray3<f32>>> {
        let n = attached(py, || self.check(&q, "q", self.p.n_q_heads))?;
        let qd = attached(py, || data(&q, "q"))?;
        let qd: &[f32] = &qd;
        let (nq, hd) = (self.p.n_q_heads, self.p.head_dim);
        let out = detached(py, || {
            let mut out = vec![0f32; n * nq * hd];
            self.with(|c| Ok(c.attend(qd, n, causal, scale, &mut out)?))?;
            Ok(out)
        })?;
        let arr = Array3::from_shape_vec((n, nq, hd), out)
            .map_err(|e| Fail::Panic(format!("attend shape: {e}")).into_pyerr(py))?;
        Ok(PyArray3::from_owned_array(py, arr))
    }

    /// Keep the first n positions and drop the rest (n ≤ len).
    fn truncate(&self, py: Python<'_>, n: usize) -> PyResult<()> {
        detached(py, || self.with(|c| Ok(c.truncate(n)?)))
    }

    /// Cached positions.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        attached(py, || self.with(|c| Ok(c.len())))
    }

    /// Bytes held by K and V (the full capacity).
    #[getter]
    fn memory_bytes(&self, py: Python<'_>) -> PyResult<usize> {
        attached(py, || self.with(|c| Ok(c.memory_bytes())))
    }

    /// Bytes of K and V per cached position.
    #[getter]
    fn bytes_per_token(&self, py: Python<'_>) -> PyResult<usize> {
        attached(py, || self.with(|c| Ok(c.bytes_per_token())))
    }

    /// Values per head vector.
    #[getter]
    fn head_dim(&self) -> usize {
        self.p.head_dim
    }

    /// Key/value heads.
    #[getter]
    fn n_kv_heads(&self) -> usize {
        self.p.n_kv_heads
    }

    /// Query heads.
    #[getter]
    fn n_q_heads(&self) -> usize {
        self.p.n_q_heads
    }

    /// Positions the cache can hold.
    #[getter]
    fn capacity(&self) -> usize {
        self.p.capacity
    }

    /// Element type of the keys.
    #[getter]
    fn k_type(&self) -> &'static str {
        self.p.k_type.name()
    }

    /// Element type of the values.
    #[getter]
    fn v_type(&self) -> &'static str {
        self.p.v_type.name()
    }

    fn __repr__(&self) -> String {
        format!(
            "AttentionCache(head_dim={}, n_kv_heads={}, n_q_heads={}, capacity={}, k_type={:?}, v_type={:?})",
            self.p.head_dim,
            self.p.n_kv_heads,
            self.p.n_q_heads,
            self.p.capacity,
            self.p.k_type.name(),
            self.p.v_type.name()
        )
    }
}

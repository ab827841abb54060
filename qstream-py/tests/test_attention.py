"""qstream.AttentionCache against NumPy softmax attention."""

import numpy as np
import pytest

import qstream

TYPES = ["f32", "f16", "bf16", "q8", "q4", "q3", "q2", "qins8", "q8h", "q4h", "q3h", "q2h"]


def ref(q, k, v, causal=True, scale=None):
    n, T, d = q.shape[0], k.shape[0], q.shape[2]
    group = q.shape[1] // k.shape[1]
    kk = np.repeat(k, group, axis=1).astype(np.float64)
    vv = np.repeat(v, group, axis=1).astype(np.float64)
    s = np.einsum("nhd,thd->hnt", q.astype(np.float64), kk) * (scale or 1 / np.sqrt(d))
    if causal:
        pos = T - n + np.arange(n)
        s = np.where(np.arange(T)[None, None, :] <= pos[None, :, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hnt,thd->nhd", p, vv)


def min_cosine(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return ((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min()


def data(T, n_kv, n_q, d, seed=0):
    r = np.random.default_rng(seed)
    k = r.standard_normal((T, n_kv, d), dtype=np.float32)
    k[:, :, 5] *= 6  # an outlier channel
    return k, r.standard_normal((T, n_kv, d), dtype=np.float32), r.standard_normal((T, n_q, d), dtype=np.float32)


@pytest.mark.parametrize("n_kv,n_q", [(1, 1), (2, 6), (4, 4)])
def test_f32_matches_numpy_prefill_and_decode(n_kv, n_q):
    d, P, G = 64, 20, 12
    k, v, q = data(P + G, n_kv, n_q, d)
    c = qstream.AttentionCache(head_dim=d, n_kv_heads=n_kv, n_q_heads=n_q, capacity=P + G)
    c.append(k[:P], v[:P])
    out = c.attend(q[:P])
    assert out.shape == (P, n_q, d) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref(q[:P], k[:P], v[:P]), atol=1e-5, rtol=0)
    for t in range(P, P + G):
        c.append(k[t:t + 1], v[t:t + 1])
        np.testing.assert_allclose(c.attend(q[t:t + 1]), ref(q[t:t + 1], k[:t + 1], v[:t + 1]),
                                   atol=1e-5, rtol=0)
    assert len(c) == P + G


def test_non_causal_and_scale():
    d = 32
    k, v, q = data(9, 2, 4, d, seed=1)
    c = qstream.AttentionCache(head_dim=d, n_kv_heads=2, n_q_heads=4, capacity=16)
    c.append(k, v)
    np.testing.assert_allclose(c.attend(q[:3], causal=False, scale=0.3),
                               ref(q[:3], k, v, causal=False, scale=0.3), atol=1e-5, rtol=0)
    # a non-contiguous query is read correctly too
    qt = np.ascontiguousarray(q[:4].transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not qt.flags.c_contiguous
    np.testing.assert_allclose(c.attend(qt), ref(q[:4], k, v), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kt", TYPES)
@pytest.mark.parametrize("vt", ["f32", "q8", "q4", "qins8"])
def test_quantized_types_track_numpy(kt, vt):
    d, T = 128, 300
    k, v, q = data(T, 2, 4, d, seed=2)
    c = qstream.AttentionCache(head_dim=d, n_kv_heads=2, n_q_heads=4, capacity=T, k_type=kt, v_type=vt)
    c.append(k, v)
    cos = min_cosine(c.attend(q[-16:]), ref(q[-16:], k, v))
    # worst-row cosine by key type (measured on this data, with margin): keys with an
    # outlier channel are where the rotation pays (q2 0.64 -> q2h 0.86)
    bound = {"q4": 0.975, "q4h": 0.98, "q3": 0.95, "q3h": 0.96, "q2": 0.6, "q2h": 0.85}
    assert cos >= bound.get(kt, 0.99), (kt, vt, cos)
    assert c.k_type == kt and c.v_type == vt


def test_bytes_per_token():
    c = qstream.AttentionCache(head_dim=64, n_kv_heads=3, n_q_heads=9, capacity=10, k_type="q4", v_type="q8")
    # q4: 20 bytes per 32 values, q8: 34 bytes per 32 values
    assert c.bytes_per_token == 3 * (2 * 20 + 2 * 34)
    assert c.memory_bytes == 10 * c.bytes_per_token


def test_truncate_and_refill():
    d = 64
    k, v, q = data(10, 1, 2, d, seed=3)
    c = qstream.AttentionCache(head_dim=d, n_kv_heads=1, n_q_heads=2, capacity=10, k_type="q8", v_type="q8")
    c.append(k, v)
    full = c.attend(q[-1:])
    c.truncate(6)
    assert len(c) == 6
    c.append(k[6:], v[6:])
    np.testing.assert_array_equal(c.attend(q[-1:]), full)


def test_errors():
    with pytest.raises(qstream.InvalidArgumentError, match="head_dim"):
        qstream.AttentionCache(head_dim=48, n_kv_heads=1, k_type="q4")
    with pytest.raises(qstream.InvalidArgumentError, match="multiple"):
        qstream.AttentionCache(head_dim=64, n_kv_heads=2, n_q_heads=3)
    with pytest.raises(qstream.InvalidArgumentError, match="k_type"):
        qstream.AttentionCache(head_dim=64, n_kv_heads=1, k_type="q5")
    c = qstream.AttentionCache(head_dim=32, n_kv_heads=1, capacity=4)
    k = np.zeros((5, 1, 32), np.float32)
    with pytest.raises(qstream.InvalidArgumentError, match="fit"):
        c.append(k, k)
    assert len(c) == 0
    with pytest.raises(qstream.InvalidArgumentError, match="shape"):
        c.append(np.zeros((1, 2, 32), np.float32), np.zeros((1, 2, 32), np.float32))
    with pytest.raises(qstream.InvalidArgumentError, match="cached positions"):
        c.attend(np.zeros((1, 1, 32), np.float32))
    with pytest.raises(TypeError):
        c.append(np.zeros((1, 1, 32), np.float64), np.zeros((1, 1, 32), np.float64))
    with pytest.raises(qstream.InvalidArgumentError):
        c.truncate(1)


def test_model_cache_types(tiny_qsf):
    # the tiny fixture's head_dim (16) cannot take a quantized type: a clear error
    with qstream.Model(tiny_qsf, cache_type_k="q4") as m:
        with pytest.raises(qstream.InvalidArgumentError, match="head_dim"):
            m.generate("Hello", max_tokens=2)
    with qstream.Model(tiny_qsf, cache_type_k="f16", cache_type_v="bf16") as m:
        assert isinstance(m.generate("Hello", max_tokens=2), str)
    with pytest.raises(qstream.InvalidArgumentError, match="cache_type_v"):
        qstream.Model(tiny_qsf, cache_type_v="q9")

"""qstream.AttentionCache, the standalone (optionally quantized) KV cache + attention,
compared with plain NumPy softmax attention.

    python examples-py/attention.py

No model needed: a prompt of random keys/values/queries is appended and attended in one
causal batch, then tokens are decoded one at a time; every output is compared with NumPy.
"""

import time

import numpy as np

import qstream

HEAD_DIM, N_KV, N_Q, N_PROMPT, N_GEN = 64, 2, 6, 32, 32


def numpy_attention(q, k, v, causal=True):
    """q: (n, n_q, d) queries of the last n positions; k, v: (T, n_kv, d)."""
    n, T = q.shape[0], k.shape[0]
    group = q.shape[1] // k.shape[1]
    kk = np.repeat(k, group, axis=1).astype(np.float64)  # (T, n_q, d)
    vv = np.repeat(v, group, axis=1).astype(np.float64)
    s = np.einsum("nhd,thd->hnt", q.astype(np.float64), kk) / np.sqrt(q.shape[2])
    if causal:
        pos = T - n + np.arange(n)
        s = np.where(np.arange(T)[None, None, :] <= pos[None, :, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hnt,thd->nhd", p, vv).astype(np.float32)


def cosine(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


rng = np.random.default_rng(0)
T = N_PROMPT + N_GEN
k = rng.standard_normal((T, N_KV, HEAD_DIM), dtype=np.float32)
k[:, :, 3] *= 8  # an outlier channel, as real keys have
v = rng.standard_normal((T, N_KV, HEAD_DIM), dtype=np.float32)
q = rng.standard_normal((T, N_Q, HEAD_DIM), dtype=np.float32)

for kt, vt in [("f32", "f32"), ("q8", "q8"), ("q4h", "q4"), ("q4", "q3"), ("q4h", "qins8")]:
    cache = qstream.AttentionCache(head_dim=HEAD_DIM, n_kv_heads=N_KV, n_q_heads=N_Q,
                                   capacity=T, k_type=kt, v_type=vt)
    t0 = time.perf_counter()
    cache.append(k[:N_PROMPT], v[:N_PROMPT])
    outs = [cache.attend(q[:N_PROMPT])]  # causal prefill
    for t in range(N_PROMPT, T):  # decode loop
        cache.append(k[t:t + 1], v[t:t + 1])
        outs.append(cache.attend(q[t:t + 1]))
    dt = time.perf_counter() - t0
    got = np.concatenate(outs)
    want = np.concatenate([numpy_attention(q[:N_PROMPT], k[:N_PROMPT], v[:N_PROMPT])] +
                          [numpy_attention(q[t:t + 1], k[:t + 1], v[:t + 1]) for t in range(N_PROMPT, T)])
    err = float(np.abs(got - want).max())
    print(f"k={kt:5s} v={vt:5s}: {cache.bytes_per_token:5d} bytes/token, max |err| {err:.2e}, "
          f"min cosine {cosine(got, want):.5f}, {dt * 1e3:.1f} ms")
    if kt == "f32" and vt == "f32":
        assert err < 1e-5, err
print("attention: NumPy agrees")

"""Logits as numpy arrays: next-token distribution and perplexity.

    python examples-py/numpy_logits.py [MODEL.qsf]
"""

import numpy as np

import qstream
from _common import model_path

with qstream.Model(model_path()) as model:
    prompt = "The quick brown fox jumps over the lazy"
    ids = model.tokenize(prompt)
    logits = model.logits(ids)  # float32, shape (len(ids), n_vocab)
    print(f"logits: shape {logits.shape}, dtype {logits.dtype}")

    last = logits[-1].astype(np.float64)
    probs = np.exp(last - last.max())
    probs /= probs.sum()
    print(f"top-5 next tokens after {prompt!r}:")
    for i in np.argsort(-probs)[:5]:
        print(f"  {int(i):6d} {model.detokenize([int(i)])!r:>14}  p={probs[i]:.4f}")

    # log-likelihood of the prompt's own tokens under the model
    lp = logits[:-1] - np.log(np.exp(logits[:-1] - logits[:-1].max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits[:-1].max(1, keepdims=True)
    nll = -lp[np.arange(len(ids) - 1), ids[1:]].mean()
    print(f"mean NLL of the prompt: {nll:.3f} nats (perplexity {np.exp(nll):.1f})")

    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)
    print(f"perplexity (llama.cpp method, ctx 32): {model.perplexity(text, ctx=32):.3f}")

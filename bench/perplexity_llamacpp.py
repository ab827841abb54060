#!/usr/bin/env python3
"""Perplexity with llama.cpp (through llama-cpp-python), by llama.cpp's own method
(tools/perplexity/perplexity.cpp, `perplexity()`):

* tokenize the whole text with add_special=true (BOS is prepended only if the model's vocab
  says so, `tokenizer.ggml.add_bos_token`), parse_special=false;
* split into n_chunks = len(tokens) // ctx non-overlapping chunks of ctx tokens;
* each chunk is evaluated from an empty KV cache with logits for every position; if the model
  adds BOS, the chunk's first token is replaced by BOS;
* only the second half is scored: positions j in [ctx/2, ctx-1) predict token j+1
  (log-softmax with max subtraction, summed in double);
* ppl = exp(mean NLL), printed after every chunk as llama.cpp does, and at the end.

usage: python3 bench/perplexity_llamacpp.py MODEL.gguf [-f FILE] [-c CTX] [-t THREADS] [--chunks N]
"""
import argparse
import math
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="GGUF file")
    ap.add_argument("-f", "--file", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("-c", "--ctx", type=int, default=256)
    ap.add_argument("-t", "--threads", type=int, default=0, help="0 = all cores")
    ap.add_argument("--chunks", type=int, default=0, help="score at most this many chunks (0 = all)")
    a = ap.parse_args()
    if a.ctx < 4:
        ap.error("--ctx must be at least 4")

    import llama_cpp
    import numpy as np

    threads = a.threads or os.cpu_count()
    llm = llama_cpp.Llama(
        model_path=a.model,
        n_ctx=a.ctx,
        n_batch=a.ctx,
        n_ubatch=a.ctx,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=True,
        verbose=False,
    )
    n_vocab = llm.n_vocab()
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    bos = llama_cpp.llama_vocab_bos(vocab)
    with open(a.file, "rb") as f:
        text = f.read()
    # add_bos=True here means add_special=true: llama.cpp then adds BOS only if the vocab wants it
    tokens = llm.tokenize(text, add_bos=True, special=False)
    n_chunks = len(tokens) // a.ctx
    if a.chunks > 0:
        n_chunks = min(n_chunks, a.chunks)
    if n_chunks == 0:
        print(f"error: {len(tokens)} tokens, fewer than one chunk of {a.ctx}", file=sys.stderr)
        return 1
    print(f"{len(tokens)} tokens, {n_chunks} chunks of {a.ctx}, add_bos {add_bos}", file=sys.stderr)

    first = a.ctx // 2
    nll, count = 0.0, 0
    t0 = time.perf_counter()
    for c in range(n_chunks):
        chunk = list(tokens[c * a.ctx:(c + 1) * a.ctx])
        if add_bos:
            chunk[0] = bos
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[first:a.ctx - 1], dtype=np.float32)  # rows predicting j+1
        targets = np.asarray(tokens[c * a.ctx + first + 1:(c + 1) * a.ctx], dtype=np.int64)
        mx = logits.max(axis=1)
        lse = np.log(np.exp((logits - mx[:, None]).astype(np.float64)).sum(axis=1))
        lp = (logits[np.arange(len(targets)), targets] - mx).astype(np.float64) - lse
        nll -= float(lp.sum())
        count += len(targets)
        print(f"[{c + 1}]{math.exp(nll / count):.4f} ", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    ppl = math.exp(nll / count)
    print(f"perplexity: {ppl:.4f} over {count} scored tokens (ctx {a.ctx}, {time.perf_counter() - t0:.1f} s)")
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

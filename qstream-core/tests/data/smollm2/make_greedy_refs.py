"""Reference greedy completions for SmolLM2-135M-Instruct from transformers.

transformers loads the very same GGUF (gguf_file=..., dequantized to float32) and generates 32
tokens greedily for each prompt. Output: greedy_refs.json (committed), read by
qstream-core/tests/smollm2.rs.

    pip install torch transformers gguf
    python make_greedy_refs.py ~/.cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "The three primary colors are",
    "Water boils at a temperature of",
]

def main():
    gguf = os.path.abspath(sys.argv[1])
    d, f = os.path.dirname(gguf), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()
    out = []
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            g = model.generate(ids, max_new_tokens=32, do_sample=False, eos_token_id=None,
                               pad_token_id=tok.pad_token_id, attention_mask=torch.ones_like(ids))
            logits = model(ids).logits[0, -1]
        top2 = torch.topk(logits, 2).values
        out.append({
            "prompt": p,
            "prompt_ids": ids[0].tolist(),
            "greedy_ids": g[0, ids.shape[1]:].tolist(),
            "text": tok.decode(g[0, ids.shape[1]:]),
            "first_logit_margin": float(top2[0] - top2[1]),
        })
        print(repr(p), "->", repr(out[-1]["text"]))
    meta = {"transformers": __import__("transformers").__version__, "torch": torch.__version__,
            "gguf": f, "dtype": "float32", "max_new_tokens": 32}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "greedy_refs.json")
    with open(path, "w") as fh:
        json.dump({"meta": meta, "cases": out}, fh, indent=1, ensure_ascii=False)

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A reference trace of a HuggingFace model folder with transformers, for `qstream eval --compare`.

    pip install torch transformers safetensors
    python3 tests/make_trace.py tests/fixtures/tiny/gemma2 gemma2.trace.safetensors [--ids 5,17,...]

Writes the format `qstream eval --trace` writes: `input_ids` int64 [1, T], `logits` float32
[T, vocab], `hidden_states` float32 [n_layer, T, hidden] where row l is the output of decoder
block l (the residual stream after the block, before the final norm), captured with forward
hooks on the model's decoder layers (transformers' `output_hidden_states` replaces the last
entry by the normed state, so it is not used). float32, eager attention, CPU, one forward pass.
Without --ids the fixture's `reference.safetensors` input_ids are used.

Then: qstream eval model.qsf --compare gemma2.trace.safetensors
reports every layer's max |diff| and the first layer that departs. A developer tool (needs
torch); the test suite does not run it.
"""
import argparse
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM


def decoder_layers(model, n_layer):
    """The ModuleList holding the decoder blocks (model.model.layers, transformer.h, ...)."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n_layer:
            if best is None or name.count(".") < best[0].count("."):
                best = (name, mod)
    if best is None:
        raise SystemExit(f"no ModuleList of {n_layer} decoder layers found")
    return best[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--ids", help="comma-separated token ids (default: reference.safetensors input_ids)")
    a = ap.parse_args()
    if a.ids:
        ids = torch.tensor([[int(x) for x in a.ids.split(",")]], dtype=torch.int64)
    else:
        ids = load_file(os.path.join(a.model_dir, "reference.safetensors"))["input_ids"].to(torch.int64)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    n_layer = model.config.get_text_config().num_hidden_layers
    layers = decoder_layers(model, n_layer)
    captured = [None] * n_layer

    def hook(i):
        def f(_mod, _inp, out):
            captured[i] = (out[0] if isinstance(out, tuple) else out).detach()[0].float()
        return f

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
    for h in handles:
        h.remove()
    if any(c is None for c in captured):
        raise SystemExit("a decoder layer was not called")
    save_file({
        "input_ids": ids.contiguous(),
        "logits": logits.contiguous(),
        "hidden_states": torch.stack(captured).contiguous(),
    }, a.out)
    print(f"wrote {a.out}: {ids.shape[1]} positions, {n_layer} layers")


if __name__ == "__main__":
    main()

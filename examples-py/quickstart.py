"""QStream quick start: load a model, generate, stream.

    python examples-py/quickstart.py [MODEL.qsf]

The model path comes from argv, else $QSTREAM_MODEL, else
~/.cache/qstream/smollm2-135m-q4_1.qsf (made by scripts/run_default.sh).
"""

import qstream
from _common import model_path

with qstream.Model(model_path()) as model:
    info = model.info
    print(f"{info['arch']}: {info['n_params'] / 1e6:.1f}M parameters, "
          f"{info['bits_per_weight']:.2f} bits/weight, vocab {info['n_vocab']}")

    # one-shot, greedy (temperature 0 = deterministic)
    prompt = "The capital of France is"
    text = model.generate(prompt, max_tokens=16, temperature=0)
    print(f"greedy: {prompt}{text}")

    # streaming with sampling; a fixed seed makes it reproducible
    print("stream: Once upon a time", end="", flush=True)
    for piece in model.stream("Once upon a time", max_tokens=32, temperature=0.8, seed=1):
        print(piece, end="", flush=True)
    print()

    # chat template (if the model has one)
    if info["chat_template"] is not None:
        reply = model.chat([{"role": "user", "content": "Say hello in one short sentence."}],
                           max_tokens=32, temperature=0)
        print(f"chat: {reply}")

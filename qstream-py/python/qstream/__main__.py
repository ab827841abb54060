"""Command-line generation: ``python -m qstream MODEL.qsf -p PROMPT -n TOKENS``.

Streams the generated text to stdout. ``--chat`` wraps the prompt in the model's chat
template; ``--info`` prints the model summary instead of generating. Ctrl-C stops.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from . import Model, QStreamError, info


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="python -m qstream",
        description="Generate text with a QStream (.qsf) model.",
    )
    ap.add_argument("model", help="path to a .qsf model file")
    ap.add_argument("-p", "--prompt", default="Once upon a time", help="prompt text")
    ap.add_argument("-n", "--max-tokens", type=int, default=128, help="tokens to generate")
    ap.add_argument("-t", "--threads", type=int, default=None, help="worker threads (default: all cores)")
    ap.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--min-p", type=float, default=0.0)
    ap.add_argument("--repeat-penalty", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    ap.add_argument("--chat", action="store_true", help="apply the model's chat template to the prompt")
    ap.add_argument("--info", action="store_true", help="print the file summary as JSON and exit")
    a = ap.parse_args(argv)

    try:
        if a.info:
            print(json.dumps(info(a.model), indent=2))
            return 0
        kw = dict(
            max_tokens=a.max_tokens,
            temperature=a.temperature,
            top_k=a.top_k,
            top_p=a.top_p,
            min_p=a.min_p,
            repeat_penalty=a.repeat_penalty,
            seed=a.seed,
        )
        with Model(a.model, threads=a.threads) as model:
            if a.chat:
                stream = model.chat_stream([{"role": "user", "content": a.prompt}], **kw)
            else:
                sys.stdout.write(a.prompt)
                stream = model.stream(a.prompt, **kw)
            with stream:
                for piece in stream:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            sys.stdout.write("\n")
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 130
    except (QStreamError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

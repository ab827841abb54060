#!/usr/bin/env bash
# Perplexity of QStream vs llama.cpp (llama-cpp-python) on the same text, same method, one run.
# usage: bench/compare_perplexity.sh [GGUF] [QSF] [CTX=256] [FILE=/usr/share/common-licenses/GPL-3]
# Env: THREADS (0 = all cores), TOL_PCT (default 0.5): exit 1 when |QStream/llama.cpp - 1| > TOL_PCT %.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
gguf="${1:-$HOME/.cache/qstream/SmolLM2-135M-Instruct.Q4_1.gguf}"
qsf="${2:-$HOME/.cache/qstream/smollm2-135m-q4_1.qsf}"
ctx="${3:-256}"
file="${4:-/usr/share/common-licenses/GPL-3}"
threads="${THREADS:-0}"
tol="${TOL_PCT:-0.5}"
qstream="${QSTREAM:-$root/target/release/qstream}"

[ -x "$qstream" ] || { echo "$qstream not built: cargo build --release -p qstream-cli" >&2; exit 2; }

echo "+ python3 bench/perplexity_llamacpp.py $gguf -f $file -c $ctx -t $threads"
l_out="$(python3 "$here/perplexity_llamacpp.py" "$gguf" -f "$file" -c "$ctx" -t "$threads")"
echo "$l_out"
echo "+ qstream perplexity $qsf -f $file -c $ctx --threads $threads"
q_out="$("$qstream" perplexity "$qsf" -f "$file" -c "$ctx" --threads "$threads")"
echo "$q_out"

l_ppl="$(sed -n 's/^perplexity: \([0-9.]*\).*/\1/p' <<<"$l_out")"
q_ppl="$(sed -n 's/^perplexity: \([0-9.]*\).*/\1/p' <<<"$q_out")"
[ -n "$l_ppl" ] && [ -n "$q_ppl" ] || { echo "could not parse a perplexity" >&2; exit 2; }
python3 - "$l_ppl" "$q_ppl" "$tol" "$ctx" <<'EOF'
import sys
l, q, tol, ctx = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rel = (q / l - 1) * 100
ok = abs(rel) <= tol
print(f"ctx {ctx}: llama.cpp {l:.4f}  QStream {q:.4f}  QStream/llama.cpp - 1 = {rel:+.3f}%  "
      f"({'within' if ok else 'OUTSIDE'} ±{tol}%)")
sys.exit(0 if ok else 1)
EOF

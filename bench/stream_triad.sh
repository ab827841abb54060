#!/usr/bin/env bash
# Compile and run the STREAM triad bandwidth test.
# usage: bench/stream_triad.sh [MB_PER_ARRAY=512] [REPS=10] [THREADS...]
# With no THREADS it runs 1 thread and all online CPUs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${TMPDIR:-/tmp}/qstream_stream_triad"
cc -O3 -march=native -pthread "$here/stream_triad.c" -o "$out"
mb="${1:-512}"; reps="${2:-10}"; shift $(( $# > 2 ? 2 : $# ))
threads=("$@")
if [ ${#threads[@]} -eq 0 ]; then
  n=$(getconf _NPROCESSORS_ONLN)
  threads=(1); [ "$n" -gt 1 ] && threads+=("$n")
fi
for t in "${threads[@]}"; do "$out" "$mb" "$reps" "$t"; done

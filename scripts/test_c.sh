#!/usr/bin/env bash
# C API checks: configure + build libqstream and examples-c with CMake, then run ctest
# (header C99/C++11, error codes, examples against the tiny fixture, install + outside
# project via find_package/FindQStream/pkg-config, valgrind when installed).
#   scripts/test_c.sh [extra ctest args...]      e.g. scripts/test_c.sh -LE valgrind
# Env: QSTREAM_C_BUILD_DIR (default build/c), QSTREAM_CARGO_PROFILE (default release).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v cc >/dev/null || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
dir="${QSTREAM_C_BUILD_DIR:-build/c}"
cmake -B "$dir" -S . -DQSTREAM_CARGO_PROFILE="${QSTREAM_CARGO_PROFILE:-release}"
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)"
ctest --test-dir "$dir" --output-on-failure "$@"

#!/usr/bin/env bash
# The whole test suite: Rust unit + integration tests (incl. the real SmolLM2 model), the C
# ABI (CMake/ctest, examples, valgrind), the Python package (pytest), and the NEON kernels
# under qemu-aarch64.
# Installs what it needs on a brand-new machine. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure_toolchain.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never

echo "== fetching the default model (cached in ~/.cache/qstream)"
QSTREAM_SMOLLM2_GGUF=$(bash scripts/fetch_model.sh)
export QSTREAM_SMOLLM2_GGUF

echo "== python packages the GGUF family tests need (tests/make_gguf.py: gguf, numpy, safetensors)"
python3 -c 'import gguf, numpy, safetensors' 2>/dev/null || python3 -m pip install --quiet gguf numpy safetensors

mkdir -p build
echo "== cargo test (release)"
# (the grep only filters what is shown; cargo's own status decides)
set +e
cargo test --release --workspace --no-fail-fast 2>&1 | tee build/cargo-test.log | grep -E "^(test result|running|error|warning: unused)|FAILED|panicked"
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || { echo "cargo test failed"; tail -n 80 build/cargo-test.log; exit "$status"; }

echo "== the default model as QSF (keep) for the C and Python suites"
QSTREAM_SMOLLM2_QSF="$(dirname "$QSTREAM_SMOLLM2_GGUF")/smollm2-135m-q4_1.qsf"
if [ ! -s "$QSTREAM_SMOLLM2_QSF" ] || [ "$QSTREAM_SMOLLM2_GGUF" -nt "$QSTREAM_SMOLLM2_QSF" ]; then
  target/release/qstream convert "$QSTREAM_SMOLLM2_GGUF" -o "$QSTREAM_SMOLLM2_QSF" --quant keep --quiet
fi
export QSTREAM_SMOLLM2_QSF

if [ -f scripts/test_c.sh ]; then
  echo "== C ABI (cmake + ctest)"
  bash scripts/test_c.sh
fi
if [ -f scripts/test_py.sh ]; then
  echo "== Python package (pytest)"
  bash scripts/test_py.sh
fi
echo "== NEON kernels for aarch64 under qemu (adds the Rust aarch64 target with rustup; says SKIPPED when it cannot)"
bash scripts/test_aarch64.sh
echo "== all test suites passed"

#!/usr/bin/env bash
# Python package tests: build the qstream wheel with maturin into a venv (build/py-venv) and
# run pytest on qstream-py/tests (API, errors, threads, streaming, examples, stubs).
# Reuses the workspace's cargo target dir so compiled dependencies are shared with `cargo test`.
# Env: QSTREAM_PY_SKIP_BUILD=1 skips the (re)build; PYTEST_ARGS adds pytest options.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$ROOT/build/py-venv"
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
python -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" numpy pytest safetensors
# mypy checks the stubs (stubtest): required in CI (CI=true), optional elsewhere
if ! python -m pip install -q --disable-pip-version-check mypy >/dev/null 2>&1; then
  if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then
    echo "mypy could not be installed; the stub check is required in CI" >&2
    exit 1
  fi
  echo "== SKIPPED: mypy could not be installed, so test_stubs.py::test_stubtest does NOT check the stubs"
fi

if [ "${QSTREAM_PY_SKIP_BUILD:-0}" != 1 ]; then
  echo "== building the qstream wheel (maturin, release)"
  rm -rf build/py-wheels
  (cd qstream-py && maturin build --release --out "$ROOT/build/py-wheels" -q)
  python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps build/py-wheels/qstream-*.whl
fi

echo "== pytest qstream-py/tests"
cd "$ROOT"
# run from outside the source tree so `import qstream` resolves to the installed package
python -m pytest -q qstream-py/tests -p no:cacheprovider ${PYTEST_ARGS:-}

#!/usr/bin/env bash
# Outside-project check: install the build tree into a temporary prefix, then build the
# examples as a separate CMake project with find_package(QStream) (config and FindQStream
# module) and with pkg-config, and run them against the test model.
#   test_consumer.sh BUILD_DIR SOURCE_DIR MODEL CC CXX [QSTREAM_CLI]
# With $QSTREAM_SMOLLM2_QSF (the default model, set by scripts/test.sh) and the CLI, the
# installed-prefix simple.c must also print the same greedy text as `qstream run`.
set -euo pipefail
build=$1 src=$2 model=$3 cc=$4 cxx=$5 cli=${6:-}
tmp=$(mktemp -d "${build}/consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(ls -d "$prefix"/lib*/ | head -n1); libdir=${libdir%/}
test -L "$libdir/libqstream.so.0" && test -L "$libdir/libqstream.so"
readelf -d "$libdir/libqstream.so.0.1.0" | grep -q 'SONAME.*libqstream.so.0' || { echo "bad SONAME"; exit 1; }

for mode in config module; do
  b="$tmp/build-$mode"
  extra=()
  if [ "$mode" = module ]; then
    extra=(-DQSTREAM_USE_FIND_MODULE=ON "-DCMAKE_MODULE_PATH=$libdir/cmake/QStream" "-DQStream_ROOT=$prefix")
  else
    extra=("-DCMAKE_PREFIX_PATH=$prefix")
  fi
  cmake -S "$src/examples-c" -B "$b" -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" "${extra[@]}" >/dev/null
  cmake --build "$b" >/dev/null
  "$b/qs_tokenize" "$model" "Hello world" | grep -q "round trip OK"
  "$b/qs_simple" "$model" "Hello" 4 | grep -q "generated 4 tokens"
  if [ "$mode" = config ]; then
    "$b/qs_tokenize_static" "$model" "Hello world" | grep -q "round trip OK"
    ! ldd "$b/qs_tokenize_static" | grep -q libqstream
    printf 'Hi\n' | "$b/qs_chat" "$model" --max-tokens 4 --greedy | grep -q "chat: 1 turns"
  fi
  if [ "$mode" = config ] && [ -n "$cli" ] && [ -s "${QSTREAM_SMOLLM2_QSF:-}" ]; then
    p="The capital of France is"
    want=$("$cli" run "$QSTREAM_SMOLLM2_QSF" -p "$p" -n 24 --temp 0)
    # simple.c: 2 header lines, prompt + streamed pieces, then the "prompt: N tokens" line
    got=$("$b/qs_simple" "$QSTREAM_SMOLLM2_QSF" "$p" 24 | sed -n '3,$p' | sed '/^prompt: [0-9]* tokens in/,$d')
    if [ "$got" != "$want" ]; then
      printf 'SmolLM2 greedy text differs\n qstream run: %s\n C consumer:  %s\n' "$want" "$got"
      exit 1
    fi
    echo "consumer: SmolLM2 greedy text identical to qstream run: $want"
  fi
  echo "consumer: find_package ($mode) OK"
done

# pkg-config
export PKG_CONFIG_PATH="$libdir/pkgconfig"
pkg-config --exists qstream
test "$(pkg-config --modversion qstream)" = "0.1.0"
# shellcheck disable=SC2046
"$cc" -std=c99 -Wall -Wextra -o "$tmp/tok_pc" "$src/examples-c/tokenize.c" $(pkg-config --cflags --libs qstream)
LD_LIBRARY_PATH="$libdir" "$tmp/tok_pc" "$model" "Hello world" | grep -q "round trip OK"
echo "consumer: pkg-config OK"
echo "consumer: all OK"

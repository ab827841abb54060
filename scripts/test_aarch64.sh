#!/usr/bin/env bash
# The NEON kernels under qemu-aarch64: builds qstream-core's kernel tests for aarch64 and runs
# them emulated — every level the emulated CPU reports (NEON, NEON + dotprod) against the
# scalar reference, bit for bit where the kernels promise it. Needs the Rust target
# aarch64-unknown-linux-gnu: added with rustup when missing (a few seconds); installs the cross
# linker and qemu-user from Debian when missing. Without rustup (Debian's packaged toolchain)
# the target cannot be added: the suite then prints SKIPPED (and why) and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
target_dir="$(rustc --print sysroot)/lib/rustlib/aarch64-unknown-linux-gnu/lib"
if [ ! -d "$target_dir" ] && command -v rustup >/dev/null; then
  rustup target add aarch64-unknown-linux-gnu || true
fi
if [ ! -d "$target_dir" ]; then
  echo "== SKIPPED: NEON suite NOT run: the Rust target aarch64-unknown-linux-gnu is not installed"
  echo "   and cannot be added without rustup (rustup target add aarch64-unknown-linux-gnu)"
  exit 0
fi
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo test --release --target aarch64-unknown-linux-gnu -p qstream-core --lib kernels
cargo test --release --target aarch64-unknown-linux-gnu -p qstream-core --test kernels_vs_reference

#!/usr/bin/env bash
# Make sure the build tools exist on a brand-new machine (Debian/Ubuntu): a Rust toolchain,
# a C compiler, python3 + pip. Installs only what is missing.
set -euo pipefail
need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip python3-venv)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    # Debian's packaged toolchain (no network beyond the package mirrors is needed)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo rustc
  fi
fi

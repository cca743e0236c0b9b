#!/usr/bin/env bash
# Prepares a machine for building llama-rs: installs the system tools a fresh
# Debian/Ubuntu lacks (cmake, ninja, libclang for bindgen, ccache, a C++ compiler),
# then fetches the pinned llama.cpp source and the default model (both checksummed).
# Idempotent: a second run does nothing and needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v ccache >/dev/null || need+=(ccache)
command -v g++ >/dev/null || command -v clang++ >/dev/null || need+=(g++)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
   && [ -z "${LIBCLANG_PATH:-}" ]; then
  need+=(libclang-dev)
fi

if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${need[*]} with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]}: install them with your package manager" >&2
    echo "       (cmake >= 3.14, ninja, libclang for bindgen, a C++17 compiler; ccache optional)" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

python3 vendor/fetch.py source >/dev/null
python3 vendor/fetch.py model >/dev/null

#!/usr/bin/env bash
# Prepares a machine for building llama-rs: installs the system tools the build uses and
# a fresh Debian/Ubuntu lacks, then fetches the pinned llama.cpp source and the default
# model (both checksummed). Idempotent: a second run installs nothing and needs no network.
#
# What the default build uses, and so what is checked:
#   cmake >= 3.14  configures llama.cpp (llama-sys's build script runs it)
#   a C++17 compiler (g++ or clang++) and a C compiler: llama.cpp itself
#   ninja          the generator llama-sys picks when present (faster than make)
#   ccache         llama-sys uses it when present: rebuilds of llama.cpp take seconds
#   python3 + pip  vendor/fetch.py downloads with pip
# libclang is NOT needed: the committed bindings fit the pinned source. Only the opt-in
# `bindgen` feature (for another llama.cpp tree) needs it: `scripts/setup.sh --bindgen`.
set -euo pipefail
cd "$(dirname "$0")/.."

bindgen=0
for a in "$@"; do
  case $a in
    --bindgen) bindgen=1 ;;
    *) echo "setup: unknown option $a (known: --bindgen)" >&2; exit 2 ;;
  esac
done

need=() why=()
want() { need+=("$1"); why+=("$1: $2"); }
command -v cmake >/dev/null || want cmake "configures the llama.cpp build"
command -v ninja >/dev/null || want ninja-build "the build generator llama-sys uses"
command -v ccache >/dev/null || want ccache "caches llama.cpp objects so rebuilds take seconds"
{ command -v g++ >/dev/null || command -v clang++ >/dev/null; } || want g++ "compiles llama.cpp (C++17)"
command -v cc >/dev/null || command -v gcc >/dev/null || want gcc "C compiler (llama.cpp's C files, Rust's linker driver)"
if [ $bindgen = 1 ] && [ -z "${LIBCLANG_PATH:-}" ]; then
  # bindgen loads the C library libclang.so(.N); libclang-cpp.so is another library.
  if ! ldconfig -p 2>/dev/null | grep -qE '/libclang(-[0-9.]+)?\.so(\.[0-9.]+)?$' \
     && ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
    want libclang-dev "bindgen (the --bindgen option) parses llama.cpp's headers with it"
  fi
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: missing, needed by the build:" >&2
  printf '  %s\n' "${why[@]}" >&2
  if ! command -v apt-get >/dev/null; then
    echo "setup: no apt-get here: install ${need[*]} (names as in Debian) with your package manager, then run again" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo="sudo"
    elif command -v sudo >/dev/null && [ -t 0 ]; then
      sudo="sudo"  # asks for the password
    else
      echo "setup: not root and no usable sudo: ask an administrator to run" >&2
      echo "       apt-get install ${need[*]}" >&2
      echo "       then run this again" >&2
      exit 1
    fi
  fi
  echo "setup: installing ${need[*]} with apt-get" >&2
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
           --no-install-recommends "${need[@]}" >/dev/null; }; then
    echo "setup: apt-get could not install ${need[*]} (offline? no package lists?)" >&2
    echo "       fix: install them by hand, or run this again with network access" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 not found: install Python 3.11+ with pip" >&2; exit 1; }

python3 vendor/fetch.py source >/dev/null
python3 vendor/fetch.py model >/dev/null
python3 vendor/fetch.py chat-model >/dev/null

# The first build compiles llama.cpp with no output of its own (cargo shows build-script
# output only on failure): say so before it starts. A finished build leaves its cmake
# install tree under target/release/build/llama-sys-*/out/cmake/lib.
target=${CARGO_TARGET_DIR:-target}
if ! ls -d "$target"/release/build/llama-sys-*/out/cmake/lib >/dev/null 2>&1; then
  cores=$(nproc 2>/dev/null || echo 2)
  # Measured: ~4 minutes of compiling on 2 cores (the fresh-machine CI stage).
  echo "setup: first build: compiling llama.cpp (CPU backend) — about $(( (8 + cores - 1) / cores ))–$(( (12 + cores - 1) / cores )) minutes on $cores cores; later builds are incremental" >&2
fi

#!/usr/bin/env bash
# The portable build (LLAMA_BUILD_CONFIG=cpu-all, in target/cpu-all):
#  1. every CPU variant this machine runs gives the x64 baseline's greedy tokens and its
#     logits within the stated tolerance (llama-rs/tests/cpu_variants.rs);
#  2. the manylinux wheel made of it (scripts/build-wheel.sh) installs into a clean
#     virtual environment and generates, reporting the variant it picked.
# CI also installs that wheel into a Debian 13 root (scripts/test-wheel-other-distro.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export LLAMA_BUILD_CONFIG=cpu-all CARGO_TARGET_DIR=target/cpu-all
out=$(cargo test --release --locked -p llama-rs --test cpu_variants -- --nocapture --test-threads 1 2>&1) \
  || { echo "$out" >&2; echo "test-cpu-variants: the variants disagree (above)" >&2; exit 1; }
echo "$out" | grep -A20 "compared with x64" >&2 || true
n=$(sed -n 's/^cpu variants compared: //p' <<<"$out")
[ "${n:-0}" -ge 1 ] || { echo "$out" >&2; echo "test-cpu-variants: no variant was compared" >&2; exit 1; }

whl=$(scripts/build-wheel.sh | tail -n1)
scripts/test-wheel-install.sh "$whl" "$(python3 -c 'import sys; print(sys.executable)')"

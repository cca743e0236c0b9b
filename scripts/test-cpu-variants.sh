#!/usr/bin/env bash
# The portable build (LLAMA_BUILD_CONFIG=cpu-all, in target/cpu-all):
#  1. every CPU variant this machine runs gives the x64 baseline's greedy tokens and its
#     logits within the stated tolerance (llama-rs/tests/cpu_variants.rs);
#  2. it runs on a CPU without AVX-512 and picks the right variant there, where the
#     native build dies (scripts/test-portable-qemu.sh, QEMU's `-cpu Haswell`);
#  3. the manylinux wheel made of it (scripts/build-wheel.sh) installs into a clean
#     virtual environment and generates, reporting the variant it picked.
# CI also installs that wheel into a Debian 13 root (scripts/test-wheel-other-distro.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# The test binary and its llama-sys build (for LD_LIBRARY_PATH) of a cargo invocation.
artifacts() { # artifacts <env...>: prints "<test binary> <llama-sys out dir>"
  env "$@" cargo test --release --locked -p llama-rs --test cpu_variants --no-run --message-format=json \
    | python3 -c '
import json, sys
exe = out = ""
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and "llama-sys" in m["package_id"]:
        out = m["out_dir"]
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cpu_variants" and m.get("executable"):
        exe = m["executable"]
print(exe, out)'
}
read -r bin out < <(artifacts LLAMA_BUILD_CONFIG=cpu-all CARGO_TARGET_DIR=target/cpu-all)
lib=$out/cmake/lib
log=$(LD_LIBRARY_PATH=$lib "$bin" --nocapture --test-threads 1 2>&1) \
  || { echo "$log" >&2; echo "test-cpu-variants: the variants disagree (above)" >&2; exit 1; }
grep -A20 "compared with x64" <<<"$log" >&2 || true
n=$(sed -n 's/^cpu variants compared: //p' <<<"$log")
[ "${n:-0}" -ge 1 ] || { echo "$log" >&2; echo "test-cpu-variants: no variant was compared" >&2; exit 1; }

read -r native _ < <(artifacts)
scripts/test-portable-qemu.sh "$bin" "$lib" "$native"

whl=$(scripts/build-wheel.sh | tail -n1)
scripts/test-wheel-install.sh "$whl" "$(python3 -c 'import sys; print(sys.executable)')"

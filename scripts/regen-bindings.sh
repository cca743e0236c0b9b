#!/usr/bin/env bash
# Regenerate llama-sys/src/pregenerated.rs (and pregenerated.headers, the fingerprint of
# the headers it comes from) with bindgen, after a source bump or a change to wrapper.h
# or the shim header. Builds without the `bindgen` feature refuse a tree whose headers
# differ from that fingerprint, so a forgotten regeneration fails the build at once.
#
#   scripts/regen-bindings.sh          rewrite both files
#   scripts/regen-bindings.sh --check  only compare (exit 1 if stale); CI runs this
#
# Needs libclang (apt-get install libclang-dev); no C build: the build script runs in
# docs-only mode.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
[ "${1:-}" = --check ] && check=1
out=$(LLAMA_SYS_DOCS_ONLY=1 cargo check --locked -p llama-sys --features bindgen \
        --target-dir target/bindgen --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and "llama-sys" in m["package_id"]:
        print(m["out_dir"])' | tail -n1)
[ -n "$out" ] || { echo "regen-bindings: the llama-sys build script did not run" >&2; exit 1; }
if [ $check = 1 ]; then
  stale=0
  cmp -s "$out/bindings.rs" llama-sys/src/pregenerated.rs || { echo "regen-bindings: llama-sys/src/pregenerated.rs differs from bindgen's output" >&2; stale=1; }
  cmp -s "$out/headers.txt" llama-sys/src/pregenerated.headers || { echo "regen-bindings: llama-sys/src/pregenerated.headers differs from the headers" >&2; stale=1; }
  [ $stale = 0 ] || { echo "  fix: run scripts/regen-bindings.sh and commit both files" >&2; exit 1; }
  echo "regen-bindings: committed bindings are current ($(grep -vc '^#' llama-sys/src/pregenerated.headers) headers)"
else
  cp "$out/bindings.rs" llama-sys/src/pregenerated.rs
  cp "$out/headers.txt" llama-sys/src/pregenerated.headers
  echo "updated llama-sys/src/pregenerated.rs and pregenerated.headers"
fi

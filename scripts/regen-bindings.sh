#!/usr/bin/env bash
# Regenerate llama-sys/src/pregenerated.rs from the pinned headers with bindgen.
# The llama-sys test `pregenerated_bindings_are_current` fails until this is rerun after
# a source bump or a change to wrapper.h.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p llama-sys --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and "llama-sys" in m["package_id"]:
        print(m["out_dir"])' | tail -n1 | { read -r out; cp "$out/bindings.rs" llama-sys/src/pregenerated.rs; }
echo "updated llama-sys/src/pregenerated.rs"

#!/usr/bin/env bash
# Runs every test: unit, integration (real llama.cpp + the real default model), doc
# examples, and the packaging check. Release mode: the suites run the model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
start=$(date +%s)

cargo test --workspace --release --locked

# The server through the official `openai` Python client (from PyPI).
scripts/test-server-python.sh

# The Python module (llama-cpp-python's API): wheel built with maturin, tests on SmolLM2.
scripts/test-python.sh

# Bad inputs of the fetch step and the build: clear errors, nothing half-written.
scripts/test-fetch-errors.sh

# The published llama-cpp-src crate must carry the source tree llama-sys builds, so
# `cargo add llama-rs` users need no fetch step.
list=$(cargo package -p llama-cpp-src --list --allow-dirty --locked)
for f in llama.cpp/.llama-rs-pin llama.cpp/CMakeLists.txt llama.cpp/include/llama.h \
         llama.cpp/ggml/CMakeLists.txt llama.cpp/ggml/src/ggml.c llama.cpp/src/llama.cpp \
         llama.cpp/vendor/CMakeLists.txt; do
  grep -qx "$f" <<<"$list" || { echo "package check: $f missing from llama-cpp-src" >&2; exit 1; }
done
list=$(cargo package -p llama-sys --list --allow-dirty --locked)
for f in src/pregenerated.rs src/pregenerated.headers wrapper.h; do
  grep -qx "$f" <<<"$list" || { echo "package check: $f missing from llama-sys" >&2; exit 1; }
done

# Docs build without libclang or a C build (the docs.rs path).
DOCS_RS=1 cargo doc --no-deps -p llama-sys --locked --target-dir target/docs-rs >/dev/null 2>&1 \
  || { echo "DOCS_RS doc build failed" >&2; exit 1; }

echo "all tests passed in $(( $(date +%s) - start )) s"

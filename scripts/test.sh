#!/usr/bin/env bash
# Runs every test: unit, integration (real llama.cpp + the real default model), doc
# examples, and the packaging check. Release mode: the suites run the model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
start=$(date +%s)

# Every suite runs, whatever failed before it (one failure must not hide the others);
# the summary at the end names what failed.
passed=() failed=()
suite() { # suite <name> <command...>
  local name=$1; shift
  local t st=0
  t=$(date +%s)
  echo "== $name" >&2
  "$@" || st=$?
  if [ "$st" -eq 0 ]; then
    passed+=("$name ($(( $(date +%s) - t )) s)")
  else
    local sig=""
    [ "$st" -gt 128 ] && sig=" (signal $((st - 128)))"
    failed+=("$name: exit $st$sig")
  fi
}

# llama.cpp's llama-mtmd-cli from the same build tree: tests/media.rs compares our image
# path with it (LLAMA_RS_REQUIRE_TOOLS: a missing binary fails that test, never skips it).
LLAMA_TOOLS_DIR=$(LLAMA_TOOLS_TARGETS=llama-mtmd-cli scripts/llama-tools.sh)
export LLAMA_TOOLS_DIR LLAMA_RS_REQUIRE_TOOLS=1

# Rust: unit, integration on the real model, doc examples; every test binary, even after
# a failing one (--no-fail-fast).
suite "cargo test (workspace)" cargo test --workspace --release --locked --no-fail-fast

# The server through the official `openai` Python client (from PyPI).
suite "server: openai client" scripts/test-server-python.sh

# The Python module (llama-cpp-python's API): wheel built with maturin, tests on SmolLM2.
suite "python module" scripts/test-python.sh

# The portable build: every CPU variant as a module, each one this CPU runs checked
# against the baseline; the manylinux wheel made of it, checked and installed.
suite "cpu variants + portable wheel" scripts/test-cpu-variants.sh

# Bad inputs of the fetch step and the build: clear errors, nothing half-written.
suite "fetch and build errors" scripts/test-fetch-errors.sh

# The published llama-cpp-src crate must carry the source tree llama-sys builds, so
# `cargo add llama-rs` users need no fetch step.
packaging() {
  local list f
  list=$(cargo package -p llama-cpp-src --list --allow-dirty --locked)
  for f in llama.cpp/.llama-rs-pin llama.cpp/CMakeLists.txt llama.cpp/include/llama.h \
           llama.cpp/ggml/CMakeLists.txt llama.cpp/ggml/src/ggml.c llama.cpp/src/llama.cpp \
           llama.cpp/vendor/CMakeLists.txt patches/README.md \
           patches/0001-ggml-cpu-amx-load-the-whole-tile-config.patch; do
    grep -qx "$f" <<<"$list" || { echo "package check: $f missing from llama-cpp-src" >&2; return 1; }
  done
  list=$(cargo package -p llama-sys --list --allow-dirty --locked)
  for f in src/pregenerated.rs src/pregenerated.headers wrapper.h build/amx_probe.cpp; do
    grep -qx "$f" <<<"$list" || { echo "package check: $f missing from llama-sys" >&2; return 1; }
  done
  # Docs build without libclang or a C build (the docs.rs path).
  DOCS_RS=1 cargo doc --no-deps -p llama-sys --locked --target-dir target/docs-rs >/dev/null 2>&1 \
    || { echo "DOCS_RS doc build failed" >&2; return 1; }
}
suite "packaging" packaging

echo >&2
echo "test: ${#passed[@]} suites passed:" >&2
printf '  %s\n' "${passed[@]}" >&2
if [ ${#failed[@]} -gt 0 ]; then
  echo "test: ${#failed[@]} suites FAILED:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "all tests passed in $(( $(date +%s) - start )) s"

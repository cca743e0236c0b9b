#!/usr/bin/env bash
# Builds llama.cpp's own tools (llama-bench, llama-batched-bench, llama-completion,
# llama-server without its web UI: the baseline for our OpenAI-compatible server,
# llama-mtmd-cli: the baseline for images) in
# llama-sys's cmake build tree: same source, same compiler flags, same backends as the
# library llama-rs links. Prints the directory holding the binaries.
#   scripts/llama-tools.sh            # CPU (or whatever LLAMA_BUILD_CONFIG / features say)
#   CARGO_FEATURES=cuda scripts/llama-tools.sh
#   LLAMA_TOOLS_TARGETS=llama-mtmd-cli scripts/llama-tools.sh   # only these tools
set -euo pipefail
cd "$(dirname "$0")/.."
feat=()
[ -n "${CARGO_FEATURES:-}" ] && feat=(--features "$CARGO_FEATURES")
out=$(cargo build --release -p llama-sys "${feat[@]}" --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and "llama-sys" in m["package_id"]:
        print(m["out_dir"])' | tail -n1)
build="$out/cmake/build"
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
# llama-sys copies only what the library needs; the server's UI step runs this script
# (with the UI off it writes an empty asset table).
if [ ! -f "$src/scripts/ui-assets.cmake" ] && [ -f vendor/llama.cpp/scripts/ui-assets.cmake ]; then
  mkdir -p "$src/scripts" && cp vendor/llama.cpp/scripts/ui-assets.cmake "$src/scripts/"
fi
# The UI would need npm or a download from a model hub; the HTTP API does not.
cmake -S "$src" -B "$build" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null
read -ra targets <<<"${LLAMA_TOOLS_TARGETS:-llama-bench llama-batched-bench llama-completion llama-server llama-mtmd-cli}"
cmake --build "$build" --target "${targets[@]}" -j "$(nproc)" >&2
echo "$build/bin"

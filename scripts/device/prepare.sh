#!/usr/bin/env bash
# Prepares what scripts/device/run.sh needs on a GPU machine without Rust or network,
# within the device tool's 64 MiB-per-call carry limit (all under the git-ignored .dev/):
#   .dev/bin     llama-rs test binaries + examples + devtools, built with LLAMA_SYS_SHARED=1
#                (one phase's few binaries instead, for DEV_BIN=.dev/bmin, e.g. restart:
#                `LLAMA_SYS_SHARED=1 CARGO_TARGET_DIR=target/shared cargo build --release
#                -p llama-rs-server -p llama-devtools --bin restart-bench --bin synth-model`)
#   .dev/src     the pinned llama.cpp tree without unused backends and the web UI
#   .dev/m1..m4  the default model in four parts (one call each)
#   .dev/vk      trixie's Vulkan headers/loader/glslc .debs; .dev/gl: GL/EGL loaders
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 vendor/fetch.py source >/dev/null
model=$(python3 vendor/fetch.py model)
export LLAMA_SYS_SHARED=1 CARGO_TARGET_DIR=target/shared
cargo test --release --workspace --no-run --message-format=json 2>/dev/null > /tmp/llama-rs-tests.json
cargo build --release -p llama-examples -p llama-devtools --message-format=json 2>/dev/null > /tmp/llama-rs-bins.json
rm -rf .dev/bin && mkdir -p .dev/bin
python3 - <<'PY'
import json, shutil
for f in ["/tmp/llama-rs-tests.json", "/tmp/llama-rs-bins.json"]:
    for line in open(f):
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and "llama-rs" in m["package_id"] or \
           m.get("reason") == "compiler-artifact" and m.get("executable") and ("llama-examples" in m["package_id"] or "llama-devtools" in m["package_id"]):
            if m["target"]["kind"] in (["test"], ["bin"]):
                shutil.copy(m["executable"], ".dev/bin/" + m["target"]["name"])
PY
strip .dev/bin/*
rm -rf .dev/src && mkdir -p .dev/src/models
(cd vendor/llama.cpp && tar cf - --exclude='ggml/src/ggml-sycl' --exclude='ggml/src/ggml-opencl' \
  --exclude='ggml/src/ggml-hexagon' --exclude='ggml/src/ggml-metal' --exclude='ggml/src/ggml-et' \
  --exclude='ggml/src/ggml-webgpu' --exclude='ggml/src/ggml-openvino' --exclude='ggml/src/ggml-cann' \
  --exclude='ggml/src/ggml-virtgpu' --exclude='ggml/src/ggml-zdnn' --exclude='ggml/src/ggml-zendnn' \
  --exclude='tools/ui' CMakeLists.txt cmake include src ggml common vendor tools licenses LICENSE .llama-rs-pin) \
  | (cd .dev/src && tar xf -)
cp vendor/llama.cpp/models/ggml-vocab-qwen2.gguf .dev/src/models/
# What llama-server's build needs of the web UI with the UI off (run.sh restart).
(cd vendor/llama.cpp && tar cf - tools/ui/CMakeLists.txt tools/ui/sources.cmake tools/ui/ui.cpp.in \
  tools/ui/ui.h.in scripts/ui-assets.cmake) | (cd .dev/src && tar xf -)
for i in 1 2 3 4; do mkdir -p .dev/m$i; done
split -n 4 -d "$model" /tmp/llama-rs-part
for i in 0 1 2 3; do mv /tmp/llama-rs-part0$i .dev/m$((i+1))/part; done
mkdir -p .dev/vk .dev/gl /tmp/trixie/lists/partial
echo "deb http://deb.debian.org/debian trixie main" > /tmp/trixie/sources.list
o="-o Dir::Etc::SourceList=/tmp/trixie/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=/tmp/trixie/lists -o APT::Architecture=amd64"
apt-get $o update -qq
(cd .dev/vk && apt-get $o download libvulkan-dev libvulkan1 spirv-headers glslc libshaderc1)
(cd .dev/gl && apt-get download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh .dev/*

#!/usr/bin/env bash
# Runs on a GPU machine that has no Rust toolchain (the device tool's H100). It builds
# llama.cpp as shared libraries for one backend from the carried source tree, then runs
# llama-rs binaries built on the CPU machine against the same source with
# LLAMA_SYS_SHARED=1 (scripts/device/prepare.sh) — so llama-rs and llama-bench use the
# very same libraries:
#   * the integration tests with every layer offloaded (default ModelParams),
#   * gpu-test (GPU vs CPU greedy agreement, memory plan, state, KV types),
#   * bench vs llama-bench on the default model and a synthetic 7B-shaped Q4_K model.
# Usage (device tool, carry .dev/src .dev/bin .dev/m1..m4 [.dev/vk .dev/gl]):
#   [BENCH_REPS=5] bash scripts/device/run.sh cuda|vulkan [build|test|spec|fit|py|restart|serve|media|bench|bench-gemma|bench-7b|breakdown|all]
# (py also carries .dev/py: the wheel and llama-cpp-python's files, see prepare.sh)
# (each call returns within the device tool's 10-minute limit: Vulkan test + bench does not)
set -uo pipefail
backend=$1
phase=${2:-all}
root=$(pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
S=$root/.dev/src
W=$root/.dev/work   # not carried: kept between calls while the machine stays warm
mkdir -p "$W"
B=$W/build-$backend
BIN=${DEV_BIN:-$root/.dev/bin}   # DEV_BIN=.dev/bmin: a smaller set of binaries to carry
model=$W/gemma-3-270m-q4_k_m.gguf
[ -s "$model" ] || cat .dev/m1/part .dev/m2/part .dev/m3/part .dev/m4/part > "$model" 2>/dev/null
echo "model sha256: $(sha256sum "$model" | cut -c1-16)… (want a5fd3b62230aa5ec)"
common=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON
  -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_RPC=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
  -DLLAMA_OPENSSL=OFF)
case $backend in
  cuda) extra=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90) ;;
  vulkan)
    for f in .dev/vk/*.deb; do dpkg -x "$f" /opt/vk; done
    for f in .dev/gl/*.deb; do dpkg -x "$f" /opt/gl; done
    export LD_LIBRARY_PATH=/opt/vk/usr/lib/x86_64-linux-gnu:/opt/gl/usr/lib/x86_64-linux-gnu
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    extra=(-DGGML_VULKAN=ON -DVulkan_INCLUDE_DIR=/opt/vk/usr/include
      -DVulkan_LIBRARY=/opt/vk/usr/lib/x86_64-linux-gnu/libvulkan.so.1
      -DVulkan_GLSLC_EXECUTABLE=/opt/vk/usr/bin/glslc -DSPIRV-Headers_DIR=/opt/vk/usr/share/cmake/SPIRV-Headers -DCMAKE_PREFIX_PATH=/opt/vk/usr) ;;
  *) echo "backend?"; exit 2 ;;
esac
start=$(date +%s)
if [ ! -f "$B/build.ninja" ] || [ "${phase#bench}" = "$phase" ]; then
cmake -S "$S" -B "$B" "${common[@]}" "${extra[@]}" > "$out/cmake-$backend.log" 2>&1 || { tail -40 "$out/cmake-$backend.log"; exit 1; }
cmake --build "$B" --target llama llama-bench ggml-rpc -j 16 > "$out/build-$backend.log" 2>&1 || { tail -60 "$out/build-$backend.log"; exit 1; }
echo "llama.cpp $backend build: $(( $(date +%s) - start )) s"
fi
lib=$(dirname "$(find "$B" -name 'libllama.so*' | head -1)")
export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}
export LLAMA_RS_MODEL=$model
export LLAMA_CPP_SRC=$S   # tests that read vendored files (vocab, templates)
[ "$phase" = build ] && exit 0
if [ "$phase" = test ] || [ "$phase" = all ]; then
echo "== gpu-test"; "$BIN/gpu-test" 2>&1 | tee "$out/gpu-test-$backend.txt"
echo "== tests (all layers offloaded)"
for t in model context generate sampling adapters embed files; do
  "$BIN/$t" --test-threads 2 --skip tokenizer_conformance 2>&1 | grep -E -A2 "^test |test result|panicked" | grep -v "^--$\|stack backtrace\|^   [0-9]*: \|^  *at "
done | tee "$out/tests-$backend.txt"
fi
[ "$phase" = test ] && exit 0
if [ "$phase" = fit ]; then
  # Fit to memory on the synthetic 7B: simulated budgets on the GPU, real loads.
  [ -f "$W/q7.gguf" ] || "$BIN/synth-model" --shape 7b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$W/q7.gguf"
  echo "== fit: synthetic 7B"; "$BIN/gpu-test" --model "$W/q7.gguf" --fit-only 2>&1 | tee "$out/fit-7b-$backend.txt"
  [ -f "$W/moe.gguf" ] || "$BIN/synth-model" --shape moe-a2.7b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$W/moe.gguf"
  echo "== fit: synthetic MoE (Qwen1.5-MoE-A2.7B shape)"; "$BIN/gpu-test" --model "$W/moe.gguf" --fit-only 2>&1 | tee "$out/fit-moe-$backend.txt"
  [ -x "$BIN/fit" ] && { echo "== tests/fit.rs on the GPU"; "$BIN/fit" --test-threads 1 2>&1 | grep -E "^test |test result|panicked" | tee -a "$out/fit-moe-$backend.txt"; }
  exit 0
fi
if [ "$phase" = py ]; then
  # The Python module (wheel built with LLAMA_SYS_SHARED=1 on the CPU machine, .dev/py)
  # and llama-cpp-python's Python files (.dev/py/lcpp, no libraries of its own: it loads
  # this build's libllama through LLAMA_CPP_LIB_PATH), so llama_rs, llama-cpp-python,
  # llama-bench and the Rust API all run the very same libraries.
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/py/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$root/.dev/py/lcpp LLAMA_CPP_LIB_PATH=$lib
  [ -f "$W/q7.gguf" ] || "$BIN/synth-model" --shape 7b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$W/q7.gguf"
  for m in "$W/q7.gguf" "$model"; do
    [ -s "$m" ] || continue   # the default model only when its parts were carried
    echo "== python: $(basename "$m")"
    PYTHONUNBUFFERED=1 python3 llama-py/bench/compare.py --model "$m" --llama-bench "$B/bin/llama-bench" \
      --rust-bench "$BIN/bench" --lcpp-python python3 --ngl 99 -t 16 -r "${BENCH_REPS:-3}" 2>&1
  done | tee "$out/python-$backend.txt"
  exit 0
fi
if [ "$phase" = spec ]; then
  # Engine and speculative decoding on the GPU: the tests (greedy equality, determinism,
  # the chi-square test), the n-gram benchmark (one sequence and 4 concurrent), and the
  # cost of verifying k drafted tokens — default model, and a synthetic 7B target with a
  # synthetic 0.5B draft.
  # SPEC_QUICK=1: the benchmark only (no tests, no synthetic 7B); SPEC_NO_TESTS=1: no tests.
  [ -n "${SPEC_QUICK:-}${SPEC_NO_TESTS:-}" ] || for t in engine speculative; do
    "$BIN/$t" --test-threads 1 2>&1 | grep -E "^test |test result|panicked|chi2" | grep -v "^--$"
  done | tee "$out/tests-spec-$backend.txt"
  echo "== bench --spec"; "$BIN/bench" --spec --spec-engine -n 128 -r "${BENCH_REPS:-3}" -t 16 2>&1 | grep -v "^$" | tee "$out/spec-$backend.txt"
  echo "== verify cost: default model (drafting for itself)"; "$BIN/bench" --verify-cost --draft "$model" -r 3 -t 16 2>&1 | grep -v "^$" | tee "$out/verify-gemma-$backend.txt"
  [ -n "${SPEC_QUICK:-}" ] && exit 0
  [ -f "$W/q7.gguf" ] || "$BIN/synth-model" --shape 7b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$W/q7.gguf"
  [ -f "$W/q05.gguf" ] || "$BIN/synth-model" --shape 0.5b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$W/q05.gguf"
  echo "== verify cost: synthetic 7B target, 0.5B draft"; "$BIN/bench" --model "$W/q7.gguf" --verify-cost --draft "$W/q05.gguf" -r 3 -t 16 2>&1 | grep -v "^$" | tee "$out/verify-7b-$backend.txt"
  exit 0
fi
if [ "$phase" = restart ]; then
  # TTFT after a restart on the GPU (devtools restart-bench): llama-rs-server cold and
  # with --cache-disk, llama-server (built here from the same source) cold and with its
  # slot restore, on the synthetic 7B (its KV: 56 KiB a token) and the default model.
  cmake -S "$S" -B "$B" "${common[@]}" "${extra[@]}" -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF > "$out/cmake-server-$backend.log" 2>&1 || { tail -30 "$out/cmake-server-$backend.log"; exit 1; }
  cmake --build "$B" --target llama-server -j 16 > "$out/build-server-$backend.log" 2>&1 || { tail -40 "$out/build-server-$backend.log"; exit 1; }
  [ -f "$W/q7.gguf" ] || "$BIN/synth-model" --shape 7b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$W/q7.gguf"
  for m in "$W/q7.gguf" ${RESTART_DEFAULT_MODEL:+"$model"}; do
    echo "== restart-bench: $(basename "$m")"
    "$BIN/restart-bench" --ours "$BIN/llama-rs-server" --theirs "$B/bin/llama-server" --model "$m" \
      --tokens "${RESTART_TOKENS:-2000,8000}" -r "${BENCH_REPS:-3}" -t 16 --flag=-ngl --flag=99 --dir /tmp/restart-bench 2>&1
  done | tee "$out/restart-$backend.txt"
  exit 0
fi
if [ "$phase" = serve ]; then
  # Serving at scale (devtools serve-bench): llama-rs-server vs llama-server built here
  # from the same source, streaming clients at each width, alternating; our engine's
  # host time per step from its /metrics. Models (SERVE_MODELS): smol = SmolLM2-135M's
  # shape with its real vocabulary and template (.dev/vocab/smol-vocab.gguf, from
  # `synth-model --shape vocab`), 7b, moe. SERVE_KV: on/off; SERVE_SHARED=1: the agent
  # workload (64 clients, a 2000-token system prompt with tools).
  if [ ! -x "$B/bin/llama-server" ]; then
    cmake -S "$S" -B "$B" "${common[@]}" "${extra[@]}" -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
      -DLLAMA_USE_PREBUILT_UI=OFF > "$out/cmake-server-$backend.log" 2>&1 || { tail -30 "$out/cmake-server-$backend.log"; exit 1; }
    cmake --build "$B" --target llama mtmd llama-server -j 16 > "$out/build-server-$backend.log" 2>&1 || { tail -40 "$out/build-server-$backend.log"; exit 1; }
    echo "llama.cpp + llama-server ($backend) build: $(( $(date +%s) - start )) s"
  fi
  lib=$(dirname "$(find "$B" -name 'libllama.so*' | head -1)")
  export LD_LIBRARY_PATH=$lib:$(dirname "$(find "$B" -name 'libmtmd.so*' | head -1)"):${LD_LIBRARY_PATH:-}
  for m in ${SERVE_MODELS:-smol 7b}; do
    case $m in
      smol) f=$W/smol.gguf; [ -f "$f" ] || "$BIN/synth-model" --shape smollm2-135m --vocab .dev/vocab/smol-vocab.gguf --out "$f" >/dev/null ;;
      7b) f=$W/q7.gguf; [ -f "$f" ] || "$BIN/synth-model" --shape 7b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$f" >/dev/null ;;
      moe) f=$W/moe.gguf; [ -f "$f" ] || "$BIN/synth-model" --shape moe-a2.7b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$f" >/dev/null ;;
    esac
    for kv in ${SERVE_KV:-on}; do
      echo "== serve-bench: $m, kv-unified $kv"
      timeout "${SERVE_TIMEOUT:-300}" "$BIN/serve-bench" --ours "$BIN/llama-rs-server" --theirs "$B/bin/llama-server" -m "$f" \
        --clients "${SERVE_CLIENTS:-1,4,16,64,128}" -n "${SERVE_N:-64}" -r "${BENCH_REPS:-3}" -t 8 -c "${SERVE_CTX:-32768}" \
        --kv-unified "$kv" --no-shared ${SERVE_FLAGS:-} 2>&1 | tee "$out/serve-$m-kv$kv.txt"
    done
    if [ -n "${SERVE_SHARED:-}" ]; then
      echo "== serve-bench: $m, shared system prompt"
      timeout "${SERVE_TIMEOUT:-300}" "$BIN/serve-bench" --ours "$BIN/llama-rs-server" --theirs "$B/bin/llama-server" -m "$f" \
        --clients 64 --shared-only --shared-clients 64 --shared-tokens 2000 -n 32 -r "${BENCH_REPS:-3}" -t 8 -c 163840 \
        ${SERVE_FLAGS:-} 2>&1 | tee "$out/serve-$m-shared.txt"
    fi
  done
  exit 0
fi
if [ "$phase" = media ]; then
  # Images on the GPU (devtools media-bench): encode and TTFT, ours vs llama-mtmd-cli built
  # here from the same source, with synthetic Gemma 3 projectors (ViT-B at 448 px, and
  # SigLIP-So400m's shape at 896 px: Gemma 3's own) for the synthetic 7B; and a second
  # question about the same image with and without the prefix cache.
  cmake --build "$B" --target mtmd llama-mtmd-cli -j 16 > "$out/build-mtmd-$backend.log" 2>&1 || { tail -40 "$out/build-mtmd-$backend.log"; exit 1; }
  [ -f "$W/q7.gguf" ] || "$BIN/synth-model" --shape 7b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$W/q7.gguf" >/dev/null
  for shape in "--width 768 --layers 12 --ff 3072 --image-size 448" "--width 1152 --layers 27 --ff 4304 --image-size 896"; do
    echo "== media-bench: $shape"
    # shellcheck disable=SC2086
    "$BIN/media-bench" --model "$W/q7.gguf" --cli "$B/bin/llama-mtmd-cli" --image "$S/tools/mtmd/test-1.jpeg" \
      -r "${BENCH_REPS:-5}" -t 16 --gpu $shape 2>&1 | grep -v "^  "
  done | tee "$out/media-$backend.txt"
  exit 0
fi
if [ "$phase" = breakdown ]; then
  # Where each token's time goes (no llama-bench): as is, with OpenMP workers that sleep
  # instead of spinning, and with CUDA graphs off.
  for env in "" OMP_WAIT_POLICY=passive GGML_CUDA_DISABLE_GRAPHS=1; do
    echo "== breakdown ${env:-(default)}"
    env $env "$BIN/bench" --breakdown -r "${BENCH_REPS:-5}" -t 16 2>&1 | grep "^|"
  done | tee "$out/breakdown-$backend.txt"
  exit 0
fi
[ "$phase" = bench-7b ] || { echo "== bench: default model"; "$BIN/bench" --llama-bench "$B/bin/llama-bench" -r "${BENCH_REPS:-5}" -t 16 2>&1 | tee "$out/bench-gemma-$backend.txt"; }
[ "$phase" = bench-gemma ] && exit 0
[ -f "$W/q7.gguf" ] || "$BIN/synth-model" --shape 7b --vocab "$S/models/ggml-vocab-qwen2.gguf" --out "$W/q7.gguf"
echo "== bench: synthetic Qwen2.5-7B shape"; "$BIN/bench" --model "$W/q7.gguf" --llama-bench "$B/bin/llama-bench" -r "${BENCH_REPS:-5}" -t 16 --fa on 2>&1 | tee "$out/bench-7b-$backend.txt"
echo "== gpu-test: synthetic Qwen2.5-7B shape"; "$BIN/gpu-test" --model "$W/q7.gguf" -n 8 2>&1 | tee "$out/gpu-test-7b-$backend.txt"

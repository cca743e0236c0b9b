#!/usr/bin/env bash
# The AMX issue on the device machine's host CPU (no Rust there), in one call. Carried
# under .dev/amx (git-ignored; made on the CPU machine, see the closing note of issue 29):
#   src.tar.xz       the pinned llama.cpp tree (CPU backend only)
#   patches/         vendor/patches
#   rs.tar.xz        llama-rs's cpu_variants test binary + the cpu-all libraries and modules
#   synth-model      llama-devtools' synthetic-model writer; vocab.gguf its tokenizer
# Steps: CPU facts (stop here without AMX); the miscompile probe with this machine's g++
# (unpatched and patched, executed for real); a synthetic Qwen2-0.5B-shaped Q4_K model;
# llama-bench (patched cpu-all build) with one CPU module at a time: sapphirerapids (AMX),
# the same module from the unpatched tree, zen4 (AVX-512 VNNI/BF16, no AMX), haswell
# (AVX2); llama-rs's variant agreement test on this CPU.
#   bash scripts/device/amx.sh
set -uo pipefail
root=$(pwd)
A=$root/.dev/amx
W=/tmp/amx
mkdir -p "$W"
echo "== CPU"
grep -m1 'model name' /proc/cpuinfo
amx=$(grep -o 'amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')
echo "amx flags: ${amx:-none}"
echo "avx512 flags: $(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "cores: $(nproc); $(g++ --version | head -1); $(cmake --version | head -1); ninja: $(command -v ninja || echo none)"

mkdir -p "$W/orig" && tar xJf "$A/src.tar.xz" -C "$W/orig"
rm -rf "$W/patched" && cp -r "$W/orig" "$W/patched"
(cd "$W/patched" && for p in "$A"/patches/*.patch; do patch -p1 -s < "$p" || git apply "$p" || exit 1; done) || echo "patch failed"

echo "== probe: the bytes ggml_tile_config_init hands ldtilecfg, compiled by this g++ and run"
for tree in orig patched; do
  python3 - "$W/$tree/ggml/src/ggml-cpu/amx/mmq.cpp" > "$W/probe-$tree.cpp" <<'PY'
import sys
src = open(sys.argv[1]).read()
def item(start):
    i = src.find(start)
    if i < 0: return ""
    j = src.index("{", i); d = 0
    for k in range(j, len(src)):
        d += {"{": 1, "}": -1}.get(src[k], 0)
        if d == 0: break
    return src[i:k + 1 + (src[k + 1] == ";")]
init = item("inline void ggml_tile_config_init(").replace("inline void ggml_tile_config_init", "__attribute__((noinline)) static void ggml_tile_config_init", 1)
print("#include <immintrin.h>\n#include <cstdint>\n" + item("struct tile_config_t") + "\n" + item("static inline void ggml_tile_loadconfig(") + "\n" + init + "\nvoid probe_init(void) { ggml_tile_config_init(); }")
PY
  for o in -O0 -O2 "-O3 -march=native"; do
    g++ $o -mamx-tile -std=c++17 "$W/probe-$tree.cpp" "$root/llama-sys/build/amx_probe.cpp" -o "$W/probe" 2>&1 | tail -2
    echo "$tree $o: $("$W/probe") (exit $?)"
  done
done
[ -n "$amx" ] || { echo "no AMX on this CPU: nothing more to measure"; exit 0; }

echo "== model: synthetic Qwen2-0.5B shape, Q4_K/Q8_0 random weights"
chmod +x "$A/synth-model"
"$A/synth-model" --shape 0.5b --vocab "$A/vocab.gguf" --out "$W/m.gguf" | tail -1

echo "== builds (cpu-all, Release, $(nproc) jobs)"
common=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DGGML_OPENMP=ON
  -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DBUILD_SHARED_LIBS=ON)
t=$(date +%s)
cmake -S "$W/patched" -B "$W/b-p" "${common[@]}" >/dev/null && cmake --build "$W/b-p" -j "$(nproc)" \
  --target llama-bench ggml-cpu-sapphirerapids ggml-cpu-zen4 ggml-cpu-haswell >/dev/null 2>&1 || echo "patched build failed"
cmake -S "$W/orig" -B "$W/b-o" "${common[@]}" >/dev/null && cmake --build "$W/b-o" -j "$(nproc)" \
  --target ggml-cpu-sapphirerapids >/dev/null 2>&1 || echo "unpatched build failed"
echo "built in $(( $(date +%s) - t )) s"

echo "== llama-bench, one CPU module at a time"
bench=(-m "$W/m.gguf" -p 512 -n 128 -r 3 -t "$(nproc)" -o md)
for v in sapphirerapids unpatched-sapphirerapids zen4 haswell; do
  d=$W/only-$v; rm -rf "$d"; mkdir -p "$d"
  cp -P "$W/b-p/bin/"libggml-base.so* "$W/b-p/bin/"libggml.so* "$W/b-p/bin/"libllama.so* "$W/b-p/bin/llama-bench" "$d/"
  case $v in
    unpatched-*) cp "$W/b-o/bin/libggml-cpu-sapphirerapids.so" "$d/" ;;
    *) cp "$W/b-p/bin/libggml-cpu-$v.so" "$d/" ;;
  esac
  echo "-- $v"
  (cd "$d" && LD_LIBRARY_PATH=$d timeout 150 ./llama-bench "${bench[@]}" 2>&1 | grep -E "^\| |error|AMX|Segm" | tail -4)
  echo "   exit ${PIPESTATUS[0]}"
done

echo "== llama-rs cpu_variants on this CPU (the synthetic model, 4 steps)"
mkdir -p "$W/rs" && tar xJf "$A/rs.tar.xz" -C "$W/rs"
LD_LIBRARY_PATH=$W/rs/lib LLAMA_RS_BACKEND_DIR=$W/rs/lib LLAMA_RS_MODEL=$W/m.gguf LLAMA_RS_TEST_VARIANT_STEPS=4 \
  timeout 200 "$W/rs/cpu_variants" every_runnable --nocapture --test-threads 1 2>&1 | grep -E "compared|: \||panicked|variant|test result" | head -24

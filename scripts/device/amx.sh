#!/usr/bin/env bash
# The AMX issue on the device machine's host CPU (no Rust there). Carried under .dev/amx:
#   src.tar.xz     the pinned llama.cpp tree (scripts/device/amx.sh prep makes it here)
#   smol.part0[01] SmolLM2-135M-Instruct Q4_1 in two parts (one call each: 64 MiB)
#   rs.tar.xz      llama-rs's cpu_variants test binary + the cpu-all libraries (optional)
#   patches/       vendor/patches (the carried patch)
# Steps: CPU facts; the miscompile probe with this machine's g++ (unpatched and patched,
# executed for real where AMX is usable); llama-bench from the unpatched and the patched
# tree (native), then the patched cpu-all build with one variant at a time
# (sapphirerapids = AMX, zen4 = AVX-512 VNNI/BF16 without AMX, haswell = AVX2);
# llama-rs's variant agreement test on this CPU (sapphirerapids vs x64).
#   bash scripts/device/amx.sh facts|all
set -uo pipefail
root=$(pwd)
A=$root/.dev/amx
W=/tmp/amx
out=${OUT:-/tmp/out}
mkdir -p "$W" "$out"
echo "== CPU"
grep -m1 'model name' /proc/cpuinfo
echo "amx flags: $(grep -o 'amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "avx512 flags: $(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
nproc; g++ --version | head -1; cmake --version | head -1; command -v ninja || true
[ "${1:-all}" = facts ] && exit 0

model=$W/smol.gguf
[ -s "$model" ] || cat "$A/smol.part00" "$A/smol.part01" > "$model"
echo "model sha256: $(sha256sum "$model" | cut -c1-16) (want b179c9523d0e6a0f)"
if [ ! -d "$W/orig" ]; then
  mkdir -p "$W/orig" && tar xJf "$A/src.tar.xz" -C "$W/orig"
  cp -r "$W/orig" "$W/patched"
  (cd "$W/patched" && for p in "$A"/patches/*.patch; do patch -p1 < "$p" || git apply "$p" || exit 1; done)
fi

echo "== probe: the tile config ggml_tile_config_init hands ldtilecfg, compiled here"
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
    end = k + 1 + (src[k + 1] == ";")
    return src[i:end]
init = item("inline void ggml_tile_config_init(").replace("inline void ggml_tile_config_init", "__attribute__((noinline)) static void ggml_tile_config_init", 1)
print("#include <immintrin.h>\n#include <cstdint>\n" + item("struct tile_config_t") + "\n" + item("static inline void ggml_tile_loadconfig(") + "\n" + init + "\nvoid probe_init(void) { ggml_tile_config_init(); }")
PY
  for o in -O0 -O2 "-O3 -march=native"; do
    g++ $o -mamx-tile -std=c++17 "$W/probe-$tree.cpp" "$root/llama-sys/build/amx_probe.cpp" -o "$W/probe" 2>&1 | tail -2
    r=$("$W/probe"); echo "$tree $o: $r (exit $?)"
  done
done

echo "== llama-bench, native builds (GGML_NATIVE=ON): unpatched, then patched"
common=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DGGML_OPENMP=ON)
bench=(-m "$model" -p 512 -n 128 -r 3 -t "$(nproc)" -o md)
for tree in orig patched; do
  cmake -S "$W/$tree" -B "$W/b-$tree" "${common[@]}" -DGGML_NATIVE=ON >/dev/null && \
    cmake --build "$W/b-$tree" --target llama-bench -j "$(nproc)" >/dev/null 2>&1 || echo "build $tree failed"
  echo "-- $tree, native:"
  timeout 300 "$W/b-$tree/bin/llama-bench" "${bench[@]}" 2>&1 | grep -v "^load\|^llama_\|^print_info" | tail -8
  echo "   exit ${PIPESTATUS[0]}"
done

echo "== patched cpu-all build, one variant at a time"
cmake -S "$W/patched" -B "$W/b-all" "${common[@]}" -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
  -DBUILD_SHARED_LIBS=ON >/dev/null
cmake --build "$W/b-all" --target llama-bench ggml-cpu-sapphirerapids ggml-cpu-zen4 ggml-cpu-haswell -j "$(nproc)" >/dev/null 2>&1 \
  || echo "cpu-all build failed"
for v in sapphirerapids zen4 haswell; do
  d=$W/only-$v; rm -rf "$d"; mkdir -p "$d"
  cp -P "$W/b-all/bin/"lib*.so* "$W/b-all/bin/llama-bench" "$d/" 2>/dev/null
  find "$d" -name 'libggml-cpu-*.so' ! -name "libggml-cpu-$v.so" -delete
  echo "-- variant $v:"
  (cd "$d" && LD_LIBRARY_PATH=$d timeout 300 ./llama-bench "${bench[@]}" 2>&1 | grep -v "^load\|^llama_\|^print_info" | tail -6)
done

if [ -f "$A/rs.tar.xz" ]; then
  echo "== llama-rs cpu_variants test on this CPU (SmolLM2)"
  mkdir -p "$W/rs" && tar xJf "$A/rs.tar.xz" -C "$W/rs"
  LD_LIBRARY_PATH=$W/rs/lib LLAMA_RS_BACKEND_DIR=$W/rs/lib LLAMA_RS_MODEL=$model \
    timeout 400 "$W/rs/cpu_variants" --nocapture --test-threads 1 2>&1 | tail -25
fi

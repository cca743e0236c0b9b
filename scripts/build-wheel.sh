#!/usr/bin/env bash
# Builds the Python wheel users install: the `cpu-all` build of llama.cpp (every CPU
# variant as a module, the best one for the running CPU picked at load), its shared
# libraries inside the package next to the extension (found through $ORIGIN), no OpenMP,
# tagged for the manylinux policy its binaries meet — checked by PyPA's `auditwheel show`,
# the tool PyPI's uploads are judged by, not just named so.
#   scripts/build-wheel.sh            # -> target/wheels-portable/llama_rs-*-manylinux_*.whl
# The manylinux tag is the lowest the binaries allow (their newest glibc symbol version),
# as auditwheel computes it: built on Debian 12, manylinux_2_34-class machines and newer.
set -euo pipefail
cd "$(dirname "$0")/.."
export LLAMA_BUILD_CONFIG=cpu-all CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cpu-all}
out_dir=target/wheels-portable
py=$(python3 -c 'import sys; print(sys.executable)')
pipi() { "$py" -m pip install -q --disable-pip-version-check "$@" 2>/dev/null \
  || "$py" -m pip install -q --disable-pip-version-check --break-system-packages "$@" || true; }
[ -x target/py-tools/bin/maturin ] || pipi --target target/py-tools maturin
[ -d target/py-tools/auditwheel ] && [ -d target/py-tools/wheel ] || pipi --target target/py-tools auditwheel wheel
[ -d target/py-tools/auditwheel ] || { echo "build-wheel: could not install auditwheel from PyPI" >&2; exit 1; }

# 1. The libraries and modules (cmake install tree of llama-sys's build).
echo "build-wheel: building llama.cpp with LLAMA_BUILD_CONFIG=cpu-all (every CPU variant: the first build takes long)" >&2
# Through llama-py's own dependency graph: maturin's build below then finds it built
# (`cargo build -p llama-sys` alone would be another feature resolution: another build).
llama_out=$(cargo build --release --locked -p llama-py --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and "llama-sys" in m["package_id"]:
        print(m["out_dir"])' | tail -n1)
lib=$llama_out/cmake/lib
ls "$lib"/libggml-cpu-*.so >/dev/null || { echo "build-wheel: no CPU variant modules in $lib" >&2; exit 1; }

# 2. Into the package, under the names the loader asks for (the SONAMEs) and the modules'.
pkg=llama-py/python/llama_rs
rm -f "$pkg"/lib*.so*
trap 'rm -f "$pkg"/lib*.so*' EXIT
for f in "$lib"/lib*.so*; do
  [ -L "$f" ] && continue  # the real files only; their SONAME names are made below
  soname=$(objdump -p "$f" | awk '/SONAME/ {print $2}')
  cp "$f" "$pkg/${soname:-$(basename "$f")}"
done
ls "$pkg"/libllama.so* "$pkg"/libggml-base.so* >/dev/null

# 3. The wheel. maturin's own repair would move libllama & co. into a renamed copy the
# modules cannot find; the libraries are already in the package, so no repair: the tag
# is checked below instead.
rm -rf "$out_dir"
PYTHONPATH=target/py-tools target/py-tools/bin/maturin build --release --locked -m llama-py/Cargo.toml \
  --auditwheel skip --compatibility linux --strip -o "$out_dir" >&2
whl=$(ls "$out_dir"/llama_rs-*.whl)
# 4. What policy do the binaries meet? auditwheel reads every ELF file in the wheel.
show=$(PYTHONPATH=target/py-tools "$py" -m auditwheel show "$whl")
echo "$show" >&2
tag=$(tr '\n' ' ' <<<"$show" | grep -o 'consistent with the *following platform tag: *"manylinux_[0-9]*_[0-9]*_[a-z0-9_]*"' \
  | grep -o 'manylinux_[0-9]*_[0-9]*_[a-z0-9_]*' | head -n1)
[ -n "$tag" ] || { echo "build-wheel: auditwheel finds the wheel consistent with no manylinux tag" >&2; exit 1; }
# Retag (the files are unchanged: the policy check above is what allows the tag).
PYTHONPATH=target/py-tools "$py" -m wheel tags --remove --platform-tag "$tag" "$whl" >/dev/null 2>&1 \
  || { echo "build-wheel: retagging needs the 'wheel' package" >&2; exit 1; }
ls "$out_dir"/*"$tag"*.whl

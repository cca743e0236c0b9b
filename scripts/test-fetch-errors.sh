#!/usr/bin/env bash
# Bad inputs of the fetch step and the build, offline: each must fail with a message that
# names the file and the fix, and leave nothing half-written behind.
set -uo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test-fetch-errors: $*" >&2; exit 1; }
expect() { # expect <substring> <command...>: must fail and print the substring
  local want=$1; shift
  local out
  if out=$("$@" 2>&1); then fail "succeeded but should fail: $*"; fi
  grep -qF -- "$want" <<<"$out" || fail "no \"$want\" in the output of $*: $out"
}

# A corrupt download in the cache: refused, named, deleted.
cache=$tmp/cache
mkdir -p "$cache/downloads"
archive=$(python3 -c 'import tomllib;print(tomllib.load(open("vendor/pin.toml","rb"))["source"]["file"])')
echo "not the sdist" > "$cache/downloads/$archive"
expect "checksum mismatch for $cache/downloads/$archive" env LLAMA_RS_CACHE="$cache" python3 vendor/fetch.py source --force
[ ! -e "$cache/downloads/$archive" ] || fail "corrupt archive left in the cache"
find vendor -maxdepth 1 -name ".fetch-*" -type d | grep -q . && fail "half-extracted tree left in vendor/"
[ -f vendor/llama.cpp/.llama-rs-pin ] || fail "the good tree was touched"

# Missing or non-GGUF model files named by LLAMA_RS_MODEL.
expect "LLAMA_RS_MODEL=$tmp/none.gguf: no such file" env LLAMA_RS_MODEL="$tmp/none.gguf" python3 vendor/fetch.py model
echo "hello" > "$tmp/bad.gguf"
expect "is not a GGUF file" env LLAMA_RS_MODEL="$tmp/bad.gguf" python3 vendor/fetch.py model
expect "LLAMA_CPP_SRC=$tmp is not a llama.cpp tree" env LLAMA_CPP_SRC="$tmp" python3 vendor/fetch.py source

# The build names a missing source tree and the fix.
expect "LLAMA_CPP_SRC=$tmp is not a llama.cpp tree" env LLAMA_CPP_SRC="$tmp" CARGO_TARGET_DIR="$tmp/target" \
  cargo build --release --locked -p llama-sys
# The carried patches (vendor/patches/): one that does not apply to a tree stops the
# build and names itself; and the AMX miscompile check stands guard when the patches are
# off. CMAKE=false: these runs must stop before (or fail at) the C build, not do one.
mkdir -p "$tmp/tree"
cp -r vendor/llama.cpp/{CMakeLists.txt,cmake,include,src,ggml,vendor} "$tmp/tree/"
mkdir -p "$tmp/tree/tools" && cp -r vendor/llama.cpp/tools/mtmd "$tmp/tree/tools/"   # libmtmd's headers
sed -i 's/_tile_loadconfig(&tc);/_tile_loadconfig(\&tc); \/\* moved \*\//' "$tmp/tree/ggml/src/ggml-cpu/amx/mmq.cpp"
expect "0001-ggml-cpu-amx-load-the-whole-tile-config.patch does not apply" env LLAMA_CPP_SRC="$tmp/tree" \
  CARGO_TARGET_DIR="$tmp/target" CMAKE=false cargo build --release --locked -p llama-sys
summary=$(grep -ho 'LLAMA_SYS_AMX_CHECK=.*' target/release/build/llama-sys-*/output | tail -n1)
case $summary in
  *"unpatched code is miscompiled"*)  # this compiler (e.g. GCC 12) needs the patch
    expect "AMX check failed" env LLAMA_SYS_PATCHES=0 CARGO_TARGET_DIR="$tmp/target" CMAKE=false \
      cargo build --release --locked -p llama-sys ;;
  *"passed"*) echo "test-fetch-errors: this compiler builds the unpatched AMX code correctly; the failing check is not exercised" ;;
  *) fail "no AMX check summary in target/release/build/llama-sys-*/output (build llama-sys first): $summary" ;;
esac
rm -rf "$tmp/tree"

# A fetch killed half-way leaves scratch folders: the next fetch removes them.
mkdir -p vendor/.fetch-killed "$cache/downloads/.pip-killed"
LLAMA_RS_CACHE="$cache" python3 vendor/fetch.py source >/dev/null 2>&1 || fail "fetch after an interrupted one failed"
[ ! -e vendor/.fetch-killed ] || fail "an interrupted fetch's vendor/.fetch-killed was left"

# setup.sh on machines that lack things. A PATH that has every command of this machine
# but the ones a case takes away (links in a folder of our own).
fakepath() { # fakepath <dir> <missing command...>
  local dir=$1; shift
  mkdir -p "$dir"
  local d f
  for d in $(tr ':' ' ' <<<"$PATH"); do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
      [ -x "$f" ] && [ ! -e "$dir/${f##*/}" ] && ln -s "$f" "$dir/${f##*/}"
    done
  done
  for f in "$@"; do rm -f "$dir/$f"; done
}
fakepath "$tmp/no-apt" cmake apt-get
expect "no apt-get here: install cmake" env PATH="$tmp/no-apt" scripts/setup.sh
fakepath "$tmp/no-sudo" cmake sudo
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
  # Not root and no sudo: the message names the apt-get line for an administrator.
  chmod o+x "$tmp"
  expect "not root and no usable sudo" setpriv --reuid=65534 --regid=65534 --clear-groups \
    env PATH="$tmp/no-sudo" HOME="$tmp" scripts/setup.sh
fi
expect "unknown option --frobnicate" scripts/setup.sh --frobnicate

if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
  # No network after the first run: setup and both fetches are offline no-ops.
  unshare -n scripts/setup.sh >/dev/null 2>&1 || fail "setup.sh needs the network after a complete first run"
  # A read-only checkout: what is fetched is used; a fetch that must write names the fix.
  unshare -m bash -c 'mount --bind . . && mount -o remount,bind,ro . && python3 vendor/fetch.py source' \
    >/dev/null 2>&1 || fail "a read-only checkout with a fetched tree was refused"
  expect "cannot write" unshare -m bash -c 'mount --bind . . && mount -o remount,bind,ro . &&
    LLAMA_RS_CACHE='"$cache"' python3 vendor/fetch.py source --force'
  [ -f vendor/llama.cpp/.llama-rs-pin ] || fail "the tree was damaged by a failed fetch"
fi

# A tree whose headers differ from the committed bindings' fingerprint: refused before
# cmake runs, naming the `bindgen` feature.
cp -r vendor/llama.cpp/include vendor/llama.cpp/ggml "$tmp/" 2>/dev/null
mkdir -p "$tmp/other/ggml" && mv "$tmp/include" "$tmp/other/include" && mv "$tmp/ggml/include" "$tmp/other/ggml/include"
mkdir -p "$tmp/other/tools/mtmd" && cp vendor/llama.cpp/tools/mtmd/*.h "$tmp/other/tools/mtmd/"
echo "// a local change" >> "$tmp/other/include/llama.h"
expect "enable llama-sys's \`bindgen\` feature" env LLAMA_CPP_SRC="$tmp/other" LLAMA_SYS_DOCS_ONLY=1 \
  CARGO_TARGET_DIR="$tmp/target" cargo check --locked -p llama-sys
expect "llama.h (changed)" env LLAMA_CPP_SRC="$tmp/other" LLAMA_SYS_DOCS_ONLY=1 \
  CARGO_TARGET_DIR="$tmp/target" cargo check --locked -p llama-sys
# Boolean switches: 0 means off, nonsense is an error.
expect 'LLAMA_SYS_SHARED="maybe": expected 1/0' env LLAMA_SYS_SHARED=maybe \
  CARGO_TARGET_DIR="$tmp/target" cargo check --locked -p llama-sys
echo "fetch/build/setup error paths: ok"

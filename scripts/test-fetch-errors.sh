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
ls vendor/.fetch-* >/dev/null 2>&1 && fail "half-extracted tree left in vendor/"
[ -f vendor/llama.cpp/.llama-rs-pin ] || fail "the good tree was touched"

# Missing or non-GGUF model files named by LLAMA_RS_MODEL.
expect "LLAMA_RS_MODEL=$tmp/none.gguf: no such file" env LLAMA_RS_MODEL="$tmp/none.gguf" python3 vendor/fetch.py model
echo "hello" > "$tmp/bad.gguf"
expect "is not a GGUF file" env LLAMA_RS_MODEL="$tmp/bad.gguf" python3 vendor/fetch.py model
expect "LLAMA_CPP_SRC=$tmp is not a llama.cpp tree" env LLAMA_CPP_SRC="$tmp" python3 vendor/fetch.py source

# The build names a missing source tree and the fix.
expect "LLAMA_CPP_SRC=$tmp is not a llama.cpp tree" env LLAMA_CPP_SRC="$tmp" CARGO_TARGET_DIR="$tmp/target" \
  cargo build --release --locked -p llama-sys
echo "fetch/build error paths: ok"

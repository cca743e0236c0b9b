#!/usr/bin/env bash
# llama-rs-server through the official `openai` Python client and `requests` (from PyPI,
# installed into target/py-deps): starts the release binary on a free loopback port with
# the default chat model, runs server/tests/python/test_openai_client.py, stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
deps=target/py-deps
# The interpreter itself, not a pyenv shim: the shim's pip hook rehashes after an install
# and fails on a read-only pyenv (the fresh-machine chroot).
py=$(python3 -c 'import sys; print(sys.executable)')
if ! PYTHONPATH=$deps "$py" -c "import openai, requests" 2>/dev/null; then
  "$py" -m pip install -q --disable-pip-version-check --target "$deps" openai requests 2>/dev/null \
    || "$py" -m pip install -q --disable-pip-version-check --break-system-packages --target "$deps" openai requests \
    || true
  PYTHONPATH=$deps "$py" -c "import openai, requests" \
    || { echo "test-server-python: could not install openai and requests from PyPI" >&2; exit 1; }
fi
cargo build --release --locked -p llama-rs-server
model=$(python3 vendor/fetch.py chat-model)
# A synthetic multimodal projector for the chat model: images through the openai client.
cargo run -q --release --locked -p llama-devtools --bin synth-model -- --shape mmproj-gemma3 \
  --vocab "$model" --out target/server-mmproj.gguf >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/release/llama-rs-server -m "$model" -a smol --port "$port" -t 2 -np 4 -c 4096 --api-key sekrit \
  --mmproj target/server-mmproj.gguf \
  >target/server-python-test.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  if ! kill -0 $pid 2>/dev/null; then  # died before it was ready: say how, at once
    st=0; wait $pid || st=$?
    echo "test-server-python: llama-rs-server ended with status $st$([ $st -gt 128 ] && echo " (signal $((st - 128)))") before it was ready:" >&2
    tail -n 30 target/server-python-test.log >&2
    exit 1
  fi
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health')" 2>/dev/null && break
  sleep 0.1
done
LLAMA_RS_TEST_IMAGE=vendor/llama.cpp/tools/mtmd/test-1.jpeg LLAMA_RS_SERVER="http://127.0.0.1:$port" PYTHONPATH=$deps "$py" server/tests/python/test_openai_client.py

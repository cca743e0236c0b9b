#!/usr/bin/env bash
# Runs the demo: greedy generation on the default model (Gemma 3 270M), streaming text
# and printing tokens/s; then (without arguments) one answer from the chat tool on the
# default chat model (SmolLM2-135M-Instruct). Arguments go to the demo (e.g. a prompt,
# -n 128, --model PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --quiet --release -p llama-examples --bin demo -- "$@"
if [ $# -eq 0 ]; then
  echo
  echo '== chat, one-shot: cargo run --release -p llama-examples --bin chat -- -p "Name three rivers." -n 48'
  cargo run --quiet --release -p llama-examples --bin chat -- -p "Name three rivers." -n 48 --temp 0
fi

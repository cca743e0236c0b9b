#!/usr/bin/env bash
# Runs the demo: greedy generation on the default model (Gemma 3 270M), streaming text
# and printing tokens/s. Arguments go to the demo (e.g. a prompt, -n 128, --model PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --quiet --release -p llama-examples --bin demo -- "$@"

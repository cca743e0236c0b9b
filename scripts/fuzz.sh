#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz + libFuzzer, Rust side under AddressSanitizer)
# for SECONDS each, from the seeds written by `fuzz-seeds` plus what earlier runs kept.
# Prints one line per target: executions, corpus size, and whether it found a crash
# (the input is then under fuzz/artifacts/<target>/; rerun it with
# `cargo fuzz run <target> <file>` inside fuzz/).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# FUZZ_RUNS=N instead runs N inputs per target with a fixed seed (-seed=1): the same
# inputs every time, which is what CI's smoke stage uses.
# Only the stable toolchain exists here: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# -Z sanitizer flags to stable rustc.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model_load tokenize state_load batch_ops grammar chat_template model_params tool_calls lazy_grammar media_bytes)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
python3 vendor/fetch.py source >/dev/null
python3 vendor/fetch.py model >/dev/null
cargo run --release --locked -q -p llama-devtools --bin fuzz-seeds -- fuzz/corpus
export RUSTC_BOOTSTRAP=1
# The targets' scratch model files (common::scratch) go here and leave with the run.
TMPDIR=$(mktemp -d)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
cd fuzz
cargo fuzz build -O
status=0
for t in "${targets[@]}"; do
  log=$TMPDIR/$t.log
  # -rss_limit_mb: the tokenize target maps the 253 MB default model.
  if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS" -seed=1); what="$FUZZ_RUNS runs"; else limit=(-max_total_time="$secs"); what="${secs}s"; fi
  if cargo fuzz run -O "$t" -- "${limit[@]}" -rss_limit_mb=4096 -max_len=65536 -timeout=30 >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/artifacts/$t/)"
    status=1
    grep -E "ERROR|panicked|SUMMARY|==[0-9]+==" "$log" | head -20
  fi
  runs=$(grep -oE "Done [0-9]+ runs" "$log" | grep -oE "[0-9]+" || echo "?")
  cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1 || true)
  echo "fuzz $t: $what, $runs executions, $cov, corpus $(ls "corpus/$t" | wc -l) inputs: $result"
done
exit $status

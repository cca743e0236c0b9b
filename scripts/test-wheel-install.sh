#!/usr/bin/env bash
# Installs a wheel into a new virtual environment of the given Python (pip, no index:
# it must need nothing else) and generates with it on the default model, as a user
# would; prints the CPU variant it picked.
#   scripts/test-wheel-install.sh WHEEL [PYTHON] [MODEL]
set -euo pipefail
whl=$1 py=${2:-python3} model=${3:-}
[ -n "$model" ] || model=$(python3 "$(cd "$(dirname "$0")/.." && pwd)/vendor/fetch.py" model)
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --no-index --disable-pip-version-check "$whl"
cd /  # not the checkout: the module must come from the venv
LLAMA_RS_TEST_MODEL=$model "$venv/bin/python" - <<'PY'
import os, llama_rs
from llama_rs import Llama
info = llama_rs.llama_print_system_info().decode()
llm = Llama(model_path=os.environ["LLAMA_RS_TEST_MODEL"], n_ctx=256, n_threads=2, verbose=False)
out = llm("The capital of France is", max_tokens=8, temperature=0.0)
text = out["choices"][0]["text"]
print(f"wheel: {llama_rs.__file__}")
print(f"wheel: {info}")
assert info.startswith("CPU variant = "), info
print(f"wheel: generated {text!r}")
assert "capital" in text or "Paris" in text, text
PY

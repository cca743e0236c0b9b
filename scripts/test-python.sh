#!/usr/bin/env bash
# The Python module: builds the wheel with maturin (from PyPI, into target/py-tools),
# installs it into target/py-llama and runs llama-py/tests/test_llama.py on the chat model.
# (`pip install ./llama-py` does the same build through maturin's PEP 517 backend.)
set -euo pipefail
cd "$(dirname "$0")/.."
pipi() { python3 -m pip install -q --disable-pip-version-check "$@" 2>/dev/null \
  || python3 -m pip install -q --disable-pip-version-check --break-system-packages "$@"; }
[ -x target/py-tools/bin/maturin ] || pipi --target target/py-tools maturin
rm -rf target/wheels target/py-llama
PYTHONPATH=target/py-tools target/py-tools/bin/maturin build --release --locked -m llama-py/Cargo.toml -o target/wheels
rm -f target/wheels/*manylinux*   # maturin's empty placeholder next to the unrepaired wheel
pipi --no-deps --target target/py-llama target/wheels/llama_rs-*.whl
LLAMA_RS_CHAT_MODEL=$(python3 vendor/fetch.py chat-model) PYTHONPATH=target/py-llama \
  python3 llama-py/tests/test_llama.py

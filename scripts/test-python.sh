#!/usr/bin/env bash
# The Python module: builds the wheel with maturin (from PyPI, into target/py-tools),
# installs it into target/py-llama and runs llama-py/tests/test_llama.py on the chat model.
# (`pip install ./llama-py` does the same build through maturin's PEP 517 backend.)
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter itself, not a pyenv shim: the shim's pip hook rehashes after an install
# and fails on a read-only pyenv (the fresh-machine chroot). Success is checked by result.
py=$(python3 -c 'import sys; print(sys.executable)')
pipi() { "$py" -m pip install -q --disable-pip-version-check "$@" 2>/dev/null \
  || "$py" -m pip install -q --disable-pip-version-check --break-system-packages "$@" || true; }
[ -x target/py-tools/bin/maturin ] || pipi --target target/py-tools maturin
[ -x target/py-tools/bin/maturin ] || { echo "test-python: could not install maturin from PyPI" >&2; exit 1; }
# What the tests import besides llama_rs: numpy (scores, logits processors) and mypy
# (stubtest of the native module's .pyi against the binary).
[ -d target/py-deps/numpy ] && [ -d target/py-deps/mypy ] || pipi --target target/py-deps numpy mypy
[ -d target/py-deps/numpy ] || { echo "test-python: could not install numpy from PyPI" >&2; exit 1; }
rm -rf target/wheels target/py-llama
PYTHONPATH=target/py-tools target/py-tools/bin/maturin build --release --locked -m llama-py/Cargo.toml -o target/wheels
rm -f target/wheels/*manylinux*   # maturin's empty placeholder next to the unrepaired wheel
pipi --no-deps --target target/py-llama target/wheels/llama_rs-*.whl
[ -d target/py-llama/llama_rs ] || { echo "test-python: the wheel did not install" >&2; exit 1; }
# A synthetic model with an MTP head (GLM-4.5 layout, random weights) for MTP drafting.
cargo run -q --release --locked -p llama-devtools --bin synth-model -- --shape mtp-tiny \
  --vocab vendor/llama.cpp/models/ggml-vocab-qwen2.gguf --out target/py-mtp-tiny.gguf >/dev/null
# A synthetic reranker (Qwen3-Reranker's layout) for Llama.rank.
cargo run -q --release --locked -p llama-devtools --bin synth-model -- --shape tiny-reranker \
  --vocab vendor/llama.cpp/models/ggml-vocab-qwen2.gguf --out target/py-tiny-reranker.gguf >/dev/null
# A synthetic multimodal projector (Gemma 3 layout) for the chat model, for chat_handler=.
cargo run -q --release --locked -p llama-devtools --bin synth-model -- --shape mmproj-gemma3 \
  --vocab "$(python3 vendor/fetch.py chat-model)" --out target/py-mmproj.gguf >/dev/null
LLAMA_RS_MMPROJ=target/py-mmproj.gguf LLAMA_RS_TEST_IMAGE=vendor/llama.cpp/tools/mtmd/test-1.jpeg \
LLAMA_RS_MTP_MODEL=target/py-mtp-tiny.gguf LLAMA_RS_RERANK_MODEL=target/py-tiny-reranker.gguf \
LLAMA_RS_CHAT_MODEL=$(python3 vendor/fetch.py chat-model) LLAMA_RS_DEFAULT_MODEL=$(python3 vendor/fetch.py model) \
  PYTHONPATH=target/py-llama:target/py-deps \
  "$py" llama-py/tests/test_llama.py
# The native module's stubs (llama_rs/_llama_rs.pyi) against the built binary.
MYPY_CACHE_DIR=target/mypy-cache PYTHONPATH=target/py-llama:target/py-deps \
  "$py" -m mypy.stubtest llama_rs._llama_rs
echo "test-python: stubtest of llama_rs._llama_rs passed"

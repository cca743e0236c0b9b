#!/usr/bin/env bash
# The checks that need no C build, first in CI so that style failures cost seconds:
# formatting, clippy (warnings are errors; `[workspace.lints]` denies undocumented
# unsafe blocks and unsafe operations outside `unsafe` blocks), and rustdoc (warnings
# are errors), and no import cycle between a crate's modules. llama-sys runs in docs-only mode here (committed bindings, no cmake).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
export LLAMA_SYS_DOCS_ONLY=1 CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/check}
for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || { echo "style: cargo $tool is not installed (rustup component add ${tool/fmt/rustfmt}); cannot check" >&2; exit 1; }
done
# Modules of a crate import each other in one direction (scripts/import-cycles.py).
python3 scripts/import-cycles.py
cargo fmt --all --check || { echo "style: run \`cargo fmt --all\`" >&2; exit 1; }
(cd fuzz && cargo fmt --check) || { echo "style: run \`cargo fmt\` in fuzz/" >&2; exit 1; }
cargo clippy --locked --workspace --all-targets -q -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --workspace -q
echo "style: fmt, clippy, doc clean in $(( $(date +%s) - start )) s"

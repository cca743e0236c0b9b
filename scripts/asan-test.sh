#!/usr/bin/env bash
# The llama-rs integration tests under AddressSanitizer + LeakSanitizer (Rust side
# instrumented; llama.cpp's C/C++ is not, but every heap allocation, its own included,
# goes through ASan's allocator, so leaks, double frees and frees of bad pointers there
# are caught too). Stable toolchain: RUSTC_BOOTSTRAP=1 enables -Zsanitizer.
#   scripts/asan-test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 vendor/fetch.py source >/dev/null
python3 vendor/fetch.py model >/dev/null
export RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan
# allocator_may_return_null: the hostile tests ask for impossible sizes and expect the
# fallible allocation to fail (as the system allocator does), not ASan to abort.
export ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0:allocator_may_return_null=1
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=1"
cargo test --release --target "$(rustc -vV | sed -n 's/^host: //p')" -p llama-rs --tests "$@"

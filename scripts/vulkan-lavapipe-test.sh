#!/usr/bin/env bash
# Vulkan without a GPU: builds llama-rs with the `vulkan` feature inside a Debian 13
# (trixie) chroot — Debian 12's Vulkan-Headers 1.3.239 are too old for llama.cpp — and
# runs the core tests on Mesa's lavapipe (a CPU Vulkan device), as llama.cpp's own CI
# does: GGML_VK_VISIBLE_DEVICES=0 GGML_VK_DISABLE_F16=1 GGML_VK_DISABLE_COOPMAT=1.
# Needs root. Usage: scripts/vulkan-lavapipe-test.sh [CHROOT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/chroot-net.sh
root=${1:-/opt/trixie}
repo=$(pwd)
if [ ! -x "$root/usr/bin/glslc" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  [ -d "$root/usr" ] || debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian >/dev/null
  chroot_trust_host "$root"
  chroot "$root" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends libvulkan-dev spirv-headers glslc mesa-vulkan-drivers cmake ninja-build g++ \
    ccache python3 ca-certificates >/dev/null'
fi
# Every run: the host's CAs may have changed since the root was made.
chroot_trust_host "$root"
chroot_passenv
model=$(python3 vendor/fetch.py model)
python3 vendor/fetch.py source >/dev/null
mkdir -p "$root/work/repo" "$root/root/.cargo" "$root/root/.rustup" "$root/proc" "$root/model"
cleanup() { umount "$root/work/repo" "$root/root/.cargo" "$root/root/.rustup" "$root/proc" "$root/model" 2>/dev/null || true; }
trap cleanup EXIT
mount --bind "$repo" "$root/work/repo"
mount --bind "$HOME/.cargo" "$root/root/.cargo"
mount --bind "$HOME/.rustup" "$root/root/.rustup"
mount --bind "$(dirname "$model")" "$root/model"
mount -t proc proc "$root/proc"
chroot "$root" env -i "${passenv[@]}" HOME=/root PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin \
  LLAMA_RS_MODEL="/model/$(basename "$model")" CARGO_TARGET_DIR=/work/repo/target/vulkan \
  GGML_VK_VISIBLE_DEVICES=0 GGML_VK_DISABLE_F16=1 GGML_VK_DISABLE_COOPMAT=1 bash -c '
  set -e; cd /work/repo
  cargo build --release --locked -p llama-rs --features vulkan --tests
  # The Vulkan device must be there (lavapipe shows up as "llvmpipe"), else the tests
  # below would silently run on ggml-cpu.
  cargo run --release --locked -q -p llama-examples --features vulkan --bin rpc-server -- --list | tee /tmp/devices
  grep -q "^0: Vulkan0" /tmp/devices
  # lavapipe runs the model on the CPU through Vulkan, much slower than ggml-cpu: a
  # subset that covers loading, offload, decode, KV edits, state and generation.
  tests="metadata_of_the_default_model greedy_matches_llama_cpp_cli_and_is_deterministic devices_and_system_info \
    bad_inputs_are_typed_errors memory_operations state_round_trip_reproduces_logits_bit_for_bit \
    removing_the_tail_and_redecoding_equals_decoding_from_scratch \
    stop_strings_spanning_tokens_are_cut_exactly end_of_generation_is_a_stop \
    device_sampling_gives_the_host_tokens device_sampling_on_an_odd_sized_vocabulary_matches_the_host \
    fit_chooses_layers_from_the_dry_run_plan fit_moves_moe_experts_to_host_memory_before_layers"
  bins="--test model --test context --test generate --test files --test fit"
  # A renamed test must not silently drop out of this list.
  cargo test --release --locked -p llama-rs --features vulkan $bins -- --list 2>/dev/null | sed -n "s/: test$//p" > /tmp/all-tests
  for t in $tests; do grep -qx "$t" /tmp/all-tests || { echo "lavapipe: no test named $t (renamed? update scripts/vulkan-lavapipe-test.sh)" >&2; exit 1; }; done
  cargo test --release --locked -p llama-rs --features vulkan $bins -- --test-threads 1 --exact $tests
  echo "lavapipe: Vulkan core tests passed"'

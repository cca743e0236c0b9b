#!/usr/bin/env bash
# Compile check of the HIP backend for gfx1151 (Strix Halo) on a machine without ROCm:
# a Debian sid chroot (hipcc 7.0 / HIP 6.4, rocBLAS/hipBLAS 6.4) builds llama-sys with
# LLAMA_BUILD_CONFIG=gfx1151-hip and links the llama-rs test binaries against the HIP
# libraries. Nothing runs on a GPU. Needs root, ~6 GB of disk, ~15 min on 2 cores.
#   scripts/hip-compile-check.sh [CHROOT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-/opt/sid}
repo=$(pwd)
if [ ! -x "$root/usr/bin/hipconfig" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
  [ -d "$root/usr" ] || debootstrap --variant=minbase sid "$root" http://deb.debian.org/debian
  cp /etc/resolv.conf "$root/etc/"
  chroot "$root" bash -c 'apt-get -o Acquire::Check-Valid-Until=false update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      hipcc libamdhip64-dev librocblas-dev libhipblas-dev cmake ninja-build g++ ccache'
fi
mkdir -p "$root/work/repo" "$root/root/.cargo" "$root/root/.rustup" "$root/proc"
cleanup() { umount "$root/work/repo" "$root/root/.cargo" "$root/root/.rustup" "$root/proc" 2>/dev/null || true; }
trap cleanup EXIT
mount --bind "$repo" "$root/work/repo"
mount --bind "$HOME/.cargo" "$root/root/.cargo"
mount --bind "$HOME/.rustup" "$root/root/.rustup"
mount -t proc proc "$root/proc"
chroot "$root" env -i HOME=/root PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin bash -c '
  set -e; cd /work/repo
  hipconfig --version; echo
  export LLAMA_BUILD_CONFIG=gfx1151-hip CARGO_TARGET_DIR=/work/repo/target/hip
  time cargo build --release -p llama-sys
  time cargo test --release -p llama-rs --no-run
  lib=$(ls -d target/hip/release/build/llama-sys-*/out/cmake/lib | head -1)
  ls -la "$lib"
  echo "gfx1151 code objects:"; (strings "$lib"/libggml-hip.a 2>/dev/null || true) | grep -c "amdgcn-amd-amdhsa--gfx1151" || true'

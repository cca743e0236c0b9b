#!/usr/bin/env bash
# Proof that the portable build runs on a CPU with fewer features than this one, and the
# native build does not: QEMU's user-mode emulator with `-cpu Haswell` answers CPUID as
# a Haswell (AVX2, FMA; no AVX-512) and cannot execute AVX-512 at all (its TCG has no
# AVX-512: such an instruction is SIGILL, as on a real Haswell).
#  1. the cpu-all build's variant child under it: must pick `haswell`, and its logits must
#     be bit-identical to the same variant run natively (forced with LLAMA_RS_CPU_VARIANT);
#  2. control, where this CPU has AVX-512: the native (`cpu-native`) build of the same
#     child under it must die of SIGILL — else the emulator would prove nothing.
# Usage: scripts/test-portable-qemu.sh CPU_ALL_TEST_BIN CPU_ALL_LIB_DIR [NATIVE_TEST_BIN]
set -euo pipefail
bin=$1 lib=$2 native=${3:-}
if ! command -v qemu-x86_64 >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "test-portable-qemu: installing qemu-user (apt-get) to emulate a CPU without AVX-512" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user; } >/dev/null
  else
    echo "test-portable-qemu: qemu-x86_64 missing (apt-get install qemu-user): not run" >&2; exit 1
  fi
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
child() { # child OUT [runner...]: the variant child, 2 greedy steps
  local out=$1; shift
  LD_LIBRARY_PATH=$lib LLAMA_RS_TEST_VARIANT_OUT=$out LLAMA_RS_TEST_VARIANT_STEPS=2 \
    "$@" "$bin" variant_child --exact --test-threads 1 >"$out.log" 2>&1
}
t=$(date +%s)
child "$tmp/emulated" qemu-x86_64 -cpu Haswell || { cat "$tmp/emulated.log" >&2; echo "test-portable-qemu: the portable build failed under qemu -cpu Haswell" >&2; exit 1; }
head -n1 "$tmp/emulated" | grep -qx "variant haswell" || { echo "test-portable-qemu: picked $(head -n1 "$tmp/emulated"), not haswell" >&2; exit 1; }
LLAMA_RS_CPU_VARIANT=haswell child "$tmp/native"
cmp -s "$tmp/emulated" "$tmp/native" || { echo "test-portable-qemu: logits under qemu differ from the native haswell run" >&2; exit 1; }
echo "test-portable-qemu: under qemu -cpu Haswell the portable build picked haswell; logits bit-identical to the native haswell run ($(( $(date +%s) - t )) s)" >&2
if [ -n "$native" ] && grep -qw avx512f /proc/cpuinfo; then
  st=0
  LD_LIBRARY_PATH=$lib LLAMA_RS_TEST_VARIANT_OUT=$tmp/ctl LLAMA_RS_TEST_VARIANT_STEPS=1 \
    qemu-x86_64 -cpu Haswell "$native" variant_child --exact --test-threads 1 >"$tmp/ctl.log" 2>&1 || st=$?
  # qemu reports the target's signal as its own exit: 128 + 4 (SIGILL), or dies of it.
  grep -q "signal 4\|Illegal instruction" "$tmp/ctl.log" || [ $st -eq 132 ] \
    || { cat "$tmp/ctl.log" >&2; echo "test-portable-qemu: the native build did not die of SIGILL (status $st)" >&2; exit 1; }
  echo "test-portable-qemu: control: the native build dies of SIGILL there (status $st)" >&2
fi

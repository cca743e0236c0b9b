#!/usr/bin/env bash
# The portable wheel on another distribution than the one it was built on: installed
# with pip into a virtual environment of a clean Debian 13 (trixie) root's own Python
# 3.13 (the builder is Debian 12 with Python 3.11), then a generation on the default
# model (scripts/test-wheel-install.sh). Reuses the Vulkan stage's trixie root when it
# exists, else makes a minimal one. Needs root.
#   scripts/test-wheel-other-distro.sh WHEEL [ROOT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/chroot-net.sh
whl=$(realpath "$1") root=${2:-/opt/llama-rs-trixie}
[ "$(id -u)" -eq 0 ] || { echo "test-wheel-other-distro: needs root (debootstrap, chroot)" >&2; exit 1; }
if [ ! -x "$root/usr/bin/python3" ] || ! ls "$root"/usr/lib/python3*/ensurepip >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  [ -d "$root/usr" ] || debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian >/dev/null
  chroot_trust_host "$root"
  chroot "$root" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends python3 python3-venv ca-certificates >/dev/null'
fi
chroot_trust_host "$root"
model=$(python3 vendor/fetch.py model)
mkdir -p "$root/work/wheel" "$root/model" "$root/work/scripts" "$root/proc"
cleanup() { umount "$root/model" "$root/proc" 2>/dev/null || true; rm -rf "$root/work/wheel" "$root/work/scripts"; }
trap cleanup EXIT
cp "$whl" "$root/work/wheel/"
cp scripts/test-wheel-install.sh "$root/work/scripts/"
mount --bind "$(dirname "$model")" "$root/model"
mount -t proc proc "$root/proc"
echo "test-wheel-other-distro: $(chroot "$root" sh -c '. /etc/os-release; echo "$PRETTY_NAME, $(python3 --version), glibc $(ldd --version | head -n1 | grep -o "[0-9.]*$")"')" >&2
chroot "$root" env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
  bash /work/scripts/test-wheel-install.sh "/work/wheel/$(basename "$whl")" python3 "/model/$(basename "$model")"
echo "test-wheel-other-distro: the wheel installed and generated on Debian 13" >&2

#!/usr/bin/env bash
# A fresh machine of our kind, in a chroot: a clean Debian 12 (debootstrap minbase) with
# only what such a machine comes with from outside Debian — the Rust toolchain (rustup)
# and the pyenv Python, bind-mounted read-only, plus the shared libraries that Python
# links against — and a clean clone of this repository (committed files only). There it
# runs exactly the README's two commands, `scripts/demo.sh` and `scripts/test.sh`, so a
# missing install step fails here instead of on a user's machine. Then it checks that
# nothing installed libclang and that the default build compiles no bindgen, and
# finally (installing libclang only then) that the committed bindings are current.
#
# Downloads are reused through a cache outside the root (debootstrap's packages, apt's
# archives, the cargo registry, pip's and llama-rs's download caches); the llama.cpp
# build is not: it is what a new user waits for.
# Needs root. Usage: scripts/fresh-machine-test.sh [ROOT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/chroot-net.sh
repo=$(pwd)
root=${1:-/opt/llama-rs-fresh}
cache=${LLAMA_RS_FRESH_CACHE:-/var/cache/llama-rs-fresh}
[ "$(id -u)" -eq 0 ] || { echo "fresh-machine-test: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=$(dirname "$(command -v cargo)")
py_prefix=$(python3 -c 'import sys; print(sys.base_prefix)')
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
mkdir -p "$cache"/{debs,apt,registry,pip,llama-rs}
t0=$(date +%s)

# 1. The pristine root, built once and kept as a tarball: every run starts from it.
base="$cache/bookworm-minbase.tar"
if [ ! -f "$base" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  tmp=$(mktemp -d /var/tmp/llama-rs-debootstrap.XXXXXX)
  log="$cache/debootstrap.log"
  debootstrap --variant=minbase --cache-dir="$cache/debs" bookworm "$tmp" http://deb.debian.org/debian >"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; echo "fresh-machine: debootstrap failed (log: $log)" >&2; exit 1; }
  # What a fresh machine of our kind has besides Debian's minbase: the shared libraries
  # the machine's Python is linked against (found with ldd, mapped to packages).
  libs=$(ldd "$py_prefix"/bin/python3* "$py_prefix"/lib/python3*/lib-dynload/*.so 2>/dev/null \
    | awk '/=>/ {print $3}' | sort -u || true)
  pkgs=$(for l in $libs; do
      r=$(realpath "$l")
      p=$(dpkg -S "$l" 2>/dev/null || dpkg -S "$r" 2>/dev/null || dpkg -S "/usr$r" 2>/dev/null || dpkg -S "${r#/usr}" 2>/dev/null) || continue
      echo "${p%%:*}"
    done | sort -u | grep -v '^lib\(x\|tk\|tcl\|fontconfig\|freetype\|png\|brotli\)' | tr '\n' ' ' || true)
  chroot_trust_host "$tmp"
  # shellcheck disable=SC2086
  chroot "$tmp" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates $pkgs && apt-get clean" >"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; echo "fresh-machine: installing the base packages failed" >&2; exit 1; }
  chmod 755 "$tmp"  # mktemp's 0700 would become the chroot's / (no one but root could run anything)
  tar -C "$tmp" -cf "$base.part" . && mv "$base.part" "$base"
  rm -rf "$tmp"
  echo "fresh-machine: built the Debian 12 minbase root in $(( $(date +%s) - t0 )) s"
fi

cleanup() {
  for m in proc dev/pts work/llama-rs-cache root/.cache/pip var/cache/apt/archives root/.cargo/registry \
           opt/rustup opt/cargo-bin "${pyenv_root#/}"; do
    umount "$root/$m" 2>/dev/null || true
  done
  umount "$root" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$base"
chmod 755 "$root"
# The root as a mount point of its own (private: nothing propagates back here), so that
# tests can use mount namespaces inside the chroot as on a real machine.
mount --bind "$root" "$root"
mount --make-private "$root"
# This kind of machine may trust extra CAs (its network's TLS proxy): so does the chroot,
# with the CA-related environment a new machine's shell has.
chroot_trust_host "$root"
chroot_passenv

# 2. The repository as a user gets it: a clean clone of the committed HEAD.
git clone -q --no-local "$repo" "$root/work/llama-rs"
git -C "$root/work/llama-rs" checkout -q "$(git -C "$repo" rev-parse HEAD)"

# 3. The toolchains (read-only) and the download caches.
bind() { mkdir -p "$root/$2"; mount --bind "$1" "$root/$2"; [ "${3:-}" = ro ] && mount -o remount,bind,ro "$root/$2"; true; }
bind "$rustup_home" opt/rustup ro
bind "$cargo_bin" opt/cargo-bin ro
bind "$pyenv_root" "${pyenv_root#/}" ro
bind "$cache/registry" root/.cargo/registry
bind "$cache/apt" var/cache/apt/archives
bind "$cache/pip" root/.cache/pip
bind "$cache/llama-rs" work/llama-rs-cache
mount -t proc proc "$root/proc"
# Pseudo-terminals, as every machine has them (the chat test drives chat through one).
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
rm -f "$root/dev/ptmx" && ln -s pts/ptmx "$root/dev/ptmx"
echo "fresh-machine: root ready after $(( $(date +%s) - t0 )) s"

# 4. The README's two commands, as a new user runs them (the demo first: it is what a
#    user does first, and it leaves the build the test command then reuses).
run() {
  chroot "$root" env -i HOME=/root TERM=dumb LANG=C.UTF-8 "${passenv[@]}" \
    PATH="/opt/cargo-bin:$pyenv_root/shims:$pyenv_root/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo PYENV_ROOT="$pyenv_root" \
    LLAMA_RS_CACHE=/work/llama-rs-cache CI="${CI:-}" bash -c "cd /work/llama-rs && $1"
}
run 'scripts/demo.sh' 2>&1 | tee "$root/tmp/demo.out"
grep -q " t/s)" "$root/tmp/demo.out" || { echo "fresh-machine: the demo printed no tokens/s" >&2; exit 1; }
echo "fresh-machine: demo done after $(( $(date +%s) - t0 )) s"
run 'scripts/test.sh'
echo "fresh-machine: tests done after $(( $(date +%s) - t0 )) s"
# The portable wheel test.sh built, for CI's next stage (another distribution).
mkdir -p "$repo/target/ci-wheel" && rm -f "$repo"/target/ci-wheel/*.whl
cp "$root"/work/llama-rs/target/wheels-portable/*.whl "$repo/target/ci-wheel/"

# 5. The default build needs no libclang and compiles no bindgen.
run 'if ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang-*.so* >/dev/null 2>&1; then
       echo "fresh-machine: libclang was installed by the default build" >&2; exit 1; fi
     if cargo tree --locked -e build,normal -p llama-rs | grep -qE "bindgen|clang-sys"; then
       echo "fresh-machine: the default build depends on bindgen/clang-sys" >&2; exit 1; fi
     echo "fresh-machine: no libclang installed, no bindgen in the default build"'

# 6. The committed bindings equal bindgen's output for the pinned headers (libclang now).
run 'scripts/setup.sh --bindgen && scripts/regen-bindings.sh --check'
echo "fresh-machine: passed in $(( $(date +%s) - t0 )) s"

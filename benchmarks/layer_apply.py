"""Benchmark: apply a layer with GNU tar, the compiled core, tarfile and the Python twin.

    python benchmarks/layer_apply.py [LAYER.tar] [--runs N] [--where DIR] [--settle S] [--only GROUPS]

Without a tar, one is built from directories under /usr/share and /usr/lib
(about 8000 files and 250 MB) at /tmp/dockyard-bench-layer.tar and kept
there for the next run; its gzip form (``gzip -6``) and, when zstd(1) is
installed, its zstd form (``zstd -3``) are made next to it the same way.

Each method extracts into a fresh directory ``dockyard-bench-*`` under
``--where`` (default /dev/shm, a tmpfs: there the numbers measure the
programs, not the disk), removed after each run; methods take turns, run
after run, and the best of ``--runs`` is reported with its ratio to GNU
tar on the same form of the layer.

GNU tar does not hash what it reads. apply_layer computes the sha256 of the
blob and, for a compressed one, of the tar too, and is given both to check
(as the snapshotter does). "tarfile + hashlib" is what a Python program
would write without Dockyard: ``tarfile.open(mode="r|")`` over a reader
that hashes what it reads, then ``extractall``. Run as root so that all of
them chown.

This is a measurement, not a test: nothing fails if a number is bad. The
targets it prints are the ones of issue 3 (docs/benchmarks.md records the
results).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

DEFAULT_TAR = "/tmp/dockyard-bench-layer.tar"
TARGET_FILES = 8000
TARGET_BYTES = 250 << 20


def measure(path: str) -> tuple[int, int]:
    """(files, bytes) of the regular files under ``path``."""
    files = size = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(dirpath, name)):
                files += 1
                size += st.st_size
    return files, size


def pick_sources() -> list[str]:
    """Whole directories until ~TARGET_FILES files and ~TARGET_BYTES bytes.

    Directories whose average file size is closest to the target average
    come first, so that both targets are reached together.
    """
    candidates = []
    for parent in ("/usr/share", "/usr/lib"):
        for name in sorted(os.listdir(parent)):
            path = os.path.join(parent, name)
            if os.path.isdir(path) and not os.path.islink(path):
                n, b = measure(path)
                if n:
                    candidates.append((path, n, b))
    target_average = TARGET_BYTES / TARGET_FILES
    candidates.sort(key=lambda c: (abs(math.log(max(c[2], 1) / c[1] / target_average)), c[0]))
    chosen, files, size = [], 0, 0
    for path, n, b in candidates:
        if files + n <= TARGET_FILES * 1.15 and size + b <= TARGET_BYTES * 1.15:
            chosen.append(path)
            files, size = files + n, size + b
        if files >= TARGET_FILES * 0.85 and size >= TARGET_BYTES * 0.85:
            break
    return chosen


def build_tar(path: str) -> None:
    sources = pick_sources()
    print(f"building {path} from: {' '.join(sources)}")
    subprocess.run(["tar", "-cf", path, "-C", "/", *(s.lstrip("/") for s in sources)], check=True)


def compressed_form(tar: str, kind: str) -> str | None:
    """``tar`` compressed with gzip -6 or zstd -3, made once and kept; None without the tool."""
    tool, suffix, level = {"gzip": ("gzip", ".gz", "-6"), "zstd": ("zstd", ".zst", "-3")}[kind]
    path = tar + suffix
    if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(tar):
        return path
    if not shutil.which(tool):
        return None
    print(f"making {path} ({tool} {level})")
    with open(tar, "rb") as src, open(path + ".tmp", "wb") as dst:
        subprocess.run([tool, level, "-c"], stdin=src, stdout=dst, check=True)
    os.rename(path + ".tmp", path)
    return path


def describe(path: str) -> str:
    out = subprocess.run(["tar", "-tvf", path], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    files = sum(1 for line in lines if line.startswith("-"))
    return f"{len(lines)} entries ({files} regular files), {os.path.getsize(path) / 2**20:.0f} MiB"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return "sha256:" + h.hexdigest()


def gnu_tar(*flags: str):
    def run(blob: str, dest: str) -> None:
        subprocess.run(["tar", *flags, blob, "-C", dest], check=True)
    return run


def with_apply_layer(apply_layer, digest: str, diff_id: str, compression: str):
    def run(blob: str, dest: str) -> None:
        with open(blob, "rb", buffering=0) as stream:
            apply_layer(stream, dest, expected_digest=digest, expected_diff_id=diff_id, compression=compression)
    return run


class _HashingReader:
    """A file wrapper that hashes what is read through it (for tarfile's stream mode)."""

    def __init__(self, f):
        self._f = f
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.hash.update(data)
        return data


def with_tarfile(digest: str):
    def run(blob: str, dest: str) -> None:
        with open(blob, "rb") as f:
            reader = _HashingReader(f)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                if hasattr(tarfile, "fully_trusted_filter"):
                    tar.extractall(dest, numeric_owner=True, filter="fully_trusted")
                else:
                    tar.extractall(dest, numeric_owner=True)
            while reader.read(1 << 20):  # the digest covers the whole stream
                pass
        if "sha256:" + reader.hash.hexdigest() != digest:
            raise SystemExit("tarfile: digest mismatch")
    return run


def timed(method, blob: str, where: str, settle: float) -> float:
    """Seconds one extraction takes, into a fresh directory removed afterwards."""
    dest = tempfile.mkdtemp(prefix="dockyard-bench-", dir=where)
    try:
        os.sync()  # start with no dirty pages left by the previous run...
        time.sleep(settle)  # ...and let the filesystem's journal catch up
        start = time.perf_counter()
        method(blob, dest)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(dest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tar", nargs="?", default=DEFAULT_TAR)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--where", default="/dev/shm", help="where to extract (default /dev/shm, a tmpfs)")
    parser.add_argument("--settle", type=float, default=0.0, help="seconds of rest before each run (disks)")
    parser.add_argument("--only", default="tar,gzip,zstd", help="forms to measure (default tar,gzip,zstd)")
    args = parser.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from engine._native import layers as native
    from engine.layer import tar as twin

    if not os.path.exists(args.tar):
        build_tar(args.tar)
    only = set(args.only.split(","))
    diff_id = sha256_file(args.tar)
    print(f"layer: {args.tar}: {describe(args.tar)}; extracting under {args.where}")

    # (form, method, function, blob): GNU tar first in each form, the baseline of its ratios.
    groups: dict[str, list] = {}
    if "tar" in only:
        groups["tar"] = [("GNU tar -xf", gnu_tar("-xf"), args.tar),
                         ("native apply_layer", with_apply_layer(native.apply_layer, diff_id, diff_id, "none"),
                          args.tar),
                         ("tarfile + hashlib", with_tarfile(diff_id), args.tar),
                         ("python twin apply_layer", with_apply_layer(twin.apply_layer, diff_id, diff_id, "none"),
                          args.tar)]
    for kind, flags in (("gzip", ("-xzf",)), ("zstd", ("--zstd", "-xf"))):
        blob = compressed_form(args.tar, kind) if kind in only else None
        if blob is None:
            continue
        digest = sha256_file(blob)
        print(f"{kind}: {blob}: {os.path.getsize(blob) / 2**20:.0f} MiB")
        groups[kind] = [(f"GNU tar {' '.join(flags)}", gnu_tar(*flags), blob),
                        (f"native apply_layer ({kind})", with_apply_layer(native.apply_layer, digest, diff_id, kind),
                         blob),
                        (f"python twin ({kind})", with_apply_layer(twin.apply_layer, digest, diff_id, kind), blob)]

    # Round by round (each method once per round), so that a machine slowing
    # down or speeding up over time affects every method alike.
    best = {name: float("inf") for methods in groups.values() for name, _, _ in methods}
    for _ in range(args.runs):
        for methods in groups.values():
            for name, method, blob in methods:
                best[name] = min(best[name], timed(method, blob, args.where, args.settle))

    print(f"\n{'method':<32}{'best of ' + str(args.runs):>12}{'vs GNU tar':>12}")
    for form, methods in groups.items():
        base = best[methods[0][0]]
        for name, _, _ in methods:
            print(f"{name:<32}{best[name]:>11.3f}s{best[name] / base:>11.2f}x")
        print()
    print("targets (issue 3):")
    if "tar" in groups:
        n, g, t = best["native apply_layer"], best["GNU tar -xf"], best["tarfile + hashlib"]
        print(f"  native / GNU tar -xf           {n / g:5.2f}x   (target <= 0.80)")
        print(f"  tarfile+hashlib / native       {t / n:5.2f}x   (target >= 3)")
    if "gzip" in groups:
        n, g = best["native apply_layer (gzip)"], best["GNU tar -xzf"]
        print(f"  native gzip / GNU tar -xzf     {n / g:5.2f}x   (target <= 0.50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

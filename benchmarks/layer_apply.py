"""Benchmark: apply a layer tar with GNU tar, the compiled core and the Python twin.

    python benchmarks/layer_apply.py [LAYER.tar] [--runs N] [--where DIR] [--settle S]

Without a tar, one is built from directories under /usr/share and /usr/lib
(about 8000 files and 250 MB) at /tmp/dockyard-bench-layer.tar and kept
there for the next run. Each method extracts into a fresh directory
``dockyard-bench-*`` under ``--where`` (default /tmp), removed after each
run; the best of ``--runs`` is reported, with its ratio to GNU tar.

On a disk the numbers move with the kernel's writeback of earlier runs
(each run starts with sync(2) and ``--settle`` seconds of rest to limit
that); with ``--where`` on a tmpfs they measure the programs themselves.
GNU tar does not hash what it reads; apply_layer also computes the sha256
of the whole stream. Run as root so that all three chown.

This is a measurement, not a test: nothing fails if a number is bad.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
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


def describe(path: str) -> str:
    out = subprocess.run(["tar", "-tvf", path], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    files = sum(1 for line in lines if line.startswith("-"))
    return f"{len(lines)} entries ({files} regular files), {os.path.getsize(path) / 2**20:.0f} MiB"


def gnu_tar(tar: str, dest: str) -> None:
    subprocess.run(["tar", "-xf", tar, "-C", dest], check=True)


def with_apply_layer(apply_layer):
    def run(tar: str, dest: str) -> None:
        with open(tar, "rb", buffering=0) as stream:
            apply_layer(stream, dest)
    return run


def timed(method, tar: str, where: str, settle: float) -> float:
    """Seconds one extraction takes, into a fresh directory removed afterwards."""
    dest = tempfile.mkdtemp(prefix="dockyard-bench-", dir=where)
    try:
        os.sync()  # start with no dirty pages left by the previous run...
        time.sleep(settle)  # ...and let the filesystem's journal catch up
        start = time.perf_counter()
        method(tar, dest)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(dest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tar", nargs="?", default=DEFAULT_TAR)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--where", default="/tmp", help="where to extract (default /tmp)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of rest before each run")
    args = parser.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from engine._native import layers as native
    from engine.layer import tar as twin

    if not os.path.exists(args.tar):
        build_tar(args.tar)
    print(f"layer: {args.tar}: {describe(args.tar)}; extracting under {args.where}")
    methods = [("GNU tar -xf", gnu_tar), ("native apply_layer", with_apply_layer(native.apply_layer)),
               ("python twin apply_layer", with_apply_layer(twin.apply_layer))]
    # Round by round (each method once per round), so that a disk slowing
    # down or speeding up over time affects every method alike.
    best = {name: float("inf") for name, _ in methods}
    for _ in range(args.runs):
        for name, method in methods:
            best[name] = min(best[name], timed(method, args.tar, args.where, args.settle))
    results = list(best.items())
    base = results[0][1]
    print(f"\n{'method':<26}{'best of ' + str(args.runs):>12}{'vs GNU tar':>12}")
    for name, seconds in results:
        print(f"{name:<26}{seconds:>11.3f}s{seconds / base:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

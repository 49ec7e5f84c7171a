"""Container start-up, side by side: Dockyard's API and CLI against runc.

Measures, in one run on this machine:

- ``engine.containers.run("busybox", ["true"], remove=True)`` from Python
  (create, plan, clone, set up, exec, wait, remove);
- ``dockyard run --rm busybox true`` from the shell (the same plus Python's
  start-up and the CLI's imports);
- ``runc run`` of a bundle whose rootfs is the same busybox layer (runc
  creates the same five namespaces and also sets up cgroups and seccomp);
- ``python3 -c pass`` as the floor any Python CLI pays.

Medians are reported with ratios to runc. Timings are never pass/fail tests;
this script only reports (``--record FILE`` also writes the results there).

    python benchmarks/run.py [--runs N] [--record docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def median_ms(fn, runs: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), min(samples)


def runc_bundle(engine, directory: Path) -> Path | None:
    """A runc bundle whose read-only rootfs is a copy of busybox's extracted layer."""
    runc = shutil.which("runc")
    if runc is None:
        return None
    image = engine.images.get("busybox")
    (layer,) = engine.snapshots.ensure(image)
    bundle = directory / "bundle"
    bundle.mkdir()
    subprocess.run(["cp", "-a", f"{layer}/.", str(bundle / "rootfs")], check=True)
    subprocess.run([runc, "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    config["root"] = {"path": str(bundle / "rootfs"), "readonly": True}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--record", metavar="FILE", help="also write the results to FILE (markdown)")
    parser.add_argument("--skip-layers", action="store_true", help="skip the layer-apply benchmark")
    args = parser.parse_args()

    from engine import Engine
    from engine.runtime import process

    results: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        tmp = Path(tmp)
        engine = Engine(tmp / "root")
        engine.images.build_busybox()

        # --network none is what runc's bundle gets (a new, empty network namespace):
        # the like-for-like figure. The default bridge adds a veth, an address and
        # /etc/hosts (engine/network/), measured on the next rows.
        api = median_ms(lambda: engine.containers.run("busybox", ["true"], remove=True,
                                                      network_mode="none"), args.runs)
        results.append((f"API containers.run(busybox, true, remove=True, network_mode=none) "
                        f"[{process.implementation()}]", *api))
        api = median_ms(lambda: engine.containers.run("busybox", ["true"], remove=True), args.runs)
        results.append(("API containers.run(busybox, true, remove=True) on the default bridge", *api))

        dockyard = str(Path(sys.executable).parent / "dockyard")
        env = dict(os.environ, DOCKYARD_ROOT=str(tmp / "root"))
        cli = [dockyard, "run", "--rm", "--network", "none", "busybox", "true"]
        results.append(("CLI dockyard run --rm --network none busybox true",
                        *median_ms(lambda: subprocess.run(cli, env=env, check=True), args.runs)))
        bridged = [dockyard, "run", "--rm", "busybox", "true"]
        results.append(("CLI dockyard run --rm busybox true (default bridge)",
                        *median_ms(lambda: subprocess.run(bridged, env=env, check=True), args.runs)))

        bundle = runc_bundle(engine, tmp)
        if bundle is not None:
            counter = iter(range(10**6))
            results.append(("runc run (same busybox rootfs, read-only)",
                            *median_ms(lambda: subprocess.run(
                                ["runc", "run", "--bundle", str(bundle), f"dockyard-bench-{next(counter)}"],
                                check=True), args.runs)))
        results.append(("python3 -c pass (interpreter start-up floor)",
                        *median_ms(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
                                   args.runs)))
        leftovers = os.listdir(tmp / "root" / "containers")
        assert not leftovers, f"benchmark left containers behind: {leftovers}"
        engine.networks.prune()  # the scratch root's bridge goes with it

    runc = next((m for name, m, _ in results if name.startswith("runc")), None)
    lines = ["| what | median ms | min ms | ratio to runc |", "|---|---:|---:|---:|"]
    for name, med, low in results:
        ratio = f"{med / runc:.2f}x" if runc else "n/a"
        lines.append(f"| {name} | {med:.1f} | {low:.1f} | {ratio} |")
    header = (f"Container start-up, {args.runs} runs each, {time.strftime('%Y-%m-%d')}, "
              f"{platform.node()} ({os.cpu_count()} CPUs, kernel {platform.release()})")
    table = "\n".join(lines)
    print(header)
    print(table)

    layer_table = ""
    if not args.skip_layers and (REPO / "benchmarks" / "layer_apply.py").exists():
        # /dev/shm is a tmpfs: the disk of a shared VM makes extraction times swing 5x.
        r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "layer_apply.py"), "--where", "/dev/shm"],
                           capture_output=True, text=True)
        layer_table = r.stdout.strip()
        print(layer_table or r.stderr)

    if args.record:
        record(Path(args.record), header, table, layer_table)
    return 0


def record(path: Path, header: str, table: str, layer_table: str) -> None:
    text = [
        "# Benchmarks",
        "",
        "Measured with `make bench` (`benchmarks/run.py`), Dockyard side by side with its",
        "peers in the same run. These are medians on a small, shared VM: read the ratios,",
        "not the absolute numbers. Timings are never pass/fail tests.",
        "",
        "## Container start-up",
        "",
        header,
        "",
        table,
        "",
        "Targets (issue 2): API median <= 15 ms, CLI median <= 150 ms, measured with "
        "--network none (what runc's bundle gets); the default bridge rows show what "
        "networking adds (engine/network/; see the Networking section).",
        "",
    ]
    if layer_table:
        text += ["## Layer apply (tar -> directory, with sha256 of the stream)", "", "```",
                 layer_table, "```", ""]
    path.write_text("\n".join(text))


if __name__ == "__main__":
    raise SystemExit(main())

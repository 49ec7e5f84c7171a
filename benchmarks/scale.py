"""Many detached containers: start 100, list them, stop and remove them.

Measures, in one run on this machine:

- 100 ``engine.containers.run("busybox", ["sleep", "1000"], detach=True)``
  from Python (each returns once its command runs under its own monitor),
  and ``dockyard run -d`` from the shell for a sample of them;
- ``dockyard ps`` with them all running, and ``engine.containers.list()``;
- the host memory each idle container costs: its monitor's VmRSS
  (/proc/<pid>/status) and PSS (/proc/<pid>/smaps_rollup: shared pages
  divided among the processes sharing them, so the static monitor's text
  counts once);
- ``stop`` (timeout 0: ``sleep`` as PID 1 ignores SIGTERM, as in docker) and
  ``rm`` of all of them;
- the same with podman (``--runtime runc``, conmon as its monitor) when
  it is installed, side by side.

Targets (issue 4): 100 starts <= 5 s; <= 2 MB host memory per idle container.
Not a test: it only reports. ``--record FILE`` appends the table as markdown.

    python benchmarks/scale.py [-n 100] [--cli-sample 10] [--record docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# podman on this host needs runc (crun refuses cgroup v1 hybrid) and explicit
# ulimits (see ../shared/REFERENCES.md).
PODMAN = ["podman", "--runtime", "runc"]
PODMAN_RUN = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) of a process, in kB."""
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = int(re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M).group(1))
    except (FileNotFoundError, AttributeError):
        pss = rss
    return rss, pss


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def dockyard(n: int, cli_sample: int) -> dict:
    from engine import Engine
    from engine.runtime import launcher

    out: dict = {"monitor": launcher.implementation()}
    with tempfile.TemporaryDirectory(prefix="dockyard-scale-") as tmp:
        root = Path(tmp) / "root"
        engine = Engine(root)
        engine.images.build_busybox()
        engine.containers.run("busybox", ["true"], remove=True)  # warm: layers extracted, caches hot

        starts = []
        t0 = time.perf_counter()
        containers = []
        for i in range(n):
            t = time.perf_counter()
            containers.append(engine.containers.run("busybox", ["sleep", "1000"], detach=True,
                                                    name=f"scale{i}"))
            starts.append(time.perf_counter() - t)
        out["start_total_s"] = time.perf_counter() - t0
        out["start_median_ms"] = statistics.median(starts) * 1000

        env = dict(os.environ, DOCKYARD_ROOT=str(root))
        cli = [sys.executable, "-m", "engine"]
        cli_times = []
        for i in range(cli_sample):
            t = time.perf_counter()
            subprocess.run([*cli, "run", "-d", "--name", f"cli{i}", "busybox", "sleep", "1000"],
                           env=env, check=True, capture_output=True)
            cli_times.append(time.perf_counter() - t)
        out["cli_run_d_median_ms"] = statistics.median(cli_times) * 1000 if cli_times else None

        out["ps_cli_ms"] = timed(lambda: subprocess.run([*cli, "ps"], env=env, check=True,
                                                        capture_output=True))[0] * 1000
        seconds, listed = timed(lambda: engine.containers.list())
        out["list_api_ms"] = seconds * 1000
        out["running"] = len(listed)

        mem = [memory_kb(c.attrs["Dockyard"]["MonitorPid"]) for c in containers]
        out["monitor_rss_kb"] = statistics.median(r for r, _ in mem)
        out["monitor_pss_kb"] = statistics.median(p for _, p in mem)

        everyone = engine.containers.list(all=True)
        out["stop_total_s"] = timed(lambda: [c.stop(timeout=0) for c in everyone])[0]
        out["rm_total_s"] = timed(lambda: [c.remove() for c in everyone])[0]
        assert engine.containers.list(all=True) == []
    return out


def podman(n: int, busybox_tar: Path) -> dict | None:
    if shutil.which("podman") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="podman-scale-") as tmp:
        store = ["--root", f"{tmp}/storage", "--runroot", f"{tmp}/run"]
        base = [*PODMAN, *store]
        subprocess.run([*base, "load", "-i", str(busybox_tar)], check=True, capture_output=True)
        out: dict = {}
        ids = []
        t0 = time.perf_counter()
        try:
            for i in range(n):
                r = subprocess.run([*base, "run", "-d", *PODMAN_RUN, "--name", f"scale{i}",
                                    "busybox", "sleep", "1000"], check=True, capture_output=True, text=True)
                ids.append(r.stdout.strip())
            out["start_total_s"] = time.perf_counter() - t0
            out["ps_cli_ms"] = timed(lambda: subprocess.run([*base, "ps"], check=True,
                                                            capture_output=True))[0] * 1000
            pids = subprocess.run([*base, "ps", "--format", "{{.ID}}"], capture_output=True, text=True).stdout
            conmons = []
            for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines():
                parts = line.split(None, 1)
                if len(parts) == 2 and "conmon" in parts[1] and tmp in parts[1]:
                    conmons.append(int(parts[0]))
            mem = [memory_kb(pid) for pid in conmons]
            if mem:
                out["monitor_rss_kb"] = statistics.median(r for r, _ in mem)
                out["monitor_pss_kb"] = statistics.median(p for _, p in mem)
            out["running"] = len(pids.split())
            out["stop_total_s"] = timed(lambda: subprocess.run([*base, "stop", "-t", "0", *ids],
                                                               check=True, capture_output=True))[0]
            out["rm_total_s"] = timed(lambda: subprocess.run([*base, "rm", *ids], check=True,
                                                             capture_output=True))[0]
        finally:
            subprocess.run([*base, "rm", "-f", "-a"], capture_output=True)
            subprocess.run([*base, "system", "reset", "-f"], capture_output=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100, help="containers to start (default 100)")
    parser.add_argument("--cli-sample", type=int, default=10, help="extra containers started with the CLI")
    parser.add_argument("--no-podman", action="store_true")
    parser.add_argument("--record", metavar="FILE", help="append the results to FILE (markdown)")
    args = parser.parse_args()

    ours = dockyard(args.n, args.cli_sample)
    theirs = None
    if not args.no_podman and shutil.which("podman"):
        from engine import Engine
        with tempfile.TemporaryDirectory(prefix="dockyard-save-") as tmp:
            engine = Engine(Path(tmp) / "root")
            engine.images.build_busybox()
            tar = Path(tmp) / "busybox.tar"
            with open(tar, "wb") as f:
                engine.images.save(["busybox:latest"], f)
            try:
                theirs = podman(args.n, tar)
            except subprocess.CalledProcessError as e:
                print(f"podman failed: {e.stderr or e}", file=sys.stderr)

    def cell(d, key, fmt):
        return "n/a" if d is None or d.get(key) is None else fmt.format(d[key])

    rows = [
        (f"start {args.n} detached (API; podman: CLI)", "start_total_s", "{:.2f} s"),
        ("  one start, median (API)", "start_median_ms", "{:.1f} ms"),
        ("  one `run -d` from the CLI, median", "cli_run_d_median_ms", "{:.0f} ms"),
        ("`ps` with all of them running (CLI)", "ps_cli_ms", "{:.0f} ms"),
        ("  containers.list() (API)", "list_api_ms", "{:.0f} ms"),
        ("monitor per idle container, VmRSS", "monitor_rss_kb", "{:.0f} kB"),
        ("monitor per idle container, PSS", "monitor_pss_kb", "{:.0f} kB"),
        (f"stop {args.n} (timeout 0)", "stop_total_s", "{:.2f} s"),
        (f"rm {args.n}", "rm_total_s", "{:.2f} s"),
    ]
    lines = [f"| | dockyard ({ours['monitor']} monitor) | podman (runc, conmon) |", "|---|---:|---:|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {cell(ours, key, fmt)} | {cell(theirs, key, fmt)} |")
    table = "\n".join(lines)
    header = f"{args.n} detached busybox `sleep 1000` containers, {time.strftime('%Y-%m-%d')}, " \
             f"{os.uname().nodename} ({os.cpu_count()} CPUs, kernel {os.uname().release})"
    print(header)
    print(table)
    print(json.dumps({"dockyard": ours, "podman": theirs}, indent=1), file=sys.stderr)
    if args.record:
        with open(args.record, "a") as f:
            f.write(f"\n## Many containers (benchmarks/scale.py)\n\n{header}\n\n{table}\n\n"
                    "Targets (issue 4): 100 starts <= 5 s; <= 2 MB host memory per idle container.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Image builds, side by side: ``dockyard build`` against docker's classic builder.

Generates a context with a 10-step Dockerfile (FROM busybox; ENV, LABEL,
WORKDIR; COPY of 300 small source files in nested directories; four RUN
steps that do real work in busybox ``sh``: list, concatenate, checksum and
count the files; CMD) and measures, in one run on this machine:

- (a) a cold build (``--no-cache``: every step runs);
- (b) a fully cached rebuild (every step CACHED);
- (c) a rebuild after one source file's content changes (the COPY misses,
  the steps after it run again);

each with the Dockyard CLI (``dockyard build -t NAME CONTEXT``, the real
user path: interpreter start-up, imports, context walk, the build) and with
``DOCKER_BUILDKIT=0 docker build --network none`` when a docker daemon
answers (Dockyard's busybox is loaded into it with ``dockyard save | docker
load``, so both build on the same bytes). Runs alternate between the two.
It also times the cached rebuild through the API (``engine.images.build``
in-process), and profiles that path with cProfile to show what dominates.

Before measuring, ``engine/`` is byte-compiled (as ``make build`` does):
with PYTHONDONTWRITEBYTECODE set, a module edited since the last compile
would otherwise be compiled again by every ``dockyard`` command, which is
not what an installed Dockyard pays. After the three cases, the API cached
rebuild is timed again as the root fills with images (``--scaling``), since
the cache's lookups read image metadata.

Medians are reported with ratios Dockyard/docker. Timings are never pass/fail
tests; this script only reports. ``--record FILE`` writes (or replaces) the
"Builds" section of FILE (markdown). Everything it makes is removed: the
temporary DOCKYARD_ROOT and context, and the docker images it built or loaded.

Targets (issue 5): cached rebuild <= 1 s; cached rebuild <= 0.5x docker's.

    python benchmarks/build.py [--runs 5] [--files 300] [--no-docker] [--scaling 300,600]
                               [--record docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import io
import os
import pstats
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

TAG = f"dockyard-bench-build:{os.getpid()}"

# Ten steps. The RUN steps read every copied file, so a changed file changes
# their work, and they are ordinary busybox applets docker runs the same way.
DOCKERFILE = """\
FROM busybox
ENV APP_HOME=/app LANG=C.UTF-8
LABEL org.opencontainers.image.title="dockyard build benchmark" bench.files="{files}"
WORKDIR /app
COPY src/ /app/src/
RUN find src -type f | sort > MANIFEST && wc -l < MANIFEST > COUNT
RUN cat $(cat MANIFEST) > all.txt && wc -c < all.txt > BYTES && wc -l < all.txt > LINES
RUN xargs md5sum < MANIFEST > SUMS && md5sum all.txt SUMS > TOTAL
RUN grep -c 'def ' all.txt > DEFS && sort -u all.txt | wc -l > UNIQUE && cat COUNT BYTES DEFS UNIQUE
CMD ["cat", "/app/COUNT", "/app/TOTAL"]
"""


def make_context(directory: Path, files: int) -> tuple[Path, Path]:
    """The context: a Dockerfile and ``files`` small sources in nested
    directories (src/pkgNN/modM/fileNNN.py). Returns (context, a file to change)."""
    ctx = directory / "context"
    src = ctx / "src"
    for i in range(files):
        package, module = i % 10, (i // 10) % 3
        path = src / f"pkg{package:02d}" / f"mod{module}" / f"file{i:03d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}  # line {j}\n" for j in range(20))
        path.write_text(f'"""Source file {i}."""\n\n{body}')
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(files=files))
    (ctx / ".dockerignore").write_text("*.tmp\n")
    return ctx, src / "pkg03" / "mod1" / "file013.py"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(argv, env=None) -> None:
    r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.stderr.write(r.stdout.decode("utf-8", "replace"))
        raise SystemExit(f"failed ({r.returncode}): {' '.join(argv)}")


def docker_cli() -> list[str] | None:
    """The docker client, if its daemon answers (classic builder: DOCKER_BUILDKIT=0)."""
    for candidate in ("/usr/local/bin/docker", "/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            r = subprocess.run([candidate, "info", "--format", "{{.ServerVersion}}"],
                               capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip():
                return [candidate]
    return None


class Docker:
    """docker's classic builder, and the images this script makes in it."""

    def __init__(self, cli: list[str], root: Path, dockyard: str, tmp: Path):
        self.cli = cli
        self.env = dict(os.environ, DOCKER_BUILDKIT="0")
        self.made: list[str] = []           # image IDs built (each --iidfile)
        self.iidfile = tmp / "docker.iid"
        self.version = subprocess.run([*cli, "version", "--format", "{{.Server.Version}}"],
                                      capture_output=True, text=True).stdout.strip()
        had = subprocess.run([*cli, "image", "inspect", "--format", "{{.Id}}", "busybox:latest"],
                             capture_output=True, text=True)
        self.loaded_busybox = had.returncode != 0
        if self.loaded_busybox:
            save = subprocess.Popen([dockyard, "save", "busybox:latest"], stdout=subprocess.PIPE,
                                    env=dict(os.environ, DOCKYARD_ROOT=str(root)))
            subprocess.run([*cli, "load"], stdin=save.stdout, check=True, capture_output=True)
            save.stdout.close()
            if save.wait() != 0:
                raise SystemExit("dockyard save busybox:latest failed")

    def build(self, ctx: Path, nocache: bool = False) -> None:
        run([*self.cli, "build", "--network", "none", *(["--no-cache"] if nocache else []),
             "--iidfile", str(self.iidfile), "-t", TAG, str(ctx)], env=self.env)
        self.made.append(self.iidfile.read_text().strip())

    def cleanup(self) -> None:
        """Remove the images built here (their untagged parents go with them),
        and busybox if this script loaded it."""
        victims = [TAG, *dict.fromkeys(reversed(self.made))]
        if self.loaded_busybox:
            victims.append("busybox:latest")
        for victim in victims:
            subprocess.run([*self.cli, "rmi", "-f", victim], capture_output=True)


def profile_cached(engine, ctx: Path, top: int) -> tuple[float, str, list[str]]:
    """cProfile of one cached API rebuild: (seconds, full report, short lines for the record)."""
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.enable()
    engine.images.build(path=str(ctx), tag=TAG)
    profiler.disable()
    seconds = time.perf_counter() - t
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    short = []
    raw = stats.stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    for label, index in (("cumulative", 3), ("own time", 2)):
        rows = sorted(raw.items(), key=lambda kv: kv[1][index], reverse=True)
        shown = 0
        for (file, line, name), (cc, nc, tt, ct, _) in rows:
            where = _short_path(file)
            if label == "cumulative" and ("engine/" not in where or name in ("build",)
                                          and where.endswith("api.py")):
                continue  # only Dockyard's own functions, below the entry point
            short.append(f"{label:>10}  {ct * 1000 if index == 3 else tt * 1000:7.1f} ms  "
                         f"{nc:>6} calls  {where}:{line}({name})")
            shown += 1
            if shown == top:
                break
    return seconds, out.getvalue(), short


def _short_path(file: str) -> str:
    file = file.replace(str(REPO) + "/", "")
    return re.sub(r".*/lib/python3\.\d+/", "", file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each case (median)")
    parser.add_argument("--files", type=int, default=300, help="source files in the context")
    parser.add_argument("--no-docker", action="store_true", help="Dockyard only")
    parser.add_argument("--profile-top", type=int, default=8, help="profile lines kept in the record")
    parser.add_argument("--scaling", default="300,600", metavar="N,N",
                        help="also time the API cached rebuild with N images in the root ('' skips)")
    parser.add_argument("--record", metavar="FILE", help="write the results as FILE's Builds section")
    args = parser.parse_args()
    compileall.compile_dir(str(REPO / "engine"), quiet=1)

    from engine import Engine

    dockyard = str(Path(sys.executable).parent / "dockyard")
    cli = None if args.no_docker else docker_cli()
    if cli is None and not args.no_docker:
        print("docker: no daemon answers `docker info`: measuring Dockyard alone", file=sys.stderr)

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-build-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        engine = Engine(root)
        engine.images.build_busybox()
        ctx, changing = make_context(tmp, args.files)
        env = dict(os.environ, DOCKYARD_ROOT=str(root))
        docker = None
        try:
            docker = Docker(cli, root, dockyard, tmp) if cli else None

            def ours(nocache=False):
                run([dockyard, "build", *(["--no-cache"] if nocache else []), "-t", TAG, str(ctx)], env=env)

            # Warm both (page cache, first-run costs), and check the build works at all.
            ours()
            if docker:
                docker.build(ctx)

            edits = iter(range(10**6))

            def change():
                # New content every time: neither builder has seen it, so COPY misses.
                changing.write_text(changing.read_text().split("# edit")[0] + f"# edit {next(edits)}\n")

            cases = [("cold build (--no-cache)", lambda: None, True),
                     ("cached rebuild", lambda: None, False),
                     ("rebuild after 1 source file changed", change, False)]
            for name, prepare, nocache in cases:
                samples: dict[str, list[float]] = {"dockyard": [], "docker": []}
                for _ in range(args.runs):
                    prepare()
                    samples["dockyard"].append(timed(lambda: ours(nocache)))
                    if docker:
                        samples["docker"].append(timed(lambda: docker.build(ctx, nocache)))
                results[name] = {k: statistics.median(v) for k, v in samples.items() if v}
                results[name]["dockyard_min"] = min(samples["dockyard"])

            # The API, in-process: the same cached rebuild without start-up or imports.
            engine.images.build(path=str(ctx), tag=TAG)
            api = [timed(lambda: engine.images.build(path=str(ctx), tag=TAG)) for _ in range(args.runs)]
            results["api cached"] = {"dockyard": statistics.median(api), "dockyard_min": min(api)}
            floor = [timed(lambda: run([sys.executable, "-c", "pass"])) for _ in range(args.runs)]
            startup = [timed(lambda: run([dockyard, "--version"], env=env)) for _ in range(args.runs)]
            results["floor"] = {"dockyard": statistics.median(floor)}
            results["startup"] = {"dockyard": statistics.median(startup)}
            _, steps = engine.images.build(path=str(ctx), tag=TAG)
            assert all(s.cached for s in steps if s.cached is not None), "the cached rebuild missed"
            images = len(engine.images.list(all=True))
            profiled, report, short = profile_cached(engine, ctx, args.profile_top)

            scaling = [(images, results["api cached"]["dockyard"])]
            for target in [int(n) for n in args.scaling.split(",") if n.strip()]:
                while len(engine.images.list(all=True)) < target:
                    engine.images.build(path=str(ctx), tag=TAG, nocache=True)
                times = [timed(lambda: engine.images.build(path=str(ctx), tag=TAG)) for _ in range(args.runs)]
                scaling.append((len(engine.images.list(all=True)), statistics.median(times)))
        finally:
            if docker:
                docker.cleanup()

    def cell(case, who):
        v = results[case].get(who)
        return "n/a" if v is None else f"{v:.2f} s"

    lines = ["| case | dockyard CLI | docker classic | dockyard / docker |", "|---|---:|---:|---:|"]
    for case in ("cold build (--no-cache)", "cached rebuild", "rebuild after 1 source file changed"):
        r = results[case]
        ratio = f"{r['dockyard'] / r['docker']:.2f}x" if r.get("docker") else "n/a"
        lines.append(f"| {case} | {cell(case, 'dockyard')} | {cell(case, 'docker')} | {ratio} |")
    lines.append(f"| cached rebuild, API `engine.images.build` (in-process) | "
                 f"{results['api cached']['dockyard'] * 1000:.0f} ms | | |")
    lines.append(f"| for scale: `dockyard --version` (CLI start-up) | "
                 f"{results['startup']['dockyard'] * 1000:.0f} ms | | |")
    lines.append(f"| for scale: `python3 -c pass` (interpreter floor) | "
                 f"{results['floor']['dockyard'] * 1000:.0f} ms | | |")
    table = "\n".join(lines)
    peer = f"docker {docker.version} classic builder" if docker else "no docker daemon: Dockyard alone"
    header = (f"10-step Dockerfile, {args.files} source files, {args.runs} run{'s' if args.runs != 1 else ''} each (median), "
              f"{time.strftime('%Y-%m-%d')}, {os.uname().nodename} ({os.cpu_count()} CPUs, "
              f"kernel {os.uname().release}); peer: {peer}")
    cached = results["cached rebuild"]
    split = (f"Of the CLI's cached rebuild ({cached['dockyard'] * 1000:.0f} ms), the build itself is "
             f"about the API's {results['api cached']['dockyard'] * 1000:.0f} ms; the rest is "
             f"interpreter start-up and imports (`dockyard --version`: "
             f"{results['startup']['dockyard'] * 1000:.0f} ms) plus the build modules' imports.")
    checks = [f"cached rebuild (CLI) {cached['dockyard']:.2f} s (target <= 1 s)"]
    if cached.get("docker"):
        checks.append(f"{cached['dockyard'] / cached['docker']:.2f}x docker's (target <= 0.5x)")
    print(header)
    print(table)
    print("targets (issue 5): " + "; ".join(checks))
    print(split)
    scaled = ", ".join(f"{n} images: {s * 1000:.0f} ms" for n, s in scaling)
    print(f"API cached rebuild by images in the root (images -a): {scaled}")
    print(f"\ncProfile of one cached API rebuild, {images} images in the root "
          f"({profiled * 1000:.0f} ms under the profiler):")
    print("\n".join(short))
    print(report, file=sys.stderr)
    if args.record:
        record(Path(args.record), header, table, checks, split, images, profiled, short, scaled)
    return 0


def record(path: Path, header: str, table: str, checks: list[str], split: str, images: int, profiled: float,
           short: list[str], scaled: str) -> None:
    """Write the Builds section of ``path``, replacing the one there (or appending it)."""
    section = "\n".join([
        "## Builds (benchmarks/build.py)",
        "",
        header,
        "",
        table,
        "",
        "Cases: (a) every step runs (`--no-cache`); (b) every step CACHED; (c) one of the",
        "copied files has new content, so COPY misses and the four RUN steps after it run",
        "again. Dockyard: `dockyard build -t NAME CONTEXT`; docker: `DOCKER_BUILDKIT=0 docker",
        "build --network none -t NAME CONTEXT`, building on the same busybox bytes. Reproduce",
        "with `make bench`, or alone: `.venv/bin/python benchmarks/build.py --record docs/benchmarks.md`.",
        "",
        "Targets (issue 5): cached rebuild <= 1 s; cached rebuild <= 0.5x docker's. This run: "
        + "; ".join(checks) + ".",
        "",
        split,
        "",
        f"API cached rebuild as the root fills up (images in `images -a`): {scaled}.",
        "",
        f"Where a cached rebuild's time goes: cProfile of one API rebuild with {images} images in",
        f"the root ({profiled * 1000:.0f} ms under the profiler), Dockyard's own functions by",
        "cumulative time, then the functions with the most time of their own:",
        "",
        "```",
        *short,
        "```",
        "",
    ])
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    match = re.search(r"^## Builds\b.*?(?=^## |\Z)", text, re.M | re.S)
    if match:
        text = text[:match.start()] + section + ("\n" if text[match.end():] else "") + text[match.end():]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())

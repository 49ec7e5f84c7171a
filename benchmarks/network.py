"""Networking: the time to attach a container to a network, and TCP throughput.

Measures, in one run on this machine, in a scratch DOCKYARD_ROOT whose
default bridge has a name and a /24 of its own (one no host route uses):

- attach + detach (engine/network/sandbox.py) in-process, on a container
  that is created but not started: on the default bridge the first time
  (the attach makes the bridge device) and with the bridge up, on a
  user-defined network with one and with ``--peers`` running peers (each
  attach rewrites their /etc/hosts), and with ``none`` as the floor (only
  the files). Medians of many cycles; then where the time goes, from
  wrappers put around the engine's functions for a second series (each
  phase's own time: the namespace, every netlink step, the IPAM, the
  records, the files), and a cProfile of a few cycles;
- starts per network mode (none, host, bridge, a user network, bridge with
  ``-p 127.0.0.1::5000``), runs interleaved: the CLI ``dockyard run --rm
  --network X busybox true``, the API ``engine.containers.run(detach=True)``
  and ``engine.containers.run(remove=True)``; and where a detached API
  start's time goes (the attach, waiting for the monitor, the port proxy);
- the import time of pyroute2 (``python -X importtime``): the whole
  package, the part the engine loads (engine/network/link.py
  ``pyroute2()``), and what ``dockyard run`` imports per network mode; and
  the port proxy's start (``proxy.start()`` until its ports are bound);
- TCP bulk transfers of ``--mb`` MiB over four paths, rounds interleaved:
  host loopback (127.0.0.1, the reference), container to container over
  the bridge, host to the container's address over the bridge, and host to
  the published port (127.0.0.1:P, through the userland proxy,
  engine/network/proxy.py). Each with busybox ``nc`` (the server ``nc -l -p
  5000 <>FIFO >/dev/null``, the client ``dd if=/dev/zero bs=64k | nc ADDR
  PORT``; the host runs the same /bin/busybox the image is made of) and,
  when a C compiler can build it, with ``blast`` (BLAST_C below: a small
  static program, bind-mounted into the containers) writing 256 KiB and
  1 KiB per write(2): busybox nc reads and writes 1 KiB at a time, which
  caps every path it is on. MiB/s and the ratio to loopback with the same
  tool in the same run. A transfer is timed from the client's start to its
  exit, which comes after the server has read everything and closed (the
  client's launch, measured alone, is subtracted); every path and tool is
  first checked once for the byte count. Also read from /proc and /sys:
  the proxy's CPU time, and the mean size of the packets the server's veth
  carried in.

Traffic goes only over loopback and to the containers this script made.
Everything is removed at the end (containers, the user network, the bridge
devices: ``engine.networks.prune()``), and checked.

Timings are never pass/fail tests; this script only reports. ``--record
FILE`` writes (or replaces) the "Networking" section of FILE (markdown).

    python benchmarks/network.py [--attach-runs 50] [--runs 25] [--mb 256] [--rounds 5]
                                 [--peers 10] [--no-blast] [--record docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import ipaddress
import json
import os
import pstats
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MIB = 1 << 20
NC_PORT, BLAST_PORT = 5000, 5001
NETWORK = "benchnet"
CHUNKS = {"blast": 256 * 1024, "blast-1k": 1024}     # bytes per write(2) of the blast client
TOOL_NAMES = {"nc": "busybox nc", "blast": "blast, 256 KiB writes", "blast-1k": "blast, 1 KiB writes"}

# A bulk sender/receiver with big buffers, to see the network path rather than nc.
#   blast -l PORT [ADDR]     accept one connection, read to the end, print the byte count
#   blast ADDR PORT BYTES [CHUNK]   send BYTES zeros, CHUNK (256 KiB) per write(2),
#                                   half-close, wait for the server to close
BLAST_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static char buf[1 << 18];
int main(int argc, char **argv) {
    struct sockaddr_in a = {0};
    int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_family = AF_INET;
    if (argc >= 3 && !strcmp(argv[1], "-l")) {
        a.sin_port = htons(atoi(argv[2]));
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        if (argc > 3) inet_pton(AF_INET, argv[3], &a.sin_addr);
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, (void *)&a, sizeof a) || listen(s, 1)) { perror("listen"); return 1; }
        int c = accept(s, 0, 0);
        close(s);
        long long n = 0; ssize_t k;
        while ((k = read(c, buf, sizeof buf)) > 0) n += k;
        printf("%lld\n", n);
        close(c);
        return k < 0;
    }
    if (argc < 4) { fprintf(stderr, "usage: blast -l PORT [ADDR] | blast ADDR PORT BYTES [CHUNK]\n"); return 2; }
    long long chunk = argc > 4 ? atoll(argv[4]) : (long long)sizeof buf;
    if (chunk < 1 || chunk > (long long)sizeof buf) chunk = sizeof buf;
    a.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    if (connect(s, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    long long left = atoll(argv[3]);
    while (left > 0) {
        ssize_t k = write(s, buf, left < chunk ? left : chunk);
        if (k < 0) { perror("write"); return 1; }
        left -= k;
    }
    shutdown(s, SHUT_WR);
    while (read(s, buf, sizeof buf) > 0) ;
    return 0;
}
"""


def ms(seconds: float) -> float:
    return seconds * 1000


def med(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


# -- the scratch root ----------------------------------------------------------------------


def scratch_config(root: Path) -> dict:
    """engine.json for the scratch root: a bridge name of its own and a /24
    that overlaps no host route (other roots' bridges included)."""
    from engine.network import ipam

    routes = [n for n in ipam.host_routes()]
    for i in range(256):
        third = (os.getpid() + i) % 256
        subnet = ipaddress.IPv4Network(f"10.203.{third}.0/24")
        if not any(subnet.overlaps(r) for r in routes):
            config = {"bridge": f"dybn{os.getpid():x}"[:15], "bip": f"10.203.{third}.1/24"}
            root.mkdir(parents=True, exist_ok=True)
            (root / "engine.json").write_text(json.dumps(config))
            return config
    raise SystemExit("no free /24 in 10.203.0.0/16 for the scratch bridge")


def bridges_of(engine) -> list[str]:
    """The bridge devices this root's networks name."""
    names = []
    for record in engine.networks.store.list():
        name = (record.get("Options") or {}).get("com.docker.network.bridge.name")
        if name and record.get("Driver") == "bridge":
            names.append(name)
    return names


def cleanup(engine) -> list[str]:
    """Remove every container and network of the root and the bridge devices; what is left."""
    from engine.network import link

    for container in engine.containers.list(all=True):
        try:
            container.remove(force=True)
        except Exception as e:  # keep going: the rest must go too
            print(f"cleanup: {container.name}: {e}", file=sys.stderr)
    bridges = bridges_of(engine)
    try:
        engine.networks.prune()      # user networks, then idle bridge devices (scratch root)
    except Exception as e:
        print(f"cleanup: network prune: {e}", file=sys.stderr)
    left = []
    for name in bridges:
        if link.bridge_exists(name):
            try:
                link.delete_bridge(name)
            except OSError as e:
                print(f"cleanup: bridge {name}: {e}", file=sys.stderr)
        if link.bridge_exists(name):
            left.append(f"bridge {name}")
    netns_dir = engine.layout.netns
    if netns_dir.exists():
        left += [f"netns {n}" for n in os.listdir(netns_dir)]
    left += [f"container {c.name}" for c in engine.containers.list(all=True)]
    return left


# -- phases: each function's own time ----------------------------------------------------


class Phases:
    """Wrappers that add each call's own time (its callees' wrapped time
    excluded) to a label. ``take()`` returns and resets the sums."""

    def __init__(self):
        self.stack: list[float] = []
        self.acc: dict[str, float] = defaultdict(float)
        self.undo: list = []

    def timed(self, label: str, fn):
        phases = self

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            t = time.perf_counter()
            phases.stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                phases.acc[label] += dt - phases.stack.pop()
                if phases.stack:
                    phases.stack[-1] += dt
        return inner

    def wrap(self, owner, attr, label: str) -> None:
        is_dict = isinstance(owner, dict)
        fn = owner.get(attr) if is_dict else getattr(owner, attr, None)
        if fn is None:
            return
        wrapped = self.timed(label, fn)
        if is_dict:
            owner[attr] = wrapped
        else:
            setattr(owner, attr, wrapped)
        self.undo.append((owner, attr, fn, is_dict))

    def take(self) -> dict[str, float]:
        out = dict(self.acc)
        self.acc.clear()
        return out

    def restore(self) -> None:
        for owner, attr, fn, is_dict in reversed(self.undo):
            if is_dict:
                owner[attr] = fn
            else:
                setattr(owner, attr, fn)
        self.undo.clear()


def instrument() -> Phases:
    from engine.api import ContainerCollection
    from engine.network import link, netns, sandbox, store
    from engine.runtime.container import Container

    p = Phases()
    p.wrap(sandbox, "attach", "attach: the rest")
    p.wrap(sandbox, "detach", "detach: the rest")
    p.wrap(netns, "create", "netns create (fork, unshare, bind mount)")
    p.wrap(netns, "remove", "netns remove (umount, unlink)")
    p.wrap(netns, "exists", "netns check (open, ioctl)")
    p.wrap(link, "perform", "netlink: perform, the rest (socket close)")
    p.wrap(link, "_socket_in", "netlink: socket in the netns (thread, setns)")
    original = link.pyroute2

    @functools.wraps(original)
    def pyroute2():
        iproute, error = original()
        return p.timed("netlink: open IPRoute", iproute), error
    link.pyroute2 = pyroute2
    p.undo.append((link, "pyroute2", original, False))
    for step in list(link._DO):
        p.wrap(link._DO, step, f"netlink: {step.__name__}")
    p.wrap(sandbox, "_connect_one", "endpoint: the rest")
    p.wrap(store.NetworkStore, "reserve", "IPAM reserve (lock, record)")
    p.wrap(store.NetworkStore, "release", "IPAM release (lock, record)")
    p.wrap(store.NetworkStore, "get", "network record lookups")
    p.wrap(sandbox, "_record", "NetworkSettings: the rest")
    p.wrap(Container, "update_record", "container record writes")
    p.wrap(sandbox, "write_files", "hosts, resolv.conf, hostname files")
    p.wrap(sandbox, "_refresh_peers", "peers' /etc/hosts: the rest")
    p.wrap(ContainerCollection, "get", "container lookups")
    p.wrap(sandbox, "link_env", "--link variables")
    return p


# -- attach --------------------------------------------------------------------------------


def attach_cycles(engine, container, runs: int, phases: Phases | None = None, between=None):
    """(attach seconds, detach seconds[, phase dicts]) of ``runs`` attach+detach cycles."""
    from engine.network import sandbox

    attach_t, detach_t, attach_p, detach_p = [], [], [], []
    for _ in range(runs):
        if between:
            between()
        if phases:
            phases.take()
        t0 = time.perf_counter()
        box = sandbox.attach(engine, container)
        t1 = time.perf_counter()
        if phases:
            attach_p.append(phases.take())
        box.close()
        t2 = time.perf_counter()
        sandbox.detach(engine, container)
        t3 = time.perf_counter()
        if phases:
            detach_p.append(phases.take())
        attach_t.append(t1 - t0)
        detach_t.append(t3 - t2)
    return attach_t, detach_t, attach_p, detach_p


def phase_medians(samples: list[dict]) -> dict[str, float]:
    labels = {label for s in samples for label in s}
    return {label: med(s.get(label, 0.0) for s in samples) for label in labels}


def measure_attach(engine, args, anchors_ready) -> dict:
    """The attach cases; ``anchors_ready()`` starts the anchor containers after the cold case."""
    from engine.network import sandbox

    out: dict = {"cases": [], "phases": {}}
    created = engine.containers.create("busybox", ["true"], name="attach-bridge")
    # The first container on the default bridge makes the bridge device (a scratch
    # root drops it again at `network prune`): cycles with the device deleted before each.
    n_cold = max(5, args.attach_runs // 4)
    a, d, _, _ = attach_cycles(engine, created, n_cold,
                               between=lambda: sandbox.drop_idle_bridges(engine))
    out["cases"].append(("cold", "default bridge, first container (bridge device made)", a, d))
    anchors_ready()
    user = engine.containers.create("busybox", ["true"], name="attach-user", network=NETWORK)
    none = engine.containers.create("busybox", ["true"], name="attach-none", network="none")
    # Round robin, so that a busy moment of the machine falls on every case alike.
    rounds = {key: ([], []) for key in ("bridge", "user", "none")}
    for _ in range(args.attach_runs):
        for key, container in (("bridge", created), ("user", user), ("none", none)):
            a, d, _, _ = attach_cycles(engine, container, 1)
            rounds[key][0].extend(a)
            rounds[key][1].extend(d)
    out["cases"].append(("bridge", "default bridge (bridge up)", *rounds["bridge"]))
    out["cases"].append(("user", f"user network `{NETWORK}`, 1 running peer", *rounds["user"]))
    out["cases"].append(("none", "`--network none` (files only: the floor)", *rounds["none"]))

    phases = instrument()
    try:
        samples = {key: ([], []) for key in ("bridge", "user")}
        for _ in range(args.attach_runs):
            for key, container in (("bridge", created), ("user", user)):
                _, _, ap, dp = attach_cycles(engine, container, 1, phases)
                samples[key][0].extend(ap)
                samples[key][1].extend(dp)
        out["phases"] = {key: (phase_medians(ap), phase_medians(dp)) for key, (ap, dp) in samples.items()}
    finally:
        phases.restore()

    # Profile: attach+detach on the user network (the most work), cProfile's view.
    profiler = cProfile.Profile()
    profiler.enable()
    attach_cycles(engine, user, 10)
    profiler.disable()
    out["profile"] = top_functions(profiler, 10)

    peers = []
    for i in range(max(0, args.peers - 1)):
        peers.append(engine.containers.run("busybox", ["sleep", "1000"], detach=True,
                                           name=f"peer{i}", network=NETWORK))
    if peers:
        a, d, _, _ = attach_cycles(engine, user, args.attach_runs)
        out["cases"].insert(3, ("peers", f"user network `{NETWORK}`, {args.peers} running peers", a, d))
        for peer in peers:
            peer.remove(force=True)
    for container in (created, user, none):
        container.remove()
    return out


def top_functions(profiler, n: int) -> list[str]:
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        where = filename
        for prefix in (str(REPO) + "/", sys.prefix + "/"):
            if where.startswith(prefix):
                where = where[len(prefix):]
        where = re.sub(r".*/site-packages/", "", where)
        rows.append((tt, ct, nc, f"{where}:{line}({func})"))
    rows.sort(reverse=True)
    return [f"own {tt * 1000 / 10:7.2f} ms  cum {ct * 1000 / 10:7.2f} ms  {nc / 10:6.1f} calls  {name}"
            for tt, ct, nc, name in rows[:n]]


# -- starts: the API and the CLI ---------------------------------------------------------


def shuffled(items: list, run: int) -> list:
    """``items`` in an order of its own each run (seeded: the same every time the
    script runs). What came just before changes a start (one right after a
    ``-p`` container's removal is slower), so no kind always follows the same one."""
    import random

    order = list(items)
    random.Random(run).shuffle(order)
    return order


def measure_starts(engine, root: Path, args) -> dict:
    variants = [
        ("none", {"network": "none"}, ["--network", "none"]),
        ("host", {"network": "host"}, ["--network", "host"]),
        ("bridge", {}, ["--network", "bridge"]),
        (NETWORK, {"network": NETWORK}, ["--network", NETWORK]),
        ("bridge -p", {"ports": ["127.0.0.1::5000"]}, ["--network", "bridge", "-p", "127.0.0.1::5000"]),
    ]
    cli_bin = str(Path(sys.executable).parent / "dockyard")
    env = dict(os.environ, DOCKYARD_ROOT=str(root))
    out = {"cli": defaultdict(list), "api_detach": defaultdict(list), "api_run": defaultdict(list),
           "failed": {}, "errors": {}}

    def cli(flags):
        r = subprocess.run([cli_bin, "run", "--rm", *flags, "busybox", "true"], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")

    def api_detach(kwargs):
        engine.containers.run("busybox", ["sleep", "1000"], detach=True, **kwargs).remove(force=True)

    def api_run(kwargs):
        engine.containers.run("busybox", ["true"], remove=True, **kwargs)

    calls = {"cli": lambda flags, kwargs: cli(flags),
             "api_detach": lambda flags, kwargs: api_detach(kwargs),
             "api_run": lambda flags, kwargs: api_run(kwargs)}
    for name, kwargs, flags in variants:   # warm-up: every path once; what fails is left out
        for key, call in calls.items():
            try:
                call(flags, kwargs)
            except Exception as e:
                out["failed"][(key, name)] = str(e)
                traceback.print_exc()
                print(f"{key} --network {name}: fails, left out: {e}", file=sys.stderr)
    for run in range(args.runs):
        for name, kwargs, flags in shuffled(variants, run):
            for key in calls:
                if (key, name) in out["failed"]:
                    continue
                try:
                    if key == "api_detach":   # the start alone: the removal is not timed
                        t = time.perf_counter()
                        c = engine.containers.run("busybox", ["sleep", "1000"], detach=True, **kwargs)
                        out[key][name].append(time.perf_counter() - t)
                        c.remove(force=True)
                        continue
                    t = time.perf_counter()
                    calls[key](flags, kwargs)
                    out[key][name].append(time.perf_counter() - t)
                except Exception as e:
                    out["errors"].setdefault((key, name), []).append(str(e))
                    traceback.print_exc()
    out["variants"] = [name for name, _, _ in variants]

    # Where a detached API start's time goes, by variant (a second series, wrapped).
    from engine.api import ContainerCollection
    from engine.runtime import launcher

    phases = Phases()
    phases.wrap(ContainerCollection, "run", "create, and run() around the start")
    phases.wrap(launcher, "start", "launcher.start, the rest (lock, cgroup, fork, record)")
    phases.wrap(launcher, "attach_network", "attach_network (sandbox.attach)")
    phases.wrap(launcher, "plan_for", "the plan")
    phases.wrap(launcher, "_read_report", "waiting for the monitor's report (clone, set-up, exec)")
    phases.wrap(launcher, "publish_ports", "publish_ports (the port proxy)")
    out["start_phases"] = {}
    try:
        samples = defaultdict(list)
        for run in range(args.runs):
            for name, kwargs, flags in shuffled(variants, run):
                if ("api_detach", name) in out["failed"]:
                    continue
                phases.take()
                try:
                    c = engine.containers.run("busybox", ["sleep", "1000"], detach=True, **kwargs)
                except Exception:
                    continue
                samples[name].append(phases.take())
                c.remove(force=True)
        out["start_phases"] = {name: phase_medians(s) for name, s in samples.items()}
    finally:
        phases.restore()
    return out


# -- pyroute2's import time --------------------------------------------------------------


def import_ms(stderr: str) -> tuple[float, float]:
    """From ``-X importtime`` output (children come before parents), in ms: the
    cumulative time of the pyroute2 modules not imported by another pyroute2
    module, and of every import at the top level."""
    stack: list[tuple[int, str, int]] = []   # (level, name, cumulative us), not yet claimed
    total = everything = 0
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        cum, level, name = int(m.group(2)), len(m.group(3)) // 2, m.group(4)   # "| " + 2 per level
        if level == 0:
            everything += cum
        children = []
        while stack and stack[-1][0] > level:
            children.append(stack.pop())
        if not name.startswith("pyroute2"):
            # children that are pyroute2 are tops (this parent is not pyroute2)
            total += sum(c for lv, n, c in children if n.startswith("pyroute2"))
        stack.append((level, name, cum))
    total += sum(c for lv, n, c in stack if n.startswith("pyroute2"))
    return total / 1000, everything / 1000


def measure_imports(root: Path, runs: int = 5) -> dict:
    env = dict(os.environ, DOCKYARD_ROOT=str(root))
    py = [sys.executable, "-X", "importtime"]
    cases = {
        "import pyroute2 (the whole package)": [*py, "-c", "import pyroute2"],
        "engine's link.pyroute2() (pyroute2.iproute.linux only)":
            [*py, "-c", "from engine.network import link; link.pyroute2()"],
        "dockyard run --network none": [*py, "-m", "engine", "run", "--rm", "--network", "none", "busybox", "true"],
        "dockyard run --network bridge": [*py, "-m", "engine", "run", "--rm", "--network", "bridge", "busybox",
                                          "true"],
    }
    out = {}
    for label, argv in cases.items():
        samples = []
        for _ in range(runs):
            r = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
            samples.append(import_ms(r.stderr))
        out[label] = (med(p for p, _ in samples), med(a for _, a in samples))
    return out


def measure_proxy_start(runs: int) -> dict:
    """proxy.start() until the proxy reports its ports bound, and stop(); and the
    interpreter it runs in (``python -I -S``) doing nothing."""
    from engine.network import proxy

    watched = subprocess.Popen(["sleep", "1000"])
    starts, floor = [], []
    try:
        for _ in range(runs):
            t = time.perf_counter()
            proc = proxy.start(watched.pid, [("tcp", "127.0.0.1", free_port(), "127.0.0.1", 9)])
            starts.append(time.perf_counter() - t)
            proxy.stop(proc)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
            floor.append(time.perf_counter() - t)
    finally:
        watched.kill()
        watched.wait()
    return {"start": med(starts), "floor": med(floor)}


# -- throughput ----------------------------------------------------------------------------


def listening(port: int, pid: int | str = "self") -> bool:
    """Is something listening on TCP ``port`` in the network namespace of process ``pid``?"""
    needle = re.compile(rf"^\s*\d+: [0-9A-F]+:{port:04X} [0-9A-F]+:0000 0A ", re.M)
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                if needle.search(f.read()):
                    return True
        except FileNotFoundError:
            pass
    return False


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Transfers:
    """Servers and clients for each path and tool; one transfer at a time."""

    def __init__(self, engine, tmp: Path, server, client, busybox: str, blast: str | None, size: int):
        self.engine, self.tmp = engine, tmp
        self.server, self.client = server, client
        self.busybox, self.blast, self.size = busybox, blast, size
        self.server_pid = server.attrs["State"]["Pid"]
        self.server_ip = server.attrs["NetworkSettings"]["IPAddress"]
        ports = server.attrs["NetworkSettings"]["Ports"]
        self.published = {int(key.split("/")[0]): int(b[0]["HostPort"]) for key, b in ports.items() if b}
        self.proxy_pid = (server.attrs.get("Dockyard") or {}).get("Proxy", {}).get("Pid")
        from engine.network import link
        endpoint = server.attrs["NetworkSettings"]["Networks"]["bridge"]["EndpointID"]
        # The host end of the server's veth: what it transmits goes into the server.
        self.server_veth = Path("/sys/class/net") / link.host_ifname(endpoint) / "statistics"
        self.fifo = tmp / "fifo"
        os.mkfifo(self.fifo)
        server.exec_run(["mkfifo", "/tmp/fifo"])
        self.host_servers: list[subprocess.Popen] = []
        self.baseline = {"container": med(self._exec_launch() for _ in range(15)),
                         "host": med(self._host_launch() for _ in range(15))}

    def _exec_launch(self) -> float:
        t = time.perf_counter()
        self.client.exec_run(["true"])
        return time.perf_counter() - t

    def _host_launch(self) -> float:
        t = time.perf_counter()
        subprocess.run([self.busybox, "sh", "-c", "true"], check=True)
        return time.perf_counter() - t

    # The four paths: where the server listens, where the client runs, the address it dials.
    PATHS = ("loopback", "bridge c2c", "host to container IP", "host to published port (proxy)")

    def run(self, path: str, tool: str, count: bool = False) -> dict:
        """One transfer; returns {"seconds", "proxy_cpu", "packet_bytes"[, "bytes"]}."""
        port = NC_PORT if tool == "nc" else BLAST_PORT   # blast and blast-1k: one server
        if path == "loopback":
            port = free_port()
            self._start_host_server(tool, port, count)
            where, addr, dial = "host", "127.0.0.1", port
        else:
            self._start_container_server(tool, port, count)
            if path == "bridge c2c":
                where, addr, dial = "container", self.server_ip, port
            elif path == "host to container IP":
                where, addr, dial = "host", self.server_ip, port
            else:
                where, addr, dial = "host", "127.0.0.1", self.published[port]
        proxy_before = cpu_seconds(self.proxy_pid) if path.endswith("(proxy)") and self.proxy_pid else None
        packets_before = self._veth_tx() if path != "loopback" else None
        seconds = self._client(where, tool, addr, dial) - self.baseline[where]
        result = {"seconds": seconds, "proxy_cpu": None, "packet_bytes": None}
        if packets_before is not None:
            (p0, b0), (p1, b1) = packets_before, self._veth_tx()
            result["packet_bytes"] = (b1 - b0) / max(1, p1 - p0)
        if proxy_before is not None:
            result["proxy_cpu"] = cpu_seconds(self.proxy_pid) - proxy_before
        if count:
            result["bytes"] = self._received(path)
        for proc in self.host_servers:
            proc.wait(timeout=30)
        self.host_servers.clear()
        return result

    def _veth_tx(self) -> tuple[int, int]:
        """(packets, bytes) the host end of the server's veth has sent into the server;
        a GSO batch counts as one packet."""
        return (int((self.server_veth / "tx_packets").read_text()),
                int((self.server_veth / "tx_bytes").read_text()))

    def _start_host_server(self, tool: str, port: int, count: bool) -> None:
        out = open(self.tmp / "got", "w") if count or tool != "nc" else subprocess.DEVNULL
        if tool == "nc":
            argv = [self.busybox, "sh", "-c",
                    f"{self.busybox} nc -l -p {port} 127.0.0.1 <>{self.fifo}" + (" | wc -c" if count else "")]
        else:
            argv = [self.blast, "-l", str(port), "127.0.0.1"]
        self.host_servers.append(subprocess.Popen(argv, stdout=out))
        if out is not subprocess.DEVNULL:
            out.close()
        wait_for(lambda: listening(port), f"a host server on 127.0.0.1:{port}")

    def _start_container_server(self, tool: str, port: int, count: bool) -> None:
        if tool == "nc":
            command = f"nc -l -p {port} <>/tmp/fifo " + ("| wc -c >/tmp/got" if count else ">/dev/null")
        else:
            command = f"/bench/blast -l {port} >/tmp/got"
        wait_for(lambda: not listening(port, self.server_pid), "the previous server to go")
        self.server.exec_run(["sh", "-c", command], detach=True)
        wait_for(lambda: listening(port, self.server_pid), f"the server in the container on port {port}")

    def _client(self, where: str, tool: str, addr: str, port: int) -> float:
        blocks = self.size // 65536
        if where == "container":
            if tool == "nc":
                argv = ["sh", "-c", f"dd if=/dev/zero bs=65536 count={blocks} 2>/dev/null | "
                                    f"timeout 300 nc {addr} {port}"]
            else:
                argv = ["/bench/blast", addr, str(port), str(self.size), str(CHUNKS[tool])]
            t = time.perf_counter()
            result = self.client.exec_run(argv)
            seconds = time.perf_counter() - t
            if result.exit_code != 0:
                raise RuntimeError(f"client in the container failed: {result}")
            return seconds
        bb = self.busybox
        if tool == "nc":
            argv = [bb, "sh", "-c", f"{bb} dd if=/dev/zero bs=65536 count={blocks} 2>/dev/null | "
                                    f"{bb} timeout 300 {bb} nc {addr} {port}"]
        else:
            argv = [self.blast, addr, str(port), str(self.size), str(CHUNKS[tool])]
        t = time.perf_counter()
        subprocess.run(argv, check=True, timeout=330)
        return time.perf_counter() - t

    def _received(self, path: str) -> int:
        def read() -> str:
            if path == "loopback":
                return (self.tmp / "got").read_text().strip()
            return self.server.exec_run(["cat", "/tmp/got"]).output.decode().strip()
        for proc in self.host_servers:
            proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        text = read()
        while not text and time.monotonic() < deadline:
            time.sleep(0.01)
            text = read()
        return int(text)

    def close(self) -> None:
        for proc in self.host_servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_blast(tools: Path) -> str | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    source = tools / "blast.c"
    source.write_text(BLAST_C)
    r = subprocess.run([cc, "-O2", "-static", "-o", str(tools / "blast"), str(source)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"blast not built (no static C library?): {r.stderr.strip()}", file=sys.stderr)
        return None
    return str(tools / "blast")


def measure_throughput(transfers: Transfers, tools: list[str], rounds: int) -> dict:
    # One counted transfer per path and tool first (not timed): every byte arrives.
    for tool in tools:
        for path in Transfers.PATHS:
            got = transfers.run(path, tool, count=True)["bytes"]
            if got != transfers.size:
                raise RuntimeError(f"{tool} {path}: received {got} bytes of {transfers.size}")
    samples: dict = defaultdict(list)
    proxy_cpu: dict = defaultdict(list)
    packet_bytes: dict = defaultdict(list)
    for _ in range(rounds):
        for tool in tools:
            for path in Transfers.PATHS:
                r = transfers.run(path, tool)
                samples[(tool, path)].append(r["seconds"])
                if r["proxy_cpu"] is not None:
                    proxy_cpu[tool].append(r["proxy_cpu"])
                if r["packet_bytes"] is not None:
                    packet_bytes[(tool, path)].append(r["packet_bytes"])
    return {"seconds": samples, "proxy_cpu": proxy_cpu, "packet_bytes": packet_bytes}


# -- the report ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attach-runs", type=int, default=50, help="attach+detach cycles per case")
    parser.add_argument("--runs", type=int, default=25, help="CLI and API starts per variant")
    parser.add_argument("--mb", type=int, default=256, help="MiB per transfer")
    parser.add_argument("--rounds", type=int, default=5, help="timed transfers per path and tool")
    parser.add_argument("--peers", type=int, default=10, help="running peers in the crowded user-network case")
    parser.add_argument("--no-blast", action="store_true", help="nc only")
    parser.add_argument("--record", metavar="FILE", help="write the results as FILE's Networking section")
    args = parser.parse_args()

    from engine import Engine
    from engine.image import base

    load, host = os.getloadavg()[0], host_note()
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-net-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        config = scratch_config(root)
        engine = Engine(root)
        left: list[str] = []
        transfers = None
        try:
            engine.images.build_busybox()
            engine.containers.run("busybox", ["true"], remove=True, network="none")  # layers extracted
            engine.networks.create(NETWORK)
            tools = tmp / "tools"
            tools.mkdir()
            blast = None if args.no_blast else build_blast(tools)
            anchors = {}

            def start_anchors():
                # The transfer server (the bridge's "other container", ports published),
                # its client, and one container on the user network.
                anchors["server"] = engine.containers.run(
                    "busybox", ["sleep", "100000"], detach=True, name="server",
                    ports=[f"127.0.0.1::{NC_PORT}", f"127.0.0.1::{BLAST_PORT}"],
                    volumes=[f"{tools}:/bench:ro"])
                anchors["client"] = engine.containers.run(
                    "busybox", ["sleep", "100000"], detach=True, name="client", volumes=[f"{tools}:/bench:ro"])
                anchors["peer"] = engine.containers.run(
                    "busybox", ["sleep", "100000"], detach=True, name="peer", network=NETWORK)

            print("attach and detach...", file=sys.stderr)
            attach = measure_attach(engine, args, start_anchors)
            print("CLI and API starts...", file=sys.stderr)
            starts = measure_starts(engine, root, args)
            print("pyroute2 imports...", file=sys.stderr)
            imports = measure_imports(root)
            proxy_start = measure_proxy_start(args.runs)
            print("transfers...", file=sys.stderr)
            server = engine.containers.get("server")
            transfers = Transfers(engine, tmp, server, engine.containers.get("client"),
                                  base.BUSYBOX_BINARY, blast, args.mb * MIB)
            tool_list = ["nc"] + (["blast", "blast-1k"] if blast else [])
            throughput = measure_throughput(transfers, tool_list, args.rounds)
            baseline = transfers.baseline
        finally:
            if transfers is not None:
                transfers.close()
            left = cleanup(engine)
        if left:
            print(f"LEFT BEHIND: {left}", file=sys.stderr)
            return 1

    header = (f"{time.strftime('%Y-%m-%d')}, {os.uname().nodename} ({os.cpu_count()} CPUs, "
              f"kernel {os.uname().release}), load average {load:.2f} at the start; a scratch root "
              f"with its own bridge ({config['bridge']}, {config['bip']}){host}.")
    sections, summary = report(args, attach, starts, imports, proxy_start, throughput, baseline, tool_list)
    print(header)
    for title, body in sections:
        print(f"\n{title}\n\n{body}")
    print("\n" + "\n\n".join(summary))
    if args.record:
        record(Path(args.record), header, sections, summary)
    return 0


def report(args, attach, starts, imports, proxy_start, throughput, baseline, tools):
    """(sections: [(title, markdown)], summary: [paragraph])."""
    out = []
    cases = {key: (label, a, d) for key, label, a, d in attach["cases"]}
    lines = ["| case | attach median ms | attach min ms | detach median ms |", "|---|---:|---:|---:|"]
    for label, a, d in cases.values():
        lines.append(f"| {label} | {ms(med(a)):.2f} | {ms(min(a)):.2f} | {ms(med(d)):.2f} |")
    out.append((f"Attach and detach in-process (`sandbox.attach`/`detach` on a created container), "
                f"{args.attach_runs} cycles each:", "\n".join(lines)))

    columns = [attach["phases"]["bridge"][0], attach["phases"]["user"][0],
               attach["phases"]["bridge"][1], attach["phases"]["user"][1]]
    labels = sorted({k for c in columns for k in c}, key=lambda k: -sum(c.get(k, 0) for c in columns))
    small = [k for k in labels if max(c.get(k, 0) for c in columns) < 0.05e-3]
    lines = ["| phase (its own time, median ms) | attach, bridge | attach, user net | detach, bridge "
             "| detach, user net |", "|---|---:|---:|---:|---:|"]
    for k in labels:
        if k not in small:
            lines.append(f"| {k} | " + " | ".join(f"{ms(c[k]):.2f}" if c.get(k) else "" for c in columns) + " |")
    if small:
        lines.append(f"| {len(small)} more under 0.05 ms each | "
                     + " | ".join(f"{ms(sum(c.get(k, 0) for k in small)):.2f}" for c in columns) + " |")
    lines.append("| sum | " + " | ".join(f"{ms(sum(c.values())):.2f}" for c in columns) + " |")
    out.append(("Where an attach and a detach spend their time: the engine's functions wrapped, each "
                "phase's own time (what it calls that is wrapped too is not in it); the user network "
                "has 1 running peer:", "\n".join(lines)))
    out.append(("cProfile of 10 attach+detach cycles on the user network, per cycle, by own time:",
                "```\n" + "\n".join(attach["profile"]) + "\n```"))

    variants = starts["variants"]
    lines = ["| median ms | " + " | ".join(f"`{v}`" for v in variants) + " |",
             "|---|" + "---:|" * len(variants)]
    for key, label in (("cli", "CLI `dockyard run --rm --network X busybox true`"),
                       ("api_detach", "API `containers.run(sleep, detach=True)`"),
                       ("api_run", "API `containers.run(true, remove=True)`")):
        lines.append(f"| {label} | " + " | ".join(start_cell(starts, key, v) for v in variants) + " |")
    for key, label in (("cli", "CLI, minus `none`"), ("api_detach", "API detached, minus `none`")):
        lines.append(f"| {label} | " + " | ".join(start_cell(starts, key, v, "none") for v in variants) + " |")
    sp = starts["start_phases"]
    lines += ["", "| where a detached API start's time goes, median ms | "
              + " | ".join(f"`{v}`" for v in variants) + " |", "|---|" + "---:|" * len(variants)]
    for label in sorted(dict.fromkeys(label for v in variants for label in sp.get(v, {})), key=START_ORDER):
        lines.append(f"| {label} | " + " | ".join(
            f"{ms(sp[v].get(label, 0.0)):.1f}" if v in sp else "" for v in variants) + " |")
    lines.append("| sum of the medians | " + " | ".join(
        f"{ms(sum(sp[v].values())):.1f}" if v in sp else "" for v in variants) + " |")
    failed = [f"{key} `{name}`: {error}" for (key, name), error in starts["failed"].items()]
    failed += [f"{key} `{name}` failed {len(errors)} of {args.runs} times ({errors[0]})"
               for (key, name), errors in starts["errors"].items()]
    if failed:
        lines += ["", f"Failures: {'; '.join(failed)}."]
    out.append((f"Starts by network mode, {args.runs} runs each, interleaved (`{NETWORK}`: a user "
                f"network; `bridge -p`: `-p 127.0.0.1::5000`, so the port proxy starts too):",
                "\n".join(lines)))

    lines = ["| median ms | pyroute2 | all imports |", "|---|---:|---:|"]
    for label, (value, everything) in imports.items():
        lines.append(f"| `-X importtime`: {label} | {value:.1f} | {everything:.1f} |")
    lines.append(f"| port proxy: `proxy.start()` until its ports are bound | {ms(proxy_start['start']):.1f} | |")
    lines.append(f"| the proxy's interpreter doing nothing: `python -I -S -c pass` | "
                 f"{ms(proxy_start['floor']):.1f} | |")
    out.append(("Pieces of a start: pyroute2's import time (median of 5) and the port proxy's start "
                f"(median of {args.runs}):", "\n".join(lines)))

    seconds, proxy_cpu = throughput["seconds"], throughput["proxy_cpu"]
    packet_bytes = throughput["packet_bytes"]

    def rate(tool, path):
        return args.mb / med(seconds[(tool, path)])

    def ratio(tool, path):
        return rate(tool, path) / rate(tool, "loopback")

    proxy_path = Transfers.PATHS[3]
    lines = ["| path |" + "".join(f" {TOOL_NAMES[t]}, MiB/s | vs loopback |" for t in tools),
             "|---|" + "---:|---:|" * len(tools)]
    for path in Transfers.PATHS:
        lines.append(f"| {path} |" + "".join(f" {rate(t, path):.0f} | {ratio(t, path):.2f}x |" for t in tools))
    lines.append("| the proxy's CPU time, share of the transfer's wall time |"
                 + "".join(f" {med(proxy_cpu[t]) / med(seconds[(t, proxy_path)]):.0%} | |" for t in tools))
    lines += ["", "| mean bytes per packet the server's veth carried in (a GSO batch is one) |"
              + "".join(f" {TOOL_NAMES[t]} |" for t in tools), "|---|" + "---:|" * len(tools)]
    for path in Transfers.PATHS[1:]:
        lines.append(f"| {path} |" + "".join(f" {med(packet_bytes[(t, path)]):.0f} |" for t in tools))
    out.append((f"TCP bulk transfer of {args.mb} MiB, median of {args.rounds}, rounds interleaved "
                f"(the client's launch, measured alone, is subtracted: {ms(baseline['container']):.1f} ms "
                f"for an exec, {ms(baseline['host']):.1f} ms on the host):", "\n".join(lines)))

    # -- what dominates, in words, from this run's numbers
    summary = []
    bridge_a, bridge_d = med(cases["bridge"][1]), med(cases["bridge"][2])
    phases = attach["phases"]["bridge"][0]
    netlink = sum(v for k, v in phases.items() if k.startswith("netlink:"))
    netns_create = sum(v for k, v in phases.items() if k.startswith("netns create"))
    files = sum(v for k, v in phases.items() if k.startswith("hosts,"))
    text = (f"Attach: {ms(bridge_a):.1f} ms on the default bridge, detach {ms(bridge_d):.1f} ms. "
            f"The netlink steps (pyroute2) are {ms(netlink):.1f} ms of the attach, the namespace "
            f"{ms(netns_create):.1f} ms (`netns.create` forks the engine to unshare), the files "
            f"{ms(files):.1f} ms; the rest is the IPAM and the records. The first container on a "
            f"bridge pays {ms(med(cases['cold'][1]) - bridge_a):+.1f} ms for making the device.")
    if "peers" in cases:
        n = args.peers - 1
        text += (f" On a user network each running peer adds "
                 f"{ms((med(cases['peers'][1]) - med(cases['user'][1])) / n):.1f} ms to an attach and "
                 f"{ms((med(cases['peers'][2]) - med(cases['user'][2])) / n):.1f} ms to a detach "
                 f"(its /etc/hosts is rewritten).")
    summary.append(text)
    cli, api = starts["cli"], starts["api_detach"]
    if cli.get("bridge") and cli.get("none") and api.get("bridge") and api.get("none"):
        imp_none = imports["dockyard run --network none"]
        imp_bridge = imports["dockyard run --network bridge"]
        text = (f"Start-up: the CLI on the bridge takes {ms(med(cli['bridge']) - med(cli['none'])):+.0f} ms "
                f"over `--network none`. Its imports grow by {imp_bridge[1] - imp_none[1]:.0f} ms "
                f"(pyroute2 {imp_bridge[0]:.0f} ms, loaded only when a kernel step runs, so `none` and "
                f"`host` do not pay it); the start itself, in-process, by "
                f"{ms(med(api['bridge']) - med(api['none'])):+.0f} ms.")
        if "bridge -p" in sp and "bridge" in sp:
            pub = sp["bridge -p"].get("publish_ports (the port proxy)", 0.0)
            text += (f" `-p` adds the port proxy: {ms(pub):.0f} ms in `publish_ports`, of which a "
                     f"`python -I -S` doing nothing is {ms(proxy_start['floor']):.0f} ms.")
        summary.append(text)
    text = (f"Throughput: busybox nc reads and writes 1 KiB at a time, and the bridge paths follow "
            f"the size of the packets: {rate('nc', 'loopback'):.0f} MiB/s over loopback, "
            f"{ratio('nc', 'bridge c2c'):.2f}x of it container to container (packets of "
            f"{med(packet_bytes[('nc', 'bridge c2c')]):.0f} bytes into the server's veth), "
            f"{ratio('nc', 'host to container IP'):.2f}x host to container "
            f"({med(packet_bytes[('nc', 'host to container IP')]):.0f} bytes). Through the published "
            f"port nc gets {ratio('nc', proxy_path):.2f}x: the client talks to the proxy over loopback, "
            f"and the proxy re-sends in writes of up to 256 KiB "
            f"({med(packet_bytes[('nc', proxy_path)]):.0f}-byte packets).")
    if "blast" in tools:
        text += (f" With 256 KiB writes (blast) the bridge itself carries {ratio('blast', 'bridge c2c'):.2f}x "
                 f"(container to container) and {ratio('blast', 'host to container IP'):.2f}x (host to "
                 f"container) of loopback's {rate('blast', 'loopback'):.0f} MiB/s, and the proxy path "
                 f"{ratio('blast', proxy_path):.2f}x, the proxy on the CPU "
                 f"{med(proxy_cpu['blast']) / med(seconds[('blast', proxy_path)]):.0%} of the time.")
    text += f" Client, proxy and server share {os.cpu_count()} CPUs with the kernel's packet work."
    summary.append(text)
    return out, summary


def START_ORDER(label: str) -> int:
    """The phases of a start in the order they happen."""
    for i, word in enumerate(("create", "attach_network", "the plan", "launcher.start", "waiting",
                              "publish_ports")):
        if label.startswith(word):
            return i
    return 99


def start_cell(starts, key: str, variant: str, minus: str | None = None) -> str:
    if (key, variant) in starts["failed"]:
        return "fails"
    if minus is not None:
        if (key, minus) in starts["failed"]:
            return ""
        return f"{ms(med(starts[key][variant]) - med(starts[key][minus])):+.1f}"
    return f"{ms(med(starts[key][variant])):.1f}"


def host_note() -> str:
    """What on the host changes the numbers: its interfaces and routes (an attach
    looks through them), and br_netfilter (a per-packet cost on the bridge)."""
    try:
        with open("/proc/net/route") as f:
            routes = len(f.read().splitlines()) - 1
    except OSError:
        routes = 0
    note = f"; {len(os.listdir('/sys/class/net'))} interfaces and {routes} IPv4 routes on the host"
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            if f.read().strip() == "1":
                note += ("; br_netfilter is loaded (net.bridge.bridge-nf-call-iptables=1): bridged "
                         "packets pass the iptables hooks")
    except OSError:
        pass  # br_netfilter not loaded
    return note


def record(path: Path, header: str, sections, summary) -> None:
    """Write the Networking section of ``path``, replacing the one there (or appending it)."""
    body = ["## Networking (benchmarks/network.py)", "", header, "",
            "Reproduce with `make bench`, or alone (as root): `.venv/bin/python benchmarks/network.py "
            "--record docs/benchmarks.md`. Traffic goes only over loopback and to the benchmark's own "
            "containers; the scratch root, its containers, networks and bridge devices are removed "
            "at the end.", ""]
    for title, table in sections:
        body += [title, "", table, ""]
    body += ["What dominates:", ""]
    for paragraph in summary:
        body += [paragraph, ""]
    section = "\n".join(body)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    match = re.search(r"^## Networking\b.*?(?=^## |\Z)", text, re.M | re.S)
    if match:
        text = text[:match.start()] + section + ("\n" if text[match.end():] else "") + text[match.end():]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())

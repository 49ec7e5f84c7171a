"""Process commands: ``exec``, ``top``, ``stats``, ``update``.

They act on a *running* container from the outside: ``exec`` starts one
more process in its namespaces and cgroup (runtime/exec.py), ``top`` and
``stats`` read what the kernel keeps about its processes, ``update``
changes its limits (runtime/stats.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .container import _each, add_resource_options
from .rows import Row, truncate_id

STATS_FORMAT = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t"
                "{{.BlockIO}}\t{{.PIDs}}")
STATS_HEADERS = {
    "Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}
# docker's `top` table: Go's tabwriter with a minimum cell width of 20, padding 3.
TOP_MINWIDTH = 20
# Clear the screen and go home (ECMA-48 ED 2 and CUP): the docker CLI redraws `stats` so.
CLEAR = "\033[2J\033[H"


def register(commands) -> None:
    p = commands.add_parser("exec", help="Execute a command in a running container",
                            description="Execute a command in a running container. "
                                        "Usage: dockyard exec [OPTIONS] CONTAINER COMMAND [ARG...]")
    p.add_argument("-d", "--detach", action="store_true", help="detached mode: run the command in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable (KEY alone copies it from this shell)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read environment variables from a file")
    p.add_argument("-u", "--user", default="", metavar="USER[:GROUP]",
                   help="user name or UID, optionally with a group (default: the container's user)")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    p.add_argument("--privileged", action="store_true", help="give extended privileges to the command")
    p.add_argument("--explain", action="store_true",
                   help="print the plan of kernel steps (as shell commands and syscalls)")
    p.add_argument("container", metavar="CONTAINER", nargs="?")
    p.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)

    p = commands.add_parser("top", help="Display the running processes of a container",
                            description="Display the running processes of a container. "
                                        "Usage: dockyard top CONTAINER [ps OPTIONS]")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", metavar="ps OPTIONS", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_top)

    p = commands.add_parser("stats", help="Display a live stream of container(s) resource usage statistics")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("--format", metavar="TEMPLATE", default="",
                   help="format output with a Go template ('table ...', 'json', '{{.Name}} {{.CPUPerc}}')")
    p.add_argument("--no-stream", action="store_true", help="disable streaming stats and only pull the first result")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("containers", metavar="CONTAINER", nargs="*")
    p.set_defaults(func=cmd_stats)

    p = commands.add_parser("update", help="Update configuration of one or more containers")
    add_resource_options(p)
    p.add_argument("--restart", metavar="POLICY", help="restart policy to apply when a container exits")
    p.add_argument("containers", metavar="CONTAINER", nargs="+")
    p.set_defaults(func=cmd_update)


# -- exec ----------------------------------------------------------------------------


def cmd_exec(engine, args) -> int:
    from ..errors import UsageError
    from ..runtime import exec as ex
    from ..runtime.attach import terminal_size
    from ..runtime.options import parse_env_file
    from . import UsageFailure

    if not args.container or not args.command:
        raise UsageFailure('"exec" requires at least 2 arguments.', "dockyard exec")
    if args.tty and args.interactive and not os.isatty(0):
        raise UsageError("the input device is not a TTY")
    env = []
    for path in args.env_file:
        env.extend(parse_env_file(path))
    env.extend(args.env)
    container = engine.containers.get(args.container)
    options = dict(environment=env, user=args.user, workdir=args.workdir, privileged=args.privileged)
    if args.explain:
        sys.stderr.write(ex.exec_plan(container, args.command, env=env, user=args.user,
                                      workdir=args.workdir, tty=args.tty, privileged=args.privileged,
                                      detach=args.detach).render() + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    if args.detach:
        # Nothing to show and nothing to wait for: the command goes on alone.
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            ex.start(container, args.command, stdio=(null, null, null), detach=True, **options)
        finally:
            os.close(null)
        return 0
    if args.tty:
        size = terminal_size(0) or terminal_size(1)
        running = ex.start(container, args.command, tty=True, tty_size=size, **options)
        code = ex.relay_terminal(running, stdin_fd=0 if args.interactive else None)
        return 0 if code is None else code
    # Without a terminal the command simply gets our stdin (with -i), stdout and stderr.
    null = -1 if args.interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        running = ex.start(container, args.command, stdio=(null, -1, -1), **options)
    finally:
        if null >= 0:
            os.close(null)
    with ex.ignoring_terminal_signals():
        code = running.wait()
    return 0 if code is None else code


# -- top -----------------------------------------------------------------------------


def cmd_top(engine, args) -> int:
    from ..runtime.stats import top
    from .template import tabwrite

    container = engine.containers.get(args.container)
    listing = top(container, " ".join(args.ps_args) or None)
    lines = ["\t".join(listing["Titles"])] + ["\t".join(p) for p in listing["Processes"]]
    print(tabwrite("\n".join(lines), minwidth=TOP_MINWIDTH))
    return 0


# -- stats ----------------------------------------------------------------------------


class StatsRow(Row):
    """One line of ``stats`` (docker/cli cli/command/container/formatter_stats.go)."""

    FIELDS = ("BlockIO", "CPUPerc", "Container", "ID", "MemPerc", "MemUsage", "Name", "NetIO", "PIDs")

    def __init__(self, container, frame: dict, *, label: str = "", no_trunc: bool = False):
        self._container = container
        self._frame = frame
        self._label = label or container.id
        self._no_trunc = no_trunc

    @property
    def Container(self) -> str:
        """The container as it was named on the command line (its ID when none was)."""
        return self._label

    @property
    def ID(self) -> str:
        return self._container.id if self._no_trunc else truncate_id(self._container.id)

    @property
    def Name(self) -> str:
        name = self._frame.get("name") or ""
        return name[1:] if len(name) > 1 else "--"

    @property
    def CPUPerc(self) -> str:
        from ..runtime.stats import cpu_percent
        return f"{cpu_percent(self._frame):.2f}%"

    @property
    def MemUsage(self) -> str:
        from ..runtime.stats import memory_limit, memory_usage
        from .output import binary_size
        return f"{binary_size(memory_usage(self._frame))} / {binary_size(memory_limit(self._frame))}"

    @property
    def MemPerc(self) -> str:
        from ..runtime.stats import memory_percent
        return f"{memory_percent(self._frame):.2f}%"

    @property
    def NetIO(self) -> str:
        from ..runtime.stats import network_io
        from .output import human_size
        rx, tx = network_io(self._frame)
        return f"{human_size(rx)} / {human_size(tx)}"

    @property
    def BlockIO(self) -> str:
        from ..runtime.stats import block_io
        from .output import human_size
        read, write = block_io(self._frame)
        return f"{human_size(read)} / {human_size(write)}"

    @property
    def PIDs(self) -> str:
        from ..runtime.stats import pids
        return str(pids(self._frame))


def cmd_stats(engine, args) -> int:
    from ..runtime.stats import Sampler
    from .template import render

    named = [(ref, engine.containers.get(ref)) for ref in args.containers]  # unknown names fail now
    samplers: dict[str, Sampler] = {}

    def targets():
        if named:
            return named
        return [("", c) for c in engine.containers.list(all=args.all)]

    def draw() -> str:
        rows = []
        for label, container in targets():
            sampler = samplers.setdefault(container.id, Sampler(container))
            rows.append(StatsRow(container, sampler.next(), label=label, no_trunc=args.no_trunc))
        return render(args.format, rows, STATS_HEADERS, default=STATS_FORMAT)

    draw()              # a first sample: CPU % is the difference between two
    time.sleep(1.0)
    if args.no_stream:
        text = draw()
        if text:
            print(text)
        return 0
    while True:
        text = draw()
        sys.stdout.write(CLEAR + (text + "\n" if text else ""))
        sys.stdout.flush()
        time.sleep(1.0)


# -- update ------------------------------------------------------------------------------


def cmd_update(engine, args) -> int:

    options = {key: value for key, value in dict(
        mem_limit=args.memory, memswap_limit=args.memory_swap, cpus=args.cpus,
        cpu_shares=args.cpu_shares, cpu_period=args.cpu_period, cpu_quota=args.cpu_quota,
        cpuset_cpus=args.cpuset_cpus, pids_limit=args.pids_limit, restart_policy=args.restart,
    ).items() if value is not None}
    return _each(engine, args.containers, lambda container: container.update(**options))

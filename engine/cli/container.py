"""Container commands: ``run``, ``ps``, ``rm``, ``inspect``."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .output import print_json

# Signals `dockyard run` passes on to the container (docker's --sig-proxy).
PROXIED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2)


def add_create_options(p) -> None:
    """The options `run` and `create` share (docker's container options)."""
    p.add_argument("--name", help="assign a name to the container")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable (KEY alone copies it from this shell)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read environment variables from a file (KEY=VALUE lines)")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE",
                   help="set a label on the container")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    p.add_argument("-h", "--hostname", help="container host name (default: the short container ID)")
    p.add_argument("--entrypoint", help="overwrite the default ENTRYPOINT of the image")
    p.add_argument("-u", "--user", metavar="USER[:GROUP]",
                   help="user name or UID, optionally with a group name or GID")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("--rm", action="store_true", help="automatically remove the container when it exits")
    p.add_argument("--restart", default="no", metavar="POLICY",
                   help="restart policy: no, on-failure[:N], always, unless-stopped")
    p.add_argument("--init", action="store_true",
                   help="run an init inside the container that forwards signals and reaps processes")
    p.add_argument("--stop-signal", metavar="SIGNAL", help="signal to stop the container (default SIGTERM)")
    p.add_argument("--stop-timeout", type=int, metavar="SECONDS",
                   help="seconds to wait before killing the container (default 10)")
    p.add_argument("--read-only", action="store_true", help="mount the container's root filesystem read-only")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTIONS]", help="mount a tmpfs")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:CONTAINER[:ro]",
                   help="bind-mount a host directory or file")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP", help="add a Linux capability")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP", help="drop a Linux capability")
    p.add_argument("--privileged", action="store_true", help="give extended privileges to this container")
    p.add_argument("-m", "--memory", metavar="BYTES", help="memory limit (e.g. 64m)")
    p.add_argument("--memory-swap", metavar="BYTES", help="memory plus swap limit; -1 for unlimited swap")
    p.add_argument("--cpus", metavar="NUMBER", help="number of CPUs (e.g. 0.5)")
    p.add_argument("-c", "--cpu-shares", type=int, metavar="SHARES", help="CPU shares (relative weight)")
    p.add_argument("--cpu-period", type=int, metavar="MICROSECONDS", help="CPU CFS period")
    p.add_argument("--cpu-quota", type=int, metavar="MICROSECONDS", help="CPU CFS quota")
    p.add_argument("--cpuset-cpus", metavar="CPUS", help="CPUs in which to allow execution (0-1, 0,1)")
    p.add_argument("--pids-limit", type=int, metavar="N", help="tune the container's pids limit")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]", help="ulimit options")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="json-file log options: max-size=10m, max-file=3")
    p.add_argument("--explain", action="store_true",
                   help="print the plan of kernel steps (as shell commands and syscalls)")
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("image", metavar="IMAGE", nargs="?")
    p.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER)


def create_kwargs(args) -> dict:
    """Command-line options -> engine.containers.create() keyword arguments."""
    from ..runtime.options import parse_env_file

    env = []
    for path in args.env_file:
        env.extend(parse_env_file(path))
    env.extend(args.env)
    log_config = {"Type": "json-file", "Config": {}}
    for opt in args.log_opt:
        key, eq, value = opt.partition("=")
        if not eq or key not in ("max-size", "max-file"):
            from ..errors import UsageError
            raise UsageError(f"unknown log opt '{key}' for json-file log driver")
        log_config["Config"][key] = value
    return dict(
        name=args.name, environment=env, working_dir=args.workdir, hostname=args.hostname,
        entrypoint=args.entrypoint, user=args.user, labels=args.label, tty=args.tty,
        stdin_open=args.interactive, auto_remove=args.rm, restart_policy=args.restart,
        init=args.init, stop_signal=args.stop_signal, stop_timeout=args.stop_timeout,
        read_only=args.read_only, tmpfs=args.tmpfs, volumes=args.volume, cap_add=args.cap_add,
        cap_drop=args.cap_drop, privileged=args.privileged, mem_limit=args.memory,
        memswap_limit=args.memory_swap, cpus=args.cpus, cpu_shares=args.cpu_shares,
        cpu_period=args.cpu_period, cpu_quota=args.cpu_quota, cpuset_cpus=args.cpuset_cpus,
        pids_limit=args.pids_limit, ulimits=args.ulimit, log_config=log_config,
    )


def register(commands) -> None:
    # add_help=False: -h means --hostname here, as in docker; --help still works.
    p = commands.add_parser("run", add_help=False, help="Create and run a new container from an image",
                            description="Create and run a new container from an image. "
                                        "Usage: dockyard run [OPTIONS] IMAGE [COMMAND] [ARG...]")
    add_create_options(p)
    p.add_argument("-d", "--detach", action="store_true",
                   help="run the container in the background and print its ID")
    p.add_argument("-a", "--attach", action="append", default=[], choices=["stdin", "stdout", "stderr"],
                   help="attach to STDIN, STDOUT or STDERR")
    p.add_argument("--detach-keys", metavar="KEYS", help="key sequence for detaching (default ctrl-p,ctrl-q)")
    p.add_argument("--sig-proxy", type=lambda t: t.lower() not in ("false", "0"), default=True,
                   metavar="BOOL", help="proxy received signals to the process (default true)")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser("create", add_help=False, help="Create a new container",
                            description="Create a new container. "
                                        "Usage: dockyard create [OPTIONS] IMAGE [COMMAND] [ARG...]")
    add_create_options(p)
    p.set_defaults(func=cmd_create)

    p = commands.add_parser("ps", help="List containers")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="FILTER",
                   help="filter output: id=, name=, label=, exited=, status=, ancestor=, before=, since=")
    p.add_argument("--format", metavar="TEMPLATE", default="",
                   help="format output with a Go template ('table ...', 'json', '{{.ID}}')")
    p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.set_defaults(func=cmd_ps)

    p = commands.add_parser("rm", help="Remove one or more containers")
    p.add_argument("-f", "--force", action="store_true", help="force the removal of a running container (uses SIGKILL)")
    p.add_argument("containers", metavar="CONTAINER", nargs="+")
    p.set_defaults(func=cmd_rm)

    p = commands.add_parser("commit", help="Create a new image from a container's changes")
    p.add_argument("-a", "--author", default="", help='author (e.g. "Jane Doe <jane@example.com>")')
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, ...)")
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("-p", "--pause", action="store_true", default=True,
                   help="pause the container during commit (accepted; pausing arrives with cgroups)")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("repository", metavar="REPOSITORY[:TAG]", nargs="?")
    p.set_defaults(func=cmd_commit)

    p = commands.add_parser("diff", help="Inspect changes to files or directories on a container's filesystem")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_diff)

    p = commands.add_parser("inspect", help="Return low-level information on containers and images")
    p.add_argument("--type", choices=["container", "image"], help="only look for this type of object")
    p.add_argument("-f", "--format", metavar="TEMPLATE",
                   help="format the output with a Go template, e.g. '{{.State.Pid}}'")
    p.add_argument("names", metavar="NAME|ID", nargs="+")
    p.set_defaults(func=cmd_inspect)


def on_pull(ref: str) -> None:
    sys.stderr.write(f"Unable to find image '{ref}' locally\n")
    if ref == "busybox:latest":
        sys.stderr.write("making busybox:latest from /bin/busybox (there is no registry here)\n")


def _create(engine, args, command_name: str):
    if args.image is None:
        from . import UsageFailure
        raise UsageFailure(f'"{command_name}" requires at least 1 argument.', f"dockyard {command_name}")
    return engine.containers.create(args.image, args.command or None, on_pull=on_pull,
                                    **create_kwargs(args))


def cmd_create(engine, args) -> int:
    container = _create(engine, args, "create")
    if args.explain:
        sys.stderr.write(container.plan().render() + "\n")
    print(container.id)
    return 0


def cmd_run(engine, args) -> int:
    if args.detach or args.interactive or args.tty or args.attach:
        from ..errors import UsageError
        raise UsageError("-d, -i, -t and -a need the container monitor, which is not built yet")
    container = _create(engine, args, "run")
    try:
        plan = container.plan()
    except BaseException:
        container.remove(force=True)
        raise
    if args.explain:
        sys.stderr.write(plan.render() + "\n")
        sys.stderr.flush()

    # Without -i the container's stdin is /dev/null, as docker does.
    stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    previous = {}

    def forward(process):
        for sig in PROXIED_SIGNALS:
            previous[sig] = signal.signal(sig, lambda s, _frame: process.kill(s))

    try:
        sys.stdout.flush()
        sys.stderr.flush()
        return container.run((stdin, 1, 2), plan=plan, on_start=forward)
    finally:
        os.close(stdin)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_ps(engine, args) -> int:
    import functools

    from ..runtime.filters import match_container, parse_filters, shows_all
    from .rows import CONTAINER_FORMAT, CONTAINER_HEADERS, ContainerRow
    from .template import render

    filters = parse_filters(args.filter)
    containers = engine.containers.list(all=args.all or shows_all(filters))
    resolve_container = functools.cache(engine.containers.get)
    resolve_image = functools.cache(engine.images.get)
    containers = [c for c in containers
                  if match_container(c, filters, resolve_container=resolve_container,
                                     resolve_image=resolve_image)]
    if args.quiet:
        for c in containers:
            print(c.id if args.no_trunc else c.short_id)
        return 0
    rows = [ContainerRow(c, no_trunc=args.no_trunc) for c in containers]
    text = render(args.format, rows, CONTAINER_HEADERS, default=CONTAINER_FORMAT)
    if text:
        print(text)
    return 0


def cmd_rm(engine, args) -> int:
    from ..errors import EngineError

    status = 0
    for ref in args.containers:
        try:
            engine.containers.get(ref).remove(force=args.force)
        except EngineError as e:
            sys.stderr.write(f"dockyard: {e}\n")
            status = e.exit_code
            continue
        print(ref)
    return status


def cmd_inspect(engine, args) -> int:
    from ..errors import EngineError, NotFound

    found, status = [], 0
    for name in args.names:
        obj = None
        if args.type in (None, "container"):
            try:
                obj = engine.containers.get(name).attrs
            except NotFound:
                pass
        if obj is None and args.type in (None, "image"):
            try:
                obj = engine.images.get(name).attrs
            except NotFound:
                pass
            except EngineError as e:
                sys.stderr.write(f"dockyard: {e}\n")
                status = e.exit_code
                continue
        if obj is None:
            sys.stderr.write(f"dockyard: Error: No such {args.type or 'object'}: {name}\n")
            status = 125
            continue
        found.append(obj)
    if args.format is not None:
        from .template import render_one
        for obj in found:
            print(render_one(args.format, obj))
        return status
    print_json(found)
    return status


def cmd_commit(engine, args) -> int:
    container = engine.containers.get(args.container)
    image = container.commit(args.repository, message=args.message, author=args.author,
                             changes=args.change)
    print(image.id)
    return 0


def cmd_diff(engine, args) -> int:
    from ..runtime.commit import changes

    for kind, path in changes(engine, engine.containers.get(args.container)):
        print(f"{kind} {path}")
    return 0

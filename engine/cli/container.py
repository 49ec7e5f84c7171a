"""Container commands: ``run``, ``create``, ``start``, ``stop``, ``restart``, ``kill``,
``wait``, ``rename``, ``attach``, ``logs``, ``pause``, ``unpause``, ``events``, ``ps``,
``rm``, ``inspect``, ``commit``, ``diff``.

A started container runs under its own monitor (runtime/launcher.py), never
as a child of this process: ``run -d`` returns at once, and a foreground
``run`` is just an attached client of the monitor -- kill it and the
container runs on (``attach`` and ``logs`` still work).
"""

from __future__ import annotations

import argparse
import sys

from .output import print_json


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
    add_resource_options(p)
    add_network_options(p)
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]", help="ulimit options")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="json-file log options: max-size=10m, max-file=3")
    p.add_argument("--explain", action="store_true",
                   help="print the plan of kernel steps (as shell commands and syscalls)")
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("image", metavar="IMAGE", nargs="?")
    p.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER)


def add_network_options(p) -> None:
    """docker's networking options of ``run``/``create`` (engine/network/)."""
    p.add_argument("--network", "--net", dest="network", metavar="NETWORK",
                   help="connect to a network: bridge (default), host, none, container:<name|id>, "
                        "or a network's name")
    p.add_argument("--network-alias", action="append", default=[], metavar="ALIAS",
                   help="add a network-scoped alias (user-defined networks)")
    p.add_argument("--ip", metavar="IPV4", help="IPv4 address on a user-defined network (e.g. 172.30.100.104)")
    p.add_argument("--mac-address", metavar="MAC", help="container MAC address (e.g. 92:d0:c6:0a:29:33)")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="add a custom host-to-IP mapping to /etc/hosts")
    p.add_argument("--dns", action="append", default=[], metavar="IP", help="set custom DNS servers")
    p.add_argument("--dns-search", action="append", default=[], metavar="DOMAIN",
                   help="set custom DNS search domains")
    p.add_argument("--dns-option", "--dns-opt", dest="dns_option", action="append", default=[],
                   metavar="OPTION", help="set DNS options (resolv.conf options line)")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CONTAINER[/PROTO]",
                   help="publish a container's port(s) to the host")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish all exposed ports to random ports")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]",
                   help="expose a port or a range of ports")
    p.add_argument("--link", action="append", default=[], metavar="NAME[:ALIAS]",
                   help="add a link to another container (default bridge only)")


def add_resource_options(p) -> None:
    """The cgroup limits, shared by ``run``/``create`` and ``update``."""
    p.add_argument("-m", "--memory", metavar="BYTES", help="memory limit (e.g. 64m)")
    p.add_argument("--memory-swap", metavar="BYTES", help="memory plus swap limit; -1 for unlimited swap")
    p.add_argument("--cpus", metavar="NUMBER", help="number of CPUs (e.g. 0.5)")
    p.add_argument("-c", "--cpu-shares", type=int, metavar="SHARES", help="CPU shares (relative weight)")
    p.add_argument("--cpu-period", type=int, metavar="MICROSECONDS", help="CPU CFS period")
    p.add_argument("--cpu-quota", type=int, metavar="MICROSECONDS", help="CPU CFS quota")
    p.add_argument("--cpuset-cpus", metavar="CPUS", help="CPUs in which to allow execution (0-1, 0,1)")
    p.add_argument("--pids-limit", type=int, metavar="N", help="tune the container's pids limit (-1 for unlimited)")


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
        network=args.network, network_aliases=args.network_alias, ip=args.ip,
        mac_address=args.mac_address, extra_hosts=args.add_host, dns=args.dns,
        dns_search=args.dns_search, dns_opt=args.dns_option, ports=args.publish,
        publish_all_ports=args.publish_all, expose=args.expose, links=args.link,
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
    p.add_argument("-n", "--last", type=int, default=-1, metavar="N",
                   help="show the n last created containers (includes all states)")
    p.add_argument("-l", "--latest", action="store_true",
                   help="show the latest created container (includes all states)")
    p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    p.add_argument("-s", "--size", action="store_true", help="display total file sizes")
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
    p.add_argument("-p", "--pause", nargs="?", const=True, default=True, type=_boolean, metavar="BOOL",
                   help="pause the container during commit (default true; --pause=false to not)")
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

    p = commands.add_parser("start", help="Start one or more stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="attach STDOUT/STDERR and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="attach the container's STDIN")
    p.add_argument("--detach-keys", metavar="KEYS", help="key sequence for detaching (default ctrl-p,ctrl-q)")
    p.add_argument("containers", metavar="CONTAINER", nargs="+")
    p.set_defaults(func=cmd_start)

    p = commands.add_parser("stop", help="Stop one or more running containers")
    p.add_argument("-t", "--time", "--timeout", dest="time", type=int, metavar="SECONDS",
                   help="seconds to wait before killing the container (default: its StopTimeout, 10)")
    p.add_argument("containers", metavar="CONTAINER", nargs="+")
    p.set_defaults(func=cmd_stop)

    p = commands.add_parser("restart", help="Restart one or more containers")
    p.add_argument("-t", "--time", "--timeout", dest="time", type=int, metavar="SECONDS",
                   help="seconds to wait before killing the container (default: its StopTimeout, 10)")
    p.add_argument("containers", metavar="CONTAINER", nargs="+")
    p.set_defaults(func=cmd_restart)

    p = commands.add_parser("kill", help="Kill one or more running containers")
    p.add_argument("-s", "--signal", default="KILL", metavar="SIGNAL",
                   help="signal to send to the container (default KILL)")
    p.add_argument("containers", metavar="CONTAINER", nargs="+")
    p.set_defaults(func=cmd_kill)

    p = commands.add_parser("wait", help="Block until one or more containers stop, then print their exit codes")
    p.add_argument("containers", metavar="CONTAINER", nargs="+")
    p.set_defaults(func=cmd_wait)

    p = commands.add_parser("port", help="List port mappings or a specific mapping for the container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private_port", metavar="PRIVATE_PORT[/PROTO]", nargs="?")
    p.set_defaults(func=cmd_port)

    p = commands.add_parser("rename", help="Rename a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")
    p.set_defaults(func=cmd_rename)

    p = commands.add_parser("attach", help="Attach local standard input, output, and error streams "
                                           "to a running container")
    p.add_argument("--no-stdin", action="store_true", help="do not attach STDIN")
    p.add_argument("--detach-keys", metavar="KEYS", help="key sequence for detaching (default ctrl-p,ctrl-q)")
    p.add_argument("--sig-proxy", type=lambda t: t.lower() not in ("false", "0"), default=True,
                   metavar="BOOL", help="proxy received signals to the process (default true)")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_attach)

    p = commands.add_parser("logs", help="Fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="follow log output")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("-n", "--tail", default="all", metavar="N",
                   help='number of lines to show from the end of the logs (default "all")')
    p.add_argument("--since", metavar="TIME",
                   help="show logs since a timestamp (2013-01-02T13:23:37Z) or relative time (42m)")
    p.add_argument("--until", metavar="TIME",
                   help="show logs before a timestamp (2013-01-02T13:23:37Z) or relative time (42m)")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_logs)

    p = commands.add_parser("pause", help="Pause all processes within one or more containers")
    p.add_argument("containers", metavar="CONTAINER", nargs="+")
    p.set_defaults(func=cmd_pause)

    p = commands.add_parser("unpause", help="Unpause all processes within one or more containers")
    p.add_argument("containers", metavar="CONTAINER", nargs="+")
    p.set_defaults(func=cmd_unpause)

    p = commands.add_parser("events", help="Get real time events from the server")
    p.add_argument("--since", metavar="TIME", help="show all events created since timestamp")
    p.add_argument("--until", metavar="TIME", help="stream events until this timestamp")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="FILTER",
                   help="filter output: container=, event=, image=, type=")
    p.add_argument("--format", metavar="TEMPLATE", help="format the output with a Go template")
    p.set_defaults(func=cmd_events)



def register_hidden(commands) -> None:
    """What a container's monitor runs (execv) after the container exited."""
    p = commands.add_parser("_restart")
    p.add_argument("container")
    p.add_argument("--client", type=int, action="append", default=[])
    p.set_defaults(func=cmd__restart)

    p = commands.add_parser("_netdown")
    p.add_argument("container")
    p.add_argument("--client", type=int, action="append", default=[])
    p.set_defaults(func=cmd__netdown)

    p = commands.add_parser("_autoremove")
    p.add_argument("container")
    p.add_argument("--client", type=int, action="append", default=[])
    p.set_defaults(func=cmd__autoremove)


def on_pull(ref: str) -> None:
    sys.stderr.write(f"Unable to find image '{ref}' locally\n")
    if ref == "busybox:latest":
        sys.stderr.write("making busybox:latest from /bin/busybox (there is no registry here)\n")


def _create(engine, args, command_name: str):
    if args.image is None:
        from . import UsageFailure
        raise UsageFailure(f'"{command_name}" requires at least 1 argument.', f"dockyard {command_name}")
    kwargs = create_kwargs(args)
    if getattr(args, "detach", False) or command_name == "create":
        kwargs["stdin_once"] = False  # docker: only an attached `run -i` closes stdin at its EOF
    return engine.containers.create(args.image, args.command or None, on_pull=on_pull, **kwargs)


def cmd_create(engine, args) -> int:
    container = _create(engine, args, "create")
    if args.explain:
        from ..runtime import launcher
        sys.stderr.write(launcher.explain(container, container.plan()) + "\n")
    print(container.id)
    return 0


def cmd_run(engine, args) -> int:
    from ..errors import EngineError, UsageError
    from ..runtime import attach, launcher

    if args.detach and args.attach:
        raise UsageError("Conflicting options: -a and -d")
    container = _create(engine, args, "run")
    try:
        plan = launcher.plan_for(container)
    except BaseException:
        container.remove(force=True)
        raise
    if args.explain:
        sys.stderr.write(launcher.explain(container, plan) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    if args.detach:
        try:
            container.start(plan=plan)
        except EngineError:
            if args.rm:
                container._remove_quietly()
            raise
        print(container.id)
        return 0

    streams = set(args.attach) if args.attach else {"stdout", "stderr"} | ({"stdin"} if args.interactive else set())
    stdin_fd = 0 if ("stdin" in streams and args.interactive) else None
    tty_size = attach.terminal_size(0) or attach.terminal_size(1) if args.tty else None
    detach_keys = attach.parse_detach_keys(args.detach_keys)
    try:
        started = launcher.start(container, plan=plan, attach=True, remover=args.rm, tty_size=tty_size)
    except EngineError:  # never started (a taken port, a command not found...): --rm still removes
        if args.rm:
            container._remove_quietly()
        raise
    return _relay(container, started.session, stdin_fd=stdin_fd, streams=streams, tty=args.tty,
                  detach_keys=detach_keys, close_stdin_at_eof=True, sig_proxy=args.sig_proxy,
                  remover=args.rm)


def _relay(container, session, *, stdin_fd, streams, tty, detach_keys, close_stdin_at_eof,
           sig_proxy, remover=False) -> int:
    """Be the container's terminal until it exits (its code) or we detach (0)."""
    from ..runtime import attach

    try:
        code = attach.relay(session, stdin_fd=stdin_fd,
                            stdout_fd=1 if "stdout" in streams else None,
                            stderr_fd=2 if "stderr" in streams else None,
                            tty=tty, detach_keys=detach_keys, close_stdin_at_eof=close_stdin_at_eof,
                            sig_proxy=sig_proxy)
        if code is None:
            if session.detached:
                return 0  # the container runs on under its monitor
            container.reload()  # the monitor vanished: the record says how it ended
            return container.attrs["State"]["ExitCode"]
        if remover:
            container._remove_quietly(exited=True)
        return code
    finally:
        session.close()


def _each(engine, refs, action) -> int:
    """Do ``action(container)`` for every reference, printing it as docker does."""
    from ..errors import EngineError

    status = 0
    for ref in refs:
        try:
            action(engine.containers.get(ref))
        except EngineError as e:
            sys.stderr.write(f"dockyard: {e}\n")
            status = e.exit_code
            continue
        print(ref, flush=True)
    return status


def cmd_start(engine, args) -> int:
    from ..errors import UsageError
    from ..runtime import attach, launcher

    if not (args.attach or args.interactive):
        return _each(engine, args.containers, lambda c: c.start())
    if len(args.containers) > 1:
        raise UsageError("you cannot start and attach multiple containers at once")
    container = engine.containers.get(args.containers[0])
    config = container.attrs["Config"]
    container._check_startable()
    container._clear_stopping()
    tty = bool(config.get("Tty"))
    remover = bool(container.attrs["HostConfig"].get("AutoRemove"))
    started = launcher.start(container, attach=True, remover=remover,
                             tty_size=attach.terminal_size(0) if tty else None)
    streams = {"stdout", "stderr"} | ({"stdin"} if args.interactive else set())
    return _relay(container, started.session,
                  stdin_fd=0 if args.interactive and config.get("OpenStdin") else None,
                  streams=streams, tty=tty, detach_keys=attach.parse_detach_keys(args.detach_keys),
                  close_stdin_at_eof=bool(config.get("StdinOnce")), sig_proxy=True, remover=remover)


def cmd_stop(engine, args) -> int:
    return _each(engine, args.containers, lambda c: c.stop(args.time))


def cmd_restart(engine, args) -> int:
    return _each(engine, args.containers, lambda c: c.restart(args.time))


def cmd_kill(engine, args) -> int:
    from ..runtime.options import signal_number

    sig = signal_number(args.signal)  # a bad signal fails before anything is killed
    return _each(engine, args.containers, lambda c: c.kill(sig))


def cmd_pause(engine, args) -> int:
    return _each(engine, args.containers, lambda c: c.pause())


def cmd_unpause(engine, args) -> int:
    return _each(engine, args.containers, lambda c: c.unpause())


def cmd_wait(engine, args) -> int:
    from ..errors import EngineError

    status = 0
    for ref in args.containers:
        try:
            print(engine.containers.get(ref).wait()["StatusCode"], flush=True)
        except EngineError as e:
            sys.stderr.write(f"dockyard: {e}\n")
            status = e.exit_code
    return status


def cmd_rename(engine, args) -> int:
    engine.containers.get(args.container).rename(args.new_name)
    return 0


def cmd_attach(engine, args) -> int:
    from ..errors import Conflict
    from ..runtime import attach, events

    container = engine.containers.get(args.container)
    if container.status == "paused":
        raise Conflict("You cannot attach to a paused container, unpause it first")
    if not container.attrs["State"]["Running"] or container.status == "restarting":
        raise Conflict("You cannot attach to a stopped container, start it first")
    config = container.attrs["Config"]
    tty = bool(config.get("Tty"))
    session = attach.connect(container)
    events.container_event(container, "attach")
    stdin = not args.no_stdin and bool(config.get("OpenStdin"))
    if tty:
        size = attach.terminal_size(0)
        if size:
            session.resize(*size)
    return _relay(container, session, stdin_fd=0 if stdin else None,
                  streams={"stdout", "stderr"}, tty=tty,
                  detach_keys=attach.parse_detach_keys(args.detach_keys),
                  close_stdin_at_eof=bool(config.get("StdinOnce")), sig_proxy=args.sig_proxy)


def cmd_logs(engine, args) -> int:
    from ..errors import UsageError
    from ..runtime import logs

    container = engine.containers.get(args.container)
    tail = args.tail
    if tail != "all":
        try:
            tail = int(tail)
        except ValueError:
            raise UsageError(f'invalid value for "tail": {tail!r}') from None
        if tail < 0:
            tail = "all"
    since_ns, until_ns = logs.parse_time_arg(args.since), logs.parse_time_arg(args.until)
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def show(entry):
        (out if entry[0] == "stdout" else err).write(logs.render(entry, args.timestamps))

    for entry in logs.stream(container, tail=tail, since_ns=since_ns, until_ns=until_ns,
                             follow=args.follow):
        show(entry)
        if args.follow:
            out.flush()
            err.flush()
    out.flush()
    err.flush()
    return 0


def cmd_events(engine, args) -> int:
    import time

    from ..runtime import events, logs

    since_ns, until_ns = logs.parse_time_arg(args.since), logs.parse_time_arg(args.until)
    if since_ns is None:
        since_ns = time.time_ns()  # without --since: only what happens from now on
    filters = events.parse_filters(args.filter)
    render = None
    if (args.format or "").strip() in ("json", "{{json .}}"):
        import json
        render = lambda e: json.dumps(e, separators=(",", ":"))  # noqa: E731 -- the API's JSON
    elif args.format:
        from .template import render_one
        render = lambda e: render_one(args.format, events.template_fields(e))  # noqa: E731
    follow = until_ns is None or until_ns > time.time_ns()  # docker follows until --until
    for event in events.read(engine.layout, since_ns=since_ns, until_ns=until_ns, filters=filters,
                             follow=follow):
        print(render(event) if render else events.format_line(event), flush=True)
    return 0


def cmd_port(engine, args) -> int:
    from ..network.ports import format_port_lines

    container = engine.containers.get(args.container)
    ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for line in format_port_lines(ports, args.private_port, container=args.container):
        print(line)
    return 0


def cmd__restart(engine, args) -> int:
    from ..runtime import launcher
    return launcher.restart_in_place(engine, args.container)


def cmd__netdown(engine, args) -> int:
    """The monitor, once its container exited: give back the network now."""
    from ..errors import NotFound
    try:
        engine.containers.get(args.container)  # merging the exit releases it (Container.refresh_state)
    except NotFound:
        pass
    return 0


def cmd__autoremove(engine, args) -> int:
    from ..runtime import launcher
    return launcher.autoremove(engine, args.container, args.client)


def cmd_ps(engine, args) -> int:
    import functools

    from ..runtime.filters import match_container, parse_filters, shows_all
    from .rows import CONTAINER_FORMAT, CONTAINER_HEADERS, ContainerRow
    from .template import render

    filters = parse_filters(args.filter)
    # -l is -n 1; both look at every state, newest first (docker's ps).
    last = 1 if args.latest else args.last
    containers = engine.containers.list(all=args.all or last > 0 or shows_all(filters))
    resolve_container = functools.cache(engine.containers.get)
    resolve_image = functools.cache(engine.images.get)
    containers = [c for c in containers
                  if match_container(c, filters, resolve_container=resolve_container,
                                     resolve_image=resolve_image)]
    if last > 0:
        containers = containers[:last]
    if args.quiet:
        for c in containers:
            print(c.id if args.no_trunc else c.short_id)
        return 0
    rows = [ContainerRow(c, no_trunc=args.no_trunc) for c in containers]
    # -s adds docker's SIZE column to the default table (a --format says for itself).
    default = CONTAINER_FORMAT + "\t{{.Size}}" if args.size else CONTAINER_FORMAT
    text = render(args.format, rows, CONTAINER_HEADERS, default=default)
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


def _boolean(text: str) -> bool:
    """Go's strconv.ParseBool, which docker's boolean flags use (--pause=false)."""
    value = text.lower()
    if value in ("1", "t", "true"):
        return True
    if value in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value: {text!r}")


def cmd_commit(engine, args) -> int:
    container = engine.containers.get(args.container)
    image = container.commit(args.repository, message=args.message, author=args.author,
                             changes=args.change, pause=args.pause)
    print(image.id)
    return 0


def cmd_diff(engine, args) -> int:
    from ..runtime.commit import changes

    for kind, path in changes(engine, engine.containers.get(args.container)):
        print(f"{kind} {path}")
    return 0

"""Start a container under its monitor.

A running container has a monitor of its own (``_native/monitor.c``, read
its twin ``runtime/monitor.py``): the process that holds its output, writes
its log and its exit status, and applies its restart policy. This module
starts the two of them. The processes, and who is whose parent::

    caller (the dockyard CLI, or your Python)   forks X, reaps it at once, then
    |                                           waits for M's one-line report
    +- X                                        forks M and exits: M, orphaned, is
       |                                        adopted by init, so it is no child
       |                                        of ours and outlives us
       +- M  Python for a few milliseconds,     setsid(); spawns the container, which
          |  then dockyard-monitor (execve)     joins its cgroup itself; waits for its
          |                                     execve; records it running; reports;
          |                                     execve()s the monitor
          +- the container (PID 1 of its namespaces; PR_SET_PDEATHSIG=SIGKILL
             towards M, so it cannot outlive its monitor)

Lifecycle of one start, as the caller sees it::

    prepare: plan, cgroup, stdio (pipes or a pty), attach.sock, report pipe
      -> fork -> read M's report, one JSON line:
         {"pid": N}      the command runs; the monitor is taking over
         {"error": ...}  the spawn failed, the record says why (status
                         "created", ExitCode 125/126/127): raised here
         end of file     M died; whatever it spawned died with it

Why M and not the caller spawns the container: a process can only
``waitpid`` its own children, and the container must outlive the caller.
Why M is Python first: the spawn protocol (runtime/process.py) and the
record are Python; after ``execve`` M's memory is the C program's, a few
hundred kilobytes. The same code runs in place, without forks, when the
monitor restarts a container (``python -m engine _restart ID``: same PID).

An attached start (a foreground ``run``, ``start -a``) skips X: the caller
forks M itself and stays until the exit anyway, so M may be its child (one
fork of a big Python process less, the costliest step of a start); a later
start reaps it. If the caller dies first, init adopts M as it would have.

A foreground run passes one end of a socketpair to the monitor as a client
that is connected from the start, so not a byte of output can be missed.
With ``--rm``, that client is the *remover*: after the exit frame it
removes the container itself and hangs up (quicker than the monitor
starting Python to do it); if it died instead, the monitor runs
``python -m engine _autoremove ID``.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from .. import _native
from ..errors import EngineError, SpawnError
# Imported here, not where used: M must not spend its few milliseconds
# importing modules after the fork (and a fork should not run imports).
from . import attach, cgroups, events, logs, options  # noqa: F401
from .container import now, parse_time, process_start_time  # noqa: F401
from .process import ContainerProcess

MONITOR_BINARY = Path(_native.__file__).parent / "dockyard-monitor"

# docker's restart manager (moby restartmanager/restartmanager.go): wait
# 100 ms before the first restart, double the wait each time, at most a
# minute; a container that ran for 10 s or more starts again from 100 ms.
BACKOFF_FIRST_MS = 100
BACKOFF_MAX_MS = 60_000
BACKOFF_RESET_S = 10


def monitor_program() -> list[str]:
    """The compiled monitor, or its twin when not built, with DOCKYARD_PURE=1,
    or with DOCKYARD_MONITOR=python (to test the twin alone)."""
    if (os.environ.get("DOCKYARD_MONITOR") != "python" and not _native.pure()
            and os.access(MONITOR_BINARY, os.X_OK)):
        return [str(MONITOR_BINARY)]
    return [sys.executable, "-m", "engine.runtime.monitor"]


def implementation() -> str:
    return "compiled" if monitor_program()[0] == str(MONITOR_BINARY) else "python twin"


def plan_for(container, sandbox=None):
    """The container's plan, with a controlling terminal when it has a tty (-t);
    ``sandbox``: its network for this run (engine/network/sandbox.py attach)."""
    return container.plan(tty=bool(container.attrs["Config"].get("Tty")), sandbox=sandbox)


def attach_network(container):
    """Make the container's network for this run; returns the sandbox the plan joins.
    A published port that is taken refuses the start here, before the spawn (as docker's
    start fails, leaving the container created)."""
    from ..network import sandbox
    net = sandbox.attach(container._engine, container)
    try:
        sandbox.check_ports(container._engine, container)
    except BaseException:
        net.close()
        raise
    return net


def with_network(plan, sandbox):
    """A plan the caller built (and maybe printed, or changed) before the
    network existed, given the namespace's descriptor; None if the plan was
    made for another network than the one attached (then it is rebuilt)."""
    import dataclasses

    from . import plan as P

    joins = [i for i, step in enumerate(plan.steps)
             if isinstance(step, P.SetNamespace) and step.kind == "net"]
    if not sandbox.join:
        return None if joins else plan
    if len(joins) != 1 or plan.steps[joins[0]].path != sandbox.join:
        return None
    steps = list(plan.steps)
    steps[joins[0]] = dataclasses.replace(steps[joins[0]], fd=sandbox.join_fd)
    return dataclasses.replace(plan, steps=steps)


def release_network(container) -> None:
    from ..network import sandbox
    try:
        container.reload()
    except EngineError:
        pass
    sandbox.detach(container._engine, container)


def cgroup_of(container):
    """The container's Cgroup (runtime/cgroups.py), or None on a host without one."""
    try:
        from . import cgroups
    except ImportError:
        return None
    return cgroups.for_container(container)


def explain(container, plan) -> str:
    """``--explain``: what the engine does before the clone (the container's
    network: its namespace, veth and address; its cgroup: directories and
    limits, as shell commands), then the child's plan, which starts by
    joining that cgroup (and that network namespace)."""
    from ..network import sandbox

    lines = sandbox.explain(container._engine, container)
    cgroup = cgroup_of(container)
    if cgroup is not None and cgroup.version != "none":
        own = f"{cgroup.parent}/{container.id}"
        lines.append(f"# first, in the engine: the container's cgroup (v{cgroup.version}), CG={own}")
        body = [f"mkdir -p {path}" for path in cgroup.dirs]
        for write in cgroup.plan(container.attrs["HostConfig"]):
            body.append(write.shell() + (f"    # {write.why}" if write.why else ""))
        lines += [line.replace(own, "$CG") for line in body]
    return "\n".join(lines + [plan.render()])


class Stdio:
    """The container's fds 0, 1, 2 and the monitor's ends of them.

    Without a tty: a pipe for stdout, one for stderr, and stdin from a pipe
    (``-i``) or /dev/null. With ``-t`` a pseudo-terminal (pty(7)): its slave
    is the container's 0, 1 and 2, its master goes to the monitor.
    """

    def __init__(self, config: dict, tty_size: tuple[int, int] | None = None):
        self.for_container: tuple[int, int, int]
        self.container_side: list[int] = []
        self.monitor_args: list[tuple[str, int]] = []
        if config.get("Tty"):
            master, slave = os.openpty()
            if tty_size:
                attach.set_size(master, *tty_size)
            self.for_container = (slave, slave, slave)
            self.container_side = [slave]
            self.monitor_args = [("--pty", master)]
            if config.get("OpenStdin"):
                self.monitor_args.append(("--stdin", master))
            return
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.monitor_args = [("--stdout", out_r), ("--stderr", err_r)]
        if config.get("OpenStdin"):
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            self.monitor_args.append(("--stdin", in_w))
        else:
            in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # docker's stdin without -i
        self.for_container = (in_r, out_w, err_w)
        self.container_side = [in_r, out_w, err_w]

    @property
    def monitor_side(self) -> list[int]:
        return list(dict.fromkeys(fd for _, fd in self.monitor_args))

    def close_container_side(self) -> None:
        for fd in self.container_side:
            _close(fd)
        self.container_side = []

    def close_monitor_side(self) -> None:
        for fd in self.monitor_side:
            _close(fd)
        self.monitor_args = []


class Started:
    """A container whose command runs (what ``Container.run(on_start=...)`` gets)."""

    def __init__(self, container, pid: int, session=None):
        self.container = container
        self.pid = pid
        self.session = session

    def kill(self, sig: int) -> None:
        if self.session is not None:
            self.session.signal(sig)
        else:
            self.container.kill(sig)


# -- the caller's side -------------------------------------------------------------


# Monitors we forked ourselves (attached starts) and have not reaped yet.
_direct_monitors: set[int] = set()


def _reap_monitors() -> None:
    """Reap the monitors of earlier attached starts that have exited (they were
    our children: without a wait they would stay zombies while we run)."""
    for pid in list(_direct_monitors):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid  # reaped by someone else (a waitpid(-1) of the caller's)
        if done:
            _direct_monitors.discard(pid)


def start(container, *, plan=None, attach: bool = False, remover: bool = False,
          tty_size: tuple[int, int] | None = None) -> Started:
    """Start ``container`` under a new monitor; see the module docstring.

    ``attach``: the returned :class:`Started` has a ``session``
    (runtime/attach.py) connected before the container starts. ``remover``:
    that session will remove the container after its exit (``--rm``).

    Two starts of one container at once would make two monitors for one
    record: ``containers/<id>/start.lock`` (flock) lets one through at a
    time, and the second finds the container running.
    """
    from ..errors import Conflict, ContainerNotFound

    _reap_monitors()
    try:
        lock = os.open(container.path / "start.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        raise ContainerNotFound(f"No such container: {container.id}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        container.reload()
        if container.attrs["State"]["Running"]:
            raise Conflict(f"container {container.name} is already running")
        return _start(container, plan=plan, attach=attach, remover=remover, tty_size=tty_size)
    finally:
        # M's copy of this descriptor closes when it execs the monitor (O_CLOEXEC):
        # until then, the start is still in progress.
        os.close(lock)


def _start(container, *, plan, attach, remover, tty_size) -> Started:
    from . import attach as attach_protocol

    _ensure_std_fds()
    cgroup = cgroup_of(container)
    if cgroup is not None and cgroup.version != "none":
        # The child's first steps move it into its cgroup; get the kernel's
        # slow part of such a move going now (runtime/cgroups.py, warm_up).
        threading.Thread(target=cgroups.warm_up, args=(cgroup.layout,), daemon=True).start()
    program = monitor_program()
    stdio = listener = ours = theirs = net = None
    report_r = report_w = -1
    try:
        # The network first: the plan joins the namespace it makes (the plan a
        # caller printed for --explain showed the same steps, without the descriptor).
        net = attach_network(container)
        plan = with_network(plan, net) if plan is not None else None
        plan = plan if plan is not None else plan_for(container, net)
        if cgroup is not None:
            cgroup.create(container.attrs["HostConfig"])
        stdio = Stdio(container.attrs["Config"], tty_size)
        listener = attach_protocol.listen(container.path)
        if attach:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        clients = [] if theirs is None else [(theirs.fileno(), remover)]
        # An attached caller stays until the exit anyway: M may be our own
        # child (a fork less, the costliest step of a start), reaped by a
        # later start (_reap_monitors). A detached start must leave no child
        # behind: X forks M and exits, and M is adopted by init.
        direct = attach
        child = os.fork()
        if child == 0:  # X (or M itself when direct)
            try:
                if direct or os.fork() == 0:  # M
                    os.close(report_r)
                    if ours is not None:
                        ours.close()
                    become_monitor(container, plan, stdio, listener.fileno(), clients, program,
                                   cgroup, report_w)
            finally:
                os._exit(0)
        if direct:
            _direct_monitors.add(child)
        else:
            os.waitpid(child, 0)
    except BaseException:
        for fd in (report_r, report_w):
            _close(fd)
        if ours is not None:
            ours.close()
        _cleanup_failed_start(container, cgroup)
        raise
    finally:
        # M has its copies; ours would keep pipes from ever ending.
        _close(report_w)
        if net is not None:
            net.close()
        if stdio is not None:
            stdio.close_container_side()
            stdio.close_monitor_side()
        if listener is not None:
            listener.close()
        if theirs is not None:
            theirs.close()
    try:
        report = _read_report(report_r)
    except BaseException:
        if ours is not None:
            ours.close()
        raise
    if report is None or "error" in report:
        if ours is not None:
            ours.close()
        container.reload()  # M recorded the failure; or died, and the record is repaired
        _cleanup_failed_start(container, cgroup)
        if report is None:
            raise EngineError(f"the monitor of container {container.short_id} died while starting "
                              f"it (see {container.path / 'monitor.log'})")
        raise _rebuild_error(report["error"])
    if ours is None:
        container.reload()  # the record M wrote: running, its PID...
    # (An attached caller reads the record when the container has exited.)
    publish_ports(container, report["pid"], ours)
    session = attach_protocol.Session(ours) if ours is not None else None
    return Started(container, report["pid"], session)


def publish_ports(container, pid: int, ours=None) -> None:
    """-p/-P: start the container's port proxy now that its PID is known; if the
    ports cannot be bound, the container is killed and the error raised."""
    hc = container.attrs["HostConfig"]
    if not (hc.get("PortBindings") or hc.get("PublishAllPorts")):
        return
    from ..network import sandbox
    try:
        proxy = sandbox.publish(container._engine, container, pid)
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if ours is not None:
            ours.close()
        raise
    if proxy is not None:
        _direct_monitors.add(proxy)  # our child: reaped by a later start, as M


def _read_report(fd: int) -> dict | None:
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            data += chunk
    finally:
        os.close(fd)
    return json.loads(data)


def _cleanup_failed_start(container, cgroup) -> None:
    """Nothing runs: take away the socket, the network and the cgroup made for it."""
    from . import attach as attach_protocol

    if not container.attrs["State"]["Running"]:
        try:
            release_network(container)
        except Exception:  # noqa: BLE001 - the start's own error is the one to report
            pass

    try:
        with attach_protocol.short_path(container.path, "attach.sock") as path:
            os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    if cgroup is not None and not container.attrs["State"]["Running"]:
        try:
            cgroup.remove()
        except OSError:
            pass


def _describe_error(e: BaseException) -> dict:
    return {"class": type(e).__name__, "message": str(e), "stage": getattr(e, "stage", ""),
            "errno": getattr(e, "errno", 0) or 0}


def _rebuild_error(info: dict) -> EngineError:
    """The exception M reported, as the same class with the same message."""
    from .. import errors

    cls = getattr(errors, info.get("class", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, EngineError)):
        cls = EngineError
    e = cls.__new__(cls)
    Exception.__init__(e, info["message"])
    if issubclass(cls, SpawnError):
        e.stage, e.errno = info.get("stage", ""), info.get("errno", 0)
    return e


def _ensure_std_fds() -> None:
    """Make sure 0, 1 and 2 are open, so no pipe we create lands on them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free number: fd


def _close(fd: int) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


# -- M: from here on we are the monitor's process ----------------------------------------


def become_monitor(container, plan, stdio: Stdio, listen_fd: int, clients: list[tuple[int, bool]],
                   program: list[str], cgroup, report_w: int | None, *, restart_count: int | None = None):
    """Spawn the container, record it, report, and execve the monitor. Never returns.

    Runs in M (just forked, see the module docstring) or in the process of
    ``_restart`` (the monitor's own PID). Every failure is reported (or,
    without a report pipe, recorded) and ends this process.
    """
    try:
        try:
            os.setsid()  # our own session: no terminal signals from the caller's terminal
        except OSError:
            pass  # already a session leader (a restart)
        # Dispositions the caller may have set must not reach the monitor:
        # SIGCHLD ignored would even reap the container behind its back.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                    signal.SIGCHLD, signal.SIGWINCH, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        _crash_point("before-spawn")
        oom_start = oom_kills(cgroup)  # before the spawn: an OOM in the first instant counts
        pid, started_at = spawn_and_record(container, plan, stdio, cgroup, restart_count)
        _crash_point("after-spawn")
        if report_w is not None:
            _report(report_w, {"pid": pid})
        else:  # a restart in place: nobody else will start the port proxy again
            publish_ports(container, pid)
        # Not the caller's terminal or pipes: they would stay open as long as we run.
        _quiet_std_fds(container)
        os.chdir("/")
        _crash_point("before-exec")
        argv = program + monitor_args(container, pid, started_at, stdio, listen_fd, clients, cgroup)
        if oom_start >= 0:
            argv += ["--oom-start", str(oom_start)]
        keep = stdio.monitor_side + [fd for fd, _ in clients] + ([listen_fd] if listen_fd >= 0 else [])
        _exec(argv, keep)
        # Only reached if execve failed: the container must not run unwatched.
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        container.record_exit(255, f"could not execute the container monitor {argv[0]}")
    except SpawnError as e:
        if report_w is not None:
            _report(report_w, {"error": _describe_error(e)})
    except BaseException as e:  # noqa: BLE001 -- this process must end here, whatever happened
        if report_w is not None:
            _report(report_w, {"error": {"class": "EngineError", "message": f"{type(e).__name__}: {e}"}})
        else:
            sys.stderr.write(f"dockyard: restart of {container.short_id} failed: {e}\n")
    os._exit(0)


def spawn_and_record(container, plan, stdio: Stdio, cgroup, restart_count=None) -> tuple[int, str]:
    """Spawn the container (it stays our child), wait for its execve, record
    it as running. Returns (pid, StartedAt).

    The child joins its cgroup itself, as the first steps of its plan, so it
    needs nothing more from us: the compiled spawner sleeps until its execve
    (CLONE_VFORK), the twin waits for it on the error pipe. If we are killed
    before recording, the command dies with us (PR_SET_PDEATHSIG) and the
    record, still not running, tells the truth.
    """
    from . import events
    from .container import now
    from .process import ContainerProcess

    started_at = now()
    process = ContainerProcess.start(plan, stdio.for_container)
    stdio.close_container_side()
    try:
        process.wait_started()
        container.record_start(process.pid, started_at, restart_count)
    except SpawnError as e:
        container.record_spawn_failure(e)
        if cgroup is not None:
            cgroup.remove()
        raise
    except BaseException as e:
        process.kill(signal.SIGKILL)
        container.record_exit(process.wait(), f"{type(e).__name__}: {e}")
        raise
    finally:
        process.close()
    events.container_event(container, "start")
    return process.pid, started_at


def oom_kills(cgroup) -> int:
    """The cgroup's OOM-kill counter (memory.oom_control / memory.events oom_kill), -1 if none."""
    if cgroup is None:
        return -1
    total, found = 0, False
    for path in cgroup.oom_files():
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        total += int(value)
                        found = True
        except (OSError, ValueError):
            pass
    return total if found else -1


def monitor_args(container, pid: int, started_at: str, stdio: Stdio, listen_fd: int,
                 clients: list[tuple[int, bool]], cgroup) -> list[str]:
    """The monitor's command line (the same for the C program and its twin)."""
    from . import logs
    from .options import parse_bytes

    attrs, host = container.attrs, container.attrs["HostConfig"]
    log_opts = (host.get("LogConfig") or {}).get("Config") or {}
    max_size = parse_bytes(log_opts["max-size"], "max-size") if log_opts.get("max-size") else 0
    policy = host.get("RestartPolicy") or {"Name": "no", "MaximumRetryCount": 0}
    args = ["--id", container.id, "--dir", str(container.path), "--root", str(container._engine.root),
            "--name", container.name, "--image", attrs["Config"].get("Image") or "",
            "--pid", str(pid), "--started-at", started_at,
            "--log", str(logs.log_path(container)), "--log-max-size", str(max_size),
            "--log-max-file", str(int(log_opts.get("max-file") or 1)),
            "--restart", policy.get("Name") or "no",
            "--restart-max", str(policy.get("MaximumRetryCount") or 0),
            "--restart-count", str(attrs.get("RestartCount") or 0),
            "--python", sys.executable]
    for flag, fd in stdio.monitor_args:
        args += [flag, str(fd)]
    if listen_fd >= 0:
        args += ["--listen", str(listen_fd)]
    for fd, is_remover in clients:
        args += ["--remover" if is_remover else "--client", str(fd)]
    if cgroup is not None:
        for path in cgroup.oom_files():
            args += ["--oom-file", str(path)]
        for path in cgroup.dirs:
            args += ["--cgroup", str(path)]
        for path in cgroup.parent_dirs():
            args += ["--cgroup-parent", str(path)]
    if host.get("AutoRemove"):
        args.append("--auto-remove")
    if (attrs.get("NetworkSettings") or {}).get("SandboxKey"):
        args.append("--release-network")  # at the exit: python -m engine _netdown ID
    return args


def _exec(argv: list[str], keep: list[int]) -> None:
    """execve the monitor with exactly ``keep`` (and 0, 1, 2) open."""
    keep_set = set(keep)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep_set:
            try:
                os.set_inheritable(fd, False)  # whatever the caller had open stays behind
            except OSError:
                pass
    for fd in keep_set:
        os.set_inheritable(fd, True)
    # `python -m engine` (restart, --rm) must find this engine from "/" too.
    package_parent = str(Path(__file__).resolve().parent.parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    if package_parent not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = package_parent + (os.pathsep + path if path else "")
    try:
        os.execv(argv[0], argv)
    except OSError as e:
        sys.stderr.write(f"dockyard: cannot execute {argv[0]}: {e}\n")


def _quiet_std_fds(container) -> None:
    """0 and 1 from /dev/null; 2 appended to containers/<id>/monitor.log."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        log = os.open(container.path / "monitor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    except OSError:
        log = os.dup(devnull)
    for fd, source in ((0, devnull), (1, devnull), (2, log)):
        os.dup2(source, fd)
    os.close(devnull)
    os.close(log)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)


def _report(fd: int, message: dict) -> None:
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
    except OSError:
        pass  # the caller is gone; the record says it all
    os.close(fd)


def _crash_point(name: str) -> None:
    """For the fault tests: DOCKYARD_TEST_CRASH=<name> kills M right here."""
    if os.environ.get("DOCKYARD_TEST_CRASH") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# -- what the monitor execs after the container exited ---------------------------------


def restart_in_place(engine, container_id: str) -> int:
    """``python -m engine _restart ID``: the monitor's process, restarting its container.

    Waits docker's back-off (a SIGTERM meanwhile -- ``stop`` -- ends it and
    the container stays exited), then does M's work again, in this process:
    the same PID becomes the next monitor.
    """
    container = engine.containers.get(container_id)  # merges exit.json: "restarting"
    state = container.attrs["State"]
    if state["Status"] != "restarting":
        return 0
    extra = container.attrs.setdefault("Dockyard", {})
    ran = _seconds(state["FinishedAt"]) - _seconds(state["StartedAt"])
    previous = extra.get("RestartDelayMs") or 0
    delay = BACKOFF_FIRST_MS if (ran >= BACKOFF_RESET_S or not previous) else min(previous * 2, BACKOFF_MAX_MS)

    def stopped(_sig=None, _frame=None):
        container.record_restart_cancelled()
        os._exit(0)

    signal.signal(signal.SIGTERM, stopped)
    time.sleep(delay / 1000)
    # From here a SIGTERM waits for the monitor, which reads it and stops the container.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if (container.path / "stopping").exists():
        stopped()
    container.reload()
    container.attrs.setdefault("Dockyard", {})["RestartDelayMs"] = delay
    count = (container.attrs.get("RestartCount") or 0) + 1
    cgroup = cgroup_of(container)
    try:
        plan = plan_for(container, attach_network(container))
        if cgroup is not None:
            cgroup.create(container.attrs["HostConfig"])
        stdio = Stdio(container.attrs["Config"])
        from . import attach as attach_protocol
        listener = attach_protocol.listen(container.path)
    except BaseException as e:
        container.record_exit(state["ExitCode"], f"restart failed: {e}")
        raise
    container.save_restart_delay(delay)
    become_monitor(container, plan, stdio, listener.fileno(), [], monitor_program(), cgroup, None,
                   restart_count=count)
    return 0  # not reached


def autoremove(engine, container_id: str, client_fds: list[int]) -> int:
    """``python -m engine _autoremove ID``: remove an exited ``--rm`` container,
    then tell the clients still attached how it ended."""
    from . import attach as attach_protocol
    from ..errors import NotFound
    from ..jsonfile import read_json

    code = 255
    try:
        container = engine.containers.get(container_id)
        try:
            code = int(read_json(container.path / "exit.json")["ExitCode"])
        except (OSError, ValueError, KeyError):
            code = container.attrs["State"]["ExitCode"]
        container.remove(force=True)
    except NotFound:
        pass
    for fd in client_fds:
        try:
            os.write(fd, attach_protocol.frame(attach_protocol.EXIT, str(code).encode()))
        except OSError:
            pass
        _close(fd)
    return 0


def _seconds(text: str) -> float:
    from .container import parse_time
    return parse_time(text)

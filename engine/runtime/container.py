"""Containers: their records on disk, their states, and the truth about them.

A container is a directory ``containers/<id>/`` holding ``container.json``
(shaped like ``docker inspect``), its writable layer (``upper/``, ``work/``),
the mount point of its root (``rootfs/``) and, once it has run, what its
monitor keeps: ``<id>-json.log`` (its output), ``attach.sock`` (while it
runs), ``exit.json`` (how its last run ended), ``monitor.log``.

State machine (``State.Status``)::

    create()           start()                     the process exits
    --------> created ---------> running -----------------------------> exited
                                 |  ^   ^                               |  |
                         pause() |  |   | (restart policy, after a      |  |
                                 v  |   |  back-off)                    |  |
                            paused  |   +------ restarting <------------+  |
                                    |                                      |
                                    +------- start() again (same layer) ---+

    remove() deletes a created or exited container (``rm -f`` kills a
    running one first).

Who writes what: the launcher (runtime/launcher.py) records a run's start
(Status running, Pid, StartedAt, MonitorPid) from the monitor's own process;
the monitor (``_native/monitor.c``) never edits container.json -- when the
container exits it writes ``exit.json`` (ExitCode, FinishedAt, OOMKilled,
and the StartedAt of the run it belongs to). Whoever reads the record next
merges that in (:meth:`Container.refresh_state`), under the container's lock.
If the monitor was killed (and the container with it, by PR_SET_PDEATHSIG),
nobody writes exit.json: the next reader sees both processes gone (PIDs are
checked with their start times: PIDs are reused) and records ``exited``
with code 255 and an explanation. State never claims "running" for a dead
process.
"""

from __future__ import annotations

import errno
import math
import os
import shlex
import signal
import time
from contextlib import contextmanager
from datetime import datetime, timezone

from ..errors import Conflict, ContainerNotFound, EngineError, SpawnError, UsageError
from ..jsonfile import read_json, write_json
from . import names

ZERO_TIME = "0001-01-01T00:00:00Z"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_NAME_MAX = 64  # sethostname(2): EINVAL beyond this


def now() -> str:
    """UTC now in RFC 3339 with nanoseconds, as docker prints times."""
    t = time.time_ns()
    seconds, nanos = divmod(t, 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}Z"


def parse_time(text: str) -> float:
    """Seconds since the epoch from an RFC 3339 time (nanoseconds truncated)."""
    if not text or text.startswith("0001-"):
        return 0.0
    main, _, frac = text.rstrip("Z").partition(".")
    base = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return base + (float("0." + frac[:9]) if frac else 0.0)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if no such process.

    Together with the PID it identifies a process: PIDs are reused, start
    times of different processes with the same PID differ.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    rest = stat[stat.rindex(b")") + 2:].split()
    if rest[0] == b"Z":  # a zombie has exited already
        return None
    return int(rest[19])


# -- configuration: image defaults merged with the user's request -------------


def merge_config(image, *, command=None, entrypoint=None, environment=None, working_dir=None,
                 hostname=None, image_name: str = "") -> dict:
    """The container's ``Config``: the image's run defaults overridden as docker does.

    - ``entrypoint`` given (even ``""``) replaces the image's Entrypoint *and*
      drops the image's Cmd; ``""`` means no entrypoint at all.
    - ``command`` given replaces the image's Cmd.
    - ``environment`` entries replace image variables of the same name.
    - ``working_dir`` must be absolute; the image's WorkingDir otherwise.
    """
    defaults = image.run_config
    if isinstance(command, str):
        command = shlex.split(command)  # as docker-py does with a string command
    if entrypoint is not None:
        if isinstance(entrypoint, str):
            entrypoint = [entrypoint] if entrypoint else []
        ep = list(entrypoint) or None
        cmd = list(command) if command else None
    else:
        ep = defaults.get("Entrypoint") or None
        cmd = list(command) if command else (defaults.get("Cmd") or None)
    env = merge_env(defaults.get("Env") or [], environment)
    workdir = working_dir if working_dir is not None else (defaults.get("WorkingDir") or "")
    if workdir and not workdir.startswith("/"):
        raise UsageError(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    if hostname is not None:
        if not hostname or len(hostname.encode()) > HOST_NAME_MAX or "/" in hostname:
            raise UsageError(f"invalid hostname {hostname!r}: 1 to {HOST_NAME_MAX} bytes, no '/'")
    return {
        "Hostname": hostname or "",
        "Domainname": "",
        "User": defaults.get("User", ""),
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": env,
        "Cmd": cmd,
        "Image": image_name,
        "Volumes": defaults.get("Volumes"),
        "WorkingDir": workdir,
        "Entrypoint": ep,
        "OnBuild": None,
        "Labels": dict(defaults.get("Labels") or {}),
    }


def merge_env(base: list[str], overrides) -> list[str]:
    """Replace-or-append ``KEY=value`` entries (docker's ReplaceOrAppendEnvValues).

    An override without ``=`` takes the value from the calling environment,
    and is dropped when that is unset (as ``docker run -e KEY`` does).
    """
    if overrides is None:
        overrides = []
    elif isinstance(overrides, dict):
        overrides = [f"{k}={v}" for k, v in overrides.items()]
    out = list(base)
    for item in overrides:
        if "=" not in item:
            if item not in os.environ:
                continue
            item = f"{item}={os.environ[item]}"
        key = item.split("=", 1)[0]
        if not key:
            raise UsageError(f"invalid environment variable: {item}")
        for i, existing in enumerate(out):
            if existing.split("=", 1)[0] == key:
                out[i] = item
                break
        else:
            out.append(item)
    return out


def runtime_env(config: dict, home: str = "/root") -> list[str]:
    """The environment the process gets, built as dockerd's CreateDaemonEnvironment:
    PATH and HOSTNAME, TERM=xterm when it has a terminal (``-t``), then the
    configured variables on top; HOME last, when still unset, from the user's
    passwd entry (runc does that; ``home`` comes from user.resolve_user)."""
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={config['Hostname']}"]
    if config.get("Tty"):
        base.append("TERM=xterm")
    env = merge_env(base, config["Env"])
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home}")
    return env


# -- the container ----------------------------------------------------------


class Container:
    """One container, in docker-py's shape: ``id``, ``name``, ``status``,
    ``attrs`` (what ``inspect`` prints), ``reload()``, ``remove()``."""

    def __init__(self, engine, attrs: dict):
        self._engine = engine
        self.attrs = attrs

    # docker-py style accessors
    @property
    def id(self) -> str:
        return self.attrs["Id"]

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return self.attrs["Name"].lstrip("/")

    @property
    def status(self) -> str:
        return self.attrs["State"]["Status"]

    @property
    def labels(self) -> dict:
        return self.attrs["Config"].get("Labels") or {}

    @property
    def image(self):
        """The image this container was made from -- even if it was untagged or
        ``rmi -f``-ed since: the container holds on to its manifest."""
        return self._engine.image_store.load(self.attrs["Dockyard"]["ManifestDigest"])

    @property
    def path(self):
        return self._engine.layout.container(self.id)

    def __repr__(self) -> str:
        return f"<Container: {self.short_id}>"

    def reload(self) -> None:
        self.attrs = self._engine.containers.get(self.id).attrs

    def save(self) -> None:
        # Container state changes often; atomic is enough (see jsonfile.write_json).
        try:
            write_json(self.path / "container.json", self.attrs, durable=False)
        except FileNotFoundError:
            pass  # removed meanwhile (``rm -f`` from another process): nothing to record

    # -- the plan and the foreground run ---------------------------------------

    def argv(self) -> list[str]:
        return [self.attrs["Path"], *self.attrs["Args"]]

    def plan(self, *, die_with_parent: bool = True, tty: bool = False, sandbox=None):
        """The kernel steps that will start this container (see runtime/plan.py).

        ``--user`` is resolved here, from the image's own /etc/passwd and
        /etc/group (runtime/user.py): an unknown name raises UserNotFound
        (exit 125) and the container does not start. ``tty``: its stdin is
        a terminal that becomes its controlling terminal. ``sandbox``: the
        network the launcher made for this run (engine/network/sandbox.py);
        without it the plan shows the one it would make (``--explain``).
        """
        from ..network import sandbox as network
        from .profile import container_plan, own_capabilities
        from .user import RootView, resolve_user

        image = self.image
        overlay = self._engine.snapshots.overlay(image, self.id)
        config, host_config = self.attrs["Config"], self.attrs["HostConfig"]
        view = RootView.of(overlay)
        user = resolve_user(view, config.get("User") or "")
        title = f"# plan for container {self.short_id} ({self.name}) from {config['Image'] or image.short_id}"
        cgroup = self._cgroup()
        procs = [os.path.join(d, "cgroup.procs") for d in cgroup.dirs] \
            if cgroup is not None and cgroup.version != "none" else []
        if sandbox is None:
            sandbox = network.describe(self._engine, self)
        env = runtime_env(config, home=user.home)
        if sandbox.env:
            env = merge_env(env, list(sandbox.env))
        plan = container_plan(overlay, self.argv(), env, config,
                              host_config, user=user, view=view, available_caps=own_capabilities(),
                              tty=tty, die_with_parent=die_with_parent, cgroup_procs=procs, title=title,
                              network=sandbox)
        if procs:
            plan.aliases.append(("CG", f"{cgroup.parent}/{self.id}"))
        if sandbox.join and not sandbox.join.startswith("/proc/<"):
            plan.aliases.append(("NS", sandbox.join))
        return plan

    # -- running in the foreground -----------------------------------------------

    def run(self, stdio=None, *, plan=None, on_start=None, output=None) -> int:
        """Start the container, stay attached until it exits; return its exit status.

        This is ``dockyard run`` without ``-d``. The container runs under its
        monitor like any other (so its output is in its log too); we are an
        attached client from the first byte. ``output(stream, data)`` gets
        the output as it comes (stream 1 stdout, 2 stderr); or give
        ``stdio=(stdin, stdout, stderr)`` file descriptors and the output is
        written to the last two (-1: ours). The container's stdin is
        /dev/null unless it was created with ``stdin_open`` (then use
        :meth:`attach`, or ``dockyard run -i``). ``on_start(started)``
        is called once the command runs: ``started.pid`` is its PID,
        ``started.kill(sig)`` signals it. Raises SpawnError (and subclasses)
        when the command could not start; the record then says why. A
        container created with ``auto_remove`` (``--rm``) is deleted when it is
        done, whichever way that happens. If *we* are killed meanwhile, the
        container runs on under its monitor.
        """
        from . import attach, launcher

        if stdio is not None and output is None:
            targets = {1: stdio[1] if stdio[1] >= 0 else 1, 2: stdio[2] if stdio[2] >= 0 else 2}

            def output(stream, data):
                attach._write_all(targets[stream], data)
        auto_remove = bool(self.attrs["HostConfig"].get("AutoRemove"))
        self._check_startable()
        try:
            started = launcher.start(self, plan=plan, attach=True, remover=auto_remove)
        except SpawnError:
            if auto_remove:
                self._remove_quietly()
            raise
        return self.follow(started, on_start=on_start, output=output)

    def follow(self, started, *, on_start=None, output=None) -> int:
        """Stream an attached start's output until the exit frame; the exit status."""
        session = started.session
        remover = bool(self.attrs["HostConfig"].get("AutoRemove"))
        try:
            if on_start is not None:
                on_start(started)
            for stream, data in session.frames():
                if output is not None:
                    output(stream, data)
            code = session.exit_code
            if remover:
                # We are the remover (see runtime/launcher.py): remove, then hang up.
                self._remove_quietly(exited=code is not None)
            if code is None or not remover:
                try:
                    self.reload()  # merges exit.json, or repairs the record if the monitor died
                except ContainerNotFound:
                    return 255 if code is None else code  # removed meanwhile (rm -f)
                code = self.attrs["State"]["ExitCode"] if code is None else code
            return code
        finally:
            session.close()
            from . import launcher
            launcher._reap_monitors()  # an earlier run's monitor, if it has exited by now

    # -- lifecycle: docker start / stop / restart / kill / pause / unpause / wait --

    def start(self, *, plan=None) -> None:
        """``docker start``: run the command under a new monitor, detached.

        Works for created and exited containers (the writable layer is kept);
        a running container is left alone, as docker does.
        """
        from . import launcher

        self.reload()
        if self.attrs["State"]["Running"] and self.status != "paused":
            return
        self._check_startable()
        self._clear_stopping()
        launcher.start(self, plan=plan)

    def _check_startable(self) -> None:
        if self.status == "paused":
            raise Conflict("cannot start a paused container, try unpause instead")
        if self.attrs["State"]["Running"]:
            raise Conflict(f"container {self.name} is already running")

    def stop(self, timeout: int | None = None) -> None:
        """``docker stop``: the stop signal (Config.StopSignal, SIGTERM by default),
        then SIGKILL after ``timeout`` seconds (Config.StopTimeout, 10 by default;
        a negative timeout never sends SIGKILL, as ``docker stop -t -1``).

        The file ``stopping`` is written first: the monitor reads it and does
        not apply the restart policy after a user's stop.
        """
        from .options import signal_number

        self.reload()
        if not self.attrs["State"]["Running"]:
            return
        config = self.attrs["Config"]
        if timeout is None:
            timeout = config.get("StopTimeout")
        timeout = 10 if timeout is None else int(timeout)
        stop_signal = signal_number(config.get("StopSignal") or "SIGTERM")
        self._mark_stopping()
        signalled = None       # the StartedAt of the run we sent the stop signal to
        killed = None
        deadline = None
        pause = 0.002
        while True:
            state = self.attrs["State"]
            if not state["Running"]:
                break
            run = state["StartedAt"]
            if state["Status"] == "restarting":
                self._signal_monitor(signal.SIGTERM)  # cancels the pending restart
            elif signalled != run:
                self._send(stop_signal)
                # A negative timeout waits for as long as it takes (docker: -t -1).
                signalled, deadline = run, time.monotonic() + (timeout if timeout >= 0 else math.inf)
            elif killed != run and time.monotonic() >= deadline:
                self._send(signal.SIGKILL)
                killed, deadline = run, time.monotonic() + 10
            elif killed == run and time.monotonic() >= deadline:
                raise EngineError(f"container {self.name} did not stop after SIGKILL")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            try:
                self.reload()
            except ContainerNotFound:
                break  # an --rm container removed itself
        from . import events
        events.container_event(self, "stop")

    def restart(self, timeout: int | None = None) -> None:
        """``docker restart``: stop (as :meth:`stop`), then start."""
        from . import events

        self.stop(timeout)
        self.start()
        events.container_event(self, "restart")

    def kill(self, signal=None) -> None:  # noqa: A002 -- docker-py's argument name
        """``docker kill [-s SIG]``: send a signal (SIGKILL by default).

        As docker does, SIGKILL or the container's stop signal also cancels
        its restart policy for this exit, and unfreezes a paused container
        so it can die.
        """
        from .options import signal_number

        sig = signal_number(signal if signal is not None else "SIGKILL")
        self.reload()
        if not self.attrs["State"]["Running"] or self.status == "restarting":
            raise Conflict(f"Cannot kill container: {self.name}: Container {self.id} is not running")
        stop_signal = signal_number(self.attrs["Config"].get("StopSignal") or "SIGTERM")
        if sig in (9, stop_signal):
            self._mark_stopping()
        self._send(sig)

    def _send(self, sig: int) -> None:
        """Signal the container's process (checked against its start time: PIDs are reused)."""
        from . import events

        state = self.attrs["State"]
        pid = state.get("Pid") or 0
        if not pid or process_start_time(pid) != (self.attrs.get("Dockyard") or {}).get("PidStartTime"):
            return  # already gone: the monitor is recording its exit
        events.container_event(self, "kill", signal=sig)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        stop_signal = self.attrs["Config"].get("StopSignal") or "SIGTERM"
        from .options import signal_number
        if state.get("Paused") and sig in (9, signal_number(stop_signal)):
            cgroup = self._cgroup()
            if cgroup is not None:
                cgroup.thaw()  # a frozen process gets its signal only when it runs

    def _signal_monitor(self, sig: int) -> None:
        extra = self.attrs.get("Dockyard") or {}
        pid = extra.get("MonitorPid") or 0
        if pid and process_start_time(pid) == extra.get("MonitorStartTime"):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _mark_stopping(self) -> None:
        try:
            (self.path / "stopping").touch()
        except FileNotFoundError:
            pass

    def _clear_stopping(self) -> None:
        try:
            os.unlink(self.path / "stopping")
        except FileNotFoundError:
            pass

    def pause(self) -> None:
        """``docker pause``: freeze every process of the container (cgroup freezer)."""
        from . import events

        self.reload()
        if not self.attrs["State"]["Running"] or self.status == "restarting":
            raise Conflict(f"Container {self.id} is not running")
        if self.status == "paused":
            raise Conflict(f"Container {self.id} is already paused")
        cgroup = self._cgroup()
        if cgroup is None:
            raise EngineError("pause needs cgroups, which this host does not have")
        cgroup.freeze()
        self.update_record(lambda a: a["State"].update(Status="paused", Paused=True))
        events.container_event(self, "pause")

    def unpause(self) -> None:
        """``docker unpause``: let the processes run again."""
        from . import events

        self.reload()
        if self.status != "paused":
            raise Conflict(f"Container {self.id} is not paused")
        self._cgroup().thaw()
        self.update_record(lambda a: a["State"].update(Status="running", Paused=False))
        events.container_event(self, "unpause")

    def wait(self, timeout: float | None = None, condition: str = "not-running") -> dict:
        """``docker wait``: block until the container stops; ``{"StatusCode": n, "Error": None}``.

        A container that will be restarted counts as stopped (its exit is
        what one waits for, as with docker). Raises TimeoutError after
        ``timeout`` seconds.
        """
        self.reload()
        first_run = self.attrs["State"]["StartedAt"]
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            state = self.attrs["State"]
            if not state["Running"] or state["Status"] == "restarting" or state["StartedAt"] != first_run:
                code = state["ExitCode"]
                error = state.get("Error") or None
                return {"StatusCode": code, "Error": {"Message": error} if error else None}
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"container {self.name} still running after {timeout} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            try:
                self.reload()
            except ContainerNotFound:
                return {"StatusCode": state["ExitCode"], "Error": None}

    # -- output, input, names ----------------------------------------------------

    def logs(self, stdout: bool = True, stderr: bool = True, stream: bool = False,
             timestamps: bool = False, tail="all", since=None, until=None, follow=None):
        """``docker logs``, as docker-py's ``container.logs()``: bytes, or with
        ``stream=True`` a generator of chunks (following new output until
        the container stops unless ``follow=False``)."""
        from . import logs

        since_ns, until_ns = logs.parse_time_arg(since), logs.parse_time_arg(until)
        follow = stream if follow is None else follow
        entries = logs.stream(self, stdout=stdout, stderr=stderr, tail=tail, since_ns=since_ns,
                              until_ns=until_ns, follow=follow)
        chunks = (logs.render(entry, timestamps) for entry in entries)
        return chunks if stream else b"".join(chunks)

    def attach(self, stdout: bool = True, stderr: bool = True, stream: bool = False):
        """docker-py's ``container.attach()``: the output from now on until the
        container exits -- as bytes, or with ``stream=True`` a generator."""
        from . import attach, events

        session = attach.connect(self)
        events.container_event(self, "attach")
        wanted = {attach.STDOUT} if stdout else set()
        if stderr:
            wanted.add(attach.STDERR)

        def chunks():
            with session:
                for s, data in session.frames():
                    if s in wanted:
                        yield data
        return chunks() if stream else b"".join(chunks())

    # -- processes inside: exec, top, stats, update ----------------------------------

    def exec_run(self, cmd, **kwargs):
        """docker-py's ``container.exec_run()``: run ``cmd`` inside this running
        container (its namespaces and cgroup); returns ``ExecResult(exit_code,
        output)``. Keywords as :func:`engine.runtime.exec.exec_run`."""
        from . import exec as exec_

        return exec_.exec_run(self._engine, self, cmd, **kwargs)

    def top(self, ps_args=None) -> dict:
        """``docker top``: ``{"Titles": [...], "Processes": [[...], ...]}``."""
        from . import stats

        return stats.top(self, ps_args)

    def stats(self, stream: bool = True, decode: bool = False, interval: float = 1.0):
        """docker-py's ``container.stats()``: frames of the Docker API's shape
        (JSON bytes, or dicts with ``decode=True``); one dict without ``stream``."""
        from . import stats

        return stats.stats(self._engine, self, stream=stream, decode=decode, interval=interval)

    def update(self, **kwargs) -> dict:
        """``docker update``: change limits (``mem_limit``, ``cpus``,
        ``cpu_shares``, ``pids_limit``, ``restart_policy``...) of this
        container, live if it runs. See :func:`engine.runtime.stats.update`."""
        from . import stats

        return stats.update(self._engine, self, **kwargs)

    def rename(self, name: str) -> None:
        """``docker rename``: claim the new name, then release the old one."""
        self._engine.containers.rename(self, name)

    # -- the record ----------------------------------------------------------------

    @contextmanager
    def locked(self):
        """Hold this container's lock (flock(2) on ``containers/<id>/lock``).

        Every read-modify-write of container.json takes it: the start of a
        run (by the launcher, in the monitor's process) and the merge of an
        exit (by whoever notices it first) must not overwrite each other.
        """
        import fcntl

        try:
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise ContainerNotFound(f"No such container: {self.id}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update_record(self, change) -> None:
        """Re-read container.json, apply ``change(attrs)``, write it -- under the lock."""
        with self.locked():
            try:
                self.attrs = read_json(self.path / "container.json")
            except FileNotFoundError:
                raise ContainerNotFound(f"No such container: {self.id}") from None
            change(self.attrs)
            self.save()

    def record_start(self, pid: int, started_at: str, restart_count: int | None = None) -> None:
        """The launcher: the command is about to run as ``pid`` under this monitor."""
        from .logs import log_path

        def change(attrs):
            try:
                os.unlink(self.path / "exit.json")  # the previous run's
            except FileNotFoundError:
                pass
            attrs["State"].update(Status="running", Running=True, Paused=False, Restarting=False,
                                  OOMKilled=False, Dead=False, Pid=pid, ExitCode=0, Error="",
                                  StartedAt=started_at)
            extra = attrs.setdefault("Dockyard", {})
            extra.update(PidStartTime=process_start_time(pid), MonitorPid=os.getpid(),
                         MonitorStartTime=process_start_time(os.getpid()))
            attrs["LogPath"] = str(log_path(self))
            if restart_count is not None:
                attrs["RestartCount"] = restart_count
        self.update_record(change)

    def record_spawn_failure(self, error: SpawnError) -> None:
        """As docker: a container whose command could not start stays "created"
        (or "exited" after a run), with the exit code and the reason."""
        def change(attrs):
            state = attrs["State"]
            ran = state.get("FinishedAt", ZERO_TIME) != ZERO_TIME
            state.update(Status="exited" if ran else "created", Running=False, Restarting=False,
                         Pid=0, ExitCode=error.exit_code, Error=str(error))
        self.update_record(change)

    def record_exit(self, code: int, error: str) -> None:
        def change(attrs):
            attrs["State"].update(Status="exited", Running=False, Paused=False, Restarting=False,
                                  Pid=0, ExitCode=code, Error=error, FinishedAt=now())
        self.update_record(change)

    def record_restart_cancelled(self) -> None:
        """A stop during the restart back-off: the container stays exited."""
        self.update_record(lambda a: a["State"].update(Status="exited", Running=False,
                                                       Restarting=False, Pid=0))

    def save_restart_delay(self, delay_ms: int) -> None:
        self.update_record(lambda a: a.setdefault("Dockyard", {}).update(RestartDelayMs=delay_ms))

    def _cgroup(self):
        from .launcher import cgroup_of
        return cgroup_of(self)

    def _remove_cgroup(self) -> None:
        cgroup = self._cgroup()
        if cgroup is not None:
            try:
                cgroup.remove()
            except OSError:
                pass  # still busy: the next command tries again

    def _remove_quietly(self, exited: bool = False) -> None:
        """Remove, whatever the state. ``exited``: we know it has exited (we got its
        exit frame), so there is no state to bring up to date first."""
        try:
            self._engine.containers._store.remove(self, force=True, exited=exited)
        except ContainerNotFound:
            pass

    # -- truthful state --------------------------------------------------------

    def refresh_state(self) -> None:
        """Make a "running" record tell the truth; see the module docstring.

        - its monitor wrote exit.json for this run: merge it (exited, or
          restarting when the restart policy applies);
        - its process lives: running, or paused if its cgroup is frozen;
        - its process is gone and its monitor still lives: wait a moment for
          exit.json (the monitor is reading the last output);
        - both are gone: exited with 255 and an Error saying the monitor died.
        """
        state = self.attrs["State"]
        if not state.get("Running"):
            return
        if self._merge_exit():
            return
        extra = self.attrs.get("Dockyard") or {}
        if state["Status"] != "restarting":
            pid = state.get("Pid") or 0
            alive = pid and process_start_time(pid) is not None and \
                process_start_time(pid) == extra.get("PidStartTime")
            if alive:
                cgroup = self._cgroup()
                paused = cgroup is not None and cgroup.frozen()
                state.update(Status="paused" if paused else "running", Paused=paused)
                return
        deadline = time.monotonic() + 3
        while self._monitor_alive():
            if state["Status"] == "restarting":
                return  # the monitor waits before restarting it
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
            if self._merge_exit():
                return
        if self._merge_exit():
            return

        def repair(attrs):
            st = attrs["State"]
            if not st["Running"] or st["StartedAt"] != state["StartedAt"]:
                return  # someone else recorded it meanwhile
            monitor = (attrs.get("Dockyard") or {}).get("MonitorPid")
            st.update(Status="exited", Running=False, Paused=False, Restarting=False, Pid=0,
                      Error="" if st["Status"] == "restarting" else
                      f"the container's monitor (pid {monitor}) died without recording its exit "
                      "(was it killed?); the container was killed with it",
                      ExitCode=st["ExitCode"] if st["Status"] == "restarting" else 255,
                      FinishedAt=st["FinishedAt"] if st["Status"] == "restarting" else now())
        try:
            self.update_record(repair)
        except ContainerNotFound:
            return
        try:
            os.unlink(self.path / "attach.sock")  # nobody listens on it any more
        except FileNotFoundError:
            pass
        self._remove_cgroup()
        self._release_network()

    def _release_network(self) -> None:
        """The run is over: give back its network (engine/network/sandbox.py detach)."""
        ns = self.attrs.get("NetworkSettings") or {}
        if not (ns.get("SandboxKey") or (self.attrs.get("Dockyard") or {}).get("Proxy")):
            return  # nothing attached (none/host modes, or released already)
        from ..network import sandbox
        try:
            sandbox.detach(self._engine, self)
        except ContainerNotFound:
            pass

    def _monitor_alive(self) -> bool:
        extra = self.attrs.get("Dockyard") or {}
        pid = extra.get("MonitorPid") or 0
        return bool(pid) and process_start_time(pid) is not None and \
            process_start_time(pid) == extra.get("MonitorStartTime")

    def _merge_exit(self) -> bool:
        """Merge the monitor's exit.json into the record if it is this run's."""
        try:
            info = read_json(self.path / "exit.json")
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return False
        state = self.attrs["State"]
        if info.get("StartedAt") != state.get("StartedAt") or state["Status"] == "restarting":
            return False
        restarting = bool(info.get("Restarting"))

        def merge(attrs):
            st = attrs["State"]
            if not st["Running"] or st["StartedAt"] != info["StartedAt"] or st["Status"] == "restarting":
                return
            st.update(Status="restarting" if restarting else "exited", Running=restarting,
                      Restarting=restarting, Paused=False, Pid=0, ExitCode=info["ExitCode"],
                      FinishedAt=info["FinishedAt"], OOMKilled=bool(info.get("OOMKilled")), Error="")
        try:
            self.update_record(merge)
        except ContainerNotFound:
            return True
        if not restarting:
            self._remove_cgroup()
            self._release_network()
        return True

    def remove(self, force: bool = False) -> None:
        """Delete the container and its writable layer (``docker rm [-f]``)."""
        self._engine.containers.remove(self, force=force)

    def export(self, out=None):
        """``docker export``: the container's filesystem as a tar (see runtime/export.py).

        With ``out`` (a binary file object) the tar is written to it; without,
        an iterator of byte chunks is returned, like docker-py's ``export()``.
        Works for created, exited and running containers.
        """
        from . import export

        if out is None:
            return export.export(self._engine, self)
        export.export_to(self._engine, self, out)
        return None

    def diff(self) -> list[dict]:
        """``docker diff``: [{"Path": "/etc", "Kind": 0|1|2}] (0 changed, 1 added, 2 deleted)."""
        from .commit import changes
        kinds = {"C": 0, "A": 1, "D": 2}
        return [{"Path": path, "Kind": kinds[kind]} for kind, path in changes(self._engine, self)]

    def commit(self, repository: str | None = None, tag: str | None = None, *, message: str = "",
               author: str = "", changes: list[str] | None = None, pause: bool = True):
        """``docker commit``: keep this container's changes as a new image (runtime/commit.py).

        A running container is paused meanwhile (``pause=True``, docker's
        default), so that the layer is read while nothing writes to it; a
        container that was paused already stays paused."""
        from .commit import commit
        name = repository if (repository is None or tag is None) else f"{repository}:{tag}"
        self.reload()
        state = self.attrs["State"]
        cgroup = self._cgroup() if pause and state["Running"] and not state["Paused"] else None
        if cgroup is not None:
            cgroup.freeze()
        try:
            return commit(self._engine, self, name, message=message, author=author, changes=changes)
        finally:
            if cgroup is not None:
                cgroup.thaw()


class ContainerStore:
    """Create, find, list and remove the containers of one root."""

    def __init__(self, engine):
        self._engine = engine
        self.layout = engine.layout

    def _load(self, container_id: str) -> Container | None:
        try:
            attrs = read_json(self.layout.container(container_id) / "container.json")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except ValueError as e:
            raise EngineError(f"container {container_id[:12]}: corrupt container.json: {e}") from None
        c = Container(self._engine, attrs)
        c.refresh_state()
        return c

    def create(self, image, config: dict, *, name: str | None = None, host_config: dict | None = None,
               image_name: str = "", networks: dict | None = None) -> Container:
        """Record a new container (state ``created``) with its own writable layer."""
        argv = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
        if not argv:
            raise UsageError("No command specified")
        if name is not None:
            name = names.validate(name)  # before anything is written
        self.layout.create()
        container_id = os.urandom(32).hex()  # 256 random bits, as docker's IDs
        config = dict(config)
        if not config.get("Hostname"):
            config["Hostname"] = container_id[:12]
        name = self._reserve_name(name, container_id)
        try:
            upper, work, rootfs = self._engine.snapshots.prepare(container_id)
            # As mounted: the shared init layer on top, then the image's layers top-first.
            lower = [str(self._engine.snapshots.init_layer())]
            lower += [str(p) for p in reversed(self._engine.snapshots.ensure(image))]
            attrs = {
                "Id": container_id,
                "Created": now(),
                "Path": argv[0],
                "Args": argv[1:],
                "State": {"Status": "created", "Running": False, "Paused": False,
                          "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": 0,
                          "ExitCode": 0, "Error": "", "StartedAt": ZERO_TIME,
                          "FinishedAt": ZERO_TIME},
                "Image": image.id,
                "ResolvConfPath": "",
                "HostnamePath": "",
                "HostsPath": "",
                "LogPath": "",
                "Name": "/" + name,
                "RestartCount": 0,
                "Driver": "overlay",
                "Platform": "linux",
                "MountLabel": "",
                "ProcessLabel": "",
                "AppArmorProfile": "",
                "HostConfig": host_config or {"AutoRemove": False, "NetworkMode": "bridge"},
                "GraphDriver": {"Name": "overlay", "Data": {
                    "LowerDir": ":".join(lower), "UpperDir": str(upper),
                    "WorkDir": str(work), "MergedDir": str(rootfs)}},
                "Mounts": [],
                "Config": config,
                "NetworkSettings": {"Networks": networks or {}, "Ports": {}, "SandboxKey": "",
                                    "IPAddress": "", "Gateway": "", "MacAddress": ""},
                "Dockyard": {"ManifestDigest": image.manifest_digest, "PidStartTime": None},
            }
            container = Container(self._engine, attrs)
            container.save()
        except BaseException:
            self._release_name(name, container_id)
            self._engine.snapshots.remove(container_id)
            raise
        from . import events
        events.container_event(container, "create")
        return container

    # Names are files created with O_EXCL: two processes can never both get one.
    def _reserve_name(self, name: str | None, container_id: str) -> str:
        if name is not None:
            name = names.validate(name)
            if not self._claim(name, container_id):
                owner = self._name_owner(name)
                raise Conflict(f'Conflict. The container name "/{name}" is already in use by container '
                               f'"{owner}". You have to remove (or rename) that container to be able '
                               "to reuse that name.")
            return name
        for _ in range(100):
            candidate = names.generate()
            if self._claim(candidate, container_id):
                return candidate
        raise EngineError("could not find a free random container name")

    def _claim(self, name: str, container_id: str) -> bool:
        path = self.layout.names / name
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                owner = self._name_owner(name)
                if owner and (self.layout.container(owner) / "container.json").exists():
                    return False
                # A stale name left by an interrupted create or remove: reclaim it.
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                continue
            os.write(fd, container_id.encode())
            os.close(fd)
            return True
        return False

    def _name_owner(self, name: str) -> str:
        try:
            return (self.layout.names / name).read_text().strip()
        except (FileNotFoundError, ValueError):
            return ""

    def _release_name(self, name: str, container_id: str) -> None:
        if self._name_owner(name) == container_id:
            try:
                os.unlink(self.layout.names / name)
            except FileNotFoundError:
                pass

    # -- lookups ---------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """Find a container by full ID, name, or unique ID prefix (docker's order)."""
        if not ref:
            raise ContainerNotFound("No such container: ")
        if len(ref) == 64 and all(c in "0123456789abcdef" for c in ref):
            c = self._load(ref)
            if c is not None:
                return c
        bare = ref[1:] if ref.startswith("/") else ref
        if names.VALID_NAME.match(bare) and self.layout.names.exists():
            owner = self._name_owner(bare)
            if owner:
                c = self._load(owner)
                if c is not None:
                    return c
        if all(c in "0123456789abcdef" for c in ref) and self.layout.containers.exists():
            matches = [d for d in os.listdir(self.layout.containers) if d.startswith(ref)]
            if len(matches) > 1:
                raise ContainerNotFound(f"Multiple IDs found with provided prefix: {ref}")
            if matches:
                c = self._load(matches[0])
                if c is not None:
                    return c
        raise ContainerNotFound(f"No such container: {ref}")

    def list(self, all: bool = False) -> list[Container]:
        """Containers newest first; only running ones unless ``all``."""
        out = []
        if self.layout.containers.exists():
            for entry in os.listdir(self.layout.containers):
                if entry.startswith("."):
                    continue
                c = self._load(entry)
                if c is not None and (all or c.attrs["State"]["Running"]):
                    out.append(c)
        out.sort(key=lambda c: c.attrs["Created"], reverse=True)
        return out

    # -- renaming and removal ------------------------------------------------------

    def rename(self, container: Container, new_name: str) -> None:
        """``docker rename``: claim the new name (O_EXCL), update the record, release the old."""
        from . import attach, events

        if not new_name:
            raise UsageError("Neither old nor new names may be empty")
        new = names.validate(new_name[1:] if new_name.startswith("/") else new_name)
        old = container.name
        if new == old:
            raise UsageError("Renaming a container with the same name as its current name")
        if not self._claim(new, container.id):
            owner = self._name_owner(new)
            raise Conflict(f'Error when allocating new name: Conflict. The container name "/{new}" is '
                           f'already in use by container "{owner}". You have to remove (or rename) that '
                           "container to be able to reuse that name.")
        try:
            container.update_record(lambda attrs: attrs.update(Name="/" + new))
        except BaseException:
            self._release_name(new, container.id)
            raise
        self._release_name(old, container.id)
        if container.attrs["State"]["Running"]:
            try:
                with attach.connect(container) as session:
                    session.rename(new)  # its die event will carry the new name
            except Conflict:
                pass
        events.container_event(container, "rename", oldName="/" + old)

    def remove(self, container: Container, force: bool = False, *, exited: bool = False) -> None:
        """Delete a container. A running one needs ``force`` and is SIGKILLed first.

        The directory is first renamed to ``containers/.removing-<id>`` (atomic),
        so a crash half-way leaves no half-deleted container that ``ps`` would
        show; leftovers are finished off by the next removal. The cgroup goes
        too, and a ``destroy`` event is recorded.
        """
        from . import events

        if not exited:
            container.refresh_state()
        state = container.attrs["State"]
        if state["Running"] and not exited:
            if not force:
                raise Conflict(f'cannot remove container "/{container.name}": container is running: '
                               "stop the container before removing or force remove")
            try:
                self._kill_and_wait(container)
            except ContainerNotFound:
                pass  # it removed itself (--rm) meanwhile
        container._release_network()  # before the record goes: it says what to release
        base = self.layout.container(container.id)
        doomed = self.layout.containers / f".removing-{container.id}"
        try:
            os.rename(base, doomed)
        except FileNotFoundError:
            # Removed meanwhile by someone else (a foreground `--rm` run whose
            # process we just killed, say): the result is what was asked for.
            self._release_name(container.name, container.id)
            return
        self._release_name(container.name, container.id)
        self._engine.snapshots.remove_path(doomed)
        container._remove_cgroup()
        events.container_event(container, "destroy")
        self._sweep()

    def _kill_and_wait(self, container: Container, timeout: float = 10.0) -> None:
        """SIGKILL a running container (no restart: the ``stopping`` mark) and
        wait until its exit is recorded."""
        container._mark_stopping()
        deadline = time.monotonic() + timeout
        killed = None
        pause = 0.002
        while container.attrs["State"]["Running"]:
            state = container.attrs["State"]
            if state["Status"] == "restarting":
                container._signal_monitor(signal.SIGTERM)
            elif killed != state["StartedAt"]:
                container._send(signal.SIGKILL)
                killed = state["StartedAt"]
            if time.monotonic() > deadline:
                raise EngineError(f"container {container.name} did not die after SIGKILL")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            container.reload()

    def _sweep(self) -> None:
        """Finish removals that an earlier, interrupted process started."""
        for entry in os.listdir(self.layout.containers):
            if entry.startswith(".removing-"):
                try:
                    self._engine.snapshots.remove_path(self.layout.containers / entry)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise

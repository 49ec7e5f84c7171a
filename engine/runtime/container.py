"""Containers: their records on disk, their states, and a foreground run.

A container is a directory ``containers/<id>/`` holding ``container.json``
(shaped like ``docker inspect``), its writable layer (``upper/``, ``work/``)
and the mount point of its root (``rootfs/``).

State machine (``State.Status``)::

    create()                 start: spawn, record PID        the process exits
    --------> created  --------------------------> running --------------------> exited
                 |                                                                  |
                 +-------------------------- remove() ------------------------------+
                                        (``rm -f`` kills a running one first)

The process that runs a container in the foreground (``dockyard run`` without
``-d``) is the one that records its start and exit. If that process is killed,
nobody records the exit: the next command that reads the record notices that
the PID is gone (or now belongs to another process, detected through its start
time) and repairs the record to ``exited`` with code 255 and an explanation --
state never claims "running" for a dead process.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import time
from datetime import datetime, timezone

from ..errors import Conflict, ContainerNotFound, EngineError, SpawnError, UsageError
from ..jsonfile import read_json, write_json
from . import names
from .process import ContainerProcess

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


def runtime_env(config: dict) -> list[str]:
    """The environment the process gets: docker's PATH and HOSTNAME defaults,
    the configured variables on top, and HOME when still unset (runc sets it
    from the user's passwd entry; root's is /root)."""
    env = merge_env([f"PATH={DEFAULT_PATH}", f"HOSTNAME={config['Hostname']}"], config["Env"])
    if not any(e.startswith("HOME=") for e in env):
        env.append("HOME=/root")
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

    def plan(self, *, die_with_parent: bool = True):
        """The kernel steps that will start this container (see runtime/plan.py)."""
        from .profile import container_plan

        image = self.image
        overlay = self._engine.snapshots.overlay(image, self.id)
        config = self.attrs["Config"]
        title = f"# plan for container {self.short_id} ({self.name}) from {config['Image'] or image.short_id}"
        return container_plan(overlay, config["Hostname"], self.argv(), runtime_env(config),
                              config["WorkingDir"] or "/", die_with_parent=die_with_parent,
                              title=title)

    def run(self, stdio=(-1, -1, -1), *, plan=None, on_start=None) -> int:
        """Start the container and wait for it in this process; return its exit status.

        ``stdio`` are the fds to give the container as 0, 1, 2 (-1 keeps
        ours). ``on_start(process)`` is called once the command runs (the CLI
        uses it to forward signals). Raises SpawnError (and subclasses) when
        the container could not start; the record then says why. A container
        created with ``auto_remove`` (``--rm``) is deleted when it is done,
        whichever way that happens.
        """
        try:
            status = self._run(stdio, plan, on_start)
        finally:
            if self.attrs["HostConfig"].get("AutoRemove") and self.path.exists():
                self.remove(force=True)
        return status

    def _run(self, stdio, plan, on_start) -> int:
        if self.status != "created":
            raise Conflict(f"container {self.name} is {self.status}; only a created container can run")
        plan = plan or self.plan()
        process = ContainerProcess.start(plan, stdio)
        try:
            state = self.attrs["State"]
            state.update(Status="running", Running=True, Pid=process.pid, StartedAt=now(),
                         ExitCode=0, Error="")
            self.attrs.setdefault("Dockyard", {})["PidStartTime"] = process_start_time(process.pid)
            self.save()
            process.wait_started()
        except SpawnError as e:
            # As docker: a container whose command could not start stays
            # "created", with the exit code and the reason in its State.
            self.attrs["State"].update(Status="created", Running=False, Pid=0,
                                       ExitCode=e.exit_code, Error=str(e))
            self.save()
            raise
        except BaseException as e:
            process.kill(signal.SIGKILL)
            self._exited(process.wait(), f"{type(e).__name__}: {e}")
            raise
        finally:
            process.close()
        if on_start is not None:
            on_start(process)
        status = process.wait()
        self._exited(status, "")
        return status

    def _exited(self, code: int, error: str) -> None:
        self.attrs["State"].update(Status="exited", Running=False, Pid=0, ExitCode=code,
                                   Error=error, FinishedAt=now())
        self.save()

    # -- truthful state --------------------------------------------------------

    def refresh_state(self) -> None:
        """Repair a 'running' record whose process is gone (see module docstring)."""
        state = self.attrs["State"]
        if not state.get("Running"):
            return
        pid = state.get("Pid") or 0
        expected = (self.attrs.get("Dockyard") or {}).get("PidStartTime")
        actual = process_start_time(pid) if pid else None
        if actual is None or (expected is not None and actual != expected):
            state.update(Status="exited", Running=False, Pid=0, ExitCode=255,
                         Error="the process that ran this container exited without recording "
                               "its status (was dockyard killed?)",
                         FinishedAt=state.get("FinishedAt") if state.get("FinishedAt", ZERO_TIME)
                         != ZERO_TIME else now())
            self.save()

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
               author: str = "", changes: list[str] | None = None):
        """``docker commit``: keep this container's changes as a new image (runtime/commit.py)."""
        from .commit import commit
        name = repository if (repository is None or tag is None) else f"{repository}:{tag}"
        return commit(self._engine, self, name, message=message, author=author, changes=changes)


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
               image_name: str = "") -> Container:
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
                "HostConfig": host_config or {"AutoRemove": False, "NetworkMode": "none"},
                "GraphDriver": {"Name": "overlay", "Data": {
                    "LowerDir": ":".join(lower), "UpperDir": str(upper),
                    "WorkDir": str(work), "MergedDir": str(rootfs)}},
                "Mounts": [],
                "Config": config,
                "NetworkSettings": {"Networks": {}},
                "Dockyard": {"ManifestDigest": image.manifest_digest, "PidStartTime": None},
            }
            container = Container(self._engine, attrs)
            container.save()
            return container
        except BaseException:
            self._release_name(name, container_id)
            self._engine.snapshots.remove(container_id)
            raise

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

    # -- removal ------------------------------------------------------------------

    def remove(self, container: Container, force: bool = False) -> None:
        """Delete a container. A running one needs ``force`` and is SIGKILLed first.

        The directory is first renamed to ``containers/.removing-<id>`` (atomic),
        so a crash half-way leaves no half-deleted container that ``ps`` would
        show; leftovers are finished off by the next removal.
        """
        container.refresh_state()
        state = container.attrs["State"]
        if state["Running"]:
            if not force:
                raise Conflict(f'cannot remove container "/{container.name}": container is running: '
                               "stop the container before removing or force remove")
            self._kill_and_wait(state["Pid"], (container.attrs.get("Dockyard") or {}).get("PidStartTime"))
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
        self._sweep()

    def _kill_and_wait(self, pid: int, start_time, timeout: float = 10.0) -> None:
        if not pid or process_start_time(pid) != start_time:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while process_start_time(pid) == start_time:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            except ChildProcessError:
                pass
            if time.monotonic() > deadline:
                raise EngineError(f"process {pid} did not die after SIGKILL")
            time.sleep(0.005)

    def _sweep(self) -> None:
        """Finish removals that an earlier, interrupted process started."""
        for entry in os.listdir(self.layout.containers):
            if entry.startswith(".removing-"):
                try:
                    self._engine.snapshots.remove_path(self.layout.containers / entry)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise

"""``docker exec``: run another process inside a running container.

A container is a set of namespaces (and a cgroup) that its first process
was born in. A second process gets into the same place by *joining* them:
``setns(2)`` on the files ``/proc/<pid>/ns/*`` of a process already inside
(the container's PID 1). ``nsenter --target PID --mount --uts --ipc --net
--pid --fork`` does it from a shell; this module does it with the spawn
machinery of ``docker run`` (runtime/plan.py, ``_native/spawn.pyx`` and its
twin runtime/spawn.py), so the plan can be printed and the child side is C
only, like any container start.

The dance, as built (runc's ``libcontainer/nsenter/nsexec.c`` is the
reference: read its comments about stage-0/1/2)::

    engine (this process)                      child, clone(flags 0)           grandchild
    -------------------------------------      ----------------------------    ---------------------------
    open /proc/<init>/ns/{ipc,uts,net,pid,mnt}
      (all of them, *before* anyone enters one)
    PR_SET_CHILD_SUBREAPER on
    spawn the plan ------------------------->  wait for the engine
    join the child to the container's cgroup
    release it ----------------------------->  setns ipc, uts, net, pid, mnt
                                               (cwd and root are now the
                                               container's; pid: only for
                                               its children)
                                               fork --------------------------> (in the container's PID
    read (REPORT_PID, pid) <-----------------  report the grandchild's PID      namespace and cgroup)
                                               and exit                        chdir, rlimits, bounding set,
    reap the child; the grandchild, orphaned,                                  user, capabilities, [tty]
      is now ours (we are its subreaper)                                       execve the command
    PR_SET_CHILD_SUBREAPER off                                                   (the error pipe closes: it runs)
    read end-of-file: the command runs
    waitpid(grandchild) -> the exit status

Why the extra fork: ``setns(CLONE_NEWPID)`` does not move the caller (its
PID cannot change), only the children it makes afterwards
(pid_namespaces(7)). Why the subreaper: a process can only wait for its own
children; when the child exits, the kernel gives its orphan to the nearest
ancestor marked PR_SET_CHILD_SUBREAPER (prctl(2)) instead of init. The mark
is switched off again at once: left on, this process would also adopt the
container monitors that ``docker run`` double-forks on purpose so that they
are *nobody's* children (runtime/launcher.py). (runc avoids the adoption by
forking with CLONE_PARENT; containerd's shim is a subreaper for good.)

The grandchild gets the container's own security profile (runtime/profile.py):
its capability bounding set and capabilities (all the engine has with
``--privileged``), its ``--ulimit``\\ s, its user (or ``-u``) and working
directory (or ``-w``, entered after joining the mount namespace, so it is
the container's), the container's environment plus ``-e``, and its PATH to
find the command. It is *not* the container's PID 1, so signals sent to the
container (``stop``, ``kill``) do not reach it -- but when PID 1 dies the
kernel kills every process of the namespace, exec'd ones included.

What docker does differently (see also :func:`exec_run`):

- docker's daemon owns the process and relays its stdio over the API; here
  a foreground ``exec`` without ``-t`` gives the process *our* 0, 1 and 2, as
  a shell would, and ``-t`` relays between our terminal and a pseudo-
  terminal of the container's own ``/dev/pts``;
- an ``exec -d`` process is given to init (the host's) right away: no
  dockyard process waits for it, so there is no ``exec_die`` event for it;
- there is no exec record (``docker exec inspect``) yet.
"""

from __future__ import annotations

import errno
import os
import selectors
import shlex
import signal
import stat
import struct
from collections import namedtuple
from contextlib import contextmanager

from .. import _native
from ..errors import CommandNotExecutable, CommandNotFound, Conflict, EngineError, UsageError
from . import plan as P
from . import process
from .attach import _write_all, set_size
from .container import merge_env, process_start_time, runtime_env
from .profile import container_capabilities, last_cap, own_capabilities
from .user import ExecUser

#: docker-py's result of ``container.exec_run()``.
ExecResult = namedtuple("ExecResult", "exit_code,output")

# The namespaces an exec joins, in nsenter(1)'s order; cgroup only when the
# container has its own (it has not, today: runtime/cgroups.py).
JOIN_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt")

# <asm-generic/ioctls.h> (x86_64 and aarch64); Python's termios lacks them.
TIOCGPTN = 0x80045430       # the number N of the pty: /dev/pts/N
TIOCSPTLCK = 0x40045431     # unlock the slave (unlockpt(3))
TIOCGPTPEER = 0x5441        # open the slave from the master, no path lookup (Linux 4.13)
PTMX_DEVICE = (5, 2)        # major, minor of /dev/ptmx (devices.txt)
DEFAULT_TTY_SIZE = (24, 80)

_compiled_spawn = _native.load("spawn")


def child_subreaper(on: int) -> int:
    """PR_SET_CHILD_SUBREAPER; the previous setting (the compiled core's, or its twin)."""
    if _compiled_spawn is not None:
        return _compiled_spawn.child_subreaper(on)
    from .spawn import child_subreaper as twin
    return twin(on)


# -- the container's PID 1 and its namespaces ------------------------------------


def check_running(container, *, paused_ok: bool = False) -> None:
    """Refuse a container that has no running process, with dockerd's messages
    (a paused one too, for exec: its new process would be frozen at once)."""
    state = container.attrs["State"]
    if state.get("Status") == "restarting" or state.get("Restarting"):
        raise Conflict(f"Container {container.id} is restarting, wait until the container is running")
    if not state.get("Running"):
        raise Conflict(f"container {container.id} is not running")
    if not paused_ok and (state.get("Paused") or state.get("Status") == "paused"):
        raise Conflict(f"Container {container.id} is paused, unpause the container before exec")


def _ns_id(path: str) -> str | None:
    """``pid:[4026532301]``: which namespace a /proc/<pid>/ns file is (None if gone)."""
    try:
        return os.readlink(path)
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def init_pid(container, *, paused_ok: bool = False) -> int:
    """The host PID of the container's PID 1.

    That is ``State.Pid``, checked against its recorded start time (PIDs are
    reused). With the Python twin spawner, ``State.Pid`` is the twin's middle
    process, which made the PID namespace but is not in it (its
    ``ns/pid_for_children`` differs from its ``ns/pid``): PID 1 is its child.
    Raises Conflict when the container does not run (or is paused, unless
    ``paused_ok``).
    """
    check_running(container, paused_ok=paused_ok)
    state, extra = container.attrs["State"], container.attrs.get("Dockyard") or {}
    pid = state.get("Pid") or 0
    if not pid or process_start_time(pid) != extra.get("PidStartTime"):
        raise Conflict(f"container {container.id} is not running")
    own, for_children = _ns_id(f"/proc/{pid}/ns/pid"), _ns_id(f"/proc/{pid}/ns/pid_for_children")
    if own is None or for_children is None:
        raise Conflict(f"container {container.id} is not running")
    if own == for_children:
        return pid
    for child in _children(pid):
        if _ns_id(f"/proc/{child}/ns/pid") == for_children:
            return child
    raise Conflict(f"container {container.id} is not running")


class Namespaces:
    """Descriptors of the container's namespace files, opened before any is entered.

    ``/proc/<pid>`` is opened first and checked to still be that process
    (its start time): every ``ns/*`` file is then opened *relative to that
    directory*, so a PID reused meanwhile cannot slip another process's
    namespaces in (the directory of a dead process stays dead). Namespaces
    this process is in already are left out, as ``nsenter --all`` does.
    Use as a context manager; the child gets its own copies of the
    descriptors when spawned, so they can be closed right after.
    """

    def __init__(self, pid: int, start_time: int | None = None):
        self.pid = pid
        self.steps: list[P.SetNamespace] = []
        self._fds: list[int] = []
        directory = os.open(f"/proc/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if start_time is not None and self._start_time(directory) != start_time:
                raise ProcessLookupError(errno.ESRCH, f"process {pid} is gone")
            for kind in JOIN_ORDER:
                name = f"ns/{kind}"
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)
                except FileNotFoundError:
                    if kind == "cgroup":
                        continue    # a kernel without cgroup namespaces
                    raise
                self._fds.append(fd)
                if self._same_as_ours(fd, kind):
                    continue
                self.steps.append(P.SetNamespace(kind, f"/proc/{pid}/{name}", fd))
        except BaseException:
            self.close()
            raise
        finally:
            os.close(directory)

    @staticmethod
    def _start_time(directory: int) -> int | None:
        try:
            fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[19])

    @staticmethod
    def _same_as_ours(fd: int, kind: str) -> bool:
        theirs, ours = os.fstat(fd), os.stat(f"/proc/self/ns/{kind}")
        return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)

    def close(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def described_namespaces(pid: int | str = "PID") -> list[P.SetNamespace]:
    """The steps for printing only (no descriptor opened: fd -1)."""
    return [P.SetNamespace(kind, f"/proc/{pid}/ns/{kind}") for kind in JOIN_ORDER if kind != "cgroup"]


# -- the plan ---------------------------------------------------------------------


def resolve_exec_user(container, spec: str | None) -> ExecUser:
    """``-u`` (or the container's ``Config.User``) looked up in the container's
    own /etc/passwd and /etc/group, as for ``run`` (runtime/user.py)."""
    from .user import RootView, resolve_user

    spec = spec or container.attrs["Config"].get("User") or ""
    overlay = container._engine.snapshots.overlay(container.image, container.id)
    return resolve_user(RootView.of(overlay), spec)


def build_exec_plan(config: dict, host_config: dict, argv, *, env=(), user: ExecUser | None = None,
                    workdir: str | None = None, tty: bool = False, privileged: bool = False,
                    detach: bool = False, namespaces=None, available_caps: set[int] | None = None,
                    title: str = "") -> P.Plan:
    """The plan of an exec, from the container's ``Config`` and ``HostConfig``.

    ``namespaces``: the :class:`~engine.runtime.plan.SetNamespace` steps
    (``Namespaces(pid).steps``; :func:`described_namespaces` to print only).
    ``env``: the exec's ``-e`` entries, on top of the container's
    environment. ``user`` is already resolved (root when None); ``workdir``
    defaults to the container's. Raises UsageError for a relative
    ``workdir``, and the capability errors of ``run``.
    """
    user = user or ExecUser(0, 0, (0,), "/root")
    workdir = workdir or config.get("WorkingDir") or "/"
    if not workdir.startswith("/"):
        raise UsageError(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    argv = list(argv)
    if not argv:
        raise UsageError("No exec command specified")
    hc = dict(host_config or {})
    if privileged:
        hc["Privileged"] = True
    caps = container_capabilities(hc, available_caps)
    environment = merge_env(runtime_env({**config, "Tty": bool(tty)}, home=user.home), env)

    plan = P.Plan(namespaces=(), title=title)
    plan.add(P.WaitForEngine(), "the engine puts us in the container's cgroup meanwhile: "
                                "what we fork inherits it")
    for n, step in enumerate(namespaces if namespaces is not None else described_namespaces()):
        plan.add(step, "join the container's namespaces, each from a descriptor the engine opened "
                       "before any was entered" if n == 0 else "")
    plan.add(P.ForkIntoPidNamespace(),
             "setns(CLONE_NEWPID) applies to our children only: fork; we report the child's PID "
             "and exit, and the engine (a child subreaper) adopts it")
    if detach:
        plan.add(P.NewSession(), "-d: a session of its own, away from dockyard's terminal")
    plan.add(P.ChangeDir(workdir), "-w, else the container's working directory (inside its root: "
                                   "the mount namespace set our root)")
    for ulimit in hc.get("Ulimits") or []:
        plan.add(P.SetRlimit(ulimit["Name"], int(ulimit["Soft"]), int(ulimit["Hard"])),
                 f"the container's --ulimit {ulimit['Name']}")
    plan.add(P.DropBoundingSet(caps, last_cap()),
             "--privileged: every capability dockyard has" if privileged else
             "the container's capability ceiling")
    plan.add(P.SetUser(user.uid, user.gid, user.groups), "-u, else the container's user")
    plan.add(P.SetCapabilities(caps if user.uid == 0 else ()),
             "the container's capabilities" if user.uid == 0 else "a non-root user keeps none")
    if tty:
        plan.add(P.SetsidCtty(), "-t: the pty becomes the controlling terminal of a new session")
    plan.exec = P.Exec(tuple(argv), tuple(environment))
    return plan


def exec_plan(container, argv, env=(), user: str | ExecUser | None = None, workdir: str | None = None,
              tty: bool = False, *, privileged: bool = False, detach: bool = False,
              namespaces=None) -> P.Plan:
    """The plan of ``exec`` in ``container`` (see :func:`build_exec_plan`).

    ``user`` is a ``-u`` spec (resolved in the container's passwd; its
    ``Config.User`` when empty) or an ExecUser. Without ``namespaces`` the
    steps name the files of the container's PID 1 but hold no descriptor:
    such a plan is for printing.
    """
    if not isinstance(user, ExecUser):
        user = resolve_exec_user(container, user)
    if namespaces is None:
        try:
            namespaces = described_namespaces(init_pid(container, paused_ok=True))
        except Conflict:
            namespaces = described_namespaces()
    title = f"# exec in container {container.short_id} ({container.name})"
    if container.attrs["HostConfig"].get("Links"):
        # docker exec sees the --link variables too: they are the container's environment.
        from ..network.sandbox import link_env
        env = merge_env(link_env(container._engine, container), list(env))
    return build_exec_plan(container.attrs["Config"], container.attrs["HostConfig"], argv, env=env,
                           user=user, workdir=workdir, tty=tty, privileged=privileged, detach=detach,
                           namespaces=namespaces, available_caps=own_capabilities(), title=title)


# -- spawning -----------------------------------------------------------------------


class ExecProcess(process.ContainerProcess):
    """The spawned child (``pid``) and, once it reported it, the command's
    process (``exec_pid``). See the module docstring for the dance."""

    exec_pid: int | None = None

    def wait_started(self) -> None:
        """Release the child; return once the command runs, or raise what failed.

        Reads the error pipe to its end: ``(REPORT_PID, pid)`` from the
        child and, from the command's process, nothing (execve closed the
        pipe) or ``(step, errno)``. The two writers race: a command that
        fails at once can report before the child has sent its PID, so read
        on to the end whatever came first -- without the PID we could not
        reap the failed process, and a zombie left in the container's PID
        namespace keeps its PID 1 from ever finishing its exit
        (zap_pid_ns_processes waits for every task of the namespace to be
        reaped), so the container could not be stopped.
        The child is reaped here, so its orphan is ours from now on.
        """
        self.release()
        failure = None
        try:
            while True:
                message = self._read_message()
                if message is None:
                    break
                stage, value = message
                if stage == P.REPORT_PID:
                    self.exec_pid = value
                elif failure is None:
                    failure = self._error(stage, value)
        finally:
            os.close(self._error_fd)
            self._error_fd = -1
            self.wait()     # the child: it exits right after the fork (or its failure)
        if failure is not None:
            self.reap_exec()
            raise failure
        if self.exec_pid is None:
            raise EngineError("exec: the process did not report the PID of the command "
                              f"(it exited with status {self.status})")

    def reap_exec(self) -> int | None:
        """Wait for the command's process; its status as the shell reports it
        (None if it is not our child: ``-d``)."""
        if self.exec_pid is None:
            return None
        while True:
            try:
                _, status = os.waitpid(self.exec_pid, 0)
                return process.exit_status(status)
            except InterruptedError:
                continue
            except ChildProcessError:
                return None


def spawn(plan: P.Plan, stdio, cgroup=None, *, detach: bool = False) -> ExecProcess:
    """Run the dance of the module docstring; returns once the command runs.

    ``cgroup``: the container's (runtime/cgroups.py), joined before the
    child is released. ``detach``: do not adopt the command's process (it
    goes to init).
    """
    previous = None if detach else child_subreaper(1)
    try:
        child = ExecProcess.start(plan, stdio)
        try:
            if cgroup is not None and cgroup.exists():
                cgroup.join(child.pid)
        except BaseException:
            child.kill(signal.SIGKILL)
            child.wait()
            child.close()
            raise
        child.wait_started()
        return child
    finally:
        if previous == 0:
            child_subreaper(0)


def open_pty(pid: int, user: ExecUser | None = None) -> tuple[int, int]:
    """A pseudo-terminal of the *container's* devpts: (master, slave).

    Allocated from ``/dev/pts/ptmx`` as the container sees it (through
    ``/proc/<pid>/root``, one component at a time without following a
    symlink the container could have planted), so inside, ``tty`` prints
    ``/dev/pts/N`` and that file exists. The slave is opened from the master
    (TIOCGPTPEER), never by name, and given to the exec's user, as runc does
    with the stdio it passes.
    """
    from .spawn import open_in_root

    where = open_in_root(f"/proc/{pid}/root".encode(), b"/dev/pts/ptmx", 0)
    try:
        st = os.fstat(where)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != PTMX_DEVICE:
            raise EngineError("the container's /dev/pts/ptmx is not the pty multiplexer")
        master = os.open(f"/proc/self/fd/{where}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(where)
    try:
        import fcntl

        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        if user is not None and (user.uid, user.gid) != (0, 0):
            os.fchown(slave, user.uid, user.gid)
    except BaseException:
        os.close(master)
        raise
    return master, slave


# -- one exec, from start to exit -----------------------------------------------------


def _event(container, action: str, **attributes) -> None:
    """Append to the event log when runtime/events.py is there (quietly skipped if not)."""
    try:
        from . import events
        append = events.container_event
    except (ImportError, AttributeError):
        return
    try:
        append(container, action, **attributes)
    except OSError:
        pass


class Exec:
    """One started exec (see :func:`start`): ``id``, ``pid`` (on the host),
    ``master`` (the pty's master with ``tty``), :meth:`wait`."""

    def __init__(self, container, exec_id: str, argv: list[str], child: ExecProcess, master: int | None,
                 detached: bool):
        self.container = container
        self.id = exec_id
        self.argv = argv
        self.pid = child.exec_pid
        self.master = master
        self.detached = detached
        self.exit_code: int | None = None
        self._child = child

    def wait(self) -> int | None:
        """Wait for the command (not with ``detach``: None); records ``exec_die``."""
        if self.exit_code is None and not self.detached:
            self.exit_code = self._child.reap_exec()
            if self.exit_code is not None:
                _event(self.container, "exec_die", execID=self.id, exitCode=self.exit_code)
        return self.exit_code

    def close(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None


def command_line(cmd) -> list[str]:
    """docker-py's rule: a string command is split as a shell would."""
    return shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]


def start(container, cmd, *, stdio=(-1, -1, -1), environment=None, user: str = "",
          workdir: str | None = None, tty: bool = False, tty_size=None, privileged: bool = False,
          detach: bool = False) -> Exec:
    """Start ``cmd`` in the running ``container``; returns once it runs.

    ``stdio``: the command's 0, 1, 2 (-1: ours); with ``tty`` they are a
    new pty of the container's (the master is ``Exec.master``, sized
    ``tty_size`` = (rows, cols)). Raises Conflict when the container does
    not run, UserNotFound for an unknown ``-u``, CommandNotFound (127) /
    CommandNotExecutable (126) when the command cannot be run.
    """
    from .launcher import cgroup_of

    argv = command_line(cmd)
    if not argv:
        raise UsageError("No exec command specified")
    container.reload()
    pid = init_pid(container)
    exec_id = os.urandom(32).hex()
    words = " ".join(argv)
    _event(container, f"exec_create: {words}", execID=exec_id)
    exec_user = resolve_exec_user(container, user)
    master = None
    # The recorded start time pins State.Pid (the twin spawner's PID 1, its
    # child, was found through it and checked by its namespace instead).
    recorded = (container.attrs.get("Dockyard") or {}).get("PidStartTime")
    with Namespaces(pid, recorded if pid == container.attrs["State"]["Pid"] else None) as ns:
        plan = exec_plan(container, argv, env=merge_env([], environment), user=exec_user,
                         workdir=workdir, tty=tty, privileged=privileged, detach=detach,
                         namespaces=ns.steps)
        slave = None
        if tty:
            master, slave = open_pty(pid, exec_user)
            set_size(master, *(tty_size if tty_size and all(tty_size) else DEFAULT_TTY_SIZE))
            stdio = (slave, slave, slave)
        try:
            child = spawn(plan, stdio, cgroup_of(container), detach=detach)
        except BaseException:
            if master is not None:
                os.close(master)
            raise
        finally:
            if slave is not None:
                os.close(slave)     # the command has it: the master sees EOF when it is gone
    _event(container, f"exec_start: {words}", execID=exec_id)
    return Exec(container, exec_id, argv, child, master, detach)


def _devnull() -> int:
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def exec_run(engine, container, cmd, stdout: bool = True, stderr: bool = True, stdin: bool = False,
             tty: bool = False, privileged: bool = False, user: str = "", detach: bool = False,
             stream: bool = False, socket: bool = False, environment=None, workdir: str | None = None,
             demux: bool = False) -> ExecResult:
    """Run a command in a running container: docker-py's ``container.exec_run()``.

    Returns ``ExecResult(exit_code, output)``:

    - ``output`` is the command's stdout and/or stderr (``stdout``,
      ``stderr``) as bytes, interleaved as they came; with ``demux`` a
      tuple ``(stdout, stderr)``; with ``tty`` everything comes through
      the terminal (one stream, ``\\r\\n`` line ends, as with docker);
    - ``stream=True``: ``output`` is a generator of chunks and ``exit_code``
      is None (consume the generator to the end: it reaps the process);
    - ``detach=True``: ``ExecResult(None, b"")`` at once; the process runs on;
    - ``stdin=True``: the command reads this process's stdin (without
      ``tty``; there is no socket: ``socket=True`` is not supported);
    - ``user``, ``workdir``, ``environment`` (a list of ``KEY=value`` or a
      dict), ``privileged``: as ``dockyard exec -u -w -e --privileged``.

    A command that cannot be found or executed gives exit code 127 or 126
    and the reason as output, as docker does. A container that is not
    running raises :class:`~engine.errors.Conflict`.
    """
    del engine  # the container knows its engine; kept for the API's shape
    if socket:
        raise UsageError("exec_run(socket=True) is not supported")
    opened: list[int] = []

    def closing(fd: int) -> int:
        opened.append(fd)
        return fd

    try:
        if detach:
            null = closing(_devnull())
            start(container, cmd, stdio=(null, null, null), environment=environment, user=user,
                  workdir=workdir, privileged=privileged, detach=True, tty=False)
            return ExecResult(None, b"")
        stdin_fd = 0 if stdin else closing(_devnull())
        pipes = {}
        if tty:
            stdio = (-1, -1, -1)
        else:
            fds = []
            for number, wanted in ((1, stdout), (2, stderr)):
                if wanted:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    pipes[r] = number
                    closing(w)
                    fds.append(w)
                else:
                    fds.append(closing(_devnull()))
            stdio = (stdin_fd, *fds)
        try:
            ex = start(container, cmd, stdio=stdio, environment=environment, user=user,
                       workdir=workdir, privileged=privileged, tty=tty)
        except BaseException as e:
            for r in pipes:
                os.close(r)
            if not isinstance(e, (CommandNotFound, CommandNotExecutable)):
                raise
            text = (str(e) + "\n").encode()
            return ExecResult(e.exit_code, (text, None) if demux else text)
    finally:
        for fd in opened:
            os.close(fd)
    if tty:
        pipes = {ex.master: 1}
    chunks = _read_output(ex, pipes, demux)
    if stream:
        return ExecResult(None, chunks)
    out, err = [], []
    for chunk in chunks:
        if demux:
            if chunk[0] is not None:
                out.append(chunk[0])
            if chunk[1] is not None:
                err.append(chunk[1])
        else:
            out.append(chunk)
    if demux:
        return ExecResult(ex.exit_code, (b"".join(out) if stdout else None,
                                         b"".join(err) if stderr and not tty else None))
    return ExecResult(ex.exit_code, b"".join(out))


def _read_output(ex: Exec, pipes: dict[int, int], demux: bool):
    """Yield the output until every stream ends, then reap the command."""
    sel = selectors.DefaultSelector()
    try:
        for fd in pipes:
            sel.register(fd, selectors.EVENT_READ)
        open_fds = set(pipes)
        while open_fds:
            for key, _ in sel.select():
                fd = key.fd
                try:
                    data = os.read(fd, 65536)
                except OSError as e:
                    if e.errno != errno.EIO:    # EIO: a pty master whose slave is closed
                        raise
                    data = b""
                if not data:
                    sel.unregister(fd)
                    open_fds.discard(fd)
                    continue
                if demux:
                    yield (data, None) if pipes[fd] == 1 else (None, data)
                else:
                    yield data
    finally:
        sel.close()
        for fd in pipes:
            if fd != ex.master:
                os.close(fd)
        ex.close()
        ex.wait()


# -- the terminal side of `dockyard exec -t` ---------------------------------------------


def relay_terminal(ex: Exec, *, stdin_fd: int | None, stdout_fd: int = 1) -> int | None:
    """Be the terminal of an exec started with ``tty``: copy our stdin (when
    given) to its pty and its output to ``stdout_fd`` until the last holder
    of the pty's slave is gone; returns the exit status.

    Our terminal is in raw mode meanwhile (every key, ^C included, goes to
    the container's terminal, whose line discipline does echo and signals)
    and restored at the end; its size is copied to the pty at the start
    and on every SIGWINCH.
    """
    from .attach import raw_terminal, terminal_size

    master = ex.master
    size_from = stdin_fd if stdin_fd is not None else stdout_fd

    def on_winch(_sig=None, _frame=None):
        size = terminal_size(size_from)
        if size and all(size):      # 0x0: a terminal that never had a size set
            set_size(master, *size)

    on_winch()
    previous = signal.signal(signal.SIGWINCH, on_winch)
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ)
    if stdin_fd is not None:
        sel.register(stdin_fd, selectors.EVENT_READ)
    try:
        with raw_terminal(stdin_fd):
            done = False
            while not done:
                for key, _ in sel.select():
                    if key.fd == master:
                        try:
                            data = os.read(master, 65536)
                        except OSError as e:
                            if e.errno != errno.EIO:
                                raise
                            data = b""
                        if not data:
                            done = True
                            break
                        _write_all(stdout_fd, data)
                    else:
                        data = os.read(stdin_fd, 65536)
                        if not data:    # end of our input: nothing more to type
                            sel.unregister(stdin_fd)
                            continue
                        _write_all(master, data)
    finally:
        sel.close()
        signal.signal(signal.SIGWINCH, previous)
        ex.close()
    return ex.wait()


@contextmanager
def ignoring_terminal_signals():
    """While a foreground command shares our terminal, ^C and ^\\ are its
    business: ignore them here, as system(3) and shells do for a job."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

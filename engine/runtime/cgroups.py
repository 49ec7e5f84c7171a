"""Control groups: limit and account a container's memory, CPU and processes.

A cgroup is a directory in a special filesystem. Making the directory
creates the group; writing a number into one of its files sets a limit;
writing a PID into ``cgroup.procs`` moves that process (and its future
children) into the group; ``rmdir`` removes it once it is empty. There is
no system call to learn: everything below is ``mkdir``, ``echo N > file``,
``cat file`` and ``rmdir``.

Two versions of that filesystem exist, and Dockyard drives both:

- **cgroup v1** (Documentation/admin-guide/cgroup-v1/): one hierarchy *per
  controller*, each mounted on its own directory (``/sys/fs/cgroup/memory``,
  ``/sys/fs/cgroup/cpu``...). A container therefore has one directory in
  each hierarchy, and a process must be written into every one of them.
  Some controllers may share a mount (``cpu,cpuacct``), so the mount
  points are read from ``/proc/self/mountinfo``, never guessed.
- **cgroup v2** (Documentation/admin-guide/cgroup-v2.rst): one unified
  hierarchy. A container has exactly one directory; a parent must list a
  controller in its ``cgroup.subtree_control`` before its children get that
  controller's files.

A *hybrid* host (v1 controllers plus an empty v2 hierarchy at
``/sys/fs/cgroup/unified``, as systemd sets up in "hybrid" mode) counts as
v1 here: that is where the controllers live.

Like the rest of the runtime this module *describes, then does*:
:meth:`Cgroup.plan` returns the writes as data (:class:`Write`, printable
as the shell command you would type) and :func:`perform` is the one place
that writes to the kernel. So ``--explain`` and the unit tests read exactly
what ``create()`` does, without root.

Docker's directory layout with its ``cgroupfs`` driver is copied:
``<hierarchy>/docker/<id>``; ours is ``<hierarchy>/dockyard/<id>``.

Known gaps (on purpose, for now):

- No cgroup namespace: a process in the container that reads
  ``/proc/self/cgroup`` sees the host path ``/dockyard/<id>``.
- No device controller rules. Docker's device allow-list (null, zero,
  full, random, urandom, tty, console, ptmx, pts, mknod) is a file of
  rules on v1 (``devices.allow``/``devices.deny``) but on v2 it is an eBPF
  program attached to the cgroup (BPF_CGROUP_DEVICE), which needs a BPF
  loader; both are left for later.
- On a hybrid host the process is not also placed in the empty v2
  hierarchy nor in the ``name=systemd`` one (runc does both; neither
  carries a limit).
- No systemd driver: Dockyard writes the cgroup filesystem directly, like
  ``dockerd --exec-opt native.cgroupdriver=cgroupfs``.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass, field

from ..errors import EngineError

# v1 controllers a container gets a directory in, in runc's order
# (libcontainer/cgroups/fs/fs.go: cpuset first, because it must be filled
# in before any process can join; freezer last).
CONTROLLERS_V1 = ("cpuset", "memory", "cpu", "cpuacct", "pids", "blkio", "freezer")
# v2 controllers enabled for containers ("freezer" is not a controller on
# v2: every non-root cgroup has cgroup.freeze).
CONTROLLERS_V2 = ("cpuset", "cpu", "io", "memory", "pids")

# The CFS period docker uses for --cpus (moby daemon/oci_linux.go: 100 ms),
# which is also the kernel's default (Documentation/scheduler/sched-bwc.rst).
DEFAULT_CFS_PERIOD_US = 100_000

DEFAULT_ROOT = "/sys/fs/cgroup"
DEFAULT_PARENT = "dockyard"

# How long freeze/thaw and rmdir keep retrying before giving up.
WAIT_SECONDS = 5.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# -- one write, as data --------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """Write ``value`` into the cgroup file ``path/file``: one write(2)."""

    path: str
    file: str
    value: str
    why: str = ""

    @property
    def target(self) -> str:
        return os.path.join(self.path, self.file)

    def shell(self) -> str:
        return f"echo {shlex.quote(self.value)} > {shlex.quote(self.target)}"

    def syscall(self) -> str:
        return f'write(open("{self.target}", O_WRONLY), "{self.value}", {len(self.value.encode())})'


def perform(write: Write) -> None:
    """Do one :class:`Write`. The error names the file and the value.

    One ``write(2)`` on a fresh descriptor, because the kernel parses each
    write to a cgroup file as a whole (a buffered writer could split it).
    """
    try:
        fd = os.open(write.target, os.O_WRONLY)
        try:
            os.write(fd, write.value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        # OSError(errno, ...) comes back as the matching subclass
        # (FileNotFoundError, PermissionError...), now carrying the file name.
        err = OSError(e.errno, e.strerror, write.target)
        err.add_note(f"writing {write.value!r} to {write.target}"
                     + (f" ({write.why})" if write.why else ""))
        raise err from None


def _read(path: str, name: str) -> str:
    with open(os.path.join(path, name)) as f:
        return f.read().strip()


def _procs(path: str) -> str:
    try:
        return " ".join(_read(path, "cgroup.procs").split()) or "none"
    except OSError:
        return "unknown"


def _keyed(text: str) -> dict[str, str]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events...) -> dict."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        out[key] = value.strip()
    return out


# -- where the hierarchies are -------------------------------------------------


@dataclass(frozen=True)
class CgroupLayout:
    """What :meth:`Cgroup.plan` needs to know about the host, and nothing else.

    ``detect()`` fills it in from the running system; tests build one by
    hand to get a plan without touching the system.
    """

    version: str                       # "1", "2" or "none"
    mounts: dict = field(default_factory=dict)  # v1: controller -> mount point; v2: {"unified": path}
    swap: bool = True                  # swap accounting: memsw (v1) / memory.swap.max (v2) exist
    cpuset_cpus: str = ""              # v1: the root cpuset, copied into the parent
    cpuset_mems: str = ""
    controllers: tuple = ()            # v2: what the root's cgroup.controllers offers

    @property
    def unified(self) -> str:
        return self.mounts["unified"]


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (proc(5)).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def cgroup_mounts(mountinfo: str) -> tuple[dict[str, str], list[str]]:
    """Parse /proc/self/mountinfo: ({v1 controller: mount point}, [v2 mount points]).

    A line is ``ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS] - FSTYPE
    SOURCE SUPEROPTIONS`` (proc(5)); for a v1 cgroup mount the super options
    name its controllers, e.g. ``rw,cpu,cpuacct``.
    """
    v1: dict[str, str] = {}
    v2: list[str] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, after = left.split(), right.split()
        if len(fields) < 5 or len(after) < 3:
            continue
        mountpoint, fstype, superopts = _unescape(fields[4]), after[0], after[2]
        if fstype == "cgroup2":
            v2.append(mountpoint)
        elif fstype == "cgroup":
            for option in superopts.split(","):
                if option in CONTROLLERS_V1 and option not in v1:
                    v1[option] = mountpoint
    return v1, v2


def _v2_swap(unified: str) -> bool:
    """Does memory.swap.max exist? It is absent from the root cgroup, so look
    at a child that has the memory controller (e.g. system.slice)."""
    try:
        children = [e.path for e in os.scandir(unified) if e.is_dir()]
    except OSError:
        children = []
    for child in children:
        if os.path.exists(os.path.join(child, "memory.max")):
            return os.path.exists(os.path.join(child, "memory.swap.max"))
    return True  # the kernel default since 5.8 (CONFIG_MEMCG_SWAP, swapaccount=1)


_detected: dict[str, CgroupLayout] = {}


def host_layout(root: str = DEFAULT_ROOT) -> CgroupLayout:
    """:func:`detect`, once per process: every start and every ``ps`` needs
    the layout, and the host's cgroup mounts do not move under a running
    engine (reading mountinfo costs about a third of a millisecond)."""
    if root not in _detected:
        _detected[root] = detect(root)
    return _detected[root]


def detect(root: str = DEFAULT_ROOT) -> CgroupLayout:
    """Find the hierarchies of this host from /proc/self/mountinfo.

    Any v1 controller mount makes the host "1" (so a hybrid host is v1);
    otherwise a cgroup2 mount makes it "2", preferring the one at ``root``.
    """
    with open("/proc/self/mountinfo") as f:
        v1, v2 = cgroup_mounts(f.read())
    if v1:
        memory = v1.get("memory")
        swap = bool(memory) and os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes"))
        cpus = mems = ""
        if "cpuset" in v1:
            cpus, mems = _read(v1["cpuset"], "cpuset.cpus"), _read(v1["cpuset"], "cpuset.mems")
        return CgroupLayout("1", dict(v1), swap=swap, cpuset_cpus=cpus, cpuset_mems=mems)
    if v2:
        unified = root if root in v2 else v2[0]
        try:
            controllers = tuple(_read(unified, "cgroup.controllers").split())
        except OSError:
            controllers = ()
        return CgroupLayout("2", {"unified": unified}, swap=_v2_swap(unified), controllers=controllers)
    return CgroupLayout("none")


def version(root: str = DEFAULT_ROOT) -> str:
    """``"2"``, ``"1"`` (hybrid included) or ``"none"``."""
    return detect(root).version


# -- docker's HostConfig -> kernel values ----------------------------------------


def cpu_weight(shares: int) -> int:
    """--cpu-shares (v1 cpu.shares, 2..262144) -> v2 cpu.weight (1..10000).

    The linear map runc and crun have used since 2020
    (ConvertCPUSharesToCgroupV2Value): ``1 + ((shares - 2) * 9999) // 262142``.
    Note that it maps the v1 default 1024 to 39, not to the v2 default 100;
    runc/crun switched to a curve through (2, 1), (1024, 100), (262144, 10000)
    in 2025 (opencontainers/cgroups#20). Dockyard keeps the formula docker
    users have seen until now.
    """
    return 1 + ((shares - 2) * 9999) // 262142


@dataclass(frozen=True)
class Limits:
    """The HostConfig fields that become cgroup writes, normalised.

    Zero means "not set, leave the kernel's value" (as in docker and runc),
    except ``pids`` which is always written ("max" = no limit).
    """

    memory: int = 0      # bytes
    memory_swap: int = 0  # memory + swap, bytes; -1 unlimited (docker's MemorySwap)
    shares: int = 0
    period: int = 0      # µs
    quota: int = 0       # µs per period; -1 unlimited
    cpuset_cpus: str = ""
    pids: str = "max"

    @classmethod
    def from_host_config(cls, hc: dict) -> Limits:
        memory = int(hc.get("Memory") or 0)
        swap = int(hc.get("MemorySwap") or 0)
        if memory > 0 and swap == 0:
            # moby daemon/daemon_unix.go (adaptContainerSettings): "By
            # default, MemorySwap is set to twice the size of Memory."
            swap = 2 * memory
        period, quota = int(hc.get("CpuPeriod") or 0), int(hc.get("CpuQuota") or 0)
        nano = int(hc.get("NanoCpus") or 0)
        if nano:
            # --cpus: a quota of NanoCpus/1e9 CPUs in every 100 ms period
            # (moby daemon/oci_linux.go).
            period = DEFAULT_CFS_PERIOD_US
            quota = nano * period // 1_000_000_000
        pids = hc.get("PidsLimit")
        return cls(memory=memory, memory_swap=swap if memory else 0,
                   shares=int(hc.get("CpuShares") or 0), period=period, quota=quota,
                   cpuset_cpus=hc.get("CpusetCpus") or "",
                   pids="max" if not pids or int(pids) <= 0 else str(int(pids)))


# -- one container's cgroup ----------------------------------------------------


class Cgroup:
    """The cgroup directories of one container (one per v1 hierarchy, or one on v2).

    Creating the object touches nothing; the layout of the host is detected
    on first use unless one is given (``layout=``, for tests and plans).
    """

    def __init__(self, container_id: str, *, root: str = DEFAULT_ROOT,
                 parent: str = DEFAULT_PARENT, layout: CgroupLayout | None = None):
        if not _NAME.fullmatch(container_id):
            raise ValueError(f"not a usable cgroup name: {container_id!r}")
        if not parent or not all(_NAME.fullmatch(part) for part in parent.split("/")):
            raise ValueError(f"not a usable cgroup parent: {parent!r}")
        self.container_id = container_id
        self.root = root
        self.parent = parent
        self._layout = layout

    def __repr__(self) -> str:
        return f"Cgroup({self.container_id!r}, parent={self.parent!r})"

    @property
    def layout(self) -> CgroupLayout:
        if self._layout is None:
            self._layout = host_layout(self.root)
        return self._layout

    @property
    def version(self) -> str:
        return self.layout.version

    # -- paths --

    def _mount(self, controller: str) -> str | None:
        if self.version == "2":
            return self.layout.unified
        return self.layout.mounts.get(controller)

    def dir(self, controller: str = "memory") -> str | None:
        """This container's directory in ``controller``'s hierarchy, or None
        when that controller is not mounted. On v2 there is one directory
        whatever the controller."""
        mount = self._mount(controller)
        return os.path.join(mount, self.parent, self.container_id) if mount else None

    @property
    def dirs(self) -> list[str]:
        """Every directory of this cgroup, each once (co-mounted controllers share one)."""
        if self.version == "2":
            return [self.dir()]
        found = [self.dir(c) for c in CONTROLLERS_V1 if c in self.layout.mounts]
        return list(dict.fromkeys(found))

    def _parents(self, mount: str) -> list[str]:
        """The directories between a hierarchy's root and the container: dockyard[/...]."""
        out, path = [], mount
        for part in self.parent.split("/"):
            path = os.path.join(path, part)
            out.append(path)
        return out

    def directories(self) -> list[str]:
        """What ``create()`` makes, parents first."""
        if self.version == "none":
            return []
        mounts = [self.layout.unified] if self.version == "2" else \
            list(dict.fromkeys(self.layout.mounts[c] for c in CONTROLLERS_V1 if c in self.layout.mounts))
        out = []
        for mount in mounts:
            out += self._parents(mount) + [os.path.join(mount, self.parent, self.container_id)]
        return out

    # -- the plan --

    def plan(self, host_config: dict) -> list[Write]:
        """The writes that give this cgroup the limits of ``host_config``, in order."""
        limits = Limits.from_host_config(host_config or {})
        if self.version == "1":
            return self._plan_v1(limits)
        if self.version == "2":
            return self._plan_v2(limits)
        if limits != Limits():
            raise EngineError("resource limits need cgroups, and this host has none mounted")
        return []

    def _missing(self, controller: str, flag: str) -> EngineError:
        return EngineError(f"{flag} needs the {controller} cgroup controller, "
                           f"which this host does not provide (cgroup v{self.version})")

    def _plan_v1(self, lim: Limits) -> list[Write]:
        L, w = self.layout, []

        cpuset = self.dir("cpuset")
        if cpuset:
            # cgroup-v1/cpusets.rst: a new cpuset starts with empty cpus and
            # mems, and attaching a process to an empty cpuset fails (ENOSPC),
            # so fill in the parent first (from the root), then the container.
            for path in self._parents(L.mounts["cpuset"]):
                w.append(Write(path, "cpuset.cpus", L.cpuset_cpus, "a new cpuset is empty: copy the root's CPUs"))
                w.append(Write(path, "cpuset.mems", L.cpuset_mems, "and its memory nodes"))
            w.append(Write(cpuset, "cpuset.cpus", lim.cpuset_cpus or L.cpuset_cpus,
                           "--cpuset-cpus" if lim.cpuset_cpus else "all the parent's CPUs"))
            w.append(Write(cpuset, "cpuset.mems", L.cpuset_mems, "all the parent's memory nodes"))
        elif lim.cpuset_cpus:
            raise self._missing("cpuset", "--cpuset-cpus")

        memory = self.dir("memory")
        if lim.memory and not memory:
            raise self._missing("memory", "--memory")
        if lim.memory:
            # cgroup-v1/memory.rst: limit_in_bytes caps RAM; memsw caps RAM +
            # swap and must be >= limit_in_bytes (both start unlimited, so
            # on a new cgroup the order limit-then-memsw always works).
            w.append(Write(memory, "memory.limit_in_bytes", str(lim.memory), "--memory"))
            if L.swap:
                w.append(Write(memory, "memory.memsw.limit_in_bytes", str(lim.memory_swap),
                               "--memory-swap: memory + swap (-1 = unlimited; docker's default 2 x --memory)"))

        cpu = self.dir("cpu")
        if (lim.shares or lim.period or lim.quota) and not cpu:
            raise self._missing("cpu", "--cpus/--cpu-shares")
        if lim.shares:
            w.append(Write(cpu, "cpu.shares", str(lim.shares), "--cpu-shares: relative weight (default 1024)"))
        if lim.period:
            w.append(Write(cpu, "cpu.cfs_period_us", str(lim.period), "CFS bandwidth period, µs (sched-bwc.rst)"))
        if lim.quota:
            w.append(Write(cpu, "cpu.cfs_quota_us", str(lim.quota),
                           "CPU time allowed per period, µs (-1 = unlimited)"))

        pids = self.dir("pids")
        if pids:
            w.append(Write(pids, "pids.max", lim.pids, "--pids-limit: fork() fails with EAGAIN beyond it"))
        elif lim.pids != "max":
            raise self._missing("pids", "--pids-limit")
        return w

    def _plan_v2(self, lim: Limits) -> list[Write]:
        L, d, w = self.layout, self.dir(), []

        wanted = {"cpuset": bool(lim.cpuset_cpus), "cpu": bool(lim.shares or lim.period or lim.quota),
                  "memory": bool(lim.memory), "pids": lim.pids != "max"}
        for controller, needed in wanted.items():
            if needed and controller not in L.controllers:
                raise self._missing(controller, {"cpuset": "--cpuset-cpus", "cpu": "--cpus/--cpu-shares",
                                                 "memory": "--memory", "pids": "--pids-limit"}[controller])

        # cgroup-v2.rst "Controlling Controllers": a child only gets a
        # controller's files if every ancestor enables it in subtree_control.
        enable = " ".join("+" + c for c in CONTROLLERS_V2 if c in L.controllers)
        if enable:
            for path in [L.unified] + self._parents(L.unified):
                w.append(Write(path, "cgroup.subtree_control", enable, "give the children these controllers"))

        # runc's order (libcontainer/cgroups/fs2/fs2.go Set): pids, memory, io, cpu, cpuset.
        if "pids" in L.controllers:
            w.append(Write(d, "pids.max", lim.pids, "--pids-limit: fork() fails with EAGAIN beyond it"))
        if lim.memory:
            if L.swap:
                # v2 limits swap on its own (not memory + swap as v1 does).
                swap = "max" if lim.memory_swap == -1 else str(lim.memory_swap - lim.memory)
                w.append(Write(d, "memory.swap.max", swap, "--memory-swap minus --memory"))
            w.append(Write(d, "memory.max", str(lim.memory), "--memory: above it, reclaim, then the OOM killer"))
        if lim.shares:
            w.append(Write(d, "cpu.weight", str(cpu_weight(lim.shares)), "--cpu-shares mapped to 1..10000"))
        if lim.period or lim.quota:
            quota = str(lim.quota) if lim.quota > 0 else "max"
            w.append(Write(d, "cpu.max", f"{quota} {lim.period or DEFAULT_CFS_PERIOD_US}",
                           "\"$MAX $PERIOD\": µs of CPU per period"))
        if lim.cpuset_cpus:
            w.append(Write(d, "cpuset.cpus", lim.cpuset_cpus, "--cpuset-cpus"))
        return w

    # -- doing it --

    def create(self, host_config: dict) -> None:
        """Make the directories and apply the limits (idempotent).

        The parent directories (``dockyard``) go away with their last
        container (:meth:`remove`), so another container's removal may
        take one away between our mkdir of it and of ours: then start over.
        """
        writes = self.plan(host_config)  # refuses impossible limits before touching anything
        for attempt in range(5):
            try:
                for path in self.directories():
                    os.makedirs(path, exist_ok=True)
                for write in writes:
                    perform(write)
                return
            except FileNotFoundError:
                if attempt == 4:
                    raise

    def update(self, host_config: dict) -> None:
        """Apply ``host_config`` (the container's whole HostConfig after the
        change) to a live cgroup: ``docker update``."""
        if not self.exists():
            raise EngineError(f"cgroup of container {self.container_id} does not exist")
        writes = self.plan(host_config)
        if self.version == "1" and self.dir("memory"):
            current = int(_read(self.dir("memory"), "memory.limit_in_bytes"))
            writes = order_memory_writes(writes, current)
        for write in writes:
            perform(write)

    def join(self, pid: int) -> None:
        """Move process ``pid`` into this cgroup, in every hierarchy."""
        for path in self.dirs:
            write = Write(path, "cgroup.procs", str(pid))
            for attempt in range(5):
                try:
                    perform(write)
                    break
                except OSError as e:
                    # EINVAL can mean the task is still being created
                    # (TASK_NEW); runc retries too (cgroups.WriteCgroupProc).
                    if e.errno != errno.EINVAL or attempt == 4:
                        raise
                    time.sleep(0.03)

    def pids(self) -> list[int]:
        """The processes in this cgroup (cgroup.procs; v1: of every hierarchy)."""
        found: set[int] = set()
        for path in self.dirs:
            try:
                found.update(int(p) for p in _read(path, "cgroup.procs").split())
            except FileNotFoundError:
                continue
        return sorted(found)

    def exists(self) -> bool:
        return any(os.path.isdir(path) for path in self.dirs)

    # -- freezing: docker pause / unpause --

    @staticmethod
    def _wait(done) -> bool:
        """Poll ``done()`` until it is true (True) or WAIT_SECONDS pass (False)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _freezer(self) -> str:
        path = self.dir("freezer")
        if not path:
            raise EngineError("pause needs the freezer cgroup controller, which is not mounted")
        return path

    def freeze(self) -> None:
        """Stop every process in the cgroup; return once they all are stopped."""
        path = self._freezer()
        if self.version == "2":
            # cgroup-v2.rst: freezing takes a while; cgroup.events shows
            # "frozen 1" when it is complete.
            perform(Write(path, "cgroup.freeze", "1"))
            if not self._wait(lambda: self._events().get("frozen") == "1"):
                perform(Write(path, "cgroup.freeze", "0"))
                raise EngineError(f"could not freeze {path} within {WAIT_SECONDS:g}s")
            return
        # cgroup-v1/freezer-subsystem.rst: reading FREEZING means "not yet";
        # write FROZEN again until it reads FROZEN (runc does the same,
        # because processes forking meanwhile can keep it in FREEZING).
        def frozen_now() -> bool:
            perform(Write(path, "freezer.state", "FROZEN"))
            return _read(path, "freezer.state") == "FROZEN"
        if not self._wait(frozen_now):
            perform(Write(path, "freezer.state", "THAWED"))  # never leave it half frozen
            raise EngineError(f"could not freeze {path} within {WAIT_SECONDS:g}s (stuck in FREEZING)")

    def thaw(self) -> None:
        """Let the processes run again; return once they do."""
        path = self._freezer()
        if self.version == "2":
            perform(Write(path, "cgroup.freeze", "0"))
            ok = self._wait(lambda: self._events().get("frozen") == "0")
        else:
            perform(Write(path, "freezer.state", "THAWED"))
            ok = self._wait(lambda: _read(path, "freezer.state") == "THAWED")
        if not ok:
            raise EngineError(f"could not thaw {path} within {WAIT_SECONDS:g}s")

    def frozen(self) -> bool:
        path = self.dir("freezer")
        try:
            if self.version == "2":
                return self._events().get("frozen") == "1"
            return bool(path) and _read(path, "freezer.state") == "FROZEN"
        except (FileNotFoundError, ProcessLookupError):
            return False
        except OSError as e:
            if e.errno == errno.ENODEV:  # a v1 cgroup being removed right now
                return False
            raise

    def _events(self) -> dict[str, str]:
        return _keyed(_read(self.dir(), "cgroup.events"))

    # -- signals and removal --

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to every process in the cgroup.

        Reading cgroup.procs and then signalling races with fork(): a child
        born in between would be missed. So, like runc
        (signalAllProcesses), freeze first, signal, then thaw: frozen
        processes cannot fork, and get the signal when they run again. A
        container that was paused stays paused unless the signal is
        SIGKILL (a frozen process cannot die until it runs).
        """
        if not self.exists():
            return
        kill_file = os.path.join(self.dir(), "cgroup.kill") if self.version == "2" else ""
        if sig == signal.SIGKILL and kill_file and os.path.exists(kill_file):
            # cgroup-v2.rst (Linux 5.14+): cgroup.kill kills the whole
            # cgroup atomically, forks in flight included.
            perform(Write(self.dir(), "cgroup.kill", "1"))
            return
        can_freeze = self.dir("freezer") is not None and self.version != "none"
        was_frozen = can_freeze and self.frozen()
        if can_freeze and not was_frozen:
            self.freeze()
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if can_freeze and (not was_frozen or sig == signal.SIGKILL):
                self.thaw()

    def remove(self) -> None:
        """Remove the container's directories (idempotent). The parent
        ``dockyard`` directories stay: other containers use them.

        rmdir fails with EBUSY while a process is still in the cgroup; one
        that was just killed may take a moment to leave, so retry briefly.
        """
        for path in self.dirs:
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        e.add_note(f"removing cgroup {path}; processes still in it: {_procs(path)}")
                        raise
                    time.sleep(0.02)
        remove_if_empty(self.parent_dirs())

    def parent_dirs(self) -> list[str]:
        """The ``dockyard[/...]`` directories above this cgroup, deepest first."""
        return [path for path in reversed(self.directories()) if not path.endswith("/" + self.container_id)]

    # -- reading: OOM kills and docker stats --

    def oom_files(self) -> list[str]:
        """The file(s) whose ``oom_kill`` line counts OOM kills. On v2
        memory.events can be watched with inotify/poll (the kernel notifies
        on change); on v1 memory.oom_control needs an eventfd registered
        through cgroup.event_control to be waited on."""
        memory = self.dir("memory")
        if not memory:
            return []
        return [os.path.join(memory, "memory.events" if self.version == "2" else "memory.oom_control")]

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup.

        v1: the ``oom_kill`` line of memory.oom_control (Linux 4.13+);
        v2: the ``oom_kill`` line of memory.events. 0 when the file is
        missing (no memory controller, or the cgroup is gone).
        """
        total = 0
        for path in self.oom_files():
            try:
                total += int(_keyed(_read(os.path.dirname(path), os.path.basename(path))).get("oom_kill", 0))
            except FileNotFoundError:
                pass
        return total

    def stats(self) -> dict:
        """The numbers ``docker stats`` is computed from.

        CPU % = Δcpu_usage_ns / Δsystem_cpu_ns × online_cpus × 100 between
        two samples; memory usage shown by docker = memory_usage minus
        inactive_file. memory_limit is capped at the host's RAM (as dockerd
        does), so "no limit" shows as the machine's memory.
        """
        out = {"cpu_usage_ns": 0, "system_cpu_ns": system_cpu_ns(),
               "online_cpus": os.sysconf("SC_NPROCESSORS_ONLN"),
               "memory_usage": 0, "memory_limit": host_memory(), "memory_cache": 0, "inactive_file": 0,
               "pids_current": 0, "pids_limit": None, "blkio_read": 0, "blkio_write": 0}
        if self.version == "2":
            out.update(self._stats_v2())
        elif self.version == "1":
            out.update(self._stats_v1())
        out["memory_limit"] = min(out["memory_limit"], host_memory())
        return out

    def _stats_v1(self) -> dict:
        out: dict = {}
        if (cpuacct := self.dir("cpuacct")):
            out["cpu_usage_ns"] = int(_read(cpuacct, "cpuacct.usage"))
        if (memory := self.dir("memory")):
            stat = _keyed(_read(memory, "memory.stat"))
            out["memory_usage"] = int(_read(memory, "memory.usage_in_bytes"))
            out["memory_limit"] = int(_read(memory, "memory.limit_in_bytes"))
            # total_* include sub-cgroups (memory.rst 5.2); docker reads these.
            out["memory_cache"] = int(stat.get("total_cache", stat.get("cache", 0)))
            out["inactive_file"] = int(stat.get("total_inactive_file", stat.get("inactive_file", 0)))
        if (pids := self.dir("pids")):
            out["pids_current"] = int(_read(pids, "pids.current"))
            limit = _read(pids, "pids.max")
            out["pids_limit"] = None if limit == "max" else int(limit)
        if (blkio := self.dir("blkio")):
            # "MAJ:MIN Read N" lines; the throttle file exists whatever the
            # I/O scheduler (the plain one needed CFQ, gone since 5.0).
            for name in ("blkio.throttle.io_service_bytes_recursive", "blkio.io_service_bytes_recursive"):
                try:
                    text = _read(blkio, name)
                except FileNotFoundError:
                    continue
                for line in text.splitlines():
                    parts = line.split()
                    if len(parts) == 3 and parts[1] in ("Read", "Write"):
                        out["blkio_" + parts[1].lower()] = out.get("blkio_" + parts[1].lower(), 0) + int(parts[2])
                break
        return out

    def _stats_v2(self) -> dict:
        d, out = self.dir(), {}
        cpu = _keyed(_read(d, "cpu.stat"))  # present even without the cpu controller
        out["cpu_usage_ns"] = int(cpu.get("usage_usec", 0)) * 1000
        if os.path.exists(os.path.join(d, "memory.current")):
            stat = _keyed(_read(d, "memory.stat"))
            out["memory_usage"] = int(_read(d, "memory.current"))
            limit = _read(d, "memory.max")
            out["memory_limit"] = host_memory() if limit == "max" else int(limit)
            out["memory_cache"] = int(stat.get("file", 0))
            out["inactive_file"] = int(stat.get("inactive_file", 0))
        if os.path.exists(os.path.join(d, "pids.current")):
            out["pids_current"] = int(_read(d, "pids.current"))
            limit = _read(d, "pids.max")
            out["pids_limit"] = None if limit == "max" else int(limit)
        if os.path.exists(os.path.join(d, "io.stat")):
            # "MAJ:MIN rbytes=N wbytes=N rios=N ..." per device
            for line in _read(d, "io.stat").splitlines():
                for item in line.split()[1:]:
                    key, _, value = item.partition("=")
                    if key in ("rbytes", "wbytes"):
                        name = "blkio_read" if key == "rbytes" else "blkio_write"
                        out[name] = out.get(name, 0) + int(value)
        return out


def order_memory_writes(writes: list[Write], current_limit: int) -> list[Write]:
    """On v1 memsw must stay >= limit_in_bytes at every moment, so raising
    the limits needs memsw first and lowering them needs limit first.

    runc's rule (libcontainer/cgroups/fs/memory.go setMemoryAndSwap): write
    memsw first when it becomes unlimited or larger than the *current*
    memory limit.
    """
    names = [w.file for w in writes]
    if "memory.limit_in_bytes" not in names or "memory.memsw.limit_in_bytes" not in names:
        return writes
    i, j = names.index("memory.limit_in_bytes"), names.index("memory.memsw.limit_in_bytes")
    swap = int(writes[j].value)
    if swap == -1 or swap > current_limit:
        writes = list(writes)
        writes[i], writes[j] = writes[j], writes[i]
    return writes


def system_cpu_ns() -> int:
    """The host's total CPU time, as docker computes it: the first seven
    fields of the ``cpu`` line of /proc/stat (user nice system idle iowait
    irq softirq, in clock ticks, proc(5)) converted to nanoseconds."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                ticks = sum(int(v) for v in line.split()[1:8])
                return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    raise OSError(errno.EINVAL, "no cpu line in /proc/stat", "/proc/stat")


def host_memory() -> int:
    """MemTotal from /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def remove_if_empty(paths: list[str]) -> None:
    """rmdir each cgroup directory that has no child cgroup left (the last
    container's removal takes the ``dockyard`` parents with it, so nothing
    of ours stays in /sys/fs/cgroup). A parent that still has children
    refuses with EBUSY: it stays, as it should."""
    for path in paths:
        try:
            os.rmdir(path)
        except OSError:
            pass


# -- starting the kernel's slow step early -----------------------------------------


def own_procs_file(layout: CgroupLayout) -> str | None:
    """The ``cgroup.procs`` of the cgroup *this* process is in, in one hierarchy
    (from /proc/self/cgroup: ``ID:CONTROLLERS:PATH`` lines, cgroups(7))."""
    if layout.version == "2":
        mount, wanted = layout.unified, ""
    elif layout.version == "1" and layout.mounts:
        wanted, mount = next(iter(layout.mounts.items()))
    else:
        return None
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if (controllers == "" and wanted == "") or wanted in controllers.split(","):
                    return os.path.join(mount, path.lstrip("/"), "cgroup.procs")
    except (OSError, ValueError):
        pass
    return None


def warm_up(layout: CgroupLayout | None = None) -> None:
    """Move this process into the cgroup it is already in: a no-op for the
    process, done for its side effect on the kernel.

    Every move between cgroups takes ``cgroup_threadgroup_rwsem`` for writing
    (kernel/cgroup/cgroup.c, cgroup_attach_lock). That per-CPU semaphore
    makes its readers (every fork) cheap by making a writer that comes after
    a quiet spell wait for an RCU grace period first: 5 to 30 ms measured on
    this 2-CPU VM, paid again after every pause. A container's first step is
    such a move (it joins its cgroup), so a start would wait for it. Called
    from a thread as a start begins, the grace period runs while the engine
    prepares the container; the child's own join, a few milliseconds later,
    finds the semaphore already in its fast writer mode. Any error is
    ignored: this only saves time.
    """
    try:
        procs = own_procs_file(layout or host_layout())
        if procs is not None:
            with open(procs, "w") as f:
                f.write("0")
    except OSError:
        pass


# -- conveniences ----------------------------------------------------------------


def for_container(container) -> Cgroup:
    """The cgroup of a :class:`~engine.runtime.container.Container` (or anything with ``.id``)."""
    return Cgroup(container.id)


def leftovers(parent: str = DEFAULT_PARENT, *, root: str = DEFAULT_ROOT,
              layout: CgroupLayout | None = None) -> list[str]:
    """The container ids that have a cgroup directory under ``parent``, in
    any hierarchy. Which of them belong to no container is for the caller
    to decide."""
    layout = layout or host_layout(root)
    if layout.version == "2":
        mounts = [layout.unified]
    else:
        mounts = list(dict.fromkeys(layout.mounts.values()))
    ids: set[str] = set()
    for mount in mounts:
        try:
            ids.update(e.name for e in os.scandir(os.path.join(mount, parent)) if e.is_dir())
        except FileNotFoundError:
            continue
    return sorted(ids)

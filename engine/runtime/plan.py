"""The plan of kernel steps that turns an image into a running container.

Dockyard *describes* a container before it creates one. A :class:`Plan` is
plain data: the namespaces to clone, then a list of steps (mounts, device
nodes, ``pivot_root``, hostname...) and finally the ``execve``. The same
object is

- printed by ``dockyard run --explain`` as the equivalent shell commands and
  system calls (:meth:`Plan.render`), and
- lowered to a flat list of :class:`Op` tuples (:meth:`Plan.ops`) that the
  spawner performs, in order, in the child process -- in C, with no Python
  running after ``clone(2)``.

So the explanation cannot drift from what really happens: both come from
the same list.

Every step has three faces: ``shell()`` (what you would type), ``syscall()``
(what the kernel is asked) and ``op()`` (what the child executes).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

from .options import CAPABILITIES, ULIMITS

# -- what the child executes ---------------------------------------------------

# Operation codes understood by both spawners (engine/_native/spawn and its
# twin engine/runtime/spawn.py). The parity tests check both agree.
OP_MOUNT = 1        # mount(source, path, fstype, flags, data)
OP_MKDIR = 2        # mkdir(path, mode), an existing directory is fine
OP_MKNOD = 3        # mknod(path, S_IFCHR|mode, dev) then chmod(path, mode)
OP_SYMLINK = 4      # symlink(source, path)
OP_PIVOT_ROOT = 5   # chdir(path); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/")
OP_SETHOSTNAME = 6  # sethostname(data)
OP_LOOPBACK_UP = 7  # ioctl(SIOCSIFFLAGS, "lo", IFF_UP)
OP_CHDIR = 8        # chdir(path)
OP_MKDIR_P = 9      # mkdir -p path (mode 0755 for what it creates)
OP_PDEATHSIG = 10   # prctl(PR_SET_PDEATHSIG, flags)
OP_SYNC = 11        # block until the engine says go (read one byte from the sync pipe)
OP_MOUNT_IF_EXISTS = 12  # as OP_MOUNT, but a target that does not exist is skipped (ENOENT)
OP_MOUNT_IN_ROOT = 13    # fd = the target `path` opened inside `root` without following a
                         # symlink (creating it when mode is S_IFDIR or S_IFREG), then
                         # mount(source, "/proc/self/fd/<fd>", fstype, flags, data)
OP_SETRLIMIT = 14   # setrlimit(mode, {soft=flags, hard=dev})
OP_CAPBSET = 15     # prctl(PR_CAPBSET_DROP, n) for every n in 0..mode not in the mask `flags`
OP_SETUSER = 16     # setgroups(data = native uint32 gids); setresgid(mode); setresuid(flags)
OP_CAPSET = 17      # prctl(PR_CAP_AMBIENT_CLEAR_ALL); capset(effective=permitted=flags, inheritable=0)
OP_SETSID_CTTY = 18  # setsid(); ioctl(0, TIOCSCTTY, 0)
OP_SETNS = 19       # setns(fd=flags, nstype=mode); `path` names what fd was opened on (for errors)
OP_FORK_INTO_PIDNS = 20  # fork; the parent writes (REPORT_PID, child's pid) on the error pipe and
                         # _exit(0)s; the child goes on with the next op
OP_SETSID = 21      # setsid(): a new session without a controlling terminal
OP_WRITE = 22       # write(open(path, O_WRONLY), data): one write into an existing file

# The "stage" of the one message on the error pipe that is not an error:
# OP_FORK_INTO_PIDNS's parent reporting its child's PID.
REPORT_PID = -2

OP_NAMES = {v: k for k, v in globals().items() if k.startswith("OP_") and isinstance(v, int)}


class Op(NamedTuple):
    """One primitive the child performs. Unused fields stay empty."""

    code: int
    path: bytes = b""
    source: bytes = b""
    fstype: bytes = b""
    flags: int = 0
    data: bytes = b""
    mode: int = 0
    dev: int = 0
    root: bytes = b""   # OP_MOUNT_IN_ROOT only: the directory that is "/" for `path`


# -- kernel constants (values from <sched.h>, <sys/mount.h>, <signal.h>) -------

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MOUNT_FLAG_NAMES = [  # order used when printing
    ("MS_RDONLY", MS_RDONLY, "ro"), ("MS_NOSUID", MS_NOSUID, "nosuid"),
    ("MS_NODEV", MS_NODEV, "nodev"), ("MS_NOEXEC", MS_NOEXEC, "noexec"),
    ("MS_REMOUNT", MS_REMOUNT, "remount"), ("MS_BIND", MS_BIND, "bind"),
    ("MS_REC", MS_REC, "rec"), ("MS_PRIVATE", MS_PRIVATE, "private"),
    ("MS_SYNCHRONOUS", MS_SYNCHRONOUS, "sync"), ("MS_DIRSYNC", MS_DIRSYNC, "dirsync"),
    ("MS_NOATIME", MS_NOATIME, "noatime"), ("MS_NODIRATIME", MS_NODIRATIME, "nodiratime"),
    ("MS_RELATIME", MS_RELATIME, "relatime"), ("MS_STRICTATIME", MS_STRICTATIME, "strictatime"),
]

S_IFCHR = 0o020000
S_IFDIR = 0o040000
S_IFREG = 0o100000

# setrlimit(2) resources by docker's --ulimit names (the table is in runtime/options.py,
# from <sys/resource.h>); RLIM_INFINITY is all ones.
RLIMITS = ULIMITS
RLIM_INFINITY = (1 << 64) - 1

# Capability numbers come from <linux/capability.h> (the table is in runtime/options.py).
CAPABILITY_NAMES = {number: name for name, number in CAPABILITIES.items()}


def capability_mask(numbers) -> int:
    """A set of capability numbers as the 64-bit mask /proc/<pid>/status prints."""
    mask = 0
    for n in numbers:
        mask |= 1 << n
    return mask


def _cap_word(number: int) -> str:
    """cap_chown, as capsh and setpriv spell capabilities."""
    return CAPABILITY_NAMES.get(number, f"CAP_{number}").lower()

# Namespaces in the order `unshare(1)` lists its options: (name, flag, option, why).
NAMESPACES = {
    "pid": (CLONE_NEWPID, "--pid", "its own process tree: the command is PID 1"),
    "mnt": (CLONE_NEWNS, "--mount", "its own mount table: the image becomes /"),
    "uts": (CLONE_NEWUTS, "--uts", "its own hostname"),
    "ipc": (CLONE_NEWIPC, "--ipc", "its own System V IPC and POSIX message queues"),
    "net": (CLONE_NEWNET, "--net", "its own network stack (only a loopback interface)"),
}


def makedev(major: int, minor: int) -> int:
    """The kernel's dev_t encoding (glibc's gnu_dev_makedev, <sys/sysmacros.h>)."""
    return ((major & 0xFFFFF000) << 32) | ((major & 0xFFF) << 8) | \
           ((minor & 0xFFFFFF00) << 12) | (minor & 0xFF)


def mount_flag_names(flags: int) -> list[str]:
    return [name for name, bit, _ in MOUNT_FLAG_NAMES if flags & bit]


def _c(text: str | None) -> str:
    return "NULL" if text is None else '"' + text.replace('"', '\\"') + '"'


def _q(text: str) -> str:
    return shlex.quote(text)


# -- the steps -----------------------------------------------------------------


def _mount_shell(source: str | None, target: str, fstype: str | None, flags: int, data: str) -> str:
    """The mount(8) command line for one mount(2) call."""
    if fstype is None and flags & MS_PRIVATE:
        return f"mount --make-{'r' if flags & MS_REC else ''}private {_q(target)}"
    if flags & MS_REMOUNT:  # change the flags of an existing mount (with MS_BIND: of that mount only)
        words = ["remount"] + (["bind"] if flags & MS_BIND else [])
        words += [word for _, bit, word in MOUNT_FLAG_NAMES
                  if flags & bit and bit not in (MS_REMOUNT, MS_BIND, MS_REC)]
        return f"mount -o {_q(','.join(words))} {_q(target)}"
    if flags & MS_BIND:  # mount(2) ignores the other flags of a bind: a remount sets them
        return f"mount --{'r' if flags & MS_REC else ''}bind {_q(source or '')} {_q(target)}"
    opts = [word for _, bit, word in MOUNT_FLAG_NAMES if flags & bit]
    if data:
        opts.append(data)
    o = f" -o {_q(','.join(opts))}" if opts else ""
    return f"mount -t {fstype} {_q(source or 'none')}{o} {_q(target)}"


def _mount_syscall(source: str | None, target: str, fstype: str | None, flags: int, data: str) -> str:
    """The mount(2) call; ``target`` is already a C expression."""
    names = "|".join(mount_flag_names(flags)) or "0"
    return f"mount({_c(source)}, {target}, {_c(fstype)}, {names}, {_c(data) if data else 'NULL'})"


@dataclass(frozen=True)
class Mount:
    """Mount a filesystem (mount(2)); ``source`` is the device or a name for virtual ones.

    ``if_exists``: a target that does not exist is skipped instead of being an
    error (runc does so for the masked and read-only paths: which of them
    exist depends on the kernel's configuration).
    """

    source: str | None
    target: str
    fstype: str | None
    flags: int = 0
    data: str = ""
    why: str = ""
    if_exists: bool = False

    def shell(self) -> str:
        text = _mount_shell(self.source, self.target, self.fstype, self.flags, self.data)
        return f"test -e {_q(self.target)} && {text}" if self.if_exists else text

    def syscall(self) -> str:
        text = _mount_syscall(self.source, _c(self.target), self.fstype, self.flags, self.data)
        return text + ", ENOENT skipped" if self.if_exists else text

    def op(self) -> Op:
        return Op(OP_MOUNT_IF_EXISTS if self.if_exists else OP_MOUNT, path=os.fsencode(self.target),
                  source=os.fsencode(self.source) if self.source else b"",
                  fstype=os.fsencode(self.fstype) if self.fstype else b"",
                  flags=self.flags, data=self.data.encode())


@dataclass(frozen=True)
class MountInRoot:
    """Mount on ``target``, a path *inside the container root* ``root``,
    looked up as if ``root`` were ``/`` and never through a symlink.

    Why not simply ``mount(source, root + target)``? The image (or a volume
    another container shares) may have made a component of ``target`` a
    symlink -- ``/data -> /etc`` on the host, say -- and mount(2) follows
    it: the mount would land outside the container. runc had exactly that
    bug with a race on a shared volume (CVE-2021-30465). So the child walks
    ``target`` one component at a time from a descriptor of ``root`` with
    ``openat(O_PATH|O_NOFOLLOW)``, refuses a symlink (ELOOP), creates what is
    missing when ``create`` says so (``"dir"``, or ``"file"`` for the last
    component, e.g. to bind a file), and mounts on the descriptor it holds
    (``/proc/self/fd/<fd>``), so nothing can be swapped in between.
    """

    root: str
    target: str         # absolute, inside the container: "/data"
    source: str | None
    fstype: str | None
    flags: int = 0
    data: str = ""
    create: str = ""    # "", "dir" or "file": what to create when the target is missing
    why: str = ""

    @property
    def full_path(self) -> str:
        return self.root.rstrip("/") + self.target

    def shell(self) -> str:
        return _mount_shell(self.source, self.full_path, self.fstype, self.flags, self.data)

    def syscall(self) -> str:
        how = {"": "", "dir": ", mkdir missing", "file": ", mkdir parents, create empty file"}[self.create]
        return (f"fd = open_in_root({_c(self.root)}, {_c(self.target)}{how}); "
                + _mount_syscall(self.source, '"/proc/self/fd/<fd>"', self.fstype, self.flags, self.data))

    def op(self) -> Op:
        mode = {"": 0, "dir": S_IFDIR, "file": S_IFREG}[self.create]
        return Op(OP_MOUNT_IN_ROOT, path=os.fsencode(self.target),
                  source=os.fsencode(self.source) if self.source else b"",
                  fstype=os.fsencode(self.fstype) if self.fstype else b"",
                  flags=self.flags, data=self.data.encode(), mode=mode,
                  root=os.fsencode(self.root))


@dataclass(frozen=True)
class MakeDir:
    path: str
    mode: int = 0o755
    parents: bool = False
    why: str = ""

    def shell(self) -> str:
        if self.parents:
            return f"mkdir -p {_q(self.path)}"
        return f"mkdir -m {self.mode:o} {_q(self.path)}"

    def syscall(self) -> str:
        if self.parents:
            return f"mkdir({_c(self.path)}, 0755) for each missing component"
        return f"mkdir({_c(self.path)}, 0{self.mode:o})"

    def op(self) -> Op:
        return Op(OP_MKDIR_P if self.parents else OP_MKDIR, path=os.fsencode(self.path), mode=self.mode)


@dataclass(frozen=True)
class MakeDevice:
    """A character device node, e.g. /dev/null = 1:3 (see devices.txt in the kernel docs)."""

    path: str
    major: int
    minor: int
    mode: int = 0o666
    why: str = ""

    def shell(self) -> str:
        return f"mknod -m {self.mode:o} {_q(self.path)} c {self.major} {self.minor}"

    def syscall(self) -> str:
        return f"mknod({_c(self.path)}, S_IFCHR|0{self.mode:o}, makedev({self.major}, {self.minor}))"

    def op(self) -> Op:
        return Op(OP_MKNOD, path=os.fsencode(self.path), mode=self.mode,
                  dev=makedev(self.major, self.minor))


@dataclass(frozen=True)
class Symlink:
    target: str
    path: str
    why: str = ""

    def shell(self) -> str:
        return f"ln -s {_q(self.target)} {_q(self.path)}"

    def syscall(self) -> str:
        return f"symlink({_c(self.target)}, {_c(self.path)})"

    def op(self) -> Op:
        return Op(OP_SYMLINK, path=os.fsencode(self.path), source=os.fsencode(self.target))


@dataclass(frozen=True)
class PivotRoot:
    """Make ``new_root`` the root and detach the old one (pivot_root(2), NOTES:
    ``pivot_root(".", ".")`` stacks the old root on top of the new one, so a
    lazy unmount of "." removes it without needing a put_old directory)."""

    new_root: str
    why: str = ""

    def shell(self) -> str:
        return f"cd {_q(self.new_root)} && pivot_root . . && umount -l . && cd /"

    def syscall(self) -> str:
        return (f'chdir({_c(self.new_root)}); pivot_root(".", "."); '
                'umount2(".", MNT_DETACH); chdir("/")')

    def op(self) -> Op:
        return Op(OP_PIVOT_ROOT, path=os.fsencode(self.new_root))


@dataclass(frozen=True)
class SetHostname:
    name: str
    why: str = ""

    def shell(self) -> str:
        return f"hostname {_q(self.name)}"

    def syscall(self) -> str:
        return f"sethostname({_c(self.name)}, {len(self.name.encode())})"

    def op(self) -> Op:
        return Op(OP_SETHOSTNAME, data=self.name.encode())


@dataclass(frozen=True)
class LoopbackUp:
    why: str = ""

    def shell(self) -> str:
        return "ip link set lo up"

    def syscall(self) -> str:
        return 'ioctl(sock, SIOCSIFFLAGS, {ifr_name="lo", ifr_flags|=IFF_UP})'

    def op(self) -> Op:
        return Op(OP_LOOPBACK_UP)


@dataclass(frozen=True)
class ChangeDir:
    path: str
    why: str = ""

    def shell(self) -> str:
        return f"cd {_q(self.path)}"

    def syscall(self) -> str:
        return f"chdir({_c(self.path)})"

    def op(self) -> Op:
        return Op(OP_CHDIR, path=os.fsencode(self.path))


@dataclass(frozen=True)
class DieWithParent:
    """prctl(PR_SET_PDEATHSIG): the container dies with its parent (its monitor;
    for ``exec``, the exec'ing process), so nothing runs that nobody waits for."""

    signal: int = 9
    why: str = ""

    def shell(self) -> str:
        return "# (no shell equivalent) be killed if the parent process dies"

    def syscall(self) -> str:
        return f"prctl(PR_SET_PDEATHSIG, {self.signal})"

    def op(self) -> Op:
        return Op(OP_PDEATHSIG, flags=self.signal)


@dataclass(frozen=True)
class WaitForEngine:
    """Block until the engine has recorded the child (and, later, wired its
    cgroups and network) -- one byte on a pipe."""

    why: str = ""

    def shell(self) -> str:
        return "read go <&SYNC_FD"

    def syscall(self) -> str:
        return "read(sync_fd, &go, 1)"

    def op(self) -> Op:
        return Op(OP_SYNC)


@dataclass(frozen=True)
class SetRlimit:
    """A resource limit (setrlimit(2)), e.g. ``--ulimit nofile=1024:2048``.
    Set while still root: raising a hard limit needs CAP_SYS_RESOURCE."""

    name: str           # "nofile", as docker's --ulimit spells it
    soft: int           # -1: unlimited
    hard: int
    why: str = ""

    @staticmethod
    def _value(n: int) -> str:
        return "unlimited" if n < 0 or n == RLIM_INFINITY else str(n)

    def shell(self) -> str:
        return f"prlimit --pid $$ --{self.name}={self._value(self.soft)}:{self._value(self.hard)}"

    def syscall(self) -> str:
        def c(n):
            return "RLIM_INFINITY" if self._value(n) == "unlimited" else str(n)
        return f"setrlimit(RLIMIT_{self.name.upper()}, {{{c(self.soft)}, {c(self.hard)}}})"

    def op(self) -> Op:
        def raw(n):
            return RLIM_INFINITY if n < 0 else n
        return Op(OP_SETRLIMIT, mode=RLIMITS[self.name], flags=raw(self.soft), dev=raw(self.hard))


@dataclass(frozen=True)
class DropBoundingSet:
    """Shrink the capability bounding set to ``keep`` (prctl(2) PR_CAPBSET_DROP).

    The bounding set is the ceiling: no execve -- not even of a set-user-ID
    root program or one with file capabilities -- can give the process a
    capability outside it (capabilities(7), "Capability bounding set").
    Dropping needs CAP_SETPCAP, so this comes before the user switch and
    capset. ``last_cap`` is /proc/sys/kernel/cap_last_cap: every capability
    this kernel knows, including ones newer than our table, is dropped.
    """

    keep: tuple[int, ...]
    last_cap: int
    why: str = ""

    @property
    def dropped(self) -> list[int]:
        return [n for n in range(self.last_cap + 1) if n not in self.keep]

    def shell(self) -> str:
        kept = "".join(f",+{_cap_word(n)[4:]}" for n in sorted(self.keep))
        return f"setpriv --bounding-set=-all{kept}"

    def syscall(self) -> str:
        return (f"prctl(PR_CAPBSET_DROP, n) for the {len(self.dropped)} capabilities n <= "
                f"{self.last_cap} not in {capability_mask(self.keep):#018x}")

    def op(self) -> Op:
        return Op(OP_CAPBSET, flags=capability_mask(self.keep), mode=self.last_cap)


@dataclass(frozen=True)
class SetUser:
    """Become ``uid``:``gid`` with the supplementary ``groups`` (always set:
    otherwise the container would keep the groups of the engine's process).

    Order matters: groups and gid first, while we are still root -- after
    setresuid() to a non-root user we would not be allowed to. Changing the
    uid away from 0 also empties the permitted and effective capability sets
    (capabilities(7), "Effect of user ID changes on capabilities").
    """

    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    why: str = ""

    def shell(self) -> str:
        groups = f"--groups={','.join(map(str, self.groups))}" if self.groups else "--clear-groups"
        return f"setpriv --reuid={self.uid} --regid={self.gid} {groups}"

    def syscall(self) -> str:
        groups = ", ".join(map(str, self.groups))
        return (f"setgroups({len(self.groups)}, [{groups}]); setresgid({self.gid}, {self.gid}, {self.gid}); "
                f"setresuid({self.uid}, {self.uid}, {self.uid})")

    def op(self) -> Op:
        data = b"".join(g.to_bytes(4, sys.byteorder) for g in self.groups)
        return Op(OP_SETUSER, flags=self.uid, mode=self.gid, data=data)


@dataclass(frozen=True)
class SetCapabilities:
    """The process's own capability sets (capset(2)): permitted = effective =
    ``caps``, inheritable and ambient empty -- what docker's containers get
    (CapEff 00000000a80425fb by default). A non-root user gets empty sets,
    as with docker: its capabilities would be lost at execve anyway."""

    caps: tuple[int, ...]
    why: str = ""

    def shell(self) -> str:
        names = ",".join(_cap_word(n) for n in sorted(self.caps))
        return f"capsh --caps={_q(names + '=ep' if names else '=')}"

    def syscall(self) -> str:
        mask = capability_mask(self.caps)
        return ("prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL); capset({_LINUX_CAPABILITY_VERSION_3, 0}, "
                f"{{effective=permitted={mask:#x}, inheritable=0}})")

    def op(self) -> Op:
        return Op(OP_CAPSET, flags=capability_mask(self.caps))


@dataclass(frozen=True)
class SetsidCtty:
    """A new session whose controlling terminal is stdin (a pty slave the
    engine's monitor holds the master of): so ^C on that terminal becomes
    SIGINT for the container's foreground process group (credentials(7),
    "Sessions"; ioctl_tty(2) TIOCSCTTY)."""

    why: str = ""

    def shell(self) -> str:
        return "setsid --ctty"

    def syscall(self) -> str:
        return "setsid(); ioctl(0, TIOCSCTTY, 0)"

    def op(self) -> Op:
        return Op(OP_SETSID_CTTY)


# setns(2)'s nstype for each namespace file in /proc/<pid>/ns/ (the CLONE_NEW* constants).
NAMESPACE_TYPES = {
    "cgroup": CLONE_NEWCGROUP, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "net": CLONE_NEWNET,
    "pid": CLONE_NEWPID, "mnt": CLONE_NEWNS,
}
# nsenter(1)'s option for each.
_NSENTER = {"cgroup": "--cgroup", "ipc": "--ipc", "uts": "--uts", "net": "--net", "pid": "--pid",
            "mnt": "--mount"}


@dataclass(frozen=True)
class SetNamespace:
    """Join an existing namespace: ``setns(fd, CLONE_NEW...)`` (setns(2)).

    ``fd`` is a descriptor of ``path`` (``/proc/<pid>/ns/<kind>`` of a
    process already in that namespace) that the *engine* opened before
    spawning: every namespace file must be opened before any is entered,
    because once in the container's mount namespace ``/proc/<pid>`` could
    name another process, or nothing (runc's nsexec.c opens them all first
    for the same reason). -1 until the engine has opened it (a plan that is
    only printed). Joining a PID namespace changes nothing for the caller
    itself, only for the children it forks afterwards (pid_namespaces(7)):
    see :class:`ForkIntoPidNamespace`.
    """

    kind: str           # "mnt", "pid", "net", "ipc", "uts" or "cgroup"
    path: str           # /proc/<pid>/ns/<kind>
    fd: int = -1
    why: str = ""

    def shell(self) -> str:
        return f"nsenter {_NSENTER[self.kind]}={_q(self.path)}"

    def syscall(self) -> str:
        flag = "CLONE_NEWNS" if self.kind == "mnt" else f"CLONE_NEW{self.kind.upper()}"
        return f"setns(open({_c(self.path)}, O_RDONLY), {flag})"

    def op(self) -> Op:
        return Op(OP_SETNS, path=os.fsencode(self.path), flags=self.fd,
                  mode=NAMESPACE_TYPES[self.kind])


@dataclass(frozen=True)
class ForkIntoPidNamespace:
    """Fork once more, so that the process that runs the command is *in*
    the PID namespace joined above (it was only the one for our children).

    The parent reports the child's PID to the engine on the error pipe and
    exits; the orphaned child is adopted by the engine, which made itself a
    child subreaper for that (prctl(2) PR_SET_CHILD_SUBREAPER). That is
    what ``nsenter --fork`` does, and runc's nsexec.c too.
    """

    why: str = ""

    def shell(self) -> str:
        return "nsenter --fork  # the rest runs in a child"

    def syscall(self) -> str:
        return "pid = clone(SIGCHLD) /* fork */; parent: write(error_pipe, {-2, pid}); _exit(0)"

    def op(self) -> Op:
        return Op(OP_FORK_INTO_PIDNS)


@dataclass(frozen=True)
class NewSession:
    """A new session with no controlling terminal (setsid(2)): nothing typed
    in the engine's terminal (^C, a hang-up) reaches the process."""

    why: str = ""

    def shell(self) -> str:
        return "setsid"

    def syscall(self) -> str:
        return "setsid()"

    def op(self) -> Op:
        return Op(OP_SETSID)


@dataclass(frozen=True)
class JoinCgroup:
    """Move ourselves into a cgroup: write "0" (this process, cgroups(7)) to
    its ``cgroup.procs``. The child does it as its first step, so that
    everything it becomes is counted and limited from the start."""

    procs: str          # the cgroup's cgroup.procs file
    why: str = ""

    def shell(self) -> str:
        return f"echo 0 > {_q(self.procs)}"

    def syscall(self) -> str:
        return f"write(open({_c(self.procs)}, O_WRONLY), \"0\", 1)"

    def op(self) -> Op:
        return Op(OP_WRITE, path=os.fsencode(self.procs), data=b"0")


Step = (Mount | MountInRoot | MakeDir | MakeDevice | Symlink | PivotRoot | SetHostname | LoopbackUp
        | ChangeDir | DieWithParent | WaitForEngine | SetRlimit | DropBoundingSet | SetUser
        | SetCapabilities | SetsidCtty | SetNamespace | ForkIntoPidNamespace | NewSession
        | JoinCgroup)


@dataclass(frozen=True)
class Exec:
    """execve(2) of the container command, searching the *container's* PATH
    when ``argv[0]`` has no slash (as runc does, never the host's PATH)."""

    argv: tuple[str, ...]
    env: tuple[str, ...]

    @property
    def search_path(self) -> str:
        for item in self.env:
            if item.startswith("PATH="):
                return item[5:]
        return ""

    def shell(self) -> str:
        env = " ".join(_q(e) for e in self.env)
        return f"exec env -i {env} {' '.join(_q(a) for a in self.argv)}"

    def syscall(self) -> str:
        # The shell line above shows every argument in full; keep this one short.
        short = [a if len(a) <= 40 and "\n" not in a else a[:37].split("\n")[0] + "..." for a in self.argv]
        args = ", ".join(_c(a) for a in short)
        return f"execve({_c(self.argv[0])}, [{args}], [{len(self.env)} variables])"


@dataclass
class Plan:
    """Everything the child does, in order. See the module docstring."""

    namespaces: tuple[str, ...]
    steps: list = field(default_factory=list)
    exec: Exec | None = None
    title: str = ""
    # Short names for long paths, used only when printing: [("ROOT", "/var/lib/...")].
    aliases: list = field(default_factory=list)

    @property
    def clone_flags(self) -> int:
        flags = 0
        for ns in self.namespaces:
            flags |= NAMESPACES[ns][0]
        return flags

    def add(self, step, why: str = "") -> None:
        if why:
            step = type(step)(**{**step.__dict__, "why": why})
        self.steps.append(step)

    @property
    def waits_for_engine(self) -> bool:
        """Does the child stop for the engine's go (a :class:`WaitForEngine` step)?
        Without one, the compiled spawner clones as vfork does (_native/spawn.pyx)."""
        return any(isinstance(step, WaitForEngine) for step in self.steps)

    def ops(self) -> list[Op]:
        """The steps as the child executes them (the exec is passed separately)."""
        return [step.op() for step in self.steps]

    def describe(self, index: int) -> str:
        """A short name for step ``index`` (``len(steps)`` is the exec), for errors."""
        if index < len(self.steps):
            return self.steps[index].shell()
        if index == len(self.steps) and self.exec is not None:
            return "exec " + " ".join(self.exec.argv)
        return f"step {index}"

    def _shorten(self, text: str, skip: str = "") -> str:
        for name, path in sorted(self.aliases, key=lambda a: len(a[1]), reverse=True):
            if name != skip:
                text = text.replace(path, f"${name}")
        return text

    def render(self) -> str:
        """The plan as numbered shell commands with the system calls beneath.

        Long paths are printed through the variables defined at the top
        (``$ROOT`` for the container's root); the plan itself holds the real
        paths.
        """
        lines = []
        if self.title:
            lines.append(self.title)
        for name, path in sorted(self.aliases, key=lambda a: len(a[1])):
            lines.append(f"{name}={self._shorten(path, skip=name)}")
        clone = "|".join(f"CLONE_NEW{'NS' if ns == 'mnt' else ns.upper()}" for ns in self.namespaces)
        unshare = " ".join(NAMESPACES[ns][1] for ns in self.namespaces)
        if self.namespaces:
            # Without a wait-for-engine step the compiled spawner clones as
            # vfork does: sharing our memory, the engine asleep until the exec.
            if not self.waits_for_engine:
                clone = "CLONE_VM|CLONE_VFORK|" + clone
            entries = [(f"unshare {unshare} --fork", f"clone({clone}|SIGCHLD)",
                        "\n".join(f"{ns}: {NAMESPACES[ns][2]}" for ns in self.namespaces))]
        else:  # exec: no new namespace, the child joins existing ones
            entries = [("# (dockyard forks)", "clone(SIGCHLD)",
                        "a new process, still in dockyard's own namespaces")]
        entries += [(s.shell(), s.syscall(), s.why) for s in self.steps]
        if self.exec is not None:
            entries.append((self.exec.shell(), self.exec.syscall(),
                            "replace the setup code with the container command"))
        width = len(str(len(entries)))
        for n, (shell, syscall, why) in enumerate(entries, 1):
            lines.append(f"{n:>{width}}. $ {self._shorten(shell)}")
            pad = " " * (width + 2)
            lines.append(f"{pad}  {self._shorten(syscall)}")
            for line in why.splitlines():
                lines.append(f"{pad}  # {line}")
        return "\n".join(lines)

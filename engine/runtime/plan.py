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
from dataclasses import dataclass, field
from typing import NamedTuple

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
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_STRICTATIME = 1 << 24

MOUNT_FLAG_NAMES = [  # order used when printing
    ("MS_RDONLY", MS_RDONLY, "ro"), ("MS_NOSUID", MS_NOSUID, "nosuid"),
    ("MS_NODEV", MS_NODEV, "nodev"), ("MS_NOEXEC", MS_NOEXEC, "noexec"),
    ("MS_REMOUNT", MS_REMOUNT, "remount"), ("MS_BIND", MS_BIND, "bind"),
    ("MS_REC", MS_REC, "rec"), ("MS_PRIVATE", MS_PRIVATE, "private"),
    ("MS_STRICTATIME", MS_STRICTATIME, "strictatime"),
]

# Namespaces in the order `unshare(1)` lists its options: (name, flag, option, why).
NAMESPACES = {
    "pid": (CLONE_NEWPID, "--pid", "its own process tree: the command is PID 1"),
    "mnt": (CLONE_NEWNS, "--mount", "its own mount table: the image becomes /"),
    "uts": (CLONE_NEWUTS, "--uts", "its own hostname"),
    "ipc": (CLONE_NEWIPC, "--ipc", "its own System V IPC and POSIX message queues"),
    "net": (CLONE_NEWNET, "--net", "its own network stack (only a loopback interface)"),
}

S_IFCHR = 0o020000


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


@dataclass(frozen=True)
class Mount:
    """Mount a filesystem (mount(2)); ``source`` is the device or a name for virtual ones."""

    source: str | None
    target: str
    fstype: str | None
    flags: int = 0
    data: str = ""
    why: str = ""

    def shell(self) -> str:
        if self.fstype is None and self.flags & MS_PRIVATE:
            return f"mount --make-{'r' if self.flags & MS_REC else ''}private {_q(self.target)}"
        opts = [word for _, bit, word in MOUNT_FLAG_NAMES if self.flags & bit]
        if self.data:
            opts.append(self.data)
        o = f" -o {_q(','.join(opts))}" if opts else ""
        return f"mount -t {self.fstype} {_q(self.source or 'none')}{o} {_q(self.target)}"

    def syscall(self) -> str:
        flags = "|".join(mount_flag_names(self.flags)) or "0"
        data = _c(self.data) if self.data else "NULL"
        return f"mount({_c(self.source)}, {_c(self.target)}, {_c(self.fstype)}, {flags}, {data})"

    def op(self) -> Op:
        return Op(OP_MOUNT, path=os.fsencode(self.target),
                  source=os.fsencode(self.source) if self.source else b"",
                  fstype=os.fsencode(self.fstype) if self.fstype else b"",
                  flags=self.flags, data=self.data.encode())


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
    """prctl(PR_SET_PDEATHSIG): a foreground container dies with its dockyard process."""

    signal: int = 9
    why: str = ""

    def shell(self) -> str:
        return "# (no shell equivalent) be killed if the dockyard process dies"

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


Step = (Mount | MakeDir | MakeDevice | Symlink | PivotRoot | SetHostname | LoopbackUp
        | ChangeDir | DieWithParent | WaitForEngine)


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
        entries = [(f"unshare {unshare} --fork", f"clone({clone}|SIGCHLD)",
                    "\n".join(f"{ns}: {NAMESPACES[ns][2]}" for ns in self.namespaces))]
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

"""Docker's default container profile, as data, and the plan built from it.

This is the part of Docker's profile that isolates *what the container sees*.
The part that limits *what it may do* -- the reduced capability set, seccomp,
masked and read-only /proc paths, the device cgroup -- is not applied yet: a
Dockyard container still runs with root's full capabilities, so it is not a
security boundary for untrusted code.

What a default ``docker run`` container gets (moby's
``oci/defaults.go`` and runc's ``libcontainer/rootfs_linux.go`` describe the
same; ``../shared/REFERENCES.md`` lists the checked values):

- new PID, mount, UTS, IPC and network namespaces;
- an overlay root: the image layers read-only below, the container's own
  writable layer on top;
- ``/proc`` (nosuid,noexec,nodev), ``/sys`` read-only, ``/dev`` a small tmpfs
  with only the safe device nodes, ``/dev/pts`` a private devpts instance,
  ``/dev/shm`` and ``/dev/mqueue``;
- a hostname (the short container ID unless ``-h`` is given).

:func:`container_plan` turns that into a :class:`~engine.runtime.plan.Plan`.
"""

from __future__ import annotations

import os

from .plan import (
    MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_STRICTATIME,
    ChangeDir, DieWithParent, Exec, LoopbackUp, MakeDevice, MakeDir, Mount, PivotRoot, Plan,
    SetHostname, Symlink, WaitForEngine,
)

NAMESPACES = ("pid", "mnt", "uts", "ipc", "net")

# (name, major, minor): Documentation/admin-guide/devices.txt in the kernel.
DEVICES = (
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
    ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
)

# The conventional links every Linux userland expects in /dev (runc's defaultSymlinks).
DEV_SYMLINKS = (
    ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"), ("pts/ptmx", "ptmx"), ("/proc/kcore", "core"),
)


def container_plan(overlay, hostname: str, argv: list[str], env: list[str], workdir: str,
                   *, die_with_parent: bool = True, title: str = "") -> Plan:
    """Assemble the plan for one container (see the module docstring).

    ``overlay`` is the :class:`~engine.snapshot.Overlay` of its root file
    system; every other path below is inside that root.
    """
    root = overlay.target
    plan = Plan(namespaces=NAMESPACES, title=title)
    container_dir = os.path.dirname(root)
    snapshots = os.path.commonpath(overlay.lower) if len(overlay.lower) > 1 \
        else os.path.dirname(overlay.lower[0])
    plan.aliases = [("ROOT", root), ("CTR", container_dir), ("LAYERS", snapshots)]
    if die_with_parent:
        plan.add(DieWithParent(), "a foreground container must not outlive dockyard")
    plan.add(WaitForEngine(), "wait until the engine has recorded the container's PID")
    plan.add(Mount(None, "/", None, MS_REC | MS_PRIVATE),
             "nothing we mount from now on propagates back to the host")
    plan.add(Mount("overlay", root, "overlay", 0, overlay.options),
             "image layers read-only below, the container's own layer on top")
    plan.add(Mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV),
             "a /proc that shows only this PID namespace")
    plan.add(Mount("sysfs", f"{root}/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NOEXEC | MS_NODEV),
             "kernel and device information, read-only")
    plan.add(Mount("tmpfs", f"{root}/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"),
             "an empty /dev: the container sees only the devices we create")
    for name in ("pts", "shm", "mqueue"):
        plan.add(MakeDir(f"{root}/dev/{name}", 0o755))
    plan.add(Mount("devpts", f"{root}/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620,gid=5"),
             "a private set of pseudo-terminals")
    plan.add(Mount("shm", f"{root}/dev/shm", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV,
                   "mode=1777,size=65536k"), "POSIX shared memory, 64 MB as docker")
    plan.add(Mount("mqueue", f"{root}/dev/mqueue", "mqueue", MS_NOSUID | MS_NOEXEC | MS_NODEV),
             "POSIX message queues of the new IPC namespace")
    for name, major, minor in DEVICES:
        plan.add(MakeDevice(f"{root}/dev/{name}", major, minor, 0o666))
    for target, name in DEV_SYMLINKS:
        plan.add(Symlink(target, f"{root}/dev/{name}"))
    plan.add(PivotRoot(root), "the overlay becomes / and the host's root is detached")
    plan.add(SetHostname(hostname), "in the new UTS namespace only")
    plan.add(LoopbackUp(), "the new network namespace has only lo, and it starts down")
    if workdir != "/":
        plan.add(MakeDir(workdir, parents=True), "docker creates a missing working directory")
    plan.add(ChangeDir(workdir))
    plan.exec = Exec(tuple(argv), tuple(env))
    return plan

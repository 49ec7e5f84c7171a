"""Docker's default container profile, as data, and the plan built from it.

What a default ``docker run`` container gets (moby's ``oci/defaults.go`` and
``daemon/oci_linux.go``, runc's ``libcontainer/rootfs_linux.go`` and
``standard_init_linux.go`` describe the same; ``../shared/REFERENCES.md``
lists the checked values):

- new PID, mount, UTS, IPC and network namespaces;
- an overlay root: the image layers read-only below, the container's own
  writable layer on top;
- ``/proc`` (nosuid,noexec,nodev), ``/sys`` read-only, ``/dev`` a small tmpfs
  with only the safe device nodes, ``/dev/pts`` a private devpts instance,
  ``/dev/shm`` and ``/dev/mqueue``;
- the parts of /proc and /sys that tell about (or reach into) the host
  *masked* (:data:`MASKED_PATHS`) or made *read-only* (:data:`READONLY_PATHS`);
- a hostname (the short container ID unless ``-h`` is given);
- 14 capabilities instead of root's 41 (runtime/options.py
  ``DEFAULT_CAPABILITIES``): ``CapEff 00000000a80425fb`` in
  /proc/self/status.

On top of that come the run options: ``-v`` bind mounts, ``--tmpfs``,
``--read-only``, ``--user``, ``--ulimit``, ``--cap-add/--cap-drop``,
``--privileged`` and ``--init``.

Not applied (yet): seccomp, the device cgroup, AppArmor, no_new_privs (off in
docker too). So the profile narrows what root in the container may do but
is not the whole of docker's fence.

:func:`container_plan` turns all that into a :class:`~engine.runtime.plan.Plan`.
The child performs its steps in this order, each for a reason:

=====  ==========================================  =====================================================
 #     steps                                       why here
=====  ==========================================  =====================================================
 1     die with the monitor (our parent), join     before anything that could leak or
       the cgroup (``echo 0 > cgroup.procs``)      escape the limits
 2     ``/`` rprivate, the overlay, /proc, /sys,   mounts need CAP_SYS_ADMIN and the host's paths
       /dev and its nodes                          (the overlay's layers, the init binary): before
                                                   pivot_root, with every capability
 3     ``--init`` binary, volumes, ``--tmpfs``     on the mounts above (a volume may go in /dev),
                                                   parents before children
 4     read-only paths, then masked paths          /proc and /sys exist now; like runc
 5     pivot_root                                  from now on "/" is the container's
 6     mkdir the working directory                 before the root may become read-only
 7     ``--read-only``: remount ``/`` read-only    after every mount point was created
 8     hostname, loopback, chdir                   inside the namespaces; cwd is now inside the root
 9     rlimits                                     raising a hard limit needs root's CAP_SYS_RESOURCE
10     bounding set                                dropping needs CAP_SETPCAP
11     user (groups, gid, uid)                     needs CAP_SETGID/CAP_SETUID; clears the
                                                   parent-death signal, so that is armed again
12     capset: permitted = effective               last: everything above needed capabilities
13     setsid + controlling tty (``-t``)           just before exec
14     execve                                      only fds 0, 1, 2 survive it (close_range)

There is no step that waits for the engine: the child needs nothing from it
once cloned, so it is cloned as vfork(2) clones (see _native/spawn.pyx), and
the engine records the container as running when its command runs.
=====  ==========================================  =====================================================
"""

from __future__ import annotations

import os

from .. import _native
from ..errors import EngineError, UsageError
from .options import CAPABILITIES, capability, capability_set
from .plan import (
    MOUNT_FLAG_NAMES, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
    MS_REMOUNT, MS_STRICTATIME, CAPABILITY_NAMES, ChangeDir, DieWithParent, DropBoundingSet, Exec, LoopbackUp,
    MakeDevice, MakeDir, Mount, MountInRoot, PivotRoot, Plan, SetCapabilities, SetHostname,
    SetNamespace, SetRlimit, SetsidCtty, SetUser, Symlink, JoinCgroup,
)
from .user import ExecUser, RootView, SetupError, check_mount_target

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

# moby oci/defaults.go: host information a container has no business reading
# (/proc/kcore is the host's memory, /proc/keys its keyrings, timer_list and
# sched_debug leak other processes' activity...). A file is hidden by
# binding /dev/null over it, a directory by an empty read-only tmpfs (runc's
# maskPath). Which of them exist depends on the kernel's configuration.
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
)
MASKED_DIRECTORIES = {"/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/devices/virtual/powercap",
                      "/sys/firmware"}

# moby oci/defaults.go: kernel knobs root in a container could turn for the
# whole host (/proc/sys is every sysctl, /proc/sysrq-trigger can reboot it).
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Where --init's binary appears inside the container. Docker uses
# /sbin/docker-init, a file it bind-mounts *into the image's /sbin* (creating
# it in the container's layer). /dev is our own tmpfs, so the image stays
# untouched and the path is the same in every image, even one without /sbin.
INIT_PATH = "/dev/init"

# moby daemon/oci_linux.go: a --tmpfs mount starts from these, then the user's options.
TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev")

# Flag words of mount(8) with their opposite, for --tmpfs options.
_FLAG_WORDS = {word: bit for _, bit, word in MOUNT_FLAG_NAMES}
_OPPOSITES = {"rw": "ro", "suid": "nosuid", "dev": "nodev", "exec": "noexec", "async": "sync",
              "atime": "noatime", "diratime": "nodiratime", "norelatime": "relatime",
              "nostrictatime": "strictatime"}
_PROPAGATION = {"private", "rprivate", "shared", "rshared", "slave", "rslave"}


def last_cap() -> int:
    """The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


def own_capabilities() -> set[int]:
    """The engine's permitted capabilities: capset(2) can give the container
    nothing outside them (a Dockyard run inside another container may lack some)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapPrm:"):
                mask = int(line.split()[1], 16)
                return {n for n in range(64) if mask >> n & 1}
    return set(CAPABILITIES.values())


def init_binary() -> str:
    """``engine/_native/dockyard-init`` (built from _native/init.c by ``pip install``)."""
    path = os.path.join(os.path.dirname(_native.__file__), "dockyard-init")
    if not os.access(path, os.X_OK):
        raise EngineError(f"--init needs {path}, which is not built: reinstall dockyard "
                          "(pip install -e .) with a C compiler and a static C library")
    return path


def container_capabilities(host_config: dict, available: set[int] | None = None) -> tuple[int, ...]:
    """The capability numbers of the container's bounding set (docker's rules,
    options.capability_set), limited to what this kernel knows.

    With ``available`` (the engine's own set): ``--privileged`` and
    ``--cap-add ALL`` get only what the engine has, as dockerd does (moby
    oci/caps GetAllCapabilities); asking by name for one it lacks is an
    error, with dockerd's message.
    """
    adds = [capability(c) for c in host_config.get("CapAdd") or ()]
    names = capability_set(adds, host_config.get("CapDrop") or (), bool(host_config.get("Privileged")))
    top = last_cap()
    numbers = [CAPABILITIES[name] for name in names if CAPABILITIES[name] <= top]
    if available is None:
        return tuple(numbers)
    if host_config.get("Privileged") or "ALL" in adds:
        return tuple(n for n in numbers if n in available)
    for n in numbers:
        if n not in available:
            raise SetupError("capability not supported by your kernel or not available in the "
                             f'current environment: "{CAPABILITY_NAMES[n]}"', "capabilities")
    return tuple(numbers)


def tmpfs_options(options: str) -> tuple[int, str]:
    """``--tmpfs`` options -> (mount flags, tmpfs data), docker's way: start
    from noexec,nosuid,nodev; a later word wins over an earlier one (``exec``
    undoes ``noexec``, a second ``size=`` replaces the first); mode, size,
    uid... go to tmpfs itself (tmpfs(5)). A tmpfs is 1777 unless ``mode=``."""
    flags = 0
    data: dict[str, str] = {}
    for word in [*TMPFS_DEFAULTS, *filter(None, options.split(","))]:
        if word in _FLAG_WORDS and word not in ("remount", "bind", "rec", "private"):
            flags |= _FLAG_WORDS[word]
        elif word in _OPPOSITES:
            flags &= ~_FLAG_WORDS[_OPPOSITES[word]]
        elif word in _PROPAGATION:
            continue  # every mount of the container is private already
        else:
            key = word.split("=", 1)[0]
            data[key] = word
    return flags, ",".join(data.values())


def user_mounts(root: str, host_config: dict, view: RootView | None = None) -> list[MountInRoot]:
    """``-v`` binds and ``--tmpfs`` mounts as steps, parents before children
    (moby sorts them by the depth of their destination)."""
    wanted = []  # (destination, steps)
    for spec in host_config.get("Binds") or []:
        source, destination, *mode = spec.split(":")
        if not os.path.exists(source):
            # docker's -v would create it as a directory on the host; its
            # --mount refuses, with this message. Dockyard refuses.
            raise SetupError(f'invalid mount config for type "bind": bind source path does not '
                             f"exist: {source}", "mounts")
        kind = "dir" if os.path.isdir(source) else "file"
        steps = [MountInRoot(root, destination, source, None, MS_BIND | MS_REC, create=kind,
                             why=f"-v {spec}: the host's {source} appears at {destination}")]
        if mode == ["ro"]:
            # The remount replaces the mount's flags: keep the ones the source
            # mount has (a nosuid host directory stays nosuid), add ro.
            keep = os.statvfs(source).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            steps.append(MountInRoot(root, destination, None, None,
                                     MS_BIND | MS_REMOUNT | MS_RDONLY | keep,
                                     why="a bind mount's flags can only be set by a remount"))
        wanted.append((destination, steps))
    for destination, options in (host_config.get("Tmpfs") or {}).items():
        flags, data = tmpfs_options(options)
        wanted.append((destination, [MountInRoot(
            root, destination, "tmpfs", "tmpfs", flags, data, create="dir",
            why=f"--tmpfs {destination}{':' + options if options else ''}: memory only, "
                "gone with the container")]))
    for destination, _ in wanted:
        if os.path.normpath(destination) == "/":
            raise UsageError("invalid mount config: destination can't be '/'")
        if view is not None:
            check_mount_target(view, destination)
    wanted.sort(key=lambda item: len([p for p in item[0].split("/") if p]))
    return [step for _, steps in wanted for step in steps]


def container_plan(overlay, argv: list[str], env: list[str], config: dict, host_config: dict | None = None,
                   *, user: ExecUser | None = None, view: RootView | None = None,
                   available_caps: set[int] | None = None, tty: bool = False,
                   die_with_parent: bool = True, cgroup_procs: list[str] | tuple = (),
                   title: str = "", network=None) -> Plan:
    """Assemble the plan for one container (see the module docstring).

    ``overlay`` is the :class:`~engine.snapshot.Overlay` of its root file
    system; every other path below is inside that root. ``config`` and
    ``host_config`` are the container record's ``Config`` and ``HostConfig``
    (hostname, working directory, run options); ``argv`` and ``env`` the
    command and its environment. ``user`` is ``--user`` already resolved
    (user.resolve_user; root when None). ``view`` (the merged root read from
    its layers) lets mount targets through a symlink be refused with a clear
    message before anything starts; ``available_caps`` (the engine's own
    capabilities) does the same for capabilities. ``tty``: stdin is a
    terminal that becomes the container's controlling terminal.
    ``cgroup_procs``: the ``cgroup.procs`` file of each of its cgroup
    directories (the engine made them, with their limits): the child joins
    them first of all. ``network``: the container's network sandbox
    (engine/network/sandbox.py): a namespace file to join instead of a new
    namespace, or none at all (``host``), and the hosts/resolv/hostname files
    to bind; without it, a new namespace with only ``lo``.
    """
    hc = host_config or {}
    user = user or ExecUser(0, 0, (0,), "/root")
    privileged = bool(hc.get("Privileged"))
    root = overlay.target
    workdir = config.get("WorkingDir") or "/"
    host_network = hc.get("NetworkMode") == "host"
    join_net = getattr(network, "join", None)
    new_net = not host_network and not join_net
    # --network host: no network namespace, the host's interfaces (docker's "host" mode).
    # A sandbox's namespace (made by the engine, with its veth): joined, not cloned.
    namespaces = NAMESPACES if new_net else tuple(ns for ns in NAMESPACES if ns != "net")
    plan = Plan(namespaces=namespaces, title=title)
    container_dir = os.path.dirname(root)
    snapshots = os.path.commonpath(overlay.lower) if len(overlay.lower) > 1 \
        else os.path.dirname(overlay.lower[0])
    plan.aliases = [("ROOT", root), ("CTR", container_dir), ("LAYERS", snapshots)]
    caps = container_capabilities(hc, available_caps)  # refuse impossible requests before anything

    # 1. Tie the child to its monitor, and to its cgroup.
    if die_with_parent:
        plan.add(DieWithParent(), "the container must not outlive its monitor, its parent: "
                 "nobody would wait for it")
    for n, procs in enumerate(cgroup_procs):
        plan.add(JoinCgroup(procs), "" if n else "into our cgroup (every hierarchy), before anything "
                 "else: all we do and become is limited and counted from now on")

    if join_net:
        plan.add(SetNamespace("net", join_net, network.join_fd),
                 "the network namespace the engine prepared (veth, address, routes): joined "
                 "before /sys is mounted, so /sys/class/net shows its interfaces")

    # 2. The root file system and the kernel's file systems.
    plan.add(Mount(None, "/", None, MS_REC | MS_PRIVATE),
             "nothing we mount from now on propagates back to the host")
    plan.add(Mount("overlay", root, "overlay", 0, overlay.options),
             "image layers read-only below, the container's own layer on top")
    plan.add(Mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV),
             "a /proc that shows only this PID namespace")
    if privileged:
        plan.add(Mount("sysfs", f"{root}/sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV),
                 "kernel and device information; --privileged: writable")
    else:
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

    # 3. --init, volumes and --tmpfs.
    if hc.get("Init"):
        plan.add(MountInRoot(root, INIT_PATH, init_binary(), None, MS_BIND, create="file"),
                 "--init: dockyard-init will be PID 1 (docker puts its tini at /sbin/docker-init)")
        plan.add(MountInRoot(root, INIT_PATH, None, None,
                             MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV),
                 "read-only: the container cannot replace the engine's binary")
    for n, (source, target) in enumerate(getattr(network, "files", ()) or ()):
        plan.add(MountInRoot(root, target, source, None, MS_BIND, create="file"),
                 "" if n else "the engine writes /etc/hosts, /etc/resolv.conf and /etc/hostname "
                 "for the container (and rewrites hosts when peers come and go)")
    for step in user_mounts(root, hc, view):
        plan.add(step)

    # 4. Read-only and masked paths (all of them skipped by --privileged, as docker).
    if not privileged:
        for n, path in enumerate(READONLY_PATHS):
            target = root + path
            plan.add(Mount(target, target, None, MS_BIND | MS_REC, if_exists=True),
                     "" if n else "read-only kernel knobs: a bind mount on itself...")
            plan.add(Mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
                           | MS_NOEXEC, if_exists=True),
                     "" if n else "...remounted read-only (keeping /proc's nosuid,nodev,noexec)")
        first = True
        for path in MASKED_PATHS:
            why = "masked: host information the container has no business reading" if first else ""
            first = False
            if path in MASKED_DIRECTORIES:
                plan.add(Mount("tmpfs", root + path, "tmpfs", MS_RDONLY, if_exists=True), why)
            else:
                plan.add(Mount(f"{root}/dev/null", root + path, None, MS_BIND, if_exists=True), why)

    # 5.-8. Enter the new root.
    plan.add(PivotRoot(root), "the overlay becomes / and the host's root is detached")
    if workdir != "/":
        plan.add(MakeDir(workdir, parents=True), "docker creates a missing working directory")
    if hc.get("ReadonlyRootfs"):
        plan.add(Mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY),
                 "--read-only: the container's layer cannot be written (/dev, /proc, volumes and "
                 "--tmpfs are other mounts and keep their own flags)")
    plan.add(SetHostname(config.get("Hostname") or "localhost"), "in the new UTS namespace only")
    if new_net:
        plan.add(LoopbackUp(), "the new network namespace has only lo, and it starts down")
    plan.add(ChangeDir(workdir), "after pivot_root: the working directory is inside the container")

    # 9.-12. Limits, then credentials, narrowest last.
    for ulimit in hc.get("Ulimits") or []:
        plan.add(SetRlimit(ulimit["Name"], int(ulimit["Soft"]), int(ulimit["Hard"])),
                 f"--ulimit {ulimit['Name']}={ulimit['Soft']}:{ulimit['Hard']}")
    plan.add(DropBoundingSet(caps, last_cap()),
             "the ceiling: no program run in the container can ever gain another capability")
    plan.add(SetUser(user.uid, user.gid, user.groups),
             f"--user {config.get('User')}" if config.get("User") else
             "root, with the image's groups for root (never the engine's groups)")
    if die_with_parent and (user.uid != 0 or user.gid != 0):
        plan.add(DieWithParent(), "a change of uid or gid cleared the parent-death signal (prctl(2))")
    plan.add(SetCapabilities(caps if user.uid == 0 else ()),
             "root's capabilities narrowed to the container's set" if user.uid == 0 else
             "a non-root user keeps no capabilities, as in docker")
    if tty:
        plan.add(SetsidCtty(), "-t: the pty becomes the controlling terminal of a new session")

    if hc.get("Init"):
        argv = [INIT_PATH, "--", *argv]
    plan.exec = Exec(tuple(argv), tuple(env))
    return plan

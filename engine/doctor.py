"""``dockyard doctor``: can this host run containers, and why each part matters.

Every check *tries the real thing* in a throw-away child process (a
namespace is unshared, an overlay and a pivot_root are really performed)
instead of guessing from version numbers, and returns a :class:`Check`:
a status, what was found, and one line on why it matters. Nothing here
prints; the CLI does.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from dataclasses import dataclass

from . import _native
from .runtime import plan as P

OK, WARN, FAIL = "ok", "warn", "FAIL"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    why: str


def in_child(fn) -> int:
    """Run ``fn()`` in a forked child; return the errno it failed with (0 = success).

    Namespaces and mounts made by the child die with it, so probing never
    changes the host.
    """
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except OSError as e:
            code = e.errno or 1
        except BaseException:
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _check(result: int) -> None:
    if result != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def probe_namespace(flag: int) -> int:
    return in_child(lambda: _check(_libc.unshare(flag)))


def probe_overlay(directory: str) -> int:
    """Mount a real overlay with its upper dir in ``directory``, in a private mount namespace."""
    with tempfile.TemporaryDirectory(dir=directory, prefix=".doctor-") as tmp:
        for d in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(tmp, d))

        def mount_overlay():
            _check(_libc.unshare(P.CLONE_NEWNS))
            _check(_libc.mount(None, b"/", None, P.MS_REC | P.MS_PRIVATE, None))
            opts = f"lowerdir={tmp}/lower,upperdir={tmp}/upper,workdir={tmp}/work".encode()
            _check(_libc.mount(b"overlay", f"{tmp}/merged".encode(), b"overlay", 0, opts))

        return in_child(mount_overlay)


def probe_pivot_root() -> int:
    """pivot_root into a tmpfs inside a private mount namespace."""
    from .runtime.spawn import SYS_PIVOT_ROOT

    with tempfile.TemporaryDirectory(prefix="dockyard-doctor-") as tmp:
        def pivot():
            _check(_libc.unshare(P.CLONE_NEWNS))
            _check(_libc.mount(None, b"/", None, P.MS_REC | P.MS_PRIVATE, None))
            _check(_libc.mount(b"tmpfs", tmp.encode(), b"tmpfs", 0, None))
            os.chdir(tmp)
            _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."))

        return in_child(pivot)


def cgroup_info() -> tuple[str, list[str]]:
    """("1" | "2" | "1 (hybrid)" | "none", controllers)."""
    base = "/sys/fs/cgroup"
    if os.path.exists(f"{base}/cgroup.controllers"):
        with open(f"{base}/cgroup.controllers") as f:
            return "2", f.read().split()
    try:
        with open("/proc/cgroups") as f:
            controllers = [line.split()[0] for line in f
                           if not line.startswith("#") and line.split()[3] == "1"]
    except OSError:
        controllers = []
    if not os.path.isdir(base) or not controllers:
        return "none", []
    version = "1 (hybrid)" if os.path.isdir(f"{base}/unified") else "1"
    return version, [c for c in controllers if os.path.isdir(f"{base}/{c}")] or controllers


def run_checks(engine) -> list[Check]:
    checks: list[Check] = []
    root = os.geteuid() == 0
    checks.append(Check("running as root", OK if root else FAIL,
                        f"euid {os.geteuid()}",
                        "namespaces, mounts and pivot_root need CAP_SYS_ADMIN"))

    native = _native.status()
    compiled = all(v == "compiled" for v in native.values())
    checks.append(Check("native core", OK if compiled else WARN,
                        ", ".join(f"{k}: {v}" for k, v in native.items()),
                        "the compiled spawner runs no Python after clone and the layer "
                        "extractor is several times faster"))

    with open("/proc/filesystems") as f:
        have_overlay = any(line.split()[-1] == "overlay" for line in f if line.strip())
    if not have_overlay:
        checks.append(Check("overlayfs", FAIL, "not in /proc/filesystems (try 'modprobe overlay')",
                            "stacks the read-only image layers under a writable container layer"))
    elif root:
        probe_dir = str(engine.layout.root if engine.layout.root.exists() else tempfile.gettempdir())
        err = probe_overlay(probe_dir)
        checks.append(Check("overlayfs", OK if err == 0 else FAIL,
                            f"mounted an overlay with its upper dir in {probe_dir}" if err == 0
                            else f"mount failed under {probe_dir}: {os.strerror(err)}",
                            "stacks the read-only image layers under a writable container layer"))
    else:
        checks.append(Check("overlayfs", WARN, "listed in /proc/filesystems (not mounted: not root)",
                            "stacks the read-only image layers under a writable container layer"))

    for ns, (flag, _, why) in P.NAMESPACES.items():
        if not root:
            checks.append(Check(f"{ns} namespace", WARN, "not probed (not root)", why))
            continue
        err = probe_namespace(flag)
        checks.append(Check(f"{ns} namespace", OK if err == 0 else FAIL,
                            "unshare(2) works" if err == 0 else f"unshare failed: {os.strerror(err)}",
                            why))

    if root:
        err = probe_pivot_root()
        checks.append(Check("pivot_root", OK if err == 0 else FAIL,
                            "pivoted into a tmpfs" if err == 0 else f"failed: {os.strerror(err)}",
                            "makes the image the container's / and detaches the host's root, "
                            "which chroot alone does not"))

    version, controllers = cgroup_info()
    wanted = {"memory", "cpu", "pids", "freezer", "cpuset"}
    missing = sorted(wanted - set(controllers))
    checks.append(Check("cgroups", OK if version != "none" and not missing else WARN,
                        f"version {version}; controllers: {' '.join(controllers) or 'none'}"
                        + (f"; missing: {' '.join(missing)}" if missing else ""),
                        "limit and account memory, CPU and processes per container "
                        "(used by resource limits and pause)"))

    from .errors import EngineError
    from .image import base
    try:
        image = engine.images.get("busybox:latest")
        checks.append(Check("busybox image", OK, f"busybox:latest is {image.short_id}",
                            "the base image the examples, notebooks and labs run"))
    except EngineError:
        have_binary = os.path.exists(base.BUSYBOX_BINARY) and base.is_static_elf(base.BUSYBOX_BINARY)
        checks.append(Check("busybox image", WARN,
                            "not built yet; " + ("it will be made from /bin/busybox on first use"
                                                 if have_binary else
                                                 "and /bin/busybox is missing or not static: "
                                                 "apt-get install busybox-static"),
                            "the base image the examples, notebooks and labs run"))
    return checks

"""What ``dockyard version`` and ``dockyard info`` report, as dictionaries."""

from __future__ import annotations

import os
import platform
import sys

from . import __version__, _native


def version(engine) -> dict:
    from .image.manifest import architecture

    return {
        "Version": __version__,
        "PythonVersion": platform.python_version(),
        "Python": sys.executable,
        "NativeCore": _native.status(),
        "Os": "linux",
        "Arch": architecture(),
        "KernelVersion": platform.release(),
        "Root": str(engine.layout.root),
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


BACKING_FS = {0xEF53: "extfs", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs",
              0x794C7630: "overlayfs"}


def info(engine) -> dict:
    from .doctor import cgroup_info
    from .snapshot import filesystem_type

    containers = engine.containers.list(all=True) if engine.layout.containers.exists() else []
    states = [c.status for c in containers]
    root = engine.layout.root
    probe = root if root.exists() else root.parent
    while not probe.exists():
        probe = probe.parent
    cgroup_version, _ = cgroup_info()
    return {
        "Containers": len(containers),
        "ContainersRunning": states.count("running"),
        "ContainersPaused": states.count("paused"),
        "ContainersStopped": len(states) - states.count("running") - states.count("paused"),
        "Images": len(engine.images.list()) if engine.layout.index.exists() else 0,
        "Driver": "overlay",
        "BackingFilesystem": BACKING_FS.get(filesystem_type(probe), hex(filesystem_type(probe))),
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version,
        "KernelVersion": platform.release(),
        "OperatingSystem": _os_name(),
        "OSType": "linux",
        "Architecture": platform.machine(),
        "NCPU": os.cpu_count(),
        "MemTotal": _memory_bytes(),
        "Name": platform.node(),
        "DockyardRootDir": str(root),
        "NativeCore": _native.status(),
    }

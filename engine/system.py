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


def disk_usage(engine) -> dict:
    """What ``system df`` reports, in the Docker API's shape (``GET /system/df``).

    Image sizes count each layer once per image; ``SharedSize`` is the part
    of an image's layers that other images use too, so deleting the image
    frees only ``Size - SharedSize``. A container's size is its writable
    layer (the overlay upper directory).
    """
    from .snapshot import tree_size

    images = engine.images.list(all=True) if engine.layout.index.exists() else []
    containers = engine.containers.list(all=True) if engine.layout.containers.exists() else []
    users: dict[str, int] = {}
    for c in containers:
        digest = (c.attrs.get("Dockyard") or {}).get("ManifestDigest")
        users[digest] = users.get(digest, 0) + 1
    layer_users: dict[str, int] = {}
    layer_size: dict[str, int] = {}
    for im in images:
        for chain, size in zip(im.chain_ids(), im.layer_sizes):
            layer_users[chain] = layer_users.get(chain, 0) + 1
            layer_size[chain] = size
    out_images = []
    for im in images:
        shared = sum(size for chain, size in zip(im.chain_ids(), im.layer_sizes) if layer_users[chain] > 1)
        out_images.append({"Id": im.id, "RepoTags": list(im.tags), "Created": im.created,
                           "Size": im.size, "SharedSize": shared,
                           "Containers": users.get(im.manifest_digest, 0)})
    out_containers = []
    for c in containers:
        upper = c.path / "upper"
        out_containers.append({"Id": c.id, "Names": ["/" + c.name], "Image": c.attrs["Config"].get("Image"),
                               "Command": " ".join([c.attrs["Path"], *c.attrs["Args"]]),
                               "SizeRw": tree_size(upper) if upper.exists() else 0,
                               "Created": c.attrs["Created"], "State": c.status})
    active_layers = {chain for im in images if users.get(im.manifest_digest)
                     for chain in im.chain_ids()}
    return {
        "LayersSize": sum(layer_size.values()),
        "ReclaimableLayersSize": sum(s for chain, s in layer_size.items() if chain not in active_layers),
        "Images": out_images,
        "Containers": out_containers,
        "Volumes": [],
        "BuildCache": [],
    }

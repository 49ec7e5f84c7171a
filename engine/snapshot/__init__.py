"""Snapshots: image layers extracted once, stacked with overlayfs.

Lifecycle of a layer snapshot (keyed by its chain id, so it names the layer
*and* everything beneath it, as containerd's snapshotters do):

    absent --extract--> snapshots/.extract-<random>/  --rename--> snapshots/<chain-hex>/
                        (invisible, removed on error)             (committed, read-only use)

Lifecycle of a container's writable layer:

    prepare(id) -> containers/<id>/{upper,work,rootfs}/ exist
    (the overlay is mounted on rootfs/ *inside the container's own mount
    namespace*, so it disappears by itself when the container's last process
    exits: nothing is ever left mounted on the host)
    remove(id)  -> the directories are deleted

Like containerd's snapshotters, this module never mounts anything: it
returns the overlay mount as data (:class:`Overlay`) and the runtime puts it
in the container's plan.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..content import ContentStore
from ..errors import EngineError, HostNotSupported
from ..layout import Layout

# The kernel copies mount options into one page (fs/namespace.c,
# copy_mount_options): an overlay whose option string is longer cannot be
# mounted. This is what limits the number of layers an image may have.
MOUNT_OPTIONS_MAX = 4095

# Mount points every container root needs, provided by a shared read-only
# layer on top of the image (Docker's "-init" layer plays the same role), so
# creating them never writes into the container's own layer.
INIT_DIRS = ("dev", "proc", "sys", "etc")
# Mount points of the files the engine writes for each container
# (engine/network/sandbox.py): here, not in the container's own layer, so
# that ``diff`` and ``commit`` do not see them (docker's "-init" layer does
# the same).
INIT_FILES = ("etc/hosts", "etc/resolv.conf", "etc/hostname")

# statfs(2) f_type values of filesystems that cannot hold an overlay upper
# directory (overlayfs needs d_type and trusted.* xattrs; see
# Documentation/filesystems/overlayfs.rst, "Upper and Lower").
UNSUITABLE_UPPER = {
    0x794C7630: "overlayfs",
    0x6969: "nfs",
    0x4D44: "vfat",
    0x65735546: "fuse",
}


@dataclass(frozen=True)
class Overlay:
    """An overlay mount described as data: ``lower`` is listed top layer first."""

    lower: tuple[str, ...]
    upper: str
    work: str
    target: str

    @property
    def options(self) -> str:
        return f"lowerdir={':'.join(self.lower)},upperdir={self.upper},workdir={self.work}"


def tree_size(path: str | os.PathLike) -> int:
    """Sum of the sizes of the files under ``path``, each inode once (like ``du -b``
    of a layer: hard links are one file, directories count nothing)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def filesystem_type(path: str | os.PathLike) -> int:
    """statfs(2) ``f_type`` of the filesystem holding ``path``.

    Python's os.statvfs does not expose the type, so this asks libc directly
    (struct statfs starts with ``long f_type``; 120 bytes covers the rest).
    """
    import ctypes

    buf = (ctypes.c_long * 15)()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(path), buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))
    return buf[0] & 0xFFFFFFFF


def check_upper_filesystem(path: str | os.PathLike) -> None:
    """Refuse a root on a filesystem that cannot hold overlay upper dirs."""
    fstype = filesystem_type(path)
    if fstype in UNSUITABLE_UPPER:
        raise HostNotSupported(
            f"the Dockyard root {path} is on {UNSUITABLE_UPPER[fstype]}, which cannot hold "
            "overlay upper directories; put the root on ext4, xfs, btrfs or tmpfs (--root or DOCKYARD_ROOT)")


class Snapshotter:
    """Extracted layers under ``snapshots/`` and container dirs under ``containers/``."""

    def __init__(self, layout: Layout, content: ContentStore):
        self.layout = layout
        self.content = content

    def init_layer(self) -> Path:
        path = self.layout.init_layer
        if not (path / INIT_FILES[-1]).exists():
            if path.exists():
                # A root made before the network files existed: add them (new
                # names only: nothing a running container already sees changes).
                for name in INIT_FILES:
                    (path / name).parent.mkdir(mode=0o755, exist_ok=True)
                    (path / name).touch(mode=0o644, exist_ok=True)
                return path
            tmp = self.layout.snapshots / f".init-{os.getpid()}-{os.urandom(4).hex()}"
            tmp.mkdir(parents=True)
            for name in INIT_DIRS:
                (tmp / name).mkdir(mode=0o755)
            for name in INIT_FILES:
                (tmp / name).touch(mode=0o644)
            try:
                os.rename(tmp, path)
            except OSError:
                shutil.rmtree(tmp)  # another process made it first
        return path

    def ensure(self, image) -> list[Path]:
        """Extract every layer of ``image`` not yet extracted; return the dirs, bottom first."""
        dirs = []
        for layer, diff_id, chain_id in zip(image.layers, image.diff_ids, image.chain_ids()):
            path = self.layout.snapshot(chain_id)
            if not path.exists():
                self._extract(layer, diff_id, path)
            dirs.append(path)
        return dirs

    def _extract(self, layer, diff_id: str, path: Path) -> None:
        from ..layer import apply_layer, layer_compression  # the compiled module when built

        self.layout.snapshots.mkdir(parents=True, exist_ok=True)
        tmp = self.layout.snapshots / f".extract-{os.getpid()}-{os.urandom(4).hex()}"
        tmp.mkdir(mode=0o755)
        try:
            with self.content.open(layer.digest) as raw:
                # One pass: the blob is hashed (its digest), decompressed, and the
                # tar hashed (its diff_id) as it is extracted.
                apply_layer(raw, str(tmp), expected_digest=layer.digest, expected_diff_id=diff_id,
                            compression=layer_compression(layer.media_type, f"layer {layer.digest}"))
            size = tree_size(tmp)
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.exists():
                    raise
                shutil.rmtree(tmp)  # extracted concurrently by another process
            self._write_info(path, size)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- sizes --------------------------------------------------------------------

    def _write_info(self, path: Path, size: int) -> None:
        from ..jsonfile import write_json
        write_json(path.with_name(path.name + ".json"), {"size": size}, durable=False)

    def size(self, chain_id: str) -> int | None:
        """Bytes of file content in an extracted layer (what docker calls its
        size), or None when the layer is not extracted here."""
        path = self.layout.snapshot(chain_id)
        info = path.with_name(path.name + ".json")
        try:
            with open(info) as f:
                return int(json.load(f)["size"])
        except (OSError, ValueError, KeyError):
            pass
        if not path.is_dir():
            return None
        size = tree_size(path)
        self._write_info(path, size)
        return size

    def prepare(self, container_id: str) -> tuple[Path, Path, Path]:
        """Create the container's upper, work and rootfs (mount point) directories."""
        base = self.layout.container(container_id)
        upper, work, rootfs = base / "upper", base / "work", base / "rootfs"
        for d in (upper, work, rootfs):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
        return upper, work, rootfs

    def overlay(self, image, container_id: str) -> Overlay:
        """The container's root filesystem mount, as data."""
        lowers = [str(p) for p in reversed(self.ensure(image))]
        lowers.insert(0, str(self.init_layer()))
        base = self.layout.container(container_id)
        overlay = Overlay(tuple(lowers), str(base / "upper"), str(base / "work"), str(base / "rootfs"))
        for p in (*overlay.lower, overlay.upper, overlay.work):
            if any(c in p for c in ",:="):
                raise EngineError(f"overlay paths may not contain ',', ':' or '=': {p}")
        if len(overlay.options) > MOUNT_OPTIONS_MAX:
            raise EngineError(
                f"image has too many layers for one overlay mount: the option string is "
                f"{len(overlay.options)} bytes, the kernel accepts {MOUNT_OPTIONS_MAX}")
        return overlay

    def remove(self, container_id: str) -> None:
        """Delete the container's directories (its writable layer is gone for good)."""
        self.remove_path(self.layout.container(container_id))

    @staticmethod
    def remove_path(path: Path) -> None:
        """rm -rf of a directory tree that belongs to Dockyard."""
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            shutil.rmtree(path)  # raise the real error this time

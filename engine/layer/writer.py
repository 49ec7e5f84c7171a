"""Write layer tars reproducibly: the same tree always gives the same bytes.

A layer's digest is the sha256 of its tar, so anything that varies between
two builds of the same content (entry order, timestamps, owner names, the
PAX headers some writers add) would give a different image ID. This writer
fixes all of them: the caller adds entries in sorted order, owners are
numeric with empty user/group names, every entry carries the caller's
mtime, and the format is POSIX ustar, with PAX extended headers only for
what ustar cannot hold (long names, big ids).
"""

from __future__ import annotations

import io
import tarfile


class LayerWriter:
    """Build a layer tar in memory.

    Lifecycle: create, ``add_*`` entries in sorted path order, then
    ``getvalue()`` once; the writer is closed after that.
    """

    def __init__(self, mtime: int):
        self.mtime = int(mtime)
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.PAX_FORMAT)
        self._last = ""

    def _info(self, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
        name = name.strip("/")
        if name <= self._last:
            raise ValueError(f"entries must be added in sorted order: {name!r} after {self._last!r}")
        self._last = name
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = self.mtime
        return info

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._tar.addfile(self._info(name + "/", tarfile.DIRTYPE, mode))

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def add_hardlink(self, name: str, target: str, mode: int = 0o755) -> None:
        info = self._info(name, tarfile.LNKTYPE, mode)
        info.linkname = target.strip("/")
        self._tar.addfile(info)

    def add_symlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._tar.addfile(info)

    def getvalue(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()

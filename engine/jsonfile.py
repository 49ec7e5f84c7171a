"""Small JSON files, replaced atomically, and the locks that guard them.

Writers never modify a file in place: they write a temporary file in the
same directory, optionally fsync it, ``rename(2)`` it over the old one (atomic
on POSIX filesystems) and, for durable writes, fsync the directory so the
rename itself survives a crash. Readers therefore see the old file or the
new one, never half of either.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path


def read_json(path: str | os.PathLike, default=None):
    """Parse a JSON file; ``default`` if it does not exist."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        if default is not None:
            return default
        raise


def write_json(path: str | os.PathLike, obj, *, durable: bool = True, indent: int | None = 2) -> None:
    """Replace ``path`` with ``obj`` as JSON, atomically.

    ``durable`` adds the two fsyncs (file, then directory) that make the new
    content survive power loss. Image metadata is durable; container state,
    rewritten on every start and stop, is only atomic (a crash can lose the
    last update, never corrupt the file).
    """
    path = Path(path)
    data = json.dumps(obj, indent=indent, sort_keys=False).encode() + b"\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that renames into it are on disk (see fsync(2))."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(path: str | os.PathLike, *, shared: bool = False):
    """Hold an flock(2) on ``path`` (created if missing) for the ``with`` block.

    flock locks belong to the open file description, so they are released
    when the process dies: a killed writer never leaves the store locked.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

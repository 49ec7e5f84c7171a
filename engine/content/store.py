"""The blob store: ingest -> verify -> atomic commit.

Lifecycle of one blob (the same protocol as containerd's content store):

1. ``store.writer()`` opens a fresh file under ``ingest/``. Nothing under
   ``blobs/`` changes; readers cannot see the blob.
2. ``writer.write(chunk)`` appends bytes and feeds the same bytes to a sha256
   as they pass, so the content is hashed while it streams and never read
   twice.
3. ``writer.commit(expected_digest, expected_size)`` fsyncs the file,
   compares size and digest with what the caller declared, and only then
   ``rename(2)``\\ s it to ``blobs/sha256/<hex>`` and fsyncs the directory.
   A mismatch raises :class:`~engine.errors.DigestMismatch` and removes the
   ingest file. A blob that already exists is simply kept (same name, same
   bytes).
4. ``writer.abort()`` (or leaving the ``with`` block on an exception) deletes
   the ingest file. Files left in ``ingest/`` by a killed process are
   leftovers that ``system check`` reports and the next writer sweeps away
   (an ingest file is named after its writer's PID); they are never visible
   as blobs.

Garbage collection and leases: a blob that no image or container refers to
is garbage, but a blob that a load or commit has just written is *not yet*
referred to -- the tag comes last. So every writer holds a **lease**
(``with store.lease(): ...``, a shared flock on ``locks/gc.lock``) from its
first blob to its index update, and the collector deletes blobs only while
holding that lock exclusively (containerd protects ingests with leases the
same way). A collector that cannot get the lock skips this round.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import DigestMismatch, StoreError
from ..jsonfile import fsync_dir, locked
from ..layout import Layout

CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    """The OCI digest string of ``data``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Writer:
    """One blob being ingested. Use as a context manager; see the module docstring."""

    def __init__(self, store: "ContentStore"):
        self._store = store
        store.layout.ingest.mkdir(parents=True, exist_ok=True)
        store.sweep_ingest()
        self._fd = None
        name = f"{os.getpid()}-{os.urandom(8).hex()}"
        self.path = store.layout.ingest / name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._hash = hashlib.sha256()
        self.size = 0
        self.digest: str | None = None

    def write(self, data) -> int:
        view = memoryview(data)
        self._hash.update(view)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(data)
        return len(data)

    def commit(self, expected_digest: str | None = None, expected_size: int | None = None,
               what: str = "blob") -> str:
        """Verify and make the blob visible under its digest; return the digest."""
        digest = "sha256:" + self._hash.hexdigest()
        try:
            if expected_size is not None and expected_size != self.size:
                raise StoreError(f"{what}: size mismatch: expected {expected_size} bytes, got {self.size}")
            if expected_digest is not None and expected_digest != digest:
                raise DigestMismatch(what, expected_digest, digest)
            os.fsync(self._fd)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = None
        target = self._store.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            # Content addressing: same name means same bytes; keep the old file.
            os.unlink(self.path)
        else:
            os.chmod(self.path, 0o444)
            os.rename(self.path, target)
            fsync_dir(target.parent)
        self.digest = digest
        return digest

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.digest is None:
            self.abort()


class ContentStore:
    """Blobs under ``<root>/blobs/sha256``. Safe for concurrent writers: the
    only shared step is an atomic rename to a name that depends on the bytes."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def path(self, digest: str) -> Path:
        try:
            return self.layout.blob(digest)
        except ValueError as e:
            raise StoreError(str(e)) from None

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the content store") from None

    def read(self, digest: str, *, verify: bool = True) -> bytes:
        """Read a small blob (a manifest or config) whole, checking its digest."""
        with self.open(digest) as f:
            data = f.read()
        if verify and sha256_digest(data) != digest:
            raise DigestMismatch(f"blob {digest}", digest, sha256_digest(data))
        return data

    def writer(self) -> Writer:
        return Writer(self)

    def put(self, data: bytes, expected_digest: str | None = None, what: str = "blob") -> str:
        """Store ``data``; return its digest. A no-op when the blob already exists."""
        digest = sha256_digest(data)
        if expected_digest is not None and expected_digest != digest:
            raise DigestMismatch(what, expected_digest, digest)
        if self.exists(digest):
            return digest
        with self.writer() as w:
            w.write(data)
            return w.commit(digest, len(data), what=what)

    def ingest(self, stream: BinaryIO, expected_digest: str | None = None,
               expected_size: int | None = None, what: str = "blob") -> str:
        """Copy a stream into the store, hashing as it goes."""
        with self.writer() as w:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                w.write(chunk)
            return w.commit(expected_digest, expected_size, what=what)

    @contextmanager
    def lease(self):
        """Protect blobs written inside the ``with`` block from garbage collection."""
        self.layout.locks.mkdir(parents=True, exist_ok=True)
        with locked(self.layout.lock("gc"), shared=True):
            yield

    @contextmanager
    def collecting(self):
        """Yield True if no lease is held (the caller may delete blobs), else False."""
        self.layout.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.layout.lock("gc"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def delete(self, digest: str) -> None:
        """Remove a blob (only the garbage collector calls this, inside ``collecting``)."""
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def stale_ingests(self) -> list[Path]:
        """Ingest files whose writer process is gone (leftovers of interrupted work)."""
        out = []
        if not self.layout.ingest.exists():
            return out
        for p in self.layout.ingest.iterdir():
            pid = p.name.split("-", 1)[0]
            if not pid.isdigit() or not os.path.exists(f"/proc/{pid}"):
                out.append(p)
        return out

    def sweep_ingest(self) -> int:
        """Delete ingest files left by dead writers; return how many."""
        stale = self.stale_ingests()
        for p in stale:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        return len(stale)

    def verify(self, digest: str) -> bool:
        """Re-hash a stored blob (used by ``system check``)."""
        h = hashlib.sha256()
        with self.open(digest) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return "sha256:" + h.hexdigest() == digest

    def digests(self) -> Iterator[str]:
        if not self.layout.blobs.exists():
            return
        for p in sorted(self.layout.blobs.iterdir()):
            yield "sha256:" + p.name

"""The build cache: may a step reuse an image made by an earlier build, and if not, why not?

Docker's classic builder caches by *images*: every step of a build commits
an image whose parent is the previous step's image. A later build reuses
that image for the same step if it finds a child of the same parent made
by the same instruction (moby ``builder/dockerfile`` ``probeCache`` and
``daemon/images/cache.go``). Dockyard keeps the same rule and writes down
what it compared, so the answer can be explained. A step's
:class:`CacheKey` is:

- ``parent``: the image the step starts from (its manifest digest);
- ``step``: the instruction *after* variable substitution (so
  ``COPY $SRC /app`` with another ``SRC`` is another step);
- ``args``: the build arguments the step can see, for RUN only (they are
  in its environment; docker's classic builder puts them in the cached
  command as ``|1 VERSION=2 /bin/sh -c ...``);
- ``sources``: for COPY/ADD, a checksum of the files copied: their paths,
  content and the metadata an image keeps -- never modification times
  (build/ignore.py, build/context.py); for ``COPY --from``, the source
  image's ID.

The key of each step is stored with the image it made (``imagedb/<m>.json``,
``"build"``), with the per-file digests behind ``sources``. A lookup scans
the children of ``parent``: an exact match is a hit; otherwise the nearest
record names the reason:

=============================================  ==========================================
what differs                                   reason printed
=============================================  ==========================================
``--no-cache`` was given                       ``--no-cache``
the parent was made by this build (a miss      ``RUN: parent changed``
above, or a new base image)
same instruction, other file digests           ``COPY app.py: content changed (app.py)``
same instruction, other build args             ``RUN: build args changed (VERSION)``
nothing like it                                ``RUN: not in cache (new or changed instruction)``
=============================================  ==========================================

A cached image removed with ``rmi`` (or pruned) simply stops being found.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

MAX_RECORDED_FILES = 5000  # per-file digests kept for explanations; the key covers all


@dataclass(frozen=True)
class CacheKey:
    parent: str
    step: str
    args: tuple[tuple[str, str], ...] = ()
    sources: str = ""
    files: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def digest(self) -> str:
        data = json.dumps([self.parent, self.step, list(map(list, self.args)), self.sources])
        return "sha256:" + hashlib.sha256(data.encode()).hexdigest()

    def record(self) -> dict:
        """What is stored with the image the step made."""
        out = {"key": self.digest, "parent": self.parent, "step": self.step,
               "args": dict(self.args), "sources": self.sources}
        if self.files and len(self.files) <= MAX_RECORDED_FILES:
            out["files"] = dict(self.files)
        return out


def sources_checksum(files: dict[str, str]) -> str:
    """One digest over {path: entry digest}; paths sorted, so order never matters."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode("utf-8", "surrogateescape") + b"\0" + files[path].encode() + b"\n")
    return "sha256:" + h.hexdigest()


class BuildCache:
    """The cache records of one root's images, read once per build."""

    def __init__(self, image_store):
        self.store = image_store
        self._by_parent: dict[str, list[tuple[str, dict]]] = {}
        for digest in dict.fromkeys(d for d, _, _ in image_store._entries()):
            record = image_store.meta(digest).get("build")
            if isinstance(record, dict) and "parent" in record:
                self._by_parent.setdefault(record["parent"], []).append((digest, record))

    def add(self, manifest_digest: str, key: CacheKey) -> None:
        self._by_parent.setdefault(key.parent, []).append((manifest_digest, key.record()))

    def lookup(self, key: CacheKey, label: str) -> tuple[str | None, str | None]:
        """(manifest digest of the cached image, None) on a hit, else (None, reason)."""
        candidates = self._by_parent.get(key.parent, [])
        wanted = key.digest
        for digest, record in reversed(candidates):  # the newest first
            if record.get("key") == wanted:
                return digest, None
        same_step = [r for _, r in candidates if r.get("step") == key.step]
        for record in reversed(same_step):
            if record.get("args", {}) == dict(key.args) and record.get("sources") != key.sources:
                changed = _changed_files(record.get("files"), key.files)
                return None, f"{label}: content changed" + (f" ({changed})" if changed else "")
        for record in reversed(same_step):
            if record.get("sources") == key.sources:
                old, new = record.get("args", {}), dict(key.args)
                names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                return None, f"{label}: build args changed ({', '.join(names)})"
        return None, f"{label}: not in cache (new or changed instruction)"


def _changed_files(old: dict | None, new: dict) -> str:
    """A short list of what changed: ``app.py, +new.txt, -gone.txt`` (at most 5 names)."""
    if not old:
        return ""
    names = [p for p in sorted(set(old) | set(new)) if old.get(p) != new.get(p)]
    shown = [("+" if p not in old else "-" if p not in new else "") + p for p in names[:5]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")

"""``commit`` and ``diff``: what a container changed, and keeping it as an image.

A container's changes are exactly its overlay *upper* directory: files it
created or modified (copied up), and overlayfs' records of what it deleted
-- a 0/0 character device for a deleted file (a *whiteout*) and the xattr
``trusted.overlay.opaque=y`` on a directory whose lower contents are hidden.

``diff`` reads that directory and compares it with the image's layers:

- ``A /path``: added (not in the image),
- ``C /path``: changed (in the image, and copied up or modified),
- ``D /path``: deleted (a whiteout, or hidden by an opaque directory).

``commit`` turns the same directory into a layer tar (whiteouts become the
OCI ``.wh.`` entries, engine/layer) and stacks it on the container's image:
the new image's config is the container's configuration (with any ``-c``
changes), its history gains one entry, and its *parent* is the container's
image (docker's commit does the same, daemon/images/image_commit.go). A
commit that changed nothing adds no layer, only an ``empty_layer`` history
entry, as docker.

Crash safety: every blob is written under a content lease and the tag comes
last, in one atomic index update; a commit killed half-way leaves only
unreferenced blobs, which the garbage collector removes.
"""

from __future__ import annotations

import copy
import os
import stat

from ..errors import EngineError
from ..image import reference

WHITEOUT_XATTR = "trusted.overlay.opaque"


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, WHITEOUT_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class LowerView:
    """Answer "does /path exist in the image?" from the extracted layer dirs,
    respecting the whiteouts and opaque directories of the layers themselves."""

    def __init__(self, layer_dirs_top_first: list[str]):
        self.layers = layer_dirs_top_first

    def exists(self, rel: str) -> bool:
        parts = rel.split("/")
        for layer in self.layers:
            # In this layer, an ancestor that is a whiteout or not a directory
            # deletes the path; an opaque ancestor hides the layers below.
            hidden = False
            for i in range(1, len(parts)):
                ancestor = os.path.join(layer, *parts[:i])
                try:
                    st = os.lstat(ancestor)
                except (FileNotFoundError, NotADirectoryError):
                    break  # not in this layer at all
                if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                    return False
                hidden = hidden or _is_opaque(ancestor)
            try:
                st = os.lstat(os.path.join(layer, rel))
            except (FileNotFoundError, NotADirectoryError):
                if hidden:
                    return False
                continue
            return not _is_whiteout(st)
        return False

    def children(self, rel: str) -> set[str]:
        """Names under directory ``rel`` in the merged image view."""
        names: set[str] = set()
        hidden: set[str] = set()
        for layer in self.layers:
            path = os.path.join(layer, rel)
            if not os.path.isdir(path) or os.path.islink(path):
                continue
            for name in os.listdir(path):
                if name in names or name in hidden:
                    continue
                if _is_whiteout(os.lstat(os.path.join(path, name))):
                    hidden.add(name)
                else:
                    names.add(name)
            if _is_opaque(path):
                break
        return names


def changes(engine, container) -> list[tuple[str, str]]:
    """``docker diff``: [("A"|"C"|"D", "/path"), ...] sorted by path."""
    image = engine.image_store.load(container.attrs["Dockyard"]["ManifestDigest"])
    lower = LowerView([str(p) for p in reversed(engine.snapshots.ensure(image))])
    upper = str(container.path / "upper")
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(dirnames + filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if _is_whiteout(st):
                out.append(("D", "/" + rel))
                continue
            out.append(("C" if lower.exists(rel) else "A", "/" + rel))
            if stat.S_ISDIR(st.st_mode) and _is_opaque(full) and lower.exists(rel):
                present = set(os.listdir(full))
                for gone in sorted(lower.children(rel) - present):
                    out.append(("D", f"/{rel}/{gone}"))
    out.sort(key=lambda change: change[1])
    return out


def commit(engine, container, repository: str | None = None, *, message: str = "",
           author: str = "", changes: list[str] | None = None):
    """``docker commit``: a new image = the container's image + its writable layer."""
    from ..image.changes import apply as apply_changes
    from ..image.child import make_child

    tag = str(reference.parse(repository)) if repository else None  # refuse bad names first
    base = engine.image_store.load(container.attrs["Dockyard"]["ManifestDigest"])
    run_config = apply_changes(copy.deepcopy(container.attrs["Config"]), changes or [])
    upper = container.path / "upper"
    if not upper.is_dir():
        raise EngineError(f"container {container.name} has no writable layer to commit")
    entry = {"created_by": " ".join(container.attrs["Config"].get("Cmd") or [])}
    if author:
        entry["author"] = author
    if message:
        entry["comment"] = message
    return make_child(engine, base, run_config=run_config, entry=entry, upper=str(upper), tag=tag,
                      author=author or None, container_id=container.id)

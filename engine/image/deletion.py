"""``rmi`` and ``image prune``: docker's rules for untagging and deleting images.

Removing an image by *name* first removes that tag ("Untagged: ..."). If the
image still has other tags, that is all. If it was the last one, the image
itself is deleted ("Deleted: sha256:...") -- and then its parent too, if the
parent is now an untagged image nobody uses (unless ``--no-prune``).

Removing by *ID* deletes the image and all its tags, but an image tagged in
several repositories needs ``-f``.

What stops a deletion (moby's daemon/images/image_delete.go calls these
conflicts):

- *hard* (``-f`` does not help): the image has child images; a running
  container uses it;
- *soft* (``-f`` overrides): a stopped container uses it; it is still tagged.

Deleting removes the image from the tag index; the blobs and extracted
layers that no image or container needs any more are then reclaimed by the
garbage collector (engine/gc.py).
"""

from __future__ import annotations

from ..errors import Conflict
from . import reference


def _containers_using(engine, image) -> list:
    return [c for c in engine.containers.list(all=True)
            if (c.attrs.get("Dockyard") or {}).get("ManifestDigest") == image.manifest_digest]


def _conflict(engine, image, force: bool) -> str | None:
    """docker's checkImageDeleteConflict: the reason not to delete, or None."""
    short = image.short_id
    if image.children:
        return f"conflict: unable to delete {short} (cannot be forced) - image has dependent child images"
    users = _containers_using(engine, image)
    running = [c for c in users if c.status in ("running", "paused")]
    if running:
        return (f"conflict: unable to delete {short} (cannot be forced) - image is being used "
                f"by running container {running[0].short_id}")
    if not force:
        if users:
            return (f"conflict: unable to delete {short} (must be forced) - image is being used "
                    f"by stopped container {users[0].short_id}")
        if image.tags:
            return (f"conflict: unable to delete {short} (must be forced) - image is referenced "
                    "in one or more repositories")
    return None


def _delete(engine, image, records: list, *, force: bool, prune: bool, quiet: bool) -> None:
    """docker's imageDeleteHelper: delete ``image`` (and prune its parents)."""
    reason = _conflict(engine, image, force)
    if reason is not None:
        if quiet and (not image.dangling or _containers_using(engine, image)):
            return  # pruning parents stops quietly at the first image still needed
        raise Conflict(reason)
    for tag in image.tags:
        engine.image_store.untag(tag)
        records.append(("Untagged", tag))
    parent = image.parent
    engine.image_store.delete(image.manifest_digest)
    records.append(("Deleted", image.id))
    if prune and parent:
        try:
            parent_image = engine.image_store.load(parent)
        except Exception:
            return  # the parent is not here (any more)
        _delete(engine, parent_image, records, force=False, prune=True, quiet=True)


def remove(engine, name: str, *, force: bool = False, prune: bool = True) -> list[tuple[str, str]]:
    """Untag and/or delete what ``name`` refers to; return docker's output lines
    as (verb, what) pairs: ("Untagged", "busybox:latest"), ("Deleted", "sha256:...")."""
    image = engine.images.get(name)
    records: list[tuple[str, str]] = []
    by_id = _is_id_of(name, image)
    if not by_id:
        tag = str(reference.parse(name))
        if tag not in image.tags:  # e.g. name@digest: treat as the image itself
            by_id = True
    if not by_id:
        users = _containers_using(engine, image)
        if users and len(image.tags) == 1 and not force:
            raise Conflict(f'conflict: unable to remove repository reference "{name}" (must force) '
                           f"- container {users[0].short_id} is using its referenced image "
                           f"{image.short_id}")
        engine.image_store.untag(tag)
        records.append(("Untagged", tag))
        image = engine.image_store.load(image.manifest_digest)
        if image.tags:
            return records  # still tagged elsewhere: untagging was all
        _delete(engine, image, records, force=force, prune=prune, quiet=True)
    else:
        if len(image.tags) > 1 and not force:
            raise Conflict(f"conflict: unable to delete {image.short_id} (must be forced) - "
                           "image is referenced in multiple repositories")
        _delete(engine, image, records, force=force, prune=prune, quiet=False)
    engine.collect_garbage()
    return records


def _is_id_of(name: str, image) -> bool:
    bare = name.removeprefix("sha256:")
    return bool(reference.looks_like_id(name)) and (
        image.id.removeprefix("sha256:").startswith(bare)
        or image.manifest_digest.removeprefix("sha256:").startswith(bare))


def prune(engine, *, all: bool = False) -> tuple[list[tuple[str, str]], int]:
    """``image prune [-a]``: delete dangling images (with ``all``, every image no
    container uses). Returns the records and the bytes reclaimed."""
    from .. import gc

    records: list[tuple[str, str]] = []
    before = sum(engine.content.size(d) for d in engine.content.digests())
    used = {(c.attrs.get("Dockyard") or {}).get("ManifestDigest")
            for c in engine.containers.list(all=True)}
    for image in engine.image_store.list(all=True):
        if image.children or image.manifest_digest in used:
            continue  # only top images nobody runs, as docker's ImagesPrune
        if not all and image.tags:
            continue
        try:
            current = engine.image_store.load(image.manifest_digest)
        except Exception:
            continue  # removed already while pruning a child
        if current.tags and all:
            for tag in list(current.tags):
                records.extend(remove(engine, tag, force=False, prune=True))
        else:
            try:
                _delete(engine, current, records, force=False, prune=True, quiet=False)
            except Conflict:
                continue
    gc.collect(engine)
    after = sum(engine.content.size(d) for d in engine.content.digests())
    return records, max(0, before - after)

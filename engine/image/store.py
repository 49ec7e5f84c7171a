"""The images a root holds, and their tags.

The tag index is ``<root>/index.json``, an OCI image index (image-layout.md):
one entry per (manifest, tag), the tag in the annotation
``org.opencontainers.image.ref.name`` as ``busybox:latest``. An image whose
last tag moved to another image keeps an entry without a name: that is a
*dangling* image, ``<none>:<none>`` in ``dockyard images``.

What OCI has no field for -- which image an image was made from (its
*parent*, set by ``commit`` and builds) and when it was last tagged -- lives
beside the index in ``imagedb/<manifest-hex>.json``. Parents decide what
docker calls *intermediate* images (untagged, with children: hidden unless
``images -a``) and *dangling* ones (untagged, no children: ``<none>:<none>``,
removed by ``image prune``).

Readers load the JSON without locking (it is replaced atomically); writers
hold ``locks/index.lock`` and replace the file durably. The blobs an entry
points to are always committed before the entry is written, so a crash can
leave an unreferenced blob (reported by ``system check``), never a tag that
points at nothing.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from ..content import ContentStore
from ..errors import ImageNotFound, InvalidReference, StoreError
from ..jsonfile import locked, read_json, write_json
from ..layout import Layout
from . import mediatype, reference
from .manifest import Descriptor, Manifest, chain_ids, check_config

EMPTY_INDEX = {"schemaVersion": 2, "mediaType": mediatype.OCI_INDEX, "manifests": []}


class Image:
    """One image: a manifest, its config, and the tags that point at it.

    The attributes follow docker-py's ``Image``: ``id`` (the config digest),
    ``short_id``, ``tags`` and ``attrs`` (what ``inspect`` prints).
    """

    def __init__(self, manifest_digest: str, manifest: Manifest, config: dict, tags: list[str],
                 manifest_size: int, meta: dict | None = None):
        self.manifest_digest = manifest_digest
        self.manifest = manifest
        self.manifest_size = manifest_size
        self.config = config
        self.tags = tags
        self.meta = meta or {}
        self.children: list[str] = []  # manifest digests of images made from this one
        self.parent_id = ""            # the parent's image ID, filled in by ImageStore
        self.snapshot_sizes: list[int | None] = []  # per layer, once extracted

    @property
    def parent(self) -> str | None:
        """The manifest digest of the image this one was made from, if known."""
        return self.meta.get("parent") or None

    @property
    def dangling(self) -> bool:
        """Untagged and nobody's parent: docker's ``<none>:<none>`` (虚悬镜像)."""
        return not self.tags and not self.children

    @property
    def intermediate(self) -> bool:
        """Untagged but the parent of another image (中间层镜像): shown only by ``images -a``."""
        return not self.tags and bool(self.children)

    @property
    def labels(self) -> dict:
        return self.run_config.get("Labels") or {}

    @property
    def id(self) -> str:
        return self.manifest.config.digest

    @property
    def short_id(self) -> str:
        return self.id.partition(":")[2][:12]

    @property
    def run_config(self) -> dict:
        """The ``config`` section: Env, Cmd, Entrypoint, WorkingDir, User..."""
        return self.config.get("config") or {}

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config["rootfs"]["diff_ids"])

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.manifest.layers

    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)

    @property
    def layer_sizes(self) -> list[int]:
        """Each layer's size as docker reports it: the bytes of file content
        once extracted (recorded by the snapshotter), else the stored blob."""
        known = self.snapshot_sizes or [None] * len(self.layers)
        return [k if k is not None else layer.size for k, layer in zip(known, self.layers)]

    @property
    def size(self) -> int:
        return sum(self.layer_sizes)

    @property
    def created(self) -> str:
        return self.config.get("created") or "0001-01-01T00:00:00Z"

    @property
    def attrs(self) -> dict:
        """The image as ``docker image inspect`` shapes it."""
        history = self.config.get("history") or []
        return {
            "Id": self.id,
            "RepoTags": list(self.tags),
            "RepoDigests": [],
            "Parent": self.parent_id,
            "Comment": (history[-1].get("comment", "") if history else ""),
            "Created": self.created,
            "DockerVersion": "",
            "Author": self.config.get("author", ""),
            "Config": self.run_config,
            "Architecture": self.config.get("architecture", ""),
            "Os": self.config.get("os", ""),
            "Size": self.size,
            "RootFS": {"Type": "layers", "Layers": self.diff_ids},
            "Descriptor": {"mediaType": self.manifest.media_type,
                           "digest": self.manifest_digest, "size": self.manifest_size},
            "Metadata": {"LastTagTime": self.meta.get("last_tag_time") or "0001-01-01T00:00:00Z"},
        }

    def __repr__(self) -> str:
        return f"<Image: {', '.join(repr(t) for t in self.tags) or self.short_id}>"


class ImageStore:
    """Images of one root: look up by reference or ID, list, tag."""

    def __init__(self, layout: Layout, content: ContentStore):
        self.layout = layout
        self.content = content

    # -- the index -----------------------------------------------------------

    def _index(self) -> dict:
        try:
            index = read_json(self.layout.index, default=None)
        except FileNotFoundError:
            index = {**EMPTY_INDEX, "manifests": []}  # a fresh copy: callers modify it
        except ValueError as e:
            raise StoreError(f"{self.layout.index}: corrupt tag index: {e}") from None
        if not isinstance(index.get("manifests"), list):
            raise StoreError(f"{self.layout.index}: not an OCI image index")
        return index

    def _entries(self) -> list[tuple[str, str | None, dict]]:
        """(manifest digest, tag or None, entry) for every index entry."""
        out = []
        for entry in self._index()["manifests"]:
            name = (entry.get("annotations") or {}).get(mediatype.REF_NAME)
            out.append((entry["digest"], name, entry))
        return out

    def add(self, manifest_digest: str, tag: str | None = None, *, parent: str | None = None) -> None:
        """Record that ``manifest_digest`` is an image, optionally under ``tag``.

        The tag moves here from any other image; an image left with no tag
        stays in the index without a name (dangling), as docker keeps it.
        ``parent`` (a manifest digest) records what the image was made from.
        """
        if tag is not None:
            tag = str(reference.parse(tag))
        meta = {}
        if parent:
            meta["parent"] = parent
        if tag is not None:
            meta["last_tag_time"] = now_rfc3339()
        if meta:
            self.set_meta(manifest_digest, **meta)
        size = self.content.size(manifest_digest)
        data = self.content.read(manifest_digest)
        manifest = Manifest.parse(data, f"manifest {manifest_digest}")
        self.layout.create()
        with locked(self.layout.lock("index")):
            index = self._index()
            entries = index["manifests"]
            kept = []
            orphaned = set()
            for entry in entries:
                name = (entry.get("annotations") or {}).get(mediatype.REF_NAME)
                if name is None and entry["digest"] == manifest_digest:
                    continue  # replaced below
                if tag is not None and name == tag:
                    if entry["digest"] != manifest_digest:
                        orphaned.add(entry["digest"])
                    continue
                kept.append(entry)
            still_named = {e["digest"] for e in kept}
            for digest in sorted(orphaned - still_named):
                old = next(e for e in entries if e["digest"] == digest)
                kept.append({k: v for k, v in old.items() if k != "annotations"})
            new = {"mediaType": manifest.media_type, "digest": manifest_digest, "size": size}
            if tag is not None:
                new["annotations"] = {mediatype.REF_NAME: tag}
            if tag is not None or manifest_digest not in still_named:
                kept.append(new)
            index["manifests"] = kept
            write_json(self.layout.index, index)

    def untag(self, tag: str) -> str:
        """Remove one tag; return the manifest digest it named. The image stays
        (untagged) -- deciding whether to delete it is the caller's policy."""
        tag = str(reference.parse(tag))
        with locked(self.layout.lock("index")):
            index = self._index()
            entries = index["manifests"]
            target = next((e for e in entries
                           if (e.get("annotations") or {}).get(mediatype.REF_NAME) == tag), None)
            if target is None:
                raise ImageNotFound(f"No such image: {tag}")
            entries.remove(target)
            digest = target["digest"]
            if not any(e["digest"] == digest for e in entries):
                entries.append({k: v for k, v in target.items() if k != "annotations"})
            write_json(self.layout.index, index)
        return digest

    def delete(self, manifest_digest: str) -> None:
        """Forget an image: every index entry for it, and its metadata. Its
        blobs become garbage for engine/gc.py (unless shared)."""
        with locked(self.layout.lock("index")):
            index = self._index()
            index["manifests"] = [e for e in index["manifests"] if e["digest"] != manifest_digest]
            write_json(self.layout.index, index)
        try:
            os.unlink(self._meta_path(manifest_digest))
        except FileNotFoundError:
            pass

    def _snapshot_size(self, chain_id: str) -> int | None:
        """The size the snapshotter recorded when it extracted the layer, if it did."""
        try:
            with open(self.layout.snapshots / f"{chain_id.partition(':')[2]}.json") as f:
                return int(json.load(f)["size"])
        except (OSError, ValueError, KeyError):
            return None

    # -- metadata OCI has no field for -----------------------------------------

    def _meta_path(self, manifest_digest: str):
        return self.layout.imagedb / f"{manifest_digest.partition(':')[2]}.json"

    def meta(self, manifest_digest: str) -> dict:
        try:
            return read_json(self._meta_path(manifest_digest))
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}

    def set_meta(self, manifest_digest: str, **fields) -> None:
        self.layout.imagedb.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta(manifest_digest), **fields}
        write_json(self._meta_path(manifest_digest), meta)

    # -- lookups ---------------------------------------------------------------

    def load(self, manifest_digest: str, tags: list[str] | None = None) -> Image:
        data = self.content.read(manifest_digest)
        manifest = Manifest.parse(data, f"manifest {manifest_digest}")
        config_bytes = self.content.read(manifest.config.digest)
        try:
            config = json.loads(config_bytes)
        except ValueError as e:
            raise StoreError(f"config {manifest.config.digest}: not JSON: {e}") from None
        check_config(config, f"config {manifest.config.digest}")
        if len(config["rootfs"]["diff_ids"]) != len(manifest.layers):
            raise StoreError(f"image {manifest_digest}: {len(manifest.layers)} layers but "
                             f"{len(config['rootfs']['diff_ids'])} diff_ids")
        entries = None
        if tags is None:
            entries = self._entries()
            tags = [name for digest, name, _ in entries if digest == manifest_digest and name]
        image = Image(manifest_digest, manifest, config, tags, len(data), self.meta(manifest_digest))
        image.snapshot_sizes = [self._snapshot_size(c) for c in image.chain_ids()]
        if entries is not None:  # a single lookup: fill in family links too
            present = {d for d, _, _ in entries}
            image.children = [d for d in present if d != manifest_digest
                              and self.meta(d).get("parent") == manifest_digest]
            if image.parent in present:
                image.parent_id = self._config_digest(image.parent)
        return image

    def list(self, all: bool = True) -> list[Image]:
        """Images newest first, each once with all its tags.

        With ``all=False`` the intermediate images (untagged parents of other
        images) are left out, as ``docker images`` leaves them out.
        """
        by_digest: dict[str, list[str]] = {}
        for digest, name, _ in self._entries():
            by_digest.setdefault(digest, [])
            if name:
                by_digest[digest].append(name)
        images = {d: self.load(d, tags) for d, tags in by_digest.items()}
        for image in images.values():
            parent = images.get(image.parent or "")
            if parent is not None:
                parent.children.append(image.manifest_digest)
                image.parent_id = parent.id
        out = [im for im in images.values() if all or not im.intermediate]
        out.sort(key=lambda im: im.created, reverse=True)
        return out

    def find(self, name: str) -> str | None:
        """The manifest digest a user's ``name`` refers to, or None.

        ``name`` is a reference (``busybox``, ``busybox:1.35``,
        ``busybox@sha256:...``) or an image ID / unique ID prefix.
        """
        entries = self._entries()
        try:
            ref = reference.parse(name)
        except InvalidReference:
            ref = None
            if not reference.looks_like_id(name):
                raise
        if ref is not None:
            if ref.digest is not None:
                for digest, tag, _ in entries:
                    if digest == ref.digest:
                        return digest
            else:
                wanted = str(ref)
                for digest, tag, _ in entries:
                    if tag == wanted:
                        return digest
        if reference.looks_like_id(name):
            prefix = name if name.startswith("sha256:") else "sha256:" + name
            matches = set()
            for digest, _, _ in entries:
                config_digest = self._config_digest(digest)
                if config_digest.startswith(prefix) or digest.startswith(prefix):
                    matches.add(digest)
            if len(matches) == 1:
                return matches.pop()
            if len(matches) > 1:
                raise ImageNotFound(f"image ID prefix {name!r} is ambiguous ({len(matches)} images)")
        return None

    def get(self, name: str) -> Image:
        """The image ``name`` refers to; :class:`ImageNotFound` if there is none."""
        digest = self.find(name)
        if digest is None:
            raise ImageNotFound(f"No such image: {_display(name)}")
        return self.load(digest)

    def _config_digest(self, manifest_digest: str) -> str:
        data = self.content.read(manifest_digest, verify=False)
        return json.loads(data)["config"]["digest"]


def _display(name: str) -> str:
    try:
        return str(reference.parse(name))
    except InvalidReference:
        return name


def now_rfc3339() -> str:
    """The current UTC time as Docker prints it (RFC 3339 with nanoseconds)."""
    t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"

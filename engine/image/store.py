"""The images a root holds, and their tags.

The tag index is ``<root>/index.json``, an OCI image index (image-layout.md):
one entry per (manifest, tag), the tag in the annotation
``org.opencontainers.image.ref.name`` as ``busybox:latest``. An image whose
last tag moved to another image keeps an entry without a name: that is a
*dangling* image, ``<none>:<none>`` in ``dockyard images``.

Readers load the JSON without locking (it is replaced atomically); writers
hold ``locks/index.lock`` and replace the file durably. The blobs an entry
points to are always committed before the entry is written, so a crash can
leave an unreferenced blob (reported by ``system check``), never a tag that
points at nothing.
"""

from __future__ import annotations

import json
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
                 manifest_size: int):
        self.manifest_digest = manifest_digest
        self.manifest = manifest
        self.manifest_size = manifest_size
        self.config = config
        self.tags = tags

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
    def size(self) -> int:
        """Bytes of layer content (the layer blobs as stored)."""
        return sum(layer.size for layer in self.layers)

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
            "Parent": "",
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
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
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

    def add(self, manifest_digest: str, tag: str | None = None) -> None:
        """Record that ``manifest_digest`` is an image, optionally under ``tag``.

        The tag moves here from any other image; an image left with no tag
        stays in the index without a name (dangling), as docker keeps it.
        """
        if tag is not None:
            tag = str(reference.parse(tag))
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
        if tags is None:
            tags = [name for digest, name, _ in self._entries()
                    if digest == manifest_digest and name]
        return Image(manifest_digest, manifest, config, tags, len(data))

    def list(self) -> list[Image]:
        """Every image, newest first, each once with all its tags."""
        by_digest: dict[str, list[str]] = {}
        for digest, name, _ in self._entries():
            by_digest.setdefault(digest, [])
            if name:
                by_digest[digest].append(name)
        images = [self.load(d, tags) for d, tags in by_digest.items()]
        images.sort(key=lambda im: im.created, reverse=True)
        return images

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

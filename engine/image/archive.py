"""``save`` and ``load``: images to and from tar archives that docker, podman
and skopeo read and write.

What ``dockyard save`` writes
-----------------------------

One uncompressed tar holding *two* descriptions of the same blobs, as
Docker 25+ writes (moby image/tarexport/save.go), so that both old and new
readers understand it::

    blobs/                       \\
    blobs/sha256/                 } every manifest, config and layer blob,
    blobs/sha256/<hex>           /  byte for byte as stored (digests unchanged)
    index.json       OCI image layout (image-layout.md): one descriptor per
                     image and tag, annotated io.containerd.image.name =
                     "docker.io/library/busybox:latest" and
                     org.opencontainers.image.ref.name = "latest"
    manifest.json    docker-archive: [{"Config": "blobs/sha256/<hex>",
                     "RepoTags": ["busybox:latest"], "Layers": [...]}]
    oci-layout       {"imageLayoutVersion": "1.0.0"}
    repositories     {"busybox": {"latest": "<hex of the top layer>"}}, the
                     pre-1.10 file: Docker 25 writes the top layer's name in
                     the archive (its diff_id, blobs being uncompressed there)

The archive is reproducible: entries in sorted order, every mtime 0,
numeric owners, so saving the same images twice gives the same bytes. An
image saved by ID (or by digest) has no tags: ``"RepoTags": null`` in
manifest.json, and a descriptor without annotations in index.json
(containerd's exporter does the same).

What ``dockyard load`` accepts
------------------------------

- docker-archive, the classic layout (``<id>/layer.tar``, ``<id>/json``,
  ``<config-hex>.json``, manifest.json, repositories -- what docker before
  25 and ``skopeo copy ... docker-archive:`` write, the latter with
  ``<id>/layer.tar`` as a symlink to ``<diff-id>.tar``) or the blobs
  layout above;
- OCI image layout archives (``skopeo copy ... oci-archive:``): oci-layout +
  index.json + blobs, nested indexes resolved to linux/<this arch>;
- either of them compressed as a whole with gzip (or zstd, bzip2, xz).

Lifecycle of one load (containerd's archive importer works the same way,
core/images/archive/importer.go)::

    stream --sniff/decompress--> tar members, read ONCE, front to back
        blobs/sha256/<hex>  -> content store, hashed while streaming; must hash to <hex>
        small JSON (<=16 MiB: manifest.json, index.json, <hex>.json...) -> memory
        other files (layer.tar, <hex>.tar) -> content store, named by their hash
        symlinks / hard links -> aliases of other members
    assemble: index.json (preferred) and/or manifest.json -> images
        (a classic docker-archive gets an OCI manifest generated for it,
        deterministically, so load -> save -> load keeps every digest)
    verify: descriptor sizes and digests, config shape, every layer against
        rootfs.diff_ids (decompressing compressed ones), then extract the
        layers (docker unpacks at load time; extraction checks them again)
    commit: one atomic index update per tag ("Loaded image: busybox:latest")

Stdin cannot seek and manifest.json may come last, hence one pass that
keeps everything until the end. The content lease is held from the first
blob to the last tag so the garbage collector never takes a blob a load is
about to use; if anything fails, the lease is released and the collector
runs, so the store is left as it was. Nothing is visible in ``images``
before the commit step.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from ..errors import EngineError, ImageNotFound, InvalidReference, UsageError
from . import mediatype, reference
from .manifest import Descriptor, Manifest, architecture, canonical, check_config
from .tarball import (
    CHUNK, END_OF_ARCHIVE, MAX_MEMBER_SIZE, ArchiveError, Inflater, TarReader, collect_garbage,
    entry, member_name, open_stream, padding, sniff, tar_header,
)

# containerd's annotation for the full image name (core/images/annotations.go);
# docker 25+ writes it beside the OCI ref.name, which holds only the tag.
IMAGE_NAME = "io.containerd.image.name"
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'  # byte for byte what docker writes
MAX_JSON = 16 << 20   # JSON documents are kept in memory; containerd allows 20 MiB
TOP_LEVEL_JSON = ("manifest.json", "index.json", "oci-layout", "repositories")
BLOB_NAME = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
INDEXES = (mediatype.OCI_INDEX, mediatype.DOCKER_MANIFEST_LIST)
MAX_NESTING = 4


# == save =========================================================================


@dataclass
class SaveItem:
    """One image to save and the tags to record for it (none when saved by ID)."""

    image: object
    tags: list[str] = field(default_factory=list)


def resolve(engine, names: list[str]) -> list[SaveItem]:
    """Which images and tags ``save NAME...`` means, in the order given.

    As docker (tarexport's parseNames): ``busybox:1.0`` is that tag;
    ``busybox`` (no tag) is *every* tag of the repository; an ID (``3f2a``,
    ``sha256:3f2a...``) or a ``name@digest`` is the image without tags.
    """
    store = engine.image_store
    items: dict[str, SaveItem] = {}

    def add(image, tag: str | None) -> None:
        item = items.setdefault(image.manifest_digest, SaveItem(image))
        if tag and tag not in item.tags:
            item.tags.append(tag)

    for name in names:
        try:
            ref = reference.parse(name)
        except InvalidReference:
            if not reference.looks_like_id(name):
                raise
            add(store.get(name), None)
            continue
        if ref.digest is not None or ref.familiar_name == "sha256":
            add(store.get(name), None)  # name@digest, or an ID written sha256:<prefix>
            continue
        if ":" not in name.rsplit("/", 1)[-1]:  # a repository without a tag
            found = False
            for image in store.list():
                for tag in image.tags:
                    if reference.parse(tag).familiar_name == ref.familiar_name:
                        add(image, tag)
                        found = True
            if not found:
                add(store.get(name), None)  # an ID prefix, or "No such image"
            continue
        digest = store.find(str(ref))
        if digest is None:
            raise ImageNotFound(f"No such image: {ref}")
        add(store.load(digest), str(ref))
    return list(items.values())


def _platform(config: dict) -> dict:
    platform = {"architecture": config.get("architecture", ""), "os": config.get("os", "")}
    if config.get("variant"):
        platform["variant"] = config["variant"]
    return platform


def _documents(items: list[SaveItem]) -> tuple[dict[str, bytes], dict[str, int]]:
    """(the JSON files by name, every blob to include: digest -> size)."""
    blobs: dict[str, int] = {}
    descriptors, manifest_json, repositories = [], [], {}
    for item in items:
        image = item.image
        blobs[image.manifest_digest] = image.manifest_size
        blobs[image.manifest.config.digest] = image.manifest.config.size
        for layer in image.layers:
            blobs[layer.digest] = layer.size
        descriptor = {"mediaType": image.manifest.media_type, "digest": image.manifest_digest,
                      "size": image.manifest_size}
        layers = [f"blobs/sha256/{layer.digest.partition(':')[2]}" for layer in image.layers]
        for tag in item.tags:
            ref = reference.parse(tag)
            descriptors.append({**descriptor,
                                "annotations": {IMAGE_NAME: f"{ref.name}:{ref.tag}",
                                                mediatype.REF_NAME: ref.tag},
                                "platform": _platform(image.config)})
            if layers:
                top = layers[-1].rpartition("/")[2]
                repositories.setdefault(ref.familiar_name, {})[ref.tag] = top
        if not item.tags:
            descriptors.append({**descriptor, "platform": _platform(image.config)})
        manifest_json.append({
            "Config": f"blobs/sha256/{image.id.partition(':')[2]}",
            "RepoTags": list(item.tags) or None,  # docker writes null for an untagged image
            "Layers": layers,
        })
    docs = {
        "index.json": canonical({"schemaVersion": 2, "mediaType": mediatype.OCI_INDEX,
                                 "manifests": descriptors}),
        "manifest.json": canonical(manifest_json) + b"\n",
        "oci-layout": OCI_LAYOUT,
    }
    if repositories:
        docs["repositories"] = json.dumps(repositories, sort_keys=True,
                                          separators=(",", ":")).encode() + b"\n"
    return docs, blobs


def save(engine, names: list[str] | str) -> Iterator[bytes]:
    """The archive of ``names`` as an iterator of byte chunks (docker-py's ``image.save()``).

    Names are resolved, and every blob checked, *before* the first chunk,
    so a bad name fails without writing anything.
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise UsageError('"save" requires at least 1 argument.')
    items = resolve(engine, names)
    docs, blobs = _documents(items)
    for digest, size in blobs.items():
        if not engine.content.exists(digest) or engine.content.size(digest) != size:
            raise EngineError(f"cannot save: blob {digest} is missing from the content store "
                              "(run 'dockyard system check')")
    return _stream(engine, docs, blobs)


def _stream(engine, docs: dict[str, bytes], blobs: dict[str, int]) -> Iterator[bytes]:
    with engine.content.lease():  # no collector may delete a blob we are about to read
        yield tar_header(entry("blobs", b"5", mode=0o755))
        yield tar_header(entry("blobs/sha256", b"5", mode=0o755))
        for digest in sorted(blobs):
            size = blobs[digest]
            yield tar_header(entry(f"blobs/sha256/{digest.partition(':')[2]}", size=size))
            left = size
            with engine.content.open(digest) as f:
                while left:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        raise EngineError(f"blob {digest} is shorter than its {size} bytes")
                    left -= len(chunk)
                    yield chunk
            yield padding(size)
        for name in sorted(docs):
            data = docs[name]
            yield tar_header(entry(name, size=len(data)))
            yield data + padding(len(data))
        yield END_OF_ARCHIVE


def save_to(engine, names, out: BinaryIO) -> None:
    """Write the archive of ``names`` to the binary file object ``out``."""
    for chunk in save(engine, names):
        out.write(chunk)
    out.flush()


# == load: one pass over the archive ===============================================


@dataclass
class _Contents:
    """What one pass over the archive found."""

    small: dict[str, bytes] = field(default_factory=dict)             # name -> JSON bytes
    stored: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (digest, size)
    links: dict[str, str] = field(default_factory=dict)               # name -> target name

    def resolve(self, name: str) -> str:
        """Follow symlinks / hard links between members (skopeo links <id>/layer.tar)."""
        for _ in range(16):
            if name not in self.links:
                return name
            name = self.links[name]
        raise ArchiveError(f"archive member {name!r}: too many levels of links")

    def json(self, engine, name: str, what: str):
        """The parsed JSON document a member holds, or None if there is no such member."""
        name = self.resolve(name)
        if name in self.small:
            data = self.small[name]
        elif name in self.stored:
            digest, size = self.stored[name]
            if size > MAX_JSON:
                raise ArchiveError(f"{what}: {name!r} is {size} bytes; JSON documents are limited "
                                   f"to {MAX_JSON >> 20} MiB")
            data = engine.content.read(digest, verify=False)
        else:
            return None
        return _parse_json(data, what)


def _parse_json(data: bytes, what: str):
    try:
        return json.loads(data)
    except ValueError as e:
        raise ArchiveError(f"{what}: not valid JSON: {e}") from None


def _is_small_json(name: str) -> bool:
    base = name.rpartition("/")[2]
    return name in TOP_LEVEL_JSON or base.endswith(".json") or base in ("json", "VERSION")


def _link_target(member, what: str) -> str:
    """The member a symlink or hard link points to, as an archive path."""
    target = member.linkname
    if member.kind == "symlink" and not target.startswith("/"):
        target = posixpath.join(posixpath.dirname(member.name), target)
    target = posixpath.normpath(target) if target else ""
    if not target or target.startswith(("/", "../")) or target in (".", ".."):
        raise ArchiveError(f"{what}: member {member.name!r} refused: link target "
                           f"{member.linkname!r} leaves the archive")
    return target


def _ingest(engine, reader: TarReader) -> _Contents:
    """Read every member once: blobs into the content store, JSON into memory."""
    found = _Contents()
    seen: set[str] = set()
    for member in reader:
        if member.kind in ("dir", "other") or not member.name:
            continue
        if member.name in seen:
            raise ArchiveError(f"archive member {member.name!r} appears twice")
        seen.add(member.name)
        if member.kind in ("symlink", "hardlink"):
            found.links[member.name] = _link_target(member, "archive")
            continue
        if _is_small_json(member.name):
            if member.size > MAX_JSON:
                raise ArchiveError(f"archive member {member.name!r} is {member.size} bytes; "
                                   f"JSON documents are limited to {MAX_JSON >> 20} MiB")
            found.small[member.name] = b"".join(iter(lambda: reader.read(CHUNK), b""))
            continue
        m = BLOB_NAME.match(member.name)
        expected = f"sha256:{m.group(1)}" if m else None
        what = f"archive member {member.name!r}"
        if expected is not None and engine.content.exists(expected):
            digest = _hash_only(reader, expected, what)  # already stored: just check it
        else:
            with engine.content.writer() as w:
                while chunk := reader.read(CHUNK):
                    w.write(chunk)
                digest = w.commit(expected, member.size, what=what)
        found.stored[member.name] = (digest, member.size)
    return found


def _hash_only(reader: TarReader, expected: str, what: str) -> str:
    from ..errors import DigestMismatch

    h = hashlib.sha256()
    while chunk := reader.read(CHUNK):
        h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    if digest != expected:
        raise DigestMismatch(what, expected, digest)
    return digest


# == load: from members to images ===================================================


@dataclass
class _Image:
    """An image found in the archive, checked but not yet committed."""

    manifest_digest: str
    manifest: Manifest
    config: dict
    tags: list[str] = field(default_factory=list)
    what: str = ""
    config_path: str = ""


def _descriptor(d, what: str) -> Descriptor:
    """A descriptor from the archive, checked before anything it points to is read."""
    if not isinstance(d, dict):
        raise ArchiveError(f"{what}: a descriptor must be a JSON object")
    desc = Descriptor.from_json(d, what)
    if not DIGEST.match(desc.digest):
        raise ArchiveError(f"{what}: unsupported digest {desc.digest!r} (only sha256 is supported)")
    if desc.size > MAX_MEMBER_SIZE:
        raise ArchiveError(f"{what}: descriptor of {desc.digest} declares {desc.size} bytes; "
                           f"refusing more than {MAX_MEMBER_SIZE}")
    if not isinstance(desc.media_type, str):
        raise ArchiveError(f"{what}: mediaType must be a string")
    return desc


def _blob(found: _Contents, desc: Descriptor, what: str) -> None:
    """Check that the blob a descriptor names is in the archive, with that size."""
    name = found.resolve(f"blobs/sha256/{desc.digest.partition(':')[2]}")
    stored = found.stored.get(name)
    if stored is None:
        raise ArchiveError(f"{what}: blob {desc.digest} is not in the archive")
    digest, size = stored
    if digest != desc.digest:
        raise ArchiveError(f"{what}: archive member {name!r} holds {digest}, not {desc.digest}")
    if size != desc.size:
        raise ArchiveError(f"{what}: size mismatch for {desc.digest}: the descriptor says "
                           f"{desc.size} bytes, the blob has {size}")


def _json_blob(engine, found: _Contents, desc: Descriptor, what: str):
    _blob(found, desc, what)
    if desc.size > MAX_JSON:
        raise ArchiveError(f"{what}: {desc.digest} is {desc.size} bytes; JSON documents are "
                           f"limited to {MAX_JSON >> 20} MiB")
    return engine.content.read(desc.digest, verify=False)


def _wanted_platform(descriptors: list, what: str) -> dict:
    """The descriptor of linux/<this arch> in a multi-platform index."""
    arch = architecture()
    for i, d in enumerate(descriptors):
        platform = (d.get("platform") if isinstance(d, dict) else None) or {}
        if platform.get("os") == "linux" and platform.get("architecture") == arch:
            return d
    if len(descriptors) == 1 and not (descriptors[0] or {}).get("platform"):
        return descriptors[0]
    raise ArchiveError(f"{what}: no image for linux/{arch} in this index")


def _manifest(engine, found: _Contents, desc: Descriptor, what: str, depth: int = 0):
    """(manifest digest, Manifest) of an index entry; nested indexes resolved to our platform."""
    data = _json_blob(engine, found, desc, what)
    doc = _parse_json(data, f"{what} ({desc.digest})")
    if not isinstance(doc, dict):
        raise ArchiveError(f"{what}: {desc.digest} is not a JSON object")
    declared = doc.get("mediaType")
    kind = desc.media_type or declared or (mediatype.OCI_INDEX if "manifests" in doc
                                           else mediatype.OCI_MANIFEST)
    for media_type in (kind, declared):
        if media_type and media_type not in INDEXES and media_type not in mediatype.MANIFESTS:
            raise ArchiveError(f"{what}: unsupported manifest media type {media_type!r}")
    if declared and kind != declared:
        raise ArchiveError(f"{what}: the descriptor says {kind!r} but {desc.digest} "
                           f"says {declared!r}")
    if kind in INDEXES:
        if not isinstance(doc.get("manifests"), list) or "config" in doc or "layers" in doc:
            raise ArchiveError(f"{what}: {desc.digest} is declared an index but is not shaped like one")
        if depth >= MAX_NESTING:
            raise ArchiveError(f"{what}: indexes nested more than {MAX_NESTING} deep")
        chosen = _wanted_platform(doc["manifests"], f"{what} -> {desc.digest}")
        child = _descriptor(chosen, f"{what} -> {desc.digest}")
        return _manifest(engine, found, child, f"{what} -> {desc.digest}", depth + 1)
    return desc.digest, Manifest.parse(data, f"{what} ({desc.digest})")


def _check_config(config, n_layers: int, what: str) -> dict:
    check_config(config, what)
    os_name = config.get("os") or "linux"
    if os_name != "linux":
        raise ArchiveError(f"{what}: cannot load {os_name} image on linux")
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != n_layers:
        # moby's words (tarexport/load.go)
        raise ArchiveError(f"{what}: invalid manifest, layers length mismatch: expected "
                           f"{n_layers}, got {len(diff_ids)}")
    for diff_id in diff_ids:
        if not isinstance(diff_id, str) or not DIGEST.match(diff_id):
            raise ArchiveError(f"{what}: bad diff_id {diff_id!r}")
    return config


def _oci_image(engine, found: _Contents, md: str, manifest: Manifest, what: str) -> _Image:
    if manifest.config.media_type not in mediatype.CONFIGS:
        raise ArchiveError(f"{what}: config media type {manifest.config.media_type!r} is not a "
                           "container image config")
    config_desc = _descriptor(manifest.config.to_json(), f"{what} config")
    config = _parse_json(_json_blob(engine, found, config_desc, f"{what} config"), f"{what} config")
    _check_config(config, len(manifest.layers), f"{what} config {config_desc.digest}")
    for i, layer in enumerate(manifest.layers):
        _blob(found, _descriptor(layer.to_json(), f"{what} layer {i}"), f"{what} layer {i}")
    return _Image(md, manifest, config, what=what)


def _name_from(annotations: dict, what: str) -> str | None:
    """The tag an index entry names: io.containerd.image.name, else a ref.name that
    is a full reference (containerd's rule: it contains '/', ':' or '@'), else None."""
    for key in (IMAGE_NAME, mediatype.REF_NAME):
        value = annotations.get(key)
        if not isinstance(value, str) or not value:
            continue
        if key == mediatype.REF_NAME and not any(c in value for c in "/:@"):
            return None  # a bare tag such as "latest": no repository to put it in
        try:
            ref = reference.parse(value)
        except InvalidReference as e:
            raise ArchiveError(f"{what}: bad image name {value!r}: {e}") from None
        if ref.tag is None:
            return None  # name@digest only: nothing to tag
        return str(reference.Reference(ref.domain, ref.path, ref.tag))
    return None


def _from_index(engine, found: _Contents) -> list[_Image]:
    layout = found.json(engine, "oci-layout", "oci-layout")
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != mediatype.OCI_LAYOUT_VERSION:
        raise ArchiveError(f"oci-layout: unsupported image layout version "
                           f"{(layout or {}).get('imageLayoutVersion') if isinstance(layout, dict) else layout!r}")
    index = found.json(engine, "index.json", "index.json")
    if index is None:
        raise ArchiveError("index.json: missing from an OCI image layout archive")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError("index.json: not an OCI image index (no 'manifests' list)")
    images: dict[str, _Image] = {}
    for i, d in enumerate(index["manifests"]):
        what = f"index.json manifests[{i}]"
        desc = _descriptor(d, what)
        md, manifest = _manifest(engine, found, desc, what)
        image = images.get(md) or _oci_image(engine, found, md, manifest, what)
        images[md] = image
        tag = _name_from(desc.annotations or {}, what)
        if tag and tag not in image.tags:
            image.tags.append(tag)
    return list(images.values())


def _layer_media_type(engine, digest: str, what: str) -> str:
    """A docker-archive layer's OCI media type, from its first bytes."""
    with engine.content.open(digest) as f:
        kind = sniff(f.read(6))
    if kind == "none":
        return mediatype.OCI_LAYER
    if kind == "gzip":
        return mediatype.OCI_LAYER_GZIP
    if kind == "zstd":
        return mediatype.OCI_LAYER_ZSTD
    raise ArchiveError(f"{what}: the layer is {kind}-compressed, which OCI image layers cannot be")


def _from_manifest_json(engine, found: _Contents, entries, done: dict[str, _Image]) -> list[_Image]:
    """docker-archive images; an OCI manifest is made for each, deterministically."""
    if not isinstance(entries, list):
        raise ArchiveError("manifest.json: not a list of images")
    out = []
    for i, item in enumerate(entries):
        what = f"manifest.json[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) \
                or not isinstance(item.get("Layers"), list) \
                or not all(isinstance(p, str) for p in item["Layers"]):
            raise ArchiveError(f"{what}: needs \"Config\" (a path) and \"Layers\" (a list of paths)")
        repo_tags = item.get("RepoTags") or []
        if not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
            raise ArchiveError(f"{what}: \"RepoTags\" must be a list of strings")
        tags = []
        for t in repo_tags:
            try:
                tags.append(str(reference.parse(t)))
            except InvalidReference as e:
                raise ArchiveError(f"{what}: bad RepoTag {t!r}: {e}") from None
        config_path = found.resolve(member_name(item["Config"], what))
        if config_path in found.small:
            config_bytes = found.small[config_path]
        elif config_path in found.stored:
            digest, size = found.stored[config_path]
            if size > MAX_JSON:
                raise ArchiveError(f"{what}: config {item['Config']!r} is {size} bytes; JSON "
                                   f"documents are limited to {MAX_JSON >> 20} MiB")
            config_bytes = engine.content.read(digest, verify=False)
        else:
            raise ArchiveError(f"{what}: config {item['Config']!r} is not in the archive")
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        if config_digest in done:  # already described by index.json
            image = done[config_digest]
            if not image.tags:
                image.tags.extend(tags)  # the OCI entry had no usable name: docker's is the fallback
            continue
        config = _check_config(_parse_json(config_bytes, f"{what} config"), len(item["Layers"]),
                               f"{what} config {item['Config']!r}")
        layers = []
        for j, path in enumerate(item["Layers"]):
            name = found.resolve(member_name(path, what))
            if name not in found.stored:
                raise ArchiveError(f"{what}: layer {path!r} is not in the archive")
            digest, size = found.stored[name]
            layers.append({"mediaType": _layer_media_type(engine, digest, f"{what} layer {path!r}"),
                           "digest": digest, "size": size})
        engine.content.put(config_bytes, what=f"{what} config")
        manifest = {
            "schemaVersion": 2,
            "mediaType": mediatype.OCI_MANIFEST,
            "config": {"mediaType": mediatype.OCI_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": layers,
        }
        data = canonical(manifest)
        md = engine.content.put(data, what=f"{what} manifest")
        image = _Image(md, Manifest.parse(data, what), config, tags, what)
        done[config_digest] = image
        out.append(image)
    return out


def _verify_layers(engine, image: _Image) -> None:
    """Every layer against the config's diff_ids (moby: "invalid diffID for layer")."""
    diff_ids = image.config["rootfs"]["diff_ids"]
    for i, (layer, diff_id) in enumerate(zip(image.manifest.layers, diff_ids)):
        what = f"{image.what} layer {i} ({layer.digest})"
        if layer.media_type in mediatype.LAYERS_UNCOMPRESSED:
            actual = layer.digest  # stored blobs were hashed on the way in
        else:
            kind = "gzip" if layer.media_type in mediatype.LAYERS_GZIP else "zstd"
            h = hashlib.sha256()
            with engine.content.open(layer.digest) as raw:
                inflater = Inflater(raw, kind, what)
                buf = bytearray(CHUNK)
                while n := inflater.readinto(buf):
                    h.update(memoryview(buf)[:n])
            actual = "sha256:" + h.hexdigest()
        if actual != diff_id:
            raise ArchiveError(f"{what}: invalid diffID: the config says {diff_id}, "
                               f"the layer is {actual}")


@dataclass
class LoadResult:
    """What a load did: the images (with the tags it gave them) and docker's output lines."""

    images: list = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def load(engine, stream: BinaryIO) -> LoadResult:
    """Load every image of a docker-archive or OCI archive read from ``stream``.

    See the module docstring for the formats and the lifecycle. Raises an
    :class:`~engine.errors.EngineError` naming the member or entry at fault;
    the store is then as it was before.
    """
    result = LoadResult()
    failed = True
    wrote_garbage = False
    try:
        with engine.content.lease():
            reader, _ = open_stream(stream, "archive")
            found = _ingest(engine, TarReader(reader, "archive"))
            entries = found.json(engine, "manifest.json", "manifest.json")
            is_oci = found.resolve("oci-layout") in found.small
            if entries is None and not is_oci:
                raise ArchiveError("archive has neither manifest.json nor oci-layout + index.json: "
                                   "not a docker or OCI image archive")
            images: list[_Image] = _from_index(engine, found) if is_oci else []
            if entries is not None:
                done = {im.manifest.config.digest: im for im in images}
                images += _from_manifest_json(engine, found, entries, done)
            if not images:
                raise ArchiveError("archive holds no images")
            loaded = []
            for image in images:
                _verify_layers(engine, image)
                obj = engine.image_store.load(image.manifest_digest, tags=[])
                engine.snapshots.ensure(obj)  # docker unpacks at load time; this checks again
                loaded.append((image, obj))
            # Everything is in the store and checked: now make it visible, tag by tag.
            for image, obj in loaded:
                for tag in image.tags:
                    old = engine.image_store.find(tag)
                    if old is not None and old != image.manifest_digest:
                        old_id = engine.image_store.load(old).id
                        result.lines.append(f"The image {tag} already exists, renaming the old "
                                            f"one with ID {old_id} to empty string")
                    engine.image_store.add(image.manifest_digest, tag)
                    result.lines.append(f"Loaded image: {tag}")
                if not image.tags:
                    engine.image_store.add(image.manifest_digest, None)
                    result.lines.append(f"Loaded image ID: {obj.id}")
                result.images.append(engine.image_store.load(image.manifest_digest))
            used = set()
            for image, _ in loaded:
                used.add(image.manifest_digest)
                used.add(image.manifest.config.digest)
                used.update(layer.digest for layer in image.manifest.layers)
            wrote_garbage = any(d not in used for d, _ in found.stored.values())
            failed = False
    finally:
        if failed or wrote_garbage:
            collect_garbage(engine)  # the lease is released: reclaim what nothing uses
    return result

"""Manifests and configs: parse, check their shape, and compute chain ids.

An image is three kinds of blob (OCI image spec, manifest.md and config.md):

- the **manifest** lists a config descriptor and the layer descriptors
  (``digest`` = sha256 of the stored, possibly compressed, layer blob);
- the **config** holds the run defaults (``config.Env``, ``Cmd``,
  ``Entrypoint``, ``WorkingDir``...) and ``rootfs.diff_ids``, the sha256 of
  each *uncompressed* layer tar, in order;
- the **layers** are tar archives, applied bottom to top.

The image ID that docker prints is the config's digest.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass

from ..errors import StoreError
from . import mediatype


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob: media type, digest and size (descriptor.md)."""

    media_type: str
    digest: str
    size: int
    annotations: dict | None = None

    @classmethod
    def from_json(cls, d: dict, what: str) -> "Descriptor":
        try:
            digest, size = d["digest"], d["size"]
        except (KeyError, TypeError):
            raise StoreError(f"{what}: descriptor needs 'digest' and 'size'") from None
        if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
            raise StoreError(f"{what}: malformed descriptor {d!r}")
        return cls(d.get("mediaType", ""), digest, size, d.get("annotations"))

    def to_json(self) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: dict

    @classmethod
    def parse(cls, data: bytes, what: str = "manifest") -> "Manifest":
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise StoreError(f"{what}: not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            raise StoreError(f"{what}: not a schema version 2 image manifest")
        media_type = doc.get("mediaType") or mediatype.OCI_MANIFEST
        # The declared type must match the document's shape: an index has
        # "manifests", an image manifest has "config" and "layers".
        if media_type not in mediatype.MANIFESTS or "manifests" in doc:
            raise StoreError(f"{what}: media type {media_type!r} is not an image manifest")
        if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
            raise StoreError(f"{what}: an image manifest needs 'config' and 'layers'")
        config = Descriptor.from_json(doc["config"], f"{what} config")
        layers = tuple(Descriptor.from_json(layer, f"{what} layer {i}")
                       for i, layer in enumerate(doc["layers"]))
        for layer in layers:
            if layer.media_type not in mediatype.LAYERS:
                raise StoreError(f"{what}: unsupported layer media type {layer.media_type!r}")
        return cls(media_type, config, layers, doc)


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Chain ids of a layer stack (OCI image spec, config.md "Layer ChainID").

    ``chain_id(L1) = diff_id(L1)`` and
    ``chain_id(L1..Ln) = sha256(chain_id(L1..Ln-1) + " " + diff_id(Ln))``.
    A chain id names a layer *together with everything below it*, which is
    what an extracted snapshot depends on.
    """
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            text = f"{out[-1]} {diff_id}".encode()
            out.append("sha256:" + hashlib.sha256(text).hexdigest())
    return out


def check_config(config: dict, what: str = "config") -> dict:
    """Check the fields Dockyard relies on and return the config."""
    if not isinstance(config, dict):
        raise StoreError(f"{what}: not a JSON object")
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" \
            or not isinstance(rootfs.get("diff_ids"), list):
        raise StoreError(f"{what}: rootfs must be {{'type': 'layers', 'diff_ids': [...]}}")
    run = config.get("config") or {}
    if not isinstance(run, dict):
        raise StoreError(f"{what}: 'config' must be an object")
    for key in ("Env", "Cmd", "Entrypoint"):
        value = run.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise StoreError(f"{what}: config.{key} must be a list of strings")
    return config


def canonical(doc: dict) -> bytes:
    """The bytes Dockyard writes for a JSON document: compact, keys in the given order."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def architecture() -> str:
    """The OCI name of this machine's architecture (``GOARCH`` values)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)

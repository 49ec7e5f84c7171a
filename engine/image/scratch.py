"""``scratch``: the empty image (no layers, no command).

As in a Dockerfile's ``FROM scratch``, it is the image with nothing in it.
Its two documents are constants, so its ID never changes. It is never
listed by ``images``, but every command accepts the name; its blobs are
written to the store only when a container is made from it.
"""

from __future__ import annotations

import hashlib
import json

from ..content import ContentStore
from . import mediatype
from .manifest import Manifest, architecture, canonical
from .store import Image

SCRATCH = "scratch:latest"


def documents() -> tuple[bytes, bytes]:
    """(config, manifest) bytes of the empty image; constant, so the ID never changes."""
    config = canonical({
        "architecture": architecture(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": mediatype.OCI_MANIFEST,
        "config": {"mediaType": mediatype.OCI_CONFIG,
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                   "size": len(config)},
        "layers": [],
    })
    return config, manifest


def image() -> Image:
    """The ``scratch`` image as an object; nothing is read from or written to the store."""
    config, manifest = documents()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return Image(digest, Manifest.parse(manifest, "scratch manifest"), json.loads(config),
                 [SCRATCH], len(manifest))


def store(content: ContentStore) -> Image:
    """Write scratch's two blobs (for containers made from it) and return the image."""
    config, manifest = documents()
    content.put(config, what="scratch config")
    content.put(manifest, what="scratch manifest")
    return image()

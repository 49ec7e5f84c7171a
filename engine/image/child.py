"""A child image: a parent image plus one history entry and at most one layer.

Both ways of making an image from another go through here:

- ``commit`` (runtime/commit.py): the container's writable layer on top of
  its image;
- a Dockerfile build (build/builder.py): every instruction makes one child
  of the previous step's image, as docker's classic builder does -- a layer
  when the step changed files (RUN, COPY, ADD, WORKDIR), only a history
  entry marked ``empty_layer`` when it changed metadata (ENV, CMD...).

Lifecycle of one child, crash-safe in this order: the layer blob (from an
overlay upper directory, whiteouts included), the config, the manifest --
all under a content lease so the garbage collector leaves them alone --
then the image's metadata (parent, build cache record), and last the index
entry (the tag, if any). A crash before the index write leaves only
unreferenced blobs, which ``system prune``/gc removes.
"""

from __future__ import annotations

import copy
import os

from . import mediatype, reference, scratch
from .manifest import canonical


def make_child(engine, base, *, run_config: dict, entry: dict, upper: str | None = None,
               tag: str | None = None, created: str | None = None, author: str | None = None,
               container_id: str | None = None, meta: dict | None = None, family: bool = True):
    """Store ``base`` + (the layer made from ``upper``, if it changed anything)
    with ``run_config`` as its ``config`` and ``entry`` appended to its
    history; return the new :class:`~engine.image.store.Image`.

    ``entry`` gets ``empty_layer: true`` when no layer is added (``upper`` is
    None or holds nothing). ``meta`` is stored with the image (imagedb) before
    it is indexed; ``tag`` names it. ``family=False`` returns the image
    without its tags and children filled in (looking them up reads every
    image's metadata: a build, which makes one image per step, skips it).
    """
    from ..layer import create_layer
    from ..runtime.container import now

    tag = str(reference.parse(tag)) if tag else None
    created = created or now()
    docker_family = base.manifest.media_type == mediatype.DOCKER_MANIFEST
    from_scratch = base.manifest_digest == scratch.image().manifest_digest
    entry = {"created": created, **entry}
    with engine.content.lease():
        result = None
        if upper is not None and not any(os.scandir(upper)):
            upper = None  # nothing changed: no layer (and no empty-tar blob left behind)
        if upper is not None:
            with engine.content.writer() as w:
                result = create_layer(str(upper), w, whiteouts=True)
                layer_digest = w.commit(result.digest, what="layer")
            if result.diff_id == mediatype.EMPTY_TAR_DIGEST:
                result = None
        config = copy.deepcopy(base.config)
        config["created"] = created
        if author is not None:
            config["author"] = author
        if container_id:
            config["container"] = container_id
        config["config"] = run_config
        history = config.setdefault("history", [])
        if result is None:
            entry["empty_layer"] = True
        else:
            config["rootfs"]["diff_ids"] = [*config["rootfs"]["diff_ids"], result.diff_id]
        history.append(entry)
        config_bytes = canonical(config)
        config_digest = engine.content.put(config_bytes, what="image config")
        layers = [layer.to_json() for layer in base.layers]
        if result is not None:
            layers.append({"mediaType": mediatype.DOCKER_LAYER if docker_family else mediatype.OCI_LAYER,
                           "digest": layer_digest, "size": result.size})
        manifest = {
            "schemaVersion": 2,
            "mediaType": base.manifest.media_type,
            "config": {"mediaType": base.manifest.config.media_type or mediatype.OCI_CONFIG,
                       "digest": config_digest, "size": len(config_bytes)},
            "layers": layers,
        }
        manifest_digest = engine.content.put(canonical(manifest), what="image manifest")
        if meta:
            engine.image_store.set_meta(manifest_digest, **meta)
        engine.image_store.add(manifest_digest, tag, parent=None if from_scratch else base.manifest_digest)
    image = engine.image_store.load(manifest_digest, tags=[])
    engine.snapshots.ensure(image)  # extract it now, as docker does (and verify the diff_id)
    return engine.image_store.load(manifest_digest, tags=None if family else [])

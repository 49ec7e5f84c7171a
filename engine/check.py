"""``dockyard system check``: is the store consistent? (an fsck for Dockyard)

It re-reads everything and sorts what it finds into two kinds:

- **problems** (the store is damaged): a blob whose bytes no longer hash to
  its name; a tag or a container that points to a missing or unreadable
  manifest, config or layer; a descriptor whose size disagrees with its blob;
  a config whose ``diff_ids`` do not match its layers; a corrupt JSON file.
- **leftovers** (harmless, reclaimable): blobs and extracted layers nothing
  refers to (orphans), ingest files and half-extracted layers of killed
  processes, half-removed containers, stale name reservations, metadata of
  images that are gone.

Interrupted work can only ever produce leftovers -- that is what the
ingest -> verify -> rename protocol and the tag-last ordering guarantee --
so after any crash the check finds no problems. ``repair`` removes the
leftovers (it never touches a problem: that needs a human).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from .image.manifest import Manifest, check_config


@dataclass(frozen=True)
class Finding:
    kind: str       # "problem" or "leftover"
    what: str       # the object: "blob sha256:...", "image busybox:latest", "ingest/123-ab"
    detail: str

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


def _pid_alive(text: str) -> bool:
    return text.isdigit() and os.path.exists(f"/proc/{text}")


def check(engine, *, rehash: bool = True) -> list[Finding]:
    """Every finding about the root; see the module docstring."""
    from . import gc

    layout, content = engine.layout, engine.content
    out: list[Finding] = []
    problem = lambda what, detail: out.append(Finding("problem", what, detail))  # noqa: E731
    leftover = lambda what, detail: out.append(Finding("leftover", what, detail))  # noqa: E731

    blobs = set(content.digests())
    if rehash:
        for digest in sorted(blobs):
            if not content.verify(digest):
                problem(f"blob {digest}", "its content does not hash to its name")

    # Every image in the tag index must resolve completely.
    try:
        entries = engine.image_store._entries()
    except Exception as e:
        problem("index.json", str(e))
        entries = []
    for digest, tag, entry in entries:
        name = f"image {tag or digest}"
        if digest not in blobs:
            problem(name, f"manifest {digest} is missing")
            continue
        if entry.get("size") is not None and entry["size"] != content.size(digest):
            problem(name, f"index says the manifest has {entry['size']} bytes, the blob has "
                          f"{content.size(digest)}")
        out.extend(_check_image(engine, name, digest, blobs))

    # Containers: their record, their image, their name.
    for entry in sorted(os.listdir(layout.containers)) if layout.containers.exists() else []:
        path = layout.containers / entry
        if entry.startswith(".removing-"):
            leftover(f"containers/{entry}", "a container whose removal was interrupted")
            continue
        try:
            with open(path / "container.json") as f:
                attrs = json.load(f)
        except FileNotFoundError:
            leftover(f"containers/{entry}", "a container directory without container.json")
            continue
        except ValueError as e:
            problem(f"container {entry[:12]}", f"corrupt container.json: {e}")
            continue
        manifest = (attrs.get("Dockyard") or {}).get("ManifestDigest")
        if manifest and manifest not in blobs:
            problem(f"container {attrs.get('Name', entry)}", f"its image manifest {manifest} is missing")
        elif manifest:
            for finding in _check_image(engine, f"container {attrs.get('Name', entry)}", manifest, blobs):
                out.append(finding)
    for name in sorted(os.listdir(layout.names)) if layout.names.exists() else []:
        owner = (layout.names / name).read_text().strip()
        if not (layout.container(owner) / "container.json").exists():
            leftover(f"names/{name}", "reserved for a container that does not exist")

    # Leftovers of interrupted work and orphans.
    for p in content.stale_ingests():
        leftover(f"ingest/{p.name}", "a blob whose writer was interrupted")
    live_blobs, live_snapshots = gc.mark(engine)
    for digest in sorted(blobs - live_blobs):
        leftover(f"blob {digest}", "no image or container refers to it (orphan)")
    if layout.snapshots.exists():
        for name in sorted(os.listdir(layout.snapshots)):
            if name.startswith("."):
                pid = name.split("-")[1] if name.count("-") >= 2 else ""
                if not _pid_alive(pid):
                    leftover(f"snapshots/{name}", "an extraction that was interrupted")
            elif not name.endswith(".json") and name not in live_snapshots:
                leftover(f"snapshots/{name}", "an extracted layer no image needs (orphan)")
    for name in gc.stale_builds(engine):
        leftover(f"builds/{name}", "the scratch space of a build that was interrupted")
    present = {d for d, _, _ in entries}
    if layout.imagedb.exists():
        for meta in sorted(os.listdir(layout.imagedb)):
            if "sha256:" + meta.removesuffix(".json") not in present:
                leftover(f"imagedb/{meta}", "metadata of an image that is gone")
    return out


def _check_image(engine, name: str, manifest_digest: str, blobs: set[str]) -> list[Finding]:
    out: list[Finding] = []
    try:
        manifest = Manifest.parse(engine.content.read(manifest_digest, verify=False), "manifest")
    except Exception as e:
        return [Finding("problem", name, f"unreadable manifest {manifest_digest}: {e}")]
    for desc, role in [(manifest.config, "config"), *[(layer, "layer") for layer in manifest.layers]]:
        if desc.digest not in blobs:
            out.append(Finding("problem", name, f"{role} {desc.digest} is missing"))
        elif engine.content.size(desc.digest) != desc.size:
            out.append(Finding("problem", name, f"{role} {desc.digest} has "
                               f"{engine.content.size(desc.digest)} bytes, the manifest says {desc.size}"))
    if manifest.config.digest in blobs:
        try:
            config = check_config(json.loads(engine.content.read(manifest.config.digest, verify=False)))
            if len(config["rootfs"]["diff_ids"]) != len(manifest.layers):
                out.append(Finding("problem", name, f"{len(manifest.layers)} layers but "
                                   f"{len(config['rootfs']['diff_ids'])} diff_ids"))
        except Exception as e:
            out.append(Finding("problem", name, f"unreadable config: {e}"))
    return out


def repair(engine) -> list[Finding]:
    """Remove the leftovers (never the problems); return what was really removed.

    Orphan blobs, dead ingests and interrupted extractions go through the
    garbage collector, which does nothing while a load or commit holds a
    lease: those leftovers are then kept (and still reported) until it ends.
    """
    from . import gc

    leftovers = [f for f in check(engine, rehash=False) if f.kind == "leftover"]
    collected = gc.collect(engine)
    layout = engine.layout
    removed = []
    for finding in leftovers:
        what = finding.what
        if what.startswith(("blob ", "ingest/", "snapshots/", "builds/")):
            if collected.ran:
                removed.append(finding)
            continue
        if what.startswith("containers/"):
            shutil.rmtree(layout.root / what, ignore_errors=True)
        elif what.startswith(("names/", "imagedb/")):
            try:
                os.unlink(layout.root / what)
            except FileNotFoundError:
                pass
        removed.append(finding)
    return removed

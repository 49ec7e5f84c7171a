"""Garbage collection: delete what nothing refers to any more.

What is alive (a mark-and-sweep over plain files):

- every manifest in the tag index (``index.json``), tagged or dangling;
- every manifest a container was made from (``ManifestDigest`` in its
  ``container.json``): an image in use is never deleted under a container;
- and everything those manifests point to: their config and layer blobs and
  the extracted snapshots of their layer chains.

Everything else in ``blobs/`` and ``snapshots/`` is garbage, as are ingest
files whose writer died. Collection runs only when no writer holds a lease
(see ``engine/content/store.py``): a load or commit in progress has written
blobs that nothing refers to *yet*. If a lease is held, the round is skipped
and the garbage waits for the next ``rmi``, ``image prune`` or failed load.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field

from .image.manifest import chain_ids


@dataclass
class Collected:
    ran: bool = True
    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    ingests: int = 0
    reclaimed: int = 0


def live_manifests(engine) -> set[str]:
    roots = {digest for digest, _, _ in engine.image_store._entries()}
    if engine.layout.containers.exists():
        for entry in os.listdir(engine.layout.containers):
            path = engine.layout.containers / entry / "container.json"
            try:
                with open(path) as f:
                    digest = (json.load(f).get("Dockyard") or {}).get("ManifestDigest")
            except (OSError, ValueError):
                continue
            if digest:
                roots.add(digest)
    return roots


def mark(engine) -> tuple[set[str], set[str]]:
    """(live blob digests, live snapshot directory names)."""
    blobs, snapshots = set(), {"init"}
    for manifest_digest in live_manifests(engine):
        blobs.add(manifest_digest)
        try:
            manifest = json.loads(engine.content.read(manifest_digest, verify=False))
            blobs.add(manifest["config"]["digest"])
            blobs.update(layer["digest"] for layer in manifest.get("layers", []))
            config = json.loads(engine.content.read(manifest["config"]["digest"], verify=False))
            diff_ids = config["rootfs"]["diff_ids"]
        except Exception:
            continue  # a broken image: `system check` reports it; keep what we can
        snapshots.update(c.partition(":")[2] for c in chain_ids(diff_ids))
    return blobs, snapshots


def collect(engine) -> Collected:
    """One mark-and-sweep round; ``ran`` is False when a writer holds a lease."""
    result = Collected()
    with engine.content.collecting() as allowed:
        if not allowed:
            result.ran = False
            return result
        live_blobs, live_snapshots = mark(engine)
        for digest in list(engine.content.digests()):
            if digest not in live_blobs:
                result.reclaimed += engine.content.size(digest)
                engine.content.delete(digest)
                result.blobs.append(digest)
        if engine.layout.snapshots.exists():
            for name in os.listdir(engine.layout.snapshots):
                if name.startswith("."):
                    # ".extract-<pid>-..." / ".init-<pid>-...": work in progress,
                    # or a leftover if that process is gone.
                    pid = name.split("-")[1] if name.count("-") >= 2 else ""
                    if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                        shutil.rmtree(engine.layout.snapshots / name, ignore_errors=True)
                        result.snapshots.append(name)
                    continue
                if name in live_snapshots or name.endswith(".json"):
                    continue
                shutil.rmtree(engine.layout.snapshots / name, ignore_errors=True)
                try:
                    os.unlink(engine.layout.snapshots / f"{name}.json")
                except FileNotFoundError:
                    pass
                result.snapshots.append(name)
        result.ingests = engine.content.sweep_ingest()
        for name in stale_builds(engine):
            shutil.rmtree(engine.layout.builds / name, ignore_errors=True)
            result.snapshots.append(f"builds/{name}")
    return result


def build_pid(name: str) -> str:
    """The PID in a build scratch directory's name: ``<pid>-<hex>`` or ``context-<pid>-<hex>``."""
    return name.removeprefix("context-").split("-")[0]


def stale_builds(engine) -> list[str]:
    """Build scratch directories (``builds/``) whose build process is gone.

    A build removes its own when it ends; one killed half-way leaves its
    directory (its mounts were in a private mount namespace that died with
    the child, so there is nothing to unmount)."""
    if not engine.layout.builds.exists():
        return []
    return [name for name in sorted(os.listdir(engine.layout.builds))
            if not os.path.exists(f"/proc/{build_pid(name)}") or not build_pid(name).isdigit()]

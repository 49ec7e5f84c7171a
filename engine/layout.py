"""Where Dockyard keeps its state: one root directory, plain files.

The root defaults to ``/var/lib/dockyard``; ``DOCKYARD_ROOT`` or the CLI's
``--root`` moves it (every test uses its own temporary root). Everything
under it is either content-addressed (never changes once written) or small
JSON that a learner can ``cat``::

    <root>/
      oci-layout               {"imageLayoutVersion": "1.0.0"}: the root is an OCI image layout
      index.json               the tags: an OCI image index (ref.name annotation = repo:tag)
      imagedb/<manifest-hex>.json  what OCI has no field for: parent image, last tag time
      blobs/sha256/<hex>       manifests, configs and layer tars, named by their sha256
      ingest/                  blobs being written (hashed while streaming, then renamed)
      snapshots/<chain-hex>/   each layer extracted once, keyed by its chain id
      snapshots/init/          the empty mount points every container root needs
      containers/<id>/         container.json, upper/ and work/ (overlay), rootfs/ (mount point)
      names/<name>             one file per container name, created with O_EXCL
      networks/<id>.json       one per network, shaped like `docker network inspect`
      netns/<container id>     a container's network namespace, pinned by a bind mount
      engine.json              engine settings (network: bip, icc, bridge, address pools)
      locks/                   flock(2) files

Because the root *is* an OCI image layout, peer tools read it directly, for
example ``skopeo inspect oci:/var/lib/dockyard:busybox:latest``.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROOT = "/var/lib/dockyard"


def default_root() -> Path:
    """The root used when none is given: ``$DOCKYARD_ROOT`` or /var/lib/dockyard."""
    return Path(os.environ.get("DOCKYARD_ROOT") or DEFAULT_ROOT)


class Layout:
    """The paths of one Dockyard root. Pure data: creating it touches nothing."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.root = Path(os.path.abspath(self.root))
        self.oci_layout = self.root / "oci-layout"
        self.index = self.root / "index.json"
        self.imagedb = self.root / "imagedb"
        self.blobs = self.root / "blobs" / "sha256"
        self.ingest = self.root / "ingest"
        self.snapshots = self.root / "snapshots"
        self.containers = self.root / "containers"
        self.names = self.root / "names"
        self.locks = self.root / "locks"
        self.builds = self.root / "builds"  # a running build's scratch space (build/builder.py)
        self.networks = self.root / "networks"  # <id>.json per network (network/store.py)
        self.netns = self.root / "netns"        # pinned network namespaces (network/netns.py)

    def blob(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        if algorithm != "sha256" or len(hexpart) != 64:
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.blobs / hexpart

    def snapshot(self, chain_id: str) -> Path:
        return self.snapshots / chain_id.partition(":")[2]

    @property
    def init_layer(self) -> Path:
        return self.snapshots / "init"

    def container(self, container_id: str) -> Path:
        return self.containers / container_id

    def lock(self, name: str) -> Path:
        return self.locks / f"{name}.lock"

    def exists(self) -> bool:
        return self.oci_layout.exists()

    def create(self) -> None:
        """Make the directories (idempotent). Called only by commands that write."""
        for d in (self.blobs, self.ingest, self.snapshots, self.containers,
                  self.names, self.locks):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        if not self.oci_layout.exists():
            from .jsonfile import write_json
            write_json(self.oci_layout, {"imageLayoutVersion": "1.0.0"})

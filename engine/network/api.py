"""``engine.networks`` and :class:`Network`, in docker-py's shape.

::

    net = engine.networks.create("backend", ipam={"Config": [{"Subnet": "10.201.7.0/24"}]})
    net.connect("web", aliases=["www"])         # a container, by object, name or ID
    [c.name for c in net.reload().containers]   # ["web"]
    engine.networks.list(filters={"driver": "bridge"})
    net.disconnect("web"); net.remove()

Records come from engine/network/store.py; attaching a container (its
namespace, veth, hosts file) is engine/network/sandbox.py's work, which
``connect``/``disconnect`` hand over to.
"""

from __future__ import annotations

from ..errors import NotFound, UsageError


class Network:
    """One network. ``attrs`` is what ``network inspect`` prints, as of the last load."""

    def __init__(self, engine, attrs: dict):
        self._engine = engine
        self.attrs = attrs

    @property
    def id(self) -> str:
        return self.attrs["Id"]

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return self.attrs["Name"]

    @property
    def containers(self) -> list:
        """The containers with an endpoint here (docker-py: Network.containers)."""
        out = []
        for container_id in self.attrs.get("Containers") or {}:
            try:
                out.append(self._engine.containers.get(container_id))
            except NotFound:
                continue  # removed since the record was read
        return out

    def __repr__(self) -> str:
        return f"<Network: {self.short_id} {self.name}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Network) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def reload(self) -> "Network":
        """Read the record again (new endpoints, for instance); returns self."""
        self.attrs = self._engine.networks.store.get(self.id)
        return self

    def remove(self) -> None:
        """``network rm``: refused while containers are attached, and for the built-ins."""
        self._engine.networks.store.remove(self.id)

    def connect(self, container, aliases=None, ipv4_address: str | None = None) -> None:
        """``network connect``: attach ``container`` (object, name or ID), with
        network-scoped ``aliases`` and a fixed ``ipv4_address`` if given."""
        from . import sandbox

        target = self._container(container)
        sandbox.connect(self._engine, target, self.reload().attrs, aliases=tuple(aliases or ()),
                        ip=ipv4_address)
        self.reload()

    def disconnect(self, container, force: bool = False) -> None:
        """``network disconnect``: take ``container`` off this network."""
        from . import sandbox

        target = self._container(container)
        sandbox.disconnect(self._engine, target, self.reload().attrs, force=force)
        self.reload()

    def _container(self, container):
        if isinstance(container, str):
            return self._engine.containers.get(container)
        return container


class NetworkCollection:
    """``engine.networks``: create, find, list and prune networks."""

    def __init__(self, engine):
        self._engine = engine
        self._store = None

    @property
    def store(self):
        """The :class:`~engine.network.store.NetworkStore` of this root (made on first use)."""
        if self._store is None:
            from .store import NetworkStore
            self._store = NetworkStore(self._engine.layout)
        return self._store

    def create(self, name: str, driver: str | None = None, ipam: dict | None = None,
               internal: bool = False, labels: dict | None = None) -> Network:
        """``network create``: a user-defined bridge network.

        ``ipam``: docker-py's IPAMConfig shape, ``{"Driver": "default",
        "Config": [{"Subnet": ..., "Gateway": ..., "IPRange": ...}]}`` -- one
        IPv4 subnet at most; without one, a subnet comes from the engine's
        address pools.
        """
        subnet = gateway = ip_range = None
        if ipam:
            if (ipam.get("Driver") or "default") != "default":
                raise NotFound(f'plugin "{ipam["Driver"]}" not found')
            if ipam.get("Options"):
                raise UsageError("IPAM options are not supported by Dockyard's default IPAM")
            pools = ipam.get("Config") or []
            if len(pools) > 1:
                raise UsageError("Dockyard networks have one IPv4 subnet: give one IPAM Config entry")
            if pools:
                pool = pools[0]
                if pool.get("AuxiliaryAddresses"):
                    raise UsageError("auxiliary addresses are not supported by Dockyard")
                subnet, gateway, ip_range = pool.get("Subnet"), pool.get("Gateway"), pool.get("IPRange")
        record = self.store.create(name, driver=driver or "bridge", subnet=subnet, gateway=gateway,
                                   ip_range=ip_range, internal=internal, labels=labels)
        return Network(self._engine, record)

    def get(self, network_id: str) -> Network:
        """A network by name, ID or unique ID prefix; NotFound ("network X not found") else."""
        return Network(self._engine, self.store.get(network_id))

    def list(self, names=None, ids=None, filters=None) -> list[Network]:
        """Networks by name; ``names``/``ids`` and ``filters`` (docker's ``network ls
        --filter`` keys: name, id, driver, label, scope, type, dangling) narrow it."""
        from .store import filter_records, parse_filters

        wanted = parse_filters(filters or {})
        records = filter_records(self.store.list(), wanted)
        if names:
            records = [r for r in records if r["Name"] in names]
        if ids:
            records = [r for r in records if r["Id"] in ids or r["Id"][:12] in ids]
        return [Network(self._engine, r) for r in records]

    def prune(self, filters=None) -> dict:
        """``network prune``: remove user networks no container uses.

        Endpoints of containers that no longer exist (a crash between a
        container's removal and its release) are let go first. ``filters``:
        ``label=K[=V]`` / ``label!=K[=V]``. Returns ``{"NetworksDeleted": [names]}``.
        """
        from ..image.filters import match_labels, parse

        wanted = parse(_filter_words(filters), ("label", "label!"))
        self.release_stale()

        def keep(record) -> bool:
            labels = record.get("Labels") or {}
            if "label" in wanted and not match_labels(labels, wanted["label"]):
                return True
            return any(match_labels(labels, [item]) for item in wanted.get("label!", []))

        deleted = self.store.prune(keep=keep)
        from . import sandbox
        sandbox.drop_idle_bridges(self._engine)  # idle devices of a scratch root (not the default one)
        return {"NetworksDeleted": deleted or None}

    def release_stale(self) -> list[tuple[str, str]]:
        """Drop endpoints whose container is gone; returns (network name, container id) pairs."""
        import os

        from . import netns

        released = []
        for record in self.store.list():
            for container_id in list(record.get("Containers") or {}):
                try:
                    self._engine.containers.get(container_id)
                except NotFound:
                    self.store.release(record, container_id)
                    released.append((record["Name"], container_id))
                    # Its pinned namespace, if the crash left it: the veths go with it.
                    pinned = self._engine.layout.netns / container_id
                    if os.path.lexists(pinned):
                        netns.remove(pinned)
        if released:
            from . import sandbox
            for name in {name for name, _ in released}:
                sandbox.refresh_network(self._engine, self.store.get(name))  # forget the names
        return released


def _filter_words(filters) -> list[str]:
    if not filters:
        return []
    if isinstance(filters, dict):
        words = []
        for key, value in filters.items():
            for v in value if isinstance(value, (list, tuple)) else [value]:
                words.append(f"{key}={v}")
        return words
    return list(filters)

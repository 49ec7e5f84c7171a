"""The networks of a root: JSON records shaped like ``docker network inspect``.

Each network is one file, ``<root>/networks/<id>.json``, holding exactly what
``network inspect`` prints: Name, Id, Created, Driver, IPAM, Internal,
Options (the bridge device's name is ``com.docker.network.bridge.name``),
Labels, and Containers -- one *endpoint* per attached container::

    "Containers": {
      "<container id>": {"Name": "web", "EndpointID": "<64 hex>",
                         "MacAddress": "02:42:0a:c9:00:02", "IPv4Address": "10.201.0.2/24",
                         "IPv6Address": "", "Aliases": ["www"], "Gateway": "10.201.0.1",
                         "IPAddress": "10.201.0.2", "IPPrefixLen": 24}
    }

(docker shows the first five; Aliases, Gateway, IPAddress and IPPrefixLen
are what the container's ``NetworkSettings.Networks`` entry needs, kept here
so name resolution can read one file.) A ``Dockyard`` key holds what docker
has no field for: whether the subnet was the user's (``--ip`` is allowed
only then).

Lifecycle of a network::

    (first use)   the built-ins appear: bridge (the default bridge, device
                  dockyard0, subnet from engine.json's bip), host, none
    create()      a user network: name, driver bridge, a subnet (given, or the
                  first free one of the address pools), a gateway; the bridge
                  device "dy-<id12>" is made by the first attach, not here
    reserve()     a container's endpoint: an address (ipam.allocate, under the
                  lock, so two starts never get the same one), a MAC, an ID
    release()     the endpoint goes, its address is free again
    remove()      refused while endpoints remain, and for the built-ins;
                  deletes the record, then the bridge device if it exists
    prune()       removes every user network without endpoints

Readers load files without a lock (they are replaced atomically, see
engine/jsonfile.py); every change is a read-modify-write under
``locks/networks.lock``.
"""

from __future__ import annotations

import ipaddress
import os
import re

from ..errors import Conflict, NotFound, UsageError
from ..jsonfile import locked, read_json, write_json
from . import ipam

BUILTIN = ("bridge", "host", "none")
BRIDGE_NAME = "com.docker.network.bridge.name"
DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
ENABLE_ICC = "com.docker.network.bridge.enable_icc"
DRIVERS = {"bridge": "bridge", "host": "host", "none": "null"}
# moby's restrictedNamePattern, as for container names (engine/runtime/names.py).
VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
NETWORK_FILTERS = ("dangling", "driver", "id", "label", "name", "scope", "type")


class NetworkNotFound(NotFound):
    pass


def bridge_device(network_id: str) -> str:
    """A user network's bridge: "dy-" and 12 hex digits, 15 bytes (IFNAMSIZ - 1)."""
    return "dy-" + network_id[:12]


def _now() -> str:
    from ..runtime.container import now
    return now()


class NetworkStore:
    """Create, find, list and remove the networks of one root, and their endpoints.

    ``config``: the engine's network settings (engine/network/config.py),
    read from the root's engine.json when not given. ``routes``: a function
    returning the host's routes (:func:`ipam.host_routes` by default; tests
    pass their own), consulted when a subnet is chosen or given.
    """

    def __init__(self, layout, config=None, routes=None):
        self.layout = layout
        self._config = config
        self._routes = routes

    @property
    def config(self):
        if self._config is None:
            from . import config as netconfig
            self._config = netconfig.load(self.layout)
        return self._config

    def _host_routes(self) -> list:
        return list((self._routes or ipam.host_routes)())

    # -- records -------------------------------------------------------------------------

    def _path(self, network_id: str):
        return self.layout.networks / f"{network_id}.json"

    def _records(self) -> list[dict]:
        try:
            entries = os.listdir(self.layout.networks)
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            if entry.startswith(".") or not entry.endswith(".json"):
                continue
            try:
                out.append(read_json(self.layout.networks / entry))
            except FileNotFoundError:
                continue  # removed while we listed
            except ValueError as e:
                from ..errors import EngineError
                raise EngineError(f"network {entry[:12]}: corrupt record: {e}") from None
        return out

    def _write(self, record: dict, durable: bool = True) -> None:
        write_json(self._path(record["Id"]), record, durable=durable)

    def _lock(self):
        self.layout.networks.mkdir(parents=True, exist_ok=True)
        return locked(self.layout.lock("networks"))

    # -- the built-in networks -----------------------------------------------------------

    def _builtin_record(self, name: str) -> dict:
        record = self._new_record(name, DRIVERS[name])
        if name == "bridge":
            record.update(self._default_bridge_settings())
        return record

    def _default_bridge_settings(self) -> dict:
        iface = self.config.bridge_interface
        return {
            "IPAM": {"Driver": "default", "Options": {},
                     "Config": [{"Subnet": str(iface.network), "Gateway": str(iface.ip)}]},
            "Options": {
                DEFAULT_BRIDGE: "true",
                ENABLE_ICC: "true" if self.config.icc else "false",
                # Dockyard never NATs container traffic to the outside.
                "com.docker.network.bridge.enable_ip_masquerade": "false",
                BRIDGE_NAME: self.config.bridge,
                "com.docker.network.driver.mtu": "1500",
            },
        }

    def _ensure_builtins(self) -> list[dict]:
        """Every record, the built-ins made (or brought in line with engine.json) if needed.

        The default bridge follows the config the way dockerd's follows its
        flags at start: when ``bip``, ``icc`` or ``bridge`` changed, the record
        is updated -- while no container is attached to it.
        """
        records = self._records()
        if self._builtins_current(records):
            return records
        with self._lock():
            records = self._records()
            names = {r["Name"]: r for r in records}
            for name in BUILTIN:
                if name not in names:
                    record = self._builtin_record(name)
                    self._write(record)
                    records.append(record)
                elif name == "bridge" and not self._builtins_current([names[name]]) \
                        and not names[name].get("Containers"):
                    names[name].update(self._default_bridge_settings())
                    self._write(names[name])
        return records

    def _builtins_current(self, records: list[dict]) -> bool:
        names = {r["Name"]: r for r in records}
        if any(n not in names for n in BUILTIN):
            return False
        wanted = self._default_bridge_settings()
        bridge = names["bridge"]
        return (bridge["IPAM"]["Config"] == wanted["IPAM"]["Config"]
                and bridge["Options"] == wanted["Options"]) or bool(bridge.get("Containers"))

    # -- lookups -------------------------------------------------------------------------

    def list(self) -> list[dict]:
        """Every network's record, by name."""
        return sorted(self._ensure_builtins(), key=lambda r: r["Name"])

    def get(self, ref) -> dict:
        """A record by full ID, name, or unique ID prefix (docker's order).

        A record (dict) is accepted too and read again from disk, fresh.
        """
        if isinstance(ref, dict):
            ref = ref["Id"]
        records = self._ensure_builtins()
        if not ref:
            raise NetworkNotFound("network  not found")
        for record in records:
            if record["Id"] == ref:
                return record
        for record in records:
            if record["Name"] == ref:
                return record
        matches = [r for r in records if r["Id"].startswith(ref)]
        if len(matches) > 1:
            raise NetworkNotFound(f"network {ref} is ambiguous ({len(matches)} matches found based "
                                  "on ID prefix)")
        if matches:
            return matches[0]
        raise NetworkNotFound(f"network {ref} not found")

    def find(self, ref: str) -> dict:
        """Like :meth:`get`, without writing anything: for checks of user input
        (``create --network X``) that must leave the root as it was when they
        fail. A built-in network not made yet is returned as it would be made."""
        records = self._records()
        for record in records:
            if ref in (record["Id"], record["Name"]):
                return record
        if ref in BUILTIN:
            return self._builtin_record(ref)
        matches = [r for r in records if ref and r["Id"].startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NetworkNotFound(f"network {ref} is ambiguous ({len(matches)} matches found based "
                                  "on ID prefix)")
        raise NetworkNotFound(f"network {ref} not found")

    def subnets(self, records: list[dict] | None = None) -> list[ipaddress.IPv4Network]:
        """The subnets of the root's networks."""
        out = []
        for record in records if records is not None else self._ensure_builtins():
            for entry in (record.get("IPAM") or {}).get("Config") or []:
                if entry.get("Subnet"):
                    out.append(ipaddress.ip_network(entry["Subnet"], strict=False))
        return out

    def bridge_of(self, ref) -> str | None:
        """The bridge device of a bridge network (None for host and none)."""
        record = ref if isinstance(ref, dict) else self.get(ref)
        return (record.get("Options") or {}).get(BRIDGE_NAME)

    # -- create and remove ---------------------------------------------------------------

    def _new_record(self, name: str, driver: str) -> dict:
        return {
            "Name": name,
            "Id": os.urandom(32).hex(),
            "Created": _now(),
            "Scope": "local",
            "Driver": driver,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": []},
            "Internal": False,
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": {},
            "Options": {},
            "Labels": {},
        }

    def create(self, name: str, driver: str = "bridge", subnet: str | None = None,
               gateway: str | None = None, ip_range: str | None = None, internal: bool = False,
               labels: dict | None = None) -> dict:
        """``network create``: a new user-defined bridge network; returns its record."""
        if not isinstance(name, str) or not VALID_NAME.match(name):
            raise UsageError(f"Invalid network name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                             "are allowed")
        if name in BUILTIN:
            raise UsageError(f"operation is not permitted on predefined {name} network")
        driver = driver or "bridge"
        if driver in ("host", "null"):
            raise UsageError(f'only one instance of "{driver}" network is allowed')
        if driver != "bridge":
            raise NotFound(f'plugin "{driver}" not found')
        net, gw, rng = ipam.parse_config(subnet, gateway, ip_range)
        labels = dict(labels or {})
        routes = self._host_routes()
        self._ensure_builtins()
        with self._lock():
            records = self._records()
            if any(r["Name"] == name for r in records):
                raise Conflict(f"network with name {name} already exists")
            record = self._new_record(name, "bridge")
            bridge = bridge_device(record["Id"])
            used = [(r, s) for r in records for s in self.subnets([r])]
            if net is None:
                # Routes that are this root's own bridges are covered by `used`.
                net = ipam.pick_subnet(self.config.default_address_pools,
                                       [s for _, s in used], routes)
            else:
                for other, other_subnet in used:
                    if net.overlaps(other_subnet):
                        raise Conflict(f"cannot create network {record['Id']} ({bridge}): conflicts "
                                       f"with network {other['Id']} ({self.bridge_of(other)}): "
                                       "networks have overlapping IPv4")
                route = ipam.overlapping(net, [r for r in routes
                                               if not any(r == s for _, s in used)])
                if route is not None:
                    raise Conflict(f"cannot create network {record['Id']} ({bridge}): subnet {net} "
                                   f"overlaps the host's route to {route}: the host would lose "
                                   "that destination behind the bridge")
            gw = gw or ipam.default_gateway(net)
            config = {"Subnet": str(net), "Gateway": str(gw)}
            if rng is not None:
                config["IPRange"] = str(rng)
            record["IPAM"]["Config"] = [config]
            record["Internal"] = bool(internal)
            record["Options"] = {BRIDGE_NAME: bridge}
            record["Labels"] = labels
            record["Dockyard"] = {"UserSubnet": subnet is not None}
            self._write(record)
        return record

    def remove(self, ref) -> dict:
        """``network rm``: delete a user network without endpoints, and its bridge device."""
        record = self.get(ref)
        if record["Name"] in BUILTIN:
            raise UsageError(f"{record['Name']} is a pre-defined network and cannot be removed")
        with self._lock():
            try:
                record = read_json(self._path(record["Id"]))
            except FileNotFoundError:
                raise NetworkNotFound(f"network {ref} not found") from None
            if record.get("Containers"):
                raise Conflict(f"error while removing network: network {record['Name']} id "
                               f"{record['Id']} has active endpoints")
            os.unlink(self._path(record["Id"]))
        self._delete_bridge(record)
        return record

    def _delete_bridge(self, record: dict) -> None:
        bridge = self.bridge_of(record)
        # /sys/class/net lists this network namespace's interfaces (sysfs-class-net):
        # a cheap look before loading netlink at all.
        if bridge and os.path.exists(f"/sys/class/net/{bridge}"):
            from . import link
            link.delete_bridge(bridge)

    def prune(self, keep=None) -> list[str]:
        """``network prune``: remove user networks without endpoints; their names.

        ``keep(record)``: return True to spare a network (filters).
        """
        removed = []
        for record in self.list():
            if record["Name"] in BUILTIN or record.get("Containers"):
                continue
            if keep is not None and keep(record):
                continue
            try:
                self.remove(record["Id"])
            except (Conflict, NotFound):
                continue  # attached or removed meanwhile
            removed.append(record["Name"])
        return removed

    # -- endpoints -----------------------------------------------------------------------

    def reserve(self, network, container_id: str, container_name: str, aliases=(),
                ip: str | None = None, mac: str | None = None) -> dict:
        """Give a container an endpoint on ``network``: an ID, an address, a MAC.

        The address is ``ip`` if given (only on user networks created with a
        ``--subnet``, as docker), else the first free one. The MAC is ``mac``
        if given, else docker's 02:42 + the address. Returns the endpoint
        (with ``NetworkID``); host and none networks get one without address.
        Raises :class:`~engine.errors.Conflict` if the container has one here.
        """
        record = self.get(network)
        name = container_name.lstrip("/")
        with self._lock():
            try:
                record = read_json(self._path(record["Id"]))
            except FileNotFoundError:
                raise NetworkNotFound(f"network {record['Name']} not found") from None
            endpoints = record.setdefault("Containers", {})
            if container_id in endpoints:
                raise Conflict(f"endpoint with name {name} already exists in network {record['Name']}")
            endpoint = {"Name": name, "EndpointID": os.urandom(32).hex(), "MacAddress": "",
                        "IPv4Address": "", "IPv6Address": "", "Aliases": list(aliases or []),
                        "Gateway": "", "IPAddress": "", "IPPrefixLen": 0}
            if record["Driver"] == "bridge":
                config = record["IPAM"]["Config"][0]
                subnet = ipaddress.IPv4Network(config["Subnet"])
                if ip:
                    if record["Name"] in BUILTIN:
                        raise UsageError("user specified IP address is supported on user defined "
                                         "networks only")
                    if not (record.get("Dockyard") or {}).get("UserSubnet"):
                        raise UsageError("user specified IP address is supported only when "
                                         "connecting to networks with user configured subnets")
                taken = {e["IPAddress"] for e in endpoints.values() if e.get("IPAddress")}
                try:
                    address = ipam.allocate(subnet, config.get("Gateway"), config.get("IPRange"),
                                            taken, ip or None)
                except ipam.Exhausted:
                    raise ipam.Exhausted(f"{ipam.NO_ADDRESS}: {record['Name']} ({record['Id']})") \
                        from None
                endpoint.update(
                    MacAddress=ipam.parse_mac(mac) if mac else ipam.mac_for(address),
                    IPv4Address=f"{address}/{subnet.prefixlen}", IPAddress=address,
                    IPPrefixLen=subnet.prefixlen,
                    Gateway="" if record.get("Internal") else config.get("Gateway", ""))
            elif ip:
                raise UsageError("user specified IP address is supported on user defined "
                                 "networks only")
            endpoints[container_id] = endpoint
            self._write(record, durable=False)
        return {**endpoint, "NetworkID": record["Id"]}

    def release(self, network, container_id: str) -> dict | None:
        """Take the container's endpoint off ``network``; the endpoint, or None if it had none."""
        record = self.get(network)
        with self._lock():
            try:
                record = read_json(self._path(record["Id"]))
            except FileNotFoundError:
                return None
            endpoint = (record.get("Containers") or {}).pop(container_id, None)
            if endpoint is not None:
                self._write(record, durable=False)
        return endpoint

    def endpoints(self, network) -> dict[str, dict]:
        """The network's endpoints by container ID (fresh from disk)."""
        return dict(self.get(network).get("Containers") or {})

    def networks_of(self, container_id: str) -> list[dict]:
        """The records of every network the container has an endpoint on."""
        return [r for r in self.list() if container_id in (r.get("Containers") or {})]


# -- list filters (network ls --filter, networks.list(filters=...)) --------------------------


def parse_filters(words) -> dict[str, list[str]]:
    """``["driver=bridge", "label=a"]`` -> ``{"driver": ["bridge"], "label": ["a"]}``,
    checked as moby's daemon/network/filter.go does. A dict passes through
    (docker-py's ``filters={"name": "x"}``)."""
    from ..image.filters import parse

    if isinstance(words, dict):
        filters = {}
        for key, value in words.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                filters.setdefault(key, [])
                v = str(v).lower() if isinstance(v, bool) else str(v)
                if v not in filters[key]:
                    filters[key].append(v)
        words = [f"{k}={v}" for k, vs in filters.items() for v in vs]
    filters = parse(list(words), NETWORK_FILTERS)
    dangling = filters.get("dangling")
    if dangling is not None:
        if len(dangling) > 1:
            raise UsageError('got more than one value for filter key "dangling"')
        if dangling[0] not in ("0", "1", "true", "false"):
            raise UsageError("invalid value for filter 'dangling', must be \"true\" (or \"1\"), "
                             "or \"false\" (or \"0\")")
    for value in filters.get("type", []):
        if value not in ("custom", "builtin"):
            raise UsageError(f"invalid filter: 'type'='{value}'")
    return filters


def _search(pattern: str, text: str) -> bool:
    """docker's filters.Match: the value as a regular expression, searched (or equal)."""
    try:
        return pattern == text or re.search(pattern, text) is not None
    except re.error:
        return False


def filter_records(records: list[dict], filters: dict[str, list[str]]) -> list[dict]:
    """The records that pass every filter (moby's FilterNetworks)."""
    from ..image.filters import match_labels

    out = []
    for r in records:
        if "driver" in filters and r["Driver"] not in filters["driver"]:
            continue
        if "name" in filters and not any(_search(p, r["Name"]) for p in filters["name"]):
            continue
        if "id" in filters and not any(_search(p, r["Id"]) for p in filters["id"]):
            continue
        if "label" in filters and not match_labels(r.get("Labels"), filters["label"]):
            continue
        if "scope" in filters and r["Scope"] not in filters["scope"]:
            continue
        if "dangling" in filters:
            dangling = filters["dangling"][0] in ("1", "true")
            unused = r["Name"] not in BUILTIN and not r.get("Containers")
            if unused != dangling:
                continue
        if "type" in filters:
            builtin = r["Name"] in BUILTIN
            if not any((t == "builtin") == builtin for t in filters["type"]):
                continue
        out.append(r)
    return out

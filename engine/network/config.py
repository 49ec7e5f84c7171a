"""The engine's network settings, read from ``<root>/engine.json``.

dockerd takes these as flags or in ``/etc/docker/daemon.json``; Dockyard has
no daemon, so they live in one JSON file beside the state they shape. A
missing file means the defaults::

    {
      "bip": "10.200.0.1/16",
      "icc": true,
      "bridge": "dockyard0",
      "default_address_pools": [{"base": "10.201.0.0/16", "size": 24}]
    }

``bip``
    the default bridge's own address and prefix (dockerd ``--bip``): the
    gateway of every container on ``bridge``; the subnet is its network.
``icc``
    inter-container communication on the default bridge (dockerd ``--icc``).
    ``false`` puts every container's bridge port in isolated mode (see
    engine/network/link.py ``SetIsolated``): containers still reach the
    gateway, not each other.
``bridge``
    the default bridge's device name (dockerd ``--bridge``). Two roots on one
    host (tests, for instance) need different names and ``bip``s.
``default_address_pools``
    where ``network create`` without ``--subnet`` takes a subnet from
    (dockerd ``--default-address-pool base=...,size=...``): the first
    ``/size`` of a ``base`` that overlaps neither another network nor a host
    route (engine/network/ipam.py ``pick_subnet``).

Other keys are left alone: the file is the whole engine's, not only the
network's. Values are checked when read; a wrong one is a
:class:`~engine.errors.UsageError` naming the file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass

from ..errors import UsageError

CONFIG_FILE = "engine.json"
DEFAULT_BIP = "10.200.0.1/16"
DEFAULT_BRIDGE = "dockyard0"
# IFNAMSIZ is 16 bytes with the NUL (include/uapi/linux/if.h); "/" and
# white space are refused by dev_valid_name() in net/core/dev.c.
IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


@dataclass(frozen=True)
class AddressPool:
    """A block (``base``) cut into subnets of prefix length ``size``."""

    base: str
    size: int

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.base)


DEFAULT_POOLS = (AddressPool("10.201.0.0/16", 24),)


@dataclass(frozen=True)
class NetConfig:
    bip: str = DEFAULT_BIP
    icc: bool = True
    bridge: str = DEFAULT_BRIDGE
    default_address_pools: tuple[AddressPool, ...] = DEFAULT_POOLS

    @property
    def bridge_interface(self) -> ipaddress.IPv4Interface:
        """``bip`` as an interface: ``.ip`` is the gateway, ``.network`` the subnet."""
        return ipaddress.IPv4Interface(self.bip)


def root_defaults(root) -> dict:
    """The default bridge of a root that is not /var/lib/dockyard.

    The default root gets docker's shape: ``dockyard0``, 10.200.0.1/16. Any
    other root (a notebook's, a test's, a lab's) gets a bridge of its own,
    named and numbered from a hash of its path (``dyb`` + 8 hex digits,
    10.202.X.1/24), so that two roots used at once do not hand out the same
    addresses on one bridge. engine.json's ``bridge`` and ``bip`` override both.
    """
    import hashlib
    from ..layout import DEFAULT_ROOT

    if os.path.abspath(str(root)) == os.path.abspath(str(DEFAULT_ROOT)):
        return {}
    digest = hashlib.sha256(os.path.abspath(str(root)).encode()).hexdigest()
    bridge = "dyb" + digest[:8]
    start = int(digest[8:10], 16)
    # 256 choices collide often enough for two roots to meet: take the first
    # /24 from the hashed one on that no other interface already routes.
    taken = [net for iface, net in _routes() if iface != bridge]
    for i in range(256):
        subnet = ipaddress.IPv4Network(f"10.202.{(start + i) % 256}.0/24")
        if not any(subnet.overlaps(net) for net in taken):
            break
    return {"bridge": bridge, "bip": f"{subnet.network_address + 1}/24"}


def _routes() -> list[tuple[str, ipaddress.IPv4Network]]:
    """(interface, destination) of the host's IPv4 routes, from /proc/net/route
    (proc(5): little-endian hex; read without netlink, so without pyroute2).
    Default routes are left out: everything overlaps them."""
    out = []
    try:
        with open("/proc/net/route") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
        if int(mask) == 0:
            continue
        out.append((fields[0], ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)))
    return out


_ROOT_DEFAULTS: dict[str, dict] = {}


def _defaults_of(root) -> dict:
    """root_defaults(), worked out once per process and root: the choice is
    stable once made (the root's own bridge is left out of the check), and
    reading the routing table at every lookup would cost a start milliseconds."""
    key = os.path.abspath(str(root))
    if key not in _ROOT_DEFAULTS:
        _ROOT_DEFAULTS[key] = root_defaults(root)
    return _ROOT_DEFAULTS[key]


def load(layout) -> NetConfig:
    """The settings of ``layout``'s root; the defaults if it has no engine.json."""
    path = layout.root / CONFIG_FILE
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        defaults = _defaults_of(layout.root)
        return parse(defaults, str(path)) if defaults else NetConfig()
    except ValueError as e:
        raise UsageError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    if isinstance(data, dict) and "bridge" in data and "bip" in data:
        return parse(data, str(path))  # both chosen by the user: nothing to work out
    return parse({**_defaults_of(layout.root), **data}, str(path))


def parse(data: dict, where: str = CONFIG_FILE) -> NetConfig:
    """Check the network keys of an engine.json object; missing keys keep their defaults."""
    def bad(message: str) -> UsageError:
        return UsageError(f"{where}: {message}")

    bip = data.get("bip", DEFAULT_BIP)
    try:
        iface = ipaddress.IPv4Interface(bip)
    except (ValueError, TypeError):
        raise bad(f"bip: {bip!r} is not an IPv4 address with a prefix length (like {DEFAULT_BIP!r})") \
            from None
    if iface.network.prefixlen > 30:
        raise bad(f"bip: {bip} leaves no room for containers (at most /30)")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        kind = "network" if iface.ip == iface.network.network_address else "broadcast"
        raise bad(f"bip: {bip} is the {kind} address of {iface.network}; give the bridge's own "
                  f"address, like {iface.network.network_address + 1}/{iface.network.prefixlen}")

    icc = data.get("icc", True)
    if not isinstance(icc, bool):
        raise bad(f"icc: expected true or false, not {icc!r}")

    bridge = data.get("bridge", DEFAULT_BRIDGE)
    if not isinstance(bridge, str) or not IFNAME.match(bridge):
        raise bad(f"bridge: {bridge!r} is not an interface name (1 to 15 of [A-Za-z0-9_.-])")

    raw_pools = data.get("default_address_pools")
    pools = DEFAULT_POOLS
    if raw_pools is not None:
        if not isinstance(raw_pools, list) or not raw_pools:
            raise bad("default_address_pools: expected a non-empty list of {\"base\": CIDR, \"size\": N}")
        checked = []
        for item in raw_pools:
            if not isinstance(item, dict) or set(item) != {"base", "size"}:
                raise bad(f"default_address_pools: {item!r}: expected {{\"base\": CIDR, \"size\": N}}")
            base, size = item["base"], item["size"]
            try:
                network = ipaddress.IPv4Network(base)
            except (ValueError, TypeError):
                raise bad(f"default_address_pools: base {base!r} is not an IPv4 network in CIDR "
                          "notation (host bits zero)") from None
            if not isinstance(size, int) or isinstance(size, bool) or not network.prefixlen <= size <= 30:
                raise bad(f"default_address_pools: size {size!r} must be a prefix length between "
                          f"{network.prefixlen} (the base's) and 30")
            checked.append(AddressPool(str(network), size))
        pools = tuple(checked)
    return NetConfig(bip=str(iface), icc=icc, bridge=bridge, default_address_pools=pools)

"""IP address management: which subnet a network gets, which address a container gets.

Pure functions over :mod:`ipaddress` values, except :func:`host_routes`,
which asks the kernel. The store (engine/network/store.py) calls them under
its lock, with what is already taken, and records the answers.

A network's IPAM configuration is docker's ``IPAM.Config`` entry::

    Subnet   10.201.3.0/24     every address of the network (``--subnet``)
    Gateway  10.201.3.1        the bridge's own address; containers route via it
                               (``--gateway``; default: the first host address)
    IPRange  10.201.3.128/25   where *automatic* addresses come from (``--ip-range``);
                               a wanted ``--ip`` may be anywhere in the subnet,
                               as with docker, so static addresses can live
                               outside the range without clashing

Inside a subnet the network address (all host bits 0) and the broadcast
address (all 1) are never handed out (RFC 919, RFC 922), nor is the gateway.
Addresses are given first-free, lowest first.

Checks and wording follow moby (api/types/network/ipam.go ``ValidateIPAM``,
libnetwork/ipamapi's errors, docker/cli's network create); Dockyard's
networks are IPv4 only.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from ..errors import Conflict, EngineError, UsageError

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


class IPAMError(UsageError):
    """A subnet, gateway, range or address that cannot be used as written."""


class AddressInUse(Conflict):
    """The wanted address belongs to someone (a container, the gateway, the subnet itself)."""


class Exhausted(EngineError):
    """No free subnet in the pools, or no free address in the network."""


NO_SUBNET = ("could not find an available, non-overlapping IPv4 address pool among the "
             "defaults to assign to the network")
NO_ADDRESS = "no available IPv4 addresses on this network's address pools"


# -- parsing and checking a network's configuration -------------------------------------


def _join(errors: list[str]) -> str:
    """moby's joinError: one message alone, several as a ``* `` list."""
    if len(errors) == 1:
        return errors[0]
    return "* " + "\n* ".join(errors)


def parse_config(subnet: str | None, gateway: str | None = None,
                 ip_range: str | None = None) -> tuple[IPv4Network | None, IPv4Address | None,
                                                       IPv4Network | None]:
    """Check ``--subnet``/``--gateway``/``--ip-range`` as docker does; return them parsed.

    Without a subnet nothing else may be given (docker/cli: "every ip-range
    or gateway must have a corresponding subnet"); the subnet may then be
    picked later (:func:`pick_subnet`). The gateway is returned as given
    (None if not): :func:`default_gateway` fills it in.
    """
    if subnet is None:
        if gateway is not None or ip_range is not None:
            raise IPAMError("every ip-range or gateway must have a corresponding subnet")
        return None, None, None
    try:
        prefix = ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        raise IPAMError(f"invalid network config:\ninvalid subnet {subnet}: invalid CIDR block notation") \
            from None
    if prefix.version == 6:
        raise IPAMError(f"invalid network config:\ninvalid subnet {subnet}: Dockyard networks are "
                        "IPv4 only")
    if "/" not in subnet:
        raise IPAMError(f"invalid network config:\ninvalid subnet {subnet}: invalid CIDR block notation")
    errors = []
    written = ipaddress.IPv4Interface(subnet)
    if written.ip != prefix.network_address:
        errors.append(f"invalid subnet {subnet}: it should be {prefix}")
    if prefix.prefixlen > 30:
        # Not a docker check: a /31 or /32 has no address left for a container
        # once the gateway has its own (RFC 3021 point-to-point links aside).
        errors.append(f"invalid subnet {subnet}: too small for a gateway and containers "
                      "(at most /30)")
    rng = None
    if ip_range is not None:
        try:
            written_range = ipaddress.IPv4Interface(ip_range) if "/" in ip_range else None
        except ValueError:
            written_range = None
        if written_range is None:
            errors.append(f"invalid ip-range {ip_range}: invalid CIDR block notation")
        else:
            rng = written_range.network
            if rng.prefixlen < prefix.prefixlen:
                errors.append(f"invalid ip-range {ip_range}: CIDR block is bigger than its parent "
                              f"subnet {prefix}")
            if written_range.ip != rng.network_address:
                errors.append(f"invalid ip-range {ip_range}: it should be {rng}")
            if not prefix.overlaps(rng):
                errors.append(f"invalid ip-range {ip_range}: parent subnet {prefix} doesn't contain "
                              "ip-range")
    gw = None
    if gateway is not None:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError:
            errors.append(f"invalid gateway {gateway}: invalid address")
        else:
            if gw not in prefix:
                errors.append(f"invalid gateway {gateway}: parent subnet {prefix} doesn't contain "
                              "this address")
            elif gw in (prefix.network_address, prefix.broadcast_address):
                # Not a docker check either: the kernel would take it for the
                # subnet's broadcast, and no container could use it as a router.
                errors.append(f"invalid gateway {gateway}: it is the {_special(gw, prefix)} address "
                              f"of {prefix}")
    if errors:
        raise IPAMError("invalid network config:\n" + _join(errors))
    return prefix, gw, rng


def _special(address: IPv4Address, subnet: IPv4Network) -> str:
    return "network" if address == subnet.network_address else "broadcast"


def default_gateway(subnet: IPv4Network) -> IPv4Address:
    """The first host address of the subnet (docker's default gateway)."""
    return subnet.network_address + 1


def parse_address(text: str) -> IPv4Address:
    """A container's wanted ``--ip`` (docker: "invalid IPv4 address: X")."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise IPAMError(f"invalid IPv4 address: {text}") from None
    if address.is_unspecified:
        raise IPAMError(f"invalid IPv4 address: {text}")
    return address


# -- subnets for new networks ------------------------------------------------------------


def _pool(pool) -> tuple[IPv4Network, int]:
    """A pool as (base, size) from an AddressPool, a {"base", "size"} dict or a pair."""
    if isinstance(pool, dict):
        base, size = pool["base"], pool["size"]
    elif hasattr(pool, "base"):
        base, size = pool.base, pool.size
    else:
        base, size = pool
    return ipaddress.IPv4Network(base), int(size)


def pick_subnet(pools: Iterable, used: Iterable, host_routes: Iterable = ()) -> IPv4Network:
    """The first ``/size`` of a pool that overlaps no used network and no host route.

    Pools are tried in order, each from its lowest subnet up (moby's default
    IPAM does the same with ``default-address-pools``). ``used``: the
    subnets of the root's other networks. ``host_routes``: the host's routes
    (:func:`host_routes`) -- a subnet that overlaps one would hide the host's
    own destinations behind the bridge. Raises :class:`Exhausted`.
    """
    avoid = [ipaddress.ip_network(n, strict=False) for n in (*used, *host_routes)]
    avoid = [n for n in avoid if n.version == 4]
    for pool in pools:
        base, size = _pool(pool)
        for candidate in base.subnets(new_prefix=size):
            if not any(candidate.overlaps(n) for n in avoid):
                return candidate
    raise Exhausted(NO_SUBNET)


def overlapping(subnet, others: Iterable):
    """The first of ``others`` that shares an address with ``subnet``, else None."""
    subnet = ipaddress.ip_network(subnet, strict=False)
    for other in others:
        if subnet.overlaps(ipaddress.ip_network(other, strict=False)):
            return other
    return None


def host_routes() -> list[IPv4Network]:
    """The destinations of the host's IPv4 routes, default routes left out.

    Read over netlink (RTM_GETROUTE dump, rtnetlink(7)) from the ``main``
    table, where connected and static routes live, and the ``local`` table,
    where the host's own addresses are (``ip route show table local``).
    """
    from .link import _off_event_loop
    return _off_event_loop(_host_routes)()


def _host_routes() -> list[IPv4Network]:
    import socket

    from .link import pyroute2
    IPRoute, _ = pyroute2()

    found = []
    with IPRoute() as ip:
        for table in (254, 255):  # RT_TABLE_MAIN, RT_TABLE_LOCAL (linux/rtnetlink.h)
            for route in ip.get_routes(family=socket.AF_INET, table=table):
                length = route["dst_len"]
                dst = route.get_attr("RTA_DST")
                if length == 0 or dst is None:
                    continue
                network = ipaddress.IPv4Network(f"{dst}/{length}", strict=False)
                if network not in found:
                    found.append(network)
    return found


# -- addresses for endpoints ---------------------------------------------------------------


def allocate(subnet, gateway, ip_range, taken: set[str], wanted: str | None = None) -> str:
    """An address for a new endpoint: ``wanted`` if it is free, else the first free one.

    ``taken``: the addresses (text, no prefix) other endpoints hold. Never
    handed out: the subnet's network and broadcast addresses and the
    gateway. ``wanted`` must lie in the subnet (not necessarily in the
    ip-range, as with docker); automatic addresses come from the ip-range
    when there is one. Raises :class:`IPAMError` (outside the subnet),
    :class:`AddressInUse` or :class:`Exhausted`.
    """
    net = ipaddress.IPv4Network(subnet)
    reserved = {net.network_address, net.broadcast_address}
    if gateway:
        reserved.add(ipaddress.IPv4Address(str(gateway)))
    used = {ipaddress.IPv4Address(str(a).split("/")[0]) for a in taken if a}
    if wanted:
        address = parse_address(str(wanted))
        if address not in net:
            raise IPAMError(f"no configured subnet or ip-range contain the IP address {address}")
        if address in reserved or address in used:
            raise AddressInUse("Address already in use")
        return str(address)
    span = ipaddress.IPv4Network(ip_range) if ip_range else net
    first, last = int(span.network_address), int(span.broadcast_address)
    for number in range(first, last + 1):
        address = IPv4Address(number)
        if address not in reserved and address not in used and address in net:
            return str(address)
    raise Exhausted(NO_ADDRESS)


def mac_for(address: str) -> str:
    """docker's MAC for an IPv4 endpoint: 02:42 and the four bytes of the address.

    ``02``: the locally administered bit set, unicast (IEEE 802, the U/L bit),
    so it can never clash with a vendor's address; the address makes it
    unique on the bridge (libnetwork's genMAC).
    """
    packed = ipaddress.IPv4Address(address).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in packed)


def parse_mac(text: str) -> str:
    """A ``--mac-address``, lower-cased; docker's "X is not a valid mac address"."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                   for p in parts):
        raise IPAMError(f"{text} is not a valid mac address")
    if int(parts[0], 16) & 1:
        raise IPAMError(f"{text} is not a valid mac address: it is a multicast address")
    return ":".join(parts).lower()

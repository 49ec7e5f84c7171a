"""Interfaces, addresses and routes over netlink: described as steps, performed in one place.

Everything Dockyard does to the kernel's network configuration is one of the
steps below -- a frozen dataclass, so a plan can be built, printed and tested
without root. Each step's :meth:`shell` is the ``ip``/``bridge`` command
(iproute2) that does the same, for ``--explain`` and for learners; inside a
namespace the command is prefixed with ``nsenter --net=PATH`` (nsenter(1)).
:func:`perform` is the only function that changes anything: it speaks
rtnetlink (rtnetlink(7)) through pyroute2, never by running ``ip``.

One container endpoint on a bridge, as :func:`endpoint_steps` plans it::

    ip link add name dockyard0 type bridge address 02:42:0a:c8:00:01      EnsureBridge
    ip addr add 10.200.0.1/16 dev dockyard0                           (made once, on first use)
    ip link set dockyard0 up
    ip link add dy1a2b3c4d5e master dockyard0 type veth                AddVethInto
        peer name eth0 netns /var/lib/dockyard/netns/<id> address 02:42:0a:c8:00:02
    bridge link set dev dy1a2b3c4d5e isolated on                      SetIsolated (icc=false)
    ip link set dy1a2b3c4d5e up                                       SetUp
    nsenter --net=... ip addr add 10.200.0.2/16 dev eth0              AddAddress
    nsenter --net=... ip link set lo up                               SetUp
    nsenter --net=... ip link set eth0 up                             SetUp
    nsenter --net=... ip route add default via 10.200.0.1             AddDefaultRoute

The veth pair (veth(4)) is a cable with two ends: what enters one leaves the
other. One end is a port of the bridge (a virtual switch) in the host's
namespace, the other is the container's eth0 in its own namespace. The
host-side name is "dy" + 10 hex digits of the endpoint ID, within IFNAMSIZ
(16 bytes with the NUL); the container side is born inside the container's
namespace as eth0 (a name is per namespace, so every container can have an
eth0). The separate steps AddVeth, MoveToNetns and Rename do the same in
three moves, as a learner would type them; they are kept for that. Deleting either end deletes both, and
destroying the namespace deletes the end inside it: removing a container's
namespace is enough to remove its veth pairs.

Port isolation (``SetIsolated``, IFLA_BRPORT_ISOLATED, Linux 4.18): an
isolated bridge port forwards only to non-isolated ports -- the bridge
itself, i.e. the gateway -- never to another isolated port. With every
container port isolated, containers reach the gateway but not each other:
dockerd's ``--icc=false`` without a single iptables rule.

No step enables forwarding (net.ipv4.ip_forward) or NAT: container traffic
never leaves the bridge except to the host itself.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from typing import Iterable, NamedTuple

CLONE_NEWNET = 0x40000000   # <linux/sched.h>
NETLINK_ROUTE = 0           # <linux/netlink.h>


def _in(netns: str | None, command: str) -> str:
    return f"nsenter --net={netns} {command}" if netns else command


@dataclass(frozen=True)
class EnsureBridge:
    """A bridge named ``name``: created if missing, ``address`` added if missing, set up.

    A bridge with an address gets a fixed MAC, docker's 02:42 + the address
    (see ipam.mac_for). Left alone, a bridge takes the lowest MAC of its
    ports and changes it as containers come and go, which makes the
    containers' ARP entries for the gateway stale; a MAC set by hand stays
    (net/bridge/br_stp_if.c skips bridges whose address was assigned).
    """

    name: str
    address: str | None = None   # "10.200.0.1/16": the gateway, with the subnet's prefix
    up: bool = True

    @property
    def mac(self) -> str | None:
        if not self.address:
            return None
        from .ipam import mac_for
        return mac_for(self.address.partition("/")[0])

    def shell(self) -> str:
        made = f"ip link add name {self.name} type bridge"
        lines = [made + (f" address {self.mac}" if self.mac else "")]
        if self.address:
            lines.append(f"ip addr add {self.address} dev {self.name}")
        if self.up:
            lines.append(f"ip link set {self.name} up")
        return "\n".join(lines)


@dataclass(frozen=True)
class AddVethInto:
    """A veth pair made in one message, its container end born in the namespace.

    The host end ``host_ifname`` is created as a port of ``bridge``; its
    peer is created directly inside ``netns_path`` with its final name
    (``eth0``) and MAC (IFLA_NET_NS_FD in the peer's attributes, veth(4)).
    Making the peer in the host and moving it later costs a device
    re-registration in each namespace -- two RCU grace periods, the slowest
    part of a start -- and a rename; this is one ``RTM_NEWLINK``.
    """

    host_ifname: str
    bridge: str
    netns_path: str
    ifname: str
    mac: str | None = None

    def shell(self) -> str:
        peer = f"name {self.ifname} netns {self.netns_path}"
        if self.mac:
            peer += f" address {self.mac}"
        return f"ip link add {self.host_ifname} master {self.bridge} type veth peer {peer}"


@dataclass(frozen=True)
class AddVeth:
    """A veth pair in the host's namespace: ``host_ifname`` <-> ``peer_ifname``."""

    host_ifname: str
    peer_ifname: str

    def shell(self) -> str:
        return f"ip link add {self.host_ifname} type veth peer name {self.peer_ifname}"


@dataclass(frozen=True)
class SetMaster:
    """Make ``ifname`` a port of ``bridge``."""

    ifname: str
    bridge: str

    def shell(self) -> str:
        return f"ip link set {self.ifname} master {self.bridge}"


@dataclass(frozen=True)
class SetIsolated:
    """Bridge port isolation on or off (IFLA_BRPORT_ISOLATED)."""

    ifname: str
    on: bool = True

    def shell(self) -> str:
        return f"bridge link set dev {self.ifname} isolated {'on' if self.on else 'off'}"


@dataclass(frozen=True)
class SetUp:
    """Bring ``ifname`` up (IFF_UP), in ``netns`` if given."""

    ifname: str
    netns: str | None = None

    def shell(self) -> str:
        return _in(self.netns, f"ip link set {self.ifname} up")


@dataclass(frozen=True)
class MoveToNetns:
    """Move ``ifname`` from the host's namespace into the one pinned at ``netns_path``."""

    ifname: str
    netns_path: str

    def shell(self) -> str:
        return f"ip link set {self.ifname} netns {self.netns_path}"


@dataclass(frozen=True)
class Rename:
    """Rename ``ifname`` to ``new`` (the link must be down), in ``netns`` if given."""

    ifname: str
    new: str
    netns: str | None = None

    def shell(self) -> str:
        return _in(self.netns, f"ip link set {self.ifname} name {self.new}")


@dataclass(frozen=True)
class SetMac:
    """Set the hardware address of ``ifname``."""

    ifname: str
    mac: str
    netns: str | None = None

    def shell(self) -> str:
        return _in(self.netns, f"ip link set {self.ifname} address {self.mac}")


@dataclass(frozen=True)
class AddAddress:
    """Add ``cidr`` ("10.200.0.2/16") to ``ifname``; the kernel adds the subnet's route."""

    ifname: str
    cidr: str
    netns: str | None = None

    def shell(self) -> str:
        return _in(self.netns, f"ip addr add {self.cidr} dev {self.ifname}")


@dataclass(frozen=True)
class AddDefaultRoute:
    """Route everything without a more specific route via ``gateway``."""

    gateway: str
    netns: str | None = None

    def shell(self) -> str:
        return _in(self.netns, f"ip route add default via {self.gateway}")


@dataclass(frozen=True)
class DeleteLink:
    """Delete ``ifname`` if it exists (a veth takes its peer with it)."""

    ifname: str
    netns: str | None = None

    def shell(self) -> str:
        return _in(self.netns, f"ip link del {self.ifname}")


STEPS = (EnsureBridge, AddVeth, SetMaster, SetIsolated, SetUp, MoveToNetns, Rename, SetMac,
         AddAddress, AddDefaultRoute, DeleteLink)


def explain(steps: Iterable) -> str:
    """The steps as a shell script of ``ip`` commands."""
    return "\n".join(step.shell() for step in steps)


# -- plans -----------------------------------------------------------------------------------


def host_ifname(endpoint_id: str) -> str:
    """The host end of an endpoint's veth: "dy" + 10 hex digits (12 bytes)."""
    return "dy" + endpoint_id[:10]


def _peer_ifname(host: str) -> str:
    """The container end's name while it is still in the host's namespace."""
    return "dp" + host[2:] if host.startswith("dy") else (host[:14] + "p")


def endpoint_steps(bridge: str, host_ifname: str, netns_path: str, ifname: str,
                   address_cidr: str, gateway: str | None, mac: str | None,
                   isolated: bool = False) -> list:
    """Plan one endpoint: a veth from ``bridge`` into the namespace at ``netns_path``.

    In the namespace the interface is ``ifname`` (eth0, eth1...) with
    ``mac`` and ``address_cidr``, ``lo`` is up, and the default route goes
    via ``gateway`` (none for an internal network: no way out).
    ``isolated``: the bridge port is isolated (``--icc=false``).
    """
    steps = [AddVethInto(host_ifname, bridge, netns_path, ifname, mac)]
    if isolated:
        steps.append(SetIsolated(host_ifname, True))
    steps.append(SetUp(host_ifname))
    if address_cidr:
        steps.append(AddAddress(ifname, address_cidr, netns_path))
    steps += [SetUp("lo", netns_path), SetUp(ifname, netns_path)]
    if gateway:
        steps.append(AddDefaultRoute(gateway, netns_path))
    return steps


# -- doing it --------------------------------------------------------------------------------


def perform(steps: Iterable) -> None:
    """Carry out ``steps`` in order over rtnetlink.

    One netlink socket per namespace, opened on first use: pyroute2 makes a
    socket inside a namespace by forking a helper that setns(2)es into it,
    creates the socket there and passes it back (a socket stays bound to the
    namespace it was made in). A kernel refusal stops at that step and is
    raised as :class:`OSError` with the step's ``ip`` command as a note; the
    veth pairs this call made are deleted first (a half-made endpoint would
    otherwise stay in the host's namespace). Nothing else is undone.
    """
    IPRoute, NetlinkError = pyroute2()

    sockets: dict[str | None, IPRoute] = {}
    made: list[str] = []  # veths made by this call: undone if a later step fails

    def ipr(netns: str | None) -> IPRoute:
        if netns not in sockets:
            if netns is not None and not _is_netns(netns):
                raise FileNotFoundError(errno.ENOENT, "no network namespace at this path", netns)
            sockets[netns] = IPRoute() if netns is None else IPRoute(use_socket=_socket_in(netns))
        return sockets[netns]

    try:
        for step in steps:
            try:
                _DO[type(step)](step, ipr)
            except NetlinkError as e:
                error = OSError(e.code, f"{os.strerror(e.code)} (netlink)")
                error.add_note(f"while doing: {step.shell()}")
                _undo(made, ipr)
                raise error from None
            except BaseException as e:
                if isinstance(e, OSError):
                    e.add_note(f"while doing: {step.shell()}")
                _undo(made, ipr)
                raise
            if isinstance(step, (AddVeth, AddVethInto)):
                made.append(step.host_ifname)
    finally:
        for sock in sockets.values():
            sock.close()


def _undo(veths: list[str], ipr) -> None:
    """Delete the veth pairs a failed :func:`perform` made (best effort): a
    half-built endpoint must not outlive the error. Whatever else the steps
    did was to those links (gone with them) or to a bridge others may share."""
    for name in reversed(veths):
        try:
            _delete_link(DeleteLink(name), ipr)
        except Exception:
            pass  # the original error is the one to report


def pyroute2():
    """(IPRoute, NetlinkError), imported without running ``pyroute2/__init__.py``.

    That file imports every part of pyroute2 (NDB, IPDB, conntrack,
    ethtool...): about 100 ms, on every ``dockyard run``. Dockyard needs
    only ``pyroute2.iproute.linux``, so the package is registered first as a
    bare module with the right ``__path__`` (the import system then finds
    the submodules; PEP 451), whose ``__getattr__`` (PEP 562) runs the real
    ``__init__.py`` the first time anyone asks for a name it would define --
    so ``from pyroute2 import NDB`` elsewhere still works.
    """
    import importlib
    import importlib.util
    import sys
    import types

    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        package = types.ModuleType("pyroute2")
        package.__spec__, package.__file__ = spec, spec.origin
        package.__path__ = list(spec.submodule_search_locations)
        package.__package__ = "pyroute2"

        def complete(name):
            if name.startswith("__"):
                raise AttributeError(name)
            if importlib.util.find_spec(f"pyroute2.{name}") is not None:
                return importlib.import_module(f"pyroute2.{name}")  # a submodule: no need for all
            del package.__getattr__
            with open(spec.origin, "rb") as f:
                exec(compile(f.read(), spec.origin, "exec"), package.__dict__)
            return getattr(package, name)

        package.__getattr__ = complete
        sys.modules["pyroute2"] = package
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    return IPRoute, NetlinkError


def _socket_in(path: str) -> socket.socket:
    """A netlink socket of the namespace at ``path``.

    A socket belongs to the network namespace of the thread that creates it,
    for ever (socket(7), network_namespaces(7)); setns(2) moves only the
    calling *thread*. So a short-lived thread enters the namespace, makes
    the socket and ends; this process never leaves its own namespace. (What
    pyroute2 does by itself is fork a helper that sends the socket back: the
    same result, a few milliseconds slower.) SOCK_DGRAM, as asyncio wants.
    """
    import ctypes
    import threading

    if not _is_netns(path):
        raise FileNotFoundError(errno.ENOENT, "no network namespace at this path", path)
    result: dict = {}

    def enter_and_make():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                result["error"] = OSError(code, f"setns: {os.strerror(code)}", path)
                return
        finally:
            os.close(fd)
        result["socket"] = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)

    thread = threading.Thread(target=enter_and_make, name="netns-socket")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["socket"]


def _is_netns(path: str) -> bool:
    from . import netns
    return netns.exists(path)


def _index(ip, name: str) -> int:
    found = ip.link_lookup(ifname=name)
    if not found:
        raise OSError(errno.ENODEV, f"no interface {name}")
    return found[0]


def _code(e) -> int:
    return getattr(e, "code", 0)


def _ensure_bridge(step: EnsureBridge, ipr) -> None:
    _, NetlinkError = pyroute2()

    ip = ipr(None)
    found = ip.link_lookup(ifname=step.name)
    if not found:
        try:
            if step.mac:
                ip.link("add", ifname=step.name, kind="bridge", address=step.mac)
            else:
                ip.link("add", ifname=step.name, kind="bridge")
        except NetlinkError as e:
            if _code(e) != errno.EEXIST:  # made meanwhile by another container's start
                raise
        found = ip.link_lookup(ifname=step.name)
    index = found[0]
    if step.address:
        address, _, prefix = step.address.partition("/")
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                for a in ip.get_addr(index=index, family=socket.AF_INET)}
        if (address, int(prefix)) not in have:
            try:
                ip.addr("add", index=index, address=address, prefixlen=int(prefix))
            except NetlinkError as e:
                if _code(e) != errno.EEXIST:
                    raise
    if step.up:
        ip.link("set", index=index, state="up")


def _add_veth_into(step: AddVethInto, ipr) -> None:
    ip = ipr(None)
    if not _is_netns(step.netns_path):
        raise FileNotFoundError(errno.ENOENT, "no network namespace at this path", step.netns_path)
    fd = os.open(step.netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        peer = {"ifname": step.ifname, "net_ns_fd": fd}
        if step.mac:
            peer["address"] = step.mac
        ip.link("add", ifname=step.host_ifname, kind="veth", master=_index(ip, step.bridge), peer=peer)
    finally:
        os.close(fd)


def _add_veth(step: AddVeth, ipr) -> None:
    ipr(None).link("add", ifname=step.host_ifname, kind="veth", peer=step.peer_ifname)


def _set_master(step: SetMaster, ipr) -> None:
    ip = ipr(None)
    ip.link("set", index=_index(ip, step.ifname), master=_index(ip, step.bridge))


def _set_isolated(step: SetIsolated, ipr) -> None:
    ip = ipr(None)
    ip.brport("set", index=_index(ip, step.ifname), isolated=1 if step.on else 0)


def _set_up(step: SetUp, ipr) -> None:
    ip = ipr(step.netns)
    ip.link("set", index=_index(ip, step.ifname), state="up")


def _move(step: MoveToNetns, ipr) -> None:
    ip = ipr(None)
    index = _index(ip, step.ifname)
    if not _is_netns(step.netns_path):
        raise FileNotFoundError(errno.ENOENT, "no network namespace at this path", step.netns_path)
    fd = os.open(step.netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ip.link("set", index=index, net_ns_fd=fd)   # IFLA_NET_NS_FD
    finally:
        os.close(fd)


def _rename(step: Rename, ipr) -> None:
    ip = ipr(step.netns)
    ip.link("set", index=_index(ip, step.ifname), ifname=step.new)


def _set_mac(step: SetMac, ipr) -> None:
    ip = ipr(step.netns)
    ip.link("set", index=_index(ip, step.ifname), address=step.mac)


def _add_address(step: AddAddress, ipr) -> None:
    ip = ipr(step.netns)
    address, _, prefix = step.cidr.partition("/")
    ip.addr("add", index=_index(ip, step.ifname), address=address, prefixlen=int(prefix or 32))


def _add_default_route(step: AddDefaultRoute, ipr) -> None:
    ipr(step.netns).route("add", dst="0.0.0.0/0", gateway=step.gateway)


def _delete_link(step: DeleteLink, ipr) -> None:
    _, NetlinkError = pyroute2()

    if step.netns is not None and not _is_netns(step.netns):
        return  # the namespace is gone, and everything that was in it
    ip = ipr(step.netns)
    found = ip.link_lookup(ifname=step.ifname)
    if not found:
        return
    try:
        ip.link("del", index=found[0])
    except NetlinkError as e:
        if _code(e) != errno.ENODEV:  # gone meanwhile (its peer was deleted)
            raise


_DO = {EnsureBridge: _ensure_bridge, AddVethInto: _add_veth_into, AddVeth: _add_veth, SetMaster: _set_master,
       SetIsolated: _set_isolated, SetUp: _set_up, MoveToNetns: _move, Rename: _rename,
       SetMac: _set_mac, AddAddress: _add_address, AddDefaultRoute: _add_default_route,
       DeleteLink: _delete_link}


# -- helpers for the rest of the engine ------------------------------------------------------


def remove_endpoint(netns_path: str, ifname: str) -> None:
    """Delete the endpoint's interface inside the namespace (its veth peer goes with it)."""
    perform([DeleteLink(ifname, netns_path)])


def bridge_exists(name: str) -> bool:
    return any(link.name == name and link.kind == "bridge" for link in list_links(name))


def delete_bridge(name: str) -> None:
    """Delete the bridge ``name`` if it exists; its ports are set free, not deleted."""
    perform([DeleteLink(name)])


class Link(NamedTuple):
    """One interface as ``ip -d link`` shows it."""

    name: str
    index: int
    kind: str          # "bridge", "veth", "" for a plain device like lo
    master: str | None  # the bridge it is a port of
    up: bool
    mac: str
    isolated: bool     # as a bridge port


def list_links(prefix: str = "", netns: str | None = None) -> list[Link]:
    """The interfaces whose names start with ``prefix``, in the host's namespace or ``netns``."""
    IPRoute, _ = pyroute2()

    if netns is not None and not _is_netns(netns):
        return []
    with (IPRoute() if netns is None else IPRoute(netns=netns, flags=0)) as ip:
        raw = list(ip.get_links())
    names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in raw}
    out = []
    for msg in raw:
        name = msg.get_attr("IFLA_IFNAME")
        if not name.startswith(prefix):
            continue
        info = msg.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""
        master = msg.get_attr("IFLA_MASTER")
        isolated = False
        if master is not None and info is not None:
            slave = info.get_attr("IFLA_INFO_SLAVE_DATA")
            if slave is not None:
                isolated = bool(slave.get_attr("IFLA_BRPORT_ISOLATED"))
        out.append(Link(name, msg["index"], kind, names.get(master) if master else None,
                        bool(msg["flags"] & 1), msg.get_attr("IFLA_ADDRESS") or "", isolated))
    return out


def interfaces(netns_path: str | None = None) -> list[tuple[str, str]]:
    """(name, MAC) of every interface in the namespace (the host's if None)."""
    return [(link.name, link.mac) for link in list_links("", netns_path)]


def addresses(ifname: str, netns: str | None = None) -> list[str]:
    """The IPv4 addresses of ``ifname`` as "a.b.c.d/nn"."""
    IPRoute, _ = pyroute2()

    with (IPRoute() if netns is None else IPRoute(netns=netns, flags=0)) as ip:
        found = ip.link_lookup(ifname=ifname)
        if not found:
            return []
        return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ip.get_addr(index=found[0], family=socket.AF_INET)]


def default_gateway(netns: str | None = None) -> str | None:
    """The gateway of the IPv4 default route (``ip route show default``), or None."""
    IPRoute, _ = pyroute2()

    if netns is not None and not _is_netns(netns):
        return None
    with (IPRoute() if netns is None else IPRoute(netns=netns, flags=0)) as ip:
        for route in ip.get_routes(family=socket.AF_INET):
            if route["dst_len"] == 0 and route.get_attr("RTA_GATEWAY"):
                return route.get_attr("RTA_GATEWAY")
    return None


# -- inside an event loop (Jupyter) -----------------------------------------------------------


def _off_event_loop(function):
    """Run ``function`` on a thread of its own when this thread runs an asyncio loop.

    pyroute2's synchronous IPRoute drives an asyncio event loop of its own
    (``run_until_complete``); in a thread where a loop is already running --
    a Jupyter kernel's -- that is refused ("This event loop is already
    running"). A short-lived thread has no loop, so pyroute2 makes one there.
    """
    import functools
    import sys

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        asyncio = sys.modules.get("asyncio")  # not imported: no loop can be running
        try:
            running = asyncio is not None and asyncio.get_running_loop() is not None
        except RuntimeError:
            running = False
        if not running:
            return function(*args, **kwargs)
        import threading

        outcome: dict = {}

        def call():
            try:
                outcome["value"] = function(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = e

        thread = threading.Thread(target=call, name=f"netlink-{function.__name__}")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    return wrapper


perform = _off_event_loop(perform)
list_links = _off_event_loop(list_links)
interfaces = _off_event_loop(interfaces)
addresses = _off_event_loop(addresses)

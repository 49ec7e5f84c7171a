"""Exposed and published ports: docker's ``--expose``, ``-p`` and ``-P`` as data.

The words are docker's (Engine API, ``github.com/docker/go-connections/nat``):

- a *port key* names a container port and its protocol: ``"80/tcp"``;
- ``Config.ExposedPorts`` is the set of keys the container listens on,
  ``{"80/tcp": {}}``: the image's EXPOSE, ``--expose``, and every ``-p``;
- ``HostConfig.PortBindings`` is what was *asked* for,
  ``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``. An empty ``HostIp``
  means the default address (0.0.0.0); an empty or ``"0"`` ``HostPort`` means
  any free port of the ephemeral range, and ``"8000-8010"`` any free port in
  that range;
- ``NetworkSettings.Ports`` is what was *got* when the container started,
  ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "443/tcp": None}``
  (``None``: exposed, not published).

Lifecycle of a published port::

    parse_publish / parse_expose   create: pure, checks the text only
      -> allocate                  start: probes the host, picks free ports
      -> proxy.start               running: one listener per port forwards
      -> the proxy exits           the container's process exited, or stop

Everything but :func:`allocate` is pure and runs without root. Dockyard
publishes IPv4 only: an IPv6 host address is refused with a clear message.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from typing import Iterable, NamedTuple

from ..errors import Conflict, NotFound, UsageError
from .proxy import listen_error

PROTOCOLS = ("tcp", "udp", "sctp")
# What the userland proxy forwards; SCTP can be exposed but not published.
FORWARDED = ("tcp", "udp")
DEFAULT_HOST_IP = "0.0.0.0"
# Used when /proc/sys/net/ipv4/ip_local_port_range cannot be read; the same
# fallback as moby's portallocator (defaultPortRangeStart/End).
FALLBACK_RANGE = (49153, 60999)


class Published(NamedTuple):
    """One host port that forwards to one container port (resolved, no ranges)."""

    proto: str
    host_ip: str
    host_port: int
    container_port: int

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def forward(self, container_ip: str) -> tuple[str, str, int, str, int]:
        """The proxy's mapping for this port: (proto, host ip, host port, container ip, port)."""
        return (self.proto, self.host_ip, self.host_port, container_ip, self.container_port)


# --- numbers and ranges, with the error texts of Go's strconv and nat -------

def _uint16(text: str) -> int:
    """strconv.ParseUint(text, 10, 16), with its error wording."""
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text)
    if value > 65535:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def parse_port_range(text: str) -> tuple[int, int]:
    """``"80"`` -> (80, 80); ``"8000-8010"`` -> (8000, 8010) (nat.ParsePortRange).

    Raises ValueError with docker's text. Unlike nat, ``"1-2-3"`` is refused
    rather than read as 1-2: dropping part of a range would hide a typo.
    """
    if text == "":
        raise ValueError("empty string specified for ports")
    first, dash, last = text.partition("-")
    start = _uint16(first)
    end = _uint16(last) if dash else start
    if end < start:
        raise ValueError(f"invalid range specified for port: {text}")
    return start, end


def _split_proto(text: str) -> tuple[str, str]:
    """``"80/udp"`` -> ("80", "udp"); no protocol means tcp (nat.SplitProtoPort)."""
    port, _, proto = text.partition("/")
    return port, (proto.lower() or "tcp")


def _check_proto(proto: str) -> None:
    if proto not in PROTOCOLS:
        raise UsageError(f"invalid proto: {proto}")


def port_key(port: int, proto: str = "tcp") -> str:
    return f"{port}/{proto}"


def split_key(key: str) -> tuple[int, str]:
    """``"80/tcp"`` -> (80, "tcp")."""
    port, proto = _split_proto(key)
    return int(port), proto


def _key_order(key: str) -> tuple[int, str]:
    port, proto = split_key(key)
    return port, proto


def _host_ip(text: str) -> str:
    """Check a host address: IPv4 only (an IPv6 one, bracketed or not, is refused)."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"invalid IP address: {text}") from None
    if address.version == 6:
        raise UsageError(f"IPv6 host addresses are not supported by Dockyard: {text} "
                         "(publish on an IPv4 address, or leave the address out)")
    return text


# --- -p / --publish ---------------------------------------------------------

def _split_parts(spec: str) -> tuple[str, str, str]:
    """ip:hostPort:containerPort, where ip may itself hold colons (IPv6)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _long_syntax(spec: str) -> str:
    """``published=8080,target=80,protocol=udp`` -> ``8080:80/udp``.

    The docker CLI's convertToStandardNotation; other keys (``mode``) are
    read and ignored as there.
    """
    params = {"protocol": "tcp"}
    for param in spec.split(","):
        name, eq, value = param.partition("=")
        if not eq or not name:
            raise UsageError(
                f"invalid publish opts format (should be name=value but got '{param}')")
        params[name] = value
    return f"{params.get('published', '')}:{params.get('target', '')}/{params['protocol']}"


def parse_port_spec(spec: str) -> list[tuple[str, dict]]:
    """One ``-p`` value -> [(port key, PortBinding)], in container-port order.

    ``80``, ``8080:80``, ``127.0.0.1:8080:80``, ``127.0.0.1::80``, each with
    ``/tcp``, ``/udp`` or ``/sctp``; ranges ``8000-8002:80-82`` (one binding
    per port) and ``8000-8010:80`` (one binding whose HostPort is the range
    to pick a free port from). Rules and error texts: nat.ParsePortSpec.
    """
    if "=" in spec:
        spec = _long_syntax(spec)
    ip, host_port, container_port = _split_parts(spec)
    container_port, proto = _split_proto(container_port)
    _check_proto(proto)
    if ip:
        ip = _host_ip(ip)
    if container_port == "":
        raise UsageError(f"no port specified: {spec}<empty>")
    try:
        start, end = parse_port_range(container_port)
    except ValueError:
        raise UsageError(f"invalid containerPort: {container_port}") from None
    if start == 0:
        # nat lets 0 through; nothing can listen on port 0, so say so now.
        raise UsageError(f"invalid containerPort: {container_port}")
    host_start = host_end = 0
    if host_port:
        try:
            host_start, host_end = parse_port_range(host_port)
        except ValueError:
            raise UsageError(f"invalid hostPort: {host_port}") from None
        # A host range may differ in size only when it is the pool for a
        # single container port.
        if end - start != host_end - host_start and end != start:
            raise UsageError("invalid ranges specified for container and host Ports: "
                             f"{container_port} and {host_port}")
    count = end - start + 1
    mappings = []
    for i in range(count):
        binding_port = ""
        if host_port:
            binding_port = str(host_start + i)
            if count == 1 and host_start != host_end:
                binding_port += f"-{host_end}"
        mappings.append((port_key(start + i, proto), {"HostIp": ip, "HostPort": binding_port}))
    return mappings


def parse_publish(specs: Iterable[str]) -> tuple[dict, dict]:
    """Every ``-p`` value -> (ExposedPorts, PortBindings) (nat.ParsePortSpecs).

    >>> parse_publish(["8080:80", "127.0.0.1::53/udp"])
    ({'80/tcp': {}, '53/udp': {}}, {'80/tcp': [{'HostIp': '', 'HostPort': '8080'}], \
'53/udp': [{'HostIp': '127.0.0.1', 'HostPort': ''}]})
    """
    exposed: dict = {}
    bindings: dict = {}
    for spec in specs:
        for key, binding in parse_port_spec(spec):
            exposed.setdefault(key, {})
            bindings.setdefault(key, []).append(binding)
    return exposed, bindings


def parse_expose(values: Iterable[str], exposed: dict | None = None) -> dict:
    """``--expose`` values (``80``, ``53/udp``, ``8000-8002``) added to ExposedPorts.

    Error texts are the docker CLI's. Unlike the CLI, an unknown protocol is
    refused (docker accepts ``--expose 80/ncp`` and stores a key nothing can
    use).
    """
    exposed = dict(exposed or {})
    for value in values:
        if ":" in value:
            raise UsageError(f"invalid port format for --expose: {value}")
        port, proto = _split_proto(value)
        try:
            start, end = parse_port_range(port)
        except ValueError as e:
            raise UsageError(f"invalid range format for --expose: {value}, error: {e}") from None
        _check_proto(proto)
        for number in range(start, end + 1):
            exposed.setdefault(port_key(number, proto), {})
    return exposed


# --- allocation (start time: probes the host) --------------------------------

def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range, where -P ports come from (ip(7),
    /proc/sys/net/ipv4/ip_local_port_range); moby's portallocator reads the same."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(word) for word in f.read().split())
        return low, high
    except (OSError, ValueError):
        return FALLBACK_RANGE


def probe(proto: str, host_ip: str, host_port: int) -> None:
    """Bind (and for TCP listen on) ``host_ip:host_port`` for a moment, or raise OSError.

    TCP uses SO_REUSEADDR as the proxy does (a port whose old connections are
    in TIME_WAIT is free); listen(2) too, because two sockets with
    SO_REUSEADDR may both bind a port that only one can listen on. UDP does
    *not* use SO_REUSEADDR: with it two UDP sockets share a port (socket(7)),
    and the probe would find every port free.
    """
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host_ip, host_port))
        if proto == "tcp":
            sock.listen(1)


def _overlaps(a: Published, proto: str, ip: str, port: int) -> bool:
    """Do two bindings collide? The same port and protocol on the same address,
    or either on 0.0.0.0 (which holds the port on every address)."""
    return (a.proto == proto and a.host_port == port
            and (a.host_ip == ip or DEFAULT_HOST_IP in (a.host_ip, ip)))


def allocate(bindings: dict, exposed: dict, publish_all: bool, *,
             default_host_ip: str = DEFAULT_HOST_IP,
             in_use: Iterable[Published] = ()) -> list[Published]:
    """Resolve PortBindings (and ``-P``) to concrete host ports, checking each is free.

    ``bindings`` is HostConfig.PortBindings; ``exposed`` every exposed key
    (image ExposedPorts plus the container's own). With ``publish_all``
    (``-P``) every exposed key without a binding gets a free port of the
    ephemeral range. ``in_use`` are ports other Dockyard containers hold: a
    clash with one is docker's "port is already allocated"; a clash with any
    other program is found by binding a test socket (see :func:`probe`) and
    reported as docker-proxy reports it.

    Fixed ports are taken first and ranges after, so that ``-P`` never takes a
    port that an explicit ``-p`` of the same container asks for. The test
    sockets are closed again: the proxy binds for real moments later, and
    reports (rather than loses) the rare port taken in between.

    Returns one :class:`Published` per binding, in container-port order.
    """
    taken = list(in_use)
    requests = []  # (proto, ip, low, high, container_port), in key order
    for key in sorted(set(exposed or {}) | set(bindings or {}), key=_key_order):
        container_port, proto = split_key(key)
        entries = (bindings or {}).get(key) or []
        if not entries and publish_all:
            entries = [{"HostIp": "", "HostPort": ""}]
        if entries and proto not in FORWARDED:
            if not (bindings or {}).get(key):
                continue        # -P passes over what it cannot forward; it stays exposed
            raise UsageError(f"cannot publish {key}: Dockyard's port proxy forwards only "
                             "tcp and udp")
        for entry in entries:
            ip = _host_ip(entry.get("HostIp") or default_host_ip)
            text = entry.get("HostPort") or ""
            try:
                low, high = parse_port_range(text) if text else (0, 0)
            except ValueError:
                raise UsageError(f"invalid hostPort: {text}") from None
            if low == 0 and high == 0:
                low, high = ephemeral_range()
            elif low == 0:
                raise UsageError(f"invalid hostPort: {text}")
            requests.append((proto, ip, low, high, container_port))

    chosen: dict[int, Published] = {}
    order = sorted(range(len(requests)), key=lambda i: requests[i][2] != requests[i][3])
    for i in order:
        proto, ip, low, high, container_port = requests[i]
        if low == high:
            port = _take(proto, ip, low, taken)
        else:
            port = _take_any(proto, ip, low, high, taken, container_port)
        chosen[i] = Published(proto, ip, port, container_port)
        taken.append(chosen[i])
    return [chosen[i] for i in range(len(requests))]


# bind(2) errors that no other port would cure: not an address of this host,
# or a port below 1024 without CAP_NET_BIND_SERVICE.
_CANNOT_WORK = (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EACCES)


def _take(proto: str, ip: str, port: int, taken: list[Published]) -> int:
    if any(_overlaps(t, proto, ip, port) for t in taken):
        raise Conflict(f"Bind for {ip}:{port} failed: port is already allocated")
    try:
        probe(proto, ip, port)
    except OSError as e:
        error = UsageError if e.errno in _CANNOT_WORK else Conflict
        raise error(listen_error(proto, ip, port, e)) from None
    return port


def _take_any(proto: str, ip: str, low: int, high: int, taken: list[Published],
              container_port: int) -> int:
    """The first port of low..high that is neither taken nor bound by anyone."""
    for port in range(low, high + 1):
        if any(_overlaps(t, proto, ip, port) for t in taken):
            continue
        try:
            probe(proto, ip, port)
        except OSError as e:
            if e.errno in _CANNOT_WORK:
                raise UsageError(listen_error(proto, ip, port, e)) from None
            continue
        return port
    raise Conflict(f"failed to allocate a host port for {container_port}/{proto} on "
                   f"{ip} in {low}-{high}: all ports are allocated")


# --- NetworkSettings.Ports, `port` and the PORTS column of `ps` ---------------

def network_ports(published: Iterable[Published], exposed: dict) -> dict:
    """NetworkSettings.Ports: every exposed key, with its bindings or None."""
    ports: dict = {key: None for key in exposed}
    for p in published:
        if ports.get(p.key) is None:
            ports[p.key] = []
        ports[p.key].append({"HostIp": p.host_ip, "HostPort": str(p.host_port)})
    # Keys in text order, as docker's inspect shows them (Go's encoding/json
    # writes a map's keys sorted).
    return {key: ports[key] for key in sorted(ports)}


def summaries(ports: dict) -> list[dict]:
    """NetworkSettings.Ports -> the ``Ports`` list of GET /containers/json.

    ``{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}``
    per binding, ``{"PrivatePort": 443, "Type": "tcp"}`` per unpublished key
    (docker omits the empty fields).
    """
    out = []
    for key, frontends in (ports or {}).items():
        port, proto = split_key(key)
        if not frontends:
            out.append({"PrivatePort": port, "Type": proto})
            continue
        for frontend in frontends:
            out.append({"IP": frontend["HostIp"], "PrivatePort": port,
                        "PublicPort": int(frontend["HostPort"]), "Type": proto})
    return out


def _ip_order(ip: str) -> tuple:
    """Addresses compare as numbers; no address comes first (netip.Addr.Less)."""
    if not ip:
        return (0,)
    try:
        return (1, ipaddress.ip_address(ip))
    except ValueError:
        return (2, ip)


def format_ps_ports(ports: dict) -> str:
    """The PORTS column of ``ps`` for a NetworkSettings.Ports map
    (``0.0.0.0:8080->80/tcp, 443/tcp``); see :func:`display_ports`."""
    return display_ports(summaries(ports))


def display_ports(items: Iterable[dict]) -> str:
    """Render API port summaries as the docker CLI's DisplayablePorts does.

    Sorted by container port, address, host port and protocol. Runs of
    consecutive ports are grouped when nothing is published
    (``8000-8002/tcp``) or when each host port equals its container port
    (``0.0.0.0:8000-8002->8000-8002/tcp``); a published port whose host port
    differs is listed on its own, after the groups (``0.0.0.0:8080->80/tcp``),
    so ``-p 8000-8002:80-82`` shows three entries, as in docker.
    """
    items = sorted(items, key=lambda s: (
        s["PrivatePort"], _ip_order(s.get("IP", "")), s.get("PublicPort", 0), s["Type"]))
    groups: dict[tuple[str, str], list[int]] = {}   # (ip, proto) -> [first, last]
    order: list[tuple[str, str]] = []
    result: list[str] = []
    mappings: list[str] = []
    for item in items:
        current, proto, ip = item["PrivatePort"], item["Type"], item.get("IP", "")
        if ip and item.get("PublicPort", 0) != current:
            mappings.append(f"{ip}:{item.get('PublicPort', 0)}->{current}/{proto}")
            continue
        group_key = (ip, proto)
        group = groups.get(group_key)
        if group is None:
            groups[group_key] = [current, current]
            order.append(group_key)
        elif current == group[1] + 1:
            group[1] = current
        else:
            result.append(_form_group(group_key, *group))
            groups[group_key] = [current, current]
    result += [_form_group(key, *groups[key]) for key in order]
    return ", ".join(result + mappings)


def _form_group(key: tuple[str, str], first: int, last: int) -> str:
    ip, proto = key
    span = str(first) if first == last else f"{first}-{last}"
    return f"{ip}:{span}->{span}/{proto}" if ip else f"{span}/{proto}"


def _natural(text: str) -> list:
    """Sort key comparing digit runs as numbers ("9" < "10"), as sortorder.NaturalLess."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def format_port_lines(ports: dict, private: str | None = None, container: str = "") -> list[str]:
    """The lines ``dockyard port CONTAINER [PRIVATE_PORT[/PROTO]]`` prints.

    Without ``private``: ``80/tcp -> 0.0.0.0:8080`` for every binding; with
    it: ``0.0.0.0:8080`` for each binding of that port (tcp unless a
    protocol is given). Natural order, as the docker CLI sorts them.
    Raises UsageError for a malformed port and NotFound when it is not
    published (docker's texts, without their "Error: " prefix).
    """
    lines = []
    if private is not None:
        port, _, proto = private.partition("/")
        try:
            _uint16(port)
        except ValueError as e:
            raise UsageError(f"invalid port ({port}): {e}") from None
        frontends = (ports or {}).get(f"{port}/{proto or 'tcp'}")
        if not frontends:
            raise NotFound(f"No public port '{private}' published for {container}")
        lines = [f"{f['HostIp']}:{f['HostPort']}" for f in frontends]
    else:
        for key, frontends in (ports or {}).items():
            lines += [f"{key} -> {f['HostIp']}:{f['HostPort']}" for f in frontends or ()]
    return sorted(lines, key=_natural)

"""A container's network sandbox: its network namespace, its endpoints, and the files that name things.

docker calls the per-container part of networking the *sandbox*. Its
lifecycle follows the container's runs::

    create   HostConfig.NetworkMode and NetworkSettings.Networks (names,
             aliases, a wanted --ip) are recorded and checked: nothing exists yet
    start    attach():
               1. a network namespace pinned by a file, <root>/netns/<id>
                  (network_namespaces(7); ip-netns(8) does the same in /run/netns)
               2. per network: the bridge (made on first use), an address from
                  the network's IPAM, a veth pair -- one end on the bridge, the
                  other moved into the namespace as eth0, eth1... with the
                  address, a MAC and the default route via the gateway
                  (engine/network/link.py, netlink through pyroute2)
               3. /etc/hosts, /etc/resolv.conf and /etc/hostname written in the
                  container's directory; the plan bind-mounts them
               4. on user-defined networks the other containers' /etc/hosts
                  learn the new name (rewritten in place: they are bind mounts)
             the container's plan then setns()es into that namespace instead
             of making a new one (its first step), so its command starts with
             the network ready, and the clone needs nothing from the engine
    running  published ports: a userland proxy per container (network/proxy.py)
             that exits with the container, so the ports stop answering with it
    exit     detach(): the proxy is stopped, the namespace file unmounted and
             removed -- the veth pair dies with the namespace --, the addresses
             go back to their IPAM, and the peers' /etc/hosts forget the name.
             Whoever notices the exit does it (the engine merging exit.json,
             ``stop``, ``rm``), and a start first clears what a crash left.

Network modes (``--network``): ``bridge`` (the default, the ``dockyard0``
bridge), a user-defined network's name, ``host`` (no namespace of its own),
``none`` (a new namespace with only ``lo``) and ``container:<name|id>`` (the
namespace, and the hosts/resolv/hostname files, of another running container).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from ..errors import Conflict, EngineError, UsageError

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
FILES = (("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf"), ("hostname", "/etc/hostname"))
BUILTIN = ("bridge", "host", "none")


@dataclass
class Sandbox:
    """What the container's plan needs to know about its network.

    ``new_netns``: clone a new, empty network namespace (``none``).
    ``join``/``join_fd``: setns() into this namespace file instead (opened by
    the engine before the clone; -1 when the plan is only printed).
    ``files``: (host file, path in the container) to bind-mount.
    ``env``: variables ``--link`` adds. ``steps``: the netlink steps done, for ``--explain``.
    """

    mode: str
    new_netns: bool = False
    join: str | None = None
    join_fd: int = -1
    files: tuple = ()
    env: tuple = ()
    steps: tuple = field(default_factory=tuple)

    def close(self) -> None:
        if self.join_fd >= 0:
            os.close(self.join_fd)
            self.join_fd = -1


# -- what the container asked for -----------------------------------------------------------


def mode_of(host_config: dict) -> str:
    mode = host_config.get("NetworkMode") or "bridge"
    return "bridge" if mode == "default" else mode


def _store(engine):
    from .store import NetworkStore
    return NetworkStore(engine.layout)


def network_names(container) -> list[str]:
    """The networks the container is on, in the order it joined them."""
    mode = mode_of(container.attrs["HostConfig"])
    if mode in ("host", "none") or mode.startswith("container:"):
        return []
    names = list((container.attrs.get("NetworkSettings") or {}).get("Networks") or {})
    return names or [mode]


def check_create(engine, host_config: dict, *, aliases=(), ip: str | None = None,
                 links=()) -> dict:
    """At ``create``: the mode and network must exist; returns NetworkSettings.Networks.

    docker's rules: aliases and --ip only on user-defined networks; --link
    only on the default bridge; ``container:`` needs a container.
    """
    mode = mode_of(host_config)
    if mode.startswith("container:"):
        target = mode.partition(":")[2]
        if not target:
            raise UsageError("--network container: needs a container name or ID")
        engine.containers.get(target)  # NotFound: "No such container"
        if aliases or ip or links:
            raise UsageError("conflicting options: --network container: takes no --ip, "
                             "--network-alias or --link")
        if host_config.get("PortBindings") or host_config.get("PublishAllPorts"):
            raise UsageError("conflicting options: port publishing and the container type "
                             "network mode")
        return {}
    if mode in ("host", "none"):
        if aliases or ip:
            raise UsageError("network-scoped aliases and --ip are only supported for "
                             "user-defined networks")
        if links:
            raise UsageError("conflicting options: --link is only supported on the default bridge")
        return {}
    record = _store(engine).find(mode)  # writes nothing: a refused create leaves no trace
    user_defined = record["Name"] not in BUILTIN
    if (aliases or ip) and not user_defined:
        raise UsageError("network-scoped aliases and --ip are only supported for user-defined "
                         "networks")
    if links and user_defined:
        raise UsageError("--link is only supported on the default bridge network "
                         "(containers on user-defined networks find each other by name)")
    if ip is not None:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise UsageError(f"invalid IPv4 address: {ip}") from None
    entry = {"IPAMConfig": {"IPv4Address": ip} if ip else None, "Links": None,
             "Aliases": list(aliases) or None,
             "NetworkID": record["Id"] if user_defined else "", "EndpointID": "",
             "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": ""}
    return {record["Name"]: entry}


# -- the files ------------------------------------------------------------------------------


def render_hosts(hostname: str, own_ips: list, *, peers=(), links=(), extra=()) -> str:
    """/etc/hosts as docker writes it: the loopback lines, ``--add-host``
    entries, ``--link`` entries (``ip alias name id``), the container's own
    addresses with its host name, then (Dockyard's stand-in for docker's
    embedded DNS) every other container on its user-defined networks.

    ``own_ips``: addresses, or (address, [more names]) pairs: on a user-defined
    network a container resolves its own name and aliases too, as docker's DNS
    answers them."""
    lines = [HOSTS_HEADER]
    for host, ip in extra:
        lines.append(f"{ip}\t{host}\n")
    for ip, names in links:
        lines.append(f"{ip}\t{' '.join(names)}\n")
    for own in own_ips:
        ip, more = own if isinstance(own, tuple) else (own, ())
        names = list(dict.fromkeys([*hostname.split(), *more]))
        lines.append(f"{ip}\t{' '.join(names)}\n")
    for ip, names in peers:
        lines.append(f"{ip}\t{' '.join(names)}\n")
    return "".join(lines)


def render_resolv(host_text: str, dns=(), search=(), options=(), usable=None) -> str:
    """/etc/resolv.conf: the host's, without the name servers a container cannot
    reach, or ``--dns``/``--dns-search``/``--dns-option``.

    ``usable(address)``: may a container use this name server of the host? By
    default any but loopback ones (they would be the container's own loopback);
    write_files asks more (see :func:`_on_this_host`). docker falls back to public
    resolvers when nothing usable is left; Dockyard writes none (its containers
    never reach outside) and says so: the C library then asks 127.0.0.1
    (resolv.conf(5)), the container's own loopback, and a name that is not in
    /etc/hosts fails at once instead of after the resolver's timeouts.
    """
    if usable is None:
        def usable(address):
            return not address.is_loopback
    servers, searches, opts = [], [], []
    for line in host_text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            try:
                if usable(ipaddress.ip_address(words[1].split("%")[0])):
                    servers.append(words[1])
            except ValueError:
                continue
        elif words[0] in ("search", "domain"):
            searches = words[1:]
        elif words[0] == "options":
            opts += words[1:]
    servers = list(dns) or servers
    searches = list(search) or searches
    opts = list(options) or opts
    out = [f"nameserver {s}\n" for s in servers]
    if not servers:
        out.append("# no usable name server: the host's are not reachable without forwarding; "
                   "use --dns\n")
    if searches:
        out.append(f"search {' '.join(searches)}\n")
    if opts:
        out.append(f"options {' '.join(opts)}\n")
    return "".join(out)


def _write_in_place(path, text: str) -> None:
    """Rewrite a file without replacing its inode: it is bind-mounted into a
    running container, which would keep seeing a replaced file's old inode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def _extra_hosts(container) -> list[tuple[str, str]]:
    out = []
    for item in container.attrs["HostConfig"].get("ExtraHosts") or []:
        host, _, ip = item.partition(":")
        out.append((host, ip))
    return out


def _own_ips(container) -> list[tuple[str, list[str]]]:
    """(address, names besides the host name): the name and aliases on user networks."""
    nets = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return [(n["IPAddress"], [] if name in BUILTIN else [container.name, *(n.get("Aliases") or [])])
            for name, n in nets.items() if n.get("IPAddress")]


def _on_this_host(address) -> bool:
    """Can a container reach this name server of the host? Only if it is one of the
    host's own (non-loopback) IPv4 addresses: the container's packets reach those
    through its gateway, while any other address would need forwarding and NAT,
    which Dockyard never sets up. bind(2) answers EADDRNOTAVAIL for an address that
    is not the host's (ip(7)): a cheap way to ask."""
    import socket

    if address.version != 4 or address.is_loopback:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((str(address), 0))
        except OSError:
            return False
    return True


def _hostname(container) -> str:
    config = container.attrs["Config"]
    host = config.get("Hostname") or container.id[:12]
    return f"{host}.{config['Domainname']} {host}" if config.get("Domainname") else host


def write_files(engine, container) -> list[tuple[str, str]]:
    """(Re)write the container's hosts, resolv.conf and hostname files; return the binds."""
    hc = container.attrs["HostConfig"]
    mode = mode_of(hc)
    base = container.path
    if mode == "host":
        try:
            with open("/etc/hosts") as f:
                hosts = f.read()
        except OSError:
            hosts = HOSTS_HEADER
        hosts += "".join(f"{ip}\t{host}\n" for host, ip in _extra_hosts(container))
    else:
        hosts = render_hosts(_hostname(container), _own_ips(container),
                             peers=_peers(engine, container), links=_links(engine, container),
                             extra=_extra_hosts(container))
    try:
        with open("/etc/resolv.conf") as f:
            host_resolv = f.read()
    except OSError:
        host_resolv = ""
    # With the host's network the host's name servers, loopback ones included, are usable.
    resolv = render_resolv(host_resolv, hc.get("Dns") or (), hc.get("DnsSearch") or (),
                           hc.get("DnsOptions") or (),
                           usable=(lambda address: True) if mode == "host" else _on_this_host)
    hostname = (os.uname().nodename if mode == "host" else
                (container.attrs["Config"].get("Hostname") or container.id[:12])) + "\n"
    for (name, _), text in zip(FILES, (hosts, resolv, hostname)):
        _write_in_place(base / name, text)
    return [(str(base / name), target) for name, target in FILES]


def _peers(engine, container) -> list[tuple[str, list[str]]]:
    """Everyone else on the container's user-defined networks: (ip, names)."""
    out = []
    store = None
    for name, settings in ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {}).items():
        if name in BUILTIN or not settings.get("EndpointID"):
            continue
        store = store or _store(engine)
        try:
            record = store.get(settings.get("NetworkID") or name)
        except EngineError:
            continue
        for cid, ep in (record.get("Containers") or {}).items():
            if cid == container.id:
                continue
            ip = ep["IPv4Address"].split("/")[0]
            names = [ep["Name"], *(ep.get("Aliases") or []), cid[:12]]
            out.append((ip, list(dict.fromkeys(names))))
    return out


def _links(engine, container) -> list[tuple[str, list[str]]]:
    """``--link name:alias``: (ip, [alias, name, id12]) of each linked running container."""
    out = []
    for link in container.attrs["HostConfig"].get("Links") or []:
        target_name, alias = _parse_link(link)
        try:
            target = engine.containers.get(target_name)
        except EngineError:
            continue
        ip = (target.attrs.get("NetworkSettings") or {}).get("IPAddress")
        if ip:
            out.append((ip, list(dict.fromkeys([alias, target.name, target.id[:12]]))))
    return out


def _parse_link(link: str) -> tuple[str, str]:
    """docker stores ``/db:/web/db``; users write ``db`` or ``db:alias``."""
    name, _, alias = link.partition(":")
    name = name.lstrip("/")
    alias = alias.rsplit("/", 1)[-1] if alias else name
    return name, alias


def link_env(engine, container) -> list[str]:
    """The legacy ``--link`` variables (docker's links.go): ALIAS_NAME, ALIAS_PORT,
    ALIAS_PORT_<p>_<proto>[_ADDR|_PORT|_PROTO] and ALIAS_ENV_<var>."""
    env = []
    for link in container.attrs["HostConfig"].get("Links") or []:
        target_name, alias = _parse_link(link)
        try:
            target = engine.containers.get(target_name)
        except EngineError:
            continue
        prefix = alias.upper().replace("-", "_")
        ip = (target.attrs.get("NetworkSettings") or {}).get("IPAddress") or ""
        env.append(f"{prefix}_NAME=/{container.name}/{alias}")
        ports = sorted((target.attrs["Config"].get("ExposedPorts") or {}),
                       key=lambda p: (int(p.split("/")[0]), p))
        for i, port in enumerate(ports):
            number, _, proto = port.partition("/")
            proto = proto or "tcp"
            if i == 0:
                env.append(f"{prefix}_PORT={proto}://{ip}:{number}")
            key = f"{prefix}_PORT_{number}_{proto.upper()}"
            env += [f"{key}={proto}://{ip}:{number}", f"{key}_ADDR={ip}", f"{key}_PORT={number}",
                    f"{key}_PROTO={proto}"]
        for item in target.attrs["Config"].get("Env") or []:
            key, _, value = item.partition("=")
            if key not in ("HOME", "PATH", "HOSTNAME"):
                env.append(f"{prefix}_ENV_{key}={value}")
    return env


# -- attach and detach ----------------------------------------------------------------------


def netns_path(engine, container) -> str:
    return str(engine.layout.netns / container.id)


def describe(engine, container) -> Sandbox:
    """The sandbox as a plan would show it, without making anything (``--explain``)."""
    mode = mode_of(container.attrs["HostConfig"])
    files = tuple((str(container.path / name), target) for name, target in FILES)
    if mode == "host":
        return Sandbox(mode, files=files)
    if mode == "none":
        return Sandbox(mode, new_netns=True, files=files)
    if mode.startswith("container:"):
        return Sandbox(mode, join=f"/proc/<pid of {mode.partition(':')[2]}>/ns/net", files=files)
    # The --link variables belong in this plan too: the launcher keeps a plan made before
    # the start (launcher.with_network) and only gives it the namespace's descriptor.
    return Sandbox(mode, join=netns_path(engine, container), files=files,
                   env=tuple(link_env(engine, container)))


def explain(engine, container) -> list[str]:
    """``--explain``: the engine's network steps for this container, as ``ip``
    commands (the address and MAC come from the IPAM at start: shown as such)."""
    mode = mode_of(container.attrs["HostConfig"])
    head = f"# first, in the engine: the container's network (--network {mode})"
    if mode == "host":
        return [head, "# none: it shares the host's network namespace"]
    if mode == "none":
        return [head, "# none: the clone makes a new, empty network namespace (only lo)"]
    if mode.startswith("container:"):
        return [head, f"# none: it joins the namespace of {mode.partition(':')[2]}"]
    from . import config as netconfig
    from . import link

    path = netns_path(engine, container)
    lines = [head, f"NS={path}",
             "touch $NS && unshare --net=$NS true    # a new namespace, pinned by a bind mount "
             "on the file (as ip netns add does in /run/netns)"]
    store = _store(engine)
    for index, name in enumerate(network_names(container)):
        try:
            record = store.find(name)
        except EngineError as e:
            lines.append(f"# {e}")
            continue
        ipam = record["IPAM"]["Config"][0]
        prefix = ipaddress.ip_network(ipam["Subnet"]).prefixlen
        gateway = None if record.get("Internal") else ipam.get("Gateway")
        bridge = record["Options"]["com.docker.network.bridge.name"]
        isolated = record["Name"] == "bridge" and not netconfig.load(engine.layout).icc
        steps = [link.EnsureBridge(bridge, f"{ipam.get('Gateway')}/{prefix}")]
        steps += link.endpoint_steps(bridge, "dy<endpoint>", netns_path(engine, container),
                                     f"eth{index}", f"<next free address of {ipam['Subnet']}>/{prefix}",
                                     gateway, "<02:42 + the address>", isolated)
        lines += link.explain(steps).splitlines()
    lines.append("# then /etc/hosts, /etc/resolv.conf and /etc/hostname in the container's directory")
    return [line.replace(path, "$NS") if i > 1 else line for i, line in enumerate(lines)]


def attach(engine, container) -> Sandbox:
    """Make the container's network for this run (see the module docstring).

    Anything an earlier run left (a crash) is cleared first. On failure
    everything made so far is undone, and the error raised.
    """
    detach(engine, container, refresh_peers=False)
    mode = mode_of(container.attrs["HostConfig"])
    if mode in ("host", "none"):
        files = write_files(engine, container)
        return Sandbox(mode, new_netns=(mode == "none"), files=tuple(files))
    if mode.startswith("container:"):
        return _join_container(engine, container, mode.partition(":")[2])
    from . import netns

    store = _store(engine)
    for record in store.networks_of(container.id):
        store.release(record, container.id)  # an address a crash left reserved for it
    path = netns_path(engine, container)
    engine.layout.netns.mkdir(parents=True, exist_ok=True)
    netns.create(path)
    steps = []
    try:
        networks = network_names(container)
        settings = {}
        for index, name in enumerate(networks):
            # One default route: via the first network that has a gateway (not internal).
            routed = any(s["Gateway"] for s in settings.values())
            settings[name], done = _connect_one(engine, store, container, name, path, f"eth{index}",
                                                route=not routed)
            steps += done
        _record(container, settings, path)
        files = write_files(engine, container)
        _refresh_peers(engine, container)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        detach(engine, container)
        raise
    return Sandbox(mode, join=path, join_fd=fd, files=tuple(files),
                   env=tuple(link_env(engine, container)), steps=tuple(steps))


def _join_container(engine, container, target_name: str) -> Sandbox:
    target = engine.containers.get(target_name)
    if not target.attrs["State"]["Running"]:
        raise Conflict(f"cannot join network of a non running container: {target.name}")
    mode = mode_of(target.attrs["HostConfig"])
    if mode == "host":
        raise UsageError(f"container {target.name} uses the host's network: use --network host")
    path = (target.attrs.get("NetworkSettings") or {}).get("SandboxKey") or \
        f"/proc/{target.attrs['State']['Pid']}/ns/net"
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    files = tuple((str(target.path / name), dest) for name, dest in FILES
                  if (target.path / name).exists())
    return Sandbox(f"container:{target.name}", join=path, join_fd=fd, files=files)


def _connect_one(engine, store, container, name: str, path: str, ifname: str, route: bool = True):
    """One endpoint: address from the IPAM, veth into the namespace; returns (settings, steps).

    ``route``: add the default route via this network's gateway. A namespace has one
    default route (a second is EEXIST), so only the first network with a gateway sets it."""
    from . import config as netconfig
    from . import link

    record = store.get(name)
    wanted = ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(name) or {}
    ip = (wanted.get("IPAMConfig") or {}).get("IPv4Address")
    aliases = wanted.get("Aliases") or []
    mac = container.attrs["Config"].get("MacAddress") if ifname == "eth0" else None
    endpoint = store.reserve(record, container.id, container.name, aliases=aliases, ip=ip, mac=mac)
    try:
        bridge = record["Options"]["com.docker.network.bridge.name"]
        ipam = record["IPAM"]["Config"][0]
        gateway = ipam.get("Gateway")
        prefix = ipaddress.ip_network(ipam["Subnet"]).prefixlen
        default_bridge = record["Name"] == "bridge"
        isolated = default_bridge and not netconfig.load(engine.layout).icc
        # An internal network's bridge has its address too: without it the host has
        # no route to the subnet, and its packets to a container would follow the
        # default route out of the machine. Only the containers lack a way out.
        steps = [link.EnsureBridge(bridge, f"{ipam.get('Gateway')}/{prefix}")]
        steps += link.endpoint_steps(bridge, "dy" + endpoint["EndpointID"][:10], path, ifname,
                                     endpoint["IPv4Address"],
                                     None if record.get("Internal") or not route else gateway,
                                     endpoint["MacAddress"], isolated)
        link.perform(steps)
    except BaseException:
        store.release(record, container.id)
        raise
    settings = {
        "IPAMConfig": wanted.get("IPAMConfig"), "Links": None, "Aliases": aliases or None,
        "NetworkID": record["Id"], "EndpointID": endpoint["EndpointID"],
        "Gateway": "" if record.get("Internal") else gateway,
        "IPAddress": endpoint["IPv4Address"].split("/")[0], "IPPrefixLen": prefix,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "MacAddress": endpoint["MacAddress"],
    }
    return settings, steps


def _record(container, networks: dict, path: str) -> None:
    """Write what attach made into NetworkSettings (docker's inspect fields)."""
    def update(attrs):
        ns = attrs.setdefault("NetworkSettings", {})
        ns["Networks"] = networks
        ns["SandboxKey"] = path
        ns["SandboxID"] = container.id
        # Every exposed port, published or not (publish() fills in the bindings).
        ns["Ports"] = {key: None for key in attrs["Config"].get("ExposedPorts") or {}}
        ns["Bridge"] = ""
        default = networks.get("bridge") or {}
        for key in ("Gateway", "IPAddress", "IPPrefixLen", "MacAddress"):
            ns[key] = default.get(key, "" if key != "IPPrefixLen" else 0)
        attrs["HostsPath"] = str(container.path / "hosts")
        attrs["ResolvConfPath"] = str(container.path / "resolv.conf")
        attrs["HostnamePath"] = str(container.path / "hostname")
    container.update_record(update)


def detach(engine, container, *, refresh_peers: bool = True) -> None:
    """Undo attach (idempotent): proxy, namespace (and with it the veths), addresses, names."""
    ns = container.attrs.get("NetworkSettings") or {}
    proxy = (container.attrs.get("Dockyard") or {}).get("Proxy")
    if proxy:
        _stop_proxy(proxy)
    path = ns.get("SandboxKey") or ""
    own = netns_path(engine, container)
    had_endpoints = any(n.get("EndpointID") for n in (ns.get("Networks") or {}).values())
    if not (proxy or path or had_endpoints or os.path.lexists(own)):
        return
    from . import netns

    store = _store(engine)
    released = []
    for name, settings in (ns.get("Networks") or {}).items():
        if settings.get("EndpointID"):
            try:
                record = store.get(settings.get("NetworkID") or name)
                store.release(record, container.id)
                released.append(record)
            except EngineError:
                pass
    if os.path.lexists(own):
        netns.remove(own)

    def clear(attrs):
        s = attrs.setdefault("NetworkSettings", {})
        for entry in (s.get("Networks") or {}).values():
            entry.update(EndpointID="", Gateway="", IPAddress="", IPPrefixLen=0, MacAddress="")
        s.update(SandboxKey="", SandboxID="", Gateway="", IPAddress="", IPPrefixLen=0,
                 MacAddress="", Ports={})
        attrs.setdefault("Dockyard", {}).pop("Proxy", None)
    try:
        container.update_record(clear)
    except EngineError:
        clear(container.attrs)  # removed meanwhile: keep our copy consistent
    if refresh_peers:
        _refresh_peers(engine, container, records=released)


def drop_idle_bridges(engine) -> list[str]:
    """Delete the bridge devices of this root that no container uses; their
    names. Deleting a bridge costs the kernel an RCU grace period (tens of
    milliseconds), so it is not done as containers come and go; ``network
    prune`` does it for a root other than /var/lib/dockyard (a notebook's, a
    test's), so that removing that root leaves nothing on the host. The
    default root keeps its bridges, as dockerd keeps docker0."""
    from ..layout import DEFAULT_ROOT
    from . import link

    if os.path.abspath(str(engine.layout.root)) == os.path.abspath(DEFAULT_ROOT):
        return []
    dropped = []
    for record in _store(engine)._records():
        name = (record.get("Options") or {}).get("com.docker.network.bridge.name")
        if name and record.get("Driver") == "bridge" and not record.get("Containers") \
                and link.bridge_exists(name):
            link.delete_bridge(name)
            dropped.append(name)
    return dropped


def _stop_proxy(record: dict) -> None:
    """Stop the port proxy, if that PID is still it (PIDs are reused), and wait for
    it to end: a ``start`` right after a ``stop`` binds the same ports again."""
    from ..runtime.container import process_start_time
    from . import proxy

    pid = record.get("Pid") or 0
    if pid and process_start_time(pid) is not None and process_start_time(pid) == record.get("StartTime"):
        proxy.stop(pid, timeout=2)


def refresh_network(engine, record, *, skip=(), seen=None) -> None:
    """Rewrite /etc/hosts of every running container on a user-defined network
    (but those in ``skip``, and those already in ``seen``, which it extends)."""
    if record["Name"] in BUILTIN:
        return
    seen = set() if seen is None else seen
    for cid in record.get("Containers") or {}:
        if cid in skip or cid in seen:
            continue
        seen.add(cid)
        try:
            peer = engine.containers.get(cid)
        except EngineError:
            continue
        if peer.attrs["State"]["Running"]:
            write_files(engine, peer)


def _refresh_peers(engine, container, records=None) -> None:
    """Rewrite /etc/hosts of every running container sharing a user-defined network."""
    store = _store(engine)
    if records is None:
        records = []
        for name, settings in ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {}).items():
            try:
                records.append(store.get(settings.get("NetworkID") or name))
            except EngineError:
                pass
    seen: set = set()
    for record in records:
        if record["Name"] not in BUILTIN:
            refresh_network(engine, store.get(record["Id"]), skip={container.id}, seen=seen)


# -- connect and disconnect a running (or stopped) container ------------------------------


def connect(engine, container, network, aliases=(), ip: str | None = None) -> None:
    """``network connect``: add the network to the container; if it runs, give it
    an endpoint now (the next free ethN) and update everyone's /etc/hosts."""
    store = _store(engine)
    record = network if isinstance(network, dict) else store.get(network)
    mode = mode_of(container.attrs["HostConfig"])
    if mode == "host" or mode.startswith("container:") or mode == "none":
        raise Conflict(f"container {container.name} cannot join a network: it uses --network {mode}")
    current = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    if record["Name"] in current:
        raise Conflict(f"endpoint with name {container.name} already exists in network {record['Name']}")
    host_config = {"NetworkMode": record["Name"]}
    entry = check_create(engine, host_config, aliases=aliases, ip=ip)[record["Name"]]

    def add(attrs):
        nets = attrs.setdefault("NetworkSettings", {}).setdefault("Networks", {})
        if not nets:  # a container still on its implicit mode network: name it
            nets[mode] = check_create(engine, {"NetworkMode": mode})[_store(engine).get(mode)["Name"]]
        nets[record["Name"]] = entry
    container.update_record(add)
    if not container.attrs["State"]["Running"]:
        return
    from . import link

    path = (container.attrs.get("NetworkSettings") or {}).get("SandboxKey")
    # The first free ethN: after a disconnect the names have gaps (eth0 may be gone).
    names = {name for name, _ in link.interfaces(path)}
    ifname = next(f"eth{i}" for i in range(len(names) + 1) if f"eth{i}" not in names)
    routed = any(n.get("Gateway") for n in current.values() if n.get("EndpointID"))
    try:
        settings, _ = _connect_one(engine, store, container, record["Name"], path, ifname,
                                   route=not routed)
    except BaseException:
        container.update_record(lambda a: a["NetworkSettings"]["Networks"].pop(record["Name"], None))
        raise
    container.update_record(lambda a: a["NetworkSettings"]["Networks"].__setitem__(record["Name"], settings))
    write_files(engine, container)
    _refresh_peers(engine, container)


def disconnect(engine, container, network, force: bool = False) -> None:
    """``network disconnect``: remove the endpoint (its interface in the namespace) and the name."""
    from . import link

    store = _store(engine)
    record = network if isinstance(network, dict) else store.get(network)
    nets = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    if record["Name"] not in nets and not (not nets and mode_of(container.attrs["HostConfig"]) == record["Name"]):
        raise Conflict(f"container {container.id[:12]} is not connected to network {record['Name']}")
    settings = nets.get(record["Name"]) or {}
    if container.attrs["State"]["Running"] and settings.get("EndpointID"):
        path = container.attrs["NetworkSettings"].get("SandboxKey")
        ifname = _ifname_of(path, settings.get("MacAddress"))
        if ifname:
            link.remove_endpoint(path, ifname)
        store.release(record, container.id)
        # The default route went with that interface: another network's gateway takes over
        # (docker moves it too), if the route was this one's.
        others = [n for name, n in nets.items() if name != record["Name"] and n.get("EndpointID")]
        if ifname and settings.get("Gateway") and link.default_gateway(path) is None:
            gateway = next((n["Gateway"] for n in others if n.get("Gateway")), None)
            if gateway:
                link.perform([link.AddDefaultRoute(gateway, path)])

    def drop(attrs):
        attrs.setdefault("NetworkSettings", {}).setdefault("Networks", {}).pop(record["Name"], None)
        if attrs["HostConfig"].get("NetworkMode") == record["Name"]:
            rest = list(attrs["NetworkSettings"]["Networks"])
            attrs["HostConfig"]["NetworkMode"] = rest[0] if rest else "none"
    container.update_record(drop)
    if container.attrs["State"]["Running"]:
        write_files(engine, container)
        _refresh_peers(engine, container, records=[record])


def _ifname_of(netns_path: str, mac: str | None) -> str | None:
    """The interface in the namespace that has ``mac`` (names shift: eth1 may be gone)."""
    from . import link
    for name, address in link.interfaces(netns_path):
        if mac and address == mac:
            return name
    return None


# -- published ports ----------------------------------------------------------------------


def publish(engine, container, pid: int):
    """``-p``/``-P``: pick the host ports and start the container's port proxy
    (network/proxy.py), which exits when process ``pid`` does. Records
    NetworkSettings.Ports; returns the proxy's PID (a child of ours) or None."""
    from . import ports, proxy

    hc, config = container.attrs["HostConfig"], container.attrs["Config"]
    exposed = dict(config.get("ExposedPorts") or {})
    nets = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    # docker publishes nothing on an internal network (no way in or out).
    container_ip = next((n["IPAddress"] for n in nets.values()
                         if n.get("IPAddress") and n.get("Gateway")), "")
    if not container_ip:
        return None  # host, none, container: or internal only: nothing to forward to
    in_use = _ports_in_use(engine, container)
    published = ports.allocate(hc.get("PortBindings") or {}, exposed, bool(hc.get("PublishAllPorts")),
                               in_use=in_use)
    published = [p for p in published if p.proto in ports.FORWARDED]
    if not published:
        return None
    try:
        process = proxy.start(pid, [p.forward(container_ip) for p in published],
                              container=container.id)
    except ProcessLookupError:
        return None  # it has exited already (``run -p ... true``): nothing to forward to
    from ..errors import NotFound
    from ..runtime.container import process_start_time

    def record(attrs):
        state = attrs["State"]
        if not state.get("Running") or state.get("Pid") != pid:
            return  # its exit was merged meanwhile (network released): the proxy ends by itself
        attrs.setdefault("NetworkSettings", {})["Ports"] = ports.network_ports(published, exposed)
        attrs.setdefault("Dockyard", {})["Proxy"] = {"Pid": process.pid,
                                                     "StartTime": process_start_time(process.pid)}
    try:
        container.update_record(record)
    except NotFound:  # exited and removed (--rm) already
        proxy.stop(process)
        return None
    return process.pid


def check_ports(engine, container) -> None:
    """Before the spawn: raise docker's error now if a published port is taken (by
    another container or any program), so that a refused start leaves the container
    ``created``, as docker does, rather than started and killed. :func:`publish`
    allocates again after the spawn (a port may be taken in between: then it fails there)."""
    from . import ports

    hc = container.attrs["HostConfig"]
    if not (hc.get("PortBindings") or hc.get("PublishAllPorts")):
        return
    ports.allocate(hc.get("PortBindings") or {}, dict(container.attrs["Config"].get("ExposedPorts") or {}),
                   bool(hc.get("PublishAllPorts")), in_use=_ports_in_use(engine, container))


def _ports_in_use(engine, container) -> list:
    """The host ports other running containers of this root publish."""
    from . import ports

    out = []
    for other in engine.containers.list():
        if other.id == container.id:
            continue
        for key, bindings in ((other.attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
            port, proto = ports.split_key(key)
            for b in bindings or []:
                out.append(ports.Published(proto, b["HostIp"], int(b["HostPort"]), port))
    return out

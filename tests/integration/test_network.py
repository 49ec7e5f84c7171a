"""Container networking with real traffic: the modes, names, files, published ports, cleanup.

Every test runs busybox containers in its own root (its own default bridge,
``dyb`` + a hash of the root, see engine/network/config.py, on subnets that the
``own_addresses`` fixture picks) and talks to them with busybox ``ping``,
``wget``, ``nc`` and ``httpd``, or from the host over 127.0.0.1. Traffic goes only to loopback, to the test's containers and to
their bridge's own address (the gateway, a host address the test's bridge
carries); nothing is NATed and ip_forward is never touched.

What is left behind is checked by tests/conftest.py after every integration
test (``no_network_leftovers``): no pinned namespace, no veth on one of the
root's bridges, no port proxy, no endpoint in a network record, and no bridge
once the idle ones are dropped as ``network prune`` drops them.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from support import processes_mentioning

pytestmark = pytest.mark.root

HTTPD = ["httpd", "-f", "-p", "80", "-h", "/etc"]   # serves /etc/hostname, /etc/hosts...
CLONE_NEWNET = 0x40000000                            # <sched.h>


# -- helpers ----------------------------------------------------------------------------------


def ok(cli, *args, timeout=30):
    r = cli(*args, timeout=timeout)
    assert r.returncode == 0, f"dockyard {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def sh(cli, script: str, *options) -> str:
    """``run --rm [options] busybox sh -c script``; its output (it must exit 0)."""
    return ok(cli, "run", "--rm", *options, "busybox", "sh", "-c", script)


def inspect(cli, name: str) -> dict:
    return json.loads(ok(cli, "inspect", "--type", "container", name))[0]


def network(cli, name: str) -> dict:
    return json.loads(ok(cli, "network", "inspect", name))[0]


def free_port(kind=socket.SOCK_STREAM) -> int:
    """A port nothing on 127.0.0.1 uses right now (ephemeral range: the kernel's pick)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free TCP ports on 127.0.0.1."""
    for _ in range(50):
        first = free_port()
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise AssertionError("no run of free ports")


def http_get(port: int, path: str = "/hostname", host: str = "127.0.0.1", timeout: float = 3) -> str:
    """GET from the host, never through an HTTP proxy of the environment."""
    assert host.startswith("127."), "the host talks to loopback only"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{host}:{port}{path}", timeout=timeout) as r:
        return r.read().decode()


def wait_http(port: int, path: str = "/hostname", timeout: float = 5) -> str:
    """The answer once the server in the container listens (httpd starts after the proxy)."""
    deadline = time.time() + timeout
    while True:
        try:
            return http_get(port, path)
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) in (errno.ECONNREFUSED, errno.ECONNRESET)


def wait_for(predicate, timeout: float = 5, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"{what}: never became true")
        time.sleep(0.05)


def host_routes() -> list:
    from engine.network import ipam
    return ipam.host_routes()


def unique_subnet(root, index: int = 0) -> str:
    """A /24 of 10.204.0.0/16 no host route overlaps, chosen from the root's path, so that
    tests running at once in other roots (another bridge, another route) do not collide."""
    start = hashlib.sha256(str(root).encode()).digest()[0]
    routes = host_routes()
    found = []
    for i in range(256):
        candidate = ipaddress.ip_network(f"10.204.{(start + i) % 256}.0/24")
        if not any(candidate.overlaps(r) for r in routes):
            found.append(candidate)
            if len(found) > index:
                return str(found[index])
    raise AssertionError("no free /24 in 10.204.0.0/16")


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def veth_of(record: dict, network_name: str) -> str:
    """The host end of a container's veth on ``network_name`` ("dy" + 10 hex of the endpoint)."""
    return "dy" + record["NetworkSettings"]["Networks"][network_name]["EndpointID"][:10]


def proxies() -> dict[int, str]:
    """Live port proxies (comm dockyard-proxy): pid -> command line."""
    out = {}
    for pid in processes_mentioning("engine/network/proxy.py"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out[pid] = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def socket_in(netns_path: str, kind: int) -> socket.socket:
    """A socket made inside a network namespace (a socket keeps its namespace for
    ever, socket(7)): a short-lived thread setns(2)es into it and makes the socket;
    this process stays where it is (setns moves only the calling thread)."""
    result = {}

    def inside():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                result["error"] = OSError(ctypes.get_errno(), "setns", netns_path)
                return
        finally:
            os.close(fd)
        result["socket"] = socket.socket(socket.AF_INET, kind)

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["socket"]


def _free(candidates, routes):
    return next(c for c in candidates if not any(c.overlaps(r) for r in routes))


@pytest.fixture(autouse=True)
def own_addresses(root):
    """Subnets that no other root on this host routes right now, for the default bridge
    (``bip``) and the address pool of ``network create``, in the root's engine.json.

    A scratch root's defaults (engine/network/config.py root_defaults) come from a hash
    of its path, and every root's pool is the same: two roots in use at once (tests of
    another session) may both have 10.201.0.0/24 on a bridge, and the host would send
    the proxy's connections to either. Starting from the root's hash and skipping what
    the host routes makes that unlikely enough."""
    routes = host_routes()
    h = int.from_bytes(hashlib.sha256(str(root).encode()).digest()[:4], "big")
    bip = _free((ipaddress.ip_network(f"10.206.{(h + i) % 256}.0/24") for i in range(256)), routes)
    pools = list(ipaddress.ip_network("10.216.0.0/13").subnets(new_prefix=20))
    pool = _free((pools[(h + i) % len(pools)] for i in range(len(pools))), routes)
    root.mkdir(parents=True, exist_ok=True)
    engine_config(root, bip=f"{bip.network_address + 1}/24",
                  default_address_pools=[{"base": str(pool), "size": 24}])


def engine_config(root, **settings) -> None:
    """Add ``settings`` to the root's engine.json."""
    path = root / "engine.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**current, **settings}))


# -- the four modes, and a user network ----------------------------------------------------


def test_the_modes_side_by_side(cli, root):
    bridge = network(cli, "bridge")
    subnet = ipaddress.ip_network(bridge["IPAM"]["Config"][0]["Subnet"])
    gateway = bridge["IPAM"]["Config"][0]["Gateway"]
    device = bridge["Options"]["com.docker.network.bridge.name"]

    # bridge (the default): eth0 in the bridge's subnet, the default route via the gateway.
    out = sh(cli, "ip -4 -o addr show eth0; ip route; ping -c1 -W2 "
                  "$(ip route | awk '/^default/ {print $3}') >/dev/null && echo GATEWAY-ANSWERS")
    address = re.search(r"inet (\S+)/(\d+)", out)
    assert ipaddress.ip_address(address.group(1)) in subnet
    assert int(address.group(2)) == subnet.prefixlen
    assert f"default via {gateway} dev eth0" in out
    assert "GATEWAY-ANSWERS" in out

    ok(cli, "run", "-d", "--name", "web", "busybox", *HTTPD)
    web = inspect(cli, "web")
    assert web["HostConfig"]["NetworkMode"] == "bridge"
    assert ipaddress.ip_address(web["NetworkSettings"]["IPAddress"]) in subnet
    web_veth = veth_of(web, "bridge")
    assert web_veth in os.listdir(f"/sys/class/net/{device}/brif")  # a port of the bridge

    # host: the host's own interfaces (the bridge and web's veth end among them).
    before = links()
    out = sh(cli, "ip -o link; hostname", "--network", "host")
    seen = {m.split("@")[0] for m in re.findall(r"^\d+: (\S+):", out, re.M)}
    assert {device, web_veth, "lo"} <= seen
    assert out.splitlines()[-1] == os.uname().nodename  # docker: the host's name too
    assert before & links() <= seen  # (other tests on this host make and delete links meanwhile)

    # none: only lo.
    out = sh(cli, "ip -o link", "--net", "none")
    assert re.findall(r"^\d+: (\S+):", out, re.M) == ["lo"]

    # container:web: web's own eth0 (same address and MAC), hosts file and host name.
    out = sh(cli, "ip -o link show eth0; ip -4 -o addr show eth0; cat /etc/hosts; echo =; "
                  "cat /etc/hostname; hostname", "--network", "container:web")
    assert web["NetworkSettings"]["IPAddress"] + "/" in out
    assert web["NetworkSettings"]["MacAddress"] in out
    hosts, hostname = out.split("inet ", 1)[1].split("\n", 1)[1].split("=\n")
    assert hosts == open(web["HostsPath"]).read()
    assert hostname.split() == [web["Config"]["Hostname"]] * 2
    # ... and through it, web's server on its loopback.
    assert sh(cli, "wget -qO- http://127.0.0.1/hostname", "--network", "container:web").strip() \
        == web["Config"]["Hostname"]

    # a user-defined network: its own subnet, and its own bridge.
    ok(cli, "network", "create", "front")
    front = network(cli, "front")
    front_subnet = ipaddress.ip_network(front["IPAM"]["Config"][0]["Subnet"])
    out = sh(cli, "ip -4 -o addr show eth0; ip route", "--network", "front")
    assert ipaddress.ip_address(re.search(r"inet (\S+)/", out).group(1)) in front_subnet
    assert f"default via {front['IPAM']['Config'][0]['Gateway']} dev eth0" in out

    ok(cli, "rm", "-f", "web")
    ok(cli, "network", "rm", "front")


# -- names ------------------------------------------------------------------------------------


def test_user_network_names_and_aliases_come_and_go(cli):
    ok(cli, "network", "create", "app")
    ok(cli, "run", "-d", "--name", "web", "--network", "app", "--network-alias", "www",
       "busybox", *HTTPD)
    web = inspect(cli, "web")
    web_ip = web["NetworkSettings"]["Networks"]["app"]["IPAddress"]
    out = sh(cli, "ping -c1 -W2 web; wget -qO- http://web/hostname; wget -qO- http://www/hostname",
             "--network", "app")
    assert f"64 bytes from {web_ip}" in out
    assert out.count(web["Config"]["Hostname"]) == 2

    # An earlier container learns a later one's name; it forgets it when it stops, and
    # learns it again when it starts again.
    ok(cli, "run", "-d", "--name", "client", "--network", "app", "busybox", "sleep", "60")
    ok(cli, "run", "-d", "--name", "late", "--network", "app", "busybox", *HTTPD)
    late = inspect(cli, "late")
    out = ok(cli, "exec", "client", "sh", "-c", "ping -c1 -W2 late && wget -qO- http://late/hostname")
    assert late["Config"]["Hostname"] in out
    ok(cli, "stop", "-t", "0", "late")
    r = cli("exec", "client", "ping", "-c1", "-W1", "late")
    assert r.returncode != 0 and "bad address" in r.stderr + r.stdout
    assert "late" not in ok(cli, "exec", "client", "cat", "/etc/hosts")
    ok(cli, "start", "late")
    assert "late" in ok(cli, "exec", "client", "cat", "/etc/hosts")
    ok(cli, "exec", "client", "ping", "-c1", "-W2", "late")
    ok(cli, "rm", "-f", "late")
    hosts = ok(cli, "exec", "client", "cat", "/etc/hosts")
    assert "late" not in hosts and late["Id"][:12] not in hosts
    assert "web www" in hosts

    # A container resolves its own name on a user network (docker's DNS does).
    out = ok(cli, "exec", "web", "ping", "-c1", "-W2", "web")
    assert f"64 bytes from {web_ip}" in out

    ok(cli, "rm", "-f", "web", "client")
    assert network(cli, "app")["Containers"] == {}
    ok(cli, "network", "rm", "app")


def test_default_bridge_has_no_names_but_links(cli):
    ok(cli, "run", "-d", "--name", "db", "--expose", "80", "-e", "SECRET=s3", "busybox", *HTTPD)
    db = inspect(cli, "db")
    db_ip = db["NetworkSettings"]["IPAddress"]

    r = cli("run", "--rm", "busybox", "ping", "-c1", "-W1", "db")
    assert r.returncode == 1 and "bad address 'db'" in r.stderr + r.stdout

    out = sh(cli, "env | grep ^DBA | sort; echo =; cat /etc/hosts; echo =; "
                  "ping -c1 -W2 dba >/dev/null && wget -qO- http://dba/hostname && "
                  "wget -qO- http://db/hostname", "--link", "db:dba", "--name", "linker")
    env, hosts, answers = out.split("=\n")
    env = dict(line.split("=", 1) for line in env.splitlines())
    assert env["DBA_NAME"] == "/linker/dba"
    assert env["DBA_PORT"] == f"tcp://{db_ip}:80"
    assert env["DBA_PORT_80_TCP"] == f"tcp://{db_ip}:80"
    assert env["DBA_PORT_80_TCP_ADDR"] == db_ip
    assert env["DBA_PORT_80_TCP_PORT"] == "80"
    assert env["DBA_PORT_80_TCP_PROTO"] == "tcp"
    assert env["DBA_ENV_SECRET"] == "s3"
    assert f"{db_ip}\tdba db {db['Id'][:12]}" in hosts.splitlines()
    assert answers.split() == [db["Config"]["Hostname"]] * 2

    # Links are for the default bridge only (docker's rule).
    ok(cli, "network", "create", "side")
    r = cli("run", "--rm", "--network", "side", "--link", "db", "busybox", "true")
    assert r.returncode == 125 and "--link is only supported on the default bridge" in r.stderr
    ok(cli, "rm", "-f", "db")
    ok(cli, "network", "rm", "side")


# -- the files, host name, MAC and fixed address ----------------------------------------------


def test_hosts_resolv_hostname_mac_and_fixed_ip(cli, root):
    subnet = unique_subnet(root)
    wanted = str(ipaddress.ip_network(subnet).network_address + 77)
    ok(cli, "network", "create", "--subnet", subnet, "fixed")
    out = sh(cli, "ip -o link show eth0; ip -4 -o addr show eth0; echo =; cat /etc/hosts; echo =; "
                  "cat /etc/resolv.conf; echo =; hostname; cat /etc/hostname",
             "--network", "fixed", "--ip", wanted, "--mac-address", "02:42:aa:bb:cc:dd",
             "-h", "myhost", "--add-host", "printer:10.1.2.3", "--add-host", "nas:10.1.2.4",
             "--dns", "10.0.0.53", "--dns-search", "a.example", "--dns-search", "b.example",
             "--dns-option", "ndots:2")
    iface, hosts, resolv, names = out.split("=\n")
    assert "link/ether 02:42:aa:bb:cc:dd" in iface
    assert f"inet {wanted}/24" in iface
    lines = hosts.splitlines()
    assert "127.0.0.1\tlocalhost" in lines
    assert "10.1.2.3\tprinter" in lines and "10.1.2.4\tnas" in lines
    assert any(line.startswith(f"{wanted}\tmyhost") for line in lines)
    assert resolv.splitlines() == ["nameserver 10.0.0.53", "search a.example b.example",
                                   "options ndots:2"]
    assert names.split() == ["myhost", "myhost"]

    # Without -h the host name is the short ID, and /etc/hosts names it.
    ok(cli, "create", "--name", "plain", "--network", "fixed", "busybox", "sh", "-c",
       "hostname; grep \"$(hostname)\" /etc/hosts")
    plain = inspect(cli, "plain")
    ok(cli, "start", "plain")
    ok(cli, "wait", "plain")
    logs = ok(cli, "logs", "plain").splitlines()
    assert logs[0] == plain["Id"][:12]
    # Its own line: the host name, and (a user network) its name, as docker's DNS answers it.
    assert logs[1].split("\t")[1] == f"{plain['Id'][:12]} plain"
    ok(cli, "rm", "plain")

    # --ip refusals: docker's rules.
    r = cli("run", "--rm", "--ip", "10.0.0.9", "busybox", "true")
    assert r.returncode == 125 and "user-defined networks" in r.stderr
    ok(cli, "run", "-d", "--network", "fixed", "--ip", wanted, "--name", "first", "busybox",
       "sleep", "30")
    r = cli("run", "-d", "--network", "fixed", "--ip", wanted, "--name", "second", "busybox",
            "true")
    assert r.returncode == 125 and "Address already in use" in r.stderr
    assert list(network(cli, "fixed")["Containers"]) == [inspect(cli, "first")["Id"]]
    ok(cli, "rm", "-f", "first", "second")
    ok(cli, "network", "rm", "fixed")


# -- published ports --------------------------------------------------------------------------


def test_published_ports_from_the_host(cli):
    port = free_port()
    first = free_ports(2)
    ok(cli, "run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80",
       "-p", f"127.0.0.1:{first}-{first + 1}:81-82", "-P", "--expose", "7000",
       "busybox", "sh", "-c",
       "httpd -p 81 -h /etc; httpd -p 82 -h /; exec " + " ".join(HTTPD))
    web = inspect(cli, "web")
    hostname = web["Config"]["Hostname"]
    assert wait_http(port).strip() == hostname
    assert wait_http(first).strip() == hostname
    assert wait_http(first + 1, "/etc/hostname").strip() == hostname  # another document root

    lines = ok(cli, "port", "web").splitlines()
    auto = re.search(r"^7000/tcp -> 0\.0\.0\.0:(\d+)$", "\n".join(lines), re.M)
    assert auto, lines
    assert lines[:3] == [f"80/tcp -> 127.0.0.1:{port}", f"81/tcp -> 127.0.0.1:{first}",
                         f"82/tcp -> 127.0.0.1:{first + 1}"]
    assert ok(cli, "port", "web", "80").strip() == f"127.0.0.1:{port}"
    # -P's port answers on loopback too (nothing listens on 7000 inside: the proxy
    # accepts, then closes the connection it cannot make).
    with socket.create_connection(("127.0.0.1", int(auto.group(1))), timeout=2) as s:
        s.settimeout(2)
        assert s.recv(10) == b""
    ports = ok(cli, "ps", "--format", "{{.Ports}}", "-f", "name=web").strip()
    assert f"127.0.0.1:{port}->80/tcp" in ports
    assert f"127.0.0.1:{first}->81/tcp" in ports
    assert f"0.0.0.0:{auto.group(1)}->7000/tcp" in ports

    proxy = web["Dockyard"]["Proxy"]["Pid"]
    assert alive(proxy)
    assert web["Id"] in proxies()[proxy]          # names its container (ps, the leak check)
    ok(cli, "stop", "-t", "1", "web")
    assert refused(port) and refused(first)
    wait_for(lambda: not alive(proxy), what="the proxy ends with the container")
    assert ok(cli, "port", "web") == ""
    # Started again: the same host ports answer again.
    ok(cli, "start", "web")
    assert wait_http(port).strip() == hostname
    ok(cli, "rm", "-f", "web")
    assert refused(port)


def test_published_udp_port(cli):
    """Debian's busybox nc has no -u and busybox here no UDP server at all, so the
    container's UDP "server" is a socket this test makes inside its namespace."""
    port = free_port(socket.SOCK_DGRAM)
    ok(cli, "run", "-d", "--name", "dns", "-p", f"127.0.0.1:{port}:53/udp", "busybox",
       "sleep", "60")
    record = inspect(cli, "dns")
    assert ok(cli, "port", "dns").strip() == f"53/udp -> 127.0.0.1:{port}"
    server = socket_in(record["NetworkSettings"]["SandboxKey"], socket.SOCK_DGRAM)
    with server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("0.0.0.0", 53))
        server.settimeout(3)
        client.settimeout(3)
        client.sendto(b"question", ("127.0.0.1", port))
        data, peer = server.recvfrom(100)
        assert data == b"question"
        # It came from the proxy over the bridge: the gateway's address.
        assert peer[0] == record["NetworkSettings"]["Gateway"]
        server.sendto(b"answer", peer)
        assert client.recvfrom(100)[0] == b"answer"
    ok(cli, "rm", "-f", "dns")


def test_published_port_from_another_container_and_conflicts(cli):
    gateway = network(cli, "bridge")["IPAM"]["Config"][0]["Gateway"]
    # The bridge exists once a container used it; bind on the gateway address then.
    ok(cli, "run", "-d", "--name", "first", "busybox", "sleep", "60")
    port = free_port()
    ok(cli, "run", "-d", "--name", "web", "-p", f"{gateway}:{port}:80", "busybox", *HTTPD)
    hostname = inspect(cli, "web")["Config"]["Hostname"]
    out = ok(cli, "exec", "first", "sh", "-c",
             f"for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://{gateway}:{port}/hostname "
             "&& break; sleep 0.2; done")
    assert out.strip() == hostname
    ok(cli, "rm", "-f", "first")

    # The same port again: docker's words and 125, and nothing of the refused one stays:
    # it is left created, as docker leaves it.
    device = network(cli, "bridge")["Options"]["com.docker.network.bridge.name"]
    r = cli("run", "-d", "--name", "again", "-p", f"{gateway}:{port}:80", "busybox", *HTTPD)
    assert r.returncode == 125
    assert f"Bind for {gateway}:{port} failed: port is already allocated" in r.stderr
    again = inspect(cli, "again")
    assert again["State"]["Status"] == "created"
    assert again["NetworkSettings"]["SandboxKey"] == ""
    assert again["NetworkSettings"]["Ports"] in ({}, None)
    assert list(network(cli, "bridge")["Containers"]) == [inspect(cli, "web")["Id"]]
    assert not os.path.exists(again["NetworkSettings"]["SandboxKey"] or "/nonexistent")
    assert os.listdir(cli.root / "netns") == [inspect(cli, "web")["Id"]]
    web_veth = veth_of(inspect(cli, "web"), "bridge")
    wait_for(lambda: os.listdir(f"/sys/class/net/{device}/brif") == [web_veth],
             what="the refused container's veth goes")
    assert len([c for c in proxies().values() if again["Id"] in c]) == 0

    # With --rm the refused container goes too (docker removes it as well).
    count = len(ok(cli, "ps", "-aq").split())
    for detach in ((), ("-d",)):
        r = cli("run", "--rm", *detach, "-p", f"{gateway}:{port}:80", "busybox", "true")
        assert r.returncode == 125 and "port is already allocated" in r.stderr
    assert len(ok(cli, "ps", "-aq").split()) == count

    # A port some other program holds: the proxy's words, 125.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        r = cli("run", "-d", "-p", f"127.0.0.1:{taken}:80", "busybox", "sleep", "5")
        assert r.returncode == 125
        assert (f"listen tcp4 127.0.0.1:{taken}: bind: address already in use" in r.stderr), r.stderr
    ok(cli, "rm", "-f", "web", "again")
    for cid in ok(cli, "ps", "-aq").split():
        ok(cli, "rm", "-f", cid)
    assert network(cli, "bridge")["Containers"] == {}


def test_a_short_lived_container_with_published_ports(cli):
    """It may be gone before its ports are published: that is no error (docker says nothing)."""
    port = free_port()
    for _ in range(3):
        ok(cli, "run", "-d", "-p", f"127.0.0.1:{port}:80", "busybox", "true")
    assert ok(cli, "run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "echo", "hi") == "hi\n"
    for cid in ok(cli, "ps", "-aq").split():
        assert ok(cli, "port", cid) == ""
        ok(cli, "rm", cid)
    assert refused(port)


# -- network commands, connect and disconnect ------------------------------------------------


def test_connect_and_disconnect_a_running_container(cli):
    ok(cli, "network", "create", "one")
    ok(cli, "network", "create", "two")
    ok(cli, "run", "-d", "--name", "c1", "--network", "one", "busybox", "sleep", "60")
    ok(cli, "run", "-d", "--name", "c2", "--network", "two", "busybox", *HTTPD)
    r = cli("exec", "c1", "ping", "-c1", "-W1", "c2")
    assert r.returncode != 0 and "bad address" in r.stdout + r.stderr

    ok(cli, "network", "connect", "--alias", "extra", "two", "c1")
    c1 = inspect(cli, "c1")
    two = network(cli, "two")
    eth1 = c1["NetworkSettings"]["Networks"]["two"]["IPAddress"]
    assert ipaddress.ip_address(eth1) in ipaddress.ip_network(two["IPAM"]["Config"][0]["Subnet"])
    assert sorted(two["Containers"]) == sorted([c1["Id"], inspect(cli, "c2")["Id"]])
    out = ok(cli, "exec", "c1", "sh", "-c", "ip -4 -o addr; ip route")
    assert re.search(rf"eth1\s+inet {re.escape(eth1)}/", out), out
    assert out.count("default via") == 1  # the first network keeps the default route
    c2_host = inspect(cli, "c2")["Config"]["Hostname"]
    assert ok(cli, "exec", "c1", "wget", "-qO-", "http://c2/hostname").strip() == c2_host
    assert f"64 bytes from {eth1}" in ok(cli, "exec", "c2", "ping", "-c1", "-W2", "extra")
    assert f"64 bytes from {eth1}" in ok(cli, "exec", "c2", "ping", "-c1", "-W2", "c1")

    r = cli("network", "connect", "two", "c1")
    assert r.returncode == 125 and "already exists in network two" in r.stderr
    r = cli("network", "rm", "two")
    assert r.returncode == 125 and "has active endpoints" in r.stderr

    ok(cli, "network", "disconnect", "two", "c1")
    out = ok(cli, "exec", "c1", "ip", "-o", "link")
    assert "eth1" not in out and "eth0" in out
    r = cli("exec", "c2", "ping", "-c1", "-W1", "c1")
    assert r.returncode != 0 and "bad address" in r.stdout + r.stderr
    assert list(network(cli, "two")["Containers"]) == [inspect(cli, "c2")["Id"]]

    # Connected again (a new eth1), and to a third network after the first one is gone.
    ok(cli, "network", "connect", "two", "c1")
    ok(cli, "network", "create", "three")
    ok(cli, "network", "disconnect", "one", "c1")
    ok(cli, "network", "connect", "three", "c1")
    out = ok(cli, "exec", "c1", "ip", "-4", "-o", "addr")
    assert len(re.findall(r"^\d+: eth\d+\s+inet ", out, re.M)) == 2, out
    assert ok(cli, "exec", "c1", "wget", "-qO-", "http://c2/hostname").strip() == c2_host

    # Connected while created: both endpoints at the start, one default route; when the
    # network of that route is disconnected, the other network's gateway takes it over.
    ok(cli, "create", "--name", "multi", "--network", "one", "busybox", "sleep", "60")
    ok(cli, "network", "connect", "two", "multi")
    ok(cli, "start", "multi")
    multi = inspect(cli, "multi")["NetworkSettings"]["Networks"]
    out = ok(cli, "exec", "multi", "sh", "-c", "ip -4 -o addr; ip route")
    assert len(re.findall(r"^\d+: eth\d+\s+inet ", out, re.M)) == 2, out
    assert re.findall(r"^default via (\S+)", out, re.M) == [multi["one"]["Gateway"]]
    assert ok(cli, "exec", "multi", "wget", "-qO-", "http://c2/hostname").strip() == c2_host
    ok(cli, "network", "disconnect", "one", "multi")
    out = ok(cli, "exec", "multi", "ip", "route")
    assert re.findall(r"^default via (\S+)", out, re.M) == [multi["two"]["Gateway"]]

    ok(cli, "rm", "-f", "c1", "c2", "multi")
    assert ok(cli, "network", "prune", "-f").split()[2:] == ["one", "three", "two"]
    names = ok(cli, "network", "ls", "--format", "{{.Name}}").split()
    assert names == ["bridge", "host", "none"]


# -- isolation --------------------------------------------------------------------------------


def test_icc_false_and_internal_networks(cli, root):
    engine_config(root, icc=False)
    ok(cli, "run", "-d", "--name", "one", "busybox", *HTTPD)
    one_ip = inspect(cli, "one")["NetworkSettings"]["IPAddress"]
    gateway = inspect(cli, "one")["NetworkSettings"]["Gateway"]
    out = sh(cli, f"ping -c1 -W2 {gateway} >/dev/null && echo GATEWAY; "
                  f"ping -c1 -W1 {one_ip} >/dev/null || echo NO-PEER; "
                  f"timeout 1 nc {one_ip} 80 </dev/null || echo NO-TCP")
    assert out.split() == ["GATEWAY", "NO-PEER", "NO-TCP"]
    assert network(cli, "bridge")["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    ok(cli, "rm", "-f", "one")

    ok(cli, "network", "create", "--internal", "vault")
    ok(cli, "run", "-d", "--name", "safe", "--network", "vault", "busybox", *HTTPD)
    out = sh(cli, "ip route; echo =; wget -qO- http://safe/hostname", "--network", "vault")
    routes, answer = out.split("=\n")
    assert "default" not in routes
    assert answer.strip() == inspect(cli, "safe")["Config"]["Hostname"]  # peers still talk
    ok(cli, "rm", "-f", "safe")
    ok(cli, "network", "rm", "vault")


# -- cleanup ----------------------------------------------------------------------------------


def test_stop_and_rm_leave_nothing(cli, root):
    ok(cli, "network", "create", "app")
    port = free_port()
    ok(cli, "run", "-d", "--name", "web", "--network", "app", "-p", f"127.0.0.1:{port}:80",
       "busybox", *HTTPD)
    web = inspect(cli, "web")
    netns = web["NetworkSettings"]["SandboxKey"]
    veth = veth_of(web, "app")
    proxy = web["Dockyard"]["Proxy"]["Pid"]
    bridge = network(cli, "app")["Options"]["com.docker.network.bridge.name"]
    assert os.path.exists(netns) and veth in links() and bridge in links() and alive(proxy)

    ok(cli, "stop", "-t", "1", "web")
    stopped = inspect(cli, "web")
    assert stopped["NetworkSettings"]["SandboxKey"] == ""
    assert stopped["NetworkSettings"]["Networks"]["app"]["IPAddress"] == ""
    assert not os.path.exists(netns)
    wait_for(lambda: veth not in links(), what="the veth goes with the namespace")
    wait_for(lambda: not alive(proxy), what="the proxy ends")
    assert network(cli, "app")["Containers"] == {}
    assert os.listdir(root / "netns") == []

    ok(cli, "start", "web")
    started = inspect(cli, "web")
    assert started["NetworkSettings"]["Networks"]["app"]["IPAddress"] == \
        web["NetworkSettings"]["Networks"]["app"]["IPAddress"]  # the first free one again
    assert wait_http(port).strip() == web["Config"]["Hostname"]
    ok(cli, "rm", "-f", "web")
    assert os.listdir(root / "netns") == []
    assert network(cli, "app")["Containers"] == {}
    assert bridge in links()  # kept until pruned (deleting a bridge costs an RCU grace period)
    ok(cli, "network", "prune", "-f")
    assert bridge not in links()
    default = network(cli, "bridge")["Options"]["com.docker.network.bridge.name"]
    assert default not in links()  # a scratch root's default bridge goes too


@pytest.mark.parametrize("cleaner", [("ps", "-a"), ("rm", "crashed"), ("network", "prune", "-f")])
def test_a_crash_is_cleaned_up_by_the_next_command(cli, root, cleaner):
    ok(cli, "network", "create", "app")
    port = free_port()
    ok(cli, "run", "-d", "--name", "crashed", "--network", "app", "-p", f"127.0.0.1:{port}:80",
       "busybox", *HTTPD)
    record = inspect(cli, "crashed")
    netns = record["NetworkSettings"]["SandboxKey"]
    veth = veth_of(record, "app")
    proxy = record["Dockyard"]["Proxy"]["Pid"]
    wait_http(port)
    os.kill(record["Dockyard"]["MonitorPid"], signal.SIGKILL)
    os.kill(record["State"]["Pid"], signal.SIGKILL)
    wait_for(lambda: not alive(proxy), what="the proxy follows its container")
    assert os.path.exists(netns)  # nobody has noticed yet

    ok(cli, *cleaner)
    assert not os.path.exists(netns)
    wait_for(lambda: veth not in links(), what="the veth goes with the namespace")
    assert network(cli, "app")["Containers"] == {} if cleaner[0] != "network" else True
    if cleaner[0] != "rm":
        assert inspect(cli, "crashed")["State"]["ExitCode"] == 255
        ok(cli, "rm", "crashed")
    assert refused(port)
    ok(cli, "network", "prune", "-f")
    assert ok(cli, "network", "ls", "-q", "-f", "type=custom") == ""


def test_restart_policy_restarts_keep_networking(cli):
    ok(cli, "network", "create", "app")
    port = free_port()
    # The first run exits at once; the restarted one serves.
    ok(cli, "run", "-d", "--name", "phoenix", "--network", "app", "--restart", "on-failure",
       "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c",
       "if [ -e /again ]; then exec " + " ".join(HTTPD) + "; else touch /again; exit 3; fi")
    wait_for(lambda: inspect(cli, "phoenix")["RestartCount"] >= 1
             and inspect(cli, "phoenix")["State"]["Status"] == "running", timeout=10,
             what="restarted")
    record = inspect(cli, "phoenix")
    assert wait_http(port).strip() == record["Config"]["Hostname"]
    ip = record["NetworkSettings"]["Networks"]["app"]["IPAddress"]
    assert ip and os.path.exists(record["NetworkSettings"]["SandboxKey"])
    out = sh(cli, "wget -qO- http://phoenix/hostname", "--network", "app")
    assert out.strip() == record["Config"]["Hostname"]
    assert len(network(cli, "app")["Containers"]) == 1
    ok(cli, "rm", "-f", "phoenix")
    assert refused(port)
    ok(cli, "network", "rm", "app")


def test_api(engine):
    net = engine.networks.create("apinet", labels={"k": "v"})
    port = free_port()
    web = engine.containers.run("busybox", HTTPD, name="web", detach=True, network="apinet",
                                network_aliases=["www"], ports={"80/tcp": ("127.0.0.1", port)},
                                extra_hosts={"printer": "10.1.2.3"}, dns=["10.0.0.53"])
    try:
        web.reload()
        assert wait_http(port).strip() == web.attrs["Config"]["Hostname"]
        out = engine.containers.run("busybox", ["sh", "-c", "wget -qO- http://www/hostname"],
                                    network="apinet", remove=True)
        assert out.decode().strip() == web.attrs["Config"]["Hostname"]
        assert [c.name for c in net.reload().containers] == ["web"]
        hosts = open(web.attrs["HostsPath"]).read()
        assert "10.1.2.3\tprinter" in hosts
        assert [n.name for n in engine.networks.list(filters={"label": "k=v"})] == ["apinet"]
    finally:
        web.remove(force=True)
    net.remove()

"""Namespaces, veths and bridges on the real kernel, with real traffic between namespaces.

Every test names its interfaces with a prefix of its own, registers what it
makes, and its teardown removes the namespaces (their veths go with them),
then the host-side links, and checks that nothing with its prefix is left.
Traffic goes only between namespaces the test made and their bridge: no
forwarding, no NAT, no other address.
"""

import errno
import os
import subprocess
import time

import pytest

from engine.network import ipam, link, netns

BUSYBOX = "/bin/busybox"


def ping(ns_path: str, address: str) -> bool:
    """One ICMP echo from inside ``ns_path`` (nsenter(1) joins the namespace for busybox)."""
    r = subprocess.run(["nsenter", f"--net={ns_path}", BUSYBOX, "ping", "-c1", "-W2", address],
                       capture_output=True, text=True, timeout=10)
    return r.returncode == 0


class Lab:
    """What one test made: namespaces and host links, removed at teardown."""

    def __init__(self, tmp_path):
        self.prefix = "zt" + os.urandom(2).hex()  # 6 bytes: room for a suffix within 15
        self.dir = tmp_path
        self.namespaces: list[str] = []
        self.links: list[str] = []
        # A /24 nobody on this host routes to (another test's bridge included).
        pool = [("10.240.0.0/12", 24)]
        self.subnet = ipam.pick_subnet(pool, [], ipam.host_routes())

    def name(self, suffix: str) -> str:
        name = self.prefix + suffix
        assert len(name) <= 15
        return name

    def netns(self, label: str) -> str:
        path = str(self.dir / f"ns-{label}")
        netns.create(path)
        self.namespaces.append(path)
        return path

    def bridge(self, suffix: str = "br") -> str:
        name = self.name(suffix)
        self.links.append(name)
        return name

    def host(self, i: int) -> tuple[str, str]:
        """(address/prefix, address) of the subnet's i-th host."""
        address = self.subnet.network_address + i
        return f"{address}/{self.subnet.prefixlen}", str(address)

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def endpoint(self, bridge: str, i: int, isolated: bool = False) -> tuple[str, str]:
        """Namespace i on ``bridge`` with the subnet's (i+1)-th address; returns (path, address)."""
        path = self.netns(str(i))
        host = self.name(f"h{i}")
        self.links.append(host)
        cidr, address = self.host(i + 1)
        link.perform(link.endpoint_steps(bridge, host, path, "eth0", cidr, self.gateway,
                                         ipam.mac_for(address), isolated))
        return path, address

    def cleanup(self) -> None:
        for path in self.namespaces:
            netns.remove(path)
        link.perform([link.DeleteLink(name) for name in self.links])

    def leftovers(self) -> list[str]:
        return [lnk.name for lnk in link.list_links(self.prefix)]


@pytest.fixture
def lab(tmp_path):
    try:
        link.perform([link.DeleteLink("zt-probe-none")])  # netlink answers at all
    except OSError as e:  # pragma: no cover
        pytest.skip(f"no rtnetlink here: {e}")
    made = Lab(tmp_path)
    yield made
    made.cleanup()
    deadline = time.time() + 5
    while made.leftovers() and time.time() < deadline:
        time.sleep(0.05)  # namespace teardown runs in a kernel work queue
    assert made.leftovers() == []
    assert not any(os.path.exists(p) for p in made.namespaces)
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read()


# -- steps as data (no root needed) ------------------------------------------------------


def test_endpoint_steps_are_data_that_prints_as_ip_commands():
    steps = link.endpoint_steps("dockyard0", "dy0123456789", "/x/netns/c1", "eth0",
                                "10.200.0.2/16", "10.200.0.1", "02:42:0a:c8:00:02", isolated=True)
    assert link.explain(steps).splitlines() == [
        "ip link add dy0123456789 master dockyard0 type veth peer name eth0 netns /x/netns/c1 "
        "address 02:42:0a:c8:00:02",
        "bridge link set dev dy0123456789 isolated on",
        "ip link set dy0123456789 up",
        "nsenter --net=/x/netns/c1 ip addr add 10.200.0.2/16 dev eth0",
        "nsenter --net=/x/netns/c1 ip link set lo up",
        "nsenter --net=/x/netns/c1 ip link set eth0 up",
        "nsenter --net=/x/netns/c1 ip route add default via 10.200.0.1",
    ]
    # internal network: no route out; icc on: no isolation
    plain = link.endpoint_steps("br", "dyabc", "/n", "eth1", "10.0.0.2/24", None, None)
    assert not any(isinstance(s, (link.AddDefaultRoute, link.SetIsolated)) for s in plain)
    assert plain[0].mac is None
    assert link.EnsureBridge("dockyard0", "10.200.0.1/16").shell().splitlines() == [
        "ip link add name dockyard0 type bridge address 02:42:0a:c8:00:01",
        "ip addr add 10.200.0.1/16 dev dockyard0", "ip link set dockyard0 up"]
    assert link.EnsureBridge("dy-0123", None).shell().splitlines()[0] == \
        "ip link add name dy-0123 type bridge"
    assert link.host_ifname("0123456789abcdef" * 4) == "dy0123456789"
    with pytest.raises(AttributeError):
        steps[0].host_ifname = "other"  # frozen: a plan cannot change once made


# -- network namespaces ---------------------------------------------------------------------


@pytest.mark.root
def test_netns_lifecycle(lab):
    path = lab.netns("solo")
    assert netns.exists(path)
    assert netns.identity(path) != netns.identity("/proc/self/ns/net")
    assert netns.identity(path) == netns.identity(path)
    assert [name for name, _ in link.interfaces(path)] == ["lo"]  # a new namespace: only lo
    with pytest.raises(FileExistsError):
        netns.create(path)
    netns.remove(path)
    assert not os.path.exists(path)
    assert not netns.exists(path)
    netns.remove(path)  # gone already: fine


@pytest.mark.root
def test_netns_plain_file_is_not_a_namespace(lab, tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("")
    assert not netns.exists(plain)
    netns.remove(plain)  # not a mount point: just unlinked
    assert not plain.exists()


# -- bridge, veths, traffic -------------------------------------------------------------------


@pytest.mark.root
def test_two_namespaces_reach_each_other_through_the_bridge(lab):
    bridge = lab.bridge()
    gateway_cidr = f"{lab.gateway}/{lab.subnet.prefixlen}"
    link.perform([link.EnsureBridge(bridge, gateway_cidr)])
    link.perform([link.EnsureBridge(bridge, gateway_cidr)])  # idempotent
    assert link.addresses(bridge) == [gateway_cidr]
    assert link.bridge_exists(bridge)

    ns0, ip0 = lab.endpoint(bridge, 1)
    ns1, ip1 = lab.endpoint(bridge, 2)
    assert ping(ns0, ip1)
    assert ping(ns1, ip0)
    assert ping(ns0, lab.gateway)

    ports = {lnk.name: lnk for lnk in link.list_links(lab.prefix)}
    # the bridge keeps the MAC it was given, whatever ports it has
    assert ports[bridge].mac == ipam.mac_for(lab.gateway)
    assert ports[lab.name("h1")].master == bridge and ports[lab.name("h1")].kind == "veth"
    assert ports[lab.name("h1")].up and not ports[lab.name("h1")].isolated
    assert ports[bridge].kind == "bridge"
    inside = dict(link.interfaces(ns0))
    assert sorted(inside) == ["eth0", "lo"]
    assert inside["eth0"] == ipam.mac_for(ip0)
    assert link.addresses("eth0", ns0) == [f"{ip0}/{lab.subnet.prefixlen}"]


@pytest.mark.root
def test_isolated_ports_reach_the_gateway_not_each_other(lab):
    bridge = lab.bridge()
    link.perform([link.EnsureBridge(bridge, f"{lab.gateway}/{lab.subnet.prefixlen}")])
    ns0, ip0 = lab.endpoint(bridge, 1, isolated=True)
    ns1, ip1 = lab.endpoint(bridge, 2, isolated=True)
    assert all(lnk.isolated for lnk in link.list_links(lab.name("h")))
    assert ping(ns0, lab.gateway)
    assert not ping(ns0, ip1)
    assert not ping(ns1, ip0)
    # turning isolation off on one port is enough: only isolated-to-isolated is blocked
    link.perform([link.SetIsolated(lab.name("h2"), False)])
    assert ping(ns0, ip1)


@pytest.mark.root
def test_removing_the_namespace_removes_the_veth_pair(lab):
    bridge = lab.bridge()
    link.perform([link.EnsureBridge(bridge, None)])
    path, _ = lab.endpoint(bridge, 1)
    host_side = lab.name("h1")
    assert [lnk.name for lnk in link.list_links(host_side)] == [host_side]
    netns.remove(path)
    deadline = time.time() + 5
    while link.list_links(host_side) and time.time() < deadline:
        time.sleep(0.05)
    assert link.list_links(host_side) == []


@pytest.mark.root
def test_remove_endpoint_and_delete_bridge(lab):
    bridge = lab.bridge()
    link.perform([link.EnsureBridge(bridge, None)])
    path, _ = lab.endpoint(bridge, 1)
    link.remove_endpoint(path, "eth0")
    assert [name for name, _ in link.interfaces(path)] == ["lo"]
    assert link.list_links(lab.name("h1")) == []
    link.remove_endpoint(path, "eth0")  # gone already: fine
    link.delete_bridge(bridge)
    assert not link.bridge_exists(bridge)
    link.delete_bridge(bridge)


@pytest.mark.root
def test_a_second_endpoint_in_the_same_namespace(lab):
    """eth1 on another bridge: what `network connect` does to a running container."""
    br_a, br_b = lab.bridge("ba"), lab.bridge("bb")
    link.perform([link.EnsureBridge(br_a, None), link.EnsureBridge(br_b, None)])
    path, _ = lab.endpoint(br_a, 1)
    second = lab.name("x1")
    lab.links.append(second)
    link.perform(link.endpoint_steps(br_b, second, path, "eth1",
                                     f"{lab.subnet.network_address + 200}/32", None, None))
    assert sorted(name for name, _ in link.interfaces(path)) == ["eth0", "eth1", "lo"]
    assert next(lnk for lnk in link.list_links(second)).master == br_b


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.root
def test_kernel_refusals_are_oserrors_with_the_command(lab):
    missing = lab.name("nx")
    with pytest.raises(OSError) as e:
        link.perform([link.SetMaster(missing, lab.name("nb"))])
    assert e.value.errno == errno.ENODEV
    assert f"while doing: ip link set {missing} master {lab.name('nb')}" in e.value.__notes__

    host, peer = lab.name("v0"), lab.name("v1")
    lab.links.append(host)
    link.perform([link.AddVeth(host, peer)])
    with pytest.raises(OSError) as e:
        link.perform([link.AddVeth(host, peer)])
    assert e.value.errno == errno.EEXIST
    assert e.value.__notes__ == [f"while doing: ip link add {host} type veth peer name {peer}"]


@pytest.mark.root
def test_a_failed_plan_leaves_no_veth_behind(lab):
    """The bridge is missing: SetMaster fails after AddVeth made the pair."""
    path = lab.netns("fail")
    host = lab.name("h9")
    lab.links.append(host)
    cidr, _ = lab.host(9)
    with pytest.raises(OSError) as e:
        link.perform(link.endpoint_steps(lab.name("nobr"), host, path, "eth0", cidr, None, None))
    assert e.value.errno == errno.ENODEV
    assert link.list_links(host) == []
    assert [name for name, _ in link.interfaces(path)] == ["lo"]


@pytest.mark.root
def test_steps_in_a_missing_namespace(lab, tmp_path):
    ghost = str(tmp_path / "no-such-ns")
    with pytest.raises(FileNotFoundError):
        link.perform([link.SetUp("lo", ghost)])
    link.perform([link.DeleteLink("eth0", ghost)])  # nothing to delete: fine
    assert link.interfaces(ghost) == []

"""Network records, endpoints and the engine's network config, without root or the kernel.

The store gets a fixed list of host routes, so nothing here reads the host.
"""

import ipaddress
import json
import re
import threading

import pytest

from engine.errors import Conflict, NotFound, UsageError
from engine.layout import Layout
from engine.network import config as netconfig
from engine.network.store import (BRIDGE_NAME, NetworkNotFound, NetworkStore, filter_records,
                                  parse_filters)

HOST_ROUTES = [ipaddress.IPv4Network("192.0.2.0/24")]


@pytest.fixture
def layout(tmp_path):
    return Layout(tmp_path / "root")


@pytest.fixture
def store(layout):
    return NetworkStore(layout, routes=lambda: HOST_ROUTES)


@pytest.fixture
def default_bridge(layout) -> ipaddress.IPv4Interface:
    """The default bridge's address of a scratch root (config.root_defaults):
    not dockyard0's 10.200.0.1/16, which only /var/lib/dockyard gets."""
    return ipaddress.IPv4Interface(netconfig.root_defaults(layout.root)["bip"])


# -- config ------------------------------------------------------------------------------


def test_config_defaults_without_a_file(layout):
    cfg = netconfig.load(layout)
    own = netconfig.root_defaults(layout.root)
    assert cfg == netconfig.NetConfig(bip=own["bip"], bridge=own["bridge"])
    assert (cfg.bip, cfg.icc, cfg.bridge) == (own["bip"], True, own["bridge"])
    assert [(p.base, p.size) for p in cfg.default_address_pools] == [("10.201.0.0/16", 24)]
    assert cfg.bridge_interface.network.prefixlen == 24


def test_config_defaults_of_the_default_root(layout, monkeypatch):
    """/var/lib/dockyard (here: a scratch root standing in for it) keeps docker's shape."""
    import engine.layout

    monkeypatch.setattr(engine.layout, "DEFAULT_ROOT", str(layout.root))
    cfg = netconfig.load(layout)
    assert cfg == netconfig.NetConfig()
    assert (cfg.bip, cfg.icc, cfg.bridge) == ("10.200.0.1/16", True, "dockyard0")
    assert str(cfg.bridge_interface.network) == "10.200.0.0/16"


def test_root_defaults(tmp_path, monkeypatch):
    from engine.layout import DEFAULT_ROOT

    assert netconfig.root_defaults(DEFAULT_ROOT) == {}
    assert netconfig.root_defaults(DEFAULT_ROOT + "/") == {}
    own = netconfig.root_defaults(tmp_path / "a")
    assert set(own) == {"bridge", "bip"}
    assert re.fullmatch(r"dyb[0-9a-f]{8}", own["bridge"]) and netconfig.IFNAME.match(own["bridge"])
    bip = ipaddress.IPv4Interface(own["bip"])
    assert re.fullmatch(r"10\.202\.\d{1,3}\.1/24", own["bip"]) and bip.ip == bip.network.network_address + 1
    # A function of the absolute path: the same root however it is named...
    assert netconfig.root_defaults(str(tmp_path / "a")) == own
    monkeypatch.chdir(tmp_path)
    assert netconfig.root_defaults("a") == netconfig.root_defaults("./x/../a") == own
    # ...and another bridge for another root (their /24s may meet: 256 of them).
    assert netconfig.root_defaults(tmp_path / "b")["bridge"] != own["bridge"]
    # Both pass the checks of engine.json's keys.
    assert netconfig.parse(own) == netconfig.NetConfig(bip=own["bip"], bridge=own["bridge"])


def test_engine_json_overrides_the_root_defaults_key_by_key(layout):
    layout.root.mkdir(parents=True)
    (layout.root / "engine.json").write_text(json.dumps({"bridge": "dytest2"}))
    cfg = netconfig.load(layout)
    assert (cfg.bridge, cfg.bip) == ("dytest2", netconfig.root_defaults(layout.root)["bip"])


def test_config_from_engine_json(layout):
    layout.root.mkdir(parents=True)
    (layout.root / "engine.json").write_text(json.dumps({
        "bip": "172.30.0.1/24", "icc": False, "bridge": "dytest0", "storage": "ignored",
        "default_address_pools": [{"base": "172.31.0.0/16", "size": 26}]}))
    cfg = netconfig.load(layout)
    assert (cfg.bip, cfg.icc, cfg.bridge) == ("172.30.0.1/24", False, "dytest0")
    assert cfg.default_address_pools == (netconfig.AddressPool("172.31.0.0/16", 26),)


@pytest.mark.parametrize("data, message", [
    ({"bip": "nope"}, "bip: 'nope' is not an IPv4 address"),
    ({"bip": "10.0.0.0/8"}, "bip: 10.0.0.0/8 is the network address of 10.0.0.0/8"),
    ({"bip": "10.0.0.1/31"}, "no room for containers"),
    ({"icc": "no"}, "icc: expected true or false"),
    ({"bridge": "a-name-far-too-long"}, "bridge: 'a-name-far-too-long' is not an interface name"),
    ({"default_address_pools": []}, "default_address_pools: expected a non-empty list"),
    ({"default_address_pools": [{"base": "10.0.0.1/16", "size": 24}]}, "base '10.0.0.1/16'"),
    ({"default_address_pools": [{"base": "10.0.0.0/16", "size": 8}]}, "size 8 must be"),
])
def test_config_errors_name_the_file(layout, data, message):
    layout.root.mkdir(parents=True)
    (layout.root / "engine.json").write_text(json.dumps(data))
    with pytest.raises(UsageError) as e:
        netconfig.load(layout)
    assert str(e.value).startswith(str(layout.root / "engine.json") + ": ")
    assert message in str(e.value)


def test_config_not_json(layout):
    layout.root.mkdir(parents=True)
    (layout.root / "engine.json").write_text("{")
    with pytest.raises(UsageError, match="not valid JSON"):
        netconfig.load(layout)


# -- built-ins ---------------------------------------------------------------------------


def test_builtins_appear_on_first_use(store, layout, default_bridge):
    records = {r["Name"]: r for r in store.list()}
    assert sorted(records) == ["bridge", "host", "none"]
    assert [records[n]["Driver"] for n in ("bridge", "host", "none")] == ["bridge", "host", "null"]
    bridge = records["bridge"]
    assert bridge["IPAM"]["Config"] == [{"Subnet": str(default_bridge.network),
                                         "Gateway": str(default_bridge.ip)}]
    assert bridge["Options"][BRIDGE_NAME] == netconfig.root_defaults(layout.root)["bridge"]
    assert bridge["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    assert bridge["Options"]["com.docker.network.bridge.enable_icc"] == "true"
    for record in records.values():
        assert re.fullmatch(r"[0-9a-f]{64}", record["Id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", record["Created"])
        assert (layout.networks / f"{record['Id']}.json").exists()
    # made once: the same IDs next time
    assert {r["Id"] for r in NetworkStore(layout).list()} == {r["Id"] for r in records.values()}


def test_default_bridge_follows_the_config_while_unused(layout):
    first = NetworkStore(layout, routes=list).get("bridge")
    layout.root.joinpath("engine.json").write_text(json.dumps({"bip": "10.77.0.1/24", "icc": False,
                                                               "bridge": "dytest1"}))
    again = NetworkStore(layout, routes=list).get("bridge")
    assert again["Id"] == first["Id"]
    assert again["IPAM"]["Config"] == [{"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.1"}]
    assert again["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert again["Options"][BRIDGE_NAME] == "dytest1"


def test_builtins_cannot_be_removed_or_made(store):
    for name in ("bridge", "host", "none"):
        with pytest.raises(UsageError, match=f"^{name} is a pre-defined network and cannot be removed$"):
            store.remove(name)
        with pytest.raises(UsageError, match=f"operation is not permitted on predefined {name} network"):
            store.create(name)


# -- create --------------------------------------------------------------------------------


def test_create_picks_subnets_from_the_pools(store):
    a = store.create("alpha")
    b = store.create("beta", labels={"team": "x"})
    assert a["IPAM"]["Config"] == [{"Subnet": "10.201.0.0/24", "Gateway": "10.201.0.1"}]
    assert b["IPAM"]["Config"] == [{"Subnet": "10.201.1.0/24", "Gateway": "10.201.1.1"}]
    assert a["Options"] == {BRIDGE_NAME: "dy-" + a["Id"][:12]}
    assert len(a["Options"][BRIDGE_NAME]) == 15
    assert (a["Driver"], a["Scope"], a["Internal"], a["Containers"]) == ("bridge", "local", False, {})
    assert b["Labels"] == {"team": "x"}
    assert store.get("alpha") == a


def test_create_skips_host_routes(layout):
    routes = [ipaddress.IPv4Network("10.201.0.0/23")]
    store = NetworkStore(layout, routes=lambda: routes)
    assert store.create("gamma")["IPAM"]["Config"][0]["Subnet"] == "10.201.2.0/24"


def test_create_with_a_given_subnet(store):
    r = store.create("given", subnet="10.90.0.0/16", gateway="10.90.255.254", ip_range="10.90.8.0/24",
                     internal=True)
    assert r["IPAM"]["Config"] == [{"Subnet": "10.90.0.0/16", "Gateway": "10.90.255.254",
                                    "IPRange": "10.90.8.0/24"}]
    assert r["Internal"] is True


def test_create_refusals(store, layout, default_bridge):
    store.create("taken", subnet="10.90.0.0/24")
    with pytest.raises(Conflict, match="^network with name taken already exists$"):
        store.create("taken")
    with pytest.raises(Conflict, match=r"conflicts with network [0-9a-f]{64} \(dy-[0-9a-f]{12}\): "
                                       "networks have overlapping IPv4"):
        store.create("overlap", subnet="10.90.0.128/25")
    own_bridge = netconfig.root_defaults(layout.root)["bridge"]
    with pytest.raises(Conflict, match=rf"\({own_bridge}\): networks have overlapping IPv4"):
        store.create("overlap", subnet=str(next(default_bridge.network.subnets(1))))
    with pytest.raises(Conflict, match="overlaps the host's route to 192.0.2.0/24"):
        store.create("overlap", subnet="192.0.2.0/26")
    with pytest.raises(UsageError, match=r"Invalid network name \(bad name\)"):
        store.create("bad name")
    with pytest.raises(NotFound, match='plugin "macvlan" not found'):
        store.create("mac", driver="macvlan")
    with pytest.raises(UsageError, match='only one instance of "host" network is allowed'):
        store.create("h2", driver="host")
    with pytest.raises(UsageError, match="invalid network config"):
        store.create("bad", subnet="10.1.1.1/24")
    assert [r["Name"] for r in store.list()] == ["bridge", "host", "none", "taken"]


def test_concurrent_creates_get_different_subnets(layout):
    results, errors = [], []

    def make(i):
        try:
            results.append(NetworkStore(layout, routes=list).create(f"par{i}"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    subnets = [r["IPAM"]["Config"][0]["Subnet"] for r in results]
    assert len(set(subnets)) == 6


# -- lookups ---------------------------------------------------------------------------------


def test_get_by_id_name_and_prefix(store):
    r = store.create("lookup")
    assert store.get(r["Id"]) == r
    assert store.get(r["Id"][:5]) == r
    assert store.get(r) == r
    with pytest.raises(NetworkNotFound, match="^network nothing not found$"):
        store.get("nothing")
    assert issubclass(NetworkNotFound, NotFound)


def test_ambiguous_prefix(store):
    for i in range(14):  # with the 3 built-ins, 17 IDs: two share a first hex digit
        store.create(f"amb{i}")
    firsts = [r["Id"][0] for r in store.list()]
    shared = next(d for d in firsts if firsts.count(d) > 1)
    with pytest.raises(NotFound, match=rf"^network {shared} is ambiguous \({firsts.count(shared)} "
                                       r"matches found based on ID prefix\)$"):
        store.get(shared)


# -- endpoints ---------------------------------------------------------------------------------


CID = "c" * 64
CID2 = "d" * 64


def test_reserve_and_release(store):
    net = store.create("ends")
    ep = store.reserve(net, CID, "/web", aliases=["www"])
    assert ep["Name"] == "web"
    assert ep["IPv4Address"] == "10.201.0.2/24"
    assert (ep["IPAddress"], ep["IPPrefixLen"], ep["Gateway"]) == ("10.201.0.2", 24, "10.201.0.1")
    assert ep["MacAddress"] == "02:42:0a:c9:00:02"
    assert ep["Aliases"] == ["www"]
    assert ep["NetworkID"] == net["Id"]
    assert re.fullmatch(r"[0-9a-f]{64}", ep["EndpointID"])
    stored = store.endpoints("ends")[CID]
    assert {k: stored[k] for k in ("Name", "EndpointID", "MacAddress", "IPv4Address", "IPv6Address")} == \
        {"Name": "web", "EndpointID": ep["EndpointID"], "MacAddress": ep["MacAddress"],
         "IPv4Address": "10.201.0.2/24", "IPv6Address": ""}
    second = store.reserve("ends", CID2, "db")
    assert second["IPAddress"] == "10.201.0.3"
    assert [r["Name"] for r in store.networks_of(CID)] == ["ends"]
    assert store.release("ends", CID)["EndpointID"] == ep["EndpointID"]
    assert store.release("ends", CID) is None
    assert list(store.endpoints("ends")) == [CID2]
    # the released address is free again
    assert store.reserve("ends", CID, "web")["IPAddress"] == "10.201.0.2"


def test_one_endpoint_per_container_and_network(store):
    store.create("once")
    store.reserve("once", CID, "web")
    with pytest.raises(Conflict, match="endpoint with name web already exists in network once"):
        store.reserve("once", CID, "web")


def test_default_bridge_endpoints(store, default_bridge):
    ep = store.reserve("bridge", CID, "web")
    assert (ep["IPv4Address"], ep["Gateway"]) == (f"{default_bridge.ip + 1}/24", str(default_bridge.ip))
    with pytest.raises(UsageError, match="^user specified IP address is supported on user defined "
                                         "networks only$"):
        store.reserve("bridge", CID2, "db", ip=str(default_bridge.ip + 8))


def test_host_and_none_endpoints_have_no_address(store):
    for name in ("host", "none"):
        ep = store.reserve(name, CID, "web")
        assert (ep["IPv4Address"], ep["MacAddress"], ep["Gateway"]) == ("", "", "")
        with pytest.raises(UsageError, match="supported on user defined networks only"):
            store.reserve(name, CID2, "db", ip="10.0.0.9")


def test_user_ip_needs_a_user_subnet(store):
    store.create("auto")
    with pytest.raises(UsageError, match="^user specified IP address is supported only when connecting "
                                         "to networks with user configured subnets$"):
        store.reserve("auto", CID, "web", ip="10.201.0.50")
    store.create("fixed", subnet="10.91.0.0/24", ip_range="10.91.0.128/25")
    assert store.reserve("fixed", CID, "web", ip="10.91.0.50")["IPAddress"] == "10.91.0.50"
    assert store.reserve("fixed", CID2, "db")["IPAddress"] == "10.91.0.128"
    with pytest.raises(Conflict, match="^Address already in use$"):
        store.reserve("fixed", "e" * 64, "x1", ip="10.91.0.50")
    with pytest.raises(UsageError, match="no configured subnet or ip-range contain the IP address 10.92.0.1"):
        store.reserve("fixed", "e" * 64, "x1", ip="10.92.0.1")
    # nothing was recorded by the refusals
    assert sorted(store.endpoints("fixed")) == [CID, CID2]


def test_given_mac_and_internal_gateway(store):
    store.create("inner", internal=True)
    ep = store.reserve("inner", CID, "web", mac="02:42:AA:BB:CC:DD")
    assert ep["MacAddress"] == "02:42:aa:bb:cc:dd"
    assert ep["Gateway"] == ""
    with pytest.raises(UsageError, match="is not a valid mac address"):
        store.reserve("inner", CID2, "db", mac="nope")


def test_exhausted_network_names_itself(store):
    net = store.create("tiny", subnet="10.93.0.0/30")
    store.reserve("tiny", CID, "web")
    with pytest.raises(Exception, match=rf"no available IPv4 addresses on this network's address pools: "
                                        rf"tiny \({net['Id']}\)"):
        store.reserve("tiny", CID2, "db")


def test_concurrent_reservations_get_different_addresses(layout):
    NetworkStore(layout, routes=list).create("busy")
    got, errors = [], []

    def reserve(i):
        try:
            got.append(NetworkStore(layout, routes=list).reserve("busy", f"{i:064x}", f"c{i}")["IPAddress"])
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(got)) == 12


# -- remove and prune --------------------------------------------------------------------------


def test_remove_refuses_active_endpoints(store, layout):
    net = store.create("inuse")
    store.reserve("inuse", CID, "web")
    with pytest.raises(Conflict, match=f"^error while removing network: network inuse id {net['Id']} "
                                       "has active endpoints$"):
        store.remove("inuse")
    store.release("inuse", CID)
    assert store.remove("inuse")["Id"] == net["Id"]
    assert not (layout.networks / f"{net['Id']}.json").exists()
    with pytest.raises(NotFound, match="network inuse not found"):
        store.remove("inuse")


def test_prune_removes_unused_user_networks(store):
    store.create("keep")
    store.create("drop1")
    store.create("drop2", labels={"k": "v"})
    store.reserve("keep", CID, "web")
    assert sorted(store.prune()) == ["drop1", "drop2"]
    assert [r["Name"] for r in store.list()] == ["bridge", "host", "keep", "none"]
    store.release("keep", CID)
    assert store.prune(keep=lambda r: r["Name"] == "keep") == []


# -- filters ------------------------------------------------------------------------------------


def test_filters(store):
    store.create("front", labels={"tier": "web"})
    store.create("back10", labels={"tier": "db", "x": ""})
    store.reserve("back10", CID, "db")
    records = store.list()

    def names(*words):
        return [r["Name"] for r in filter_records(records, parse_filters(list(words)))]

    assert names("driver=null") == ["none"]
    assert names("name=ack") == ["back10"]  # a search, as docker's
    assert names("name=^b") == ["back10", "bridge"]
    assert names("label=tier") == ["back10", "front"]
    assert names("label=tier=web") == ["front"]
    assert names("type=builtin") == ["bridge", "host", "none"]
    assert names("type=custom") == ["back10", "front"]
    assert names("dangling=true") == ["front"]
    assert names("dangling=false") == ["back10", "bridge", "host", "none"]
    front = store.get("front")["Id"]
    assert names(f"id={front[:6]}") == ["front"]
    assert names("scope=local", "driver=bridge", "type=custom") == ["back10", "front"]
    assert [r["Name"] for r in filter_records(records, parse_filters({"label": ["tier=db"]}))] == ["back10"]
    with pytest.raises(UsageError, match="invalid filter: 'type'='weird'"):
        parse_filters(["type=weird"])
    with pytest.raises(UsageError, match="invalid value for filter 'dangling'"):
        parse_filters(["dangling=maybe"])
    with pytest.raises(UsageError, match="invalid filter 'colour'"):
        parse_filters(["colour=red"])

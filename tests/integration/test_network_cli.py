"""``dockyard network ...`` and ``engine.networks``: docker's columns, wording and exit codes.

These commands only write records (the bridge device is made by the first
container that attaches), so most tests need no root; the one that checks
``network rm`` deleting the bridge device makes one and is marked root.
"""

import json
import re

import pytest

from engine.errors import Conflict, NotFound, UsageError

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_ls_shows_the_builtins_in_docker_columns(cli):
    r = cli("network", "ls")
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert re.split(r"\s{3,}", out[0]) == ["NETWORK ID", "NAME", "DRIVER", "SCOPE"]
    rows = [re.split(r"\s+", line) for line in out[1:]]
    assert [row[1:] for row in rows] == [["bridge", "bridge", "local"], ["host", "host", "local"],
                                         ["none", "null", "local"]]
    assert all(re.fullmatch(r"[0-9a-f]{12}", row[0]) for row in rows)
    assert cli("network", "list").stdout == r.stdout


def test_create_prints_the_id_and_ls_lists_it(cli):
    r = cli("network", "create", "--label", "team=web", "--label", "solo", "front2")
    assert r.returncode == 0, r.stderr
    network_id = r.stdout.strip()
    assert HEX64.match(network_id)
    cli("network", "create", "front10")
    names = cli("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert names == ["bridge", "front2", "front10", "host", "none"]  # natural order, as docker
    assert cli("network", "ls", "-q", "--no-trunc", "-f", "label=team=web").stdout == network_id + "\n"
    assert cli("network", "ls", "-q", "-f", "type=custom", "-f", "name=2").stdout == network_id[:12] + "\n"
    table = lines(cli("network", "ls", "-f", "name=front2", "--format",
                      "table {{.Name}}\t{{.Labels}}\t{{.Internal}}\t{{.IPv4}}\t{{.IPv6}}").stdout)
    assert re.split(r"\s{3,}", table[0]) == ["NAME", "LABELS", "INTERNAL", "IPV4", "IPV6"]
    assert re.split(r"\s{3,}", table[1]) == ["front2", "team=web,solo=", "false", "true", "false"]
    created = cli("network", "ls", "-f", "name=front2", "--format", "{{.CreatedAt}}").stdout.strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC", created)
    as_json = json.loads(cli("network", "ls", "-f", "name=front2", "--format", "json").stdout)
    assert as_json["Name"] == "front2" and as_json["ID"] == network_id[:12]


def test_inspect(cli):
    network_id = cli("network", "create", "--subnet", "10.251.7.0/24", "--gateway", "10.251.7.254",
                     "--ip-range", "10.251.7.128/25", "--internal", "backend").stdout.strip()
    r = cli("network", "inspect", "backend", "bridge")
    assert r.returncode == 0, r.stderr
    backend, bridge = json.loads(r.stdout)
    assert r.stdout.startswith("[\n    {\n")  # docker's 4-space indent
    assert backend["Id"] == network_id
    assert list(backend)[:15] == ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM",
                                  "Internal", "Attachable", "Ingress", "ConfigFrom", "ConfigOnly",
                                  "Containers", "Options", "Labels"]
    assert backend["IPAM"] == {"Driver": "default", "Options": {}, "Config": [
        {"Subnet": "10.251.7.0/24", "Gateway": "10.251.7.254", "IPRange": "10.251.7.128/25"}]}
    assert backend["Internal"] is True
    assert backend["Options"] == {"com.docker.network.bridge.name": "dy-" + network_id[:12]}
    assert bridge["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    r = cli("network", "inspect", "-f", "{{.Name}} {{range .IPAM.Config}}{{.Subnet}}{{end}}",
            network_id[:8])
    assert r.stdout == "backend 10.251.7.0/24\n"
    r = cli("network", "inspect", "backend", "nothing")
    assert r.returncode == 125
    assert r.stderr == "dockyard: Error: No such network: nothing\n"
    assert json.loads(r.stdout)[0]["Name"] == "backend"


@pytest.mark.parametrize("args, message", [
    (["--subnet", "10.1.1.1/24", "x1"], "dockyard: invalid network config:\n"
                                        "invalid subnet 10.1.1.1/24: it should be 10.1.1.0/24\n"),
    (["--gateway", "10.1.1.1", "x1"], "dockyard: every ip-range or gateway must have a corresponding "
                                      "subnet\n"),
    (["-d", "overlay", "x1"], 'dockyard: plugin "overlay" not found\n'),
    (["bridge"], "dockyard: operation is not permitted on predefined bridge network\n"),
])
def test_create_refusals(cli, args, message):
    r = cli("network", "create", *args)
    assert r.returncode == 125
    assert r.stdout == ""
    assert r.stderr == message


def test_create_refuses_a_subnet_overlapping_the_default_bridge(cli):
    import ipaddress

    from engine.network.config import root_defaults

    # A scratch root's default bridge is its own (config.root_defaults), not dockyard0.
    own = root_defaults(cli.root)
    inside = next(ipaddress.IPv4Interface(own["bip"]).network.subnets(1))
    r = cli("network", "create", "--subnet", str(inside), "x1")
    assert (r.returncode, r.stdout) == (125, "")
    assert re.fullmatch(rf"dockyard: cannot create network [0-9a-f]{{64}} \(dy-[0-9a-f]{{12}}\): "
                        rf"conflicts with network [0-9a-f]{{64}} \({own['bridge']}\): networks have "
                        r"overlapping IPv4\n", r.stderr), r.stderr
    assert "x1" not in cli("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_create_twice(cli):
    assert cli("network", "create", "twice").returncode == 0
    r = cli("network", "create", "twice")
    assert (r.returncode, r.stderr) == (125, "dockyard: network with name twice already exists\n")


def test_rm(cli):
    cli("network", "create", "gone1")
    cli("network", "create", "gone2")
    r = cli("network", "rm", "gone1", "bridge", "nothing", "gone2")
    assert r.stdout == "gone1\ngone2\n"
    assert r.stderr == ("dockyard: bridge is a pre-defined network and cannot be removed\n"
                        "dockyard: network nothing not found\n")
    assert r.returncode == 125
    r = cli("network", "rm", "-f", "nothing")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert cli("network", "ls", "-q", "-f", "type=custom").stdout == ""


def test_prune_asks_first(cli):
    cli("network", "create", "unused1")
    cli("network", "create", "--label", "keep=yes", "unused2")
    r = cli("network", "prune", input="n\n")
    assert r.stdout == ("WARNING! This will remove all custom networks not used by at least one "
                        "container.\nAre you sure you want to continue? [y/N] ")
    assert "unused1" in cli("network", "ls").stdout
    r = cli("network", "prune", "--filter", "label!=keep", input="y\n")
    assert r.stdout.endswith("[y/N] Deleted Networks:\nunused1\n\n")
    r = cli("network", "prune", "-f")
    assert r.stdout == "Deleted Networks:\nunused2\n\n"
    assert cli("network", "prune", "-f").stdout == ""


def test_no_subcommand_is_a_usage_error(cli):
    r = cli("network")
    assert r.returncode == 125
    assert "See 'dockyard network --help'." in r.stderr
    assert "connect" in cli("network", "--help").stdout


@pytest.mark.root
def test_rm_deletes_the_bridge_device(cli, engine):
    from engine.network import link

    record = engine.networks.create("withdev").attrs
    bridge = record["Options"]["com.docker.network.bridge.name"]
    try:
        link.perform([link.EnsureBridge(bridge, None)])  # what the first attach does
        assert link.bridge_exists(bridge)
        assert cli("network", "rm", "withdev").stdout == "withdev\n"
        assert not link.bridge_exists(bridge)
    finally:
        link.delete_bridge(bridge)


# -- the Python API ----------------------------------------------------------------------------


def test_api_create_get_list(engine):
    net = engine.networks.create("apinet", ipam={"Driver": "default", "Config": [
        {"Subnet": "10.252.0.0/24", "Gateway": "10.252.0.1"}]}, labels={"a": "b"})
    assert HEX64.match(net.id) and net.short_id == net.id[:12] and net.name == "apinet"
    assert net.attrs["IPAM"]["Config"][0]["Subnet"] == "10.252.0.0/24"
    assert engine.networks.get("apinet") == net
    assert engine.networks.get(net.short_id).attrs == net.attrs
    assert [n.name for n in engine.networks.list()] == ["apinet", "bridge", "host", "none"]
    assert [n.name for n in engine.networks.list(names=["apinet", "none"])] == ["apinet", "none"]
    assert [n.name for n in engine.networks.list(ids=[net.id])] == ["apinet"]
    assert [n.name for n in engine.networks.list(filters={"label": "a=b"})] == ["apinet"]
    assert [n.name for n in engine.networks.list(filters={"type": "builtin", "driver": "host"})] == ["host"]
    assert repr(net) == f"<Network: {net.short_id} apinet>"
    with pytest.raises(NotFound, match="network nope not found"):
        engine.networks.get("nope")
    with pytest.raises(Conflict):
        engine.networks.create("apinet")
    with pytest.raises(UsageError, match="one IPv4 subnet"):
        engine.networks.create("two", ipam={"Config": [{"Subnet": "10.253.0.0/24"},
                                                       {"Subnet": "10.253.1.0/24"}]})


def test_api_containers_reload_remove_prune(engine):
    net = engine.networks.create("members")
    container = engine.containers.create("busybox", "true", name="member1")
    try:
        engine.networks.store.reserve(net.attrs, container.id, container.name)
        assert net.containers == []  # attrs are as of the last load
        assert [c.id for c in net.reload().containers] == [container.id]
        with pytest.raises(Conflict, match="has active endpoints"):
            net.remove()
        assert engine.networks.prune() == {"NetworksDeleted": None}
    finally:
        container.remove(force=True)
    # the container is gone, its endpoint stayed behind (as after a crash): prune lets it go
    assert engine.networks.prune() == {"NetworksDeleted": ["members"]}
    with pytest.raises(NotFound):
        net.reload()

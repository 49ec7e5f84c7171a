"""Published and exposed ports: docker's parsing, allocation and display rules.

Parsing and display are pure. The allocation tests bind test sockets on
127.0.0.1 only (no root needed, no traffic sent).
"""

import socket

import pytest

from engine.errors import Conflict, NotFound, UsageError
from engine.network import ports as P
from engine.network.ports import Published


# --- -p / --publish -----------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("80", [("80/tcp", "", "")]),
    ("8080:80", [("80/tcp", "", "8080")]),
    ("127.0.0.1:8080:80", [("80/tcp", "127.0.0.1", "8080")]),
    ("127.0.0.1::80", [("80/tcp", "127.0.0.1", "")]),
    ("53/udp", [("53/udp", "", "")]),
    ("5353:53/udp", [("53/udp", "", "5353")]),
    ("8080:80/TCP", [("80/tcp", "", "8080")]),
    ("9999:99/sctp", [("99/sctp", "", "9999")]),
    ("80/", [("80/tcp", "", "")]),
    ("0:80", [("80/tcp", "", "0")]),
    ("8000-8002:80-82", [("80/tcp", "", "8000"), ("81/tcp", "", "8001"), ("82/tcp", "", "8002")]),
    ("8000-8010:80", [("80/tcp", "", "8000-8010")]),
    ("8000-8000:80", [("80/tcp", "", "8000")]),
    ("80-81", [("80/tcp", "", ""), ("81/tcp", "", "")]),
    ("10.0.0.1:7000-7001:70-71/udp", [("70/udp", "10.0.0.1", "7000"),
                                      ("71/udp", "10.0.0.1", "7001")]),
    ("published=8080,target=80", [("80/tcp", "", "8080")]),
    ("target=53,published=5353,protocol=udp,mode=host", [("53/udp", "", "5353")]),
])
def test_parse_port_spec(spec, expected):
    got = P.parse_port_spec(spec)
    assert [(key, b["HostIp"], b["HostPort"]) for key, b in got] == expected


@pytest.mark.parametrize("spec, message", [
    ("", "no port specified: <empty>"),
    ("8080:", "no port specified: 8080:<empty>"),
    ("abc", "invalid containerPort: abc"),
    ("8080:abc", "invalid containerPort: abc"),
    ("80000", "invalid containerPort: 80000"),
    ("0", "invalid containerPort: 0"),
    ("82-80", "invalid containerPort: 82-80"),
    ("1-2-3", "invalid containerPort: 1-2-3"),
    ("+80", "invalid containerPort: +80"),
    ("٨٠", "invalid containerPort: ٨٠"),
    ("abc:80", "invalid hostPort: abc"),
    ("70000:80", "invalid hostPort: 70000"),
    ("8000-8001:80-82", "invalid ranges specified for container and host Ports: 80-82 and 8000-8001"),
    ("8000:80-82", "invalid ranges specified for container and host Ports: 80-82 and 8000"),
    ("8080:80/xyz", "invalid proto: xyz"),
    ("1.2.3:80:80", "invalid IP address: 1.2.3"),
    ("localhost:80:80", "invalid IP address: localhost"),
    ("01.2.3.4:80:80", "invalid IP address: 01.2.3.4"),
    ("[::1]:80:80", "IPv6 host addresses are not supported by Dockyard: ::1"),
    ("::1:80:80", "IPv6 host addresses are not supported by Dockyard: ::1"),
    ("published=8080,target", "invalid publish opts format (should be name=value but got 'target')"),
    ("published=8080,=80", "invalid publish opts format (should be name=value but got '=80')"),
])
def test_parse_port_spec_errors(spec, message):
    with pytest.raises(UsageError) as e:
        P.parse_port_spec(spec)
    assert str(e.value).startswith(message)


def test_parse_publish_merges_like_docker():
    exposed, bindings = P.parse_publish(["8080:80", "127.0.0.1:9090:80", "443", "53:53/udp"])
    assert exposed == {"80/tcp": {}, "443/tcp": {}, "53/udp": {}}
    assert bindings == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "9090"}],
        "443/tcp": [{"HostIp": "", "HostPort": ""}],
        "53/udp": [{"HostIp": "", "HostPort": "53"}],
    }
    assert P.parse_publish([]) == ({}, {})


# --- --expose ---------------------------------------------------------------

def test_parse_expose():
    assert P.parse_expose(["80"]) == {"80/tcp": {}}
    assert P.parse_expose(["8080/udp"]) == {"8080/udp": {}}
    assert P.parse_expose(["8080-8080/udp"]) == {"8080/udp": {}}
    assert list(P.parse_expose(["8080-8082/tcp"])) == ["8080/tcp", "8081/tcp", "8082/tcp"]
    image = {"443/tcp": {}}
    merged = P.parse_expose(["80", "443"], image)
    assert merged == {"443/tcp": {}, "80/tcp": {}}
    assert image == {"443/tcp": {}}, "the image's config is not changed"


@pytest.mark.parametrize("value, message", [
    (":", "invalid port format for --expose: :"),
    ("8080:9090", "invalid port format for --expose: 8080:9090"),
    ("/tcp", "invalid range format for --expose: /tcp, error: empty string specified for ports"),
    ("NaN/tcp", 'invalid range format for --expose: NaN/tcp, error: strconv.ParseUint: '
                'parsing "NaN": invalid syntax'),
    ("8080-NaN/tcp", 'invalid range format for --expose: 8080-NaN/tcp, error: strconv.ParseUint: '
                     'parsing "NaN": invalid syntax'),
    ("1234567890-8080/tcp", 'invalid range format for --expose: 1234567890-8080/tcp, error: '
                            'strconv.ParseUint: parsing "1234567890": value out of range'),
    ("80000", 'invalid range format for --expose: 80000, error: strconv.ParseUint: '
              'parsing "80000": value out of range'),
    ("90-80", "invalid range format for --expose: 90-80, error: invalid range specified "
              "for port: 90-80"),
    ("80/ncp", "invalid proto: ncp"),
])
def test_parse_expose_errors(value, message):
    with pytest.raises(UsageError) as e:
        P.parse_expose([value])
    assert str(e.value) == message


def test_port_range_and_keys():
    assert P.parse_port_range("80") == (80, 80)
    assert P.parse_port_range("0") == (0, 0)
    assert P.parse_port_range("65535") == (65535, 65535)
    assert P.parse_port_range("8000-8010") == (8000, 8010)
    for bad in ("", "-", "80-", "-80", "65536", "a-b", "1-2-3", " 80"):
        with pytest.raises(ValueError):
            P.parse_port_range(bad)
    assert P.split_key("80/tcp") == (80, "tcp") and P.split_key("53/udp") == (53, "udp")
    assert P.port_key(80) == "80/tcp"
    assert Published("tcp", "0.0.0.0", 8080, 80).key == "80/tcp"
    assert Published("udp", "127.0.0.1", 5353, 53).forward("10.1.0.2") == \
        ("udp", "127.0.0.1", 5353, "10.1.0.2", 53)


def test_ephemeral_range_is_the_kernels():
    low, high = P.ephemeral_range()
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert (low, high) == tuple(int(w) for w in f.read().split())


# --- allocation (binds test sockets on 127.0.0.1 only) ------------------------

LO = "127.0.0.1"


def free_run(count: int, proto: str = "tcp") -> int:
    """The first port of ``count`` consecutive free ports on 127.0.0.1."""
    for start in range(40000, 60000, count + 1):
        try:
            for port in range(start, start + count):
                P.probe(proto, LO, port)
        except OSError:
            continue
        return start
    pytest.skip("no run of free ports on 127.0.0.1")


def hold(port: int, proto: str = "tcp") -> socket.socket:
    """Another program's socket on 127.0.0.1:port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    sock.bind((LO, port))
    if proto == "tcp":
        sock.listen()
    return sock


def test_allocate_fixed_ports():
    base = free_run(2)
    bindings = {"80/tcp": [{"HostIp": LO, "HostPort": str(base)}],
                "53/udp": [{"HostIp": "", "HostPort": str(base + 1)}]}
    got = P.allocate(bindings, {"80/tcp": {}, "53/udp": {}, "443/tcp": {}}, False,
                     default_host_ip=LO)
    assert got == [Published("udp", LO, base + 1, 53), Published("tcp", LO, base, 80)]


def test_allocate_publish_all_takes_ephemeral_ports_after_fixed_ones(monkeypatch):
    base = free_run(4)
    monkeypatch.setattr(P, "ephemeral_range", lambda: (base, base + 3))
    exposed = {"80/tcp": {}, "443/tcp": {}, "8080/tcp": {}}
    # 8080 asks for the first port of the range explicitly: -P must go around it.
    bindings = {"8080/tcp": [{"HostIp": "", "HostPort": str(base)}]}
    got = P.allocate(bindings, exposed, True, default_host_ip=LO)
    assert got == [Published("tcp", LO, base + 1, 80), Published("tcp", LO, base + 2, 443),
                   Published("tcp", LO, base, 8080)]
    # Without -P, only the bound port is published.
    assert P.allocate(bindings, exposed, False, default_host_ip=LO) == [
        Published("tcp", LO, base, 8080)]


def test_allocate_dynamic_port_zero_and_empty(monkeypatch):
    base = free_run(2)
    monkeypatch.setattr(P, "ephemeral_range", lambda: (base, base + 1))
    bindings = {"80/tcp": [{"HostIp": LO, "HostPort": "0"}],
                "81/tcp": [{"HostIp": LO, "HostPort": ""}]}
    got = P.allocate(bindings, {}, False)
    assert [p.host_port for p in got] == [base, base + 1]


def test_allocate_range_skips_ports_in_use():
    base = free_run(3)
    with hold(base):
        got = P.allocate({"80/tcp": [{"HostIp": LO, "HostPort": f"{base}-{base + 2}"}]}, {}, False)
        assert got == [Published("tcp", LO, base + 1, 80)]
        taken = [Published("tcp", LO, base + 1, 9)]
        got = P.allocate({"80/tcp": [{"HostIp": LO, "HostPort": f"{base}-{base + 2}"}]}, {},
                         False, in_use=taken)
        assert got == [Published("tcp", LO, base + 2, 80)]


def test_allocate_range_exhausted():
    base = free_run(2)
    with hold(base), hold(base + 1):
        with pytest.raises(Conflict) as e:
            P.allocate({"80/tcp": [{"HostIp": LO, "HostPort": f"{base}-{base + 1}"}]}, {}, False)
    assert str(e.value) == (f"failed to allocate a host port for 80/tcp on {LO} in "
                            f"{base}-{base + 1}: all ports are allocated")


def test_allocate_conflict_with_another_container():
    base = free_run(1)
    bindings = {"80/tcp": [{"HostIp": "", "HostPort": str(base)}]}
    with pytest.raises(Conflict) as e:
        P.allocate(bindings, {}, False, default_host_ip=LO,
                   in_use=[Published("tcp", LO, base, 8080)])
    assert str(e.value) == f"Bind for {LO}:{base} failed: port is already allocated"
    # 0.0.0.0 holds the port on every address.
    with pytest.raises(Conflict, match="port is already allocated"):
        P.allocate(bindings, {}, False, default_host_ip=LO,
                   in_use=[Published("tcp", "0.0.0.0", base, 8080)])
    # Another protocol or another port is no clash.
    assert P.allocate(bindings, {}, False, default_host_ip=LO,
                      in_use=[Published("udp", LO, base, 80), Published("tcp", LO, base + 1, 80)])


def test_allocate_twice_in_one_request():
    base = free_run(1)
    bindings = {"80/tcp": [{"HostIp": LO, "HostPort": str(base)}],
                "81/tcp": [{"HostIp": LO, "HostPort": str(base)}]}
    with pytest.raises(Conflict, match=f"Bind for {LO}:{base} failed: port is already allocated"):
        P.allocate(bindings, {}, False)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_allocate_conflict_with_another_program(proto):
    base = free_run(1, proto)
    with hold(base, proto):
        with pytest.raises(Conflict) as e:
            P.allocate({f"80/{proto}": [{"HostIp": LO, "HostPort": str(base)}]}, {}, False)
    assert str(e.value) == (f"Error starting userland proxy: listen {proto}4 {LO}:{base}: "
                            "bind: address already in use")


def test_allocate_refuses_what_cannot_work():
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is no address of this host: bind(2) says so.
    with pytest.raises(UsageError, match="listen tcp4 192.0.2.1:8080: bind: cannot assign "
                                         "requested address"):
        P.allocate({"80/tcp": [{"HostIp": "192.0.2.1", "HostPort": "8080"}]}, {}, False)
    with pytest.raises(UsageError, match="only tcp and udp"):
        P.allocate({"132/sctp": [{"HostIp": "", "HostPort": "9132"}]}, {}, False)
    with pytest.raises(UsageError, match="IPv6"):
        P.allocate({"80/tcp": [{"HostIp": "::1", "HostPort": "8080"}]}, {}, False)
    with pytest.raises(UsageError, match="invalid hostPort: 0-100"):
        P.allocate({"80/tcp": [{"HostIp": "", "HostPort": "0-100"}]}, {}, False)
    with pytest.raises(UsageError, match="invalid hostPort: 80a"):
        P.allocate({"80/tcp": [{"HostIp": "", "HostPort": "80a"}]}, {}, False)
    # An exposed sctp port is fine as long as nothing publishes it; -P passes over it.
    assert P.allocate({}, {"132/sctp": {}}, False) == []
    assert P.allocate({}, {"132/sctp": {}}, True) == []


# --- NetworkSettings.Ports, `port`, `ps` ---------------------------------------

PUBLISHED = [Published("tcp", "0.0.0.0", 8080, 80), Published("tcp", "127.0.0.1", 9090, 80),
             Published("udp", "0.0.0.0", 5353, 53)]
EXPOSED = {"80/tcp": {}, "443/tcp": {}, "53/udp": {}}


def test_network_ports_and_summaries():
    ports = P.network_ports(PUBLISHED, EXPOSED)
    assert ports == {
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                   {"HostIp": "127.0.0.1", "HostPort": "9090"}],
        "443/tcp": None,
    }
    assert list(ports) == ["443/tcp", "53/udp", "80/tcp"], "docker inspect's key order"
    assert P.summaries(ports) == [
        {"PrivatePort": 443, "Type": "tcp"},
        {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"},
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 9090, "Type": "tcp"},
    ]
    assert P.format_ps_ports(ports) == ("443/tcp, 0.0.0.0:5353->53/udp, 0.0.0.0:8080->80/tcp, "
                                        "127.0.0.1:9090->80/tcp")
    assert P.format_ps_ports({}) == "" and P.format_ps_ports(None) == ""


def test_ps_ports_ranges():
    exposed, bindings = P.parse_publish(["8000-8002:8000-8002", "8000-8002:80-82"])
    same = [Published("tcp", "0.0.0.0", p, p) for p in (8000, 8001, 8002)]
    moved = [Published("tcp", "0.0.0.0", 8000 + i, 80 + i) for i in range(3)]
    assert P.format_ps_ports(P.network_ports(same, {})) == "0.0.0.0:8000-8002->8000-8002/tcp"
    # docker groups only where host and container ports are equal.
    assert P.format_ps_ports(P.network_ports(moved, {})) == (
        "0.0.0.0:8000->80/tcp, 0.0.0.0:8001->81/tcp, 0.0.0.0:8002->82/tcp")
    # A group closed by a gap is written at once, the open ones at the end:
    # docker's order, quirk included.
    assert P.format_ps_ports(P.parse_expose(["7000-7003", "7005", "53/udp"])) == (
        "7000-7003/tcp, 53/udp, 7005/tcp")


def S(private, kind, ip="", public=0):
    item = {"PrivatePort": private, "Type": kind}
    if ip:
        item["IP"] = ip
    if public:
        item["PublicPort"] = public
    return item


# The docker CLI's own table for DisplayablePorts (cli/command/formatter).
@pytest.mark.parametrize("items, expected", [
    ([S(9988, "tcp")], "9988/tcp"),
    ([S(9988, "udp")], "9988/udp"),
    ([S(9988, "tcp", "0.0.0.0")], "0.0.0.0:0->9988/tcp"),
    ([S(9988, "tcp", public=8899)], "9988/tcp"),
    ([S(9988, "tcp", "4.3.2.1", 8899)], "4.3.2.1:8899->9988/tcp"),
    ([S(9988, "tcp", "4.3.2.1", 9988)], "4.3.2.1:9988->9988/tcp"),
    ([S(9988, "udp"), S(9988, "udp")], "9988/udp, 9988/udp"),
    ([S(9998, "udp", "1.2.3.4", 9998), S(9999, "udp", "1.2.3.4", 9999)],
     "1.2.3.4:9998-9999->9998-9999/udp"),
    ([S(9998, "udp", "1.2.3.4", 8887), S(9999, "udp", "1.2.3.4", 8888)],
     "1.2.3.4:8887->9998/udp, 1.2.3.4:8888->9999/udp"),
    ([S(9998, "udp"), S(9999, "udp")], "9998-9999/udp"),
    ([S(6677, "tcp", "1.2.3.4", 7766), S(9988, "udp", public=8899)],
     "9988/udp, 1.2.3.4:7766->6677/tcp"),
    ([S(9988, "udp", "1.2.3.4", 8899), S(9988, "tcp", "1.2.3.4", 8899),
      S(2233, "tcp", "4.3.2.1", 3322)],
     "4.3.2.1:3322->2233/tcp, 1.2.3.4:8899->9988/tcp, 1.2.3.4:8899->9988/udp"),
    ([S(9988, "udp", public=8899), S(6677, "tcp", "1.2.3.4", 7766),
      S(2233, "tcp", "4.3.2.1", 3322)],
     "9988/udp, 4.3.2.1:3322->2233/tcp, 1.2.3.4:7766->6677/tcp"),
    ([S(80, "tcp"), S(1024, "tcp"), S(80, "udp"), S(1024, "udp"),
      S(1024, "tcp", "1.1.1.1", 80), S(1024, "udp", "1.1.1.1", 80),
      S(80, "tcp", "1.1.1.1", 1024), S(80, "udp", "1.1.1.1", 1024),
      S(1024, "tcp", "2.1.1.1", 80), S(1024, "udp", "2.1.1.1", 80),
      S(80, "tcp", "2.1.1.1", 1024), S(80, "udp", "2.1.1.1", 1024), S(12345, "sctp")],
     "80/tcp, 80/udp, 1024/tcp, 1024/udp, 12345/sctp, 1.1.1.1:1024->80/tcp, "
     "1.1.1.1:1024->80/udp, 2.1.1.1:1024->80/tcp, 2.1.1.1:1024->80/udp, 1.1.1.1:80->1024/tcp, "
     "1.1.1.1:80->1024/udp, 2.1.1.1:80->1024/tcp, 2.1.1.1:80->1024/udp"),
    # Addresses sort as numbers, not text.
    ([S(80, "tcp", "10.0.0.1", 81), S(80, "tcp", "9.0.0.1", 81)],
     "9.0.0.1:81->80/tcp, 10.0.0.1:81->80/tcp"),
])
def test_display_ports_as_docker(items, expected):
    assert P.display_ports(items) == expected


def test_port_lines():
    ports = P.network_ports(PUBLISHED + [Published("tcp", "0.0.0.0", 10000, 9),
                                         Published("tcp", "0.0.0.0", 9999, 10)], EXPOSED)
    assert P.format_port_lines(ports) == [
        "9/tcp -> 0.0.0.0:10000",
        "10/tcp -> 0.0.0.0:9999",
        "53/udp -> 0.0.0.0:5353",
        "80/tcp -> 0.0.0.0:8080",
        "80/tcp -> 127.0.0.1:9090",
    ]
    assert P.format_port_lines(ports, "80") == ["0.0.0.0:8080", "127.0.0.1:9090"]
    assert P.format_port_lines(ports, "80/tcp") == ["0.0.0.0:8080", "127.0.0.1:9090"]
    assert P.format_port_lines(ports, "53/udp") == ["0.0.0.0:5353"]
    assert P.format_port_lines({}) == [] and P.format_port_lines({"80/tcp": None}) == []


@pytest.mark.parametrize("private, error, message", [
    ("53", NotFound, "No public port '53' published for web"),
    ("443", NotFound, "No public port '443' published for web"),
    ("81/tcp", NotFound, "No public port '81/tcp' published for web"),
    ("abc", UsageError, 'invalid port (abc): strconv.ParseUint: parsing "abc": invalid syntax'),
    ("70000/udp", UsageError,
     'invalid port (70000): strconv.ParseUint: parsing "70000": value out of range'),
])
def test_port_lines_errors(private, error, message):
    ports = P.network_ports(PUBLISHED, EXPOSED)
    with pytest.raises(error) as e:
        P.format_port_lines(ports, private, "web")
    assert str(e.value) == message

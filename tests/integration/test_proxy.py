"""The userland proxy with real traffic: host loopback -> proxy -> a network namespace.

Each test makes its own "container": a process that unshares a network
namespace (unshare(2) through ctypes) and runs a TCP and a UDP echo server
there, reached from the host over a veth pair made with pyroute2 (a /30 of
10.213.0.0/16 that no host address overlaps). Traffic goes only to 127.0.0.x
and into that namespace; nothing is NATed or forwarded. The namespace, both
veth ends and every process are gone when a test ends.
"""

import hashlib
import ipaddress
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from engine.errors import Conflict, UsageError
from engine.network import proxy

pytestmark = pytest.mark.root

ECHO_PORT = 7        # echo, RFC 862
CLOSED_PORT = 9      # nothing listens there

# The "container": unshare a netns, wait for the veth, configure it, serve.
CONTAINER = r'''
import ctypes, os, socket, sys, threading
CLONE_NEWNET = 0x40000000                       # <sched.h>
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(CLONE_NEWNET) != 0:
    sys.exit("unshare(CLONE_NEWNET): " + os.strerror(ctypes.get_errno()))
print("unshared", flush=True)
ifname, address = sys.stdin.readline().split()
from pyroute2 import IPRoute
with IPRoute() as ipr:
    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    index = ipr.link_lookup(ifname=ifname)[0]
    ipr.addr("add", index=index, address=address, prefixlen=30)
    ipr.link("set", index=index, state="up")

tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 7))
tcp.listen(1024)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", 7))

def echo(conn):
    # Echo until the client's FIN, then send ours: half-close aware.
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

def serve_tcp():
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()

def serve_udp():
    # The reply names the source port the server saw: one per proxy flow.
    while True:
        data, peer = udp.recvfrom(65535)
        udp.sendto(str(peer[1]).encode() + b" " + data, peer)

threading.Thread(target=serve_tcp, daemon=True).start()
threading.Thread(target=serve_udp, daemon=True).start()
print("serving", flush=True)
sys.stdin.read()            # until the test closes our stdin (or kills us)
'''


@dataclass
class Container:
    pid: int
    ip: str
    process: subprocess.Popen

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _free_subnet(ipr) -> ipaddress.IPv4Network:
    used = [ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}").network
            for a in ipr.get_addr(family=socket.AF_INET)]
    block = ipaddress.ip_network("10.213.0.0/16")
    for _ in range(100):
        subnet = list(block.subnets(new_prefix=30))[random.randrange(1, 16384)]
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    pytest.skip("no free /30 in 10.213.0.0/16")


@pytest.fixture
def container():
    pyroute2 = pytest.importorskip("pyroute2")
    name = "dyp" + secrets.token_hex(4)          # veth names are at most 15 bytes
    peer = name + "c"
    process = subprocess.Popen([sys.executable, "-c", CONTAINER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    box = Container(process.pid, "", process)
    try:
        if process.stdout.readline().strip() != "unshared":
            pytest.skip("cannot unshare a network namespace here")
        with pyroute2.IPRoute() as ipr:
            subnet = _free_subnet(ipr)
            host_ip, box.ip = (str(h) for h in subnet.hosts())
            ipr.link("add", ifname=name, kind="veth", peer=peer)
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], net_ns_pid=process.pid)
            index = ipr.link_lookup(ifname=name)[0]
            ipr.addr("add", index=index, address=host_ip, prefixlen=30)
            ipr.link("set", index=index, state="up")
        process.stdin.write(f"{peer} {box.ip}/30\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "serving"
        yield box
    finally:
        box.kill()
        with pyroute2.IPRoute() as ipr:
            # The namespace took its end with it; ours goes with the pair.
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)
            assert not ipr.link_lookup(ifname=name)


@pytest.fixture
def proxies():
    """Every proxy a test starts is stopped (and reaped) after it."""
    started = []
    yield started
    for proc in started:
        proxy.stop(proc)


def free_port(proto: str = "tcp", ip: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET,
                       socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def publish(proxies, box: Container, *maps, **kw) -> subprocess.Popen:
    proc = proxy.start(box.pid, maps, **kw)
    proxies.append(proc)
    return proc


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_tcp_echo_and_half_close(container, proxies):
    port = free_port()
    publish(proxies, container, ("tcp", "127.0.0.1", port, container.ip, ECHO_PORT))
    # Interactive: several round trips on one connection.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        for word in (b"ping", b"pong", b"x" * 1000):
            c.sendall(word)
            got = b""
            while len(got) < len(word):
                got += c.recv(4096)
            assert got == word
    # Half-close: our FIN reaches the server, which answers in full, then its FIN reaches us.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"hello, container")
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b"hello, container"


def test_tcp_data_integrity(container, proxies):
    port = free_port()
    publish(proxies, container, ("tcp", "127.0.0.1", port, container.ip, ECHO_PORT))
    data = os.urandom(8 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        def send():
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        sender = threading.Thread(target=send)
        sender.start()
        got = recv_all(c)
        sender.join()
    assert len(got) == len(data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_many_concurrent_connections(container, proxies):
    port = free_port()
    publish(proxies, container, ("tcp", "127.0.0.1", port, container.ip, ECHO_PORT))
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    try:
        for i, c in enumerate(clients):        # all 300 are open at the same time
            c.sendall(b"client %d " % i * 50)
            c.shutdown(socket.SHUT_WR)
        for i, c in enumerate(clients):
            assert recv_all(c) == b"client %d " % i * 50
    finally:
        for c in clients:
            c.close()


def test_udp_echo_and_flows(container, proxies):
    port = free_port("udp")
    publish(proxies, container, ("udp", "127.0.0.1", port, container.ip, ECHO_PORT))
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a, b:
        for s in (a, b):
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
        a.send(b"one")
        seen_a, data = a.recv(100).split(b" ", 1)
        assert data == b"one"
        a.send(b"two")
        assert a.recv(100) == seen_a + b" two", "one client, one flow"
        b.send(b"three")
        seen_b, data = b.recv(100).split(b" ", 1)
        assert data == b"three" and seen_b != seen_a, "each client its own flow"
        big = os.urandom(60000)
        a.send(big)
        assert a.recv(65535) == seen_a + b" " + big


def _sockets(pid: int) -> int:
    return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
               for fd in os.listdir(f"/proc/{pid}/fd"))


def test_udp_flows_expire(container, proxies):
    port = free_port("udp")
    proc = publish(proxies, container, ("udp", "127.0.0.1", port, container.ip, ECHO_PORT),
                   udp_timeout=0.3)
    idle = _sockets(proc.pid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        c.connect(("127.0.0.1", port))
        c.send(b"x")
        c.recv(100)
        assert _sockets(proc.pid) == idle + 1
        deadline = time.monotonic() + 5
        while _sockets(proc.pid) > idle and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sockets(proc.pid) == idle, "the idle flow was dropped"
        c.send(b"again")
        assert c.recv(100).endswith(b" again"), "a new flow after the old one expired"


def test_udp_on_every_address_answers_from_the_address_written_to(container, proxies):
    """Bound on 0.0.0.0, the reply to a datagram sent to 127.0.0.2 must come from
    127.0.0.2 (IP_PKTINFO), or a connected client socket would drop it."""
    port = free_port("udp", "0.0.0.0")
    publish(proxies, container, ("udp", "0.0.0.0", port, container.ip, ECHO_PORT))
    for address in ("127.0.0.1", "127.0.0.2"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.connect((address, port))
            c.send(b"hi")
            assert c.recv(100).endswith(b" hi")


def test_ports_stop_answering_when_the_container_exits(container, proxies):
    tcp, udp = free_port(), free_port("udp")
    proc = publish(proxies, container, ("tcp", "127.0.0.1", tcp, container.ip, ECHO_PORT),
                   ("udp", "127.0.0.1", udp, container.ip, ECHO_PORT))
    with socket.create_connection(("127.0.0.1", tcp), timeout=5) as c:
        c.sendall(b"alive")
        assert c.recv(100) == b"alive"
    container.kill()
    assert proc.wait(timeout=5) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", tcp), timeout=5)
    # The UDP port is free again: anyone may bind it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", udp))


def test_stop(container, proxies):
    port = free_port()
    proc = publish(proxies, container, ("tcp", "127.0.0.1", port, container.ip, ECHO_PORT))
    assert open(f"/proc/{proc.pid}/comm").read().strip() == "dockyard-proxy"
    assert os.getsid(proc.pid) == proc.pid, "its own session: no terminal signal reaches it"
    proxy.stop(proc)
    assert proc.returncode == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    # By pid (as after an engine restart): signalled through a pidfd.
    proc = publish(proxies, container, ("tcp", "127.0.0.1", port, container.ip, ECHO_PORT))
    proxy.stop(proc.pid)
    assert proc.wait(timeout=5) in (0, -signal.SIGTERM)
    # A pid that is no proxy is left alone.
    other = subprocess.Popen(["sleep", "30"])
    try:
        proxy.stop(other.pid)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_module_entry_point(container):
    """``python -m engine.network.proxy`` is the same program, with the ready fd."""
    port = free_port()
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.network.proxy", "--pid", str(container.pid),
         "--map", f"tcp:127.0.0.1:{port}:{container.ip}:{ECHO_PORT}",
         f"--ready-fd={write_end}"], pass_fds=(write_end,))
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as ready:
            assert ready.read() == b"ok\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"m")
            assert c.recv(10) == b"m"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proxy.stop(proc)


def test_bind_conflict_is_reported_and_nothing_stays_bound(container, proxies):
    first, taken = free_port(), free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        with pytest.raises(Conflict) as e:
            publish(proxies, container, ("tcp", "127.0.0.1", first, container.ip, ECHO_PORT),
                    ("tcp", "127.0.0.1", taken, container.ip, ECHO_PORT))
    assert str(e.value) == (f"Error starting userland proxy: listen tcp4 127.0.0.1:{taken}: "
                            "bind: address already in use")
    assert proxies == []
    with socket.socket() as s:              # the first port was let go with the proxy
        s.bind(("127.0.0.1", first))


def test_errors_at_start(container, proxies):
    # Not an address of this host (TEST-NET-1, RFC 5737): bind fails, nothing is sent.
    with pytest.raises(UsageError, match="listen tcp4 192.0.2.1:8080: bind: cannot assign "
                                         "requested address"):
        publish(proxies, container, ("tcp", "192.0.2.1", 8080, container.ip, ECHO_PORT))
    gone = subprocess.Popen(["true"])
    gone.wait()
    # A process that is gone already: ProcessLookupError (ESRCH), which the engine takes
    # as "it exited before its ports were published" (engine/network/sandbox.py publish).
    with pytest.raises(ProcessLookupError, match=f"container process {gone.pid} is not running"):
        proxy.start(gone.pid, [("tcp", "127.0.0.1", free_port(), container.ip, ECHO_PORT)])


def test_nothing_listening_in_the_container(container, proxies):
    """A refused connection to the container closes that client only."""
    port, echo = free_port(), free_port()
    proc = publish(proxies, container, ("tcp", "127.0.0.1", port, container.ip, CLOSED_PORT),
                   ("tcp", "127.0.0.1", echo, container.ip, ECHO_PORT))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        try:
            assert c.recv(10) == b""
        except ConnectionResetError:
            pass
    assert proc.poll() is None
    with socket.create_connection(("127.0.0.1", echo), timeout=5) as c:
        c.sendall(b"still here")
        assert c.recv(100) == b"still here"

"""The userland proxy: a container's published ports, forwarded by a small process.

Dockyard never NATs (no netfilter rules, no ip_forward), so a published port
is what docker's ``docker-proxy`` is: a socket on the host that copies bytes
to the container's address. One proxy process serves every published port of
one container::

    python -m engine.network.proxy --pid PID \\
        --map tcp:0.0.0.0:8080:10.88.0.2:80 [--map udp:127.0.0.1:5353:10.88.0.2:53 ...] \\
        [--ready-fd N] [--udp-timeout SECONDS] [--container ID]

Lifecycle of the process:

    started -> binds every listener -> "ok\\n" on the ready fd -> forwarding
            -> exits when process PID exits (pidfd_open(2)), or on SIGTERM
    started -> a bind fails -> "error ERRNO TEXT\\n" on the ready fd -> exit 1

so the launcher knows the ports are bound (or why not) before the container
runs, and the ports stop answering the moment the container's process is gone.

Forwarding is one ``selectors`` loop (epoll), no thread per connection:

- TCP: each accepted client gets a non-blocking connection to the container;
  bytes flow both ways through one shared buffer, and only what a peer cannot
  take at once is kept (and reading from the other side paused meanwhile).
  A half-close is forwarded as shutdown(SHUT_WR), so ``nc -N``-style clients
  get their whole answer; the pair closes once both directions have ended.
- UDP: a flow table keyed by the client's address; each client gets its own
  socket connected to the container (so replies find their way back), dropped
  after ``--udp-timeout`` seconds of silence (90, docker-proxy's
  UDPConnTrackTimeout). On 0.0.0.0 the reply leaves from the address the
  client wrote to (IP_PKTINFO, ip(7)), as docker-proxy does.

The process imports only the standard library and is started by file path
with ``python -I -S`` (see :func:`start`), so starting it costs an interpreter
and a few modules, not the engine. :func:`start` and :func:`stop` are the
engine's side; they are never called in the proxy process.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import struct
import sys
import time

NAME = b"dockyard-proxy"        # the process's comm (ps, top); also what stop() checks
BUFSIZE = 256 * 1024            # one buffer shared by every TCP stream
UDP_MAX = 65535
UDP_TIMEOUT = 90.0              # docker-proxy's UDPConnTrackTimeout
IP_PKTINFO = 8                  # <linux/in.h>; the socket module does not export it
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE

_buffer = bytearray(BUFSIZE)
_view = memoryview(_buffer)


def listen_error(proto: str, ip: str, port: int, error: OSError, call: str = "bind") -> str:
    """docker's wording for a port the proxy cannot take, e.g.
    ``Error starting userland proxy: listen tcp4 0.0.0.0:80: bind: address already in use``
    (Go's error strings are strerror(3) in lower case)."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    reason = reason[:1].lower() + reason[1:]
    return f"Error starting userland proxy: listen {proto}4 {ip}:{port}: {call}: {reason}"


def _log(message: str) -> None:
    try:
        sys.stderr.write(f"dockyard-proxy[{os.getpid()}]: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


class Proxy:
    """The event loop: listeners, connections, UDP flows and the watched pid."""

    def __init__(self, udp_timeout: float = UDP_TIMEOUT):
        self.selector = selectors.DefaultSelector()
        self.udp_timeout = udp_timeout
        self.udp = []           # UDPForward listeners, for the idle sweep
        self.sweep_every = min(1.0, udp_timeout / 2)
        self.running = True

    def watch(self, pid: int) -> None:
        """Stop when process ``pid`` exits: a pidfd turns readable then (pidfd_open(2))."""
        fd = os.pidfd_open(pid)
        self.selector.register(fd, READ, self._watched_exit)

    def _watched_exit(self, mask: int) -> None:
        self.running = False

    def run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_every
        while self.running:
            timeout = None
            if any(f.flows for f in self.udp):
                timeout = max(0.0, next_sweep - time.monotonic())
            for key, mask in self.selector.select(timeout):
                key.data(mask)
                if not self.running:
                    return
            now = time.monotonic()
            if self.udp and now >= next_sweep:
                for forward in self.udp:
                    forward.expire(now)
                next_sweep = now + self.sweep_every


def _bind(proto: str, ip: str, port: int) -> socket.socket:
    """A listening socket, or OSError with ``.call`` naming the syscall that failed."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    call = "bind"
    try:
        if proto == "tcp":
            # Like Go's net.Listen: a port whose old connections linger in
            # TIME_WAIT can be listened on again at once. Not for UDP, where
            # SO_REUSEADDR would let two sockets share the port (socket(7)).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        elif ip == "0.0.0.0":
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind((ip, port))
        if proto == "tcp":
            call = "listen"
            sock.listen(4096)       # capped by net.core.somaxconn (listen(2))
        sock.setblocking(False)
        return sock
    except OSError as e:
        sock.close()
        e.call = call
        raise


# --- TCP -------------------------------------------------------------------

class TCPForward:
    """A TCP listener: each accepted client is paired with a connection to the target."""

    def __init__(self, proxy: Proxy, sock: socket.socket, target: tuple[str, int]):
        self.proxy = proxy
        self.sock = sock
        self.target = target
        proxy.selector.register(sock, READ, self.accept)

    def accept(self, mask: int) -> None:
        for _ in range(64):             # drain the backlog, a bounded amount per turn
            try:
                client, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:        # EMFILE, ENOBUFS...: try again next turn
                _log(f"accept: {e}")
                return
            Connection(self.proxy, client, self.target)


class Stream:
    """One direction of a connection: bytes read from ``src`` are written to ``dst``."""

    __slots__ = ("src", "dst", "pending", "eof", "done")

    def __init__(self, src: socket.socket, dst: socket.socket):
        self.src, self.dst = src, dst
        self.pending = None     # memoryview of bytes dst did not take yet
        self.eof = False        # src sent FIN
        self.done = False       # ...and it was passed on to dst


class Connection:
    """A client and its connection to the container.

    connecting (only the upstream socket watched, for writability) ->
    open (each socket watched for what its two streams need) ->
    closed (both streams done, or an error on either side).
    """

    __slots__ = ("proxy", "client", "upstream", "up", "down", "masks", "target", "closed")

    def __init__(self, proxy: Proxy, client: socket.socket, target: tuple[str, int]):
        self.proxy = proxy
        self.client = client
        self.target = target
        self.masks = {}
        self.closed = False
        client.setblocking(False)
        upstream = self.upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        # Go sets TCP_NODELAY on every connection, so docker-proxy does too:
        # small writes of interactive protocols are not held back.
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.up = Stream(client, upstream)
        self.down = Stream(upstream, client)
        err = upstream.connect_ex(target)
        if err not in (0, errno.EINPROGRESS):   # a non-blocking connect(2) is under way
            self._fail(err)
            return
        proxy.selector.register(upstream, WRITE, self._connected)
        self.masks[upstream] = WRITE

    def _fail(self, err: int) -> None:
        _log(f"cannot reach {self.target[0]}:{self.target[1]}: {os.strerror(err)}")
        self.close()

    def _connected(self, mask: int) -> None:
        if self.closed:
            return
        err = self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(err)
            return
        self.proxy.selector.modify(self.upstream, READ, self._upstream_event)
        self.masks[self.upstream] = READ
        self.refresh()

    def _client_event(self, mask: int) -> None:
        self._event(mask, self.down, self.up)

    def _upstream_event(self, mask: int) -> None:
        self._event(mask, self.up, self.down)

    def _event(self, mask: int, writing: Stream, reading: Stream) -> None:
        # An event of this turn may name a connection an earlier event closed.
        if self.closed:
            return
        if mask & WRITE and not self._flush(writing):
            return
        if mask & READ and not self._pump(reading):
            return
        self.refresh()

    def _pump(self, stream: Stream) -> bool:
        """Move what ``src`` has to ``dst``; False once the connection is closed."""
        for _ in range(8):
            try:
                n = stream.src.recv_into(_buffer)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self.close()
                return False
            if n == 0:
                stream.eof = True
                return self._finish(stream)
            try:
                sent = stream.dst.send(_view[:n])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close()
                return False
            if sent < n:
                # Keep only the rest (the buffer is shared) and stop reading
                # until dst has taken it: back-pressure instead of memory.
                stream.pending = memoryview(bytes(_view[sent:n]))
                return True
            if n < BUFSIZE:
                return True
        return True

    def _flush(self, stream: Stream) -> bool:
        try:
            sent = stream.dst.send(stream.pending)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self.close()
            return False
        stream.pending = stream.pending[sent:] if sent < len(stream.pending) else None
        if stream.pending is None and stream.eof:
            return self._finish(stream)
        return True

    def _finish(self, stream: Stream) -> bool:
        """src ended: pass the half-close on once dst has everything."""
        if stream.pending is not None:
            return True
        try:
            stream.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        stream.done = True
        if self.up.done and self.down.done:
            self.close()
            return False
        return True

    def refresh(self) -> None:
        """Watch each socket for what its two streams need now (nothing: unwatched)."""
        selector = self.proxy.selector
        for sock, reading, writing, handler in (
                (self.client, self.up, self.down, self._client_event),
                (self.upstream, self.down, self.up, self._upstream_event)):
            mask = 0
            if reading.pending is None and not reading.eof:
                mask |= READ
            if writing.pending is not None:
                mask |= WRITE
            old = self.masks.get(sock, 0)
            if mask == old:
                continue
            if not mask:
                selector.unregister(sock)
                del self.masks[sock]
            elif not old:
                selector.register(sock, mask, handler)
                self.masks[sock] = mask
            else:
                selector.modify(sock, mask, handler)
                self.masks[sock] = mask

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.upstream):
            if self.masks.pop(sock, 0):
                self.proxy.selector.unregister(sock)
            sock.close()


# --- UDP -------------------------------------------------------------------

class Flow:
    """One UDP client: its own socket connected to the target, and when it was last heard."""

    __slots__ = ("forward", "client", "sock", "local", "seen")

    def __init__(self, forward: "UDPForward", client: tuple, local: bytes | None):
        self.forward = forward
        self.client = client
        self.local = local      # the address the client wrote to (IP_PKTINFO), or None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(forward.target)
        self.seen = time.monotonic()
        forward.proxy.selector.register(self.sock, READ, self.reply)

    def reply(self, mask: int) -> None:
        for _ in range(64):
            try:
                data = self.sock.recv(UDP_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:             # ICMP port unreachable reported late: drop
                return
            self.seen = time.monotonic()
            self.forward.send_back(data, self.client, self.local)

    def close(self) -> None:
        self.forward.proxy.selector.unregister(self.sock)
        self.sock.close()


class UDPForward:
    """A UDP listener with its flow table."""

    def __init__(self, proxy: Proxy, sock: socket.socket, target: tuple[str, int],
                 wildcard: bool):
        self.proxy = proxy
        self.sock = sock
        self.target = target
        self.wildcard = wildcard
        self.flows: dict[tuple, Flow] = {}
        proxy.selector.register(sock, READ, self.receive)
        proxy.udp.append(self)

    def receive(self, mask: int) -> None:
        for _ in range(64):
            local = None
            try:
                if self.wildcard:
                    data, ancillary, _, client = self.sock.recvmsg(
                        UDP_MAX, socket.CMSG_SPACE(12))
                    for level, kind, value in ancillary:
                        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                            # struct in_pktinfo {int ifindex; in_addr spec_dst; in_addr addr}
                            local = value[8:12]
                else:
                    data, client = self.sock.recvfrom(UDP_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            flow = self.flows.get(client)
            if flow is None:
                try:
                    flow = self.flows[client] = Flow(self, client, local)
                except OSError as e:
                    _log(f"udp flow for {client[0]}:{client[1]}: {e}")
                    continue
            flow.seen = time.monotonic()
            try:
                flow.sock.send(data)
            except OSError:
                pass                    # a lost datagram is UDP's normal failure

    def send_back(self, data: bytes, client: tuple, local: bytes | None) -> None:
        try:
            if local is not None:
                info = struct.pack("=i4s4s", 0, local, bytes(4))
                self.sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, client)
            else:
                self.sock.sendto(data, client)
        except OSError:
            pass

    def expire(self, now: float) -> None:
        for client in [c for c, f in self.flows.items() if now - f.seen > self.proxy.udp_timeout]:
            self.flows.pop(client).close()


# --- the process ------------------------------------------------------------

def parse_mapping(text: str) -> tuple[str, str, int, str, int]:
    """``tcp:0.0.0.0:8080:10.88.0.2:80`` -> ("tcp", "0.0.0.0", 8080, "10.88.0.2", 80)."""
    parts = text.split(":")
    if len(parts) != 5 or parts[0] not in ("tcp", "udp"):
        raise ValueError(f"invalid --map {text!r}: want tcp|udp:HOSTIP:HOSTPORT:CONTAINERIP:PORT")
    proto, host_ip, host_port, container_ip, container_port = parts
    try:
        return proto, host_ip, int(host_port), container_ip, int(container_port)
    except ValueError:
        raise ValueError(f"invalid --map {text!r}: ports are numbers") from None


def _parse_args(argv: list[str]) -> dict:
    """--pid N, --map M (repeated), --ready-fd N, --udp-timeout S, --container ID (only
    shown, so that ``ps`` tells whose proxy it is); also --flag=value.

    By hand rather than argparse, which would be a third of the start-up time.
    """
    options = {"pid": None, "map": [], "ready-fd": None, "udp-timeout": UDP_TIMEOUT,
               "container": None}
    words = list(argv)
    while words:
        word = words.pop(0)
        name, eq, value = word.partition("=")
        if not name.startswith("--") or name[2:] not in options:
            raise ValueError(f"unknown argument {word!r}")
        if not eq:
            if not words:
                raise ValueError(f"{name} needs a value")
            value = words.pop(0)
        name = name[2:]
        if name == "map":
            options["map"].append(parse_mapping(value))
        elif name == "udp-timeout":
            options[name] = float(value)
        elif name == "container":
            options[name] = value
        else:
            options[name] = int(value)
    if options["pid"] is None or not options["map"]:
        raise ValueError("usage: proxy --pid PID --map PROTO:HOSTIP:HOSTPORT:CONTAINERIP:PORT "
                         "[--map ...] [--ready-fd N] [--udp-timeout SECONDS]")
    return options


def _report(fd: int | None, line: str) -> None:
    """The one line the launcher waits for; stderr when nobody waits."""
    if fd is None:
        if line != "ok":
            _log(line)
        return
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def _raise_exit(signum, frame):
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    try:
        with open("/proc/self/comm", "wb") as f:
            f.write(NAME)
    except OSError:
        pass
    # Hold no directory (a container's root may be unmounted under us).
    os.chdir("/")
    try:
        options = _parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        _log(str(e))
        return 2
    ready = options["ready-fd"]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _raise_exit)
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            # Two descriptors per TCP connection: the default 1024 is ~500 clients.
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):
        pass

    proxy = Proxy(options["udp-timeout"])
    try:
        proxy.watch(options["pid"])
    except OSError as e:
        _report(ready, f"error {e.errno or 0} container process {options['pid']} is not running")
        return 1
    for proto, host_ip, host_port, container_ip, container_port in options["map"]:
        try:
            sock = _bind(proto, host_ip, host_port)
        except OSError as e:
            _report(ready, f"error {e.errno or 0} "
                           + listen_error(proto, host_ip, host_port, e, getattr(e, "call", "bind")))
            return 1
        target = (container_ip, container_port)
        if proto == "tcp":
            TCPForward(proxy, sock, target)
        else:
            UDPForward(proxy, sock, target, wildcard=host_ip == "0.0.0.0")
    _report(ready, "ok")
    try:
        proxy.run()
    except SystemExit:
        pass
    return 0


# --- the engine's side: start and stop a proxy -----------------------------

def _script_argv() -> list[str]:
    # -I -S: no site-packages, no environment, no user site: the proxy needs
    # only the standard library, and run by path it does not import the
    # engine package either. That is most of its start-up time saved.
    return [sys.executable, "-I", "-S", os.path.abspath(__file__)]


def start(pid: int, mappings, *, timeout: float = 10.0, log=None,
          udp_timeout: float | None = None, container: str | None = None):
    """Start a proxy forwarding ``mappings`` for as long as process ``pid`` lives.

    ``mappings`` are (proto, host_ip, host_port, container_ip, container_port)
    tuples (``ports.Published.forward(ip)`` gives them). Returns the
    ``subprocess.Popen`` once every port is bound; the caller reaps it
    (:func:`stop`, or ``wait()`` after the container exited). The proxy runs
    in its own session, so a terminal's Ctrl-C does not reach it. ``log`` is a
    file object for its stderr (default: discarded). ``container``: the container's ID,
    put on the command line only to be seen there.

    Raises Conflict when a port is taken, UsageError when the host address is
    not one of this host's, EngineError for anything else, all with docker's
    wording; ProcessLookupError when process ``pid`` is gone already.
    """
    import select
    import subprocess

    from ..errors import Conflict, EngineError, UsageError

    argv = _script_argv() + ["--pid", str(pid)]
    if container:
        argv += ["--container", container]   # whose proxy it is, for ps and leak checks
    for proto, host_ip, host_port, container_ip, container_port in mappings:
        argv += ["--map", f"{proto}:{host_ip}:{host_port}:{container_ip}:{container_port}"]
    if udp_timeout is not None:
        argv += ["--udp-timeout", str(udp_timeout)]
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(argv + ["--ready-fd", str(write_end)], pass_fds=(write_end,),
                                start_new_session=True, cwd="/", stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL)
    finally:
        os.close(write_end)
    try:
        line = b""
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(read_end, select.POLLIN)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                stop(proc)
                raise EngineError(f"the port proxy did not start within {timeout:g}s")
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            line += chunk
    finally:
        os.close(read_end)
    text = line.decode(errors="replace").strip()
    if text == "ok":
        return proc
    status = proc.wait()
    if not text.startswith("error "):
        raise EngineError(f"the port proxy exited before binding its ports (status {status})")
    _, code, message = text.split(" ", 2)
    code = int(code) if code.isdigit() else 0
    if code == errno.ESRCH:  # pidfd_open(2): the process to watch has exited already
        raise ProcessLookupError(code, message)
    if code == errno.EADDRINUSE:
        raise Conflict(message)
    if code in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EACCES):
        # Not this host's address, or a privileged port without the right:
        # the request itself cannot work here.
        raise UsageError(message)
    raise EngineError(message)


def stop(proc_or_pid, timeout: float = 5.0) -> None:
    """Stop a proxy: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Takes the ``Popen`` from :func:`start` (then the process is reaped too),
    or a pid, e.g. read back from the container's state after the engine
    restarted: that process is only signalled if it is a Dockyard proxy, and
    through a pidfd, so a recycled pid is never hit (pidfd_send_signal(2)).
    """
    import subprocess

    if isinstance(proc_or_pid, subprocess.Popen):
        proc = proc_or_pid
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    pid = int(proc_or_pid)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                if f.read().strip() != NAME:
                    return
        except OSError:
            return
        import select
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(fd, signum)
            except ProcessLookupError:
                break
            if select.select([fd], [], [], timeout)[0]:
                break
        try:
            os.waitpid(pid, os.WNOHANG)     # ours after all? then reap it
        except ChildProcessError:
            pass
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())

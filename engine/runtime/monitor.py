"""The container monitor, in Python: the readable twin of ``_native/monitor.c``.

One monitor runs per running container. It is the container process's
*parent* -- the only process that can ``waitpid(2)`` it -- and the container
has PR_SET_PDEATHSIG=SIGKILL towards it, so a killed monitor takes its
container along and nothing runs unwatched. It is no child of the dockyard
command that started it (see runtime/launcher.py): containers outlive the
CLI, a closed terminal, a restarted notebook kernel.

Same command line, files and protocol as the compiled monitor, which is
the one normally used (it costs the host a few hundred kilobytes per
container instead of a Python process). This one runs when the C program
is not built, with ``DOCKYARD_PURE=1``, or with ``DOCKYARD_MONITOR=python``.

Lifecycle::

    started   the launcher's process M spawned the container, recorded it
              running, created containers/<id>/attach.sock, and execve()d
              us with every fd and path on the command line
    running   a poll loop: container output -> json-file log + attached
              clients; clients' stdin frames -> the container's stdin;
              SIGCHLD and SIGTERM through a wake-up pipe
    exited    read what is left in the pipes (two seconds at most), reap the
              container, read the OOM-kill counter, write exit.json (temp +
              rename), append "oom"/"die" to <root>/events.jsonl, send every
              client the exit frame
    then      restart policy: execv `python -m engine _restart ID`; --rm:
              let the remover client (a foreground `run --rm`) remove it, or
              execv `python -m engine _autoremove ID`; otherwise exit

Frames are docker's stdcopy format (runtime/attach.py has the table).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
import time

STDIN, STDOUT, STDERR, CLOSE_STDIN, RESIZE, EXIT, SIGNAL, RENAME = range(8)
HEADER = struct.Struct(">BxxxI")
LINE_MAX = 16384            # docker splits longer log lines at 16 KiB
FRAME_MAX = 1 << 20         # a larger client frame is a protocol error
CLIENT_BACKLOG = 4 << 20    # a client that falls this far behind is dropped
STDIN_BACKLOG = 1 << 20     # stop reading clients while stdin holds this much
DRAIN_SECONDS = 2.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dockyard-monitor (python)")
    for name in ("--id", "--dir", "--root", "--started-at", "--log"):
        p.add_argument(name, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--name", default="")
    p.add_argument("--image", default="")
    p.add_argument("--python", default=None)
    for name in ("--stdout", "--stderr", "--pty", "--stdin", "--listen"):
        p.add_argument(name, type=int, default=-1)
    p.add_argument("--client", type=int, action="append", default=[])
    p.add_argument("--remover", type=int, action="append", default=[])
    p.add_argument("--log-max-size", type=int, default=0)
    p.add_argument("--log-max-file", type=int, default=1)
    p.add_argument("--oom-file", action="append", default=[])
    p.add_argument("--oom-start", type=int, default=-1)
    p.add_argument("--cgroup", action="append", default=[])
    p.add_argument("--cgroup-parent", action="append", default=[])
    p.add_argument("--restart", default="no")
    p.add_argument("--restart-max", type=int, default=0)
    p.add_argument("--restart-count", type=int, default=0)
    p.add_argument("--auto-remove", action="store_true")
    p.add_argument("--release-network", action="store_true")
    return p.parse_args(argv)


def now() -> tuple[str, int]:
    """RFC 3339 with nanoseconds in UTC (as docker writes times), and the raw ns."""
    ns = time.time_ns()
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z", ns


# -- JSON strings escaped as docker's json-file driver does (jsonlogbytes.go) -----

# Each byte that is not UTF-8 becomes one U+FFFD, as Go's utf8.DecodeRune sees it
# (Python's "replace" would give one per invalid *sequence*). "surrogateescape"
# decodes such bytes to U+DC80..U+DCFF, one each; the table writes them as \ufffd.
_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"',
                 ord("\\"): "\\\\", ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                 0x2028: "\\u2028", 0x2029: "\\u2029"})
_ESCAPES.update({cp: "\\ufffd" for cp in range(0xDC80, 0xDD00)})


def json_string(data: bytes) -> bytes:
    """The inside of a JSON string, byte for byte what the C monitor writes."""
    return data.decode("utf-8", "surrogateescape").translate(_ESCAPES).encode("utf-8")


# -- the json-file log ---------------------------------------------------------------

class Log:
    """``<id>-json.log``, rotated at max-size into .1 .. .(max-file - 1)."""

    def __init__(self, path: str, max_size: int, max_file: int):
        self.path, self.max_size, self.max_file = path, max_size, max_file
        self.fd = -1
        self.size = 0
        self.open()

    def open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            self.size = os.fstat(self.fd).st_size
        except OSError as e:
            sys.stderr.write(f"dockyard-monitor: {self.path}: {e}\n")
            self.fd = -1

    def rotate(self) -> None:
        if self.max_file <= 1:
            os.ftruncate(self.fd, 0)  # O_APPEND: the next write lands at 0
            self.size = 0
            return
        for i in range(self.max_file - 1, 0, -1):
            src = self.path if i == 1 else f"{self.path}.{i - 1}"
            try:
                os.rename(src, f"{self.path}.{i}")
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.open()

    def write(self, stream: str, data: bytes) -> None:
        if self.fd < 0:
            return
        if self.max_size > 0 and self.size >= self.max_size:
            self.rotate()
        stamp, _ = now()
        entry = (b'{"log":"' + json_string(data) + b'","stream":"' + stream.encode()
                 + b'","time":"' + stamp.encode() + b'"}\n')
        try:
            os.write(self.fd, entry)
            self.size += len(entry)
        except OSError:
            pass


class Output:
    """One stream of the container's output, cut into lines for the log."""

    def __init__(self, fd: int, stream: int, name: str):
        self.fd, self.stream, self.name = fd, stream, name
        self.line = b""

    def log_lines(self, log: Log, flush_all: bool = False) -> None:
        # Whole lines; a partial one only when the buffer is full or the stream ended.
        while b"\n" in self.line:
            head, _, self.line = self.line.partition(b"\n")
            log.write(self.name, head + b"\n")
        if self.line and (flush_all or len(self.line) >= LINE_MAX):
            log.write(self.name, self.line)
            self.line = b""


class Client:
    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        os.set_inheritable(fd, False)
        self.inbuf = b""
        self.outbuf = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, stream: int, payload: bytes) -> bool:
        """Queue one frame; False if this client must be dropped (too far behind)."""
        if len(self.outbuf) + len(payload) + 8 > CLIENT_BACKLOG:
            return False
        self.outbuf += HEADER.pack(stream, len(payload)) + payload
        return self.flush()

    def flush(self) -> bool:
        while self.outbuf:
            try:
                n = self.sock.send(self.outbuf)
            except BlockingIOError:
                return True
            except OSError:
                return False
            self.outbuf = self.outbuf[n:]
        return True

    def frames(self):
        """Read what arrived; yield whole frames; raise EOFError when it hung up."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            raise EOFError
        self.inbuf += data
        while len(self.inbuf) >= HEADER.size:
            stream, length = HEADER.unpack_from(self.inbuf)
            if length > FRAME_MAX:
                raise EOFError
            if len(self.inbuf) < HEADER.size + length:
                break
            payload = self.inbuf[HEADER.size:HEADER.size + length]
            self.inbuf = self.inbuf[HEADER.size + length:]
            yield stream, payload


class Monitor:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.log = Log(args.log, args.log_max_size, args.log_max_file)
        self.outputs: list[Output] = []
        if args.pty >= 0:
            self.outputs.append(Output(args.pty, STDOUT, "stdout"))
            self.stdin_fd = args.pty if args.stdin >= 0 else -1
        else:
            if args.stdout >= 0:
                self.outputs.append(Output(args.stdout, STDOUT, "stdout"))
            if args.stderr >= 0:
                self.outputs.append(Output(args.stderr, STDERR, "stderr"))
            self.stdin_fd = args.stdin
        for o in self.outputs:
            os.set_inheritable(o.fd, False)
            os.set_blocking(o.fd, False)
        if self.stdin_fd >= 0:
            os.set_inheritable(self.stdin_fd, False)
            os.set_blocking(self.stdin_fd, False)
        self.stdin_buf = b""
        self.stdin_close_wanted = False
        self.listener = None
        if args.listen >= 0:
            self.listener = socket.socket(fileno=args.listen)
            self.listener.setblocking(False)
            os.set_inheritable(args.listen, False)
        self.clients = [Client(fd) for fd in args.client + args.remover]
        self.remover = next((c for c in self.clients if c.fileno() in args.remover), None)
        self.status: int | None = None   # waitpid status once the container is reaped
        # Read by the launcher before the spawn (a very early OOM kill must count).
        self.oom_at_start = args.oom_start if args.oom_start >= 0 else self.oom_count()

    # -- stdin --
    def stdin_add(self, data: bytes) -> None:
        if self.stdin_fd >= 0:
            self.stdin_buf += data
            self.stdin_flush()

    def stdin_flush(self) -> None:
        while self.stdin_fd >= 0 and self.stdin_buf:
            try:
                n = os.write(self.stdin_fd, self.stdin_buf)
            except BlockingIOError:
                return
            except OSError:  # EPIPE: nobody reads stdin any more
                self.stdin_buf = b""
                break
            self.stdin_buf = self.stdin_buf[n:]
        if self.stdin_close_wanted and not self.stdin_buf and self.stdin_fd >= 0:
            if self.stdin_fd == self.args.pty:
                try:
                    os.write(self.stdin_fd, b"\x04")  # a terminal has no EOF to close: type ^D
                except OSError:
                    pass
            else:
                os.close(self.stdin_fd)
            self.stdin_fd = -1

    # -- frames from clients --
    def handle(self, stream: int, payload: bytes) -> None:
        if stream == STDIN:
            self.stdin_add(payload)
        elif stream == CLOSE_STDIN:
            self.stdin_close_wanted = True
            self.stdin_flush()
        elif stream == RESIZE and self.args.pty >= 0:
            try:
                rows, cols = (int(x) for x in payload.split()[:2])
                # The kernel sends SIGWINCH to the terminal's foreground group (tty_ioctl(4)).
                fcntl.ioctl(self.args.pty, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            except (ValueError, OSError):
                pass
        elif stream == SIGNAL:
            # Not yet reaped, so the PID is still our child's: no reuse race.
            try:
                sig = int(payload)
                if self.status is None and 0 < sig < signal.NSIG:
                    os.kill(self.args.pid, sig)
            except (ValueError, OSError):
                pass
        elif stream == RENAME:
            self.args.name = payload.decode(errors="replace")

    def broadcast(self, stream: int, data: bytes) -> None:
        for c in list(self.clients):
            if not c.send(stream, data):
                self.drop(c)

    def drop(self, client: Client) -> None:
        if client is self.remover:
            self.remover = None
        self.clients.remove(client)
        client.sock.close()

    # -- the loop --
    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        flags = {"term": False}
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: flags.update(term=True))
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD, signal.SIGTERM})
        drain_until = None
        self.reap()  # the container may have exited before we got here
        while True:
            if self.status is not None:
                if drain_until is None:
                    drain_until = time.monotonic() + DRAIN_SECONDS
                if not self.outputs or time.monotonic() >= drain_until:
                    break
            poller = select.poll()
            kinds = {wake_r: ("wake", None)}
            poller.register(wake_r, select.POLLIN)
            if self.listener is not None:
                poller.register(self.listener.fileno(), select.POLLIN)
                kinds[self.listener.fileno()] = ("listen", None)
            for o in self.outputs:
                events = select.POLLIN
                if o.fd == self.stdin_fd and self.stdin_buf:
                    events |= select.POLLOUT
                poller.register(o.fd, events)
                kinds[o.fd] = ("output", o)
            if self.stdin_fd >= 0 and self.stdin_fd not in kinds and self.stdin_buf:
                poller.register(self.stdin_fd, select.POLLOUT)
                kinds[self.stdin_fd] = ("stdin", None)
            for c in self.clients:
                events = select.POLLIN if len(self.stdin_buf) < STDIN_BACKLOG else 0
                if c.outbuf:
                    events |= select.POLLOUT
                poller.register(c.fileno(), events)
                kinds[c.fileno()] = ("client", c)
            timeout = None if drain_until is None else max(0, (drain_until - time.monotonic()) * 1000)
            for fd, revents in poller.poll(timeout):
                kind, obj = kinds[fd]
                if kind == "wake":
                    try:
                        os.read(wake_r, 4096)
                    except BlockingIOError:
                        pass
                    if flags["term"]:
                        # Told to stop: the container goes with us, and no restart.
                        flags["term"] = False
                        self.args.restart, self.args.auto_remove = "no", False
                        if self.status is None:
                            os.kill(self.args.pid, signal.SIGKILL)
                    self.reap()
                elif kind == "listen":
                    while True:
                        try:
                            conn, _ = self.listener.accept()
                        except BlockingIOError:
                            break
                        self.clients.append(Client(conn.detach()))
                elif kind == "output":
                    if revents & select.POLLOUT:
                        self.stdin_flush()
                    if revents & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        self.read_output(obj)
                elif kind == "stdin":
                    self.stdin_flush()
                elif kind == "client" and obj in self.clients:
                    try:
                        if revents & select.POLLOUT and not obj.flush():
                            raise EOFError
                        if revents & (select.POLLIN | select.POLLHUP | select.POLLERR):
                            for stream, payload in obj.frames():
                                self.handle(stream, payload)
                    except EOFError:
                        self.drop(obj)
        self.finish()

    def read_output(self, o: Output) -> None:
        try:
            data = os.read(o.fd, LINE_MAX)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty master once the slave is closed everywhere (pty(7))
            data = b""
        if not data:
            o.log_lines(self.log, flush_all=True)
            if o.fd != self.stdin_fd:
                os.close(o.fd)
            self.outputs.remove(o)
            return
        self.broadcast(o.stream, data)
        o.line += data
        o.log_lines(self.log)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.args.pid:
                self.status = status

    # -- the end --
    def oom_count(self) -> int:
        total = 0
        for path in self.args.oom_file:
            try:
                with open(path) as f:
                    for line in f:
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            total += int(value)
            except (OSError, ValueError):
                pass
        return total

    def should_restart(self, code: int) -> bool:
        a = self.args
        if os.path.exists(os.path.join(a.dir, "stopping")):
            return False  # the user stopped it
        if a.restart in ("always", "unless-stopped"):
            return True
        if a.restart == "on-failure":
            return code != 0 and (a.restart_max <= 0 or a.restart_count < a.restart_max)
        return False

    def write_exit_json(self, code: int, oom: bool, restarting: bool) -> None:
        finished, _ = now()
        body = (f'{{"StartedAt":"{self.args.started_at}","FinishedAt":"{finished}","ExitCode":{code},'
                f'"OOMKilled":{"true" if oom else "false"},'
                f'"Restarting":{"true" if restarting else "false"}}}\n').encode()
        final = os.path.join(self.args.dir, "exit.json")
        tmp = os.path.join(self.args.dir, f".exit.json.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError:
            return  # being removed: nobody needs it
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        try:
            os.rename(tmp, final)
        except OSError:
            pass

    def append_event(self, action: str, exit_code: int | None = None) -> None:
        a = self.args
        stamp, ns = now()
        image, name, ident = (json_string(x.encode()).decode() for x in (a.image, a.name, a.id))
        attrs = (f'{{"exitCode":"{exit_code}","image":"{image}","name":"{name}"}}' if exit_code is not None
                 else f'{{"image":"{image}","name":"{name}"}}')
        line = (f'{{"status":"{action}","id":"{ident}","from":"{image}","Type":"container",'
                f'"Action":"{action}","Actor":{{"ID":"{ident}","Attributes":{attrs}}},'
                f'"scope":"local","time":{ns // 1_000_000_000},"timeNano":{ns}}}\n').encode()
        try:
            # O_APPEND: the line lands whole at the end, whoever else writes.
            fd = os.open(os.path.join(a.root, "events.jsonl"),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError:
            return
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def say_goodbye(self, code: int, only=None) -> None:
        """Send the exit frame (to ``only``, or to everyone) and let them read it (5 s at most)."""
        targets = [only] if only is not None else list(self.clients)
        for c in targets:
            if not c.send(EXIT, str(code).encode()):
                self.drop(c)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pending = [c for c in self.clients if c.outbuf]
            if not pending:
                break
            select.select([], pending, [], max(0, deadline - time.monotonic()))
            for c in pending:
                if not c.flush():
                    self.drop(c)

    def exec_engine(self, command: str) -> None:
        """Become ``python -m engine --root ROOT <command> ID``, handing over the clients."""
        a = self.args
        argv = [a.python or sys.executable, "-m", "engine", "--root", a.root, command, a.id]
        for c in self.clients:
            c.sock.setblocking(True)
            os.set_inheritable(c.fileno(), True)
            argv += ["--client", str(c.fileno())]
        # The signal mask and dispositions we set must not leak into the engine.
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execv(argv[0], argv)
        except OSError as e:
            sys.stderr.write(f"dockyard-monitor: cannot run {argv[0]} {command}: {e}\n")

    def remove_cgroups(self) -> None:
        """Remove the container's cgroup directories now that it has exited
        (as runc delete does): rmdir(2) is EBUSY until its last process has
        left, so wait up to a second. The engine removes leftovers on rm."""
        for path in self.args.cgroup:
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        break
                    time.sleep(0.01)
        # Then the dockyard parents, if this was the last container (EBUSY: not).
        for path in self.args.cgroup_parent:
            try:
                os.rmdir(path)
            except OSError:
                pass

    def finish(self) -> None:
        a = self.args
        status = self.status if self.status is not None else 0
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        oom = self.oom_count() > self.oom_at_start
        restart = self.should_restart(code)
        for o in self.outputs:
            o.log_lines(self.log, flush_all=True)
        if self.listener is not None:  # no new attachers from now on
            self.listener.close()
            try:
                os.unlink(os.path.join(a.dir, "attach.sock"))
            except OSError:
                pass
        self.write_exit_json(code, oom, restart)
        if not restart:
            self.remove_cgroups()
        if oom:
            self.append_event("oom")
        self.append_event("die", code)
        if restart:
            self.say_goodbye(code)
            for c in list(self.clients):
                self.drop(c)
            self.exec_engine("_restart")
            os._exit(125)
        if a.auto_remove:
            if self.remover is not None:
                # The attached `run --rm` removes the container itself; the
                # other clients hear the exit once that is done.
                self.say_goodbye(code, only=self.remover)
                self.wait_for_remover()
            if os.path.exists(os.path.join(a.dir, "container.json")):
                self.exec_engine("_autoremove")
                os._exit(125)
        self.say_goodbye(code)
        if a.release_network and not os.path.exists(os.path.join(a.dir, "stopping")):
            # (A stop or rm in progress releases it itself, and waits for us.)
            # Give back the veths, addresses and peers' /etc/hosts entries now,
            # not at the next engine command (engine/network/sandbox.py).
            self.exec_engine("_netdown")
            os._exit(125)
        os._exit(0)

    def wait_for_remover(self) -> None:
        while self.remover is not None:
            select.select([self.remover], [], [])
            try:
                data = self.remover.sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self.drop(self.remover)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    Monitor(args).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Talking to a container's monitor: the attach protocol, client side.

Every running container has a monitor (``_native/monitor.c``, or its twin
``runtime/monitor.py``) listening on ``containers/<id>/attach.sock``. A
client -- ``dockyard attach``, a foreground ``dockyard run``, ``start -a``,
``container.attach()`` in Python -- connects and exchanges *frames*, docker's
stdcopy format in both directions::

    +--------+---+---+---+----------------------------+-----------------+
    | stream | 0 | 0 | 0 | payload length (uint32 BE) | payload ...     |
    +--------+---+---+---+----------------------------+-----------------+

    monitor -> client   1 stdout   2 stderr   (with a tty, all output is 1)
                        5 exit: the exit code in decimal; the last frame
    client -> monitor   0 stdin data
                        3 close stdin (our stdin reached end of file)
                        4 resize: "rows cols"
                        6 signal: a signal number in decimal (--sig-proxy)
                        7 rename: the container's new name

A session lasts until the exit frame (the container exited; its exit.json is
on disk by then) or until the monitor goes away (end of file: it was killed,
and the container with it).

The socket's path can be longer than the 108 bytes a unix socket address
holds (unix(7)) when the root is deep, so clients connect through
``/proc/self/fd/<dirfd>/attach.sock``: the kernel resolves the directory
from an open descriptor, and the address stays short.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import struct
from contextlib import contextmanager

from ..errors import Conflict, UsageError

STDIN, STDOUT, STDERR, CLOSE_STDIN, RESIZE, EXIT, SIGNAL, RENAME = range(8)
HEADER = struct.Struct(">BxxxI")

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


def frame(stream: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(stream, len(payload)) + payload


class FrameReader:
    """Cut a byte stream into ``(stream, payload)`` frames."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        frames = []
        while len(self._buf) >= HEADER.size:
            stream, length = HEADER.unpack_from(self._buf)
            if len(self._buf) < HEADER.size + length:
                break
            frames.append((stream, bytes(self._buf[HEADER.size:HEADER.size + length])))
            del self._buf[:HEADER.size + length]
        return frames


@contextmanager
def short_path(directory, name: str):
    """``/proc/self/fd/N/<name>``: a short address for a socket in ``directory``."""
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def listen(directory) -> socket.socket:
    """Create ``attach.sock`` in ``directory`` (replacing a stale one), listening."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with short_path(directory, "attach.sock") as path:
            try:
                os.unlink(path)  # left by a monitor that was killed
            except FileNotFoundError:
                pass
            # Only root may connect: the socket file is 0600 (unix(7): connecting
            # needs write permission on it). The umask is per process; the
            # caller is single-threaded here.
            old = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(container) -> "Session":
    """A session with the monitor of a running container."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with short_path(container.path, "attach.sock") as path:
            sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        raise Conflict("You cannot attach to a stopped container, start it first") from None
    except BaseException:
        sock.close()
        raise
    return Session(sock)


class Session:
    """One attached client (see the module docstring for the frames)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.exit_code: int | None = None
        self.detached = False       # set by relay() when the user typed the detach keys
        self._reader = FrameReader()
        self._pending: list[tuple[int, bytes]] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- to the monitor -------------------------------------------------------
    def _send(self, stream: int, payload: bytes = b"") -> None:
        try:
            self.sock.sendall(frame(stream, payload))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the monitor is gone; reading will tell

    def send_stdin(self, data: bytes) -> None:
        if data:
            self._send(STDIN, data)

    def close_stdin(self) -> None:
        self._send(CLOSE_STDIN)

    def resize(self, rows: int, cols: int) -> None:
        self._send(RESIZE, f"{rows} {cols}".encode())

    def signal(self, sig: int) -> None:
        self._send(SIGNAL, str(int(sig)).encode())

    def rename(self, name: str) -> None:
        self._send(RENAME, name.encode())

    # -- from the monitor -----------------------------------------------------
    def read(self) -> list[tuple[int, bytes]] | None:
        """The frames available now (blocking for at least one read); None at the end.

        The exit frame sets :attr:`exit_code` and ends the session.
        """
        if self.exit_code is not None:
            return None
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return None
        out = []
        for stream, payload in self._reader.feed(data):
            if stream == EXIT:
                self.exit_code = int(payload or b"255")
                break
            out.append((stream, payload))
        return out

    def frames(self):
        """Iterate ``(stream, payload)`` output frames until the container exits."""
        while True:
            got = self.read()
            if got is None:
                return
            yield from got

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- the terminal side: what `run -it` and `attach` do with a session -------------


def parse_detach_keys(text: str | None) -> bytes:
    """docker's --detach-keys: ``ctrl-p,ctrl-q``, ``a``, ``ctrl-\\\\``, ``ctrl-@``..."""
    text = DEFAULT_DETACH_KEYS if text is None else text
    if text == "":
        return b""
    out = bytearray()
    for part in text.split(","):
        if len(part) == 1:
            out.append(ord(part))
        elif part.startswith("ctrl-") and len(part) == 6:
            key = part[5]
            if "a" <= key <= "z":
                out.append(ord(key) - ord("a") + 1)
            elif key in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[key])
            else:
                raise UsageError(f"Unknown character: '{key}'")
        else:
            raise UsageError(f"Unknown character: '{part}'")
    return bytes(out)


class DetachKeys:
    """Watch keystrokes for the detach sequence (docker's escape proxy).

    Bytes that might start the sequence are held back; if the next byte
    does not continue it, they are sent after all.
    """

    def __init__(self, keys: bytes):
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Returns (bytes to send on, detach now?)."""
        if not self.keys:
            return data, False
        out = bytearray()
        for byte in data:
            candidate = self._held + bytes([byte])
            if self.keys.startswith(candidate):
                if candidate == self.keys:
                    return bytes(out), True
                self._held = candidate
            else:
                out += candidate
                self._held = b""
        return bytes(out), False


def terminal_size(fd: int) -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.lines, size.columns


def set_size(fd: int, rows: int, cols: int) -> None:
    """Give the terminal ``fd`` (a pty master) its window size (TIOCSWINSZ, tty_ioctl(4))."""
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@contextmanager
def raw_terminal(fd: int | None):
    """Put the terminal on ``fd`` in raw mode for the block, then restore it.

    In raw mode every key (Ctrl-C too) reaches the container's pseudo-
    terminal, whose own line discipline then does echo, line editing and
    signals, as the terminal of a local shell would (termios(3)).
    """
    if fd is None or not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


PROXIED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2)


def relay(session: Session, *, stdin_fd: int | None, stdout_fd: int | None, stderr_fd: int | None,
          tty: bool, detach_keys: bytes = b"", close_stdin_at_eof: bool = True,
          sig_proxy: bool = False) -> int | None:
    """Copy our stdin to the container and its output to our stdout/stderr.

    Returns the container's exit code, or None if the user detached (or the
    monitor vanished without an exit frame). ``stdin_fd`` None: no input
    goes to the container. ``stdout_fd``/``stderr_fd`` None: that stream is
    not shown (``-a``). With ``tty`` our terminal is put in raw mode and its
    size is sent at once and on every SIGWINCH; with ``sig_proxy`` the
    signals a shell sends us are passed to the container.
    """
    previous = {}

    def on_winch(_sig, _frame):
        size = terminal_size(stdin_fd if stdin_fd is not None else 1)
        if size:
            session.resize(*size)

    if tty:
        on_winch(None, None)
        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, on_winch)
    if sig_proxy and not tty:
        for sig in PROXIED_SIGNALS:
            previous[sig] = signal.signal(sig, lambda s, _f: session.signal(s))
    keys = DetachKeys(detach_keys)
    sel = selectors.DefaultSelector()
    sel.register(session.sock, selectors.EVENT_READ)
    if stdin_fd is not None:
        sel.register(stdin_fd, selectors.EVENT_READ)
    targets = {STDOUT: stdout_fd, STDERR: stderr_fd}
    try:
        with raw_terminal(stdin_fd if tty else None):
            while True:
                for key, _ in sel.select():
                    if key.fileobj is session.sock:
                        frames = session.read()
                        if frames is None:
                            return session.exit_code
                        for stream, payload in frames:
                            fd = targets.get(stream)
                            if fd is not None:
                                _write_all(fd, payload)
                        if session.exit_code is not None:
                            return session.exit_code
                    else:
                        try:
                            data = os.read(stdin_fd, 65536)
                        except OSError as e:
                            if e.errno != errno.EIO:
                                raise
                            data = b""
                        if not data:
                            sel.unregister(stdin_fd)
                            if close_stdin_at_eof:
                                session.close_stdin()
                            continue
                        data, detach = keys.feed(data)
                        session.send_stdin(data)
                        if detach:
                            session.detached = True
                            return None
    finally:
        sel.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select
            select.select([], [fd], [])
            continue
        view = view[n:]

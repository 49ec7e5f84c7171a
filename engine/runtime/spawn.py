"""Start a container process: the readable Python twin of ``_native/spawn.pyx``.

Same function, same arguments, same protocol as the compiled spawner; read
this one first. The difference is *how* the child is made:

- the compiled spawner calls ``clone(2)`` with every ``CLONE_NEW*`` flag, so
  its child is born in the new namespaces and runs only C until ``execve``;
- this twin does what ``unshare --fork`` does: ``fork()``, then
  ``unshare(2)`` in the child, then ``fork()`` again, because a new PID
  namespace applies to the *children* of the process that made it
  (pid_namespaces(7)). The grandchild is PID 1 of the new namespace; the
  middle process waits for it, forwards signals to it and exits the same way
  it did, so the engine sees one process either way.

The twin runs Python between fork and exec, which is fine in a
single-threaded program like the CLI or the tests, and is why the engine
prefers the compiled module.

Without ``CLONE_NEWPID`` in the flags (``exec``: flags 0) there is no new
PID namespace to make, so there is no middle process either: the child
performs the ops itself, as the compiled spawner's does. ``exec``'s plan
joins the container's namespaces with ``OP_SETNS`` and forks into its PID
namespace with ``OP_FORK_INTO_PIDNS`` (see engine/runtime/exec.py).

Protocol (both spawners): ``spawn()`` returns ``(pid, sync_fd, error_fd)``.
The child runs the ops in order; the ``OP_SYNC`` op blocks until the engine
writes one byte to ``sync_fd``. A failing step is reported as two native
int32 ``(step index, errno)`` on the error pipe (index ``len(ops)`` means the
exec itself); a successful ``execve`` closes the pipe (it is O_CLOEXEC), so
the engine reads end-of-file.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
import stat
import struct
import sys
import termios

from . import plan as P

# CDLL(None) is the C library already loaded into this process (dlopen(NULL)).
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.mknod.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]   # os.setns() arrives in Python 3.12

SYS_PIVOT_ROOT = 155  # x86_64 <asm/unistd_64.h>; aarch64 uses 41
SYS_CAPSET = 126      # x86_64; aarch64 uses 91
if os.uname().machine == "aarch64":
    SYS_PIVOT_ROOT = 41
    SYS_CAPSET = 91
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24            # <linux/prctl.h>
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
LINUX_CAPABILITY_VERSION_3 = 0x20080522  # <linux/capability.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _check(result: int) -> None:
    """Turn a libc -1 return into OSError (errno from ctypes' private copy)."""
    if result != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _loopback_up() -> None:
    # struct ifreq is 16 bytes of name then a union; ifr_flags is a short.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh22x", b"lo", 0))
        flags = struct.unpack("16sh22x", ifreq)[1] | IFF_UP
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags))


def _mkdir_p(path: bytes) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)))


def open_in_root(root: bytes, path: bytes, create: int) -> int:
    """Open ``path`` as if ``root`` were "/", never following a symlink (see the
    compiled twin): one component at a time with O_PATH|O_NOFOLLOW, a symlink
    is ELOOP, missing components are created when ``create`` says so."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        names = [n for n in path.split(b"/") if n and n != b"."]
        for i, name in enumerate(names):
            last = i == len(names) - 1
            if name == b"..":
                raise OSError(errno.EINVAL, "'..' in a mount target")
            try:
                next_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                if not last or create == P.S_IFDIR:
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                else:
                    try:  # O_CREAT|O_EXCL never follows a symlink (open(2))
                        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                         | os.O_CLOEXEC, 0o644, dir_fd=fd))
                    except FileExistsError:
                        pass
                next_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = next_fd
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                raise OSError(errno.ELOOP, "a mount target goes through a symlink")
            if not last and not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        return fd
    except BaseException:
        os.close(fd)
        raise


def _capset(caps: int) -> None:
    """permitted = effective = caps, inheritable = 0 (capset(2), version 3: two 32-bit words)."""
    header = struct.pack("=Ii", LINUX_CAPABILITY_VERSION_3, 0)
    low, high = caps & 0xFFFFFFFF, caps >> 32
    data = struct.pack("=6I", low, low, 0, high, high, 0)  # effective, permitted, inheritable
    _check(_libc.syscall(ctypes.c_long(SYS_CAPSET), ctypes.c_char_p(header), ctypes.c_char_p(data)))


def _setrlimit(which: int, soft: int, hard: int) -> None:
    # libc's setrlimit, not resource.setrlimit: that one turns EPERM into a
    # ValueError, and the engine must get the kernel's errno like from C.
    limit = (ctypes.c_ulong * 2)(soft, hard)   # struct rlimit {rlim_cur, rlim_max}
    _check(_libc.setrlimit(which, limit))


def run_op(op: P.Op, sync_read: int, error_write: int = -1) -> None:
    """Perform one step of the plan (raises OSError with the kernel's errno)."""
    code = op.code
    if code == P.OP_MOUNT:
        _check(_libc.mount(op.source or None, op.path, op.fstype or None, op.flags, op.data or None))
    elif code == P.OP_MOUNT_IF_EXISTS:
        try:
            _check(_libc.mount(op.source or None, op.path, op.fstype or None, op.flags, op.data or None))
        except FileNotFoundError:
            pass
    elif code == P.OP_MOUNT_IN_ROOT:
        fd = open_in_root(op.root, op.path, op.mode)
        try:
            _check(_libc.mount(op.source or None, f"/proc/self/fd/{fd}".encode(), op.fstype or None,
                               op.flags, op.data or None))
        finally:
            os.close(fd)
    elif code == P.OP_MKDIR:
        try:
            os.mkdir(op.path, op.mode)
        except FileExistsError:
            pass
    elif code == P.OP_MKDIR_P:
        _mkdir_p(op.path)
    elif code == P.OP_MKNOD:
        os.mknod(op.path, P.S_IFCHR | op.mode, op.dev)
        os.chmod(op.path, op.mode)  # the umask may have cleared bits
    elif code == P.OP_SYMLINK:
        os.symlink(op.source, op.path)
    elif code == P.OP_PIVOT_ROOT:
        os.chdir(op.path)
        _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."))
        _check(_libc.umount2(b".", MNT_DETACH))
        os.chdir("/")
    elif code == P.OP_SETHOSTNAME:
        _check(_libc.sethostname(op.data, len(op.data)))
    elif code == P.OP_LOOPBACK_UP:
        _loopback_up()
    elif code == P.OP_CHDIR:
        os.chdir(op.path)
    elif code == P.OP_PDEATHSIG:
        _check(_libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(op.flags), 0, 0, 0))
    elif code == P.OP_SYNC:
        _wait_go(sync_read)
    elif code == P.OP_SETRLIMIT:
        _setrlimit(op.mode, op.flags, op.dev)
    elif code == P.OP_CAPBSET:
        for n in range(op.mode + 1):
            if not op.flags >> n & 1:
                _prctl(PR_CAPBSET_DROP, n)
    elif code == P.OP_SETUSER:
        # After fork() (not clone) glibc knows we have one thread, so
        # Python's wrappers are fine here (see the compiled twin).
        groups = [int.from_bytes(op.data[i:i + 4], sys.byteorder) for i in range(0, len(op.data), 4)]
        os.setgroups(groups)
        os.setresgid(op.mode, op.mode, op.mode)
        os.setresuid(op.flags, op.flags, op.flags)
    elif code == P.OP_CAPSET:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        _capset(op.flags)
    elif code == P.OP_SETSID_CTTY:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    elif code == P.OP_SETNS:
        # `flags`: a descriptor of /proc/<pid>/ns/<kind> the engine opened for us.
        _check(_libc.setns(op.flags, op.mode))
    elif code == P.OP_FORK_INTO_PIDNS:
        _fork_into_pidns(error_write)
    elif code == P.OP_SETSID:
        os.setsid()
    elif code == P.OP_WRITE:
        fd = os.open(op.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if os.write(fd, op.data) != len(op.data):
                raise OSError(errno.EIO, "short write")
        finally:
            os.close(fd)
    else:
        raise OSError(errno.EINVAL, f"unknown op {code}")


def _fork_into_pidns(error_write: int) -> None:
    """Fork; the parent reports the child's PID on the error pipe and exits.

    The child is in the PID namespace joined before (setns applies to
    children only, pid_namespaces(7)) and returns to run the next ops. The
    orphan is adopted by the engine, a child subreaper (see the compiled
    twin, which does this with a raw clone(SIGCHLD); os.fork() is fine here:
    this process has a single thread).
    """
    pid = os.fork()
    if pid == 0:
        return
    os.write(error_write, struct.pack("=ii", P.REPORT_PID, pid))
    os._exit(0)


def child_subreaper(on: int) -> int:
    """prctl(PR_SET_CHILD_SUBREAPER, on); returns the previous setting (0 or 1)."""
    previous = ctypes.c_int(0)
    _check(_libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)))
    _prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)
    return previous.value


def _wait_go(sync_read: int) -> None:
    while True:
        try:
            got = os.read(sync_read, 1)
        except InterruptedError:
            continue
        if not got:
            os._exit(125)  # the engine died before saying go
        return


def exec_command(argv: list[bytes], envp: list[bytes], search_path: bytes) -> None:
    """execve argv[0], searching the container's PATH (see the compiled twin)."""
    env = dict(item.split(b"=", 1) if b"=" in item else (item, b"") for item in envp)
    file = argv[0]
    if b"/" in file:
        os.execve(file, argv, env)
    seen_eacces = False
    for directory in search_path.split(b":"):
        if not directory:
            continue
        try:
            os.execve(directory + b"/" + file, argv, env)
        except OSError as e:
            if e.errno == errno.EACCES:
                seen_eacces = True
            elif e.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
    raise OSError(errno.EACCES if seen_eacces else errno.ENOENT, "exec")


def _report(error_write: int, stage: int, err: int, nops: int) -> None:
    os.write(error_write, struct.pack("=ii", stage, err))
    if stage == nops:
        os._exit(127 if err in (errno.ENOENT, errno.ENOTDIR) else 126)
    os._exit(125)


def _container_side(flags, ops, argv, envp, search_path, stdio, sync_read, error_write) -> None:
    """The grandchild: PID 1 of the new namespace. Never returns."""
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    try:
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) if fd >= 0 else -1 for fd in stdio]
        for i, fd in enumerate(high):
            if fd >= 0:
                os.dup2(fd, i)  # dup2 clears close-on-exec on the new fd
    except OSError as e:
        _report(error_write, -1, e.errno or errno.EIO, len(ops))
    # Only 0, 1 and 2 may survive execve.
    for fd in os.listdir("/proc/self/fd"):
        fd = int(fd)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
    for index, op in enumerate(ops):
        try:
            run_op(P.Op(*op), sync_read, error_write)
        except OSError as e:
            _report(error_write, index, e.errno or errno.EIO, len(ops))
    try:
        exec_command(argv, envp, search_path)
    except OSError as e:
        _report(error_write, len(ops), e.errno or errno.EIO, len(ops))


def _middle(flags, ops, argv, envp, search_path, stdio, sync_read, error_write) -> None:
    """The first child: unshare, fork PID 1, relay its fate. Never returns.

    Without a new PID namespace (exec) there is no PID 1 to fork: this
    process unshares what was asked, if anything, and is the container side
    itself, like the compiled spawner's child.
    """
    if not flags & P.CLONE_NEWPID:
        try:
            if flags:
                _check(_libc.unshare(flags))
        except OSError as e:
            _report(error_write, -1, e.errno or errno.EIO, len(ops))
        _container_side(flags, ops, argv, envp, search_path, stdio, sync_read, error_write)
        os._exit(125)
    try:
        # A foreground container dies with the engine: the middle process
        # must too, or the grandchild would outlive it.
        if any(op[0] == P.OP_PDEATHSIG for op in ops):
            _libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)
        _check(_libc.unshare(flags))
    except OSError as e:
        _report(error_write, -1, e.errno or errno.EIO, len(ops))
    pid = os.fork()
    if pid == 0:
        _container_side(flags, ops, argv, envp, search_path, stdio, sync_read, error_write)
        os._exit(125)
    # The compiled spawner has no middle process; this one must not hold on
    # to anything either while it waits: not the engine's stdio (a `$(dockyard
    # run -d ...)` would wait for its end), not its sockets and pipes.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    forwarded = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                 signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH]
    for sig in forwarded:
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def spawn(flags: int, ops: list, argv: list, envp: list, search_path: bytes, stdio: tuple):
    """Fork a child in new namespaces that performs ``ops`` then execs ``argv``.

    Arguments and result exactly as ``engine._native.spawn.spawn``:
    returns ``(pid, sync_fd, error_fd)``.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    if len(stdio) != 3:
        raise ValueError("stdio must be three file descriptors")
    argv = [a if isinstance(a, bytes) else str(a).encode() for a in argv]
    envp = [e if isinstance(e, bytes) else str(e).encode() for e in envp]
    for item in [*argv, *envp, search_path]:
        if b"\0" in item:
            raise ValueError(f"embedded NUL byte in {item!r}")
    sync_read, sync_write = os.pipe2(os.O_CLOEXEC)
    error_read, error_write = os.pipe2(os.O_CLOEXEC)
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.close(sync_write)
                os.close(error_read)
                _middle(flags, ops, argv, envp, search_path, stdio, sync_read, error_write)
            finally:
                os._exit(125)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
    os.close(sync_read)
    os.close(error_write)
    return pid, sync_write, error_read

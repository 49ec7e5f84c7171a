"""Network namespaces that outlive their processes, pinned by a bind mount.

A network namespace (network_namespaces(7)) has its own interfaces, addresses,
routes and sockets. It lives as long as something refers to it: a process in
it, an open file descriptor of ``/proc/<pid>/ns/net``, or a bind mount of
that file. ``ip netns add NAME`` (ip-netns(8)) makes one that nothing runs in
by the third way, under ``/run/netns/NAME``; Dockyard does the same with a
path of its choosing (``<root>/netns/<container id>``), so that the network
can be built before the container's first process exists, and joined by it
with setns(2).

Lifecycle of a pinned namespace::

    create(path)    an empty file at path; a child process unshare(CLONE_NEWNET)s
                    into a new namespace (only ``lo``, down) and bind-mounts its
                    /proc/self/ns/net onto the file, then exits: the mount keeps
                    the namespace alive
    (use)           open(path) + setns(fd, CLONE_NEWNET) to enter it; netlink
                    sockets made inside it act on it (engine/network/link.py);
                    interfaces are moved in with IFLA_NET_NS_FD
    remove(path)    umount2(MNT_DETACH) and unlink. When the last reference
                    goes, the kernel destroys the namespace -- and with it every
                    interface inside; a veth's peer in another namespace is
                    deleted too (veth(4))

Why a child: unshare(2) would move the calling thread itself into the new
namespace; the child takes that step and throws itself away, the engine
never leaves the host's namespace. No mount propagation setup is needed
(ip-netns makes /run/netns a shared mount so other mount namespaces see the
unmount): a container's mount namespace drops its copy of this mount when it
detaches the old root after pivot_root(2).
"""

from __future__ import annotations

import ctypes
import errno
import os

CLONE_NEWNET = 0x40000000   # sched.h
MS_BIND = 4096              # sys/mount.h
MNT_DETACH = 2              # umount2(2)
NS_GET_NSTYPE = 0xB703      # ioctl_ns(2): _IO(0xb7, 0x3), Linux 4.11

# CDLL(None) is the C library already loaded into this process (dlopen(NULL)).
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


def create(path: str | os.PathLike) -> None:
    """A new, empty network namespace pinned at ``path`` (which must not exist).

    Raises :class:`FileExistsError` if ``path`` exists, :class:`OSError`
    with the child's errno if unshare(2) or mount(2) failed (EPERM without
    CAP_SYS_ADMIN); nothing is left behind then.
    """
    path = os.fspath(path)
    # The mount point: a plain empty file (a bind mount of a file needs a file).
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    stage, status = _in_child(os.fsencode(path))
    if status:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise OSError(status, f"{stage}: {os.strerror(status)}", path)


def _in_child(path: bytes) -> tuple[str, int]:
    """Fork; in the child unshare(CLONE_NEWNET) and bind-mount its namespace on
    ``path``. The child reports errno as its exit status (errno < 256), +0x80
    when mount failed; returns (stage, errno)."""
    pid = os.fork()
    if pid == 0:  # the child: ctypes calls only, then _exit, never back into the caller
        code = 0
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                code = ctypes.get_errno() & 0x7F
            elif _libc.mount(b"/proc/self/ns/net", path, None, MS_BIND, None) != 0:
                code = 0x80 | (ctypes.get_errno() & 0x7F)
        except BaseException:
            code = errno.EIO
        os._exit(code)
    while True:
        try:
            _, wait_status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(wait_status)
    if code < 0:
        return "unshare(CLONE_NEWNET)", errno.EINTR
    if code & 0x80:
        return "mount --bind /proc/self/ns/net", code & 0x7F
    return "unshare(CLONE_NEWNET)", code


def remove(path: str | os.PathLike) -> None:
    """Unpin and delete ``path``; nothing to do if it is gone. The namespace
    itself ends when its last user (a process still inside) does."""
    raw = os.fsencode(os.fspath(path))
    if _libc.umount2(raw, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        # EINVAL: not a mount point (a create that failed half-way); ENOENT: gone.
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount2: {os.strerror(err)}", os.fsdecode(raw))
    try:
        os.unlink(raw)
    except FileNotFoundError:
        pass


def exists(path: str | os.PathLike) -> bool:
    """Is ``path`` a network namespace (a pinned one, or /proc/<pid>/ns/net)?

    ioctl_ns(2) NS_GET_NSTYPE answers CLONE_NEWNET on a namespace file and
    fails with ENOTTY on a plain file (an unmounted mount point).
    """
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


def identity(path: str | os.PathLike) -> str:
    """The namespace as ``ls -l /proc/<pid>/ns/net`` names it: ``net:[4026532281]``
    (its inode number on nsfs; two paths with the same one are the same namespace)."""
    return f"net:[{os.stat(path).st_ino}]"

# cython: language_level=3
"""clone(2) a container process and set it up in C, with no Python after clone.

This is the compiled twin of ``engine/runtime/spawn.py`` (read that one first:
same function, same protocol, written in plain Python).

Lifecycle of one spawn, as seen by the engine (``engine/runtime/process.py``):

1. ``spawn(flags, ops, argv, envp, search_path, stdio)`` converts every
   string and the list of ops (see ``engine/runtime/plan.py``) into C memory,
   opens two close-on-exec pipes (*sync* and *error*), blocks signals and
   calls ``clone(flags | SIGCHLD)``. It returns ``(pid, sync_fd, error_fd)``.
2. The child (``child_main`` below, C only) resets signal handlers, wires
   stdio, marks every other descriptor close-on-exec, then performs the ops
   in order -- one of them waits on the sync pipe until the engine writes a
   byte -- and finally ``execve``\\ s the command, searching the container's
   PATH.
3. If any step fails, the child writes ``(step index, errno)`` as two int32
   to the error pipe and exits. If ``execve`` succeeds the kernel closes the
   error pipe (O_CLOEXEC), so the engine reads end-of-file: that is how it
   knows the command is running.

Why C only? After clone the child is a copy of a process that may hold
Python's locks (the GIL, allocator, import lock) in whatever state another
thread left them; running Python there can deadlock. runc makes the same
choice with nsexec.c.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, strchr, strlen, memset

from linux cimport *

cdef extern from *:
    """
    #include <net/if.h>
    #include <sys/ioctl.h>
    #include <sys/socket.h>
    #include <string.h>
    #include <errno.h>
    #include <unistd.h>

    /* Bring the loopback interface up with the classic ioctl (netdevice(7)):
       a fresh network namespace has "lo" but it is down. */
    static int dy_loopback_up(void) {
        struct ifreq ifr;
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        memset(&ifr, 0, sizeof ifr);
        strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
        if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) goto fail;
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) goto fail;
        close(fd);
        return 0;
    fail:
        { int saved = errno; close(fd); errno = saved; return -1; }
    }

    /* CLOSE_RANGE_CLOEXEC (Linux 5.11, <linux/close_range.h>): mark fds
       close-on-exec instead of closing them, so our own pipes keep working
       until execve and then vanish with everything else. */
    #define DY_CLOSE_RANGE_CLOEXEC (1U << 2)

    static void dy_set_errno(int e) { errno = e; }
    """
    int dy_loopback_up() nogil
    void dy_set_errno(int e) nogil
    unsigned int DY_CLOSE_RANGE_CLOEXEC

# Operation codes: must equal engine/runtime/plan.py (a parity test checks).
cdef enum:
    OP_MOUNT = 1
    OP_MKDIR = 2
    OP_MKNOD = 3
    OP_SYMLINK = 4
    OP_PIVOT_ROOT = 5
    OP_SETHOSTNAME = 6
    OP_LOOPBACK_UP = 7
    OP_CHDIR = 8
    OP_MKDIR_P = 9
    OP_PDEATHSIG = 10
    OP_SYNC = 11

OPS = {
    "OP_MOUNT": OP_MOUNT, "OP_MKDIR": OP_MKDIR, "OP_MKNOD": OP_MKNOD,
    "OP_SYMLINK": OP_SYMLINK, "OP_PIVOT_ROOT": OP_PIVOT_ROOT,
    "OP_SETHOSTNAME": OP_SETHOSTNAME, "OP_LOOPBACK_UP": OP_LOOPBACK_UP,
    "OP_CHDIR": OP_CHDIR, "OP_MKDIR_P": OP_MKDIR_P, "OP_PDEATHSIG": OP_PDEATHSIG,
    "OP_SYNC": OP_SYNC,
}

DEF STACK_SIZE = 256 * 1024
DEF PATH_BUF = 4096

cdef struct op_t:
    int code
    const char *path
    const char *source      # NULL when empty
    const char *fstype      # NULL when empty
    unsigned long flags
    const char *data        # NULL when empty
    size_t data_len
    unsigned int mode
    unsigned long long dev

cdef struct args_t:
    op_t *ops
    int nops
    char **argv
    char **envp
    const char *search_path
    int stdio[3]
    int sync_read
    int sync_write
    int error_read
    int error_write


cdef void report(args_t *a, int stage, int err) noexcept nogil:
    """Tell the engine which step failed and why, then die."""
    cdef int msg[2]
    msg[0] = stage
    msg[1] = err
    write(a.error_write, msg, sizeof(msg))
    if stage == a.nops:
        _exit(127 if err == ENOENT or err == ENOTDIR else 126)
    _exit(125)


cdef int mkdir_p(const char *path) noexcept nogil:
    """mkdir -p: create each missing component with mode 0755."""
    cdef char buf[PATH_BUF]
    cdef size_t n = strlen(path)
    cdef size_t i
    if n >= PATH_BUF:
        dy_set_errno(36)  # ENAMETOOLONG
        return -1
    memcpy(buf, path, n + 1)
    for i in range(1, n + 1):
        if buf[i] == b'/' or buf[i] == 0:
            if buf[i] == b'/' and buf[i - 1] == b'/':
                continue
            buf[i] = 0
            if mkdir(buf, 0o755) != 0 and errno != EEXIST:
                return -1
            if i < n:
                buf[i] = b'/'
    return 0


cdef int run_op(args_t *a, op_t *op) noexcept nogil:
    """Perform one step; 0 on success, -1 with errno set on failure."""
    cdef char go
    cdef ssize_t got
    if op.code == OP_MOUNT:
        return mount(op.source, op.path, op.fstype, op.flags, op.data)
    elif op.code == OP_MKDIR:
        if mkdir(op.path, op.mode) != 0 and errno != EEXIST:
            return -1
        return 0
    elif op.code == OP_MKDIR_P:
        return mkdir_p(op.path)
    elif op.code == OP_MKNOD:
        if mknod(op.path, S_IFCHR | op.mode, <dev_t>op.dev) != 0:
            return -1
        return chmod(op.path, op.mode)   # the umask may have cleared bits
    elif op.code == OP_SYMLINK:
        return symlink(op.source, op.path)
    elif op.code == OP_PIVOT_ROOT:
        if chdir(op.path) != 0:
            return -1
        if syscall(SYS_pivot_root, b".", b".") != 0:
            return -1
        if umount2(b".", MNT_DETACH) != 0:
            return -1
        return chdir(b"/")
    elif op.code == OP_SETHOSTNAME:
        return sethostname(op.data, op.data_len)
    elif op.code == OP_LOOPBACK_UP:
        return dy_loopback_up()
    elif op.code == OP_CHDIR:
        return chdir(op.path)
    elif op.code == OP_PDEATHSIG:
        return prctl(PR_SET_PDEATHSIG, <unsigned long>op.flags, 0, 0, 0)
    elif op.code == OP_SYNC:
        while True:
            got = read(a.sync_read, &go, 1)
            if got == 1:
                return 0
            if got < 0 and errno == EINTR:
                continue
            # End of file: the engine died (or gave up) before saying go.
            _exit(125)
    dy_set_errno(22)  # EINVAL: unknown op
    return -1


cdef int exec_command(args_t *a) noexcept nogil:
    """execve argv[0], searching the container's PATH when it has no slash.

    Like Go's exec.LookPath (which runc uses): try each PATH entry in order;
    "not found" moves on, "permission denied" is remembered in case nothing
    better turns up, any other error stops the search.
    """
    cdef const char *file = a.argv[0]
    cdef char buf[PATH_BUF]
    cdef const char *p = a.search_path
    cdef const char *end
    cdef size_t dirlen, filelen
    cdef int seen_eacces = 0
    if strchr(file, b'/') != NULL:
        execve(file, a.argv, a.envp)
        return -1
    filelen = strlen(file)
    while p != NULL and p[0] != 0:
        end = strchr(p, b':')
        dirlen = <size_t>(end - p) if end != NULL else strlen(p)
        if dirlen > 0 and dirlen + 1 + filelen < PATH_BUF:
            memcpy(buf, p, dirlen)
            buf[dirlen] = b'/'
            memcpy(buf + dirlen + 1, file, filelen + 1)
            execve(buf, a.argv, a.envp)
            if errno == EACCES:
                seen_eacces = 1
            elif errno != ENOENT and errno != ENOTDIR:
                return -1
        p = end + 1 if end != NULL else NULL
    dy_set_errno(EACCES if seen_eacces else ENOENT)
    return -1


cdef int child_main(void *arg) noexcept nogil:
    """The container side of clone(). Never returns: execs or _exits."""
    cdef args_t *a = <args_t *>arg
    cdef sigset_t empty
    cdef int i, sig
    cdef int tmp[3]

    # Signals: the parent blocked them all around clone(); restore default
    # dispositions (an ignored SIGPIPE would survive execve) and unblock.
    for sig in range(1, NSIG):
        if sig != SIGKILL and sig != SIGSTOP:
            signal(sig, SIG_DFL)
    sigemptyset(&empty)
    pthread_sigmask(SIG_SETMASK, &empty, NULL)

    close(a.sync_write)
    close(a.error_read)

    # stdio: duplicate to high numbers first so that overlapping requests
    # (stdout given as fd 0, say) cannot clobber each other.
    for i in range(3):
        tmp[i] = fcntl(a.stdio[i], F_DUPFD_CLOEXEC, 3) if a.stdio[i] >= 0 else -1
    for i in range(3):
        if tmp[i] >= 0 and dup2(tmp[i], i) < 0:
            report(a, -1, errno)

    # Only 0, 1 and 2 may survive execve (runc CVE-2024-21626 leaked an fd).
    syscall(SYS_close_range, 3, <unsigned int>0xFFFFFFFF, DY_CLOSE_RANGE_CLOEXEC)

    for i in range(a.nops):
        if run_op(a, &a.ops[i]) != 0:
            report(a, i, errno)

    exec_command(a)
    report(a, a.nops, errno)
    return 0


cdef char **c_strings(list items, list keep) except NULL:
    """A NULL-terminated char*[] pointing into bytes objects kept alive in `keep`."""
    cdef Py_ssize_t n = len(items), i
    cdef char **out = <char **>malloc((n + 1) * sizeof(char *))
    if out == NULL:
        raise MemoryError()
    for i in range(n):
        b = items[i] if isinstance(items[i], bytes) else str(items[i]).encode()
        if b"\0" in b:
            free(out)
            raise ValueError(f"embedded NUL byte in {b!r}")
        keep.append(b)
        out[i] = PyBytes_AS_STRING(b)
    out[n] = NULL
    return out


cdef const char *c_or_null(bytes b, list keep):
    if not b:
        return NULL
    if b"\0" in b:
        raise ValueError(f"embedded NUL byte in {b!r}")
    keep.append(b)
    return PyBytes_AS_STRING(b)


def spawn(int flags, list ops, list argv, list envp, bytes search_path, tuple stdio):
    """Clone a child in new namespaces that performs ``ops`` then execs ``argv``.

    ``flags``: CLONE_NEW* bits. ``ops``: ``engine.runtime.plan.Op`` tuples.
    ``argv``/``envp``: lists of bytes. ``search_path``: the container's PATH.
    ``stdio``: three fds to become the child's 0, 1, 2 (-1 keeps ours).
    Returns ``(pid, sync_fd, error_fd)``; see the module docstring.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    if len(stdio) != 3:
        raise ValueError("stdio must be three file descriptors")
    cdef list keep = []
    cdef args_t a
    cdef int sync_pipe[2]
    cdef int error_pipe[2]
    cdef sigset_t all_signals, saved
    cdef char *stack = NULL
    cdef int pid, saved_errno
    cdef Py_ssize_t i

    memset(&a, 0, sizeof(a))
    a.nops = len(ops)
    a.ops = <op_t *>malloc(max(a.nops, 1) * sizeof(op_t))
    if a.ops == NULL:
        raise MemoryError()
    try:
        for i in range(a.nops):
            op = ops[i]
            a.ops[i].code = op[0]
            a.ops[i].path = c_or_null(op[1], keep)
            a.ops[i].source = c_or_null(op[2], keep)
            a.ops[i].fstype = c_or_null(op[3], keep)
            a.ops[i].flags = op[4]
            a.ops[i].data = c_or_null(op[5], keep)
            a.ops[i].data_len = len(op[5])
            a.ops[i].mode = op[6]
            a.ops[i].dev = op[7]
        a.argv = c_strings(argv, keep)
        a.envp = c_strings(envp, keep)
        a.search_path = c_or_null(search_path, keep)   # NULL: search nothing
        for i in range(3):
            a.stdio[i] = stdio[i]

        if pipe2(sync_pipe, O_CLOEXEC) != 0:
            raise OSError(errno, "pipe2 (sync)")
        if pipe2(error_pipe, O_CLOEXEC) != 0:
            saved_errno = errno
            close(sync_pipe[0]); close(sync_pipe[1])
            raise OSError(saved_errno, "pipe2 (error)")
        a.sync_read, a.sync_write = sync_pipe[0], sync_pipe[1]
        a.error_read, a.error_write = error_pipe[0], error_pipe[1]

        stack = <char *>malloc(STACK_SIZE)
        if stack == NULL:
            raise MemoryError()
        with nogil:
            # Block every signal so none can run a (Python-level) handler in
            # the child before it has reset them.
            sigfillset(&all_signals)
            pthread_sigmask(SIG_BLOCK, &all_signals, &saved)
            # The stack grows down on every architecture Linux runs Python on
            # that we support, so pass its top (clone(2), NOTES).
            pid = clone(child_main, stack + STACK_SIZE, flags | SIGCHLD, &a)
            saved_errno = errno
            pthread_sigmask(SIG_SETMASK, &saved, NULL)
        close(a.sync_read)
        close(a.error_write)
        if pid < 0:
            close(a.sync_write)
            close(a.error_read)
            raise OSError(saved_errno, "clone")
        return pid, a.sync_write, a.error_read
    finally:
        # The child has its own copy of all this memory (no CLONE_VM).
        free(stack)
        free(a.argv)
        free(a.envp)
        free(a.ops)

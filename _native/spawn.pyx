# cython: language_level=3
"""clone(2) a container process and set it up in C, with no Python after clone.

This is the compiled twin of ``engine/runtime/spawn.py`` (read that one first:
same function, same protocol, written in plain Python).

Lifecycle of one spawn, as seen by the engine (``engine/runtime/process.py``):

1. ``spawn(flags, ops, argv, envp, search_path, stdio)`` converts every
   string and the list of ops (see ``engine/runtime/plan.py``) into C memory,
   opens two close-on-exec pipes (*sync* and *error*), blocks signals and
   calls ``clone(flags | SIGCHLD)`` -- with ``CLONE_VM | CLONE_VFORK`` when
   the plan has no wait-for-engine step, so that we sleep, sharing our
   memory, until the child has exec'd (see ``spawn``). It returns
   ``(pid, sync_fd, error_fd)``.
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

``exec`` (``engine/runtime/exec.py``) uses the same machinery with clone
flags 0: the child is born in the engine's namespaces and *joins* the
container's with ``OP_SETNS`` (descriptors the engine opened), then
``OP_FORK_INTO_PIDNS`` forks once more, because a joined PID namespace only
applies to the children of the joiner (pid_namespaces(7)). The parent of
that fork writes ``(REPORT_PID, pid)`` on the error pipe and exits; the
grandchild goes on with the remaining ops and the execve. The engine makes
itself a child subreaper (:func:`child_subreaper`) beforehand, so the
orphaned grandchild becomes its child and can be waited for.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdio cimport snprintf
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, strchr, strcmp, strlen, memset

from linux cimport *

cdef extern from *:
    """
    #include <net/if.h>
    #include <sys/ioctl.h>
    #include <sys/socket.h>
    #include <sys/syscall.h>
    #include <linux/capability.h>
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

    /* capset(2) with the 64-bit interface (_LINUX_CAPABILITY_VERSION_3: two
       32-bit words per set): permitted = effective = caps, inheritable = 0.
       The raw system call: libcap's cap_set_proc() does the same. */
    static int dy_capset(unsigned long long caps) {
        struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct data[2];
        memset(data, 0, sizeof data);
        data[0].effective = data[0].permitted = (__u32)caps;
        data[1].effective = data[1].permitted = (__u32)(caps >> 32);
        return (int)syscall(SYS_capset, &header, data);
    }
    """
    int dy_loopback_up() nogil
    void dy_set_errno(int e) nogil
    int dy_capset(unsigned long long caps) nogil
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
    OP_MOUNT_IF_EXISTS = 12
    OP_MOUNT_IN_ROOT = 13
    OP_SETRLIMIT = 14
    OP_CAPBSET = 15
    OP_SETUSER = 16
    OP_CAPSET = 17
    OP_SETSID_CTTY = 18
    OP_SETNS = 19
    OP_FORK_INTO_PIDNS = 20
    OP_SETSID = 21
    OP_WRITE = 22

# The "stage" of the message OP_FORK_INTO_PIDNS's parent sends: (REPORT_PID, pid).
# Must equal engine/runtime/plan.py's REPORT_PID (a parity test checks).
cdef enum:
    REPORT_PID = -2

OPS = {
    "OP_MOUNT": OP_MOUNT, "OP_MKDIR": OP_MKDIR, "OP_MKNOD": OP_MKNOD,
    "OP_SYMLINK": OP_SYMLINK, "OP_PIVOT_ROOT": OP_PIVOT_ROOT,
    "OP_SETHOSTNAME": OP_SETHOSTNAME, "OP_LOOPBACK_UP": OP_LOOPBACK_UP,
    "OP_CHDIR": OP_CHDIR, "OP_MKDIR_P": OP_MKDIR_P, "OP_PDEATHSIG": OP_PDEATHSIG,
    "OP_SYNC": OP_SYNC, "OP_MOUNT_IF_EXISTS": OP_MOUNT_IF_EXISTS,
    "OP_MOUNT_IN_ROOT": OP_MOUNT_IN_ROOT, "OP_SETRLIMIT": OP_SETRLIMIT,
    "OP_CAPBSET": OP_CAPBSET, "OP_SETUSER": OP_SETUSER, "OP_CAPSET": OP_CAPSET,
    "OP_SETSID_CTTY": OP_SETSID_CTTY, "OP_SETNS": OP_SETNS,
    "OP_FORK_INTO_PIDNS": OP_FORK_INTO_PIDNS, "OP_SETSID": OP_SETSID, "OP_WRITE": OP_WRITE,
}
PID_REPORT = REPORT_PID  # for the parity test

DEF STACK_SIZE = 256 * 1024
DEF PATH_BUF = 4096
DEF NAME_MAX = 255

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
    const char *root        # NULL when empty (OP_MOUNT_IN_ROOT only)

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


cdef int fail_closing(int fd) noexcept nogil:
    """close(fd) and return -1, keeping the errno of the failure being reported."""
    cdef int saved = errno
    close(fd)
    dy_set_errno(saved)
    return -1


cdef int open_in_root(const char *root, const char *path, unsigned int create) noexcept nogil:
    """Open ``path`` as if ``root`` were "/", never following a symlink.

    Returns an O_PATH descriptor (close-on-exec) or -1 with errno set;
    ELOOP means a component is a symlink. One component at a time, each
    opened relative to the one before with O_NOFOLLOW: a link the image
    (or another container sharing a volume) planted cannot take us out of
    ``root`` (runc CVE-2021-30465; openat2(2) RESOLVE_IN_ROOT solves the
    same problem inside the kernel). A missing component is created when
    ``create`` is S_IFDIR (directories) or S_IFREG (directories, then an
    empty file for the last one). ".." is refused: the engine normalized
    every path already.
    """
    cdef char name[NAME_MAX + 1]
    cdef const char *p = path
    cdef const char *end
    cdef size_t n
    cdef int fd, next_fd, made, last
    cdef struct_stat st
    fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC)
    if fd < 0:
        return -1
    while True:
        while p[0] == b'/':
            p += 1
        if p[0] == 0:
            return fd
        end = strchr(p, b'/')
        n = <size_t>(end - p) if end != NULL else strlen(p)
        if n > NAME_MAX:
            dy_set_errno(ENAMETOOLONG)
            return fail_closing(fd)
        memcpy(name, p, n)
        name[n] = 0
        p += n
        while p[0] == b'/':
            p += 1
        last = p[0] == 0
        if strcmp(name, b".") == 0:
            continue
        if strcmp(name, b"..") == 0:
            dy_set_errno(EINVAL)
            return fail_closing(fd)
        next_fd = openat(fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)
        if next_fd < 0 and errno == ENOENT and create != 0:
            if not last or create == <unsigned int>S_IFDIR:
                if mkdirat(fd, name, 0o755) != 0 and errno != EEXIST:
                    return fail_closing(fd)
            else:
                # O_CREAT|O_EXCL never follows a symlink (open(2)).
                made = openat(fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
                if made < 0 and errno != EEXIST:
                    return fail_closing(fd)
                if made >= 0:
                    close(made)
            next_fd = openat(fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)
        if next_fd < 0:
            return fail_closing(fd)
        close(fd)
        fd = next_fd
        if fstat(fd, &st) != 0:
            return fail_closing(fd)
        if S_ISLNK(st.st_mode):
            # O_PATH|O_NOFOLLOW opened the link itself: refuse it.
            dy_set_errno(ELOOP)
            return fail_closing(fd)
        if not last and not S_ISDIR(st.st_mode):
            dy_set_errno(ENOTDIR)
            return fail_closing(fd)


cdef int mount_in_root(op_t *op) noexcept nogil:
    """OP_MOUNT_IN_ROOT: mount on the descriptor of the safely opened target."""
    cdef char target[64]
    cdef int fd = open_in_root(op.root, op.path, op.mode)
    cdef int rc
    if fd < 0:
        return -1
    # The magic link /proc/self/fd/N names exactly the file we hold, with no
    # path lookup that could be raced (the host's /proc: we have not pivoted yet).
    snprintf(target, sizeof(target), b"/proc/self/fd/%d", fd)
    rc = mount(op.source, target, op.fstype, op.flags, op.data)
    if rc != 0:
        return fail_closing(fd)
    close(fd)
    return 0


cdef int drop_bounding_set(unsigned long long keep, unsigned int last_cap) noexcept nogil:
    """PR_CAPBSET_DROP every capability 0..last_cap that is not in ``keep``."""
    cdef unsigned int n
    for n in range(last_cap + 1):
        if not (keep >> n) & 1:
            if prctl(PR_CAPBSET_DROP, <unsigned long>n, <unsigned long>0, <unsigned long>0,
                     <unsigned long>0) != 0:
                return -1
    return 0


cdef int set_user(op_t *op) noexcept nogil:
    """setgroups, setresgid, setresuid -- as raw system calls.

    Not glibc's wrappers: POSIX wants credentials shared by all threads, so
    glibc's set*id() signal every thread it knows of to change theirs too.
    After clone() its list of threads is a stale copy of the engine's, and
    the broadcast could wait forever for threads that do not exist here.
    The system calls change this (only) thread, which is all there is.
    """
    cdef long uid = <long>op.flags, gid = <long>op.mode
    # (Every argument passed as a long: the kernel reads whole registers.)
    if syscall(SYS_setgroups, <long>(op.data_len // 4), op.data) != 0:
        return -1
    if syscall(SYS_setresgid, gid, gid, gid) != 0:
        return -1
    return <int>syscall(SYS_setresuid, uid, uid, uid)


cdef int fork_into_pidns(args_t *a) noexcept nogil:
    """OP_FORK_INTO_PIDNS: fork; the parent reports the child's PID and exits.

    After setns(CLONE_NEWPID) we are still in our old PID namespace; only
    our children are born in the container's (pid_namespaces(7)). So fork
    once more -- with the raw system call, not glibc's fork(): that one
    would run the engine's pthread_atfork handlers, which may take locks
    another engine thread held at clone time. clone(SIGCHLD) with no new
    stack is exactly fork(2): the child continues from here on a copy of
    this stack.

    The parent writes ``(REPORT_PID, child's PID)`` on the error pipe and
    exits 0: the child is orphaned and the kernel gives it to the nearest
    child subreaper among its ancestors -- the engine, which set
    PR_SET_CHILD_SUBREAPER for that (prctl(2)) -- so the engine can wait for
    it. runc's nsexec.c does the same dance (its stage-1 child joins the
    namespaces and forks stage 2 with CLONE_PARENT, then sends its PID up
    and exits; containerd's shim is the subreaper for what runc leaves).
    """
    cdef int msg[2]
    cdef long pid = syscall(SYS_clone, <long>SIGCHLD, <long>0, <long>0, <long>0, <long>0)
    if pid < 0:
        return -1
    if pid == 0:
        return 0        # the grandchild: in the container's PID namespace, goes on
    msg[0] = REPORT_PID
    msg[1] = <int>pid
    write(a.error_write, msg, sizeof(msg))
    _exit(0)


cdef int run_op(args_t *a, op_t *op) noexcept nogil:
    """Perform one step; 0 on success, -1 with errno set on failure."""
    cdef char go
    cdef ssize_t got
    cdef rlimit limit
    if op.code == OP_MOUNT:
        return mount(op.source, op.path, op.fstype, op.flags, op.data)
    elif op.code == OP_MOUNT_IF_EXISTS:
        if mount(op.source, op.path, op.fstype, op.flags, op.data) != 0 and errno != ENOENT:
            return -1
        return 0
    elif op.code == OP_MOUNT_IN_ROOT:
        return mount_in_root(op)
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
    elif op.code == OP_SETRLIMIT:
        limit.rlim_cur = op.flags
        limit.rlim_max = op.dev
        return setrlimit(op.mode, &limit)
    elif op.code == OP_CAPBSET:
        return drop_bounding_set(op.flags, op.mode)
    elif op.code == OP_SETUSER:
        return set_user(op)
    elif op.code == OP_CAPSET:
        # The kernel insists that the unused arguments be 0 (prctl(2)).
        if prctl(PR_CAP_AMBIENT, <unsigned long>PR_CAP_AMBIENT_CLEAR_ALL, <unsigned long>0,
                 <unsigned long>0, <unsigned long>0) != 0:
            return -1
        return dy_capset(op.flags)
    elif op.code == OP_SETSID_CTTY:
        if setsid() < 0:
            return -1
        return ioctl(0, TIOCSCTTY, <long>0)  # 0: do not steal another session's terminal
    elif op.code == OP_SETNS:
        # `flags` is a descriptor the engine opened on /proc/<pid>/ns/<kind>
        # before spawning us; `mode` the CLONE_NEW* constant of that kind.
        return setns(<int>op.flags, <int>op.mode)
    elif op.code == OP_FORK_INTO_PIDNS:
        return fork_into_pidns(a)
    elif op.code == OP_SETSID:
        return 0 if setsid() >= 0 else -1
    elif op.code == OP_WRITE:
        return write_file(op.path, op.data, op.data_len)
    dy_set_errno(22)  # EINVAL: unknown op
    return -1


cdef int write_file(const char *path, const char *data, size_t length) noexcept nogil:
    """OP_WRITE: one write(2) into an existing file (a cgroup's cgroup.procs)."""
    cdef int fd = open(path, O_WRONLY | O_CLOEXEC)
    cdef ssize_t n
    cdef int saved
    if fd < 0:
        return -1
    n = write(fd, data, length)
    saved = errno
    close(fd)
    if n != <ssize_t>length:
        dy_set_errno(saved if n < 0 else 5)  # EIO: a short write
        return -1
    return 0


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


cdef const char *c_raw(bytes b, list keep):
    """Binary data (NULL when empty); kept alive in ``keep``."""
    if not b:
        return NULL
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
    cdef int pid, saved_errno, vfork
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
            # OP_SETUSER's data is an array of gids, NUL bytes included: its length says where it ends.
            a.ops[i].data = c_raw(op[5], keep) if op[0] == OP_SETUSER else c_or_null(op[5], keep)
            a.ops[i].data_len = len(op[5])
            a.ops[i].mode = op[6]
            a.ops[i].dev = op[7]
            a.ops[i].root = c_or_null(op[8], keep) if len(op) > 8 else NULL
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
        # A plan that never waits for the engine (no OP_SYNC) is cloned as
        # vfork(2) is: the child shares our memory and we sleep until it has
        # exec'd or exited. That spares copying the page tables of a big
        # Python process, the slowest part of a start. It is safe because
        # the child only reads the arrays built above and writes to its own
        # stack (no malloc, no Python), and its signal dispositions and file
        # descriptors are its own (no CLONE_SIGHAND, no CLONE_FILES). A plan
        # that waits needs us awake meanwhile: a plain copy, as fork(2).
        vfork = CLONE_VM | CLONE_VFORK
        for i in range(a.nops):
            if a.ops[i].code == OP_SYNC:
                vfork = 0
        with nogil:
            # Block every signal so none can run a (Python-level) handler in
            # the child before it has reset them.
            sigfillset(&all_signals)
            pthread_sigmask(SIG_BLOCK, &all_signals, &saved)
            # The stack grows down on every architecture Linux runs Python on
            # that we support, so pass its top (clone(2), NOTES).
            pid = clone(child_main, stack + STACK_SIZE, flags | vfork | SIGCHLD, &a)
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
        # The child has exec'd or exited (CLONE_VFORK), or it has its own
        # copy of all this memory (no CLONE_VM): ours can go.
        free(stack)
        free(a.argv)
        free(a.envp)
        free(a.ops)


def child_subreaper(int on):
    """prctl(PR_SET_CHILD_SUBREAPER, on); returns the previous setting (0 or 1).

    A subreaper adopts the orphans among its descendants instead of init
    (prctl(2)): ``exec`` needs that for the process its spawned child forks
    into the container's PID namespace, then turns it off again (see
    engine/runtime/exec.py for why it must not stay on).
    """
    cdef int previous = 0
    if prctl(PR_GET_CHILD_SUBREAPER, <unsigned long>&previous, <unsigned long>0, <unsigned long>0,
             <unsigned long>0) != 0:
        raise OSError(errno, "prctl(PR_GET_CHILD_SUBREAPER)")
    if prctl(PR_SET_CHILD_SUBREAPER, <unsigned long>(1 if on else 0), <unsigned long>0,
             <unsigned long>0, <unsigned long>0) != 0:
        raise OSError(errno, "prctl(PR_SET_CHILD_SUBREAPER)")
    return previous

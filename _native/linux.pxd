# C declarations of the Linux interfaces the spawner uses. Declarations only:
# no code lives here. Names and argument orders are the kernel's / glibc's, so
# the man pages (clone(2), mount(2), pivot_root(2), ...) describe them exactly.

cdef extern from "<sched.h>" nogil:
    int CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET
    # Share our memory and sleep until the child execs or exits (as vfork(2)):
    # no copy of the page tables (see spawn.pyx, "Why CLONE_VM|CLONE_VFORK").
    int CLONE_VM, CLONE_VFORK
    # glibc's wrapper: runs fn(arg) on `stack` in the child (see clone(2)).
    int clone(int (*fn)(void *) noexcept nogil, void *stack, int flags, void *arg, ...)
    # Join the namespace the descriptor `fd` refers to (setns(2)); used by exec.
    int setns(int fd, int nstype)

cdef extern from "<signal.h>" nogil:
    ctypedef struct sigset_t:
        pass
    ctypedef void (*sighandler_t)(int)
    int SIGCHLD, SIGKILL, SIGSTOP, SIG_SETMASK, SIG_BLOCK
    sighandler_t SIG_DFL
    int sigfillset(sigset_t *set)
    int sigemptyset(sigset_t *set)
    sighandler_t signal(int signum, sighandler_t handler)
    int pthread_sigmask(int how, const sigset_t *set, sigset_t *oldset)
    int NSIG "_NSIG"

cdef extern from "<sys/mount.h>" nogil:
    int mount(const char *source, const char *target, const char *filesystemtype,
              unsigned long mountflags, const void *data)
    int umount2(const char *target, int flags)
    int MNT_DETACH

cdef extern from "<sys/stat.h>" nogil:
    ctypedef unsigned int mode_t
    ctypedef unsigned long dev_t
    cdef struct struct_stat "stat":
        mode_t st_mode
    int mkdir(const char *pathname, mode_t mode)
    int mkdirat(int dirfd, const char *pathname, mode_t mode)
    int mknod(const char *pathname, mode_t mode, dev_t dev)
    int chmod(const char *pathname, mode_t mode)
    int fstat(int fd, struct_stat *statbuf)
    int S_IFCHR, S_IFDIR, S_IFREG
    bint S_ISDIR(mode_t m)
    bint S_ISLNK(mode_t m)

cdef extern from "<unistd.h>" nogil:
    ctypedef int pid_t
    ctypedef long ssize_t
    int chdir(const char *path)
    int sethostname(const char *name, size_t len)
    int symlink(const char *target, const char *linkpath)
    int execve(const char *pathname, char *const argv[], char *const envp[])
    int dup2(int oldfd, int newfd)
    int close(int fd)
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int pipe2(int pipefd[2], int flags)
    void _exit(int status)
    long syscall(long number, ...)
    pid_t setsid()

cdef extern from "<fcntl.h>" nogil:
    int O_CLOEXEC, O_PATH, O_NOFOLLOW, O_DIRECTORY, O_CREAT, O_EXCL, O_WRONLY
    int F_DUPFD_CLOEXEC
    int fcntl(int fd, int cmd, ...)
    int open(const char *pathname, int flags, ...)
    int openat(int dirfd, const char *pathname, int flags, ...)

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)
    unsigned long TIOCSCTTY

cdef extern from "<sys/resource.h>" nogil:
    ctypedef unsigned long rlim_t
    cdef struct rlimit:
        rlim_t rlim_cur
        rlim_t rlim_max
    int setrlimit(int resource, const rlimit *rlim)

cdef extern from "<sys/syscall.h>" nogil:
    long SYS_pivot_root
    long SYS_close_range
    long SYS_setgroups, SYS_setresgid, SYS_setresuid
    long SYS_clone

cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, ...)
    int PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    int PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER

cdef extern from "<errno.h>" nogil:
    int errno
    int ENOENT, ENOTDIR, EACCES, EEXIST, EINTR, EPIPE, EINVAL, ELOOP, ENAMETOOLONG

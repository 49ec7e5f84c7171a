# C declarations of the Linux interfaces the spawner uses. Declarations only:
# no code lives here. Names and argument orders are the kernel's / glibc's, so
# the man pages (clone(2), mount(2), pivot_root(2), ...) describe them exactly.

cdef extern from "<sched.h>" nogil:
    int CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET
    # glibc's wrapper: runs fn(arg) on `stack` in the child (see clone(2)).
    int clone(int (*fn)(void *) noexcept nogil, void *stack, int flags, void *arg, ...)

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
    int mkdir(const char *pathname, mode_t mode)
    int mknod(const char *pathname, mode_t mode, dev_t dev)
    int chmod(const char *pathname, mode_t mode)
    int S_IFCHR

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

cdef extern from "<fcntl.h>" nogil:
    int O_CLOEXEC
    int F_DUPFD_CLOEXEC
    int fcntl(int fd, int cmd, ...)

cdef extern from "<sys/syscall.h>" nogil:
    long SYS_pivot_root
    long SYS_close_range

cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, ...)
    int PR_SET_PDEATHSIG

cdef extern from "<errno.h>" nogil:
    int errno
    int ENOENT, ENOTDIR, EACCES, EEXIST, EINTR, EPIPE

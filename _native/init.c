/* dockyard-init: the smallest useful init for a container (`dockyard run --init`).
 *
 * Usage: dockyard-init [--] COMMAND [ARG...]
 *
 * The first process of a PID namespace is its "init", and the kernel treats
 * it differently from every other process (pid_namespaces(7)):
 *
 *  1. It receives only the signals it has a handler for. A plain `sleep` as
 *     PID 1 has none, so `docker stop` (SIGTERM) does nothing and the engine
 *     falls back to SIGKILL ten seconds later.
 *  2. Every process of the namespace whose parent dies is re-parented to it.
 *     When such an orphan exits it stays a zombie until PID 1 wait()s for it,
 *     and most programs never do: zombies pile up.
 *
 * This program is PID 1 so that the command does not have to be: it starts
 * the command as its child, passes the usual termination and job-control
 * signals on to it, reaps every child that exits, and, when the command
 * exits, exits the same way (its status, or 128+n if a signal n killed it:
 * the shell's convention, which `docker run` reports too).
 *
 * Docker ships tini for this (as /sbin/docker-init); tini does the same
 * jobs with more options. This one is static (see setup.py) because it runs
 * inside images that have no C library of their own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* What `docker stop`, ^C, a closed terminal and a resized one send. */
static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

static int is_forwarded(int sig)
{
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        if (forwarded[i] == sig)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    int first = (argc > 1 && strcmp(argv[1], "--") == 0) ? 2 : 1;
    sigset_t all, original;
    pid_t child;

    if (first >= argc) {
        fprintf(stderr, "usage: %s [--] COMMAND [ARG...]\n", argv[0]);
        return 2;
    }

    /* Block every signal. Blocked signals are not lost (the kernel even
       queues them for PID 1, which would otherwise drop those it has no
       handler for): they wait until sigwaitinfo() below takes them, one at
       a time, in plain sequential code -- no handlers, no races. Blocking
       before fork() also means a SIGCHLD from a quick child cannot slip by. */
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &original);

    child = fork();
    if (child < 0) {
        perror("dockyard-init: fork");
        return 125;
    }
    if (child == 0) {
        /* The command gets its own process group and, when stdin is a
           terminal, becomes its foreground group: ^C then reaches it once,
           from the terminal, rather than twice (from the terminal and again
           from us). tcsetpgrp() from a background group would stop us with
           SIGTTOU, but that is blocked still. */
        setpgid(0, 0);
        if (isatty(STDIN_FILENO))
            tcsetpgrp(STDIN_FILENO, getpgrp());
        sigprocmask(SIG_SETMASK, &original, NULL);  /* exec keeps the mask: give it back */
        execvp(argv[first], argv + first);
        fprintf(stderr, "dockyard-init: exec %s: %s\n", argv[first], strerror(errno));
        _exit(errno == ENOENT || errno == ENOTDIR ? 127 : 126);
    }

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0)
            continue;  /* EINTR: nothing arrived */
        if (sig == SIGCHLD) {
            /* One SIGCHLD may stand for several exits: reap until none is left. */
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                if (pid != child)
                    continue;  /* an orphan we adopted: reaped, that is all it needed */
                /* The command is done. When we exit, the kernel kills whatever
                   else still runs in the namespace (pid_namespaces(7)). */
                if (WIFSIGNALED(status))
                    return 128 + WTERMSIG(status);
                return WEXITSTATUS(status);
            }
        } else if (is_forwarded(sig)) {
            kill(child, sig);
        }
        /* Any other signal is ignored, as PID 1 would ignore it anyway. */
    }
}

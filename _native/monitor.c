/*
 * dockyard-monitor: the small process that looks after one running container.
 *
 * One monitor runs per running container (podman has conmon, containerd a
 * shim, for the same reasons). It is the container process's *parent*, so
 * it is the one process that can waitpid(2) it and learn its exit status;
 * the container keeps PR_SET_PDEATHSIG=SIGKILL towards it, so if the
 * monitor is killed the container dies too and nothing is left running
 * that nobody watches. The monitor is not a child of the dockyard command
 * that started it (see engine/runtime/launcher.py), so the container
 * survives that command, a notebook kernel restart, a closed terminal.
 *
 * Read engine/runtime/monitor.py first: it is this program in Python, with
 * the same arguments, files and protocol (used when this one is not built,
 * or with DOCKYARD_PURE=1). This one exists because it is small: an idle
 * container costs the host a few hundred kilobytes, not a Python process.
 *
 * Lifecycle:
 *
 *   1. The launcher's intermediate process spawned the container, recorded
 *      it as running in container.json, created the listening socket
 *      containers/<id>/attach.sock and execve()d this program with every
 *      file descriptor and path on its command line.
 *   2. A poll(2) loop: the container's output (two pipes, or one pseudo-
 *      terminal master with -t) goes to the json-file log and to every
 *      attached client; clients' stdin frames go to the container's stdin;
 *      a signalfd(2) reports SIGCHLD and SIGTERM.
 *   3. The container exits: read what is left in the pipes, reap it, read
 *      the cgroup's OOM-kill counter, write exit.json atomically (temp file
 *      + rename), append "oom"/"die" to <root>/events.jsonl, and tell every
 *      client the exit status (an exit frame).
 *   4. Then, as the restart policy and --rm say: execv() the engine
 *      (`python -m engine _restart ID` or `_autoremove ID`, the same PID),
 *      or exit.
 *
 * The attach protocol (engine/runtime/attach.py) is docker's stdcopy
 * framing in both directions: an 8-byte header [stream, 0, 0, 0, length as
 * big-endian uint32] then the payload.
 *
 *   monitor -> client   1 stdout, 2 stderr (with a tty, everything is 1)
 *                       5 exit: the decimal exit code, last frame sent
 *   client -> monitor   0 stdin data
 *                       3 close stdin (the client's stdin reached EOF)
 *                       4 resize: "rows cols" (TIOCSWINSZ on the pty)
 *                       6 signal: a decimal signal number for the container
 *                       7 rename: the container's new name (for events)
 *
 * Build: setup.py compiles it statically (gcc -O2 -Wall -static -s).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum {
    STREAM_STDIN = 0, STREAM_STDOUT = 1, STREAM_STDERR = 2, CTL_CLOSE_STDIN = 3,
    CTL_RESIZE = 4, CTL_EXIT = 5, CTL_SIGNAL = 6, CTL_RENAME = 7,
};

#define MAX_CLIENTS 64
#define MAX_LIST 16
#define LINE_MAX_BYTES 16384          /* docker splits longer log lines at 16 KiB */
#define FRAME_MAX (1 << 20)           /* a client frame larger than this is a protocol error */
#define CLIENT_BACKLOG (4 << 20)      /* a client that falls this far behind is dropped */
#define STDIN_BACKLOG (1 << 20)       /* stop reading clients while stdin holds this much */

/* -- the command line ------------------------------------------------------- */

static struct {
    const char *id, *dir, *root, *name, *image, *started_at, *python;
    const char *log_path, *restart;
    pid_t pid;
    int out_fd, err_fd, pty_fd, stdin_fd, listen_fd;
    int clients[MAX_CLIENTS], nclients, remover_fd;
    long long log_max_size, oom_start;
    int log_max_file, restart_max, restart_count, auto_remove, release_network;
    const char *oom_files[MAX_LIST];
    const char *cgroups[MAX_LIST];
    int ncgroups;
    const char *cgroup_parents[MAX_LIST];
    int ncgroup_parents;
    int noom;
} opt = { .out_fd = -1, .err_fd = -1, .pty_fd = -1, .stdin_fd = -1, .listen_fd = -1,
          .remover_fd = -1, .restart = "no", .log_max_file = 1, .image = "", .name = "",
          .oom_start = -1 };

static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("dockyard-monitor: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(125);
}

static long long number(const char *flag, const char *text)
{
    char *end;
    errno = 0;
    long long n = strtoll(text, &end, 10);
    if (errno || *end || end == text)
        fatal("%s: not a number: %s", flag, text);
    return n;
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (strcmp(flag, "--auto-remove") == 0) { opt.auto_remove = 1; continue; }
        if (strcmp(flag, "--release-network") == 0) { opt.release_network = 1; continue; }
        if (i + 1 >= argc)
            fatal("%s needs a value", flag);
        const char *v = argv[++i];
        if (!strcmp(flag, "--id")) opt.id = v;
        else if (!strcmp(flag, "--dir")) opt.dir = v;
        else if (!strcmp(flag, "--root")) opt.root = v;
        else if (!strcmp(flag, "--name")) opt.name = v;
        else if (!strcmp(flag, "--image")) opt.image = v;
        else if (!strcmp(flag, "--started-at")) opt.started_at = v;
        else if (!strcmp(flag, "--python")) opt.python = v;
        else if (!strcmp(flag, "--pid")) opt.pid = (pid_t)number(flag, v);
        else if (!strcmp(flag, "--stdout")) opt.out_fd = (int)number(flag, v);
        else if (!strcmp(flag, "--stderr")) opt.err_fd = (int)number(flag, v);
        else if (!strcmp(flag, "--pty")) opt.pty_fd = (int)number(flag, v);
        else if (!strcmp(flag, "--stdin")) opt.stdin_fd = (int)number(flag, v);
        else if (!strcmp(flag, "--listen")) opt.listen_fd = (int)number(flag, v);
        else if (!strcmp(flag, "--client") || !strcmp(flag, "--remover")) {
            if (opt.nclients == MAX_CLIENTS) fatal("too many clients");
            opt.clients[opt.nclients++] = (int)number(flag, v);
            if (!strcmp(flag, "--remover")) opt.remover_fd = opt.clients[opt.nclients - 1];
        }
        else if (!strcmp(flag, "--log")) opt.log_path = v;
        else if (!strcmp(flag, "--log-max-size")) opt.log_max_size = number(flag, v);
        else if (!strcmp(flag, "--log-max-file")) opt.log_max_file = (int)number(flag, v);
        else if (!strcmp(flag, "--oom-start")) opt.oom_start = number(flag, v);
        else if (!strcmp(flag, "--oom-file")) {
            if (opt.noom == MAX_LIST) fatal("too many --oom-file");
            opt.oom_files[opt.noom++] = v;
        }
        else if (!strcmp(flag, "--cgroup")) {
            if (opt.ncgroups == MAX_LIST) fatal("too many --cgroup");
            opt.cgroups[opt.ncgroups++] = v;
        }
        else if (!strcmp(flag, "--cgroup-parent")) {
            if (opt.ncgroup_parents == MAX_LIST) fatal("too many --cgroup-parent");
            opt.cgroup_parents[opt.ncgroup_parents++] = v;
        }
        else if (!strcmp(flag, "--restart")) opt.restart = v;
        else if (!strcmp(flag, "--restart-max")) opt.restart_max = (int)number(flag, v);
        else if (!strcmp(flag, "--restart-count")) opt.restart_count = (int)number(flag, v);
        else fatal("unknown option %s", flag);
    }
    if (!opt.id || !opt.dir || !opt.root || !opt.pid || !opt.started_at || !opt.log_path)
        fatal("usage: dockyard-monitor --id ID --dir DIR --root ROOT --pid PID --started-at TIME "
              "--log PATH [--stdout FD --stderr FD | --pty FD] [--stdin FD] [--listen FD] ...");
}

/* -- small helpers ------------------------------------------------------------ */

/* Write all of buf, retrying short writes (a blocking fd). */
static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The time as docker writes it: RFC 3339 in UTC with nanoseconds. */
static void now_rfc3339(char out[40], long long *ns_out)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%09ldZ", ts.tv_nsec);
    if (ns_out) *ns_out = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if the bytes are not one
 * (RFC 3629, table 3-7 of the Unicode standard: no overlongs, no surrogates). */
static int utf8_length(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    int len; unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < (size_t)len || p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return len;
}

/* Append src as the inside of a JSON string to out, escaped the way docker's
 * json-file driver does (daemon/logger/jsonfilelog/jsonlog/jsonlogbytes.go):
 * quote, backslash and control characters; <, > and & as \u003c... (Go's
 * HTML-safe habit); U+2028/2029; every byte that is not valid UTF-8 becomes
 * U+FFFD. out needs room for 6 bytes per input byte. Returns the length. */
static size_t json_escape(char *out, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    char *o = out;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c >= 0x80) {
            int n = utf8_length(s + i, len - i);
            if (n == 0) { memcpy(o, "\\ufffd", 6); o += 6; i++; continue; }
            if (n == 3 && c == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
                memcpy(o, s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
                o += 6;
            } else {
                memcpy(o, s + i, (size_t)n);
                o += n;
            }
            i += (size_t)n;
            continue;
        }
        if (c == '"' || c == '\\') { *o++ = '\\'; *o++ = (char)c; }
        else if (c == '\n') { *o++ = '\\'; *o++ = 'n'; }
        else if (c == '\r') { *o++ = '\\'; *o++ = 'r'; }
        else if (c == '\t') { *o++ = '\\'; *o++ = 't'; }
        else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else *o++ = (char)c;
        i++;
    }
    return (size_t)(o - out);
}

static char path_buf[PATH_MAX];

static const char *in_dir(const char *name)
{
    snprintf(path_buf, sizeof path_buf, "%s/%s", opt.dir, name);
    return path_buf;
}

/* -- the json-file log ---------------------------------------------------------- */

static int log_fd = -1;
static long long log_size;
/* One log line: {"log":"<up to 6x16 KiB escaped>","stream":"stdout","time":"..."}\n */
static char entry[6 * LINE_MAX_BYTES + 128];

static void log_open(void)
{
    log_fd = open(opt.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd < 0) {
        fprintf(stderr, "dockyard-monitor: %s: %s\n", opt.log_path, strerror(errno));
        return;
    }
    struct stat st;
    log_size = fstat(log_fd, &st) == 0 ? st.st_size : 0;
}

/* max-size reached: <log>.1 becomes .2 ... the current file becomes .1
 * (docker's json-file rotation); with max-file 1 the file starts over. */
static void log_rotate(void)
{
    if (opt.log_max_file <= 1) {
        if (ftruncate(log_fd, 0) == 0) log_size = 0;
        return;
    }
    char from[PATH_MAX], to[PATH_MAX];
    for (int i = opt.log_max_file - 1; i >= 1; i--) {
        snprintf(to, sizeof to, "%s.%d", opt.log_path, i);
        if (i == 1) snprintf(from, sizeof from, "%s", opt.log_path);
        else snprintf(from, sizeof from, "%s.%d", opt.log_path, i - 1);
        rename(from, to);  /* a missing older file is fine */
    }
    close(log_fd);
    log_fd = -1;
    log_open();
}

static void log_write(const char *stream, const char *data, size_t len)
{
    if (log_fd < 0) return;
    if (opt.log_max_size > 0 && log_size >= opt.log_max_size) log_rotate();
    if (log_fd < 0) return;
    char now[40];
    now_rfc3339(now, NULL);
    size_t n = 0;
    n += (size_t)sprintf(entry, "{\"log\":\"");
    n += json_escape(entry + n, data, len);
    n += (size_t)sprintf(entry + n, "\",\"stream\":\"%s\",\"time\":\"%s\"}\n", stream, now);
    if (write_all(log_fd, entry, n) == 0) log_size += (long long)n;
}

/* -- the container's output, split into lines for the log ------------------------- */

struct output {
    int fd;              /* -1 once it reached end of file */
    int stream;          /* STREAM_STDOUT or STREAM_STDERR */
    const char *name;    /* "stdout" or "stderr" */
    char line[LINE_MAX_BYTES];
    size_t len;
};
static struct output outputs[2];
static int noutputs;

/* Log every complete line; a partial line only when the buffer is full or
 * the stream ended (flush_all), as docker does. */
static void log_lines(struct output *o, int flush_all)
{
    size_t start = 0;
    for (size_t i = 0; i < o->len; i++) {
        if (o->line[i] == '\n') {
            log_write(o->name, o->line + start, i + 1 - start);
            start = i + 1;
        }
    }
    if (start < o->len && (flush_all || (start == 0 && o->len == sizeof o->line))) {
        log_write(o->name, o->line + start, o->len - start);
        start = o->len;
    }
    memmove(o->line, o->line + start, o->len - start);
    o->len -= start;
}

/* -- attached clients ---------------------------------------------------------------- */

struct client {
    int fd;
    unsigned char head[8];   /* the frame header being read */
    size_t head_len;
    char *body;              /* the frame payload being read */
    size_t body_len, body_want;
    char *out;               /* frames not yet written to the socket */
    size_t out_len, out_cap;
};
static struct client *clients[MAX_CLIENTS];
static int nclients;

static void client_add(int fd)
{
    if (nclients == MAX_CLIENTS) { close(fd); return; }
    struct client *c = calloc(1, sizeof *c);
    if (!c) { close(fd); return; }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    clients[nclients++] = c;
}

static void client_drop(int i)
{
    struct client *c = clients[i];
    if (c->fd == opt.remover_fd) opt.remover_fd = -1;
    close(c->fd);
    free(c->body);
    free(c->out);
    free(c);
    clients[i] = clients[--nclients];
}

/* Write what we can without blocking; 0 if the client is still fine. */
static int client_flush(struct client *c)
{
    while (c->out_len > 0) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n <= 0) return -1;
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
    return 0;
}

/* Queue one frame for a client. A client that stops reading must not stop
 * the container (its output pipe would fill up): past CLIENT_BACKLOG it is
 * dropped instead. */
static int client_send(struct client *c, int stream, const char *data, size_t len)
{
    if (c->out_len + 8 + len > CLIENT_BACKLOG) return -1;
    if (c->out_len + 8 + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + 8 + len) cap *= 2;
        char *grown = realloc(c->out, cap);
        if (!grown) return -1;
        c->out = grown;
        c->out_cap = cap;
    }
    unsigned char *h = (unsigned char *)c->out + c->out_len;
    h[0] = (unsigned char)stream; h[1] = h[2] = h[3] = 0;
    h[4] = (unsigned char)(len >> 24); h[5] = (unsigned char)(len >> 16);
    h[6] = (unsigned char)(len >> 8); h[7] = (unsigned char)len;
    memcpy(c->out + c->out_len + 8, data, len);
    c->out_len += 8 + len;
    return client_flush(c);
}

static void broadcast(int stream, const char *data, size_t len)
{
    for (int i = 0; i < nclients; )
        if (client_send(clients[i], stream, data, len) < 0) client_drop(i);
        else i++;
}

/* -- the container's stdin ------------------------------------------------------------- */

static int stdin_fd = -1;       /* the pipe's write end, or the pty master */
static char *stdin_buf;
static size_t stdin_len, stdin_cap;
static int stdin_close_wanted;

static void stdin_flush(void)
{
    while (stdin_fd >= 0 && stdin_len > 0) {
        ssize_t n = write(stdin_fd, stdin_buf, stdin_len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) { stdin_len = 0; break; }  /* EPIPE: nobody reads stdin any more */
        memmove(stdin_buf, stdin_buf + n, stdin_len - (size_t)n);
        stdin_len -= (size_t)n;
    }
    if (stdin_close_wanted && stdin_len == 0 && stdin_fd >= 0) {
        if (stdin_fd == opt.pty_fd) {
            /* A terminal has no end of file to close: type ^D (VEOF) instead. */
            if (write(stdin_fd, "\x04", 1) < 0) { /* nobody reads: nothing to tell */ }
        } else close(stdin_fd);
        stdin_fd = -1;
    }
}

static void stdin_add(const char *data, size_t len)
{
    if (stdin_fd < 0) return;
    if (stdin_len + len > stdin_cap) {
        size_t cap = stdin_cap ? stdin_cap : 4096;
        while (cap < stdin_len + len) cap *= 2;
        char *grown = realloc(stdin_buf, cap);
        if (!grown) return;
        stdin_buf = grown;
        stdin_cap = cap;
    }
    memcpy(stdin_buf + stdin_len, data, len);
    stdin_len += len;
    stdin_flush();
}

/* -- frames from clients ------------------------------------------------------------------ */

static int child_exited;     /* waitpid has reported the container */
static int wait_status;

/* Reap every child that has exited; only the container matters. When it is
 * among them, note its status and when its output began to drain. */
static void reap_children(struct timespec *drain_start)
{
    int status;
    pid_t p;
    while ((p = waitpid(-1, &status, WNOHANG)) > 0)
        if (p == opt.pid) {
            child_exited = 1;
            wait_status = status;
            clock_gettime(CLOCK_MONOTONIC, drain_start);
        }
}
static char name_buf[256];

static void handle_frame(int stream, char *data, size_t len)
{
    char text[64];
    size_t n = len < sizeof text - 1 ? len : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = 0;
    switch (stream) {
    case STREAM_STDIN:
        stdin_add(data, len);
        break;
    case CTL_CLOSE_STDIN:
        stdin_close_wanted = 1;
        stdin_flush();
        break;
    case CTL_RESIZE: {
        /* TIOCSWINSZ on the master: the kernel sends SIGWINCH to the
         * terminal's foreground process group (tty_ioctl(4)). */
        struct winsize ws = {0};
        if (opt.pty_fd >= 0 && sscanf(text, "%hu %hu", &ws.ws_row, &ws.ws_col) == 2)
            ioctl(opt.pty_fd, TIOCSWINSZ, &ws);
        break;
    }
    case CTL_SIGNAL: {
        /* The container is our child and not yet reaped, so its PID cannot
         * belong to anyone else: no PID-reuse race, unlike kill from outside. */
        int sig = atoi(text);
        if (!child_exited && sig > 0 && sig < NSIG) kill(opt.pid, sig);
        break;
    }
    case CTL_RENAME:
        snprintf(name_buf, sizeof name_buf, "%s", text);
        opt.name = name_buf;
        break;
    default:
        break;  /* unknown control frames are ignored, for newer clients */
    }
}

/* Read what a client sent; -1 when it hung up or broke the protocol. */
static int client_read(struct client *c)
{
    char buf[65536];
    ssize_t got = read(c->fd, buf, sizeof buf);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (got <= 0) return -1;
    size_t i = 0, n = (size_t)got;
    while (i < n) {
        if (c->head_len < 8) {
            size_t take = 8 - c->head_len < n - i ? 8 - c->head_len : n - i;
            memcpy(c->head + c->head_len, buf + i, take);
            c->head_len += take;
            i += take;
            if (c->head_len < 8) break;
            c->body_want = (size_t)c->head[4] << 24 | (size_t)c->head[5] << 16 |
                           (size_t)c->head[6] << 8 | c->head[7];
            if (c->body_want > FRAME_MAX) return -1;
            c->body = realloc(c->body, c->body_want + 1);
            if (!c->body) return -1;
            c->body_len = 0;
        }
        size_t take = c->body_want - c->body_len < n - i ? c->body_want - c->body_len : n - i;
        memcpy(c->body + c->body_len, buf + i, take);
        c->body_len += take;
        i += take;
        if (c->body_len == c->body_want) {
            handle_frame(c->head[0], c->body, c->body_len);
            c->head_len = 0;
        }
    }
    return 0;
}

/* -- the end of the container --------------------------------------------------------------- */

static long long oom_count(void)
{
    /* v1 memory.oom_control and v2 memory.events both carry "oom_kill N". */
    long long total = 0;
    for (int i = 0; i < opt.noom; i++) {
        char buf[4096];
        int fd = open(opt.oom_files[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue;
        buf[n] = 0;
        for (char *line = buf; line && *line; ) {
            if (strncmp(line, "oom_kill ", 9) == 0) total += atoll(line + 9);
            line = strchr(line, '\n');
            if (line) line++;
        }
    }
    return total;
}

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* docker's restart policies (moby restartmanager): never after a user's stop. */
static int should_restart(int code)
{
    if (file_exists(in_dir("stopping"))) return 0;
    if (!strcmp(opt.restart, "always") || !strcmp(opt.restart, "unless-stopped")) return 1;
    if (!strcmp(opt.restart, "on-failure"))
        return code != 0 && (opt.restart_max <= 0 || opt.restart_count < opt.restart_max);
    return 0;
}

static void write_exit_json(int code, int oom, int restarting)
{
    char finished[40], tmp[PATH_MAX], final[PATH_MAX], body[512];
    now_rfc3339(finished, NULL);
    int n = snprintf(body, sizeof body,
                     "{\"StartedAt\":\"%s\",\"FinishedAt\":\"%s\",\"ExitCode\":%d,"
                     "\"OOMKilled\":%s,\"Restarting\":%s}\n",
                     opt.started_at, finished, code, oom ? "true" : "false",
                     restarting ? "true" : "false");
    snprintf(final, sizeof final, "%s/exit.json", opt.dir);
    snprintf(tmp, sizeof tmp, "%s/.exit.json.%d.tmp", opt.dir, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;  /* the container is being removed: nobody needs it */
    int ok = write_all(fd, body, (size_t)n) == 0;
    close(fd);
    if (!ok || rename(tmp, final) != 0) unlink(tmp);
}

/* One event, in the shape of docker's events API (api/types/events.Message). */
static void append_event(const char *action, int with_exit_code, int code)
{
    static char line[2048];
    char image[600], name[600], id[200], path[PATH_MAX], attrs[1400];
    long long ns;
    char now[40];
    now_rfc3339(now, &ns);
    image[json_escape(image, opt.image, strnlen(opt.image, 100))] = 0;
    name[json_escape(name, opt.name, strnlen(opt.name, 100))] = 0;
    id[json_escape(id, opt.id, strnlen(opt.id, 32))] = 0;
    if (with_exit_code)
        snprintf(attrs, sizeof attrs, "{\"exitCode\":\"%d\",\"image\":\"%s\",\"name\":\"%s\"}",
                 code, image, name);
    else
        snprintf(attrs, sizeof attrs, "{\"image\":\"%s\",\"name\":\"%s\"}", image, name);
    int n = snprintf(line, sizeof line,
                     "{\"status\":\"%s\",\"id\":\"%s\",\"from\":\"%s\",\"Type\":\"container\","
                     "\"Action\":\"%s\",\"Actor\":{\"ID\":\"%s\",\"Attributes\":%s},"
                     "\"scope\":\"local\",\"time\":%lld,\"timeNano\":%lld}\n",
                     action, opt.id, image, action, opt.id, attrs, ns / 1000000000LL, ns);
    snprintf(path, sizeof path, "%s/events.jsonl", opt.root);
    /* O_APPEND: each write lands at the end, whole, even with other writers. */
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (write_all(fd, line, (size_t)n) < 0) { /* an event lost is not worth dying for */ }
    close(fd);
}

/* Send the exit frame (to the client on only_fd, or to everyone when it is -1)
 * and give the clients up to 5 seconds to read what they have pending; a
 * client that does not read is dropped. */
static void say_goodbye(int code, int only_fd)
{
    char text[16];
    int n = snprintf(text, sizeof text, "%d", code);
    for (int i = 0; i < nclients; )
        if ((only_fd < 0 || clients[i]->fd == only_fd) &&
            client_send(clients[i], CTL_EXIT, text, (size_t)n) < 0)
            client_drop(i);
        else i++;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct pollfd pfd[MAX_CLIENTS];
        int n_wait = 0;
        for (int i = 0; i < nclients; i++)
            if (clients[i]->out_len > 0) pfd[n_wait++] = (struct pollfd){ clients[i]->fd, POLLOUT, 0 };
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (n_wait == 0 || elapsed >= 5000) break;
        poll(pfd, (nfds_t)n_wait, (int)(5000 - elapsed));
        for (int i = 0; i < nclients; )
            if (client_flush(clients[i]) < 0) client_drop(i);
            else i++;
    }
}

/* Wait until the remover client has removed the container and hung up. */
static void wait_for_remover(void)
{
    while (opt.remover_fd >= 0) {
        struct pollfd pfd = { opt.remover_fd, POLLIN, 0 };
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) return;
        for (int i = 0; i < nclients; i++)
            if (clients[i]->fd == opt.remover_fd) {
                char buf[4096];
                ssize_t n = read(clients[i]->fd, buf, sizeof buf);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) client_drop(i);
                break;
            }
    }
}

/* Replace this process with `python -m engine --root ROOT <command> ID`,
 * handing over the clients that are still attached. */
static void exec_engine(const char *command)
{
    char *argv[8 + 2 * MAX_CLIENTS];
    char fds[MAX_CLIENTS][16];
    int a = 0;
    argv[a++] = (char *)opt.python;
    argv[a++] = "-m";
    argv[a++] = "engine";
    argv[a++] = "--root";
    argv[a++] = (char *)opt.root;
    argv[a++] = (char *)command;
    argv[a++] = (char *)opt.id;
    for (int i = 0; i < nclients; i++) {
        fcntl(clients[i]->fd, F_SETFL, fcntl(clients[i]->fd, F_GETFL) & ~O_NONBLOCK);
        fcntl(clients[i]->fd, F_SETFD, 0);   /* keep it across execve */
        snprintf(fds[i], sizeof fds[i], "%d", clients[i]->fd);
        argv[a++] = "--client";
        argv[a++] = fds[i];
    }
    argv[a] = NULL;
    if (opt.python) execv(opt.python, argv);
    fprintf(stderr, "dockyard-monitor: cannot run %s %s: %s\n", opt.python ? opt.python : "(no --python)",
            command, strerror(errno));
}

static long long oom_at_start;   /* the counter when we started: the cgroup may be reused */

/* Remove the container's cgroup directories once it has exited, as runc
 * delete does for docker: a stopped container holds no cgroup. rmdir(2)
 * fails with EBUSY until the last process of the cgroup has left it (the
 * kernel kills the rest of the PID namespace when its init exits); wait
 * up to a second for that. The engine removes what is left on `rm`. */
static void remove_cgroups(void)
{
    for (int i = 0; i < opt.ncgroups; i++)
        for (int tries = 0; tries < 100; tries++) {
            if (rmdir(opt.cgroups[i]) == 0 || errno != EBUSY) break;
            struct timespec ts = { 0, 10 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
    /* Then the dockyard parents, if this was the last container: a parent
     * that still has another container's directory refuses with EBUSY. */
    for (int i = 0; i < opt.ncgroup_parents; i++)
        rmdir(opt.cgroup_parents[i]);
}

static void finish(void)
{
    int code = WIFSIGNALED(wait_status) ? 128 + WTERMSIG(wait_status) : WEXITSTATUS(wait_status);
    int oom = oom_count() > oom_at_start;
    int restart = should_restart(code);

    for (int i = 0; i < noutputs; i++) log_lines(&outputs[i], 1);
    /* No new attachers from now on. */
    if (opt.listen_fd >= 0) {
        close(opt.listen_fd);
        unlink(in_dir("attach.sock"));
    }
    write_exit_json(code, oom, restart);
    if (!restart) remove_cgroups();
    if (oom) append_event("oom", 0, 0);
    append_event("die", 1, code);

    if (restart) {
        say_goodbye(code, -1);
        while (nclients) client_drop(0);
        exec_engine("_restart");
        exit(125);
    }
    if (opt.auto_remove) {
        if (opt.remover_fd >= 0) {
            /* The attached `run --rm` removes the container itself (it is
             * quicker than starting Python here); the others hear the exit
             * once that is done. */
            say_goodbye(code, opt.remover_fd);
            wait_for_remover();
        }
        if (file_exists(in_dir("container.json"))) {
            exec_engine("_autoremove");
            exit(125);
        }
    }
    say_goodbye(code, -1);
    if (opt.release_network && !file_exists(in_dir("stopping"))) {
        /* (A stop or rm in progress releases it itself, and waits for us.) */
        /* The container's veths, addresses and peers' /etc/hosts entries go
         * now, not at the next engine command (engine/network/sandbox.py). */
        exec_engine("_netdown");
        exit(125);
    }
    exit(0);
}

/* -- the loop ---------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    parse_args(argc, argv);

    /* Signals arrive as reads from a signalfd, in the loop like everything
     * else (signalfd(2)). SIGPIPE: a client that left is not a reason to die. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);   /* SIG_IGN (inherited) would reap the container behind our back */
    int sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sig_fd < 0) fatal("signalfd: %s", strerror(errno));

    log_open();
    /* The launcher read the counter before the spawn: a container killed by the
     * OOM killer in its first milliseconds must still count (--oom-start). */
    oom_at_start = opt.oom_start >= 0 ? opt.oom_start : oom_count();

    if (opt.pty_fd >= 0) {
        outputs[noutputs++] = (struct output){ .fd = opt.pty_fd, .stream = STREAM_STDOUT, .name = "stdout" };
        stdin_fd = opt.stdin_fd >= 0 ? opt.pty_fd : -1;  /* --stdin: -i was given */
    } else {
        if (opt.out_fd >= 0)
            outputs[noutputs++] = (struct output){ .fd = opt.out_fd, .stream = STREAM_STDOUT, .name = "stdout" };
        if (opt.err_fd >= 0)
            outputs[noutputs++] = (struct output){ .fd = opt.err_fd, .stream = STREAM_STDERR, .name = "stderr" };
        stdin_fd = opt.stdin_fd;
    }
    for (int i = 0; i < noutputs; i++) fcntl(outputs[i].fd, F_SETFD, FD_CLOEXEC);
    if (stdin_fd >= 0) {
        fcntl(stdin_fd, F_SETFD, FD_CLOEXEC);
        fcntl(stdin_fd, F_SETFL, fcntl(stdin_fd, F_GETFL) | O_NONBLOCK);
    }
    if (opt.listen_fd >= 0) {
        fcntl(opt.listen_fd, F_SETFD, FD_CLOEXEC);
        fcntl(opt.listen_fd, F_SETFL, fcntl(opt.listen_fd, F_GETFL) | O_NONBLOCK);
    }
    for (int i = 0; i < opt.nclients; i++) client_add(opt.clients[i]);

    /* A container that exited before we got here is already our zombie, and
     * its SIGCHLD was discarded (the default action is to ignore it, so an
     * unblocked SIGCHLD is not left pending: signal(7)). Look once now; from
     * here on SIGCHLD is blocked and waits in the signalfd. */
    struct timespec drain_start = {0};
    reap_children(&drain_start);
    for (;;) {
        int open_outputs = 0;
        for (int i = 0; i < noutputs; i++) open_outputs += outputs[i].fd >= 0;
        if (child_exited && open_outputs == 0) break;

        struct pollfd pfd[4 + 2 + MAX_CLIENTS];
        int kind[4 + 2 + MAX_CLIENTS], index[4 + 2 + MAX_CLIENTS];
        int n = 0;
        pfd[n] = (struct pollfd){ sig_fd, POLLIN, 0 }; kind[n++] = 's';
        if (opt.listen_fd >= 0) { pfd[n] = (struct pollfd){ opt.listen_fd, POLLIN, 0 }; kind[n++] = 'l'; }
        for (int i = 0; i < noutputs; i++)
            if (outputs[i].fd >= 0) {
                short ev = POLLIN;
                if (outputs[i].fd == stdin_fd && stdin_len > 0) ev |= POLLOUT;
                pfd[n] = (struct pollfd){ outputs[i].fd, ev, 0 };
                kind[n] = 'o'; index[n++] = i;
            }
        if (stdin_fd >= 0 && stdin_fd != opt.pty_fd && stdin_len > 0) {
            pfd[n] = (struct pollfd){ stdin_fd, POLLOUT, 0 }; kind[n++] = 'i';
        }
        for (int i = 0; i < nclients; i++) {
            short ev = stdin_len < STDIN_BACKLOG ? POLLIN : 0;
            if (clients[i]->out_len > 0) ev |= POLLOUT;
            pfd[n] = (struct pollfd){ clients[i]->fd, ev, 0 };
            kind[n] = 'c'; index[n++] = clients[i]->fd;
        }

        /* Once the container is gone, whatever it left in the pipes is read;
         * a descendant that escaped with a copy of them does not hold us up
         * for more than two seconds. */
        int timeout = -1;
        if (child_exited) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long elapsed = (now.tv_sec - drain_start.tv_sec) * 1000 +
                           (now.tv_nsec - drain_start.tv_nsec) / 1000000;
            if (elapsed >= 2000) break;
            timeout = (int)(2000 - elapsed);
        }
        if (poll(pfd, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR) continue;
            fatal("poll: %s", strerror(errno));
        }

        for (int k = 0; k < n; k++) {
            if (!pfd[k].revents) continue;
            if (kind[k] == 's') {
                struct signalfd_siginfo si;
                while (read(sig_fd, &si, sizeof si) == sizeof si) {
                    if (si.ssi_signo == SIGTERM) {
                        /* Told to stop (the host shutting down, or `stop`
                         * during a restart): the container goes with us. */
                        opt.restart = "no";
                        opt.auto_remove = 0;
                        if (!child_exited) kill(opt.pid, SIGKILL);
                    }
                }
                reap_children(&drain_start);
            } else if (kind[k] == 'l') {
                int fd;
                while ((fd = accept4(opt.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0)
                    client_add(fd);
            } else if (kind[k] == 'o') {
                struct output *o = &outputs[index[k]];
                if (pfd[k].revents & POLLOUT) stdin_flush();
                if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                ssize_t got = read(o->fd, o->line + o->len, sizeof o->line - o->len);
                if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                if (got <= 0) {
                    /* End of file (a pty master reads EIO once the slave is
                     * closed everywhere: pty(7)). */
                    log_lines(o, 1);
                    if (o->fd != stdin_fd) close(o->fd);
                    o->fd = -1;
                    continue;
                }
                broadcast(o->stream, o->line + o->len, (size_t)got);
                o->len += (size_t)got;
                log_lines(o, 0);
            } else if (kind[k] == 'i') {
                stdin_flush();
            } else if (kind[k] == 'c') {
                for (int i = 0; i < nclients; i++) {
                    if (clients[i]->fd != index[k]) continue;
                    int bad = 0;
                    if (pfd[k].revents & POLLOUT) bad = client_flush(clients[i]) < 0;
                    if (!bad && (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                        bad = client_read(clients[i]) < 0;
                    if (bad) client_drop(i);
                    break;
                }
            }
        }
    }
    finish();
    return 0;
}

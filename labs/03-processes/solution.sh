#!/bin/sh
# Lab 03 -- reference solution. Re-runnable: it first removes the containers
# an earlier run made (-f: also running and paused ones).
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine");
# it is left unquoted on purpose so that it may be several words.
set -e
DOCKYARD=${DOCKYARD:-dockyard}

$DOCKYARD rm -f mem64 frozen web 2>/dev/null || true

# 1. mem64: 64 MiB of memory, and memory + swap = 64 MiB too, so no swap.
# `tail` keeps the last lines of its input in memory, and /dev/zero never
# ends its first line: tail grows until the OOM killer kills it. tail is the
# container's main process, so the container exits with 137 (128 + SIGKILL).
$DOCKYARD run -d --name mem64 -m 64m --memory-swap 64m busybox tail /dev/zero
$DOCKYARD wait mem64                    # prints 137
$DOCKYARD inspect -f 'OOMKilled={{.State.OOMKilled}} ExitCode={{.State.ExitCode}}' mem64

# 2. frozen: a counter that prints for ever, frozen by the cgroup freezer.
# Single quotes: the container's shell, not ours, expands $i.
$DOCKYARD run -d --name frozen busybox \
    sh -c 'i=0; while true; do i=$((i + 1)); echo "tick $i"; sleep 0.2; done'
sleep 0.5                               # let it print a few ticks first
$DOCKYARD pause frozen

# 3. web: busybox's web server, serving /tmp; exec a shell in it to write the
# file. The redirection is inside the single quotes: it is the container's
# shell that opens /tmp/hello, in the container's file system.
$DOCKYARD run -d --name web busybox httpd -f -p 8080 -h /tmp
$DOCKYARD exec web sh -c 'echo "hello from exec" > /tmp/hello'
$DOCKYARD exec web cat /tmp/hello

$DOCKYARD ps -a

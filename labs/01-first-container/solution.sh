#!/bin/sh
# Lab 01 -- reference solution. Re-runnable: it first removes an earlier lab01.
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine");
# it is left unquoted on purpose so that it may be several words.
set -e
DOCKYARD=${DOCKYARD:-dockyard}

$DOCKYARD rm -f lab01 2>/dev/null || true

# The sh -c command is in single quotes so that *the container's* shell expands
# $GREETING (set by -e) and $(hostname) (set by -h), not the shell on the host.
$DOCKYARD run --name lab01 -h dockyard-lab -e GREETING=hello busybox \
    sh -c 'echo "$GREETING from $(hostname)" > /greeting.txt'

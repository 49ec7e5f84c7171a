#!/bin/sh
# Lab 03 -- processes, cgroups and exec. The starting point: it runs nothing yet.
#
# TODO: replace the echo below with the commands that leave the three
# containers described in README.md in your Dockyard root:
#   mem64   limited to 64 MiB, no swap, OOM-killed (exit 137, OOMKilled true)
#   frozen  running a command that prints for ever, then paused
#   web     running, with /tmp/hello ("hello from exec") written by `dockyard exec`
# Then check your work with:  pytest labs/03-processes
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine").
DOCKYARD=${DOCKYARD:-dockyard}

echo "lab 03: nothing has been run yet -- edit start.sh (see README.md)"
exit 0

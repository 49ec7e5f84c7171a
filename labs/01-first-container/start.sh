#!/bin/sh
# Lab 01 -- your first container. The starting point: it runs nothing yet.
#
# TODO: replace the echo below with ONE `dockyard run` command that makes the
# container described in README.md (name lab01, hostname dockyard-lab,
# GREETING=hello, writes /greeting.txt, exits 0; no --rm).
# Then check your work with:  pytest labs/01-first-container
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine").
DOCKYARD=${DOCKYARD:-dockyard}

echo "lab 01: nothing has been run yet -- edit start.sh (see README.md)"
exit 0

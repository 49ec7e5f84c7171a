#!/bin/sh
# Lab 04 -- build the image lab04/app:1 from the build context app/.
#
# This script stays as it is: YOUR work is app/Dockerfile and a new
# app/.dockerignore (see README.md). Run it after every change, then check
# your work with:  pytest labs/04-build
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine");
# $LAB04_CONTEXT the build context (default: the app/ directory next to this
# script). Both are left unquoted where they may be several words.
set -e
DOCKYARD=${DOCKYARD:-dockyard}
CONTEXT=${LAB04_CONTEXT:-$(dirname "$0")/app}

$DOCKYARD build -t lab04/app:1 "$CONTEXT"

#!/bin/sh
# Lab 02 -- layers by hand. The starting point: it builds nothing yet.
#
# TODO: replace the echo below with the commands that build the image
# lab02/app:v2 described in README.md: two `dockyard run` + `dockyard commit`
# rounds on top of busybox (the first adds /app/data.bin, the second deletes it
# and adds /app/README), CMD ["cat", "/app/README"] and the label
# course=dockyard -- and no dangling image left in the store.
# Then check your work with:  pytest labs/02-layers
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine").
DOCKYARD=${DOCKYARD:-dockyard}

echo "lab 02: nothing has been built yet -- edit start.sh (see README.md)"
exit 0

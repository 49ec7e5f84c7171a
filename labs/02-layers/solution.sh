#!/bin/sh
# Lab 02 -- reference solution. Re-runnable: it first removes what an earlier
# run made (its two containers and its images).
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine");
# it is left unquoted on purpose so that it may be several words.
set -e
DOCKYARD=${DOCKYARD:-dockyard}

# Start clean. Removing lab02/app:v2 also deletes its untagged parent (the
# old v1), so the second rmi usually has nothing left to do.
$DOCKYARD rm -f lab02-add lab02-del 2>/dev/null || true
$DOCKYARD rmi lab02/app:v2 2>/dev/null || true
$DOCKYARD rmi lab02/app:v1 2>/dev/null || true

# Layer 1: a container from busybox writes 1 MiB to /app/data.bin; commit it.
$DOCKYARD run --name lab02-add busybox \
    sh -c 'mkdir -p /app && head -c 1048576 /dev/urandom > /app/data.bin'
$DOCKYARD commit -m "add data.bin" lab02-add lab02/app:v1

# Layer 2: a container from THAT image deletes the file (overlayfs records a
# whiteout, the commit turns it into app/.wh.data.bin) and writes the README.
# The run config comes from the container (its Cmd is the sh -c above), so the
# commit sets CMD and LABEL with -c, in Dockerfile syntax; CMD in JSON form.
$DOCKYARD run --name lab02-del lab02/app:v1 \
    sh -c 'rm /app/data.bin && echo "data.bin was here, and still is, in layer 1" > /app/README'
$DOCKYARD commit -m "delete data.bin, add README" \
    -c 'CMD ["cat", "/app/README"]' -c 'LABEL course=dockyard' \
    lab02-del lab02/app:v2

# Tidy up. The containers are not needed any more. Without its tag, v1 stays
# as an *intermediate* image (v2 needs its layers): `images -a` shows it, and
# it is not dangling. Finally delete whatever dangling images remain.
$DOCKYARD rm lab02-add lab02-del
$DOCKYARD rmi lab02/app:v1
$DOCKYARD image prune -f

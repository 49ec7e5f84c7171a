#!/bin/sh
# Lab 05 -- reference solution. Re-runnable: it first removes the containers
# and the network an earlier run made.
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine"); it
# is left unquoted on purpose so that it may be several words. $LAB05_PORT is
# the host port (8080 unless you set it).
set -e
DOCKYARD=${DOCKYARD:-dockyard}
PORT=${LAB05_PORT:-8080}

$DOCKYARD rm -f web db 2>/dev/null || true
$DOCKYARD network rm appnet 2>/dev/null || true   # refused while other containers use it

# A user-defined bridge network: its own bridge and subnet, and names for
# every container on it (docker's embedded DNS; Dockyard writes /etc/hosts).
$DOCKYARD network inspect appnet >/dev/null 2>&1 || $DOCKYARD network create appnet

# db: on appnet; its name "db" is known to everyone on appnet, at once and
# for containers that join later too. No -p: only web needs to reach it.
$DOCKYARD run -d --name db --network appnet busybox nc -ll -p 5432 -e echo "db: ok"

# web: on appnet, with one more name there (the alias www); its port 80
# published on the host's loopback only (-p IP:HOST_PORT:CONTAINER_PORT).
# The page is written by the container's shell (inside the single quotes),
# then exec makes httpd the container's main process; -f keeps it in the
# foreground, so the container runs as long as the server does.
$DOCKYARD run -d --name web --network appnet --network-alias www -p "127.0.0.1:$PORT:80" busybox \
    sh -c 'mkdir -p /www && echo "hello from web" > /www/index.html && exec httpd -f -p 80 -h /www'

$DOCKYARD ps
$DOCKYARD port web
$DOCKYARD exec web nc db 5432
$DOCKYARD exec db wget -qO- http://www/

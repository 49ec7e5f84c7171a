#!/bin/sh
# Lab 05 -- web and db, the starting point: connected the way the study notes
# do it (容器间的互联), with --link on the default bridge and -p HOST:CONTAINER.
# It works in one direction only. YOUR work: rewrite this script (see
# README.md) so that both containers are on a user-defined network appnet,
# find each other by name (web also by its alias www), and web is published
# on 127.0.0.1:8080 only. Then check your work with:  pytest labs/05-network
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine"); it
# is left unquoted on purpose so that it may be several words. $LAB05_PORT is
# the host port (8080 unless you set it).
set -e
DOCKYARD=${DOCKYARD:-dockyard}
PORT=${LAB05_PORT:-8080}

# Re-runnable: remove what an earlier run made (-f: running ones too).
$DOCKYARD rm -f web db 2>/dev/null || true

# db: the "database". busybox's nc listens on port 5432 (-ll: for ever) and
# answers every connection with the line "db: ok".
$DOCKYARD run -d --name db busybox nc -ll -p 5432 -e echo "db: ok"

# web: busybox's web server with one page, linked to db, published on the host.
$DOCKYARD run -d --name web --link db:db -p "$PORT:80" busybox \
    sh -c 'mkdir -p /www && echo "hello from web" > /www/index.html && exec httpd -f -p 80 -h /www'

$DOCKYARD ps

#!/bin/sh
# install-deps.sh: "download" the libraries of requirements.txt into vendor/.
# Slow, like every real download (pip install, npm ci, mvn dependency:go-offline):
# a good Dockerfile lets the build cache keep its result while only src/ changes.
set -e
mkdir -p vendor
grep -v '^#' requirements.txt | while IFS='=' read -r name _ version; do
    [ -n "$name" ] || continue
    echo "downloading $name $version"
    sleep 0.3
    echo "# $name $version (vendored by install-deps.sh)" > "vendor/$name.sh"
done

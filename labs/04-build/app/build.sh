#!/bin/sh
# build.sh: "compile" lab04-app: bundle vendor/ and src/ into dist/.
# Needs vendor/ (run install-deps.sh first). dist/ is what the app needs at run time.
set -e
[ -d vendor ] || { echo "build.sh: no vendor/ here: run install-deps.sh first" >&2; exit 1; }
rm -rf dist
mkdir -p dist/www
cat vendor/*.sh src/app.sh > dist/app.sh
cp src/www/* dist/www/
echo "built dist/app.sh and dist/www/"

#!/bin/sh
# Lab 04 -- reference solution. It writes the reference Dockerfile and
# .dockerignore into the build context -- keeping yours, the first time, as
# Dockerfile.mine and .dockerignore.mine -- then builds lab04/app:1 exactly
# as start.sh does. Re-runnable.
#
# $DOCKYARD is the dockyard command (tests set it to "python -m engine");
# $LAB04_CONTEXT the build context (default: the app/ directory next to this script).
set -e
DOCKYARD=${DOCKYARD:-dockyard}
CONTEXT=${LAB04_CONTEXT:-$(dirname "$0")/app}

for f in Dockerfile .dockerignore; do
    if [ -f "$CONTEXT/$f" ] && [ ! -e "$CONTEXT/$f.mine" ]; then
        cp "$CONTEXT/$f" "$CONTEXT/$f.mine"
    fi
done

# The build context without what no image needs: the secret above all (it
# would be sent to the builder and could be copied into a layer), and the
# output of a build on the host.
cat > "$CONTEXT/.dockerignore" <<'IGNORE'
secrets/
vendor/
dist/
*.mine
IGNORE

cat > "$CONTEXT/Dockerfile" <<'DOCKERFILE'
# -- build stage: the tools and the sources; nothing of it ships ------------
FROM busybox AS build
WORKDIR /build
# What changes rarely first: the dependency list and the tool that reads it.
# While they are unchanged, the slow download below comes from the cache.
COPY requirements.txt install-deps.sh ./
RUN sh install-deps.sh
# What changes often last: a change in src/ re-runs only the steps from here.
COPY build.sh ./
COPY src/ src/
RUN sh build.sh

# -- runtime stage: busybox, the bundle, the config; no tools, no sources ----
FROM busybox
LABEL maintainer="Lab 04 <lab04@example.com>" \
      org.opencontainers.image.version="1.0"
WORKDIR /app
# --chown: the files belong to the user the app runs as, who must write www/.
COPY --from=build --chown=nobody:nogroup /build/dist/ ./
COPY --chown=nobody:nogroup config/ config/
USER nobody
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1
# Exec form: app.sh is the program, CMD its default arguments, and the
# arguments of `dockyard run lab04/app:1 ...` replace the CMD.
ENTRYPOINT ["sh", "/app/app.sh"]
CMD ["--port", "8080"]
DOCKERFILE

$DOCKYARD build -t lab04/app:1 "$CONTEXT"

"""Checker for lab 04, "A Dockerfile".

Run it after your own attempt (see README.md)::

    pytest labs/04-build

It reads the real state of your Dockyard root ($DOCKYARD_ROOT, or
/var/lib/dockyard) through Dockyard's Python API: the image ``lab04/app:1``,
its config, its history and its layer tars (opened with :mod:`tarfile`, as
any tool that unpacks an image would). It runs the image twice: once with
``--once``, once as a server whose HEALTHCHECK command it runs by hand. And
it reads your build context (``app/`` next to this file, or
$LAB04_CONTEXT): its ``.dockerignore``, and it REBUILDS a copy of it twice,
unchanged and with ``src/app.sh`` changed, to see which steps the build
cache keeps. Whatever those builds and runs add to your root is removed at
the end. Each test checks one thing and, when it fails, says what to do.
While the image is missing, the tests that need it are skipped.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

NAME = "lab04/app:1"
LAB = Path(__file__).resolve().parent
CONTEXT = Path(os.environ.get("LAB04_CONTEXT") or LAB / "app")
WORKDIR = "/app"
PORT = "8080/tcp"
ENTRYPOINT = ["sh", "/app/app.sh"]
CMD = ["--port", "8080"]
VERSION_LABEL = ("org.opencontainers.image.version", "1.0")
SECRET = "secrets/api-token"
BUILD_FILES = ("requirements.txt", "install-deps.sh", "build.sh")   # inputs of the build stage
BUILD_DIRS = ("src", "vendor")
SHELL_FORM = ["/bin/sh", "-c"]
START = "sh labs/04-build/start.sh"


def require(condition, hint: str) -> None:
    """Fail with just the hint: the learner needs what to do, not the checker's code."""
    if not condition:
        pytest.fail(hint, pytrace=False)


def find(engine, name: str):
    from engine.errors import NotFound

    try:
        return engine.images.get(name)
    except NotFound:
        return None


def shown(argv) -> str:
    return json.dumps(argv)


def layer_members(engine, descriptor):
    """(name, TarInfo, content of small regular files or None) for one layer tar."""
    with engine.content.open(descriptor.digest) as blob:
        with tarfile.open(fileobj=blob, mode="r|*") as tar:
            for member in tar:
                data = None
                if member.isfile() and member.size <= 1 << 16:
                    data = tar.extractfile(member).read()
                yield member.name.removeprefix("./").rstrip("/"), member, data


@dataclass
class Files:
    """The image's files as a container sees them (layers applied, whiteouts honoured)."""

    all: dict            # path -> TarInfo, every layer
    added: dict          # path -> TarInfo, only what the layers above busybox's left visible
    passwd: str          # the text of etc/passwd


def merged(engine, image, base_layers: int) -> Files:
    files, added, passwd = {}, {}, ""
    for index, descriptor in enumerate(image.layers):
        layer = {}
        for name, member, data in layer_members(engine, descriptor):
            parent, base = posixpath.split(name)
            if base == ".wh..wh..opq":
                for view in (files, added):
                    for path in [p for p in view if p.startswith(parent + "/")]:
                        del view[path]
            elif base.startswith(".wh."):
                gone = posixpath.join(parent, base[4:])
                for view in (files, added):
                    for path in [p for p in view if p == gone or p.startswith(gone + "/")]:
                        del view[path]
            else:
                layer[name] = member
                if name == "etc/passwd" and data is not None:
                    passwd = data.decode("utf-8", "replace")
        files.update(layer)
        if index >= base_layers:
            added.update(layer)
    return Files(files, added, passwd)


def resolve_uid(user: str, passwd: str) -> int | None:
    """The uid a USER value means in this image (None: no such user)."""
    name = user.partition(":")[0]
    if name.isdigit():
        return int(name)
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def exec_form(argv) -> bool:
    return bool(argv) and list(argv[:2]) != SHELL_FORM


# -- fixtures: what the tests look at --------------------------------------------


@pytest.fixture(scope="module")
def learner():
    """The learner's own engine ($DOCKYARD_ROOT or /var/lib/dockyard)."""
    from engine import Engine

    return Engine()


@pytest.fixture(scope="module")
def app(learner):
    """The learner's image ``lab04/app:1``; the test is skipped while it does not exist."""
    image = find(learner, NAME)
    if image is None:
        pytest.skip(f"there is no image {NAME} yet (see test_image_exists)")
    return image


@pytest.fixture(scope="module")
def busybox(learner):
    image = find(learner, "busybox")
    if image is None:
        pytest.skip("busybox is not in this root (see test_runtime_stage_is_busybox)")
    return image


@pytest.fixture(scope="module")
def files(learner, app, busybox):
    base = len(busybox.layers) if app.diff_ids[:len(busybox.diff_ids)] == busybox.diff_ids else 0
    return merged(learner, app, base)


@pytest.fixture(scope="module")
def user_uid(app, files):
    """The uid the app runs as; skipped while the image has no usable non-root USER."""
    user = app.run_config.get("User") or ""
    uid = resolve_uid(user, files.passwd) if user else 0
    if uid is None or uid == 0:
        pytest.skip("the image has no non-root USER (see test_user_is_not_root)")
    return uid


@dataclass
class Rebuilds:
    """The checker's two builds of a copy of the context (see the module docstring)."""

    same: tuple | None = None       # (image, steps): the copy as it is
    changed: tuple | None = None    # (image, steps): src/app.sh changed
    error: str | None = None


def copy_context(source: Path, target: Path) -> None:
    """Copy the build context with modes and owners (the build cache compares both)."""
    shutil.copytree(source, target, symlinks=True)
    for directory, dirnames, filenames in os.walk(source):
        for name in [".", *dirnames, *filenames]:
            path = Path(directory, name)
            st = path.lstat()
            os.lchown(target / path.relative_to(source), st.st_uid, st.st_gid)


@pytest.fixture(scope="module")
def rebuilds(learner):
    """Build a copy of the context twice; afterwards remove every image those builds made."""
    from engine.errors import EngineError

    if os.geteuid() != 0:
        pytest.skip("building needs root (RUN steps run in containers)")
    if not (CONTEXT / "Dockerfile").is_file():
        pytest.skip(f"there is no {CONTEXT}/Dockerfile (see test_built_from_the_current_dockerfile)")
    before = {im.manifest_digest for im in learner.images.list(all=True)}
    scratch = Path(tempfile.mkdtemp(prefix="lab04-check-"))
    result = Rebuilds()
    try:
        copy = scratch / "context"
        copy_context(CONTEXT, copy)
        try:
            result.same = learner.images.build(path=str(copy))
            app_sh = copy / "src" / "app.sh"
            if app_sh.is_file():
                app_sh.write_text(app_sh.read_text() + "\n# a change made by the lab 04 checker\n")
                result.changed = learner.images.build(path=str(copy))
        except EngineError as e:
            result.error = f"{type(e).__name__}: {e}"
        yield result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for _ in range(100):  # the new images, leaves first: untagged, so each is dangling in turn
            new = [im for im in learner.images.list(all=True)
                   if im.manifest_digest not in before and im.dangling]
            if not new:
                break
            for im in new:
                learner.images.remove(im.id, noprune=True)


def built(rebuilds: Rebuilds, which: str):
    if rebuilds.error:
        pytest.fail(
            f"The checker could not build a copy of your build context {CONTEXT}: "
            f"{rebuilds.error}. Run `{START}` to see the whole build log.", pytrace=False)
    result = getattr(rebuilds, which)
    if result is None:
        pytest.fail(f"The checker could not change {CONTEXT}/src/app.sh in its copy: there is "
                    f"no such file. The app's source must stay at src/app.sh.", pytrace=False)
    return result


def run_app(engine, image, command=None, timeout: float = 10.0):
    """Run the image detached; wait for it; return (exit status or None if it went on
    running, its output). The container is removed in every case."""
    container = engine.containers.run(image, command, detach=True)
    try:
        try:
            status = container.wait(timeout=timeout)["StatusCode"]
        except TimeoutError:
            status = None
        return status, container.logs().decode("utf-8", "replace").strip()
    finally:
        container.remove(force=True)


# -- the checks, in the order you will meet them ---------------------------------


def test_image_exists(learner):
    if find(learner, NAME) is None:
        others = sorted(t for im in learner.images.list(all=True) for t in im.tags
                        if t.startswith("lab04/"))
        seen = f" The lab04 images here are: {', '.join(others)}." if others else ""
        pytest.fail(
            f"No image named {NAME} exists in the Dockyard root {learner.root}.{seen} "
            f"`{START}` builds it from {CONTEXT} with `dockyard build -t {NAME} ...`; if the "
            f"build failed, its log says at which Dockerfile line. If you worked with another "
            f"root (DOCKYARD_ROOT or --root), run this checker with the same DOCKYARD_ROOT.",
            pytrace=False)


def test_built_from_the_current_dockerfile(app, rebuilds):
    image, steps = built(rebuilds, "same")
    if image.id == app.id:
        return
    mine = [h.get("created_by", "") for h in app.config.get("history") or []]
    now = [h.get("created_by", "") for h in image.config.get("history") or []]
    if mine == now and app.run_config == image.run_config:
        return  # the same recipe; only the build stage was rebuilt (e.g. after `image prune`)
    detail = ""
    for old, new in zip(mine, now):
        if old != new:
            detail = f" The first step that differs: {NAME} has `{old[:90]}`, the context builds `{new[:90]}`."
            break
    else:
        if len(mine) != len(now):
            detail = f" {NAME} has {len(mine)} history entries, the context builds {len(now)}."
        else:
            keys = sorted(k for k in set(app.run_config) | set(image.run_config)
                          if app.run_config.get(k) != image.run_config.get(k))
            detail = f" The configuration differs in: {', '.join(keys)}."
    pytest.fail(
        f"{NAME} is not what {CONTEXT}/Dockerfile builds now.{detail} Did you change the "
        f"Dockerfile (or a file it copies) after building? Build again with `{START}`, then "
        f"run the checker: it checks both the image and the Dockerfile.", pytrace=False)


def test_runtime_stage_is_busybox(app, learner):
    busybox = find(learner, "busybox")
    require(busybox is not None, (
        "There is no busybox image in this root any more, so the checker cannot compare. "
        "`dockyard pull busybox` makes it again (the same image: it is reproducible)."))
    require(app.diff_ids[:len(busybox.diff_ids)] == busybox.diff_ids, (
        f"{NAME} is not built on busybox: its bottom layers are not busybox's "
        f"(`dockyard history {NAME}`). The LAST stage of a Dockerfile is the image; it must "
        f"start with `FROM busybox`."))


def test_multi_stage(app, files):
    history = [h.get("created_by", "") for h in app.config.get("history") or []]
    shipped = sorted("/" + path for path in files.added
                     if posixpath.basename(path) in BUILD_FILES
                     or any(part in BUILD_DIRS for part in path.split("/")))
    if not any("COPY --from=" in h for h in history):
        what = f" It ships the build's inputs: {', '.join(shipped[:6])}." if shipped else ""
        pytest.fail(
            f"{NAME} is not a multi-stage build: its history has no `COPY --from=...` "
            f"step (`dockyard history {NAME}`).{what} Build in a first stage "
            f"(`FROM busybox AS build`: copy what install-deps.sh and build.sh need, run them), "
            f"then start the image anew (`FROM busybox`) and copy only the result: "
            f"`COPY --from=build ... /build/dist/ ./`.", pytrace=False)
    require(not shipped, (
        f"{NAME} ships files of the build, which the app does not need at run time: "
        f"{', '.join(shipped[:6])}. Copy only the bundle build.sh makes (the contents of "
        f"dist/: app.sh and www/) from the build stage, and config/ from the context."))


def test_workdir(app):
    workdir = app.run_config.get("WorkingDir") or ""
    require(workdir == WORKDIR, (
        f"The image's WorkingDir is {workdir or 'not set (/)'}, not {WORKDIR}. app.sh reads "
        f"./config/app.conf and writes ./www/: set `WORKDIR {WORKDIR}` in the last stage and "
        f"copy the app there (`dockyard inspect -f '{{{{.Config.WorkingDir}}}}' {NAME}`)."))


def test_user_is_not_root(app, files):
    user = app.run_config.get("User") or ""
    if not user or user.partition(":")[0] in ("root", "0"):
        pytest.fail(
            f"{NAME} runs as root (its User is {user or 'not set'}): whoever breaks into the "
            f"app is root in the container. Nothing in this app needs root: add `USER nobody` "
            f"(busybox has that user, uid 65534) near the end of the last stage, after the "
            f"COPYs.", pytrace=False)
    uid = resolve_uid(user, files.passwd)
    require(uid is not None, (
        f"The image's User is {user}, but there is no such user in its /etc/passwd: a "
        f"container from it would not start. Use a user busybox has, such as `USER nobody`."))
    require(uid != 0, f"The image's User {user} is uid 0, which is root: use `USER nobody`.")


def test_app_files_belong_to_the_user(app, files, user_uid):
    prefix = WORKDIR.strip("/") + "/"
    wrong = sorted(f"/{path} (uid {m.uid})" for path, m in files.added.items()
                   if path.startswith(prefix) and m.uid != user_uid)
    require(not wrong, (
        f"Files of the app belong to another user than the one it runs as (uid {user_uid}): "
        f"{', '.join(wrong[:5])}. COPY makes its files root's unless you say otherwise, and "
        f"app.sh must write www/index.html at start: copy with "
        f"`COPY --chown=nobody:nogroup ...` (both COPYs of the last stage)."))


def test_exposes_8080(app):
    ports = sorted(app.run_config.get("ExposedPorts") or {})
    require(PORT in ports, (
        f"The image exposes {', '.join(ports) or 'no port'}, not {PORT}: app.sh serves on 8080 "
        f"by default. Add `EXPOSE 8080`. (EXPOSE publishes nothing by itself; it documents the "
        f"port, and `dockyard run -P` would publish it.)"))


def test_healthcheck(app):
    check = app.run_config.get("Healthcheck") or {}
    test = check.get("Test") or []
    require(test and test[0] in ("CMD", "CMD-SHELL"), (
        f"The image has no HEALTHCHECK{' (it is NONE)' if test[:1] == ['NONE'] else ''}. "
        f"Give it one that asks the running app for its page, e.g. "
        f"`HEALTHCHECK --interval=10s --timeout=3s CMD wget -q -O /dev/null "
        f"http://127.0.0.1:8080/ || exit 1` (busybox has wget)."))


def test_labels(app):
    labels = app.labels
    key, value = VERSION_LABEL
    if not labels.get("maintainer"):
        author = app.attrs.get("Author")
        why = (f" The image has an Author ({author}): that is what MAINTAINER sets, and "
               f"MAINTAINER is deprecated -- no `--filter label=...` can see it."
               if author else "")
        pytest.fail(
            f"The image has no label maintainer.{why} Write "
            f"`LABEL maintainer=\"Your Name <you@example.com>\"` in the last stage "
            f"(`dockyard inspect -f '{{{{json .Config.Labels}}}}' {NAME}` shows the labels).",
            pytrace=False)
    require(labels.get(key) == value, (
        f"The image's labels are {json.dumps(labels)}: the label {key}={value} is missing. "
        f"One LABEL line can set several: `LABEL maintainer=\"...\" {key}=\"{value}\"`."))


def test_entrypoint_exec_form(app):
    entrypoint = app.run_config.get("Entrypoint")
    if entrypoint and list(entrypoint[:2]) == SHELL_FORM:
        pytest.fail(
            f"The ENTRYPOINT is in *shell form*: it became {shown(entrypoint)}, so /bin/sh "
            f"is the container's main process and the arguments of `dockyard run {NAME} ...` "
            f"(and the CMD) never reach app.sh. Use the exec form, a JSON array: "
            f"`ENTRYPOINT {shown(ENTRYPOINT)}`.", pytrace=False)
    require(entrypoint == ENTRYPOINT, (
        f"The image's Entrypoint is {shown(entrypoint)}, not {shown(ENTRYPOINT)}: the app is "
        f"the program (`ENTRYPOINT {shown(ENTRYPOINT)}`), its default arguments go in CMD."))


def test_cmd_exec_form(app):
    cmd = app.run_config.get("Cmd")
    if cmd and list(cmd[:2]) == SHELL_FORM:
        pytest.fail(
            f"The CMD is in *shell form*: it became {shown(cmd)}. Make app.sh the program, "
            f"`ENTRYPOINT {shown(ENTRYPOINT)}`, and give CMD only its default arguments, in "
            f"exec form: `CMD {shown(CMD)}` -- then `dockyard run {NAME} --once` replaces just "
            f"the arguments.", pytrace=False)
    require(cmd == CMD, (
        f"The image's Cmd is {shown(cmd)}, not {shown(CMD)}: the default arguments of app.sh. "
        f"Write `CMD {shown(CMD)}` in the last stage. (Without one, the image has no Cmd: "
        f"ENTRYPOINT clears the Cmd inherited from busybox, [\"sh\"].)"))


def test_app_runs(app, learner):
    if os.geteuid() != 0:
        pytest.skip("running a container needs root")
    if not exec_form(app.run_config.get("Entrypoint")):
        pytest.skip("the image has no ENTRYPOINT in exec form, so --once would not reach "
                    "the app (see test_entrypoint_exec_form)")
    status, output = run_app(learner, app, ["--once"])
    if status is None:
        pytest.fail(f"`dockyard run --rm {NAME} --once` did not stop within 10 s: the "
                    f"argument --once did not reach app.sh. Its output: {output[:300]!r}.",
                    pytrace=False)
    hint = ""
    if "Permission denied" in output:
        hint = (" The app cannot write its page: the files under /app must belong to the "
                "user it runs as -- `COPY --chown=nobody:nogroup ...`.")
    elif "config/app.conf" in output:
        hint = (f" app.sh runs in the working directory and needs ./config/app.conf there: "
                f"`WORKDIR {WORKDIR}` and `COPY ... config/ config/`.")
    require(status == 0, (
        f"`dockyard run --rm {NAME} --once` exited with status {status}: {output[:300]!r}.{hint}"))
    require("written as user" in output, (
        f"`dockyard run --rm {NAME} --once` printed {output[:300]!r}, not app.sh's "
        f"\"lab04-app: ... written as user ...\": is the entrypoint the bundled app.sh?"))


def test_healthcheck_passes(app, learner):
    from engine.errors import EngineError

    if os.geteuid() != 0:
        pytest.skip("running a container needs root")
    test = (app.run_config.get("Healthcheck") or {}).get("Test") or []
    if not test or test[0] not in ("CMD", "CMD-SHELL"):
        pytest.skip("the image has no HEALTHCHECK (see test_healthcheck)")
    argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])
    container = learner.containers.run(app, detach=True)
    try:
        result, deadline = None, time.monotonic() + 5
        while time.monotonic() < deadline:
            container.reload()
            if not container.attrs["State"]["Running"]:
                break
            try:
                result = container.exec_run(argv)
            except EngineError:
                break  # it stopped meanwhile
            if result.exit_code == 0:
                return
            time.sleep(0.2)
        container.reload()
        logs = container.logs().decode("utf-8", "replace").strip()
        if not container.attrs["State"]["Running"]:
            pytest.fail(
                f"`dockyard run -d {NAME}` (its default command) exited with status "
                f"{container.attrs['State']['ExitCode']} instead of serving: {logs[:300]!r}. "
                f"See test_app_runs.", pytrace=False)
        pytest.fail(
            f"The HEALTHCHECK command {shown(argv)} fails against the running app (status "
            f"{result.exit_code if result else '?'}: "
            f"{(result.output if result else b'').decode('utf-8', 'replace')[:200]!r}); the app "
            f"said {logs[:200]!r}. It must ask the app's own port, 8080, from inside the "
            f"container: `CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1`.",
            pytrace=False)
    finally:
        container.remove(force=True)


def test_dockerignore_keeps_the_secret_out():
    from engine.build.ignore import BadIgnorePattern, is_excluded, parse_dockerignore

    path = CONTEXT / ".dockerignore"
    require(path.is_file(), (
        f"There is no {path}. Without it, `dockyard build` sends the whole context to the "
        f"builder -- {SECRET} included -- and any `COPY . ...` puts it into a layer. Create "
        f".dockerignore next to the Dockerfile with the line `secrets/` (and what else no "
        f"image needs: vendor/ and dist/ of a build on your machine)."))
    try:
        patterns = parse_dockerignore(path.read_text())
    except BadIgnorePattern as e:
        pytest.fail(f"{path}: {e}", pytrace=False)
    require(is_excluded(SECRET, patterns), (
        f"{path} does not keep {SECRET} out of the build context. A line `secrets/` (or "
        f"`secrets`) excludes the directory and everything in it; check that no later `!` "
        f"line includes it again."))


def test_no_secret_in_the_image(app, learner, busybox):
    token = b""
    if (CONTEXT / SECRET).is_file():
        token = (CONTEXT / SECRET).read_bytes().strip()
    found = []
    for descriptor in app.layers[len(busybox.layers):]:
        for name, member, data in layer_members(learner, descriptor):
            if "secrets" in name.split("/") or name.endswith("api-token") \
                    or (token and data and token in data):
                found.append("/" + name)
    require(not found, (
        f"The secret is in a layer of {NAME}: {', '.join(sorted(set(found))[:5])}. A layer "
        f"never forgets -- deleting the file in a later step only hides it. Keep secrets/ out "
        f"of the build context with .dockerignore, and copy only what the app needs."))


def test_dependency_step_stays_cached(rebuilds):
    image, steps = built(rebuilds, "changed")
    deps = [s for s in steps if s.keyword == "RUN" and "install-deps" in s.instruction]
    require(deps, (
        "No RUN step of your Dockerfile runs install-deps.sh, the slow dependency download: "
        "the build stage must `RUN sh install-deps.sh` (and then `RUN sh build.sh`)."))
    missed = [s for s in deps if s.cached is False]
    if not missed:
        return
    step = missed[0]
    first = next(s for s in steps if s.cached is False)
    pytest.fail(
        f"After a change in src/app.sh alone, the slow dependency step `{step.instruction}` "
        f"ran again (the cache said: {step.reason}). The first step that missed was "
        f"`{first.instruction}` ({first.reason}), and after a miss every later step of the "
        f"stage runs again. Order the build stage from what changes rarely to what changes "
        f"often: COPY only requirements.txt and install-deps.sh, RUN sh install-deps.sh, and "
        f"only then COPY build.sh and src/ and RUN sh build.sh.", pytrace=False)

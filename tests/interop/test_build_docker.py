"""Dockyard's builder against docker's classic builder, example by example.

Every build context under ``tests/dockerfiles`` (its README says which
instruction each one covers) is built twice: by Dockyard
(``engine.images.build`` in a fresh root) and by ``DOCKER_BUILDKIT=0 docker
build --network none --no-cache`` (the classic builder, which Dockyard's
builder follows step for step). Both start from the same busybox image:
Dockyard's, loaded into docker with ``dockyard save busybox | docker load``
(same image ID on both sides). Then the two images are compared:

- the run config: Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts,
  Volumes, Labels, StopSignal, Healthcheck, Shell, OnBuild (``docker image
  inspect``'s .Config against ``image.run_config``; null, missing and empty
  are the same), and the author (MAINTAINER);
- the file tree: both images are saved (``docker save``, ``dockyard save``)
  and their layers applied in order (whiteouts too); every path's type,
  permission bits, owner, symlink target and content must agree (mtimes are
  not compared, nor what a container runtime adds: /.dockerenv, /etc/hosts,
  /etc/hostname, /etc/resolv.conf, /dev, /proc, /sys);
- the history: as many entries, and the same ones marked ``empty_layer``.

Where docker's classic builder and BuildKit build different files, Dockyard
builds what BuildKit builds: those paths are listed in
:data:`KNOWN_TREE_DIFFERENCES` (the comparison expects exactly them to
differ), and a second test checks them against BuildKit when this docker can
build with it. tests/dockerfiles/README.md explains each one.

The module is skipped when ``docker info`` fails (no docker here). It needs
root (Dockyard's builds do). It removes every docker image its builds made
(and busybox, if it loaded it), and the classic builder's ``--force-rm``
leaves no container even when a step fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import CLI, REPO

EXAMPLES = REPO / "tests" / "dockerfiles"


def _docker_works() -> str | None:
    """None if a docker daemon answers, else why not."""
    if shutil.which("docker") is None:
        return "needs the docker client and a running dockerd (apt-get install docker.io)"
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                           capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "docker info timed out: is dockerd running?"
    if r.returncode != 0:
        return f"docker info failed (is dockerd running?): {r.stderr.strip()[:200]}"
    return None


pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module", autouse=True)
def docker_daemon(tmp_path_factory):
    """A docker daemon to build with: the machine's own if one answers, else a
    private one started for this module when ``dockerd`` is installed.

    The private daemon touches nothing of the host's networking: no iptables
    rules, no NAT, no forwarding, no bridge (builds use ``--network none``);
    its data, exec root and socket live in a temporary directory, and it is
    stopped (with the containerd it started) when the module is done.
    """
    why = _docker_works()
    if why is None:
        yield
        return
    if shutil.which("dockerd") is None or shutil.which("docker") is None or os.geteuid() != 0:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("dockerd")
    socket = base / "docker.sock"
    log = open(base / "dockerd.log", "wb")
    daemon = subprocess.Popen(
        ["dockerd", "--iptables=false", "--ip-masq=false", "--ip-forward=false", "--bridge=none",
         "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
         "--pidfile", str(base / "dockerd.pid"), "-H", f"unix://{socket}"],
        stdout=log, stderr=log, start_new_session=True)
    os.environ["DOCKER_HOST"] = f"unix://{socket}"
    try:
        deadline = time.monotonic() + 60
        while (why := _docker_works()) is not None:
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"could not start a private dockerd: {why}")
            time.sleep(0.3)
        yield
    finally:
        os.environ.pop("DOCKER_HOST", None)
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(base / "data", ignore_errors=True)


def docker(*args: str, env: dict | None = None, check: bool = True,
           timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check:
        assert r.returncode == 0, f"docker {' '.join(args)}: {r.stderr}{r.stdout[-2000:]}"
    return r


# -- the examples ---------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One build of one example directory, with the ``docker build`` flags it needs."""
    name: str
    target: str | None = None
    build_args: dict = field(default_factory=dict)
    # Permission bits git cannot carry (directories, non-executable files),
    # set on the copy of the context both builders read.
    chmod: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.name + (f"-target-{self.target}" if self.target else "") + \
            ("-build-args" if self.build_args else "")


CASES = [
    Example("metadata"),
    Example("entrypoint"),
    Example("args"),
    Example("args", build_args={"STAGE_ARG": "from-cli", "GLOBAL_ONLY": "cli-global",
                                "TAG": "latest"}),
    Example("copy", chmod={"tree/sub": 0o750, "b.txt": 0o600, "conf1": 0o700}),
    Example("add"),
    Example("multistage"),
    Example("onbuild"),
    Example("onbuild", target="parent"),
    Example("shell"),
    Example("run-changes"),
    Example("dockerignore"),
]


def prepare(example: Example, tmp_path: Path) -> Path:
    """A copy of the example's context (the same bytes and modes for both builders)."""
    context = tmp_path / "context" / example.name
    shutil.copytree(EXAMPLES / example.name, context, symlinks=True)
    for rel, mode in example.chmod.items():
        os.chmod(context / rel, mode)
    return context


# Where docker's two builders disagree, Dockyard does what BuildKit (docker's default
# builder since 23.0) does, and the classic builder compared here differs on exactly
# these paths: {example: {path: reason}}. test_where_docker_builders_disagree_... checks
# that BuildKit builds these paths as Dockyard does.
KNOWN_TREE_DIFFERENCES = {
    "metadata": dict.fromkeys(
        ("cache", "data", "logs"),
        # VOLUME, then RUN: the classic builder mounts the image's volumes in the RUN's
        # container, so their mount points land in the layer (and what the RUN writes
        # there is lost); BuildKit mounts nothing there ("Changing the volume from within
        # the Dockerfile" in the Dockerfile reference says both).
        "classic: VOLUME mount points in a RUN's layer"),
    "copy": {
        # --chown=USER without a group: classic looks up a *group* named USER (busybox's
        # group mail is 12, and `--chown=nobody` fails: there is no group nobody);
        # BuildKit takes USER's primary group from /etc/passwd (8).
        "owned/mail-user-only.txt": "classic: --chown=mail is mail:mail, BuildKit mail's group",
        # COPY --chown of a directory: classic creates missing parents of the destination
        # as root (moby copyDirectory), BuildKit gives them to --chown as well.
        "owned/new": "classic: the parents COPY --chown creates belong to root",
    },
    "add": {
        "opt/chowned-tar": "classic: the directories ADD --chown creates belong to root",
    },
}


# -- docker's side ------------------------------------------------------------------------


def docker_image_ids() -> set[str]:
    out = docker("images", "-a", "-q", "--no-trunc").stdout.split()
    return {i.split(":", 1)[-1] for i in out}


@pytest.fixture(scope="module")
def docker_busybox(template_root):
    """Docker holds the very busybox Dockyard builds from (same image ID)."""
    from engine import Engine

    ours = Engine(template_root).images.get("busybox").id
    r = docker("image", "inspect", "--format", "{{.Id}}", "busybox:latest", check=False)
    loaded = False
    if r.returncode != 0:
        archive = template_root.parent / "busybox.tar"
        assert CLI(template_root)("save", "-o", str(archive), "busybox:latest").returncode == 0
        docker("load", "-i", str(archive))
        archive.unlink()
        loaded = True
        r = docker("image", "inspect", "--format", "{{.Id}}", "busybox:latest")
    theirs = r.stdout.strip().split(":", 1)[-1]
    if theirs != ours.split(":", 1)[-1]:
        pytest.skip(f"docker's busybox:latest ({theirs[:12]}) is not Dockyard's ({ours[:12]}): "
                    "remove it, or load Dockyard's with `dockyard save busybox | docker load`")
    yield
    if loaded:
        docker("rmi", "busybox:latest", check=False)


def docker_build(example: Example, context: Path, tag: str) -> list[str]:
    """``docker build`` with the classic builder; returns the IDs of the images it made."""
    before = docker_image_ids()
    args = ["build", "--network", "none", "--no-cache", "--force-rm", "-t", tag]
    if example.target:
        args += ["--target", example.target]
    for key, value in example.build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    r = docker(*args, str(context), env={"DOCKER_BUILDKIT": "0"}, check=False)
    # Every "---> <id>" and "Successfully built <id>" names an image of this build;
    # those that existed before (the base) are not ours to remove.
    seen = re.findall(r"(?:---> |Successfully built )([0-9a-f]{12})\b", r.stdout)
    new = docker_image_ids() - before
    made = [full for short in dict.fromkeys(seen) for full in new if full.startswith(short)]
    if r.returncode != 0:
        remove_docker_images(tag, made)
        raise AssertionError(f"docker build failed: {r.stderr}\n{r.stdout[-3000:]}")
    return made


def buildkit_command() -> list[str] | None:
    """A command that builds with BuildKit: the buildx plugin, or a docker client older
    than 23.0 (BuildKit built in, with DOCKER_BUILDKIT=1); None if there is none."""
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0:
        return ["docker", "buildx", "build", "--load"]
    for client in dict.fromkeys(filter(None, (shutil.which("docker"), "/usr/bin/docker"))):
        if not os.path.exists(client):
            continue
        r = subprocess.run([client, "version", "--format", "{{.Client.Version}}"],
                           capture_output=True, text=True, timeout=30)
        version = r.stdout.strip().split(".")[0]
        if version.isdigit() and int(version) < 23:
            return [client, "build"]
    return None


def buildkit_build(command: list[str], example: Example, context: Path, tag: str) -> list[str]:
    """``docker build`` with BuildKit; returns the IDs of the images it made (one)."""
    before = docker_image_ids()
    args = [*command, "--network", "none", "--no-cache", "-t", tag]
    if example.target:
        args += ["--target", example.target]
    for key, value in example.build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    r = subprocess.run([*args, str(context)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "DOCKER_BUILDKIT": "1"})
    made = sorted(docker_image_ids() - before)
    if r.returncode != 0:
        remove_docker_images(tag, made)
        raise AssertionError(f"BuildKit build failed: {r.stderr[-3000:]}")
    return made


def remove_docker_images(tag: str, made: list[str]) -> None:
    docker("rmi", tag, check=False)
    for image in reversed(made):  # children before parents; most went with the tag already
        if image in docker_image_ids():
            docker("rmi", image, check=False)
    left = set(made) & docker_image_ids()
    assert not left, f"docker images left behind: {sorted(left)}"


# -- reading a saved image (docker-archive) -------------------------------------------------

IGNORED = {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf"}
IGNORED_TREES = ("dev", "proc", "sys")


def _clean(name: str) -> str:
    """``./a/b/``, ``/a/b``, ``a/b`` -> ``a/b``; the root is ``""``."""
    name = os.path.normpath("/" + name).lstrip("/")
    return "" if name == "." else name


def _ignored(path: str) -> bool:
    return path in IGNORED or any(path == t or path.startswith(t + "/") for t in IGNORED_TREES)


def saved_image(archive: Path) -> tuple[dict, dict]:
    """(config, tree) of the one image in a docker-archive: the tree maps each
    path to (type, mode, uid, gid, detail) after applying the layers in order."""
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        assert len(manifest) == 1, manifest
        config = json.load(outer.extractfile(manifest[0]["Config"]))
        tree: dict[str, tuple] = {}
        links: dict[str, set] = {}  # path -> the set of names of that file (hard links)
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r:*") as tar:
                _apply_layer(tar, tree, links)
    for path, names in links.items():  # which names are one file, whatever the tar's order
        if len(names) > 1 and path in tree:
            group = hashlib.sha256("\0".join(sorted(names)).encode()).hexdigest()[:8]
            tree[path] = (*tree[path][:4], f"{tree[path][4]} one of {len(names)} links ({group})")
    return config, {p: v for p, v in tree.items() if p and not _ignored(p)}


def _apply_layer(tar: tarfile.TarFile, tree: dict, links: dict) -> None:
    def remove(doomed) -> None:
        for p in list(doomed):
            del tree[p]
            links.pop(p, {p}).discard(p)

    for member in tar:
        path = _clean(member.name)
        parent, _, base = path.rpartition("/")
        if base == ".wh..wh..opq":  # an opaque directory: what lower layers had below it goes
            remove(p for p in list(tree) if p.startswith(parent + "/"))
            continue
        if base.startswith(".wh."):
            gone = (parent + "/" if parent else "") + base[4:]
            remove(p for p in list(tree) if p == gone or p.startswith(gone + "/"))
            continue
        if path in tree:  # replaced: and if by a non-directory, what was below it goes too
            remove(p for p in list(tree)
                   if p == path or (not member.isdir() and p.startswith(path + "/")))
        mode, owner = member.mode & 0o7777, (member.uid, member.gid)
        if member.isdir():
            entry = ("dir", mode, *owner, None)
        elif member.issym():
            entry = ("symlink", None, *owner, member.linkname)
        elif member.islnk():  # a hard link: the same file as its target
            target = _clean(member.linkname)
            entry = tree.get(target) or ("file", mode, *owner, "a hard link to nothing")
            names = links.setdefault(target, {target})
            names.add(path)
            links[path] = names
        elif member.isreg():
            data = tar.extractfile(member).read()
            entry = ("file", mode, *owner, hashlib.sha256(data).hexdigest()[:16])
        elif member.ischr() or member.isblk() or member.isfifo():
            entry = ("device" if not member.isfifo() else "fifo", mode, *owner,
                     (member.devmajor, member.devminor))
        else:
            entry = ("other", mode, *owner, member.type)
        tree[path] = entry


# -- comparing -------------------------------------------------------------------------------

CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
                 "Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild")


def _norm(value):
    """null, missing and empty ("", [], {}) are the same thing in an image config."""
    return None if value in (None, "", [], {}) else value


def config_diff(docker_config: dict, dockyard_config: dict) -> dict:
    out = {}
    for name in CONFIG_FIELDS:
        theirs, ours = _norm(docker_config.get(name)), _norm(dockyard_config.get(name))
        if theirs != ours:
            out[name] = {"docker": theirs, "dockyard": ours}
    return out


def tree_diff(theirs: dict, ours: dict, known=()) -> list[str]:
    """Every path whose entries differ (but those in ``known``), as text; and every
    ``known`` path that does not differ (a known difference gone is news too)."""
    lines = []
    for path in sorted(set(theirs) | set(ours) | set(known)):
        a, b = theirs.get(path), ours.get(path)
        if (a != b) != (path in known):
            lines.append(f"/{path}: docker {_show(a)} | dockyard {_show(b)}"
                         + (" (a known difference, gone)" if path in known else ""))
    return lines


def _show(entry) -> str:
    if entry is None:
        return "(absent)"
    kind, mode, uid, gid, detail = entry
    mode_text = f" {mode:04o}" if mode is not None else ""
    return f"{kind}{mode_text} {uid}:{gid}" + (f" {detail}" if detail is not None else "")


def empty_layers(config: dict) -> list[bool]:
    return [bool(h.get("empty_layer")) for h in config.get("history") or []]


# -- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("example", CASES, ids=lambda e: e.id)
def test_dockyard_builds_what_docker_classic_builds(example, engine, root, tmp_path, docker_busybox):
    context = prepare(example, tmp_path)
    tag = f"dockyard-interop-{example.id}:{os.getpid()}"

    image, _ = engine.images.build(path=context, tag=tag, target=example.target,
                                   buildargs=example.build_args)
    ours_archive = tmp_path / "dockyard.tar"
    r = CLI(root)("save", "-o", str(ours_archive), tag)
    assert r.returncode == 0, r.stderr
    our_config, our_tree = saved_image(ours_archive)

    made = docker_build(example, context, tag)
    try:
        inspect = json.loads(docker("image", "inspect", tag).stdout)[0]
        theirs_archive = tmp_path / "docker.tar"
        docker("save", "-o", str(theirs_archive), tag)
        their_config, their_tree = saved_image(theirs_archive)
    finally:
        remove_docker_images(tag, made)

    # Everything is compared before anything is asserted, so that a failure shows
    # every difference at once.
    differences = {
        # the run config, field by field (and the same from the saved configs)
        "config": config_diff(inspect["Config"], image.run_config),
        "saved config": config_diff(their_config["config"], our_config["config"]),
        "author": [] if _norm(inspect.get("Author")) == _norm(image.config.get("author"))
        else [inspect.get("Author"), image.config.get("author")],
        # the files
        "tree": tree_diff(their_tree, our_tree, KNOWN_TREE_DIFFERENCES.get(example.name, {})),
        # the history: one entry per step, empty_layer where no files changed
        "history empty_layer": [] if empty_layers(our_config) == empty_layers(their_config)
        else {"docker": empty_layers(their_config), "dockyard": empty_layers(our_config)},
    }
    assert {k: v for k, v in differences.items() if v} == {}


@pytest.mark.parametrize("example", [e for e in CASES if e.name in KNOWN_TREE_DIFFERENCES],
                         ids=lambda e: e.id)
def test_where_docker_builders_disagree_dockyard_does_what_buildkit_does(
        example, engine, root, tmp_path, docker_busybox):
    command = buildkit_command()
    if command is None:
        pytest.skip("needs BuildKit: the buildx plugin, or a docker client older than 23.0")
    context = prepare(example, tmp_path)
    tag = f"dockyard-interop-buildkit-{example.id}:{os.getpid()}"
    engine.images.build(path=context, tag=tag, target=example.target, buildargs=example.build_args)
    ours_archive = tmp_path / "dockyard.tar"
    r = CLI(root)("save", "-o", str(ours_archive), tag)
    assert r.returncode == 0, r.stderr
    _, our_tree = saved_image(ours_archive)

    made = buildkit_build(command, example, context, tag)
    try:
        theirs_archive = tmp_path / "buildkit.tar"
        docker("save", "-o", str(theirs_archive), tag)
        _, their_tree = saved_image(theirs_archive)
    finally:
        remove_docker_images(tag, made)

    known = KNOWN_TREE_DIFFERENCES[example.name]
    assert tree_diff({p: their_tree.get(p) for p in known}, {p: our_tree.get(p) for p in known}) == []

"""Dockerfile builds on the real kernel: every instruction, the cache, and the CLI.

Each test writes a small context directory under tmp_path and builds it with
``engine.images.build`` (or ``dockyard build``) against its own root seeded
with busybox. After every test the root holds no build scratch directory, no
container and no mount (the fixture below), whatever the build did.
"""

from __future__ import annotations

import gzip
import io
import os
import threading
import time
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from support import tar_bytes

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def leaves_nothing(root):
    """A build leaves no scratch directory, intermediate container or mount."""
    yield
    for sub in ("builds", "containers"):
        path = root / sub
        left = sorted(os.listdir(path)) if path.exists() else []
        assert not left, f"{sub} left behind: {left}"
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f if str(root) in line]
    assert not mounts, f"mounts left behind: {mounts}"


def write_context(path: Path, dockerfile: str | None, files: dict | None = None) -> Path:
    """A context directory: ``files`` maps relative paths to bytes/str (a file),
    None (a directory) or ``("symlink", target)``."""
    path.mkdir(parents=True, exist_ok=True)
    if dockerfile is not None:
        (path / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            target.mkdir(exist_ok=True)
        elif isinstance(content, tuple):
            os.symlink(content[1], target)
        else:
            target.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


class Ctx:
    """One test's context directory and engine: ``ctx.build(dockerfile, **kw)``."""

    def __init__(self, engine, path: Path):
        self.engine = engine
        self.path = path
        self.events = []

    def write(self, dockerfile: str | None = None, **files) -> "Ctx":
        write_context(self.path, dockerfile, {k.replace("__", "/"): v for k, v in files.items()})
        return self

    def build(self, dockerfile: str | None = None, files: dict | None = None, **kw):
        if dockerfile is not None or files:
            write_context(self.path, dockerfile, files)
        self.events = []
        kw.setdefault("progress", self.events.append)
        return self.engine.images.build(path=str(self.path), **kw)

    def run(self, image, script: str) -> str:
        return self.engine.containers.run(image, ["sh", "-c", script], remove=True).decode()

    def notes(self) -> list[str]:
        return [e.data for e in self.events if e.kind == "note"]


@pytest.fixture
def ctx(engine, tmp_path):
    return Ctx(engine, tmp_path / "context")


def reasons(steps) -> list:
    return [(s.keyword, s.cached, s.reason) for s in steps]


# -- metadata instructions ------------------------------------------------------------


def test_metadata_instructions_set_the_image_config(ctx):
    image, steps = ctx.build("""\
FROM busybox
MAINTAINER Ada <ada@example.com>
ENV A=1 B="two words"
ENV C=${A}-x
LABEL org.example.name="demo app" version=1
EXPOSE 8080 53/udp 7000-7001
VOLUME /data /logs
VOLUME /cache
WORKDIR /srv
WORKDIR app
USER nobody:nogroup
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=2 CMD wget -q http://localhost/ || exit 1
ONBUILD RUN echo triggered
CMD ["serve", "--port", "8080"]
""")
    config = image.run_config
    assert config["Env"][1:] == ["A=1", "B=two words", "C=1-x"]
    assert config["Labels"] == {"org.example.name": "demo app", "version": "1"}
    assert config["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}, "7000/tcp": {}, "7001/tcp": {}}
    assert config["Volumes"] == {"/data": {}, "/logs": {}, "/cache": {}}
    assert config["WorkingDir"] == "/srv/app"
    assert config["User"] == "nobody:nogroup"
    assert config["StopSignal"] == "SIGTERM"
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q http://localhost/ || exit 1"],
                                     "Interval": 5_000_000_000, "Retries": 2}
    assert config["OnBuild"] == ["RUN echo triggered"]
    assert config["Cmd"] == ["serve", "--port", "8080"]
    assert image.config["author"] == "Ada <ada@example.com>"
    assert image.labels == {"org.example.name": "demo app", "version": "1"}
    # WORKDIR made the directories, in the image, even for a user set later
    assert ctx.run(image, "ls -d /srv/app && pwd") == "/srv/app\n/srv/app\n"


def test_volume_json_form(ctx):
    image, _ = ctx.build('FROM busybox\nVOLUME ["/a", "/b c"]\n')
    assert image.run_config["Volumes"] == {"/a": {}, "/b c": {}}


def test_entrypoint_resets_an_inherited_cmd(ctx):
    image, _ = ctx.build('FROM busybox\nENTRYPOINT ["echo", "hi"]\n')
    assert image.run_config["Entrypoint"] == ["echo", "hi"]
    assert not image.run_config.get("Cmd")
    assert ctx.engine.containers.run(image, remove=True) == b"hi\n"
    # a CMD of this stage survives a later ENTRYPOINT; shell form wraps in the shell
    image, _ = ctx.build('FROM busybox\nCMD ["there"]\nENTRYPOINT echo hi\n')
    assert image.run_config["Entrypoint"] == ["/bin/sh", "-c", "echo hi"]
    assert image.run_config["Cmd"] == ["there"]
    image, _ = ctx.build('FROM busybox\nENTRYPOINT ["echo"]\nCMD ["again"]\n')
    assert image.run_config["Cmd"] == ["again"]
    assert ctx.engine.containers.run(image, remove=True) == b"again\n"


def test_shell_changes_the_shell_form(ctx):
    image, steps = ctx.build('FROM busybox\nSHELL ["/bin/busybox", "sh", "-c"]\n'
                             'RUN echo "shell=$0" > /which\nCMD cat /which\n')
    assert image.run_config["Shell"] == ["/bin/busybox", "sh", "-c"]
    assert image.run_config["Cmd"] == ["/bin/busybox", "sh", "-c", "cat /which"]
    assert steps[2].output == b""  # it wrote the file
    assert ctx.engine.containers.run(image, remove=True) == b"shell=sh\n"  # busybox's $0
    history = image.config["history"]
    assert history[-2]["created_by"].startswith("/bin/busybox sh -c")


def test_onbuild_triggers_run_in_the_child_build(ctx, tmp_path):
    parent, _ = ctx.build("FROM busybox\nONBUILD ENV FROM_TRIGGER=yes\n"
                          "ONBUILD COPY hello.txt /hello.txt\n"
                          "ONBUILD RUN echo ran > /trigger\n",
                          files={"hello.txt": "hello\n"}, tag="base:onbuild")
    assert parent.run_config["OnBuild"] == ["ENV FROM_TRIGGER=yes", "COPY hello.txt /hello.txt",
                                            "RUN echo ran > /trigger"]
    assert ctx.run(parent, "ls /trigger 2>&1 || true").startswith("ls:")
    child, steps = ctx.build("FROM base:onbuild\nRUN cat /trigger /hello.txt\n")
    assert "FROM_TRIGGER=yes" in child.run_config["Env"]
    assert not child.run_config.get("OnBuild")  # triggers run once, never inherited
    assert ctx.run(child, "cat /trigger /hello.txt") == "ran\nhello\n"
    assert steps[-1].output == b"ran\nhello\n"
    assert any("build trigger" in n for n in ctx.notes())
    # a failing trigger names the FROM line that ran it
    ctx.build("FROM busybox\nONBUILD RUN exit 4\n", tag="base:bad")
    from engine.build.builder import BuildError
    with pytest.raises(BuildError) as info:
        ctx.build("# a comment\n\nFROM base:bad\nRUN true\n")
    assert "Dockerfile:3:" in str(info.value) and info.value.status == 4
    # the triggers' steps are cached like any other
    _, steps = ctx.build("FROM base:onbuild\nRUN cat /trigger /hello.txt\n")
    assert [(s.number, s.cached) for s in steps] == [(1, None), (0, True), (0, True), (0, True),
                                                     (2, True)]
    # a grandchild runs no trigger
    grandchild, steps = ctx.build("FROM %s\nRUN true\n" % child.id)
    assert [s.keyword for s in steps] == ["FROM", "RUN"]


# -- RUN -----------------------------------------------------------------------------


def test_run_shell_and_exec_forms_see_args_and_env(ctx):
    image, steps = ctx.build("""\
FROM busybox
ARG VERSION=1.0
ARG EMPTY
ENV HOME_DIR=/home/app
RUN echo "shell $VERSION $HOME_DIR [$EMPTY]"
RUN ["sh", "-c", "echo exec $VERSION $HOME_DIR"]
RUN ["/bin/echo", "no shell: $VERSION"]
RUN echo "$VERSION" > /version
""", buildargs={"VERSION": "2.0"})
    outputs = [s.output for s in steps if s.keyword == "RUN"]
    assert outputs[:3] == [b"shell 2.0 /home/app []\n", b"exec 2.0 /home/app\n",
                           b"no shell: $VERSION\n"]
    assert ctx.run(image, "cat /version") == "2.0\n"
    env = image.run_config["Env"]
    assert "HOME_DIR=/home/app" in env
    assert not any(e.startswith("VERSION=") for e in env)  # an ARG is not kept in the image
    # the build args a RUN saw are in its history, as docker's classic builder writes them
    run_rows = [h["created_by"] for h in image.config["history"] if "echo" in h["created_by"]]
    assert run_rows[0].startswith("|2 EMPTY= VERSION=2.0 /bin/sh -c")


def test_run_environment_from_env_overrides_arg(ctx):
    image, steps = ctx.build("FROM busybox\nARG X=from-arg\nENV X=from-env\nRUN echo $X\n",
                             buildargs={"X": "from-cli"})
    assert steps[-1].output == b"from-env\n"


def test_run_failure_raises_and_changes_nothing(ctx, engine, root):
    from engine.build.builder import BuildError

    before_image, _ = ctx.build("FROM busybox\nRUN echo v1 > /v\n", tag="app:1")
    tags_before = {t: engine.images.get(t).id for t in ("app:1", "busybox:latest")}
    with pytest.raises(BuildError) as info:
        ctx.build("FROM busybox\nRUN echo v2 > /v\n\nRUN echo oops; exit 3\nRUN true\n",
                  tag=["app:1", "app:2"])
    error = info.value
    assert error.exit_code == 1 and error.status == 3
    assert "Dockerfile:4:" in str(error) and "returned a non-zero code: 3" in str(error)
    assert error.output == b"oops\n" and error.step.line == 4
    assert {t: engine.images.get(t).id for t in ("app:1", "busybox:latest")} == tags_before
    with pytest.raises(Exception):
        engine.images.get("app:2")
    assert not engine.containers.list(all=True)
    # the completed steps before the failure are cached for the next try
    _, steps = ctx.build("FROM busybox\nRUN echo v2 > /v\n\nRUN echo fixed\n")
    assert reasons(steps)[1] == ("RUN", True, None)


def test_run_network_none_and_host(ctx):
    _, steps = ctx.build("FROM busybox\nRUN cat /proc/net/dev\n")
    interfaces = [line.split(":")[0].strip() for line in steps[-1].output.decode().splitlines()[2:]]
    assert interfaces == ["lo"]
    # (the network mode is not part of the cache key, as in docker's classic builder)
    _, steps = ctx.build(network_mode="host", nocache=True)
    shown = {line.split(":")[0].strip() for line in steps[-1].output.decode().splitlines()[2:]}
    with open("/proc/net/dev") as f:
        host = {line.split(":")[0].strip() for line in f.read().splitlines()[2:]}
    assert shown == host
    from engine.errors import UsageError
    with pytest.raises(UsageError):
        ctx.build(network_mode="bridgeless")


def test_run_on_the_default_bridge(ctx, engine):
    """--network bridge: each RUN container gets eth0 on the root's bridge, with
    the gateway as its default route; the RUN's network is part of its cache key."""
    from engine.network import config
    _, steps = ctx.build("FROM busybox\nRUN ip -4 addr show eth0; ip route\n", network_mode="bridge")
    out = steps[-1].output.decode()
    gateway = config.load(engine.layout).bridge_interface.ip
    assert f"default via {gateway} dev eth0" in out
    assert f"inet {str(gateway).rsplit('.', 1)[0]}." in out
    _, steps = ctx.build(network_mode="none")
    assert steps[-1].cached is False and "not in cache" in steps[-1].reason
    assert not list(engine.layout.netns.glob("*")) if engine.layout.netns.exists() else True


# -- COPY ------------------------------------------------------------------------------


def test_copy_files_directories_and_wildcards(ctx):
    image, _ = ctx.build("""\
FROM busybox
COPY a.txt /one/
COPY a.txt /renamed.txt
COPY src /app/src
COPY src/ /app/flat/
COPY *.txt /many/
COPY a.txt b.txt /two/
COPY a.txt /etc/
COPY a.txt relative/
WORKDIR /w
COPY a.txt .
COPY src/sub/d?p.txt /deep/
""", files={"a.txt": "A\n", "b.txt": "B\n", "c.md": "C\n", "src/x.py": "x\n",
            "src/sub/dep.txt": "dep\n", "src/empty": None})
    out = ctx.run(image, "cd / && find one renamed.txt app many two relative w deep "
                         "-print | sort; cat /renamed.txt; ls /etc | grep -c passwd; "
                         "ls /etc/a.txt")
    assert out.splitlines() == sorted([
        "one", "one/a.txt", "renamed.txt",
        "app", "app/src", "app/src/x.py", "app/src/sub", "app/src/sub/dep.txt", "app/src/empty",
        "app/flat", "app/flat/x.py", "app/flat/sub", "app/flat/sub/dep.txt", "app/flat/empty",
        "many", "many/a.txt", "many/b.txt", "two", "two/a.txt", "two/b.txt",
        "relative", "relative/a.txt", "w", "w/a.txt", "deep", "deep/dep.txt"]) + [
        "A", "1", "/etc/a.txt"]


def test_copy_into_an_existing_directory_without_slash(ctx):
    image, _ = ctx.build("FROM busybox\nCOPY a.txt /tmp\nCOPY a.txt /var/spool\n",
                         files={"a.txt": "A\n"})
    assert ctx.run(image, "cat /tmp/a.txt /var/spool/a.txt; stat -c %a /tmp") == "A\nA\n1777\n"


def test_copy_many_sources_need_a_directory_destination(ctx):
    from engine.build.dockerfile import DockerfileError

    for dockerfile in ("FROM busybox\nCOPY a.txt b.txt /dest\n",
                       "FROM busybox\nCOPY *.txt /dest\n"):
        with pytest.raises(DockerfileError) as info:
            ctx.build(dockerfile, files={"a.txt": "A", "b.txt": "B"})
        assert info.value.line == 2 and "must be a directory and end with a /" in str(info.value)


def test_copy_chown_and_chmod(ctx):
    image, _ = ctx.build("""\
FROM busybox
COPY --chown=1234:5678 a.txt /numeric/
COPY --chown=42 a.txt /uid-only/
COPY --chown=nobody:nogroup src /named/
COPY --chown=www-data a.txt /user-only/
COPY --chmod=0751 a.txt /mode/
COPY --chmod=600 src /mode-dir/
COPY a.txt /default/
""", files={"a.txt": "A\n", "src/f": "f\n"})
    out = ctx.run(image, "stat -c '%n %u %g %a' /numeric/a.txt /numeric /uid-only/a.txt "
                         "/named /named/f /user-only/a.txt /mode/a.txt /mode-dir/f /default/a.txt")
    lines = out.splitlines()
    assert lines[0] == "/numeric/a.txt 1234 5678 644"
    assert lines[1].startswith("/numeric 1234 5678")  # a directory the COPY made
    assert lines[2] == "/uid-only/a.txt 42 42 644"
    assert lines[3].startswith("/named 65534 65534") and lines[4] == "/named/f 65534 65534 644"
    assert lines[5] == "/user-only/a.txt 33 33 644"
    assert lines[6] == "/mode/a.txt 0 0 751"
    assert lines[7] == "/mode-dir/f 0 0 600"
    assert lines[8] == "/default/a.txt 0 0 644"


def test_copy_chown_to_an_unknown_user_fails_with_the_line(ctx):
    from engine.errors import EngineError

    with pytest.raises(EngineError) as info:
        ctx.build("FROM busybox\n\nCOPY --chown=nosuchuser a.txt /x\n", files={"a.txt": "A"})
    assert "Dockerfile:3:" in str(info.value) and "nosuchuser" in str(info.value)


def test_copy_follows_a_symlink_inside_the_context(ctx):
    image, _ = ctx.build("FROM busybox\nCOPY link.txt /got\nCOPY dir /d/\n",
                         files={"real.txt": "real\n", "link.txt": ("symlink", "real.txt"),
                                "dir/inner": ("symlink", "../real.txt")})
    assert ctx.run(image, "cat /got; readlink /d/inner") == "real\n../real.txt\n"


@pytest.mark.parametrize("source, files, words", [
    ("../outside", {}, "outside the build context"),
    ("link", {"link": ("symlink", "/etc/passwd")}, "outside the build context"),
    ("link", {"link": ("symlink", "../../x")}, "outside the build context"),
    ("missing.txt", {}, "not found"),
    ("*.none", {}, "matches nothing"),
])
def test_copy_sources_that_are_not_in_the_context(ctx, source, files, words):
    from engine.build.dockerfile import DockerfileError

    with pytest.raises(DockerfileError) as info:
        ctx.build(f"FROM busybox\nRUN true\nCOPY {source} /x\n", files=files)
    assert info.value.line == 3 and words in str(info.value)


def test_dockerignore_excludes_with_double_star_and_exceptions(ctx):
    from engine.build.dockerfile import DockerfileError

    ctx.write(None, **{".dockerignore": "**/*.log\n!keep.log\nsecret\nbuild/**\n!build/out\n"})
    image, _ = ctx.build("FROM busybox\nCOPY . /ctx/\n",
                         files={"a.txt": "a", "x.log": "x", "keep.log": "k", "deep/y.log": "y",
                                "deep/z.txt": "z", "secret/key": "s", "build/tmp": "t",
                                "build/out": "o"})
    out = ctx.run(image, "cd /ctx && find . -type f | sort")
    assert out.split() == ["./.dockerignore", "./Dockerfile", "./a.txt", "./build/out",
                           "./deep/z.txt", "./keep.log"]
    for source in ("x.log", "secret/key", "deep/y.log", "build/tmp"):
        with pytest.raises(DockerfileError) as info:
            ctx.build(f"FROM busybox\nCOPY {source} /x\n")
        assert "excluded" in str(info.value) or "not found" in str(info.value)


# -- COPY --from and multi-stage ---------------------------------------------------------


def test_copy_from_stage_name_index_and_image(ctx):
    image, steps = ctx.build("""\
FROM busybox AS builder
RUN mkdir -p /out/sub && echo built > /out/app && echo deep > /out/sub/f

FROM busybox
RUN echo second > /second

FROM busybox
COPY --from=builder /out/app /bin/app
COPY --from=builder /out /all/
COPY --from=1 /second /from-index
COPY --from=busybox /etc/passwd /from-image
COPY --from=builder --chown=1:1 /out/app* /owned/
""")
    out = ctx.run(image, "cat /bin/app /all/app /all/sub/f /from-index; "
                         "head -1 /from-image; stat -c '%u %g' /owned/app")
    assert out == "built\nbuilt\ndeep\nsecond\nroot:x:0:0:root:/root:/bin/sh\n1 1\n"
    assert [s.stage for s in steps][:3] == ["builder", "builder", "stage-1"]


def test_target_builds_only_the_stages_it_needs(ctx):
    dockerfile = """\
FROM busybox AS base
RUN echo base > /base

FROM busybox AS broken
RUN exit 1

FROM base AS test
RUN cat /base

FROM busybox AS final
COPY --from=test /base /b
"""
    image, steps = ctx.build(dockerfile, target="test")
    assert [(s.stage, s.keyword) for s in steps] == [
        ("base", "FROM"), ("base", "RUN"), ("test", "FROM"), ("test", "RUN")]
    assert steps[-1].output == b"base\n"
    image, steps = ctx.build(dockerfile)  # final needs test, which needs base; never broken
    assert "broken" not in {s.stage for s in steps}
    assert ctx.run(image, "cat /b") == "base\n"
    assert steps[0].total == len(steps) == 6


def test_unknown_target_and_stages(ctx):
    from engine.build.dockerfile import DockerfileError
    from engine.errors import EngineError, UsageError

    with pytest.raises(UsageError) as info:
        ctx.build("FROM busybox AS one\nRUN true\n", target="two")
    assert "two" in str(info.value)
    with pytest.raises(EngineError) as info:
        ctx.build("FROM busybox\nCOPY --from=nowhere /x /x\n")
    assert "Dockerfile:2:" in str(info.value) and "nowhere" in str(info.value)
    with pytest.raises(DockerfileError) as info:
        ctx.build("FROM busybox AS first\nCOPY --from=later /x /x\nFROM busybox AS later\n",
                  target="first")
    assert info.value.line == 2
    with pytest.raises(EngineError) as info:
        ctx.build("FROM busybox AS s\nFROM busybox\nCOPY --from=s /nothing /x\n")
    assert "Dockerfile:3:" in str(info.value) and "/nothing" in str(info.value)


def test_arg_before_from_is_used_in_from(ctx, engine):
    engine.images.tag("busybox", "other", "1")
    dockerfile = ("ARG BASE=busybox\nARG TAG=latest\nFROM ${BASE}:${TAG}\nARG TAG\n"
                  "RUN echo tag=$TAG\n")
    image, steps = ctx.build(dockerfile)
    assert steps[-1].output == b"tag=latest\n"
    image, steps = ctx.build(dockerfile, buildargs={"BASE": "other", "TAG": "1"})
    assert steps[-1].output == b"tag=1\n"
    assert steps[0].image_id == engine.images.get("other:1").id


def test_build_args_override_defaults_and_unused_ones_warn(ctx):
    image, steps = ctx.build("FROM busybox\nARG A=default\nRUN echo $A\n",
                             buildargs={"A": "given", "UNUSED": "1", "HTTP_PROXY": "x"})
    assert steps[-1].output == b"given\n"
    warnings = [n for n in ctx.notes() if "not consumed" in n]
    assert len(warnings) == 1 and "UNUSED" in warnings[0] and "HTTP_PROXY" not in warnings[0]


# -- ADD ---------------------------------------------------------------------------------


def test_add_extracts_local_archives_and_copies_other_files(ctx):
    plain_tar = tar_bytes([("pkg", None), ("pkg/a", b"from tar\n")])
    gz = gzip.compress(tar_bytes([("z", None), ("z/b", b"from tgz\n")]), mtime=0)
    image, _ = ctx.build("FROM busybox\nADD plain.tar /t/\nADD both.tar.gz /t\n"
                         "ADD notes.txt /t/\nADD fake.tar.gz /t/\n",
                         files={"plain.tar": plain_tar, "both.tar.gz": gz, "notes.txt": "n\n",
                                "fake.tar.gz": "just text\n"})
    out = ctx.run(image, "cd /t && find . | sort && cat pkg/a z/b notes.txt fake.tar.gz")
    assert out.splitlines() == [".", "./fake.tar.gz", "./notes.txt", "./pkg", "./pkg/a", "./z",
                                "./z/b", "from tar", "from tgz", "n", "just text"]
    # what an archive holds keeps the archive's owners, even with --chown (as docker does)
    image, _ = ctx.build("FROM busybox\nADD --chown=7:8 plain.tar /owned\n")
    assert ctx.run(image, "stat -c '%u %g' /owned/pkg/a") == "0 0\n"


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server over tmp_path/www (only 127.0.0.1)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_add_url_is_fetched_with_mode_0600(ctx, http_server, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    www, url = http_server
    (www / "tool.sh").write_text("echo fetched\n")
    (www / "page.tar").write_bytes(tar_bytes([("inside", b"x")]))  # URLs are never extracted
    image, _ = ctx.build(f"FROM busybox\nADD {url}/tool.sh /opt/\nADD {url}/tool.sh /renamed\n"
                         f"ADD {url}/page.tar /pages/\n")
    out = ctx.run(image, "stat -c '%a %u' /opt/tool.sh /renamed /pages/page.tar; sh /opt/tool.sh")
    assert out == "600 0\n600 0\n600 0\nfetched\n"
    # the cache compares what the URL serves now, as docker does (it fetches every time)
    _, steps = ctx.build()
    assert all(s.cached for s in steps[1:])
    (www / "tool.sh").write_text("echo changed\n")
    image, steps = ctx.build()
    assert steps[1].cached is False and steps[1].reason == f"ADD {url}/tool.sh: content changed " \
                                                          f"({url}/tool.sh)"
    assert ctx.run(image, "sh /opt/tool.sh") == "changed\n"
    from engine.build.builder import BuildError
    with pytest.raises(BuildError) as info:
        ctx.build(f"FROM busybox\nADD {url}/missing /x\n")
    assert "Dockerfile:2:" in str(info.value) and "404" in str(info.value)


# -- history, layers, intermediates -----------------------------------------------------------


def test_history_and_empty_layers(ctx, engine, cli):
    image, steps = ctx.build("FROM busybox\nENV A=1\nRUN echo x > /x\nCOPY a.txt /\n"
                             "WORKDIR /w\nLABEL l=1\nCMD [\"sh\"]\nRUN true\n",
                             files={"a.txt": "a"}, tag="hist:1")
    base = engine.images.get("busybox")
    history = image.config["history"][len(base.config["history"]):]
    assert [bool(h.get("empty_layer")) for h in history] == [True, False, False, False, True, True,
                                                             True]
    assert [s.layer for s in steps[1:]] == [False, True, True, True, False, False, False]
    assert len(image.layers) == len(base.layers) + 3
    assert history[0]["created_by"] == "/bin/sh -c #(nop)  ENV A=1"
    assert history[1]["created_by"] == "/bin/sh -c echo x > /x"
    assert "#(nop) COPY file:" in history[2]["created_by"]
    rows = engine.images.history("hist:1")
    assert len(rows) == len(image.config["history"]) and rows[0]["Id"] == image.id
    # every step is an image, shown by `images -a` only
    ids = {s.image_id for s in steps[1:]}
    listed_all = {i.id for i in engine.images.list(all=True)}
    listed = {i.id for i in engine.images.list()}
    assert ids <= listed_all and ids & listed == {image.id}
    r = cli("images", "-a", "--no-trunc", "-q")
    assert ids <= set(r.stdout.split())


# -- the cache ----------------------------------------------------------------------------------


CACHE_DOCKERFILE = """\
FROM busybox
ARG V=1
COPY a.txt /a.txt
COPY src /src
RUN cat /a.txt > /seen
ENV DONE=1
"""


def test_cache_hits_misses_and_reasons(ctx):
    ctx.write(CACHE_DOCKERFILE, **{"a.txt": "a1\n", "src__f": "f\n"})
    first, steps = ctx.build()
    assert [s.cached for s in steps] == [None, False, False, False, False, False]
    again, steps = ctx.build()
    assert [s.cached for s in steps] == [None, True, True, True, True, True]
    assert again.id == first.id
    # a new mtime alone changes nothing
    future = time.time() + 1000
    os.utime(ctx.path / "a.txt", (future, future))
    os.utime(ctx.path / "src" / "f", (future, future))
    _, steps = ctx.build()
    assert all(s.cached for s in steps[1:])
    # new content: that step says which file, the rest say their parent changed
    (ctx.path / "a.txt").write_text("a2\n")
    image, steps = ctx.build()
    assert reasons(steps)[1:] == [
        ("ARG", True, None),
        ("COPY", False, "COPY a.txt: content changed (a.txt)"),
        ("COPY", False, "COPY src: parent changed"),
        ("RUN", False, "RUN: parent changed"),
        ("ENV", False, "ENV: parent changed")]
    assert ctx.run(image, "cat /seen") == "a2\n"
    (ctx.path / "src" / "new").write_text("n")
    _, steps = ctx.build()
    assert steps[3].reason == "COPY src: content changed (+new)"
    # a file mode change is a change too
    os.chmod(ctx.path / "a.txt", 0o600)
    _, steps = ctx.build()
    assert steps[2].cached is False and "content changed (a.txt)" in steps[2].reason
    # --no-cache
    _, steps = ctx.build(nocache=True)
    assert {s.reason for s in steps[1:]} == {"--no-cache"}
    # a build arg a RUN sees
    _, steps = ctx.build(buildargs={"V": "2"})
    assert reasons(steps)[1:] == [
        ("ARG", True, None), ("COPY", True, None), ("COPY", True, None),
        ("RUN", False, "RUN: build args changed (V)"), ("ENV", False, "ENV: parent changed")]
    _, steps = ctx.build(buildargs={"V": "2"})
    assert all(s.cached for s in steps[1:])


def test_cache_build_arg_change_names_the_argument(ctx):
    dockerfile = "FROM busybox\nARG V\nRUN echo $V\n"
    ctx.build(dockerfile, buildargs={"V": "1"})
    _, steps = ctx.build(dockerfile, buildargs={"V": "2"})
    # ARG V is the same instruction whatever its value; the RUN sees it
    assert steps[1].cached is True
    assert steps[2].reason == "RUN: build args changed (V)"
    assert steps[2].output == b"2\n"


def test_a_removed_cached_image_is_rebuilt(ctx, engine):
    ctx.write("FROM busybox\nRUN echo hi > /hi\n")
    image, _ = ctx.build(tag="gone:1")
    engine.images.remove("gone:1")
    _, steps = ctx.build()
    assert steps[1].cached is False


def test_labels_from_the_command_line_are_a_last_step(ctx):
    image, steps = ctx.build("FROM busybox\nLABEL a=1\n", labels={"b": "2", "a": "3"})
    assert image.labels == {"a": "3", "b": "2"}
    assert steps[-1].keyword == "LABEL" and steps[-1].number == steps[-1].total == 3
    _, steps = ctx.build(labels={"b": "2", "a": "3"})
    assert all(s.cached for s in steps[1:])


# -- the command line -----------------------------------------------------------------------


def test_cli_build_tags_quiet_and_iidfile(ctx, cli, tmp_path):
    ctx.write("FROM busybox\nCOPY a.txt /\nRUN cat /a.txt\n", **{"a.txt": "hello\n"})
    r = cli("build", "-t", "web:1", "-t", "web:2", str(ctx.path))
    assert r.returncode == 0, r.stderr
    assert "Step 3/3 : RUN cat /a.txt" in r.stdout and "hello" in r.stdout
    assert "Successfully tagged web:1" in r.stdout and "Successfully tagged web:2" in r.stdout
    r = cli("build", "-q", "--iidfile", str(tmp_path / "iid"), str(ctx.path))
    assert r.returncode == 0, r.stderr
    image_id = ctx.engine.images.get("web:1").id
    assert r.stdout == image_id + "\n"
    assert (tmp_path / "iid").read_text() == image_id
    r = cli("build", "--progress", "plain", str(ctx.path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" CACHED\n") == 2 and "[3/3] RUN cat /a.txt" in r.stdout


def test_cli_dockerfile_option_and_stdin(ctx, cli, tmp_path):
    ctx.write(None, **{"a.txt": "A\n", "other.Dockerfile": "FROM busybox\nCOPY a.txt /\n"})
    r = cli("build", "-q", "-f", str(ctx.path / "other.Dockerfile"), str(ctx.path))
    assert r.returncode == 0, r.stderr
    r = cli("build", "-q", "-f", "-", str(ctx.path), input="FROM busybox\nCOPY a.txt /b\n")
    assert r.returncode == 0, r.stderr
    image = ctx.engine.images.get(r.stdout.strip())
    assert ctx.run(image, "cat /b") == "A\n"
    # only a Dockerfile on stdin: no context, COPY fails, RUN works
    r = cli("build", "-q", "-t", "stdin:1", "-", input="FROM busybox\nRUN echo in > /in\n")
    assert r.returncode == 0, r.stderr
    assert ctx.run("stdin:1", "cat /in") == "in\n"
    r = cli("build", "-", input="FROM busybox\nCOPY a.txt /\n")
    assert r.returncode == 125 and "Dockerfile:2:" in r.stderr and "no build context" in r.stderr


def test_cli_tar_context_on_stdin(ctx, cli, root):
    data = tar_bytes([("Dockerfile", b"FROM busybox\nCOPY dir /dir/\nCOPY a.txt /\n"),
                      ("a.txt", b"A\n"), ("dir", None), ("dir/f", b"F\n"),
                      (".dockerignore", b"dir/skip\n"), ("dir/skip", b"S\n")])
    r = subprocess_bytes(cli, ["build", "-q", "-t", "fromtar", "-"], data)
    assert r.returncode == 0, r.stderr
    assert ctx.run("fromtar", "cat /a.txt /dir/f; ls /dir") == "A\nF\nf\n"
    gz = gzip.compress(data)
    r = subprocess_bytes(cli, ["build", "-q", "-"], gz)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == ctx.engine.images.get("fromtar").id  # same files: cached
    # the API takes a tar stream too (docker-py's custom_context)
    image, steps = ctx.engine.images.build(fileobj=io.BytesIO(data), custom_context=True)
    assert image.id == ctx.engine.images.get("fromtar").id


def subprocess_bytes(cli, args, data: bytes):
    import subprocess

    from support import DOCKYARD, REPO

    return subprocess.run([*DOCKYARD, *args], input=data, capture_output=True, timeout=60,
                          env=cli.env(), cwd=REPO)


def test_cli_failures_and_exit_codes(ctx, cli):
    ctx.write("FROM busybox\nRUN echo before\nRUN echo broken >&2; exit 2\n")
    r = cli("build", "-t", "never", str(ctx.path))
    assert r.returncode == 1
    assert "Dockerfile:3:" in r.stderr and "returned a non-zero code: 2" in r.stderr
    assert "broken" in r.stdout + r.stderr
    assert cli("image", "inspect", "never").returncode != 0
    r = cli("build", "-q", str(ctx.path))
    assert r.returncode == 1 and r.stdout == "" and "broken" in r.stderr
    ctx.write("FROM busybox\nRUN true\nFOOBAR x\n")
    r = cli("build", str(ctx.path))
    assert r.returncode == 125
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Dockerfile:3:" in lines[0]
    r = cli("build", str(ctx.path / "nowhere"))
    assert r.returncode == 125
    r = cli("build", "--target", "nope", str(ctx.path))
    assert r.returncode == 125


def test_cli_progress_plain_shows_cached_steps(ctx, cli):
    ctx.write("FROM busybox\nRUN echo one\nENV X=1\n")
    r = cli("build", "--progress", "plain", str(ctx.path))
    assert r.returncode == 0 and "one" in r.stdout
    r = cli("build", "--progress", "plain", str(ctx.path))
    assert r.returncode == 0
    assert "#3 CACHED" in r.stdout and "#4 CACHED" in r.stdout


def test_build_from_scratch(ctx):
    image, steps = ctx.build("FROM scratch\nCOPY a.txt /\nCMD [\"/a.txt\"]\n",
                             files={"a.txt": "A"})
    assert len(image.layers) == 1 and image.run_config["Cmd"] == ["/a.txt"]
    assert [h.get("empty_layer", False) for h in image.config["history"]] == [False, True]
    assert ctx.engine.content.read(image.layers[0].digest)


# -- more file steps, users, failures -------------------------------------------------------


def test_copy_destination_resolves_inside_the_image(ctx):
    # /linkdir is a symlink in the image: COPY follows it as the image means it
    image, _ = ctx.build("FROM busybox\nRUN ln -s /tmp /linkdir && ln -s /etc/passwd /pw\n"
                         "COPY a.txt /linkdir/\nCOPY a.txt /linkdir/sub/b.txt\nCOPY a.txt /pw\n",
                         files={"a.txt": "A\n"})
    out = ctx.run(image, "cat /tmp/a.txt /tmp/sub/b.txt; readlink /pw || echo file; cat /pw; "
                         "head -1 /etc/passwd")
    assert out == "A\nA\nfile\nA\nroot:x:0:0:root:/root:/bin/sh\n"


def test_user_runs_run_steps_but_copy_stays_root(ctx):
    image, steps = ctx.build("""\
FROM busybox
RUN echo "app:x:1500:1501::/home/app:/bin/sh" >> /etc/passwd && echo "app:x:1501:" >> /etc/group
COPY --chown=app:app a.txt /home/app/
COPY --chown=app a.txt /home/app2/
USER app
RUN id -u; stat -c '%u %g' /home/app/a.txt /home/app2/a.txt
COPY a.txt /as-user/
RUN stat -c '%u' /as-user/a.txt
""", files={"a.txt": "A"})
    assert steps[5].output == b"1500\n1500 1501\n1500 1501\n"
    assert steps[7].output == b"0\n"


def test_a_failed_file_step_changes_nothing(ctx, engine):
    from engine.build.builder import BuildError

    ctx.build("FROM busybox\nENV V=1\n", tag="keep:1")
    before = {i.id for i in engine.images.list(all=True)}
    keep = engine.images.get("keep:1").id
    with pytest.raises(BuildError) as info:
        ctx.build("FROM busybox\nENV V=2\nCOPY dir /etc/passwd\n", files={"dir/x": "x"},
                  tag="keep:1")
    assert "Dockerfile:3:" in str(info.value) and "not a directory" in str(info.value)
    assert engine.images.get("keep:1").id == keep
    # the ENV step before it did finish: docker keeps such steps for the cache too
    after = {i.id for i in engine.images.list(all=True)}
    assert len(after - before) == 1


def test_a_source_through_a_symlinked_directory_in_the_context(ctx):
    image, _ = ctx.build("FROM busybox\nCOPY dirlink/f /f\n",
                         files={"dir/f": "F\n", "dirlink": ("symlink", "dir")})
    assert ctx.run(image, "cat /f") == "F\n"


def test_escape_directive_and_continuation_lines(ctx):
    image, steps = ctx.build("# escape=`\nFROM busybox\nRUN echo one `\n    two \\\n"
                             "# a comment inside\nRUN echo 'C:\\dir'\n")
    assert steps[1].instruction == "RUN echo one     two \\"  # "\\" is no escape here
    assert steps[1].output == b"one two \\\n"
    assert steps[2].output == b"C:\\dir\n"


def test_dockerfile_in_a_subdirectory_and_excluded_by_dockerignore(ctx):
    ctx.write(None, **{"ci__Build.dockerfile": "FROM busybox\nCOPY . /ctx/\n",
                       ".dockerignore": "ci\n.dockerignore\n", "a.txt": "a"})
    image, _ = ctx.engine.images.build(path=str(ctx.path),
                                       dockerfile=str(ctx.path / "ci" / "Build.dockerfile"))
    assert ctx.run(image, "cd /ctx && find . | sort").split() == [".", "./a.txt"]


def test_copy_from_a_changed_stage_misses(ctx):
    dockerfile = ("FROM busybox AS gen\nCOPY v.txt /v\n"
                  "FROM busybox\nCOPY --from=gen /v /v\nRUN cat /v\n")
    ctx.build(dockerfile, files={"v.txt": "1\n"})
    _, steps = ctx.build()
    assert all(s.cached for s in steps if s.keyword != "FROM")
    (ctx.path / "v.txt").write_text("2\n")
    _, steps = ctx.build()
    copy_from = steps[3]
    assert copy_from.cached is False and copy_from.reason.startswith("COPY /v:")
    assert steps[4].output == b"2\n"


def test_system_check_finds_no_problem_after_builds(ctx, cli):
    from engine.build.builder import BuildError

    ctx.build("FROM busybox\nCOPY a.txt /\nRUN echo x > /x\nENV A=1\n", files={"a.txt": "a"},
              tag="ok:1")
    with pytest.raises(BuildError):
        ctx.build("FROM ok:1\nRUN echo y > /y\nRUN exit 1\n")
    r = cli("system", "check")
    assert r.returncode == 0 and " 0 problem(s)" in r.stdout, r.stdout + r.stderr


def test_an_interrupted_build_cleans_up(ctx, cli, root):
    import signal
    import subprocess

    ctx.write("FROM busybox\nRUN echo started; sleep 30\n")
    p = cli.popen("build", str(ctx.path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    deadline = time.time() + 20
    while b"started" not in out and time.time() < deadline:
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            break
        out += chunk
    assert b"started" in out, out
    p.send_signal(signal.SIGINT)
    out += p.communicate(timeout=20)[0]
    assert p.returncode == 130, out
    assert not ctx.engine.containers.list(all=True)

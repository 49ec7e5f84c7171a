"""commit and diff: a container's writable layer, read and kept as an image."""

import io
import json
import os
import signal
import tarfile
import time

import pytest

pytestmark = pytest.mark.root

CHANGES = "echo secret > /etc/note; rm /etc/group; mkdir -p /data/x; echo 1 > /data/x/f"


def changed(engine, name="changer", script=CHANGES):
    c = engine.containers.create("busybox", ["sh", "-c", script], name=name)
    assert c.run() == 0
    return engine.containers.get(name)


def test_diff_lists_added_changed_and_deleted(engine, cli):
    changed(engine)
    r = cli("diff", "changer")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["A /data", "A /data/x", "A /data/x/f", "C /etc",
                                     "D /etc/group", "A /etc/note"]
    kinds = {d["Path"]: d["Kind"] for d in engine.containers.get("changer").diff()}
    assert kinds["/etc/group"] == 2 and kinds["/etc/note"] == 1 and kinds["/etc"] == 0


def test_diff_of_an_opaque_directory(engine, cli):
    # Replacing a directory of the image makes overlayfs mark the new one opaque.
    changed(engine, "opaque", "rm -rf /var/spool && mkdir -p /var/spool/new")
    lines = cli("diff", "opaque").stdout.splitlines()
    assert "C /var/spool" in lines and "A /var/spool/new" in lines
    assert "D /var/spool/mail" in lines


def test_commit_keeps_the_changes_as_an_image(engine, cli):
    changed(engine)
    r = cli("commit", "-m", "my note", "-a", "Ada <ada@example.com>", "changer", "snap:1")
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.strip()
    image = engine.images.get("snap:1")
    assert image.id == image_id
    base = engine.images.get("busybox")
    assert image.diff_ids[:-1] == base.diff_ids and len(image.layers) == 2
    assert image.parent == base.manifest_digest
    out = engine.containers.run("snap:1", ["sh", "-c", "cat /etc/note; ls /etc; cat /data/x/f"],
                                remove=True).decode()
    assert out.startswith("secret\n") and "group" not in out and out.endswith("1\n")
    # The layer is an OCI layer: the deletion is a .wh. entry.
    layer = engine.content.read(image.layers[-1].digest)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        names = tar.getnames()
    assert "etc/.wh.group" in names and "etc/note" in names and "data/x/f" in names
    history = engine.images.history("snap:1")
    assert history[0]["CreatedBy"] == f"sh -c {CHANGES}"
    assert history[0]["Comment"] == "my note" and history[0]["Id"] == image.id
    assert history[1]["Id"] == base.id  # the parent's last step
    assert image.config["author"] == "Ada <ada@example.com>"


def test_commit_changes_apply_dockerfile_instructions(engine, cli):
    changed(engine)
    r = cli("commit", "-c", 'CMD ["cat", "note"]', "-c", "WORKDIR /etc", "-c", "ENV GREETING=hi",
            "-c", "LABEL team=dock", "changer", "snap:2")
    assert r.returncode == 0, r.stderr
    config = engine.images.get("snap:2").run_config
    assert config["Cmd"] == ["cat", "note"] and config["WorkingDir"] == "/etc"
    assert "GREETING=hi" in config["Env"] and config["Labels"] == {"team": "dock"}
    assert engine.containers.run("snap:2", remove=True) == b"secret\n"


def test_an_unchanged_container_adds_no_layer(engine, cli):
    c = engine.containers.create("busybox", ["true"], name="same")
    assert c.run() == 0
    image = engine.containers.get("same").commit("same:1")
    base = engine.images.get("busybox")
    assert image.diff_ids == base.diff_ids and image.id != base.id
    assert image.config["history"][-1]["empty_layer"] is True


def test_untagged_commit_and_intermediate_images(engine, cli):
    changed(engine, "one")
    first = engine.containers.get("one").commit("first:1")
    c = engine.containers.create("first:1", ["sh", "-c", "echo more > /more"], name="two")
    c.run()
    r = cli("commit", "two")
    second_id = r.stdout.strip()
    listing = cli("images").stdout
    assert second_id[7:19] in listing and "<none>" in listing  # untagged top image: dangling
    cli("rm", "one", "two")
    cli("rmi", "--no-prune", "first:1")
    assert first.short_id not in cli("images").stdout, "an untagged parent is intermediate"
    assert first.short_id in cli("images", "-a").stdout


def test_killing_a_commit_leaves_no_partial_image(engine, cli, root):
    script = "dd if=/dev/urandom of=/big bs=1M count=40 2>/dev/null; echo done > /done"
    changed(engine, "big", script)
    before = cli("images", "-a", "-q").stdout
    for delay in (0.0, 0.05, 0.1, 0.2, 0.4):
        proc = cli.popen("commit", "big", "big:1")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if engine.image_store.find("big:1"):
            cli("rmi", "big:1")  # it finished before the kill: start over
            continue
        assert cli("images", "-a", "-q").stdout == before, "a partial image became visible"
        json.loads((root / "index.json").read_text())
        r = cli("system", "check")
        assert r.returncode == 0, r.stdout
    r = cli("commit", "big", "big:1")
    assert r.returncode == 0
    assert engine.containers.run("big:1", ["cat", "/done"], remove=True) == b"done\n"
    assert "0 problem(s)" in cli("system", "check").stdout


def test_concurrent_commits(engine, cli):
    names = [f"c{i}" for i in range(4)]
    for n in names:
        changed(engine, n, f"echo {n} > /who")
    procs = [cli.popen("commit", n, f"img:{n}") for n in names]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    for n in names:
        assert engine.containers.run(f"img:{n}", ["cat", "/who"], remove=True) == f"{n}\n".encode()
    assert all(engine.content.verify(d) for d in engine.content.digests())
    r = cli("system", "check")
    assert r.returncode == 0 and "0 problem(s)" in r.stdout
    assert os.listdir(engine.layout.ingest) == []


def test_commit_pauses_a_running_container_meanwhile(engine, cli, monkeypatch):
    """docker commit --pause (the default) freezes the container while its
    layer is read, and thaws it afterwards; --pause=false leaves it running."""
    from engine.runtime import commit as commit_module

    c = engine.containers.run("busybox", ["sh", "-c", "echo v1 > /v; exec sleep 600"],
                              detach=True, name="live")
    try:
        seen = []
        real = commit_module.commit

        def spying(engine_, container, *a, **kw):
            seen.append(container._cgroup().frozen())
            return real(engine_, container, *a, **kw)

        monkeypatch.setattr(commit_module, "commit", spying)
        c.commit("live-img", "1")
        c.commit("live-img", "2", pause=False)
        assert seen == [True, False]
        c.reload()
        assert c.status == "running" and not c._cgroup().frozen()
        c.pause()
        c.commit("live-img", "3")
        c.reload()
        assert c.status == "paused", "a paused container stays paused"
        c.unpause()
        assert cli("commit", "--pause=false", "live", "live-img:4").returncode == 0
        r = cli("commit", "--pause=maybe", "live", "live-img:5")
        assert r.returncode == 125 and "invalid boolean value" in r.stderr
        assert engine.containers.run("live-img:4", ["cat", "/v"], remove=True) == b"v1\n"
    finally:
        c.remove(force=True)

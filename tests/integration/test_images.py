"""Image management as docker does it: tags, rmi, dangling and intermediate images,
prune, history, system df, system check, and the management-command spellings."""

import json
import os
import re

import pytest

from engine.errors import Conflict
from engine.image import mediatype
from engine.image.manifest import canonical

pytestmark = pytest.mark.root


def derive(engine, tag, parent="busybox", *, created="2030-01-01T00:00:00Z", cmd=None, label=None):
    """A new image: the parent's layers and config with a new Cmd (a metadata-only child)."""
    base = engine.images.get(parent)
    config = json.loads(json.dumps(base.config))
    config["created"] = created
    config["config"]["Cmd"] = cmd or ["echo", tag or "untagged"]
    if label:
        config["config"]["Labels"] = label
    config["history"] = [*config.get("history", []),
                         {"created": created, "created_by": f"CMD {config['config']['Cmd']}",
                          "empty_layer": True}]
    config_bytes = canonical(config)
    manifest = canonical({
        "schemaVersion": 2, "mediaType": mediatype.OCI_MANIFEST,
        "config": {"mediaType": mediatype.OCI_CONFIG, "digest": engine.content.put(config_bytes),
                   "size": len(config_bytes)},
        "layers": [layer.to_json() for layer in base.layers],
    })
    digest = engine.content.put(manifest)
    engine.image_store.add(digest, tag, parent=base.manifest_digest)
    return engine.image_store.load(digest)


def rows(cli, *args):
    return [line.split() for line in cli("images", *args).stdout.splitlines()[1:]]


def test_tag_then_untag_keeps_the_image(cli, engine):
    assert cli("tag", "busybox", "mybox:1.0").returncode == 0
    listing = rows(cli)
    assert {(r[0], r[1]) for r in listing} == {("busybox", "latest"), ("mybox", "1.0")}
    assert len({r[2] for r in listing}) == 1, "one image, two names"
    r = cli("rmi", "mybox:1.0")
    assert (r.returncode, r.stdout) == (0, "Untagged: mybox:1.0\n")
    assert [(r[0], r[1]) for r in rows(cli)] == [("busybox", "latest")]
    assert cli("tag", "busybox", "scratch").returncode == 125


def test_removing_the_last_tag_deletes_the_image_and_its_blobs(cli, engine):
    image = engine.images.get("busybox")
    engine.snapshots.ensure(image)
    r = cli("rmi", "busybox")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"Untagged: busybox:latest\nDeleted: {image.id}\n"
    assert rows(cli) == []
    assert list(engine.content.digests()) == [], "garbage collection reclaimed every blob"
    assert not engine.layout.snapshot(image.chain_ids()[0]).exists()
    assert cli("system", "check").returncode == 0


def test_an_image_in_use_needs_force(cli, engine):
    c = engine.containers.create("busybox", ["true"])
    r = cli("rmi", "busybox")
    assert r.returncode == 125
    assert re.search(r'conflict: unable to remove repository reference "busybox" \(must force\) - '
                     rf"container {c.short_id} is using its referenced image [0-9a-f]{{12}}", r.stderr)
    r = cli("rmi", "-f", "busybox")
    assert r.returncode == 0 and "Untagged: busybox:latest" in r.stdout
    # The container keeps working: its image's blobs stay while it exists.
    assert c.run() == 0
    c.remove()
    engine.collect_garbage()
    assert list(engine.content.digests()) == []


def test_by_id_with_several_tags_needs_force(cli, engine):
    cli("tag", "busybox", "other:1")
    image = engine.images.get("busybox")
    r = cli("rmi", image.short_id)
    assert r.returncode == 125
    assert f"conflict: unable to delete {image.short_id} (must be forced) - image is referenced in " \
           "multiple repositories" in r.stderr
    r = cli("rmi", "-f", image.short_id)
    assert r.returncode == 0
    assert sorted(r.stdout.splitlines()) == sorted(
        ["Untagged: busybox:latest", "Untagged: other:1", f"Deleted: {image.id}"])
    assert rows(cli) == []


def test_retagging_leaves_a_dangling_image_that_prune_removes(cli, engine):
    old = derive(engine, "app:1", created="2030-01-01T00:00:00Z")
    new = derive(engine, "app:1", created="2030-01-02T00:00:00Z")
    listing = rows(cli)
    assert ["app", "1", new.short_id] == listing[0][:3]
    assert ["<none>", "<none>", old.short_id] in [r[:3] for r in listing]
    assert engine.images.get(old.id).dangling
    r = cli("image", "prune", "-f")
    assert r.returncode == 0
    assert f"deleted: {old.id}" in r.stdout and "Total reclaimed space:" in r.stdout
    assert ["<none>", "<none>", old.short_id] not in [r[:3] for r in rows(cli)]
    r = cli("image", "prune", "-f")
    assert r.stdout == "Total reclaimed space: 0B\n"


def test_prune_asks_first(cli, engine):
    derive(engine, "app:1", created="2030-01-01T00:00:00Z")
    derive(engine, "app:1", created="2030-01-02T00:00:00Z")
    r = cli("image", "prune", input="n\n")
    assert "WARNING! This will remove all dangling images." in r.stdout
    assert "Deleted Images" not in r.stdout
    assert len(rows(cli)) == 3
    r = cli("image", "prune", input="y\n")
    assert "Deleted Images:" in r.stdout and len(rows(cli)) == 2


def test_intermediate_images_show_only_with_a(cli, engine):
    parent = derive(engine, "parent:1")
    child = derive(engine, "child:1", parent="parent:1")
    cli("rmi", "--no-prune", "parent:1")  # untag: parent has a child, so it is kept
    assert engine.images.get(parent.id).intermediate
    ids = [r[2] for r in rows(cli)]
    assert parent.short_id not in ids and child.short_id in ids
    all_rows = rows(cli, "-a")
    assert ["<none>", "<none>", parent.short_id] in [r[:3] for r in all_rows]
    # A child blocks deleting its parent, even with -f.
    r = cli("rmi", "-f", parent.short_id)
    assert "image has dependent child images" in r.stderr and r.returncode == 125
    # Removing the child prunes the untagged parent too ...
    r = cli("rmi", "child:1")
    assert r.stdout.splitlines() == ["Untagged: child:1", f"Deleted: {child.id}", f"Deleted: {parent.id}"]


def test_no_prune_keeps_untagged_parents(cli, engine):
    parent = derive(engine, "parent:1")
    derive(engine, "child:1", parent="parent:1")
    cli("rmi", "parent:1")
    r = cli("rmi", "--no-prune", "child:1")
    assert f"Deleted: {parent.id}" not in r.stdout
    assert ["<none>", "<none>", parent.short_id] in [r[:3] for r in rows(cli, "-a")]


def test_history(cli, engine):
    lines = cli("history", "busybox").stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    image = engine.images.get("busybox")
    assert lines[1].startswith(image.short_id) and 'CMD ["sh"]' in lines[1] and " 0B" in lines[1]
    assert lines[2].startswith("<missing>") and "dockyard: ADD busybox-static as /bin/busybox…" in lines[2]
    assert re.search(r" \d(\.\d+)?MB", lines[2])
    assert cli("history", "-q", "busybox").stdout.split() == [image.short_id, "<missing>"]
    raw = cli("history", "-H=false", "--no-trunc", "busybox").stdout.splitlines()
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", raw[2]) and image.id in raw[1]
    assert re.search(r" \d{6,}$", raw[2]), "sizes in bytes"
    # A child shows its parent's ID at the parent's last step.
    child = derive(engine, "child:1")
    ids = cli("history", "-q", "child:1").stdout.split()
    assert ids == [child.short_id, image.short_id, "<missing>"]


def test_system_df(cli, engine):
    derive(engine, "app:1")
    engine.containers.create("busybox", ["true"])
    lines = cli("system", "df").stdout.splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert lines[1].split()[:3] == ["Images", "2", "1"]
    assert lines[2].split()[:3] == ["Containers", "1", "0"]
    verbose = cli("system", "df", "-v").stdout
    assert "SHARED SIZE" in verbose and "Containers space usage:" in verbose


def test_system_check_finds_problems_and_leftovers(cli, engine, root):
    r = cli("system", "check")
    assert r.returncode == 0 and "0 problem(s), 0 leftover(s)" in r.stdout
    orphan = engine.content.put(b"nobody refers to me")
    (root / "ingest").mkdir(exist_ok=True)
    (root / "ingest" / "999999-dead").write_bytes(b"partial")
    r = cli("system", "check")
    assert r.returncode == 0
    assert f"leftover  blob {orphan}: no image or container refers to it (orphan)" in r.stdout
    assert "leftover  ingest/999999-dead" in r.stdout
    r = cli("system", "check", "--repair")
    assert "0 problem(s), 0 leftover(s)" in r.stdout
    assert not engine.content.exists(orphan)
    # Corrupt a blob: a problem, exit 1.
    layer = engine.images.get("busybox").layers[0].digest
    path = engine.content.path(layer)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"X")
    r = cli("system", "check")
    assert r.returncode == 1
    assert f"problem   blob {layer}: its content does not hash to its name" in r.stdout


def test_management_command_spellings(cli, engine):
    assert cli("image", "ls").stdout == cli("images").stdout
    engine.containers.create("busybox", ["true"], name="spelled")
    assert cli("container", "ls", "-a").stdout.splitlines()[1].endswith("spelled")
    assert json.loads(cli("image", "inspect", "busybox").stdout)[0]["RepoTags"] == ["busybox:latest"]
    r = cli("container", "inspect", "busybox")
    assert r.returncode == 125 and "No such container: busybox" in r.stderr
    assert cli("container", "rm", "spelled").stdout == "spelled\n"
    cli("image", "tag", "busybox", "x:1")
    assert cli("image", "rm", "x:1").stdout == "Untagged: x:1\n"
    assert cli("image", "history", "-q", "busybox").returncode == 0
    assert cli("prune").returncode == 125, "prune exists only as `image prune`"
    assert cli("df").returncode == 125, "df exists only as `system df`"


def test_conflict_errors_from_the_api(engine):
    engine.containers.create("busybox", ["true"])
    with pytest.raises(Conflict, match="must force"):
        engine.images.remove("busybox")


def test_repair_keeps_orphans_while_a_writer_holds_a_lease(cli, engine):
    orphan = engine.content.put(b"written by a load still running")
    with engine.content.lease():  # as a load or commit in progress would
        r = cli("system", "check", "--repair")
        assert f"removed blob {orphan}" not in r.stdout
        assert f"leftover  blob {orphan}" in r.stdout
        assert engine.content.exists(orphan)
    r = cli("system", "check", "--repair")
    assert f"removed blob {orphan}" in r.stdout and not engine.content.exists(orphan)


def test_images_filters_and_format(cli, engine):
    old = derive(engine, "app:1", created="2030-01-01T00:00:00Z", label={"tier": "web"})
    new = derive(engine, "app:1", created="2030-01-02T00:00:00Z", label={"tier": "db"})
    assert cli("images", "-q", "-f", "dangling=true").stdout.split() == [old.short_id]
    assert new.short_id not in cli("images", "-q", "-f", "dangling=true").stdout
    assert cli("images", "-q", "-f", "label=tier=db").stdout.split() == [new.short_id]
    assert cli("images", "-q", "-f", "reference=app:*").stdout.split() == [new.short_id]
    assert cli("images", "-q", "-f", "before=app:1").stdout.split() == [old.short_id,
                                                                         engine.images.get("busybox").short_id]
    assert cli("images", "--format", "{{.Repository}}:{{.Tag}}", "app").stdout == "app:1\n"
    lines = cli("images", "--format", "table {{.ID}}\\t{{.Tag}}").stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "ID", "TAG"] and len(lines) == 4
    row = json.loads(cli("images", "--format", "{{json .}}", "busybox").stdout)
    assert row["Repository"] == "busybox" and row["Tag"] == "latest"
    r = cli("images", "-f", "colour=red")
    assert r.returncode == 125 and "invalid filter 'colour'" in r.stderr


def test_prune_all_keeps_images_in_use(cli, engine):
    derive(engine, "unused:1")
    c = engine.containers.create("busybox", ["true"])
    r = cli("image", "prune", "-a", "-f")
    assert r.returncode == 0 and "untagged: unused:1" in r.stdout
    assert [line.split()[0] for line in cli("images").stdout.splitlines()[1:]] == ["busybox"]
    c.remove()
    cli("image", "prune", "-a", "-f")
    assert cli("images", "-q").stdout == "" and list(engine.content.digests()) == []

"""Checker for lab 02, "Layers by hand".

Run it after your own attempt (see README.md)::

    pytest labs/02-layers

It reads the real state of your Dockyard root ($DOCKYARD_ROOT, or
/var/lib/dockyard) through the ``lab_engine`` fixture of Dockyard's pytest
plugin: the image ``lab02/app:v2``, its config, its layer tars (opened with
:mod:`tarfile`, as any tool that unpacks an image would), and the list of
images. Each test checks one thing and, when it fails, says what to do.
While the image itself is missing, the tests that need it are skipped.
"""

from __future__ import annotations

import json
import os
import tarfile

import pytest

NAME = "lab02/app:v2"
DATA = "app/data.bin"
DATA_SIZE = 1024 * 1024          # 1 MiB
WHITEOUT = "app/.wh.data.bin"    # how a layer tar says "data.bin is deleted"
OPAQUE = "app/.wh..wh..opq"      # how a layer tar says "nothing below shows through /app"
README = "app/README"
CMD = ["cat", "/app/README"]
LABEL = ("course", "dockyard")

GOOD_COMMIT = ("dockyard commit -c 'CMD [\"cat\", \"/app/README\"]' -c 'LABEL course=dockyard' "
               "CONTAINER lab02/app:v2")


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


def layer_entries(engine, descriptor) -> dict[str, tarfile.TarInfo]:
    """Every entry of one layer tar, by name (``app/data.bin``, no leading ``./``)."""
    with engine.content.open(descriptor.digest) as blob:
        with tarfile.open(fileobj=blob, mode="r|*") as tar:
            return {m.name.removeprefix("./").rstrip("/"): m for m in tar}


def listing(entries: dict[str, tarfile.TarInfo]) -> str:
    shown = [f"{name} ({m.size} bytes)" if m.isfile() else name for name, m in entries.items()]
    return ", ".join(shown[:12]) + (", ..." if len(shown) > 12 else "") if shown else "nothing"


# -- fixtures: what the tests look at --------------------------------------------


@pytest.fixture
def app(lab_engine):
    """The learner's image ``lab02/app:v2``; the test is skipped while it does not exist."""
    image = find(lab_engine, NAME)
    if image is None:
        pytest.skip(f"there is no image {NAME} yet (see test_image_exists)")
    return image


@pytest.fixture
def base(lab_engine):
    """busybox, the image lab02/app:v2 must be built on."""
    image = find(lab_engine, "busybox")
    if image is None:
        pytest.skip("busybox is not in this root (see test_built_on_busybox)")
    return image


@pytest.fixture
def first_layer(app, base, lab_engine):
    """The entries of the first layer above busybox's."""
    if len(app.layers) <= len(base.layers):
        pytest.skip(f"{NAME} has no layer above busybox's (see test_two_new_layers)")
    return layer_entries(lab_engine, app.layers[len(base.layers)])


@pytest.fixture
def second_layer(app, base, lab_engine):
    """The entries of the second layer above busybox's."""
    if len(app.layers) <= len(base.layers) + 1:
        pytest.skip(f"{NAME} has no second layer above busybox's (see test_two_new_layers)")
    return layer_entries(lab_engine, app.layers[len(base.layers) + 1])


# -- the checks, in the order you will meet them ---------------------------------


def test_image_exists(lab_engine):
    image = find(lab_engine, NAME)
    if image is None:
        others = sorted(t for im in lab_engine.images.list(all=True) for t in im.tags
                        if t.startswith("lab02/"))
        seen = f" The lab02 images here are: {', '.join(others)}." if others else ""
        pytest.fail(
            f"No image named {NAME} exists in the Dockyard root {lab_engine.root}.{seen} "
            f"An image is made from a container with `dockyard commit CONTAINER {NAME}` "
            f"(the name goes after the container). If you worked with another root "
            f"(DOCKYARD_ROOT or --root), run this checker with the same DOCKYARD_ROOT. "
            f"(`dockyard images` lists the images that exist.)", pytrace=False)


def test_built_on_busybox(app, lab_engine):
    busybox = find(lab_engine, "busybox")
    require(busybox is not None, (
        "There is no busybox image in this root any more, so the checker cannot compare. "
        "Did `dockyard image prune -a` or `dockyard rmi` delete it? `dockyard pull busybox` "
        "makes it again (the same image, it is reproducible)."))
    base = busybox.diff_ids
    require(app.diff_ids[:len(base)] == base, (
        f"{NAME} is not built on busybox: its bottom layers are not busybox's "
        f"(`dockyard history {NAME}`). The first container must be made from busybox: "
        f"`dockyard run --name ... busybox sh -c '...'`. (An image made with `import` starts "
        f"from nothing: it has no busybox layers.)"))


def test_two_new_layers(app, base):
    new = len(app.layers) - len(base.layers)
    if new == 1:
        pytest.fail(
            f"{NAME} has only 1 new layer above busybox's, not 2 (`dockyard history {NAME}`). "
            f"Each commit adds one layer: commit the container that adds /{DATA} first, then "
            f"run a SECOND container from that new image (e.g. `dockyard run --name ... "
            f"lab02/app:v1 sh -c 'rm /{DATA} && ...'`) and commit that one. Adding and deleting "
            f"in the same container gives one layer, without the file at all.", pytrace=False)
    if new <= 0:
        pytest.fail(
            f"{NAME} has no layer above busybox's: the committed container changed no file "
            f"(a commit of an unchanged container adds only a history entry). "
            f"`dockyard diff CONTAINER` shows what a container changed.", pytrace=False)
    require(new == 2, (
        f"{NAME} has {new} layers above busybox's, not 2 (`dockyard history {NAME}`). "
        f"Every commit stacks one layer on the container's image: did you run a container "
        f"from an image you had already built on (e.g. from lab02/app:v2 itself)? Start "
        f"again from busybox: two containers, two commits. (To retry: remove your containers "
        f"with `dockyard rm`, then `dockyard rmi {NAME}`.)"))


def test_first_layer_adds_data_bin(first_layer):
    entry = first_layer.get(DATA)
    if entry is None:
        hint = ""
        if README in first_layer:
            hint = (f" It holds /{README}: did you create and delete data.bin in the SAME "
                    f"container? A file created and deleted in the same container never reaches "
                    f"a layer -- commit after adding it, then delete it in a second container.")
        pytest.fail(
            f"The first layer above busybox does not contain /{DATA}; it holds: "
            f"{listing(first_layer)}.{hint} The first container writes the file, e.g. "
            f"`sh -c 'mkdir -p /app && head -c {DATA_SIZE} /dev/urandom > /{DATA}'`.",
            pytrace=False)
    require(entry.isfile() and entry.size == DATA_SIZE, (
        f"/{DATA} in the first new layer is {entry.size} bytes, not 1 MiB ({DATA_SIZE} bytes). "
        f"`head -c {DATA_SIZE} /dev/urandom > /{DATA}` writes exactly 1 MiB."))


def test_second_layer_deletes_data_bin(second_layer):
    if OPAQUE in second_layer and WHITEOUT not in second_layer:
        pytest.fail(
            f"The second layer marks /app *opaque* ({OPAQUE}): you removed the whole /app "
            f"directory and created it again (rm -rf /app; mkdir /app), so overlayfs hid "
            f"everything below it instead of deleting data.bin alone. Delete only the file: "
            f"`rm /{DATA}` (then write the README into the existing /app).", pytrace=False)
    if DATA in second_layer and second_layer[DATA].isfile():
        pytest.fail(
            f"The second layer contains /{DATA} itself, {second_layer[DATA].size} bytes, "
            f"instead of deleting it: the second container wrote the file again. Make the "
            f"second container from the image of the first commit and let it `rm /{DATA}`.",
            pytrace=False)
    require(WHITEOUT in second_layer, (
        f"The second layer has no whiteout {WHITEOUT}, so it does not delete /{DATA}; it "
        f"holds: {listing(second_layer)}. The second container, made FROM the image of the "
        f"first commit, must run `rm /{DATA}`: overlayfs records the deletion in its writable "
        f"layer, and commit turns that into the entry {WHITEOUT}."))


def test_second_layer_adds_readme(second_layer):
    entry = second_layer.get(README)
    require(entry is not None and entry.isfile(), (
        f"The second layer does not add /{README}; it holds: {listing(second_layer)}. The "
        f"second container writes it, e.g. `... && echo 'hello' > /{README}`."))
    require(entry.size > 0, f"/{README} is empty: write at least one line into it.")


def test_cmd(app):
    cmd = app.run_config.get("Cmd")
    if cmd == ["/bin/sh", "-c", " ".join(CMD)]:
        pytest.fail(
            f"The image's Cmd is {json.dumps(cmd)}: `CMD cat /app/README` is the *shell form*, "
            f"which wraps the command in /bin/sh -c. Use the JSON (exec) form: "
            f"-c 'CMD [\"cat\", \"/app/README\"]' (single quotes outside, double inside).",
            pytrace=False)
    require(cmd == CMD, (
        f"The image's Cmd is {json.dumps(cmd)}, not {json.dumps(CMD)}. A commit keeps the "
        f"container's own configuration, command included, unless you change it: "
        f"{GOOD_COMMIT} (`dockyard inspect -f '{{{{json .Config.Cmd}}}}' {NAME}` shows it)."))
    entrypoint = app.run_config.get("Entrypoint")
    require(not entrypoint, (
        f"The image has an Entrypoint, {json.dumps(entrypoint)}: it would run in front of "
        f"the Cmd. Make the image without -c 'ENTRYPOINT ...'."))


def test_running_prints_the_readme(app, lab_engine):
    from engine.errors import EngineError

    if os.geteuid() != 0:
        pytest.skip("running a container needs root")
    try:
        readme = lab_engine.containers.run(app, ["cat", "/app/README"], remove=True)
    except EngineError:
        pytest.skip(f"{NAME} has no readable /{README} (see test_second_layer_adds_readme)")
    try:
        out = lab_engine.containers.run(app, remove=True)
    except EngineError as e:
        pytest.fail(f"`dockyard run --rm {NAME}` (no command: the image's Cmd runs) failed: {e}. "
                    f"See test_cmd.", pytrace=False)
    require(out == readme, (
        f"`dockyard run --rm {NAME}` prints {out[:80]!r}, not the README ({readme[:80]!r}). "
        f"Its default command must be {json.dumps(CMD)}: {GOOD_COMMIT}."))


def test_label(app):
    labels = app.labels
    key, value = LABEL
    require(labels.get(key) == value, (
        f"The image's labels are {json.dumps(labels)}: the label {key}={value} is missing. "
        f"Add it when you commit: -c 'LABEL {key}={value}' "
        f"(`dockyard images -f label={key}={value}` lists the images that have it)."))


def test_no_dangling_images(lab_engine):
    dangling = [im for im in lab_engine.images.list(all=True) if im.dangling]
    if not dangling:
        return
    used = {(c.attrs.get("Dockyard") or {}).get("ManifestDigest"): c.name
            for c in lab_engine.containers.list(all=True)}
    in_use = [f"{im.short_id} (used by container {used[im.manifest_digest]})"
              for im in dangling if im.manifest_digest in used]
    extra = (f" Some are used by containers, which `image prune` does not touch: "
             f"{', '.join(in_use)} -- remove those containers first (`dockyard rm`)."
             if in_use else "")
    pytest.fail(
        f"The store holds {len(dangling)} dangling image(s) (<none>:<none>): "
        f"{', '.join(im.short_id for im in dangling)}. A tag that moves to a new image -- e.g. "
        f"when you commit to {NAME} a second time -- leaves the old image without a name. "
        f"List them with `dockyard images -f dangling=true` and delete them with "
        f"`dockyard image prune` (or `dockyard rmi ID`).{extra} (Untagged images that another "
        f"image is built on are *intermediate*, not dangling: `dockyard images -a` shows "
        f"them, and they may stay.)", pytrace=False)

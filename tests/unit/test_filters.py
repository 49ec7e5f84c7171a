"""--filter for images and ps: docker's keys, values and matching rules."""

from types import SimpleNamespace

import pytest

from engine.content import ContentStore
from engine.errors import ContainerNotFound, ImageNotFound, UsageError
from engine.image import filters as image_filters
from engine.image import mediatype
from engine.image.filters import created_ns, glob_match, match_image, matching_tags
from engine.image.manifest import canonical
from engine.image.store import ImageStore
from engine.layout import Layout
from engine.runtime import filters as ps_filters
from engine.runtime.container import Container
from engine.runtime.filters import match_container, shows_all

# -- parsing ----------------------------------------------------------------------


@pytest.mark.parametrize("args, parsed", [
    ([], {}),
    (["dangling=true"], {"dangling": ["true"]}),
    ([" Label = a=b ", "label=c"], {"label": ["a=b", "c"]}),  # key lower-cased, both sides trimmed
    (["reference=app", "reference=app", ""], {"reference": ["app"]}),  # repeats once, "" ignored
    (["before=app:1", "since=sha256:ab"], {"before": ["app:1"], "since": ["sha256:ab"]}),
    (["label="], {"label": [""]}),
])
def test_parse_image_filters(args, parsed):
    assert image_filters.parse_filters(args) == parsed


@pytest.mark.parametrize("args, message", [
    (["dangling"], "bad format of filter (expected name=value)"),
    (["colour=red"], "invalid filter 'colour'"),
    (["status=running"], "invalid filter 'status'"),  # a ps filter, not an image one
    (["until=24h"], "invalid filter 'until': docker has it, Dockyard does not (yet)"),
    (["dangling=maybe"], "invalid filter 'dangling=[maybe]'"),
    (["dangling=true", "dangling=false"], "invalid filter 'dangling=[true false]'"),
])
def test_parse_image_filters_refuses_like_docker(args, message):
    with pytest.raises(UsageError) as caught:
        image_filters.parse_filters(args)
    assert str(caught.value) == message


@pytest.mark.parametrize("args, parsed", [
    (["id=3f2a", "name=web", "name=^/db$"], {"id": ["3f2a"], "name": ["web", "^/db$"]}),
    (["exited=0", "exited=137", "status=exited"], {"exited": ["0", "137"], "status": ["exited"]}),
    (["ancestor=busybox", "label=a", "before=x", "since=y"],
     {"ancestor": ["busybox"], "label": ["a"], "before": ["x"], "since": ["y"]}),
])
def test_parse_container_filters(args, parsed):
    assert ps_filters.parse_filters(args) == parsed


@pytest.mark.parametrize("args, message", [
    (["nope"], "bad format of filter (expected name=value)"),
    (["dangling=true"], "invalid filter 'dangling'"),
    (["status=sleeping"], "invalid filter 'status=sleeping'"),
    (["exited=abc"], "invalid filter 'exited=abc': not an integer exit status"),
    (["network=bridge"], "invalid filter 'network': docker has it, Dockyard does not (yet)"),
])
def test_parse_container_filters_refuses_like_docker(args, message):
    with pytest.raises(UsageError) as caught:
        ps_filters.parse_filters(args)
    assert str(caught.value) == message


def test_a_status_filter_lists_stopped_containers_too():
    assert shows_all({"status": ["exited"]})
    assert not shows_all({"name": ["web"]})


# -- Go's path.Match and times --------------------------------------------------


@pytest.mark.parametrize("pattern, name, matches", [
    ("busybox", "busybox", True),
    ("busy*", "busybox:latest", True),
    ("*", "busybox:latest", True),
    ("*", "team/app:1", False),  # * stops at a slash (unlike fnmatch)
    ("*/*", "team/app:1", True),
    ("team/*:1", "team/app:1", True),
    ("app:?", "app:1", True),
    ("app:?", "app:12", False),
    ("app:[0-9]", "app:7", True),
    ("app:[^0-9]", "app:7", False),
    ("app:[^0-9]", "app:x", True),
    ("app:[a-c1]", "app:1", True),
    ("a\\*", "a*", True),
    ("a\\*", "ab", False),
    ("app", "app:latest", False),  # whole-name match
])
def test_glob_match_is_gos_path_match(pattern, name, matches):
    assert glob_match(pattern, name) is matches


@pytest.mark.parametrize("pattern", ["[", "app:[", "[]", "a\\", "[a-", "[-a]"])
def test_bad_patterns_are_errors(pattern):
    with pytest.raises(UsageError, match="syntax error in pattern"):
        glob_match(pattern, "anything")


@pytest.mark.parametrize("text, ns", [
    ("1970-01-01T00:00:01Z", 1_000_000_000),
    ("2026-05-07T12:00:00.123456789Z", 1_778_155_200_123_456_789),
    ("2026-05-07T12:00:00.5Z", 1_778_155_200_500_000_000),
    ("2026-05-07T14:00:00+02:00", 1_778_155_200_000_000_000),
    ("2026-05-07T10:30:00-01:30", 1_778_155_200_000_000_000),
    ("0001-01-01T00:00:00Z", None),
    ("", None),
    ("yesterday", None),
])
def test_created_ns(text, ns):
    assert created_ns(text) == ns


# -- images ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    layout = Layout(tmp_path / "root")
    layout.create()
    return ImageStore(layout, ContentStore(layout))


def add_image(store, name: str, created: str, *, tags=(), labels=None):
    """An image with one (fake) layer; no root and no tar needed."""
    content = store.content
    layer = content.put(name.encode())
    config = canonical({"architecture": "amd64", "os": "linux", "created": created,
                        "config": {"Cmd": ["sh"], "Labels": labels},
                        "rootfs": {"type": "layers", "diff_ids": [layer]}})
    config_digest = content.put(config)
    manifest = canonical({"schemaVersion": 2, "mediaType": mediatype.OCI_MANIFEST,
                          "config": {"mediaType": mediatype.OCI_CONFIG, "digest": config_digest,
                                     "size": len(config)},
                          "layers": [{"mediaType": mediatype.OCI_LAYER, "digest": layer,
                                      "size": len(name)}]})
    digest = content.put(manifest)
    store.add(digest)
    for tag in tags:
        store.add(digest, tag)
    return store.load(digest)


@pytest.fixture
def images(store):
    return {
        "old": add_image(store, "old", "2020-01-01T00:00:00Z", tags=["app:1"],
                         labels={"tier": "web", "team": "a"}),
        "mid": add_image(store, "mid", "2021-01-01T00:00:00.5Z", tags=["app:2", "team/web:latest"],
                         labels={"tier": "db"}),
        "new": add_image(store, "new", "2022-01-01T00:00:00Z"),
        "parent": add_image(store, "parent", "2019-01-01T00:00:00Z"),
        "undated": add_image(store, "undated", "0001-01-01T00:00:00Z", tags=["scratchy:latest"]),
    }


def listed(images, args):
    """The names of the images `images --filter ARGS` would list."""
    filters = image_filters.parse_filters(args)
    by_tag = {tag: im for im in images.values() for tag in im.tags}

    def resolve(name):
        if name not in by_tag:
            raise ImageNotFound(f"No such image: {name}")
        return by_tag[name]

    def has_children(im):
        return im is images["parent"]

    return sorted(name for name, im in images.items()
                  if match_image(im, filters, resolve=resolve, has_children=has_children))


@pytest.mark.parametrize("args, names", [
    ([], ["mid", "new", "old", "parent", "undated"]),
    (["dangling=true"], ["new"]),  # untagged, and no image was made from it
    (["dangling=1"], ["new"]),
    (["dangling=false"], ["mid", "old", "undated"]),
    (["label=tier"], ["mid", "old"]),
    (["label=tier=web"], ["old"]),
    (["label=tier=web", "label=team=a"], ["old"]),  # several labels: all of them
    (["label=tier=web", "label=team=b"], []),
    (["label=tier="], []),  # an empty value must match exactly
    (["before=app:2"], ["old", "parent"]),  # strictly before; undated images are left out
    (["since=app:1"], ["mid", "new"]),
    (["since=app:1", "before=app:2"], []),
    (["since=app:1", "since=app:2"], ["new"]),  # several: after all of them
    (["reference=app"], ["mid", "old"]),
    (["reference=app:1"], ["old"]),
    (["reference=app:*"], ["mid", "old"]),
    (["reference=*"], ["mid", "old", "undated"]),  # "team/web" has a slash: * does not match it
    (["reference=team/*"], ["mid"]),
    (["reference=nothing", "reference=scratchy"], ["undated"]),  # several patterns: any
    (["reference=app", "label=tier=db"], ["mid"]),  # different keys: all
    (["dangling=true", "label=tier"], []),
])
def test_match_image(images, args, names):
    assert listed(images, args) == names


def test_matching_tags_lists_only_the_tags_that_match(images):
    mid = images["mid"]
    assert sorted(matching_tags(mid, {})) == ["app:2", "team/web:latest"]
    assert matching_tags(mid, {"reference": ["team/web"]}) == ["team/web:latest"]
    assert matching_tags(mid, {"reference": ["app:2"]}) == ["app:2"]
    assert matching_tags(images["new"], {"reference": ["*"]}) == []


def test_before_an_unknown_image_fails_as_docker_does(images):
    with pytest.raises(ImageNotFound, match="No such image: nope:latest"):
        listed(images, ["before=nope:latest"])


def test_dangling_uses_the_images_own_children_by_default():
    untagged = SimpleNamespace(tags=[], children=[], run_config={}, created="2020-01-01T00:00:00Z")
    parent = SimpleNamespace(tags=[], children=["sha256:child"], run_config={}, created="2020-01-01T00:00:00Z")
    dangling = {"dangling": ["true"]}
    assert match_image(untagged, dangling, resolve=None)
    assert not match_image(parent, dangling, resolve=None)


def test_a_bad_reference_pattern_is_an_error(images):
    with pytest.raises(UsageError, match="syntax error in pattern"):
        listed(images, ["reference=app:["])


# -- containers -------------------------------------------------------------------

IMAGE_A = "sha256:" + "a" * 64
IMAGE_B = "sha256:" + "b" * 64


def container(cid: str, name: str, created: str, *, status="exited", code=0, started=True,
              image=IMAGE_A, image_name="busybox", labels=None):
    return Container(None, {
        "Id": cid + "0" * (64 - len(cid)), "Name": "/" + name, "Created": created,
        "Image": image,
        "State": {"Status": status, "Running": status == "running", "ExitCode": code,
                  "StartedAt": created if started else "0001-01-01T00:00:00Z"},
        "Config": {"Image": image_name, "Labels": labels or {}},
    })


@pytest.fixture
def containers():
    return {
        "web": container("3f2a", "web", "2026-01-01T00:00:00Z", status="running",
                         labels={"tier": "web"}),
        "web-2": container("3f2b", "my-web-2", "2026-01-02T00:00:00Z", code=0,
                           image_name="busybox:1.36", labels={"tier": "web", "v": "2"}),
        "db": container("9a00", "db", "2026-01-03T00:00:00Z", code=137, image=IMAGE_B,
                        image_name="postgres:16"),
        "failed": container("9b00", "failed", "2026-01-04T00:00:00Z", status="created", code=127),
        "fresh": container("c000", "fresh", "2026-01-05T00:00:00Z", status="created", started=False,
                           image_name=IMAGE_A),
    }


def shown(containers, args):
    """The names of the containers `ps -a --filter ARGS` would list."""
    filters = ps_filters.parse_filters(args)
    by_name = {c.name: c for c in containers.values()}
    images = {"busybox:latest": IMAGE_A, "busybox:1.36": IMAGE_A, "postgres:16": IMAGE_B,
              IMAGE_A: IMAGE_A, IMAGE_B: IMAGE_B}

    def resolve_container(ref):
        if ref not in by_name:
            raise ContainerNotFound(f"No such container: {ref}")
        return by_name[ref]

    def resolve_image(ref):
        ref = ref if ":" in ref else ref + ":latest"
        if ref not in images:
            raise ImageNotFound(f"No such image: {ref}")
        return SimpleNamespace(id=images[ref])

    return sorted(key for key, c in containers.items()
                  if match_container(c, filters, resolve_container=resolve_container,
                                     resolve_image=resolve_image))


ALL = ["db", "failed", "fresh", "web", "web-2"]


@pytest.mark.parametrize("args, names", [
    ([], ALL),
    (["id=3f2"], ["web", "web-2"]),  # a prefix of the ID
    (["id=3f2a"], ["web"]),
    (["id=f2a"], []),  # not a prefix
    (["id=3f2a", "id=9a"], ["db", "web"]),  # several: any
    (["name=web"], ["web", "web-2"]),  # a search: "my-web-2" contains "web"
    (["name=^/web$"], ["web"]),  # the daemon's names start with a slash
    (["name=^web"], []),
    (["name=d[b]"], ["db"]),
    (["name=("], []),  # not a valid expression: nothing matches (docker skips it)
    (["label=tier"], ["web", "web-2"]),
    (["label=tier=web", "label=v=2"], ["web-2"]),
    (["label=v"], ["web-2"]),
    (["exited=0"], ["web-2"]),  # not the running one, not the one that never started
    (["exited=137"], ["db"]),
    (["exited=127"], []),  # its command failed to start: still "created", no exit status
    (["exited=0", "exited=137"], ["db", "web-2"]),
    (["status=running"], ["web"]),
    (["status=created"], ["failed", "fresh"]),
    (["status=exited", "status=running"], ["db", "web", "web-2"]),
    (["status=paused"], []),
    (["ancestor=busybox"], ["failed", "fresh", "web", "web-2"]),  # ID of busybox:latest, or same repository
    (["ancestor=busybox:1.36"], ["failed", "fresh", "web", "web-2"]),  # the same image ID
    (["ancestor=postgres"], ["db"]),  # no postgres:latest here, but the same repository
    (["ancestor=postgres:15"], []),  # a tag given: that tag only
    (["ancestor=" + IMAGE_B], ["db"]),
    (["ancestor=" + IMAGE_B.replace("b", "c")], []),  # an unknown ID is not a repository "sha256"
    (["ancestor=" + IMAGE_B[7:19]], []),  # unknown to resolve_image, and no name to compare
    (["ancestor=nginx"], []),
    (["before=db"], ["web", "web-2"]),
    (["since=db"], ["failed", "fresh"]),
    (["since=web", "before=failed"], ["db", "web-2"]),
    (["since=web", "since=my-web-2"], ["db", "failed", "fresh"]),  # several: after all of them
    (["status=exited", "label=tier", "name=web"], ["web-2"]),  # different keys: all
])
def test_match_container(containers, args, names):
    assert shown(containers, args) == names


def test_before_an_unknown_container_fails_as_docker_does(containers):
    with pytest.raises(ContainerNotFound, match="No such container: ghost"):
        shown(containers, ["before=ghost"])

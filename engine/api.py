"""The Python API, in docker-py's shape.

::

    from engine import Engine

    engine = Engine()                                   # or Engine(root="/tmp/dy")
    engine.containers.run("busybox", ["echo", "hi"])    # b"hi\\n" (raises ContainerError on failure)
    c = engine.containers.create("busybox", "sleep 1")  # a Container in state "created"
    engine.containers.list(all=True)
    engine.containers.get("my-name").remove(force=True)
    engine.images.list(); engine.images.get("busybox")

Like docker-py, ``containers.run`` without ``detach`` returns the output and
raises :class:`~engine.errors.ContainerError` when the command fails; if the
image is missing it is "pulled" -- for ``busybox`` that means built from the
host's static busybox, since there is no registry to pull from here.
"""

from __future__ import annotations

import os

from .content import ContentStore
from .errors import (
    ContainerError, EngineError, HostNotSupported, ImageNotFound, InvalidReference, UsageError,
)
from .image import reference, scratch
from .image.store import Image, ImageStore
from .layout import Layout
from .runtime.container import Container, ContainerStore, merge_config
from .snapshot import Snapshotter, check_upper_filesystem


class Engine:
    """One Dockyard root and everything in it. Cheap to create: nothing is
    touched on disk until a command needs it."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.layout = Layout(root)
        self.content = ContentStore(self.layout)
        self.image_store = ImageStore(self.layout, self.content)
        self.snapshots = Snapshotter(self.layout, self.content)
        self.images = ImageCollection(self)
        self.containers = ContainerCollection(self)
        from .network.api import NetworkCollection  # light: pyroute2 loads only for kernel steps
        self.networks = NetworkCollection(self)

    @property
    def root(self):
        return self.layout.root

    def __repr__(self) -> str:
        return f"<Engine root={str(self.layout.root)!r}>"

    def events(self, since=None, until=None, filters=None, decode: bool = True):
        """``docker events`` as docker-py's ``client.events()``: a generator of
        events (dicts with ``decode``, JSON bytes without), oldest first.

        ``since``/``until``: datetimes, Unix timestamps, RFC 3339 strings or
        durations (``"10m"``). Without ``until`` it waits for new events
        forever (close the generator to stop). ``filters``: {"container":
        ..., "event": ..., "image": ..., "type": ...}.
        """
        import json

        from .runtime import events, logs

        import time

        since_ns, until_ns = logs.parse_time_arg(since), logs.parse_time_arg(until)
        if since_ns is None:
            since_ns = time.time_ns()  # as docker: only what happens from now on
        follow = until_ns is None or until_ns > time.time_ns()
        stream = events.read(self.layout, since_ns=since_ns, until_ns=until_ns,
                             filters=events.parse_filters(filters), follow=follow)
        for event in stream:
            yield event if decode else json.dumps(event).encode()

    def collect_garbage(self):
        """Delete blobs and snapshots nothing refers to (see engine/gc.py)."""
        from . import gc
        return gc.collect(self)

    def check_host(self) -> None:
        """Refuse early, with one clear line, on a host that cannot run containers."""
        if os.geteuid() != 0:
            raise HostNotSupported("running containers needs root: namespaces, mounts and "
                                   "pivot_root require CAP_SYS_ADMIN (try sudo)")
        try:
            with open("/proc/filesystems") as f:
                have_overlay = any(line.split()[-1] == "overlay" for line in f if line.strip())
        except OSError:
            have_overlay = False
        if not have_overlay:
            raise HostNotSupported("overlayfs is not available in this kernel (no 'overlay' in "
                                   "/proc/filesystems); load it with 'modprobe overlay'")
        probe = self.layout.root if self.layout.root.exists() else self.layout.root.parent
        while not probe.exists():
            probe = probe.parent
        check_upper_filesystem(probe)


class ImageCollection:
    """``engine.images``: look up, list and make images."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def get(self, name: str) -> Image:
        """An image by reference (``busybox``, ``busybox:latest``) or ID (prefix)."""
        try:
            if str(reference.parse(name)) == scratch.SCRATCH:
                return scratch.image()
        except InvalidReference:
            if not reference.looks_like_id(name):
                raise
        empty = scratch.image()
        if name in (empty.id, empty.manifest_digest):
            return empty
        return self._engine.image_store.get(name)

    def list(self, name: str | None = None, all: bool = False) -> list[Image]:
        """Images newest first; intermediate images only with ``all`` (docker-py's shape)."""
        images = self._engine.image_store.list(all=all)
        if name is not None:
            wanted = reference.parse(name)
            has_tag = ":" in name.rsplit("/", 1)[-1]
            images = [im for im in images if any(
                (reference.parse(t).familiar_name == wanted.familiar_name
                 and (not has_tag or reference.parse(t).tag == wanted.tag)) for t in im.tags)]
        return images

    def build_busybox(self, binary: str | None = None, tag: str = "busybox:latest") -> Image:
        """Make ``busybox:latest`` from the host's static busybox (see image/base.py)."""
        from .image import base

        image = base.build_busybox(self._engine.image_store, binary or base.BUSYBOX_BINARY, tag)
        self._engine.snapshots.ensure(image)  # unpack at pull time, as docker does
        return self._engine.image_store.load(image.manifest_digest)

    def pull(self, name: str) -> Image:
        """Get an image that is not here. Without a registry (a later feature),
        only ``busybox`` can be made, from the host's static busybox."""
        ref = reference.parse(name)
        if ref.familiar_name == "busybox" and ref.tag == "latest" and ref.digest is None:
            return self.build_busybox()
        raise ImageNotFound(f"No such image: {ref} (there is no registry configured; "
                            "only busybox:latest can be made locally)")

    def tag(self, image: str | Image, repository: str, tag: str | None = None) -> bool:
        """``docker tag``: add ``repository[:tag]`` as a name of ``image`` (docker-py's Image.tag)."""
        img = image if isinstance(image, Image) else self.get(image)
        name = repository if tag is None else f"{repository}:{tag}"
        if str(reference.parse(name)) == scratch.SCRATCH:
            raise UsageError("'scratch' is a reserved name")
        if img.manifest_digest == scratch.image().manifest_digest:
            scratch.store(self._engine.content)
        self._engine.image_store.add(img.manifest_digest, name)
        return True

    def remove(self, image: str, force: bool = False, noprune: bool = False) -> list[dict]:
        """``docker rmi``: untag and/or delete; returns [{"Untagged": ...}, {"Deleted": ...}]."""
        from .image import deletion
        return [{verb: what} for verb, what in deletion.remove(self._engine, image, force=force,
                                                              prune=not noprune)]

    def prune(self, all: bool = False) -> dict:
        """``docker image prune [-a]``: {"ImagesDeleted": [...], "SpaceReclaimed": bytes}."""
        from .image import deletion
        records, reclaimed = deletion.prune(self._engine, all=all)
        return {"ImagesDeleted": [{verb: what} for verb, what in records] or None,
                "SpaceReclaimed": reclaimed}

    def history(self, image: str | Image) -> list[dict]:
        """``docker history``: newest first, docker-py's keys (Id, Created, CreatedBy, Tags,
        Size, Comment). Id is the local image made at that step, else "<missing>"."""
        from .runtime.container import parse_time

        img = image if isinstance(image, Image) else self.get(image)
        history = img.config.get("history") or [
            {"created": img.created, "created_by": ""} for _ in img.layers]
        # Which rows are images we have: this one, its parent, its parent's parent...
        known, chain = {}, img
        while chain is not None:
            rows = len(chain.config.get("history") or chain.layers)
            known.setdefault(rows - 1, chain)
            parent = chain.parent
            try:
                chain = self._engine.image_store.load(parent) if parent else None
            except EngineError:
                chain = None
        sizes, layer = img.layer_sizes, 0
        out = []
        for i, entry in enumerate(history):
            if entry.get("empty_layer"):
                size = 0
            else:
                size = sizes[layer] if layer < len(sizes) else 0
                layer += 1
            owner = known.get(i)
            out.append({"Id": owner.id if owner else "<missing>",
                        "Created": int(parse_time(entry.get("created", ""))),
                        "CreatedBy": entry.get("created_by", ""),
                        "Tags": list(owner.tags) if owner and owner.tags else None,
                        "Size": size, "Comment": entry.get("comment", "")})
        return list(reversed(out))

    def build(self, path: str | os.PathLike | None = None, tag=None, *, dockerfile: str | None = None,
              fileobj=None, custom_context: bool = False, buildargs: dict | None = None,
              target: str | None = None, nocache: bool = False, labels=None,
              network_mode: str | None = None, progress=None):
        """``docker build``: an image from a Dockerfile; returns ``(image, steps)``.

        The context is the directory ``path`` (its ``.dockerignore`` applies;
        the Dockerfile is ``dockerfile``, a path inside the context as in
        docker-py, else ``path/Dockerfile``); or ``fileobj``: a tar stream of
        the context when ``custom_context`` (docker-py's name), else the
        Dockerfile itself (text, bytes or a file object), with no context.

        ``tag``: a name or a list of names, applied only if the whole build
        succeeds. ``buildargs``: ``{"NAME": "value"}`` for ARG. ``target``:
        the stage to stop at. ``nocache``: rebuild every step. ``labels``:
        added to the final image. ``network_mode``: "none" (default),
        "bridge" or "host" for RUN steps. ``progress(event)``: called with each
        :class:`~engine.build.builder.Event` as the build goes.

        ``steps`` is the build log: one :class:`~engine.build.builder.Step`
        per instruction, saying whether it was CACHED and, if not, why.
        Raises :class:`~engine.build.builder.BuildError` when a step fails
        (nothing is tagged) and :class:`~engine.build.dockerfile.DockerfileError`
        for a malformed Dockerfile, with the line.
        """
        from .build.builder import Builder
        from .build.context import BuildContext

        tags = [tag] if isinstance(tag, str) else list(tag or [])
        self._engine.check_host()
        if fileobj is not None and custom_context:
            self._engine.layout.builds.mkdir(parents=True, exist_ok=True)
            scratch_dir = self._engine.layout.builds / f"context-{os.getpid()}-{os.urandom(6).hex()}"
            context = BuildContext.from_tar(fileobj, str(scratch_dir), dockerfile or "Dockerfile")
        elif fileobj is not None:
            text = fileobj if isinstance(fileobj, (str, bytes)) else fileobj.read()
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            context = BuildContext.from_directory(str(path), dockerfile_text=text) if path is not None \
                else BuildContext.without_files(text)
        elif path is not None:
            if dockerfile is not None and not os.path.isabs(dockerfile):
                dockerfile = os.path.join(str(path), dockerfile)
            context = BuildContext.from_directory(str(path), dockerfile)
        else:
            raise UsageError("build needs a context: path=DIR, or fileobj=")
        with context:
            return Builder(self._engine, context, tags=tags, buildargs=buildargs, target=target,
                           nocache=nocache, labels=labels, network_mode=network_mode,
                           progress=progress).build()

    def get_or_pull(self, name: str, on_pull=None) -> Image:
        try:
            return self.get(name)
        except ImageNotFound:
            ref = reference.parse(name)  # a malformed name is a usage error, not a miss
            if on_pull is not None:
                on_pull(str(ref))
            return self.pull(name)

    # -- archives: save / load / import (engine/image/archive.py, tarball.py) --

    def save(self, names, out=None):
        """``docker save``: the images ``names`` (a name or a list) as one tar.

        With ``out`` (a binary file object) the archive is written to it and
        None returned; without, an iterator of byte chunks is returned, like
        docker-py's ``image.save()``. Names are checked before anything is
        written. The format: docker-archive and OCI layout in one tar (see
        engine/image/archive.py).
        """
        from .image import archive

        if out is None:
            return archive.save(self._engine, names)
        archive.save_to(self._engine, names, out)
        return None

    def load(self, data) -> list[Image]:
        """``docker load``: every image of an archive; returns them (tags applied).

        ``data`` is bytes, a binary file object (read once, front to back:
        a pipe is fine) or a path. docker-archive and OCI archives, either
        possibly gzip-compressed, are accepted.
        """
        return self.load_archive(data).images

    def load_archive(self, data):
        """Like :meth:`load`, returning the :class:`~engine.image.archive.LoadResult`
        (images and docker's "Loaded image: ..." lines)."""
        import io

        from .image import archive

        if isinstance(data, (bytes, bytearray, memoryview)):
            return archive.load(self._engine, io.BytesIO(bytes(data)))
        if hasattr(data, "read"):
            return archive.load(self._engine, data)
        with open(data, "rb") as f:
            return archive.load(self._engine, f)

    def import_(self, source, repository: str | None = None, changes=None,
                message: str | None = None) -> Image:
        """``docker import``: a root filesystem tarball as a one-layer image.

        ``source``: a path, an ``http(s)://`` URL, bytes or a binary file
        object (tar, tar.gz, tar.zst, tar.bz2, tar.xz). ``repository`` is
        ``REPO[:TAG]``; ``changes`` a list of Dockerfile instructions (``-c``);
        ``message`` the history comment (``-m``).
        """
        from .image.tarball import import_tarball

        return import_tarball(self._engine, source, repository, changes, message)


class ContainerCollection:
    """``engine.containers``: create, run, find, list."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._store = ContainerStore(engine)

    def create(self, image: str | Image, command=None, *, name: str | None = None,
               environment=None, working_dir: str | None = None, hostname: str | None = None,
               entrypoint=None, auto_remove: bool = False, user: str | None = None,
               labels=None, tty: bool = False, stdin_open: bool = False, stdin_once: bool | None = None,
               stop_signal=None, stop_timeout: int | None = None, on_pull=None,
               network: str | None = None, network_aliases=None, ip: str | None = None,
               mac_address: str | None = None, expose=None, **host_options) -> Container:
        """Make a container (state ``created``) without starting it.

        Accepts docker-py's keyword arguments; the resource and security ones
        (``mem_limit``, ``cpus``, ``pids_limit``, ``ulimits``, ``cap_add``,
        ``cap_drop``, ``privileged``, ``read_only``, ``tmpfs``, ``volumes``,
        ``init``, ``restart_policy``...) go to ``HostConfig`` (runtime/options.py).

        Networking (engine/network/): ``network`` or ``network_mode``
        ("bridge" by default, a user-defined network, "host", "none",
        "container:<name>"), ``network_aliases`` and ``ip`` on a user-defined
        network, ``mac_address``, ``ports`` (``{"80/tcp": 8080}`` or ``-p``
        specs), ``publish_all_ports``, ``expose``, ``links``, ``extra_hosts``,
        ``dns``, ``dns_search``, ``dns_opt``.
        """
        from .network import sandbox
        from .runtime import options

        if network is not None:
            host_options.setdefault("network_mode", network)
        hc = options.host_config(auto_remove=auto_remove, **host_options)  # check flags first
        self._engine.check_host()
        networks = sandbox.check_create(self._engine, hc, aliases=network_aliases or (), ip=ip,
                                        links=hc.get("Links") or ())
        for link in hc.get("Links") or []:
            target = link.partition(":")[0]
            try:
                self.get(target)
            except EngineError:
                raise UsageError(f"could not get container for {target}") from None
        if isinstance(image, Image):
            img, image_name = image, (image.tags[0] if image.tags else image.id)
        else:
            img, image_name = self._engine.images.get_or_pull(image, on_pull), image
        config = merge_config(img, command=command, entrypoint=entrypoint,
                              environment=environment, working_dir=working_dir,
                              hostname=hostname, image_name=image_name)
        if not (config["Entrypoint"] or config["Cmd"]):
            raise UsageError("No command specified")
        if hostname is None:
            # docker: --network host shows the host's name, container:<x> the other's.
            mode = hc.get("NetworkMode") or ""
            if mode == "host":
                config["Hostname"] = os.uname().nodename
            elif mode.startswith("container:"):
                config["Hostname"] = self.get(mode.partition(":")[2]).attrs["Config"].get("Hostname") or ""
        if user is not None:
            config["User"] = user
        config["Labels"] = {**config["Labels"], **options.parse_labels(labels)}
        config["Tty"] = bool(tty)
        config["OpenStdin"] = config["AttachStdin"] = bool(stdin_open)
        # StdinOnce: the container's stdin closes when the first attached client's ends.
        config["StdinOnce"] = bool(stdin_open if stdin_once is None else stdin_once and stdin_open)
        if stop_signal is not None:
            options.signal_number(stop_signal)
            config["StopSignal"] = str(stop_signal)
        if stop_timeout is not None:
            config["StopTimeout"] = int(stop_timeout)
        exposed = dict(config.get("ExposedPorts") or {})
        for port in options.parse_expose(expose or []):
            exposed[port] = {}
        for port in hc.get("PortBindings") or {}:
            exposed[port] = {}
        if exposed:
            config["ExposedPorts"] = exposed
        if mac_address:
            config["MacAddress"] = options.parse_mac(mac_address)
        if img.manifest_digest == scratch.image().manifest_digest:
            scratch.store(self._engine.content)  # so the container's image resolves
        return self._store.create(img, config, name=name, host_config=hc, image_name=image_name,
                                  networks=networks)

    def run(self, image: str | Image, command=None, *, stdout: bool = True, stderr: bool = False,
            remove: bool = False, detach: bool = False, **kwargs):
        """Run a container (docker-py semantics).

        Without ``detach``: wait for it and return its output (stdout, or
        what ``stdout``/``stderr`` select); raise
        :class:`~engine.errors.ContainerError` if it exits non-zero;
        ``remove=True`` deletes it afterwards either way. With ``detach``:
        return the running :class:`Container` at once; it lives on under its
        monitor, whatever happens to this process.
        """
        container = self.create(image, command, auto_remove=remove, **kwargs)
        if detach:
            try:
                container.start()
            except EngineError:
                if remove:
                    container._remove_quietly()
                raise
            return container
        chunks = {1: [], 2: [], "both": []}
        wanted = {1} if stdout else set()
        if stderr:
            wanted.add(2)

        def output(stream, data):
            chunks[stream].append(data)
            if stream in wanted:
                chunks["both"].append(data)

        status = container.run(output=output)
        if status != 0:
            raise ContainerError(container, status, " ".join(container.argv()),
                                 container.attrs["Config"]["Image"], b"".join(chunks[2]))
        return b"".join(chunks["both"])

    def get(self, container_id: str) -> Container:
        return self._store.get(container_id)

    def list(self, all: bool = False) -> list[Container]:
        return self._store.list(all=all)

    def remove(self, container: Container, force: bool = False) -> None:
        self._store.remove(container, force=force)

    def rename(self, container: Container, name: str) -> None:
        self._store.rename(container, name)


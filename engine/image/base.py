"""The base image that exists without the internet: ``busybox``.

There is no Docker Hub here, so Dockyard makes its own ``busybox:latest``
from Debian's statically linked busybox (package ``busybox-static``): one
layer holding ``/bin/busybox`` and a hard link per applet (``/bin/sh``,
``/bin/ls``...), a few directories and ``/etc/passwd`` / ``/etc/group``, and
a config whose ``Cmd`` is ``["sh"]`` -- the same shape as the official image.

The build is reproducible: entries are sorted, owners are numeric, and every
timestamp is the binary's own mtime (dpkg sets it from the package, so it is
the same on every machine with the same package version). The same busybox
binary therefore always gives the same layer, config, manifest and image ID.

(``scratch``, the empty image, lives in ``scratch.py``.)
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone

from ..content import ContentStore
from ..errors import EngineError
from ..layer.writer import LayerWriter
from . import mediatype
from .manifest import architecture, canonical
from .store import Image, ImageStore

BUSYBOX_BINARY = "/bin/busybox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""

GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:12:
www-data:x:33:
operator:x:37:
users:x:100:
nogroup:x:65534:
"""


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_static_elf(path: str) -> bool:
    """True if ``path`` is an ELF executable without a dynamic loader (no PT_INTERP).

    A dynamically linked busybox would need the host's libc inside the
    image; reading the program headers tells without running anything.
    """
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # ELFCLASS64 only
            return False
        order = "little" if head[5] == 1 else "big"
        phoff = int.from_bytes(head[32:40], order)
        phentsize = int.from_bytes(head[54:56], order)
        phnum = int.from_bytes(head[56:58], order)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type = int.from_bytes(table[i * phentsize:i * phentsize + 4], order)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def applets(binary: str) -> list[str]:
    """The applet names the binary provides (``busybox --list``).

    This runs the *host's* busybox on the host, never anything from an image.
    """
    out = subprocess.run([binary, "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip() and "/" not in line})


def busybox_layer(binary: str) -> bytes:
    """The layer tar of ``busybox:latest``, byte-for-byte reproducible."""
    st = os.stat(binary)
    with open(binary, "rb") as f:
        data = f.read()
    names = sorted(set(applets(binary)) | {"busybox"})
    w = LayerWriter(mtime=st.st_mtime)
    # Directories and files in sorted order. The first name in bin/ holds the
    # bytes and every other applet is a hard link to it, as in the official
    # image (a tar's hard link must come after its target).
    tree: list[tuple[str, str, object]] = [
        ("bin", "dir", 0o755), ("dev", "dir", 0o755), ("etc", "dir", 0o755),
        ("etc/group", "file", GROUP.encode()), ("etc/passwd", "file", PASSWD.encode()),
        ("home", "dir", 0o755), ("root", "dir", 0o700), ("tmp", "dir", 0o1777),
        ("usr", "dir", 0o755), ("usr/sbin", "dir", 0o755), ("var", "dir", 0o755),
        ("var/spool", "dir", 0o755), ("var/spool/mail", "dir", 0o755), ("var/www", "dir", 0o755),
    ]
    first = f"bin/{names[0]}"
    tree.append((first, "binary", None))
    tree.extend((f"bin/{n}", "link", first) for n in names[1:])
    tree.sort(key=lambda item: item[0])
    for name, kind, arg in tree:
        if kind == "dir":
            w.add_dir(name, arg)
        elif kind == "file":
            w.add_file(name, arg, 0o644)
        elif kind == "binary":
            w.add_file(name, data, 0o755)
        else:
            w.add_hardlink(name, arg)
    return w.getvalue()


def banner(binary: str) -> str:
    """The version line the binary prints about itself, e.g.
    ``BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary.``

    It describes the binary, not where it lies, so copies give the same image.
    """
    out = subprocess.run([binary], capture_output=True, text=True).stdout
    first = out.splitlines()[0] if out else ""
    return first.removesuffix(".").strip()


def build_busybox(images: ImageStore, binary: str = BUSYBOX_BINARY, tag: str = "busybox:latest") -> Image:
    """Make ``busybox:latest`` from a static busybox binary and tag it.

    Writes the layer, config and manifest blobs (each verified as it is
    committed), then moves the tag in one atomic index update.
    """
    if not os.path.exists(binary):
        raise EngineError(f"busybox:latest is built from {binary}, which is missing: "
                          "install it with 'apt-get install busybox-static'")
    if not is_static_elf(binary):
        raise EngineError(f"{binary} is not a statically linked 64-bit ELF busybox: "
                          "install Debian's busybox-static ('apt-get install busybox-static')")
    content: ContentStore = images.content
    images.layout.create()
    layer = busybox_layer(binary)
    layer_digest = content.put(layer, what="busybox layer")
    created = rfc3339(os.stat(binary).st_mtime)
    source = banner(binary)
    config = {
        "created": created,
        "architecture": architecture(),
        "os": "linux",
        "config": {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [
            {"created": created,
             "created_by": "dockyard: ADD busybox-static as /bin/busybox with one hard link "
                           f"per applet ({source or 'busybox'})"},
            {"created": created, "created_by": 'CMD ["sh"]', "empty_layer": True},
        ],
    }
    config_bytes = canonical(config)
    config_digest = content.put(config_bytes, what="busybox config")
    manifest = {
        "schemaVersion": 2,
        "mediaType": mediatype.OCI_MANIFEST,
        "config": {"mediaType": mediatype.OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": mediatype.OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest = content.put(canonical(manifest), what="busybox manifest")
    images.add(manifest_digest, tag)
    return images.load(manifest_digest)

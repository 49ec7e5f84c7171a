"""Regenerate the archives the ``add`` example ADDs (byte for byte the same).

    python tests/dockerfiles/make_archives.py

They are committed; this script says what is in them: entries with owners
other than root, a 0600 file, a directory, a symlink, in a plain tar and a
gzip-compressed tar (ADD extracts both), and a file named like an archive
that is not one (ADD copies it as it is: it looks at content, not names);
and the same tar inside a directory, which ADD copies without extracting.
"""

import gzip
import io
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "add"


def tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, mode, owner, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1_600_000_000, mode
            info.uid, info.gid = owner
            info.uname = info.gname = ""
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main() -> None:
    files = tar([
        ("pkg", "dir", 0o750, (1000, 1000), None),
        ("pkg/owned.txt", "file", 0o644, (1000, 1000), b"owned by 1000\n"),
        ("pkg/secret.txt", "file", 0o600, (0, 0), b"only root reads this\n"),
        ("pkg/bin", "dir", 0o755, (0, 0), None),
        ("pkg/bin/tool", "file", 0o755, (2, 2), b"#!/bin/sh\necho tool\n"),
        ("pkg/current", "symlink", 0o777, (0, 0), "bin/tool"),
    ])
    (HERE / "files.tar").write_bytes(files)
    (HERE / "dir" / "inner.tar").write_bytes(files)  # ADD of a directory extracts nothing in it
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(tar([
            ("./", "dir", 0o755, (0, 0), None),
            ("./gz.txt", "file", 0o640, (33, 33), b"from a gzip tar\n"),
            ("./nested/", "dir", 0o711, (0, 0), None),
            ("./nested/deeper.txt", "file", 0o644, (0, 0), b"deeper\n"),
        ]))
    (HERE / "files.tar.gz").write_bytes(out.getvalue())
    (HERE / "not-really.tar.gz").write_bytes(b"plain text with an archive's name\n")


if __name__ == "__main__":
    main()

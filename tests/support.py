"""Helpers shared by the tests (import them as ``from support import ...``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = "/bin/busybox"
DOCKYARD = [sys.executable, "-m", "engine"]


def seed_root(template: Path, root: Path) -> Path:
    """Copy the template's images (blobs and tag index) into ``root``; layers are
    extracted again on first use, which also exercises the layer code."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("oci-layout", "index.json"):
        shutil.copy2(template / name, root / name)
    shutil.copytree(template / "blobs", root / "blobs", symlinks=True)
    return root


class CLI:
    """Run ``dockyard`` (as ``python -m engine``) against one root."""

    def __init__(self, root: Path):
        self.root = root

    def env(self, **extra) -> dict:
        env = dict(os.environ)
        env["DOCKYARD_ROOT"] = str(self.root)
        env.update(extra)
        return env

    def __call__(self, *args, input=None, timeout=60, env=None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*DOCKYARD, *args], capture_output=True, text=True, input=input,
                              timeout=timeout, env=env or self.env(), cwd=REPO, **kw)

    def popen(self, *args, **kw) -> subprocess.Popen:
        """Start ``dockyard`` in the background (for containers a test must kill)."""
        return subprocess.Popen([*DOCKYARD, *args], env=self.env(), cwd=REPO, **kw)

    def wait_for(self, name: str, status: str = "running", timeout: float = 10.0) -> dict:
        """Poll ``inspect`` until the container has ``status``; return its record."""
        import json
        import time
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self("inspect", "--type", "container", name)
            if r.returncode == 0:
                record = json.loads(r.stdout)[0]
                if record["State"]["Status"] == status:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"container {name} never became {status}")


def host_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def assert_no_mounts_under(path: Path) -> None:
    leaked = [m for m in host_mounts() if m.startswith(str(path))]
    assert not leaked, f"mounts left behind: {leaked}"


def processes_mentioning(text: str) -> list[int]:
    """Live processes (not zombies) whose command line contains ``text``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def cgroup_leftovers() -> list[str]:
    """Container cgroups that exist now (see engine.runtime.cgroups.leftovers)."""
    from engine.runtime import cgroups

    try:
        return cgroups.leftovers()
    except Exception:  # no cgroup file system: nothing can leak
        return []


def created_containers(root: Path) -> set[str]:
    """Ids of the containers ever created in ``root`` (from its event log)."""
    try:
        lines = (Path(root) / "events.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return set()
    ids = set()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        if event.get("Action") == "create":
            ids.add(event["id"])
    return ids


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its type, mode and content hash: to prove nothing changed."""
    out = {}
    if not path.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = f"link:{os.readlink(p)}"
            elif p.is_file():
                out[rel] = f"{st.st_mode:o}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
            else:
                out[rel] = f"{st.st_mode:o}"
    return out


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc/<pid>/task/*/children)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except FileNotFoundError:
                continue
            for child in children:
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


# -- archives: save / load / import / export -------------------------------------


def tar_bytes(entries) -> bytes:
    """A reproducible tar from ``(name, content)`` pairs: bytes make a file,
    None a directory, ``("symlink", target)`` or ``("hardlink", target)`` a link.
    Every mtime is 0 and owners are root, so the same entries give the same bytes."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uname = info.gname = ""
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, tuple):
                info.type = tarfile.SYMTYPE if content[0] == "symlink" else tarfile.LNKTYPE
                info.linkname, info.mode = content[1], 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755 if name.startswith("bin/") else 0o644
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def tar_members(data: bytes) -> list:
    """``[(TarInfo, content or None)]`` of a tar held in memory, in archive order."""
    import io
    import tarfile

    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            f = tar.extractfile(info) if info.isreg() else None
            out.append((info, f.read() if f else None))
    return out


def rootfs_tarball(files: dict | None = None) -> bytes:
    """A tiny root filesystem tarball that can run: the host's static busybox as
    /bin/busybox, /bin/sh a symlink to it, /etc and /tmp, plus ``files``."""
    entries = [("bin", None), ("bin/busybox", Path(BUSYBOX).read_bytes()),
               ("bin/sh", ("symlink", "busybox")), ("etc", None), ("tmp", None)]
    for name, content in sorted((files or {}).items()):
        parent = name.rsplit("/", 1)[0] if "/" in name else None
        if parent and all(n != parent for n, _ in entries):
            entries.append((parent, None))
        entries.append((name, content))
    return tar_bytes(entries)


class Terminal:
    """``dockyard ARGS`` (with environment ``env``) running on a pseudo-terminal
    whose master we hold: type into it, read what it shows, wait for its exit."""

    def __init__(self, env: dict, *args, rows: int = 24, cols: int = 80):
        import fcntl
        import pty
        import struct
        import termios

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: dockyard, with the pty as its terminal
            os.chdir(REPO)
            os.execve(sys.executable, [*DOCKYARD, *args], env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.output = b""

    def read_until(self, wanted: bytes, timeout: float = 10.0) -> bytes:
        import select
        import time

        deadline = time.time() + timeout
        while wanted not in self.output:
            assert time.time() < deadline, f"{wanted!r} never came; got {self.output!r}"
            if select.select([self.fd], [], [], 0.05)[0]:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                assert data, f"{wanted!r} never came; the end after {self.output!r}"
                self.output += data
        return self.output

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self, timeout: float = 10.0) -> int:
        import select
        import signal
        import time

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if select.select([self.fd], [], [], 0.05)[0]:
                    self.output += os.read(self.fd, 4096)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"dockyard did not exit; output {self.output!r}")

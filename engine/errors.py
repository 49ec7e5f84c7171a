"""One exception tree for the whole engine.

Every failure the engine can explain is an :class:`EngineError`. The CLI turns
it into one line on stderr and its ``exit_code``; the Python API lets it
propagate. Kernel failures that are not explained stay :class:`OSError`
(with a note saying what we were doing) so nothing is hidden.

Exit codes follow Docker's conventions (see ``docker run --help`` and the
"Exit Status" section of the docker run reference):

=====  ===============================================================
125    the engine itself failed, or the command line was wrong
126    the container command was found but could not be executed
127    the container command was not found
128+n  the container process was killed by signal n (137 = SIGKILL)
other  the container process's own exit status
=====  ===============================================================
"""

from __future__ import annotations

import errno as _errno
import os

# Exit statuses that are the engine's, never the container's.
EXIT_ENGINE = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class EngineError(Exception):
    """Root of every error Dockyard raises on purpose."""

    exit_code = EXIT_ENGINE


class UsageError(EngineError):
    """The command line or the API call itself is wrong."""


class InvalidReference(EngineError):
    """An image reference does not follow the distribution reference grammar."""


class NotFound(EngineError):
    """Something named by the user does not exist."""


class ImageNotFound(NotFound):
    pass


class ContainerNotFound(NotFound):
    pass


class Conflict(EngineError):
    """The request clashes with existing state (a name in use, a running container)."""


class StoreError(EngineError):
    """The content store refused or could not keep some content."""


class DigestMismatch(StoreError):
    """Content did not hash to the digest (or size) it was declared with."""

    def __init__(self, what: str, expected: str, actual: str):
        super().__init__(f"{what}: digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class LayerError(EngineError):
    """A layer archive is malformed or tries to do something unsafe."""


class UnsafeLayerEntry(LayerError):
    """A tar entry would land (or point) outside the directory it is applied to."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"layer entry {name!r} refused: {reason}")
        self.name = name
        self.reason = reason


class HostNotSupported(EngineError):
    """This host lacks something Dockyard needs (root, overlayfs, a namespace...)."""


class SpawnError(EngineError):
    """The container's setup failed in the child before the command ran.

    ``stage`` is the human description of the plan step that failed and
    ``errno`` the kernel's error number for it, as reported by the child
    over its error pipe.
    """

    def __init__(self, stage: str, errno: int, detail: str = ""):
        reason = os.strerror(errno) if errno else "failed"
        msg = f"container setup failed at step '{stage}': {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)
        self.stage = stage
        self.errno = errno


class CommandNotFound(SpawnError):
    """execve found no such file: the container command does not exist (127)."""

    exit_code = EXIT_NOT_FOUND

    def __init__(self, command: str, errno: int = _errno.ENOENT, where: str = ""):
        EngineError.__init__(
            self,
            f'exec: "{command}": '
            + (f"executable file not found in {where}" if where else "no such file or directory"),
        )
        self.stage = "exec"
        self.errno = errno
        self.command = command


class CommandNotExecutable(SpawnError):
    """execve found the file but could not run it (126)."""

    exit_code = EXIT_NOT_EXECUTABLE

    def __init__(self, command: str, errno: int):
        EngineError.__init__(self, f'exec: "{command}": {os.strerror(errno).lower()}')
        self.stage = "exec"
        self.errno = errno
        self.command = command


class ContainerError(EngineError):
    """A container run through the API exited non-zero (docker-py's ContainerError).

    The CLI never raises this: there the container's status simply becomes
    dockyard's own exit status.
    """

    def __init__(self, container, exit_status: int, command, image: str, stderr: bytes | None):
        text = (stderr or b"").decode(errors="replace").strip()
        msg = f"Command '{command}' in image '{image}' returned non-zero exit status {exit_status}"
        if text:
            msg += f": {text}"
        super().__init__(msg)
        self.container = container
        self.exit_status = exit_status
        self.command = command
        self.image = image
        self.stderr = stderr

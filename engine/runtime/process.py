"""The engine's handle on one spawned container process.

Lifecycle::

    start(plan, stdio)  -> spawned: the child exists in its namespaces and is
                           blocked at the plan's "wait for the engine" step
    release()           -> the engine has recorded the PID; the child goes on
    wait_started()      -> returns once execve succeeded, or raises the
                           SpawnError the child reported as (step, errno)
    wait()              -> the exit status, in the shell's convention
                           (128+n when killed by signal n)

:func:`start` uses the compiled spawner when it is built and its Python twin
otherwise (see ``engine/_native/__init__.py``).
"""

from __future__ import annotations

import errno as errno_codes
import os
import struct

from .. import _native
from ..errors import CommandNotExecutable, CommandNotFound, SpawnError
from .plan import Plan

_compiled = _native.load("spawn")
if _compiled is not None:
    spawn = _compiled.spawn
else:  # the readable twin (imported only when needed: it loads ctypes)
    from .spawn import spawn


def implementation() -> str:
    return "compiled" if _compiled is not None and spawn is _compiled.spawn else "python twin"


def exit_status(wait_status: int) -> int:
    """A waitpid(2) status as the shell reports it: the exit code, or 128+signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


class ContainerProcess:
    """See the module docstring."""

    def __init__(self, plan: Plan, pid: int, sync_fd: int, error_fd: int):
        self.plan = plan
        self.pid = pid
        self._sync_fd = sync_fd
        self._error_fd = error_fd
        self.status: int | None = None

    @classmethod
    def start(cls, plan: Plan, stdio: tuple[int, int, int] = (-1, -1, -1)) -> "ContainerProcess":
        assert plan.exec is not None, "a plan needs an exec step"
        argv = [os.fsencode(a) for a in plan.exec.argv]
        env = [os.fsencode(e) for e in plan.exec.env]
        pid, sync_fd, error_fd = spawn(plan.clone_flags, plan.ops(), argv, env,
                                       os.fsencode(plan.exec.search_path), tuple(stdio))
        return cls(plan, pid, sync_fd, error_fd)

    def release(self) -> None:
        """Let the child continue past its wait-for-engine step."""
        if self._sync_fd >= 0:
            try:
                os.write(self._sync_fd, b"g")
            except BrokenPipeError:
                pass  # the child died early; wait_started() reports why
            os.close(self._sync_fd)
            self._sync_fd = -1

    def wait_started(self) -> None:
        """Block until the command runs; raise what the child reported otherwise."""
        if self.plan.waits_for_engine:
            self.release()
        try:
            message = self._read_message()
        except SpawnError:
            self.wait()
            raise
        finally:
            os.close(self._error_fd)
            self._error_fd = -1
        if message is not None:
            self.wait()
            raise self._error(*message)

    def _read_message(self) -> tuple[int, int] | None:
        """One ``(stage, value)`` report (two native int32) from the error pipe,
        or None at its end (the command runs: execve closed the pipe)."""
        data = b""
        while len(data) < 8:
            try:
                chunk = os.read(self._error_fd, 8 - len(data))
            except InterruptedError:
                continue
            if not chunk:
                if data:
                    raise SpawnError("report", errno_codes.EIO, "short error report from the child")
                return None
            data += chunk
        return struct.unpack("=ii", data)

    def _error(self, stage: int, err: int) -> SpawnError:
        if stage == len(self.plan.steps):
            command = self.plan.exec.argv[0]
            if err in (errno_codes.ENOENT, errno_codes.ENOTDIR):
                return CommandNotFound(command, err, "" if "/" in command else "$PATH")
            return CommandNotExecutable(command, err)
        if stage < 0:
            return SpawnError("set up stdio and namespaces", err)
        return SpawnError(self.plan.describe(stage), err)

    def wait(self) -> int:
        """Reap the child; return its status as the shell reports it."""
        if self.status is None:
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    break
                except InterruptedError:
                    continue
            self.status = exit_status(status)
        return self.status

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = exit_status(status)
        return self.status

    def kill(self, sig: int) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for fd in (self._sync_fd, self._error_fd):
            if fd >= 0:
                os.close(fd)
        self._sync_fd = self._error_fd = -1

"""Who is using an environment: a run and a rebuild of the same environment exclude each other.

A run holds a shared lock on each environment it uses (``<root>/.locks/<name>.use``, an
``flock``), taken before it trusts the environment's identity and kept until the process ends
(its workers are its children and end with it). Building an environment over an existing one
(``pytest-rknn envs --rebuild``, or the repair of a stale or broken one) takes the same lock
exclusively, without waiting: while any run uses the environment, the build is refused in one
line. A run that starts while a build holds the lock waits for the build, then verifies the
environment again, so every cell converted in it carries the identity of what it ran in.
``flock`` locks end with their process: a killed run never leaves an environment locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

WAIT_FOR_BUILD = 1800.0


class EnvInUse(RuntimeError):
    """An environment a build would replace is in use by a running suite (one line, a fix)."""


def use_lock_path(lock_folder: Path, name: str) -> Path:
    return Path(lock_folder) / f"{name}.use"


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


class UseLock:
    """This process's shared hold on one environment (taken once, kept until :meth:`release`
    or the process ends)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float = WAIT_FOR_BUILD) -> bool:
        """Take the shared lock, waiting up to ``timeout`` s for a build that holds it; False
        when the build did not end in time."""
        if self._fd is not None:
            return True
        fd = _open(self.path)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return False
                time.sleep(0.2)
                continue
            self._fd = fd
            return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def exclusive(path: Path, label: str, where: Path) -> Iterator[None]:
    """Hold ``path`` exclusively for a build of the environment ``label`` at ``where``;
    :class:`EnvInUse` at once when a run holds it."""
    fd = _open(Path(path))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EnvInUse(
                f"environment {label} at {where} is in use by a running suite, so it is not "
                "rebuilt under it: let the run finish (or stop it) and run this again, or "
                "build into another folder with --rknn-envs DIR"
            ) from None
        yield
    finally:
        os.close(fd)

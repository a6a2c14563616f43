"""Reading a user's file within a bound: every file the plugin and its CLI read from a user's
disk (matrices, journals, histories, baselines, shard costs, models, ``.npz`` inputs; user
calibration data should too) goes through here.

A file is read only if it is a regular file (not a pipe, which would block the read forever;
not a device such as ``/dev/zero`` behind a link, which never ends), and only if its size is
within a bound checked before the first byte is read. A ``.npz`` is also checked before it is
unpacked: the sizes its zip directory declares for its arrays must fit the memory bound (a
14 MB archive of zeros can hold gigabytes). Anything else is an :class:`UnreadableFile` of one
line that names the file, the limit and the fix.

The bounds (see ``docs/reliability.md``): :data:`DOCUMENT_BYTES` for JSON documents and
journals, :data:`MODEL_BYTES` for an ONNX file (protobuf's own limit); each can be changed with
an environment variable (``PYTEST_RKNN_MAX_DOCUMENT``, ``PYTEST_RKNN_MAX_MODEL``, sizes such as
``512M`` or ``4G``). A ``.npz`` is bounded by ``--rknn-max-memory``.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class UnreadableFile(ValueError):
    """A file that is not read: not a regular file, or over its bound; one line with the fix."""


def _size(text: str, default: int) -> int:
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    if not text:
        return default
    unit = text[-1] if text[-1] in _UNITS else ""
    try:
        value = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    except ValueError:
        return default
    return value if value > 0 else default


DOCUMENT_BYTES = _size(os.environ.get("PYTEST_RKNN_MAX_DOCUMENT", ""), 1 << 30)
"""The largest matrix, journal or other JSON document read (1 GiB: a 20,000-cell matrix is
about 60 MB)."""
MODEL_BYTES = _size(os.environ.get("PYTEST_RKNN_MAX_MODEL", ""), 2 << 30)
"""The largest ONNX file read (2 GiB, protobuf's limit; larger models keep external data)."""


def shown(size: int) -> str:
    """A byte count for a message (``1.0 GiB``, ``12 MiB``, ``300 bytes``)."""
    if size >= 1 << 30:
        return f"{size / 2**30:.1f} GiB"
    if size >= 1 << 20:
        return f"{size / 2**20:.0f} MiB"
    return f"{size} bytes"


_KINDS = {
    stat.S_ISFIFO: "a pipe",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
    stat.S_ISDIR: "a folder",
}


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


def read_bounded(path: str | os.PathLike[str], what: str, limit: int, setting: str = "") -> bytes:
    """The bytes of ``path`` (``what`` names it in messages: ``matrix file``), if it is a
    regular file of at most ``limit`` bytes; ``setting`` names how to raise the bound.

    ``FileNotFoundError`` and other ``OSError`` pass through (callers say what is missing);
    a pipe, a device or a file over the bound is an :class:`UnreadableFile`.
    """
    path = Path(path)
    # O_NONBLOCK: opening a pipe with no writer returns at once instead of waiting for one.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(
                f"{what} {path} is {_kind(info.st_mode)}, not a regular file: give a file"
                + (f" (it resolves to {path.resolve()})" if path.is_symlink() else "")
            )
        raise_bound = f" (raise it with {setting})" if setting else ""
        if info.st_size > limit:
            raise UnreadableFile(
                f"{what} {path} is {shown(info.st_size)}, over the limit of {shown(limit)} "
                f"for it{raise_bound}: check it is the file you meant"
            )
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnreadableFile(
            f"{what} {path} grew past the limit of {shown(limit)} while it was read: "
            "check nothing is writing it"
        )
    return data


def document_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    """A JSON document or journal within :data:`DOCUMENT_BYTES`."""
    return read_bounded(path, what, DOCUMENT_BYTES, "PYTEST_RKNN_MAX_DOCUMENT=2G")


def model_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    """An ONNX file within :data:`MODEL_BYTES`."""
    return read_bounded(path, what, MODEL_BYTES, "PYTEST_RKNN_MAX_MODEL=4G")


def npz_bytes(path: str | os.PathLike[str], what: str, memory: int) -> bytes:
    """A ``.npz`` whose file and whose arrays, unpacked, fit ``memory`` bytes (the arrays'
    sizes are those its zip directory declares; numpy reads no more than declared)."""
    flag = "--rknn-max-memory"
    data = read_bounded(path, what, memory, flag)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return data  # numpy says what is wrong with it
    if unpacked > memory:
        raise UnreadableFile(
            f"{what} {path} unpacks to {shown(unpacked)} ({shown(len(data))} packed), over "
            f"{flag} {shown(memory)}: give smaller inputs, or raise {flag}"
        )
    return data

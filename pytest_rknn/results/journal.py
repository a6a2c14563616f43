"""Crash-safe files: atomic replacement, append-only JSON-lines journals, and the run lock.

``atomic_write_text`` replaces a file so that readers (and a later run) see the old content or
the new, never half of it. ``Journal`` appends one JSON record per line, each with a single
``write`` on an ``O_APPEND`` descriptor followed by ``fsync`` (not for a cell taken from the
cache, which is on disk already: a warm run records hundreds); a line that could not be written
(a full disk) stays pending and is written with the next one, on a line of its own.
``read_journal`` reads such a file back, skipping lines that cannot be decoded (the truncated
last line of a killed writer). ``RunLock`` keeps two runs from writing one matrix path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pytest_rknn.results.cell import now
from pytest_rknn.results.safe_read import document_bytes

JOURNAL_NAME = "pytest-rknn/matrix-journal"
JOURNAL_VERSION = 1
JOURNAL_SUFFIX = ".journal"


def journal_path(matrix: Path) -> Path:
    """Where the journal of a run writing ``matrix`` lives: beside it."""
    return matrix.with_name(matrix.name + JOURNAL_SUFFIX)


def free_space(path: Path) -> str:
    """The free space of the disk holding ``path``, for error messages (``"12 MB free"``)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "free space unknown"
    if free >= 1 << 30:
        return f"{free / 2**30:.1f} GB free"
    return f"{free / 2**20:.0f} MB free"


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old file or the new, never half.

    The text goes to a temporary file in the same folder, is flushed and fsynced, and then
    renamed over ``path``; on any failure the temporary file is removed and ``path`` is left
    as it was. A link is followed (the file it names is replaced, the link kept), and a path
    that is no regular file (``/dev/null``, a pipe) is written to as it is: renaming over it
    would replace the device or pipe with a file.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class Journal:
    """An append-only record of a run: a header line with the run's metadata, then one JSON
    line per finished cell, each flushed and (unless the cell came from the cache) fsynced.

    Each line is written with a single ``write`` on a file opened with ``O_APPEND``, so the
    lines of several processes appending to one journal do not interleave, and a process
    killed mid-write leaves at most one truncated last line (``read_journal`` skips it). A line
    that fails to be written (``OSError``, e.g. a full disk) is kept and written before the next
    one; :attr:`pending` says how many are waiting.
    """

    def __init__(self, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self._pending: list[bytes] = []
        self._broken_tail = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if meta is not None:
            self._queue({"schema": JOURNAL_NAME, "version": JOURNAL_VERSION, "meta": dict(meta)})
            self.flush()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _queue(self, record: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed: open a new Journal to append")
        data = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
        self._pending.append(data.encode("utf-8"))

    def flush(self, sync: bool = True) -> None:
        """Write every pending line (``sync``: and force it to disk); ``OSError`` leaves the
        unwritten ones pending."""
        if self._fd is None:
            return
        while self._pending:
            data = self._pending[0]
            if self._broken_tail:
                data = b"\n" + data
            written = 0
            try:
                while written < len(data):
                    written += os.write(self._fd, data[written:])
                if sync:
                    os.fsync(self._fd)
            except OSError:
                self._broken_tail = self._broken_tail or written > 0
                raise
            self._broken_tail = False
            self._pending.pop(0)

    def append(self, cell: Any) -> None:
        """Record a finished cell (a ``CellRecord``; ``finished`` is stamped if unset)."""
        if getattr(cell, "finished", "") is None:
            cell.finished = now()
        self._queue({"cell": cell.to_dict()})
        self.flush(sync=not getattr(cell, "cached", False))

    def close(self) -> None:
        """Close the file; further appends raise."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: Path) -> tuple[dict[str, Any], list[tuple[int, Any]], list[str]]:
    """(header meta, (line number, cell record) pairs, descriptions of skipped lines).

    Raises ``FileNotFoundError`` when there is no journal, ``UnreadableFile`` when it is no
    regular file or over its bound.
    """
    header: dict[str, Any] = {}
    records: list[tuple[int, Any]] = []
    skipped: list[str] = []
    for number, line in enumerate(document_bytes(path, "journal").split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            skipped.append(f"line {number}: {str(exc)[:120]}")
            continue
        if isinstance(record, dict) and "cell" in record:
            records.append((number, record["cell"]))
        elif isinstance(record, dict) and record.get("schema") == JOURNAL_NAME:
            meta = record.get("meta")
            header = dict(meta) if isinstance(meta, dict) else {}
        else:
            skipped.append(f"line {number}: neither a cell nor a journal header")
    return header, records, skipped


def read_journal_header(path: Path) -> dict[str, Any]:
    """The run metadata on a journal's first line ({} when it has none)."""
    with open(path, "rb") as handle:
        first = handle.readline(DOCUMENT_LINE)
    try:
        record = json.loads(first)
    except (ValueError, RecursionError):
        return {}
    if isinstance(record, dict) and record.get("schema") == JOURNAL_NAME:
        meta = record.get("meta")
        return dict(meta) if isinstance(meta, dict) else {}
    return {}


DOCUMENT_LINE = 1 << 20


class MatrixInUse(RuntimeError):
    """Another run holds the lock on a matrix path; the message says which and what to do."""


class RunLock:
    """An exclusive lock on a matrix path for one run (``.<matrix>.lock``, released on exit).
    Give it the real path (links resolved): the lock belongs to the file, not to a name of it.

    The lock is an ``fcntl`` lock (``filelock``), so a killed run never leaves it held; the
    file beside it names the process that holds it, for the message the second run shows.
    """

    def __init__(self, matrix: Path, named: Path | None = None) -> None:
        self.matrix = Path(matrix)
        self.named = Path(named) if named is not None else self.matrix
        self.path = self.matrix.with_name(f".{self.matrix.name}.lock")
        self.owner = self.matrix.with_name(f".{self.matrix.name}.lock.owner")
        self._lock = FileLock(self.path)

    def acquire(self, description: str) -> None:
        """Take the lock now or raise :class:`MatrixInUse`."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            try:
                holder = self.owner.read_text(encoding="utf-8").strip()
            except OSError:
                holder = "another process"
            same = os.path.abspath(self.named) == os.path.abspath(self.matrix)
            also = "" if same else f" (the file {self.matrix})"
            raise MatrixInUse(
                f"--rknn-matrix {self.named}{also} is being written by another run ({holder}): "
                "wait for it to finish, or give this run its own --rknn-matrix PATH"
            ) from None
        with contextlib.suppress(OSError):
            self.owner.write_text(description + "\n", encoding="utf-8")

    def release(self) -> None:
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                self.owner.unlink()
            self._lock.release()

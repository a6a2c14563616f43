"""Crash-safe files: atomic replacement and append-only JSON-lines journals.

``atomic_write_text`` replaces a file so that readers (and a later run) see the old content or
the new, never half of it. ``Journal`` appends one JSON record per line, each with a single
``write`` on an ``O_APPEND`` descriptor followed by ``fsync``; ``read_journal`` reads such a file
back, skipping lines that cannot be decoded (the truncated last line of a killed writer).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_rknn.matrix_cell import now

JOURNAL_NAME = "pytest-rknn/matrix-journal"
JOURNAL_VERSION = 1


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
    as it was.
    """
    path = Path(path)
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
    """An append-only record of finished cells: one JSON line per cell, flushed and fsynced.

    Each line is written with a single ``write`` on a file opened with ``O_APPEND``, so the
    lines of several processes appending to one journal do not interleave, and a process
    killed mid-write leaves at most one truncated last line (``Matrix.from_journal`` skips it).
    """

    def __init__(self, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if meta is not None:
            self._write({"schema": JOURNAL_NAME, "version": JOURNAL_VERSION, "meta": dict(meta)})

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed: open a new Journal to append")
        data = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def append(self, cell: Any) -> None:
        """Record a finished cell (a ``matrix_cell.Cell``; ``finished`` is stamped if unset)."""
        if getattr(cell, "finished", "") is None:
            cell.finished = now()
        self._write({"cell": cell.to_dict()})

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

    Raises ``FileNotFoundError`` when there is no journal.
    """
    header: dict[str, Any] = {}
    records: list[tuple[int, Any]] = []
    skipped: list[str] = []
    for number, line in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            skipped.append(f"line {number}: {str(exc)[:120]}")
            continue
        if isinstance(record, dict) and "cell" in record:
            records.append((number, record["cell"]))
        elif isinstance(record, dict) and record.get("schema") == JOURNAL_NAME:
            header = dict(record.get("meta") or {})
        else:
            skipped.append(f"line {number}: neither a cell nor a journal header")
    return header, records, skipped

"""The compatibility matrix document: load, write, rebuild from a journal, merge, diff.

This module owns the JSON document a run produces (``{"schema": "pytest-rknn/matrix",
"version": 1, "meta": {...}, "cells": [...]}``, described by ``matrix.schema.json``): the
``Matrix`` holding one ``Cell`` (``matrix_cell``) per key (variant_id, platform, toolkit, quant),
atomic writing, loading with schema validation and one-line errors, rebuilding a killed run's
matrix from its ``Journal`` (``durable`` owns the crash-safe file mechanics), ``merge`` of
per-version matrices and ``diff`` of two runs. The terminal and Markdown views live in
``matrix_views``; the names a caller needs are re-exported here.

``meta`` is a plain dict. Known keys (all optional, see the schema): ``pytest_rknn`` (version),
``started``/``finished`` (ISO 8601), ``host``, ``command``, ``seed``, ``profile``,
``platforms``, ``quant``, ``toolkits`` (version labels), ``toolkit_envs`` (their environment
descriptions), ``conflicts`` and ``merged_from`` (set by ``merge``), ``journal`` (set by
``from_journal``); anything else is kept as is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_rknn.durable import JOURNAL_NAME, Journal, atomic_write_text, read_journal
from pytest_rknn.matrix_cell import (
    STATUSES,
    Cell,
    Change,
    Key,
    MatrixError,
    instant,
    now,
)
from pytest_rknn.matrix_views import summary_text, to_markdown

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "STATUSES",
    "Cell",
    "Change",
    "JOURNAL_NAME",
    "Journal",
    "Matrix",
    "MatrixError",
    "atomic_write_text",
    "diff",
    "merge",
    "summary_text",
    "to_markdown",
]

SCHEMA_NAME = "pytest-rknn/matrix"
SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The shipped JSON Schema of the document."""
    text = resources.files("pytest_rknn").joinpath("matrix.schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=3)
def _validator(part: str = "document") -> Any:
    """A validator of the whole ``document``, of one ``cell``, or of the document ``shell``."""
    try:
        import jsonschema
    except ImportError:
        raise MatrixError(
            "validating a matrix needs the jsonschema package: pip install 'jsonschema>=4'"
        ) from None
    full = schema()
    if part == "cell":
        full = {"$schema": full["$schema"], "$defs": full["$defs"], "$ref": "#/$defs/cell"}
    elif part == "shell":
        cells = {"type": "array", "items": {"type": "object"}}
        full = {**full, "properties": {**full["properties"], "cells": cells}}
    return jsonschema.Draft202012Validator(full)


def _first_error(data: Any, part: str) -> Any:
    import jsonschema

    return jsonschema.exceptions.best_match(_validator(part).iter_errors(data))


def _where(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def validate(data: Any, source: str, cells: bool = True) -> None:
    """Raise ``MatrixError`` unless ``data`` is a version-1 matrix document.

    ``cells=False`` checks everything but the cells' contents (they are checked when added).
    """
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_NAME:
        raise MatrixError(
            f'{source} is not a pytest-rknn matrix (no "schema": "{SCHEMA_NAME}" field): '
            "give a matrix written by pytest-rknn (--rknn-matrix)"
        )
    version = data.get("version")
    if version != SCHEMA_VERSION:
        raise MatrixError(
            f"{source} is a matrix of schema version {version!r}, this pytest-rknn reads "
            f"version {SCHEMA_VERSION}: use the pytest-rknn release that wrote it, or "
            "regenerate the matrix with this one"
        )
    error = _first_error(data, "document" if cells else "shell")
    if error is not None:
        raise MatrixError(
            f"{source} is invalid at {_where(error.absolute_path)}: {error.message}: "
            "fix that field or regenerate the matrix"
        )


class Matrix:
    """The cells of one run (or of several merged runs) and the run's metadata."""

    def __init__(self, meta: Mapping[str, Any] | None = None, cells: Iterable[Cell] = ()) -> None:
        self.meta: dict[str, Any] = dict(meta or {})
        self._cells: dict[Key, Cell] = {}
        for cell in cells:
            self.add(cell)

    def add(self, cell: Cell, validated: bool = False) -> None:
        """Add a finished cell, replacing any cell with the same key; stamps ``finished``.

        The cell is checked against the schema here (``MatrixError`` if it does not fit), so
        that writing the matrix needs to check only its metadata.
        """
        if cell.finished is None:
            cell.finished = now()
        if not validated:
            error = _first_error(cell.to_dict(), "cell")
            if error is not None:
                raise MatrixError(
                    f"cell {'/'.join(cell.key)} is invalid at {_where(error.absolute_path)}: "
                    f"{error.message}: fix the record before adding it"
                )
        self._cells[cell.key] = cell

    @property
    def cells(self) -> list[Cell]:
        """The cells, sorted by key (so equal runs give equal documents)."""
        return [self._cells[k] for k in sorted(self._cells)]

    def get(self, key: Key) -> Cell | None:
        """The cell with this key, or None."""
        return self._cells.get(key)

    def __len__(self) -> int:
        return len(self._cells)

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.cells)

    def __contains__(self, key: object) -> bool:
        return key in self._cells

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {
            "schema": SCHEMA_NAME,
            "version": SCHEMA_VERSION,
            "meta": self.meta,
            "cells": [cell.to_dict() for cell in self.cells],
        }

    def dumps(self) -> str:
        """The document as JSON text, validated against the schema."""
        data = self.to_dict()
        text = json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
        validate(json.loads(text), "the matrix being written", cells=False)
        return text

    @classmethod
    def from_dict(cls, data: Any, source: str = "matrix document") -> Matrix:
        """A matrix from a parsed document; invalid documents raise ``MatrixError``."""
        validate(data, source)
        try:
            cells = [Cell.from_dict(c) for c in data["cells"]]
        except ValueError as exc:
            raise MatrixError(f"{source}: {exc}") from None
        matrix = cls(meta=data["meta"])
        for cell in cells:
            matrix.add(cell, validated=True)
        return matrix

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the document atomically (the previous file survives any failure)."""
        atomic_write_text(Path(path), self.dumps())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Matrix:
        """Read and validate a matrix file; any problem raises a one-line ``MatrixError``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MatrixError(
                f"matrix file {path} does not exist: check the path, or produce it with a run "
                "of pytest-rknn (--rknn-matrix)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MatrixError(f"matrix file {path} cannot be read ({exc}): check it") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = "; the file looks truncated" if not text.rstrip().endswith("}") else ""
            journal = path.with_name(path.name + ".journal")
            fix = (
                f"rebuild it from the journal {journal} (Matrix.from_journal)"
                if journal.exists()
                else "regenerate it with a new run"
            )
            raise MatrixError(
                f"matrix file {path} is not valid JSON ({exc.msg} at line {exc.lineno} "
                f"column {exc.colno}{hint}): {fix}"
            ) from None
        return cls.from_dict(data, source=f"matrix file {path}")

    @classmethod
    def from_journal(
        cls, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None
    ) -> Matrix:
        """Rebuild the matrix of a run from its journal, keeping every complete cell line.

        Lines that cannot be read (a truncated last line of a killed run, or any other) are
        skipped and counted in ``meta["journal"]``. ``meta`` defaults to the journal's header.
        """
        path = Path(path)
        if not path.is_file():
            raise MatrixError(
                f"journal {path} does not exist: it is written beside the matrix while a run "
                "is in progress and removed when the run completes"
            ) from None
        header, records, skipped = read_journal(path)
        cells: list[Cell] = []
        for number, record in records:
            try:
                cell = Cell.from_dict(record)
                error = _first_error(cell.to_dict(), "cell")
                if error is not None:
                    raise ValueError(f"{_where(error.absolute_path)}: {error.message}")
            except (ValueError, TypeError) as exc:
                skipped.append(f"line {number}: {str(exc)[:120]}")
                continue
            cells.append(cell)
        matrix = cls(meta=dict(meta) if meta is not None else header)
        for cell in cells:
            matrix.add(cell, validated=True)
        matrix.meta["journal"] = {
            "path": str(path),
            "cells": len(cells),
            "skipped_lines": len(skipped),
            "skipped": skipped[:10],
        }
        return matrix


# ---------------------------------------------------------------------------------------------
# Merge and diff
# ---------------------------------------------------------------------------------------------

_UNION_LISTS = ("platforms", "quant", "toolkits", "toolkit_envs")


def _union(values: Iterable[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(json.dumps(value, sort_keys=True), value)
    return list(seen.values())


def _summary(matrix: Matrix) -> dict[str, Any]:
    meta = matrix.meta
    return {
        "command": meta.get("command"),
        "started": meta.get("started"),
        "finished": meta.get("finished"),
        "toolkits": meta.get("toolkits"),
        "host": (meta.get("host") or {}).get("name"),
        "cells": len(matrix),
    }


def _brief(cell: Cell) -> dict[str, Any]:
    return {"status": cell.status, "signature": cell.signature, "finished": cell.finished}


def merge(matrices: Iterable[Matrix]) -> Matrix:
    """One matrix holding every cell of ``matrices`` (e.g. one per toolkit version).

    A key present in several inputs keeps the cell that finished last (ties: the later input);
    when the two disagree on status or signature, the disagreement is listed in
    ``meta["conflicts"]``. Metadata: list fields (platforms, quant, toolkits, toolkit_envs) are
    unioned, ``started`` is the earliest, ``finished`` the latest, other fields come from the
    first input that has them, and ``merged_from`` summarises every input.
    """
    inputs = list(matrices)
    meta: dict[str, Any] = {}
    for matrix in inputs:
        for key, value in matrix.meta.items():
            if key not in ("conflicts", "merged_from", "journal"):
                meta.setdefault(key, value)
    for key in _UNION_LISTS:
        values = [v for m in inputs for v in (m.meta.get(key) or [])]
        if values:
            meta[key] = _union(values)
    starts = [m.meta["started"] for m in inputs if m.meta.get("started")]
    ends = [m.meta["finished"] for m in inputs if m.meta.get("finished")]
    meta["started"] = min(starts, key=instant) if starts else None
    meta["finished"] = max(ends, key=instant) if ends else None
    conflicts = [c for m in inputs for c in (m.meta.get("conflicts") or [])]
    merged_from = [s for m in inputs for s in (m.meta.get("merged_from") or [_summary(m)])]

    result = Matrix(meta=meta)
    for matrix in inputs:
        for cell in matrix.cells:
            held = result.get(cell.key)
            if held is not None and instant(held.finished) > instant(cell.finished):
                kept, dropped = held, cell
            else:
                kept, dropped = cell, held
            if dropped is not None and (kept.status, kept.signature) != (
                dropped.status,
                dropped.signature,
            ):
                variant_id, platform, toolkit, quant = cell.key
                conflicts.append(
                    {
                        "variant_id": variant_id,
                        "platform": platform,
                        "toolkit": toolkit,
                        "quant": quant,
                        "kept": _brief(kept),
                        "dropped": _brief(dropped),
                    }
                )
            result.add(kept, validated=True)
    result.meta["conflicts"] = conflicts
    result.meta["merged_from"] = merged_from
    return result


def diff(old: Matrix, new: Matrix) -> list[Change]:
    """What changed from ``old`` to ``new``, cell by cell, in key order.

    ``regression``: passed before, fails now; ``fix``: failed before, passes now; ``new`` and
    ``removed``: the key is in one matrix only; ``changed``: any other change of status or
    signature (a different failure, or a move to or from ``unsupported``).
    """
    changes: list[Change] = []
    for key in sorted({*old._cells, *new._cells}):
        before, after = old.get(key), new.get(key)
        if before is None and after is not None:
            changes.append(Change("new", key, None, after.status, None, after.signature))
        elif after is None and before is not None:
            changes.append(Change("removed", key, before.status, None, before.signature, None))
        elif before is not None and after is not None:
            if (before.status, before.signature) == (after.status, after.signature):
                continue
            if before.status == "pass" and after.failed:
                kind = "regression"
            elif before.failed and after.status == "pass":
                kind = "fix"
            else:
                kind = "changed"
            changes.append(
                Change(kind, key, before.status, after.status, before.signature, after.signature)
            )
    return changes

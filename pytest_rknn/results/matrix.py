"""The compatibility matrix document: its schema, validation, loading and atomic writing.

The document (``{"schema": "pytest-rknn/matrix", "version": 1, "meta": {...}, "cells": [...]}``,
described by ``matrix.schema.json``, whose status enum is the status vocabulary's) holds one
:class:`~pytest_rknn.results.cell.CellRecord` per key (variant_id, platform, toolkit, quant).
Loading checks everything and fails with one line naming the file and the fix; a killed run's
matrix is rebuilt from its journal (:mod:`~pytest_rknn.results.journal`).

``meta`` is a plain dict. Known keys (all optional, see the schema): ``pytest_rknn`` (version),
``started``/``finished`` (ISO 8601), ``host``, ``command``, ``seed``, ``profile``,
``platforms``, ``quant``, ``toolkits`` (version labels), ``toolkit_envs`` (their environment
descriptions), ``conflicts`` and ``merged_from`` (set by ``merge``), ``journal`` (set by
``from_journal``); anything else is kept as is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema

from pytest_rknn.results.cell import CellRecord, Key, now
from pytest_rknn.results.journal import atomic_write_text, read_journal
from pytest_rknn.results.safe_read import UnreadableFile, document_bytes
from pytest_rknn.results.status import STATUSES


class MatrixError(ValueError):
    """A matrix document or journal that cannot be used; the message names the file and fix."""


SCHEMA_NAME = "pytest-rknn/matrix"
SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of the document, its status enum taken from the status vocabulary."""
    text = resources.files("pytest_rknn.results").joinpath("matrix.schema.json").read_text("utf-8")
    data = json.loads(text)
    data["$defs"]["cell"]["properties"]["status"] = {"enum": list(STATUSES)}
    return data


def shipped_schema() -> dict[str, Any]:
    """The schema file as shipped, for readers outside pytest-rknn (its enum must match)."""
    text = resources.files("pytest_rknn.results").joinpath("matrix.schema.json").read_text("utf-8")
    return json.loads(text)


def _part(part: str) -> dict[str, Any]:
    full = schema()
    if part == "cell":
        return {"$schema": full["$schema"], "$defs": full["$defs"], "$ref": "#/$defs/cell"}
    if part == "shell":
        cells = {"type": "array", "items": {"type": "object"}}
        return {**full, "properties": {**full["properties"], "cells": cells}}
    return full


@lru_cache(maxsize=3)
def _validator(part: str = "document") -> Any:
    """A validator of the whole ``document``, of one ``cell``, or of the document ``shell``."""
    try:
        import jsonschema
    except ImportError:
        raise MatrixError(
            "validating a matrix needs the jsonschema package: pip install 'jsonschema>=4'"
        ) from None
    return jsonschema.Draft202012Validator(_part(part))


@lru_cache(maxsize=3)
def _quick_check(part: str) -> Callable[[Any], Any]:
    """The same schema compiled to Python by fastjsonschema (as draft-07: it uses no later
    keyword), twenty times quicker than jsonschema at saying yes; jsonschema says why not."""

    def offline(uri: str) -> Any:
        raise MatrixError(f"the matrix schema refers to {uri}: its references are all local")

    # Without its "$id", the schema's references ("#/$defs/...") resolve inside it.
    local = {k: v for k, v in _part(part).items() if k != "$id"}
    local["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(local, handlers={"http": offline, "https": offline})


def _first_error(data: Any, part: str) -> Any:
    try:
        _quick_check(part)(data)
    except fastjsonschema.JsonSchemaException:
        import jsonschema

        return jsonschema.exceptions.best_match(_validator(part).iter_errors(data))
    return None


def cell_error(data: Any) -> str | None:
    """Why ``data`` is not a cell the schema allows (None: it is one)."""
    error = _first_error(data, "cell")
    return None if error is None else f"{_where(error.absolute_path)}: {error.message}"


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
    if str(version) == str(SCHEMA_VERSION) and version != SCHEMA_VERSION:
        raise MatrixError(
            f'{source} has "version": {version!r}, a {type(version).__name__}; a matrix has the '
            f"number {SCHEMA_VERSION} there: fix that field or regenerate the matrix"
        )
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


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(name)


class Matrix:
    """The cells of one run (or of several merged runs) and the run's metadata."""

    def __init__(
        self, meta: Mapping[str, Any] | None = None, cells: Iterable[CellRecord] = ()
    ) -> None:
        self.meta: dict[str, Any] = dict(meta or {})
        self._cells: dict[Key, CellRecord] = {}
        for cell in cells:
            self.add(cell)

    def add(self, cell: CellRecord, validated: bool = False) -> None:
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
    def cells(self) -> list[CellRecord]:
        """The cells, sorted by key (so equal runs give equal documents)."""
        return [self._cells[k] for k in sorted(self._cells)]

    def get(self, key: Key) -> CellRecord | None:
        """The cell with this key, or None."""
        return self._cells.get(key)

    def __len__(self) -> int:
        return len(self._cells)

    def __iter__(self) -> Iterator[CellRecord]:
        return iter(self.cells)

    def keys(self) -> list[Key]:
        return list(self._cells)

    def __contains__(self, key: object) -> bool:
        return key in self._cells

    def toolkit_seconds(self) -> float:
        """The in-worker toolkit time of the cells this matrix's run(s) converted (a cell taken
        from the cache cost none): ``meta["toolkit_s"]``."""
        return round(
            sum(float(c.timings.get("wall", 0) or 0) for c in self._cells.values() if not c.cached),
            3,
        )

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
            cells = [CellRecord.from_dict(c) for c in data["cells"]]
        except ValueError as exc:
            raise MatrixError(f"{source}: {exc}") from None
        matrix = cls(meta=data["meta"])
        for cell in cells:
            if cell.key in matrix:
                raise MatrixError(
                    f"{source}: cell {cell.id} appears more than once: keep one of them"
                )
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
            text = document_bytes(path, "matrix file").decode("utf-8")
        except UnreadableFile as exc:
            raise MatrixError(str(exc)) from None
        except FileNotFoundError:
            raise MatrixError(
                f"matrix file {path} does not exist: check the path, or produce it with a run "
                "of pytest-rknn (--rknn-matrix)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MatrixError(f"matrix file {path} cannot be read ({exc}): check it") from None
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            hint = "; the file looks truncated" if not text.rstrip().endswith("}") else ""
            journal = path.with_name(path.name + ".journal")
            fix = (
                f"rebuild it from its journal with `pytest-rknn merge {journal} -o {path}`"
                if journal.exists()
                else "regenerate it with a new run"
            )
            raise MatrixError(
                f"matrix file {path} is not valid JSON ({exc.msg}: line {exc.lineno} "
                f"column {exc.colno}{hint}): {fix}"
            ) from None
        except _NotJson as exc:
            raise MatrixError(
                f"matrix file {path} holds {exc}, which is not JSON (a matrix writes nan and inf "
                "as strings): regenerate it with a new run"
            ) from None
        except RecursionError:
            raise MatrixError(
                f"matrix file {path} nests too deeply to be a matrix: regenerate it with a new run"
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
        if not path.exists():
            raise MatrixError(
                f"journal {path} does not exist: it is written beside the matrix while a run "
                "is in progress and removed when the run completes"
            ) from None
        try:
            header, records, skipped = read_journal(path)
        except UnreadableFile as exc:
            raise MatrixError(str(exc)) from None
        cells: list[CellRecord] = []
        for number, record in records:
            try:
                cell = CellRecord.from_dict(record)
                error = _first_error(cell.to_dict(), "cell")
                if error is not None:
                    raise ValueError(f"{_where(error.absolute_path)}: {error.message}")
            except (ValueError, TypeError) as exc:
                skipped.append(f"line {number}: {str(exc)[:120]}")
                continue
            cells.append(cell)
        if meta is None:
            meta = header
            shell = {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "meta": meta, "cells": []}
            if _first_error(shell, "shell") is not None:
                skipped.append("header: run metadata does not fit the schema; left out")
                meta = {}
        matrix = cls(meta=dict(meta))
        for cell in cells:
            matrix.add(cell, validated=True)
        matrix.meta["journal"] = {
            "path": str(path),
            "cells": len(cells),
            "skipped_lines": len(skipped),
            "skipped": skipped[:10],
        }
        return matrix

"""Exported models kept in pytest's cache: sealed once accepted, used only while the seal holds.

An export is the file torch wrote and, for a large graph, its external data (``<name>.data``).
A full disk or a killed exporter can leave it empty or cut short (and ``onnx.load`` reads an
empty file as an empty model, without a word); a cache folder can be damaged later. A cell
converted from such a file would blame the toolkit for the damage, and its answer would be kept.
:func:`seal` records the sha256 of the export's files beside them once the host has accepted
the export (and of the records that describe it, ``also``); :func:`unsealed` says why a kept
export is not the one sealed (None: it is), and :func:`discard` removes an export with its seal,
so that it is exported again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pytest_rknn.results.journal import atomic_write_text

SEAL_SUFFIX = ".sha256"


def seal_path(model: Path) -> Path:
    """Where the seal of the export at ``model`` lives."""
    return model.with_name(model.name + SEAL_SUFFIX)


def _files(model: Path, also: tuple[Path, ...] = ()) -> list[Path]:
    data = model.with_name(model.name + ".data")
    return [model, *([data] if data.exists() else []), *also]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(model: Path, also: tuple[Path, ...] = ()) -> None:
    """Record the sha256 of the export's files (and of ``also``, files beside it) beside them;
    ``OSError`` when the export is empty (what a full disk leaves) or the seal cannot be
    written."""
    if model.stat().st_size == 0:
        raise OSError(f"the export {model.name} is an empty file (was the disk full?)")
    record = {path.name: _sha256(path) for path in _files(model, also)}
    atomic_write_text(seal_path(model), json.dumps(record))


def unsealed(model: Path, also: tuple[Path, ...] = ()) -> str | None:
    """Why the export kept at ``model`` (with ``also``) is not the one sealed; None when it is."""
    try:
        record = json.loads(seal_path(model).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{model.name} has no seal"
    except (OSError, ValueError):
        return f"the seal of {model.name} is unreadable"
    own = {model.name, model.name + ".data", *(path.name for path in also)}
    needed = {model.name, *(path.name for path in also)}
    if not isinstance(record, dict) or not needed <= set(record) or not set(record) <= own:
        return f"the seal of {model.name} is damaged"
    for name, digest in record.items():
        try:
            if _sha256(model.with_name(name)) != digest:
                return f"{name} changed since it was exported"
        except OSError:
            return f"{name} is missing"
    if set(record) != {path.name for path in _files(model, also)}:
        return f"{model.name} has external data its seal does not know"
    return None


def discard(model: Path) -> None:
    """Remove the export at ``model``, its external data and its seal."""
    for path in (model, model.with_name(model.name + ".data"), seal_path(model)):
        path.unlink(missing_ok=True)

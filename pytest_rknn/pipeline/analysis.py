"""Where a tolerance failure's error starts: the toolkit's ``accuracy_analysis``, read.

For a ``tolerance-fail`` cell the pipeline runs one more worker job (the same model, options and
calibration set, with ``analysis`` set): the toolkit builds it again, runs the float model
(``golden``) and the simulator layer by layer on the cell's inputs, and writes
``error_analysis.txt``: per layer, the cosine of the ``entire`` error (accumulated up to that
layer) and of the ``single`` error (that layer alone, fed the golden inputs). The first layer
whose single error is far worse than the accumulated error of every layer before it is where the
error starts (:func:`find_origin`). The job is bounded like any other (``--rknn-timeout``,
``--rknn-max-memory``); whatever happens to it, the cell keeps its status and the failure of the
analysis is written into the record's ``error_origin`` instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A layer "starts" the error when its own error (1 - single cosine) is at least FACTOR times the
# largest error (1 - entire cosine) of the layers listed before it, and at least FLOOR.
FACTOR = 10.0
FLOOR = 1e-3
ANALYSIS_VERSION = 1

_ROW = re.compile(
    r"^\[(?P<op>[^\]]+)\]\s+(?P<name>\S+)\s+(?P<ecos>\S+)\s*\|\s*\S+\s+(?P<scos>\S+)\s*\|\s*\S+"
)


@dataclass(frozen=True)
class LayerError:
    """One row of ``error_analysis.txt``: a layer (by its output tensor) and its two cosines."""

    op: str
    name: str
    entire: float
    single: float


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value


def parse_error_analysis(text: str) -> list[LayerError]:
    """The layer rows of an ``error_analysis.txt`` (simulator columns; header lines skipped)."""
    rows = []
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if match:
            rows.append(
                LayerError(
                    match["op"],
                    match["name"],
                    _number(match["ecos"]),
                    _number(match["scos"]),
                )
            )
    return rows


def _error(cosine: float) -> float:
    """1 - cosine (never below 0)."""
    return max(0.0, 1.0 - cosine)


def _known(row: LayerError) -> bool:
    """Whether the analysis could compare the layer: it writes ``q_unknow`` for a tensor it
    cannot (e.g. a mask holding the dtype's lowest value); such rows are skipped."""
    return math.isfinite(row.single) and math.isfinite(row.entire)


def find_origin(rows: list[LayerError]) -> dict[str, Any]:
    """The first layer whose own error is far worse than its inputs' (see the module's
    docstring); when no layer stands out, the layer of the worst own error with a note, or
    only a note when no layer's own error reaches :data:`FLOOR`. Graph inputs are never it,
    nor layers the analysis could not compare."""
    layers = [row for row in rows if row.op.lower() != "input" and _known(row)]
    if not layers:
        return {"error": "accuracy_analysis listed no layer it could compare"}
    unknown = sum(1 for row in rows if not _known(row))
    worst_before = 0.0
    for row in rows:
        if not _known(row):
            continue
        own = _error(row.single)
        if row.op.lower() != "input" and own >= FLOOR and own >= FACTOR * worst_before:
            found = _origin(row, worst_before, len(rows))
            if unknown:
                found["note"] = f"{unknown} layer(s) the analysis could not compare (q_unknow)"
            return found
        worst_before = max(worst_before, _error(row.entire))
    worst = max(layers, key=lambda r: _error(r.single))
    if _error(worst.single) < FLOOR:
        return {
            "layers": len(rows),
            "note": f"no layer's own error reaches {FLOOR:g} (every single cosine is above "
            f"{1 - FLOOR:g}): the error is spread over the graph",
        }
    found = _origin(worst, None, len(rows))
    found["note"] = "no single layer stands out: the error accumulates over several layers"
    return found


def _origin(row: LayerError, worst_before: float | None, count: int) -> dict[str, Any]:
    found: dict[str, Any] = {"layer": row.name, "op": row.op, "layers": count}
    for key, value in (("cosine", row.single), ("entire_cosine", row.entire)):
        if math.isfinite(value):
            found[key] = value
    if worst_before is not None:
        found["input_cosine"] = round(1.0 - worst_before, 6)
    return found


def read_origin(path: str | Path) -> dict[str, Any]:
    """:func:`find_origin` of an ``error_analysis.txt`` file (an ``error`` if unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return {"error": f"cannot read {path}: {exc.strerror or exc}"}
    return find_origin(parse_error_analysis(text))


def describe(origin: dict[str, Any] | None) -> str | None:
    """The line a failing item shows about ``origin``, or None."""
    if not origin:
        return None
    if "error" in origin:
        return f"where the error starts: unknown ({origin['error']})"
    if "layer" not in origin:
        return f"where the error starts: {origin.get('note', 'unknown')}"
    cosine = origin.get("cosine")
    text = f"the error starts in {origin['op']} {origin['layer']}"
    if cosine is not None:
        text += f" (cosine {cosine:.5f}"
        if "input_cosine" in origin:
            text += f"; its inputs {origin['input_cosine']:.5f}"
        text += ")"
    if origin.get("note"):
        text += f"; {origin['note']}"
    return text

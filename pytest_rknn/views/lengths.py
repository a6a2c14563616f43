"""What the views say of dynamic-shape cells (``--rknn-dims``): the lengths each serves.

:func:`served_rows` gives, per model, build mode, platform and toolkit, ``serves seq 16, 32``
(the listed shapes that passed) and what failed (``fails seq 64 (runtime-fail)``), for the
terminal and Markdown summaries; the dashboard reads the cells' ``shapes`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_name(cell: Any) -> str:
    """A user model's file stem (with its dims), else the cell's variant id."""
    path = (getattr(cell, "variant", None) or {}).get("path")
    dims = (getattr(cell, "variant", None) or {}).get("dims")
    return Path(path).stem if path and dims else str(cell.variant_id)


def _lengths(shapes: list[dict[str, Any]]) -> str:
    """``seq 16, 32`` (``batch 1, 2; seq 16``): each dim's values among ``shapes``."""
    names: dict[str, list[int]] = {}
    for shape in shapes:
        for name, value in (shape.get("dims") or {}).items():
            names.setdefault(name, [])
            if value not in names[name]:
                names[name].append(value)
    return "; ".join(f"{n} {', '.join(map(str, sorted(v)))}" for n, v in sorted(names.items()))


def served(cell: Any) -> str | None:
    """``serves seq 16, 32; fails seq 64 (runtime-fail)`` for a dynamic-shape cell, else None."""
    shapes = getattr(cell, "shapes", None)
    if not shapes:
        return None
    good = [s for s in shapes if s.get("status") == "pass"]
    bad = [s for s in shapes if s.get("status") != "pass"]
    parts = [f"serves {_lengths(good)}" if good else "serves no listed length"]
    if bad:
        statuses = ", ".join(sorted({str(s.get("status")) for s in bad}))
        parts.append(f"fails {_lengths(bad)} ({statuses})")
    unlisted = getattr(cell, "unlisted_shape", None) or {}
    if unlisted.get("answer") not in (None, "untried"):
        parts.append(f"unlisted {_lengths([unlisted])}: {unlisted['answer']}")
    return "; ".join(parts)


def served_rows(cells: list[Any]) -> list[tuple[str, str, str, str, str]]:
    """(model, quant, platform, toolkit, what it serves) of every dynamic-shape cell, sorted."""
    rows = [
        (model_name(c), c.quant, c.platform, c.toolkit, text)
        for c in cells
        if (text := served(c)) is not None
    ]
    return sorted(rows)


def _worst(metrics: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """The worst output's cosine and relative L2 error of one shape's metrics."""
    found = [m for m in (metrics or {}).values() if isinstance(m.get("cosine"), (int, float))]
    if not found:
        return None, None
    worst = min(found, key=lambda m: m["cosine"])
    rel = worst.get("rel_l2")
    return float(worst["cosine"]), float(rel) if isinstance(rel, (int, float)) else None


def shape_rows(cell: Any) -> dict[str, Any] | None:
    """A dynamic-shape cell's shapes for the dashboard's panel and chart (None: not one):
    each listed shape's dims, its length (the first dim's value), status, worst cosine and
    relative L2 error and internal memory, and the unlisted shape's answer."""
    shapes = getattr(cell, "shapes", None)
    if not shapes:
        return None
    rows = []
    for shape in shapes:
        dims = shape.get("dims") or {}
        cosine, rel = _worst(shape.get("metrics"))
        memory = (shape.get("memory") or {}).get("internal_bytes")
        rows.append(
            {
                "dims": ", ".join(f"{k} {v}" for k, v in dims.items()),
                "length": next(iter(dims.values()), None),
                "status": shape.get("status"),
                "reason": shape.get("reason"),
                "cosine": cosine,
                "rel_l2": rel,
                "internal_bytes": memory if isinstance(memory, int) else None,
            }
        )
    unlisted = getattr(cell, "unlisted_shape", None) or {}
    return {
        "rows": rows,
        "unlisted": {
            "dims": _lengths([unlisted]) if unlisted.get("dims") else "",
            "answer": unlisted.get("answer"),
            "message": unlisted.get("message"),
        },
    }

"""The HTML dashboard: one self-contained page that shows a matrix (a jinja2 template).

Rows are variants (grouped by form), columns are (platform, toolkit, quant) targets, each cell
coloured by status with its signature, metrics and log excerpt on hover; above the grid, the
platform × toolkit pass counts and the most common signatures, below it the run's metadata.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from pytest_rknn.results.journal import atomic_write_text
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import STATUS_TABLE, Status
from pytest_rknn.views.tally import top_signatures, version_key


def _tooltip(cell: Any) -> str:
    lines = [
        f"{cell.variant_id} · {cell.platform} · {cell.toolkit} · {cell.quant}",
        cell.status.value,
    ]
    if cell.signature:
        lines.append(cell.signature)
    for name, metric in (cell.metrics or {}).items():
        shown = {k: metric.get(k) for k in ("max_abs", "rel_l2", "cosine") if k in metric}
        lines.append(f"{name}: {json.dumps(shown)}")
    if cell.cached:
        lines.append("(cached result)")
    if cell.log_excerpt:
        lines.append(cell.log_excerpt[-600:])
    return "\n".join(lines)


def render(matrix: Matrix, title: str = "rknn-toolkit2 compatibility matrix") -> str:
    """The dashboard page for ``matrix``."""
    cells = matrix.cells
    targets = sorted(
        {(c.platform, c.toolkit, c.quant) for c in cells},
        key=lambda t: (t[0], version_key(t[1]), t[2]),
    )
    by_key = {(c.variant_id, c.platform, c.toolkit, c.quant): c for c in cells}
    variants: dict[str, dict[str, Any]] = {}
    for cell in cells:
        variants.setdefault(cell.variant_id, cell.variant)
    rows = []
    for variant_id in sorted(variants, key=lambda v: (variants[v].get("form", ""), v)):
        row = []
        for platform, toolkit, quant in targets:
            cell = by_key.get((variant_id, platform, toolkit, quant))
            row.append(
                {"status": cell.status.value, "tip": _tooltip(cell)}
                if cell
                else {"status": "missing"}
            )
        rows.append({"id": variant_id, "form": variants[variant_id].get("form", ""), "cells": row})
    totals = Counter(c.status for c in cells)
    summary = []
    for platform in sorted({t[0] for t in targets}):
        line = {"platform": platform, "entries": []}
        for toolkit in sorted({t[1] for t in targets}, key=version_key):
            mine = [c for c in cells if c.platform == platform and c.toolkit == toolkit]
            ran = [c for c in mine if c.status.ran]
            passed = sum(c.status is Status.PASS for c in ran)
            line["entries"].append({"toolkit": toolkit, "passed": passed, "ran": len(ran)})
        summary.append(line)
    env = Environment(
        loader=PackageLoader("pytest_rknn.views", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("dashboard.html.j2").render(
        title=title,
        targets=targets,
        rows=rows,
        statuses=[s.value for s in Status if totals[s]],
        colours={s.value: info.colour for s, info in STATUS_TABLE.items()},
        totals={s.value: n for s, n in totals.items()},
        summary=summary,
        signatures=top_signatures(matrix, limit=15),
        meta=json.dumps(matrix.meta, indent=2, default=str),
        count=len(cells),
    )


def write_dashboard(matrix: Matrix, path: Path) -> Path:
    """Write the page atomically: an earlier page survives a failed write."""
    path = Path(path)
    atomic_write_text(path, render(matrix))
    return path

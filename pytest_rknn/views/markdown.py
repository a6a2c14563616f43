"""The Markdown view of a matrix: summary, pass/ran table, signatures and failing cells."""

from __future__ import annotations

from typing import Any

from pytest_rknn.views.tally import (
    cells_of,
    failing_cells,
    grid,
    pass_ran,
    status_line,
    top_signatures,
    version_key,
)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(matrix: Any, top: int = 20) -> str:
    """A Markdown report: summary line, platform x toolkit table, signatures, failing cells."""
    cells = cells_of(matrix)
    meta = getattr(matrix, "meta", {}) or {}
    lines = ["# rknn compatibility matrix", ""]
    facts = [
        f"{k}: {meta[k]}"
        for k in ("pytest_rknn", "started", "finished", "seed", "profile")
        if meta.get(k) is not None
    ]
    if facts:
        lines += ["- " + fact for fact in facts] + [""]
    if not cells:
        return "\n".join([*lines, "No cells."]) + "\n"
    rows, columns, counts = grid(cells)
    lines += [status_line(cells), "", "Pass / ran per platform and toolkit:", ""]
    lines.append("| platform | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for row in rows:
        entries = [pass_ran(counts.get((row, col))) for col in columns]
        lines.append(f"| {row} | " + " | ".join(entries) + " |")
    signatures = top_signatures(cells, top)
    if signatures:
        lines += ["", "## Failure signatures", "", "| cells | signature | where |", "|---|---|---|"]
        for signature, count, places in signatures:
            lines.append(f"| {count} | `{_md(signature)}` | {', '.join(places)} |")
    failing = failing_cells(cells)
    if failing:
        lines += ["", "## Failing cells", ""]
        lines += [
            "| variant | platform | toolkit | quant | status | signature |",
            "|---|---|---|---|---|---|",
        ]
        for c in sorted(
            failing, key=lambda c: (c.variant_id, c.platform, version_key(c.toolkit), c.quant)
        ):
            lines.append(
                f"| `{_md(c.variant_id)}` | {c.platform} | {c.toolkit} | {c.quant} "
                f"| {c.status.value} | {_md(c.signature or '')} |"
            )
    return "\n".join(lines) + "\n"

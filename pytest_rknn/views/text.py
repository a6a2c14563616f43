"""The terminal view of a matrix: a status line, pass/ran per platform and toolkit, signatures,
and the warnings of cells whose toolkit survived an exception."""

from __future__ import annotations

from typing import Any

from pytest_rknn.views.tally import cells_of, grid, pass_ran, status_line, top_signatures


def summary_text(matrix: Any, top: int = 8) -> str:
    """The terminal summary: pass/ran per platform x toolkit, the commonest signatures, and the
    warnings (silent failures)."""
    cells = cells_of(matrix)
    if not cells:
        return "no cells"
    rows, columns, counts = grid(cells)
    table = [["platform", *columns]]
    table += [[row, *[pass_ran(counts.get((row, col))) for col in columns]] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [status_line(cells), "pass/ran per platform and toolkit:"]
    lines += [
        "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    signatures = top_signatures(cells, top)
    if signatures:
        lines.append("most common failure signatures:")
        for signature, count, places in signatures:
            where = ", ".join(places[:4]) + (", ..." if len(places) > 4 else "")
            lines.append(f"  {count:>4}  {signature}  [{where}]")
    warned = [c for c in cells if getattr(c, "warning", None)]
    if warned:
        lines.append(f"{len(warned)} cell(s) whose log shows an exception the toolkit survived:")
        for warning in sorted({c.warning for c in warned})[:top]:
            count = sum(c.warning == warning for c in warned)
            lines.append(f"  {count:>4}  {warning}")
    return "\n".join(lines)

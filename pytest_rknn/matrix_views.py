"""Views of a compatibility matrix: the terminal summary and the Markdown report.

Both show a platform x toolkit table of pass counts and the most common error signatures. They
read only the cells' ``platform``, ``toolkit``, ``quant``, ``status``, ``signature`` and
``variant_id``, so they work on any iterable of such cells (``Matrix.cells``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Protocol


class _CellLike(Protocol):
    variant_id: str
    platform: str
    toolkit: str
    quant: str
    status: str
    signature: str | None


def _cells(matrix: Any) -> list[_CellLike]:
    return list(matrix.cells if hasattr(matrix, "cells") else matrix)


def version_key(label: str) -> tuple[Any, ...]:
    """Sort key putting ``2.2.0 < 2.3.0 < 2.10.0`` and non-version labels after them."""
    parts = re.findall(r"\d+|[A-Za-z]+", label)
    if not parts or not parts[0].isdigit():
        return (1, label)
    return (0, *[(0, int(p)) if p.isdigit() else (1, p) for p in parts])


def _grid(cells: list[_CellLike]) -> tuple[list[str], list[str], dict[tuple[str, str], Counter]]:
    quants = sorted({c.quant for c in cells})
    rows = sorted({(c.platform, c.quant) for c in cells})
    row_names = [p if len(quants) == 1 else f"{p} {q}" for p, q in rows]
    columns = sorted({c.toolkit for c in cells}, key=version_key)
    counts: dict[tuple[str, str], Counter] = {}
    for cell in cells:
        name = cell.platform if len(quants) == 1 else f"{cell.platform} {cell.quant}"
        counts.setdefault((name, cell.toolkit), Counter())[cell.status] += 1
    return row_names, columns, counts


def _entry(counter: Counter | None) -> str:
    if not counter:
        return "-"
    ran = sum(n for status, n in counter.items() if status != "unsupported")
    if ran == 0:
        return "unsupported"
    return f"{counter['pass']}/{ran}"


def _status_line(cells: list[_CellLike]) -> str:
    counts = Counter(c.status for c in cells)
    failing = {s: n for s, n in counts.items() if s not in ("pass", "unsupported")}
    noun = "cell" if len(cells) == 1 else "cells"
    text = f"{len(cells)} {noun}: {counts['pass']} pass, {sum(failing.values())} fail"
    if failing:
        text += " (" + ", ".join(f"{s} {n}" for s, n in sorted(failing.items())) + ")"
    if counts["unsupported"]:
        text += f", {counts['unsupported']} unsupported"
    return text


def top_signatures(matrix: Any, limit: int = 8) -> list[tuple[str, int, list[str]]]:
    """The most common signatures of failing cells: (signature, count, where it occurs)."""
    groups: dict[str, list[_CellLike]] = {}
    for cell in _cells(matrix):
        if cell.status not in ("pass", "unsupported"):
            groups.setdefault(cell.signature or cell.status, []).append(cell)
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))[:limit]
    result = []
    for signature, members in ranked:
        places = sorted(
            {(c.platform, c.toolkit) for c in members}, key=lambda p: (p[0], version_key(p[1]))
        )
        result.append((signature, len(members), [f"{p}/{t}" for p, t in places]))
    return result


def summary_text(matrix: Any, top: int = 8) -> str:
    """The terminal summary: pass/ran per platform x toolkit, then the commonest signatures."""
    cells = _cells(matrix)
    if not cells:
        return "no cells"
    rows, columns, counts = _grid(cells)
    table = [["platform", *columns]]
    table += [[row, *[_entry(counts.get((row, col))) for col in columns]] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [_status_line(cells), "pass/ran per platform and toolkit:"]
    lines += [
        "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    signatures = top_signatures(cells, top)
    if signatures:
        lines.append("most common failure signatures:")
        for signature, count, places in signatures:
            where = ", ".join(places[:4]) + (", ..." if len(places) > 4 else "")
            lines.append(f"  {count:>4}  {signature}  [{where}]")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(matrix: Any, top: int = 20) -> str:
    """A Markdown report: summary line, platform x toolkit table, signatures, failing cells."""
    cells = _cells(matrix)
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
    rows, columns, counts = _grid(cells)
    lines += [_status_line(cells), "", "Pass / ran per platform and toolkit:", ""]
    lines.append("| platform | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for row in rows:
        entries = [_entry(counts.get((row, col))) for col in columns]
        lines.append(f"| {row} | " + " | ".join(entries) + " |")
    signatures = top_signatures(cells, top)
    if signatures:
        lines += ["", "## Failure signatures", "", "| cells | signature | where |", "|---|---|---|"]
        for signature, count, places in signatures:
            lines.append(f"| {count} | `{_md(signature)}` | {', '.join(places)} |")
    failing = [c for c in cells if c.status not in ("pass", "unsupported")]
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
                f"| `{_md(c.variant_id)}` | {c.platform} | {c.toolkit} | {c.quant} | {c.status} "
                f"| {_md(c.signature or '')} |"
            )
    return "\n".join(lines) + "\n"

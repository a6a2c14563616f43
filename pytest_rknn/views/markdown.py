"""The Markdown views: a matrix's report (summary, pass/ran table, signatures, failing cells) and
a diff's report; every table cell is escaped (:func:`md_text`, :func:`md_code`).

GitHub renders Markdown tables with inline HTML, so text from a log or a model's name could
otherwise close the table (``|``), start a tag (``<``) or turn into emphasis or a link.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pytest_rknn.views.tally import (
    cells_of,
    failing_cells,
    family_table,
    grid,
    model_rows,
    pass_ran,
    status_line,
    top_signatures,
    version_key,
)

_MARKUP = re.compile(r"([\\`*_\[\]{}()#+!~|])")


def md_text(text: Any) -> str:
    """``text`` as plain text inside a Markdown table cell: one line, nothing interpreted."""
    value = " ".join(str(text if text is not None else "").split())
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKUP.sub(r"\\\1", value)


def md_code(text: Any) -> str:
    """``text`` as inline code inside a table cell (a code span shows ``<`` as is)."""
    value = " ".join(str(text if text is not None else "").split()).replace("|", "\\|")
    if not value:
        return ""
    fence = "`" * (max((len(m) for m in re.findall(r"`+", value)), default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _accuracy(cell: Any) -> str:
    """The worst output's cosine and relative L2 error (blank for a cell without outputs)."""
    found = [m for m in (cell.metrics or {}).values() if isinstance(m.get("cosine"), float)]
    if not found:
        return ""
    worst = min(found, key=lambda m: m["cosine"])
    rel = worst.get("rel_l2")
    return f"{worst['cosine']:.5f} / " + (f"{rel:.2%}" if isinstance(rel, float) else "n/a")


def to_markdown(matrix: Any, top: int = 20) -> str:
    """A Markdown report: summary line, platform x toolkit table, signatures, failing cells."""
    cells = cells_of(matrix)
    meta = getattr(matrix, "meta", {}) or {}
    lines = ["# rknn compatibility matrix", ""]
    facts = [
        f"{k}: {md_text(meta[k])}"
        for k in ("pytest_rknn", "started", "finished", "seed", "profile")
        if meta.get(k) is not None
    ]
    if facts:
        lines += ["- " + fact for fact in facts] + [""]
    if not cells:
        return "\n".join([*lines, "No cells."]) + "\n"
    rows, columns, counts = grid(cells)
    lines += [status_line(cells), "", "Pass / ran per platform and toolkit:", ""]
    lines.append("| platform | " + " | ".join(md_text(c) for c in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for row in rows:
        entries = [pass_ran(counts.get((row, col))) for col in columns]
        lines.append(f"| {md_text(row)} | " + " | ".join(entries) + " |")
    models = model_rows(cells)
    if models:
        lines += ["", "## Your models", "", "| model | targets passed | worst cosine | where |"]
        lines.append("|---|---|---|---|")
        for m in models:
            worst = f"{m.worst_cosine:.5f}" if m.worst_cosine is not None else ""
            failing = ", ".join(f"{s} {n}" for s, n in sorted(m.failing.items()))
            passed = f"{m.passed}/{m.targets}" + (f" ({failing})" if failing else "")
            lines.append(
                f"| {md_code(m.name)} | {md_text(passed)} | {worst} | {md_text(m.worst_where)} |"
            )
    families = family_table(cells)
    if families:
        lines += ["", "## Whole models (hf form): pass / ran per family", ""]
        lines.append("| " + " | ".join(md_text(v) for v in families[0]) + " |")
        lines.append("|---|" + "---|" * (len(families[0]) - 1))
        lines += ["| " + " | ".join(md_text(v) for v in row) + " |" for row in families[1:]]
    signatures = top_signatures(cells, top)
    if signatures:
        lines += ["", "## Failure signatures", "", "| cells | signature | where |", "|---|---|---|"]
        for signature, count, places in signatures:
            lines.append(f"| {count} | {md_code(signature)} | {md_text(', '.join(places))} |")
    failing = failing_cells(cells)
    if failing:
        lines += ["", "## Failing cells", ""]
        lines += [
            "| variant | platform | toolkit | quant | status | signature | cosine / rel_l2 |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in sorted(
            failing, key=lambda c: (c.variant_id, c.platform, version_key(c.toolkit), c.quant)
        ):
            lines.append(
                f"| {md_code(c.variant_id)} | {md_text(c.platform)} | {md_text(c.toolkit)} "
                f"| {md_text(c.quant)} | {md_text(c.status.value)} | {md_text(c.signature)} "
                f"| {md_text(_accuracy(c))} |"
            )
    return "\n".join(lines) + "\n"


def diff_markdown(reports: Iterable[Any], title: str = "rknn matrix diff", limit: int = 50) -> str:
    """A diff's reports: one counts table, then each report's changed cells (at most ``limit``
    rows per report, the regressions first)."""
    reports = list(reports)
    lines = [f"## {md_text(title)}", ""]
    names = ["fixed", "regressed", "changed", "new", "removed", "unchanged"]
    lines.append("| comparison | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for report in reports:
        counts = report.counts()
        lines.append(
            f"| {md_text(report.label)} | " + " | ".join(str(counts[n]) for n in names) + " |"
        )
    order = {"regression": 0, "fix": 1, "changed": 2, "new": 3, "removed": 4}
    for report in reports:
        if not report.changes:
            continue
        changes = sorted(report.changes, key=lambda c: order.get(c.kind, 9))
        lines += ["", f"### {md_text(report.label)}", ""]
        lines += ["| change | variant | platform | toolkit | quant | before | after |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for c in changes[:limit]:
            variant, platform, toolkit, quant = c.key
            lines.append(
                f"| {c.kind} | {md_code(variant)} | {md_text(platform)} | {md_text(toolkit)} "
                f"| {md_text(quant)} | {md_text(c.before)} | {md_text(c.after)} |"
            )
        if len(changes) > limit:
            lines.append(f"\n… and {len(changes) - limit} more (`pytest-rknn diff` lists them all)")
    return "\n".join(lines) + "\n"

"""The terminal view of a matrix: the run's summary, diff reports, and re-run commands.

:func:`summary_text` is the block at the end of a run (status line, pass/ran per platform and
toolkit, attention fully on the NPU per platform and toolkit, commonest signatures, the
warnings of cells whose toolkit survived an exception);
:func:`diff_text` prints :class:`~pytest_rknn.results.compare.
DiffReport` s; :func:`rerun_command` is the one place that spells the command re-running one
cell (the failing item's block, the dashboard's cell panel and the Markdown report all use it).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from typing import Any

from pytest_rknn.results.status import FIX_REJECTED, Status
from pytest_rknn.views.lengths import served_rows
from pytest_rknn.views.placement import placement_text
from pytest_rknn.views.tally import (
    cells_of,
    family_table,
    grid,
    model_rows,
    pass_ran,
    status_line,
    top_signatures,
)

RERUN_MATRIX = "rknn-rerun.json"
# Options whose values are files of the run: a re-run writes its own and reads no baseline.
_OUTPUTS = ("--rknn-matrix", "--rknn-html", "--rknn-baseline", "--rknn-markdown")
# A re-run is never one shard of a cut (one cell cut into N shards is refused).
_SHARDING = ("--rknn-shard", "--rknn-shard-costs")
# Options that choose which cells exist: a re-run of one cell pins them instead.
_SELECTION = (
    "--rknn-toolkits",
    "--rknn-platforms",
    "--rknn-quant",
    "--rknn-config",
    "--rknn-forms",
    "--rknn-examples",
    "--rknn-variant",
    "--rknn-model",
    "--rknn-only",
    "--rknn-curated",
    "--rknn-no-curated",
)


def fixes_text(cells: list[Any]) -> list[str]:
    """ "What fixes what": per failure signature, each fix the advisor tried and how many of
    that signature's cells it turned green (``rejected``: the toolkit refused the option)."""
    advised = [c for c in cells if getattr(c, "fixes", None)]
    if not advised:
        return []
    by_signature: dict[str, list[Any]] = {}
    for cell in advised:
        by_signature.setdefault(cell.signature or cell.status.value, []).append(cell)
    lines = ["what fixes what (--rknn-advise; green/tried per fix):"]
    for signature, group in sorted(by_signature.items(), key=lambda kv: -len(kv[1])):
        tally: dict[str, list[int]] = {}
        for cell in group:
            for fix in cell.fixes:
                counts = tally.setdefault(fix["fix"], [0, 0, 0])
                if fix["status"] == FIX_REJECTED:
                    counts[2] += 1
                else:
                    counts[1] += 1
                    counts[0] += fix["status"] == Status.PASS.value
        parts = []
        for name, (green, tried, refused) in sorted(tally.items(), key=lambda kv: -kv[1][0]):
            text = f"{name} {green}/{tried}" if tried else name
            parts.append(text + (f" (rejected by {refused})" if refused else ""))
        lines.append(f"  {signature} ({len(group)} cells): " + ", ".join(parts))
    return lines


def summary_text(matrix: Any, top: int = 8) -> str:
    """The terminal summary: pass/ran per platform x toolkit, a line per user model, the
    commonest signatures, and the warnings (silent failures)."""
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
    lines += placement_text(cells)
    models = model_rows(cells)
    if models:
        lines.append("your models:")
        lines += ["  " + row.line() for row in models]
    families = family_table(cells)
    if families:
        widths = [max(len(r[i]) for r in families) for i in range(len(families[0]))]
        lines.append("whole models (hf form), pass/ran per family:")
        lines += [
            "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
            for r in families
        ]
    dynamic = served_rows(cells)
    if dynamic:
        lines.append("served lengths (--rknn-dims):")
        lines += [f"  {m} {p} {t} {q}: {text}" for m, q, p, t, text in dynamic]
    signatures = top_signatures(cells, top)
    if signatures:
        lines.append("most common failure signatures:")
        for signature, count, places in signatures:
            where = ", ".join(places[:4]) + (", ..." if len(places) > 4 else "")
            lines.append(f"  {count:>4}  {signature}  [{where}]")
    lines += fixes_text(cells)
    warned = [c for c in cells if getattr(c, "warning", None)]
    if warned:
        lines.append(f"{len(warned)} cell(s) whose log shows an exception the toolkit survived:")
        for warning in sorted({c.warning for c in warned})[:top]:
            count = sum(c.warning == warning for c in warned)
            lines.append(f"  {count:>4}  {warning}")
    return "\n".join(lines)


def diff_text(reports: Iterable[Any]) -> str:
    """Each report's headline, then its changed cells (one line each), indented, then how the
    placement moved (when both sides have layer tables)."""
    lines: list[str] = []
    for report in reports:
        lines.append(report.headline())
        lines += ["  " + change.describe() for change in report.changes]
        moved = getattr(report, "placement", None)
        if moved is not None and moved.compared:
            lines.append("  placement: " + moved.headline())
            lines += ["    " + change.describe() for change in moved.changes]
    return "\n".join(lines)


def _kept(args: Sequence[str], dropped: tuple[str, ...]) -> list[str]:
    """``args`` without the options in ``dropped`` and the values given to them."""
    from pytest_rknn.options import rknn_args

    kept: list[str] = []
    previous = ""
    for arg in rknn_args(args):
        named = arg.split("=", 1)[0] in dropped
        value_of_dropped = previous in dropped and not arg.startswith("-")
        if not (named or value_of_dropped):
            kept.append(arg)
        previous = arg if "=" not in arg else ""
    return kept


def _toolkit_request(args: Sequence[str], version: str) -> str:
    """The ``--rknn-toolkits`` entry of ``version`` in ``args`` (``2.1.0=x.whl`` stays whole)."""
    from pytest_rknn.options import rknn_args

    listed = rknn_args(args)
    for flag, value in zip(listed, [*listed[1:], ""][: len(listed)], strict=True):
        text = flag.split("=", 1)[1] if flag.startswith("--rknn-toolkits=") else None
        if flag == "--rknn-toolkits":
            text = value
        for entry in (text or "").split(","):
            if entry.strip().split("=", 1)[0] == version:
                return entry.strip()
    return version


def rerun_command(target: str, args: Sequence[str] = (), cell: Any = None) -> str:
    """The command that runs one cell again, into a matrix of its own (``rknn-rerun.json``).

    ``target`` is the test's node id (or a test path, e.g. ``cases/``; a dotted name of the
    installed suite, ``pytest_rknn.cases...``, is given with ``--pyargs``), ``args`` the command
    line of the run the cell came from: its ``--rknn-*`` options are kept, but those
    naming the run's files and its shard. Given the ``cell`` record, the options that choose
    cells are replaced by pins to that one cell (``--rknn-only --rknn-variant ID --rknn-toolkits ...
    --rknn-platforms ... --rknn-quant ...``), so the re-run neither draws variants nor depends
    on the run's selection.
    """
    named = ["--pyargs", target] if target.startswith("pytest_rknn.cases") else [target]
    if cell is None:
        kept = _kept(args, _OUTPUTS + _SHARDING)
        return shlex.join(["pytest", *named, *kept, f"--rknn-matrix={RERUN_MATRIX}"])
    kept = _kept(args, _OUTPUTS + _SHARDING + _SELECTION)
    variant = cell.variant or {}
    if variant.get("form") == "model" and variant.get("path"):
        subject = [f"--rknn-model={variant['path']}"]
    else:
        subject = [f"--rknn-variant={cell.variant_id}"]
    pins = [
        "--rknn-only",
        *subject,
        f"--rknn-toolkits={_toolkit_request(args, cell.toolkit)}",
        f"--rknn-platforms={cell.platform}",
        f"--rknn-quant={cell.quant}",
    ]
    return shlex.join(["pytest", *named, *kept, *pins, f"--rknn-matrix={RERUN_MATRIX}"])

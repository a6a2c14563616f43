"""The HTML dashboard: one self-contained page (inline CSS and script, no network) of a matrix.

The page (``templates/dashboard.html.j2``, with ``dashboard.css`` and ``dashboard.js`` inlined)
shows a "what changed" strip, pass/ran per platform × toolkit × quant (colour and a symbol),
the grid of cells grouped by form and family under platform › toolkit › quant headers (sorted
and filtered in the page), a panel per cell on click, the signatures linked to their cells, a
toolkit diff, a chart of pass/fail against sequence length and head dim per chip and, given
earlier runs, the history. Its data is :func:`~pytest_rknn.views.dashdata.payload`, embedded as
JSON that cannot close its script element; jinja2 escapes the rest.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from itertools import groupby
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from pytest_rknn.results.journal import atomic_write_text
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.views.dashdata import legend, overview, payload
from pytest_rknn.views.tally import top_signatures

TITLE = "rknn-toolkit2 compatibility matrix"
_FACTS = ("pytest_rknn", "started", "finished", "seed", "profile", "command")


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("pytest_rknn.views", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=2)
def _asset(name: str) -> str:
    return resources.files("pytest_rknn.views").joinpath("templates", name).read_text("utf-8")


def script_json(data: Any) -> Markup:
    """``data`` as JSON that is safe inside ``<script>``: no ``<``, ``>``, ``&`` or line
    separators survive literally, so no string can end the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return Markup(text)


def render(
    matrix: Matrix,
    title: str = TITLE,
    previous: Matrix | None = None,
    history: Sequence[Any] | None = None,
) -> str:
    """The page for ``matrix``; ``previous`` (the run before) fills the "what changed" strip,
    ``history`` (:class:`~pytest_rknn.results.history.Run` s, oldest first) the history."""
    data = payload(matrix, previous=previous, history=history)
    table = overview(matrix)
    spans = [(t, len(list(g))) for t, g in groupby(c["toolkit"] for c in table["columns"])]
    meta = matrix.meta
    facts = [(k, meta[k]) for k in _FACTS if meta.get(k) not in (None, "")]
    host = meta.get("host")
    if isinstance(host, dict) and host.get("name"):
        facts.insert(3, ("host", host["name"]))
    totals = Counter(c.status.value for c in matrix.cells)
    return (
        _environment()
        .get_template("dashboard.html.j2")
        .render(
            title=title,
            css=Markup(_asset("dashboard.css")),
            js=Markup(_asset("dashboard.js")),
            data=script_json(data),
            statuses=legend(),
            totals=totals,
            count=len(matrix),
            facts=facts,
            overview=table,
            toolkit_spans=spans,
            signatures=top_signatures(matrix, limit=15),
            has_history=bool(history),
            meta=json.dumps(meta, indent=2, default=str, ensure_ascii=False),
        )
    )


def write_dashboard(
    matrix: Matrix,
    path: Path,
    previous: Matrix | None = None,
    history: Sequence[Any] | None = None,
) -> Path:
    """Write the page atomically: an earlier page survives a failed write."""
    path = Path(path)
    atomic_write_text(path, render(matrix, previous=previous, history=history))
    return path

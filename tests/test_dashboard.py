"""The HTML dashboard renders a merged matrix: grid, counts, signatures, escaped text."""

from __future__ import annotations

import html
import re

from test_matrix import VARIANTS, make_cell, run_matrix, vid

from pytest_rknn.results.compare import merge
from pytest_rknn.views.dashboard import render


def test_dashboard_shows_every_cell_with_its_status_and_signature() -> None:
    merged = merge(
        [
            run_matrix("2.2.0", "2026-11-25T06:55:00+00:00", "2026-11-25T07:20:00+00:00"),
            run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00"),
        ]
    )
    page = render(merged)
    cells = re.findall(r'<td class="c ([a-z-]+)" title="([^"]*)"', page)
    assert len(cells) == len(merged.cells)
    assert sorted(s for s, _ in cells) == sorted(c.status for c in merged.cells)
    crash = next(c for c in merged.cells if c.status == "crash")
    assert crash.signature and html.escape(crash.signature, quote=True) in page
    for toolkit in ("2.2.0", "2.3.2"):
        assert f"rk3588 {toolkit} fp16" in page
    assert "<th>2.2.0</th>" in page and "<th>2.3.2</th>" in page


def test_dashboard_escapes_log_text() -> None:
    merged = merge([run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00")])
    evil = make_cell(VARIANTS[0], "rk3576", "2.3.2", "convert-fail", log='<script>"x"</script>')
    merged.add(evil)
    page = render(merged)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert vid(VARIANTS[0]) in page

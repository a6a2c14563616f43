"""Placement on the dashboard, in a real browser (the fixtures of ``test_dashboard_browser``):
the placement filter and overlay, the cell panel's layer table with CPU rows highlighted and
its memory, the toolkit diff's placement line and the chip comparison.

The cells carry placements read from the real logs in ``tests/data/placement``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_dashboard_browser import browser, open_page, shots  # noqa: F401 - fixtures
from test_placement_views import matrix, placed

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.views.dashboard import write_dashboard


def two_toolkits() -> Matrix:
    both = Matrix(meta={"started": "2026-12-08T01:00:00+00:00"})
    for cell in (*matrix("2.3.2").cells, *matrix("2.5.0", rk3588="2.5.0").cells):
        both.add(cell)
    odd = both.cells[-1]
    odd.placement = {"error": "the log was cut inside the layer table"}
    return both


def test_filter_overlay_and_layer_table(browser: Any, tmp_path: Path, shots: Path) -> None:  # noqa: F811
    m = two_toolkits()
    page, errors, remote = open_page(browser, write_dashboard(m, tmp_path / "dash.html"))
    on_cpu = [i for i, c in enumerate(m.cells) if c.platform == "rk3566"]
    page.select_option("#f-placement", label="attention on the CPU")
    shown = page.locator("#grid td.c:not(.dim)")
    assert (
        sorted(int(i) for i in shown.evaluate_all("(xs) => xs.map((x) => x.dataset.i)")) == on_cpu
    )
    page.select_option("#f-placement", label="no layer table")
    assert page.locator("#grid td.c:not(.dim)").count() == 1
    page.click("#f-reset")
    page.check("#f-overlay")
    assert page.locator("#grid td.c.pl2").count() == len(on_cpu)
    assert page.locator("#grid td.c.pl0").count() == 3  # rk3588 cells whose tables were read

    small = on_cpu[0]
    page.click(f'#grid td.c[data-i="{small}"]')
    assert "attention on the CPU" in page.inner_text("#placement-summary")
    cpu_rows = page.locator("#layer-table tbody tr.cpu").all_inner_texts()
    assert any("exSoftmax13" in row for row in cpu_rows)
    assert len(cpu_rows) == m.cells[small].placement["cpu_ops"]
    memory = m.cells[small].placement["memory"]["internal_bytes"] / 1024
    assert f"{memory:.1f} KiB" in page.inner_text("#panel-body")
    page.screenshot(path=str(shots / "dashboard-placement.png"), full_page=True)
    page.keyboard.press("Escape")
    page.click(f'#grid td.c[data-i="{len(m.cells) - 1}"]')
    assert "cut inside the layer table" in page.inner_text("#placement-error")
    page.keyboard.press("Escape")

    heads = page.locator(".placement-head").all_inner_texts()
    assert any("attention left the NPU in 0 cells" in h for h in heads)
    chips = page.inner_text("#chips-out")
    assert "rk3566 vs rk3588: attention on the CPU in 2 of 2 vs 0 of 2" in chips
    assert errors == [] and remote == []


def test_the_panel_says_when_a_cell_has_no_attention_on_the_cpu(
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    m = Matrix(meta={})
    for cell in matrix().cells:
        if cell.platform == "rk3588":
            m.add(cell)
    m.cells[0].placement = placed("2.3.2", "rk3588")
    page, errors, _ = open_page(browser, write_dashboard(m, tmp_path / "dash.html"))
    page.click('#grid td.c[data-i="0"]')
    assert "attention fully on the NPU" in page.inner_text("#placement-summary")
    assert page.locator("#layer-table tbody tr.cpu").count() == 0
    assert "exSDPAttention" in page.inner_text("#placement-summary")
    assert errors == []

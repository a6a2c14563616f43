"""What the views say of dynamic-shape cells: "serves seq 16, 32" per model and target in the
terminal and Markdown summaries, each listed shape with its verdict and memory in the
dashboard's cell panel, and the length chart. ``matrix-hf-2.3.2.json`` is a real run's matrix
(``bench/dynamic_lengths.py``: four text families with a free seq, 2.3.2, rk3588, 2026-12-08);
one of its cells is given a failing length here to show how a failure reads."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.views.dashboard import write_dashboard
from pytest_rknn.views.markdown import to_markdown
from pytest_rknn.views.text import summary_text

REAL = Path(__file__).parent / "data" / "dims" / "matrix-hf-2.3.2.json"


def with_a_failing_length() -> Matrix:
    matrix = Matrix.load(REAL)
    cell = next(c for c in matrix.cells if "gpt2" in c.variant_id)
    cell.shapes = copy.deepcopy(cell.shapes)
    cell.shapes[1].update(status="runtime-fail", reason="refused at inference: ValueError: x")
    return matrix


def test_the_summaries_say_which_lengths_each_model_serves() -> None:
    matrix = with_a_failing_length()
    text = summary_text(matrix)
    assert "served lengths (--rknn-dims):" in text
    assert "  bert_eager_dyn rk3588 2.3.2 fp16: serves seq 16, 32; unlisted seq 24: refused" in text
    assert (
        "  gpt2_eager_dyn rk3588 2.3.2 fp16: serves seq 16; fails seq 32 (runtime-fail); "
        "unlisted seq 24: refused"
    ) in text
    markdown = to_markdown(matrix)
    assert "## Served lengths (--rknn-dims)" in markdown
    assert (
        "| `llama_eager_dyn` | fp16 | rk3588 | 2.3.2 | serves seq 16, 32; unlisted seq 24: "
        "refused |" in markdown
    )


def test_a_matrix_without_dynamic_cells_says_nothing_of_lengths() -> None:
    matrix = Matrix.load(REAL)
    for cell in matrix.cells:
        cell.shapes = None
        cell.unlisted_shape = None
    assert "served lengths" not in summary_text(matrix)
    assert "Served lengths" not in to_markdown(matrix)


def test_the_panel_lists_each_shape_and_the_chart_plots_each_length(tmp_path: Path) -> None:
    from test_dashboard_browser import CHROMIUM, open_page

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    matrix = with_a_failing_length()
    path = write_dashboard(matrix, tmp_path / "dash.html")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page, errors, remote = open_page(browser, path)
        gpt2 = next(i for i, c in enumerate(matrix.cells) if "gpt2" in c.variant_id)
        page.click(f'#grid td.c[data-i="{gpt2}"]')
        body = page.inner_text("#panel-body")
        assert "listed shapes (--rknn-dims)" in body
        rows = page.locator("#panel-body table:has(th:text('internal memory')) tbody tr")
        assert rows.count() == 2
        assert "seq 16" in rows.nth(0).inner_text() and "KB" in rows.nth(0).inner_text()
        assert "runtime-fail" in rows.nth(1).inner_text()
        assert "unlisted seq 24: refused" in body
        page.keyboard.press("Escape")
        assert page.locator("#lengths-chart svg").count() == 1
        assert page.locator("#lengths-chart svg g.pt").count() == 8, "4 models x 2 lengths"
        assert page.locator("#lengths-chart svg g.pt path").count() == 1, "one failing length"
        assert errors == [] and remote == []
        browser.close()

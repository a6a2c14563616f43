"""The dashboard in a real browser: Playwright driving Debian's chromium (``/usr/bin/chromium``,
or ``$PYTEST_RKNN_CHROMIUM``). Without it these tests fail with the fix; they never skip.

They load the page from disk, check it runs without a console error and without the network,
filter, search and sort the grid, open a cell's panel and read its re-run command, follow a
signature to its cells, switch the toolkit diff, and load a 3,000-cell page in under 5 s.
Screenshots go to ``$PYTEST_RKNN_SHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from matrix_support import VARIANTS, make_cell
from test_dashboard import EVIL, merged

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.views.dashboard import write_dashboard

CHROMIUM = os.environ.get("PYTEST_RKNN_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no chromium at {CHROMIUM}: apt-get install -y chromium (as .ci/run does), or set "
            "PYTEST_RKNN_CHROMIUM to a Chromium executable"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PYTEST_RKNN_SHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """The page loaded from disk, its console errors, and any request that is not a file."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    remote: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith("file:") else None)
    page.goto(path.as_uri())
    page.wait_for_selector("#grid td.c")
    return page, errors, remote


def _matrix() -> Matrix:
    matrix = merged()
    evil = make_cell(VARIANTS[0], "rk3576", "2.3.2", "convert-fail", log=EVIL, error=EVIL)
    evil.signature = EVIL
    matrix.add(evil)
    crash = next(c for c in matrix.cells if c.status.value == "crash")
    crash.extra["fixes"] = [{"fix": "optimization_level=0", "status": "pass"}]
    matrix.meta["cell_test"] = "cases/test_matrix.py::test_cell"
    return matrix


def test_filter_open_a_cell_and_read_its_rerun_command(browser: Any, tmp_path: Path, shots: Path):
    matrix = _matrix()
    path = write_dashboard(matrix, tmp_path / "dash.html")
    page, errors, remote = open_page(browser, path)
    assert page.locator("#grid td.c").count() == len(matrix)
    assert page.evaluate("window.__pwned === undefined") and page.locator("img").count() == 0

    page.select_option("#f-platform", "rk3588")
    page.select_option("#f-toolkit", "2.2.0")
    assert page.locator("#grid td.c").count() == 4, "one column: rk3588 / 2.2.0 / fp16"
    page.uncheck("#f-status input[value=pass]")
    assert page.locator("#grid td.c:not(.dim)").count() == 2
    page.click("#f-reset")
    page.fill("#f-search", "mha-block")
    assert (
        page.locator("#grid tbody td.id").all_inner_texts()
        == [c.variant_id for c in matrix.cells if c.variant.get("form") == "mha-block"][:1]
    )
    page.click("#f-reset")

    crash = next(c for c in matrix.cells if c.status.value == "crash")
    index = matrix.cells.index(crash)
    page.click(f'#grid td.c[data-i="{index}"]')
    panel = page.locator("#panel")
    assert panel.is_visible()
    assert page.inner_text("#panel-status").endswith("crash")
    assert crash.signature in page.inner_text("#panel-body")
    assert "optimization_level=0" in page.inner_text("#panel-body")
    rerun = page.inner_text("#rerun")
    assert rerun.startswith(f"pytest 'cases/test_matrix.py::test_cell[{crash.id}]' --rknn-only")
    assert rerun.endswith("--rknn-matrix=rknn-rerun.json")
    page.screenshot(path=str(shots / "dashboard-panel.png"), full_page=True)
    page.click("#copy-rerun")
    page.wait_for_function("document.getElementById('copy-rerun').textContent !== 'copy'")
    page.keyboard.press("Escape")
    assert not panel.is_visible()

    page.click(".sig-link >> nth=0")
    shown = page.locator("#grid td.c:not(.dim)").count()
    assert shown == int(page.inner_text(".sigs tbody tr >> nth=0 >> td.num"))

    page.click("#f-reset")
    evil = next(c for c in matrix.cells if c.platform == "rk3576")
    page.click(f'#grid td.c[data-i="{matrix.cells.index(evil)}"]')
    assert EVIL in page.inner_text("#panel-body"), "shown as text, not markup"

    page.select_option("#d-a", "2.3.2")
    page.select_option("#d-b", "2.2.0")
    heads = page.locator(".diff-head").all_inner_texts()
    assert "2.3.2 → 2.2.0 on rk3588: 0 fixed, 1 regressed, 3 unchanged" in heads
    assert page.locator("#chart svg").count() == 3
    assert errors == [] and remote == []


def synthetic(cells: int) -> Matrix:
    """``cells`` cells over 12 targets, a third of them failing with a log."""
    base = make_cell(VARIANTS[0], "rk3588", "2.3.2", "pass").to_dict()
    log = "E RKNN: failed to config argb mode layer!\n" * 30
    targets = [
        (p, t) for p in ("rk3566", "rk3588", "rk3576") for t in ("2.2.0", "2.3.0", "2.3.2", "2.5.0")
    ]
    matrix = Matrix(meta={"started": "2026-11-25T07:00:00+00:00"})
    for i in range(cells):
        platform, toolkit = targets[i % len(targets)]
        variant = i // len(targets)
        spec = {**VARIANTS[0], "kv_len": 2 ** (variant % 9), "head_dim": 2 ** (3 + variant % 5)}
        failing = (variant + i) % 3 == 0
        record = {
            **base,
            "variant_id": f"manual-v{variant}",
            "variant": spec,
            "platform": platform,
            "toolkit": toolkit,
            "status": "convert-fail" if failing else "pass",
            "signature": f"signature {variant % 7}" if failing else None,
            "log_excerpt": log if failing else None,
            "metrics": {} if failing else base["metrics"],
        }
        matrix.add(CellRecord.from_dict(record), validated=True)
    return matrix


def test_three_thousand_cells_load_and_filter_quickly(browser: Any, tmp_path: Path, shots: Path):
    path = write_dashboard(synthetic(3000), tmp_path / "big.html")
    started = time.perf_counter()
    page, errors, _ = open_page(browser, path)
    loaded = time.perf_counter() - started
    assert page.locator("#grid td.c").count() == 3000
    assert loaded < 5, f"{loaded:.1f} s to load 3,000 cells"
    started = time.perf_counter()
    page.fill("#f-search", "manual-v2")
    page.wait_for_function("document.querySelectorAll('#grid tbody td.id').length < 250")
    assert time.perf_counter() - started < 2
    page.screenshot(path=str(shots / "dashboard-3000.png"))
    assert errors == []


def test_chart_labels_do_not_overlap_and_some_pass_is_drawn_as_the_legends_half_circle(
    browser: Any, tmp_path: Path
) -> None:
    matrix = synthetic(12 * 24)
    for cell in matrix.cells:  # kv lengths up to 2048: the labels that overlapped (10242048)
        cell.variant["kv_len"] = 2 ** (int(cell.variant_id.removeprefix("manual-v")) % 12)
        cell.variant["head_dim"] = 64  # two variants per point: some pass, some fail
        if int(cell.variant_id.removeprefix("manual-v")) >= 12:
            cell.status, cell.signature = Status.CONVERT_FAIL, "signature 1"
    family = make_cell(VARIANTS[0], "rk3588", "2.3.2", "pass")
    family.variant = {"form": "hf", "family": "bert"}
    family.variant_id = "hf.bert.sdpa"
    matrix.add(family)
    page, errors, _ = open_page(browser, write_dashboard(matrix, tmp_path / "chart.html"))
    page.select_option("#c-toolkit", "2.3.2")
    boxes = page.evaluate(
        """() => Array.from(document.querySelectorAll('#chart svg')).map((svg) =>
             Array.from(svg.querySelectorAll('text[text-anchor=middle]'))
               .filter((t) => !['kv length', 'head dim'].includes(t.textContent))
               .map((t) => {
                 const b = t.getBBox();
                 return [b.x, b.x + b.width, t.textContent];
               }))"""
    )
    assert boxes and all(len(axis) >= 3 for axis in boxes)
    for axis in boxes:
        assert "2k" in [label for _, _, label in axis] or "1k" in [label for _, _, label in axis]
        for (_, right, _), (left, _, _) in zip(axis, axis[1:], strict=False):
            assert right < left, axis
    assert page.locator("#chart g.pt path.half").count() > 0, "some pass: a half-filled circle"
    groups = page.locator("#grid tr.group").all_inner_texts()
    assert any("hf › bert" in g for g in groups) and not any("hf › hf" in g for g in groups)
    assert errors == []

"""The HTML dashboard's page and data, without a browser: every cell, escaping, overview,
signatures, metrics against bounds, logs without harness frames, fixes, diffs, history.
The page in a real browser: test_dashboard_browser.py."""

from __future__ import annotations

import json
import re

from markupsafe import escape
from matrix_support import VARIANTS, make_cell, run_matrix

from pytest_rknn.results.compare import merge
from pytest_rknn.results.history import dated
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.views.dashboard import render
from pytest_rknn.views.dashdata import family, log_parts, payload

EVIL = '</script><script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


def merged() -> Matrix:
    return merge(
        [
            run_matrix("2.2.0", "2026-11-25T06:55:00+00:00", "2026-11-25T07:20:00+00:00"),
            run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00"),
        ]
    )


def page_data(page: str) -> dict:
    text = re.search(r'<script type="application/json" id="rknn-data">(.*?)</script>', page, re.S)
    return json.loads(text.group(1))


def test_the_page_carries_every_cell_and_is_self_contained() -> None:
    matrix = merged()
    page = render(matrix)
    data = page_data(page)
    assert len(data["cells"]) == len(matrix) == len(data["details"])
    names = [s["name"] for s in data["statuses"]]
    shown = sorted(names[c[2]] for c in data["cells"])
    assert shown == sorted(c.status.value for c in matrix.cells)
    assert [tuple(t) for t in data["targets"]] == [
        (p, t, "fp16") for p in ("rk3566", "rk3588") for t in ("2.2.0", "2.3.2")
    ]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no network"
    assert "<link" not in page and "@import" not in page
    assert '<th scope="row">rk3588</th>' in page and '<th colspan="1">2.3.2</th>' in page
    assert 'aria-hidden="true">●</span> 4/4' in page, "a symbol besides the colour"
    assert 'aria-hidden="true">◐</span> 2/4' in page


def test_everything_from_the_matrix_is_escaped() -> None:
    matrix = merged()
    matrix.add(make_cell(VARIANTS[0], "rk3576", "2.3.2", "convert-fail", log=EVIL, error=EVIL))
    cell = next(c for c in matrix.cells if c.platform == "rk3576")
    cell.signature = EVIL
    matrix.meta["command"] = EVIL
    page = render(matrix)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("</script>") == 2, "only the page's own two script elements end"
    assert str(escape(EVIL)) in page, "the signatures table and the facts show it escaped"
    data = page_data(page)
    detail = next(d for d in data["details"] if d["signature"] == EVIL)
    assert data["strings"][detail["reason"]] == EVIL, "the JSON holds the text exactly"
    assert EVIL in data["signatures"]


def test_metrics_are_shown_against_their_bounds() -> None:
    matrix = merged()
    data = payload(matrix)
    index = next(i for i, c in enumerate(matrix.cells) if c.status is Status.TOLERANCE_FAIL)
    rows = {r["metric"]: r for r in data["details"][index]["metrics"]}
    assert rows["rel_l2"]["op"] == "<=" and rows["rel_l2"]["bound"] == 5e-3
    assert rows["rel_l2"]["held"] is False
    assert rows["max_abs"]["bound"] is None and rows["max_abs"]["held"] is None
    assert rows["cosine"]["op"] == ">=" and rows["cosine"]["bound"] == 0.9999
    passing = next(i for i, c in enumerate(matrix.cells) if c.status is Status.PASS)
    assert all(r["held"] is not False for r in data["details"][passing]["metrics"])


def test_the_log_loses_the_harness_frames_and_keeps_head_and_tail() -> None:
    harness = (
        "Traceback (most recent call last):\n"
        '  File "/x/pytest_rknn/toolkit/remote.py", line 10, in run\n'
        "    result = job()\n"
        '  File "/env/rknn/api/rknn.py", line 5, in build\n'
        "    raise IndexError('x')\n"
        "IndexError: x"
    )
    head, tail = log_parts(harness)
    assert "pytest_rknn" not in head and "rknn/api/rknn.py" in head and tail == ""
    long = "\n".join(f"line {i}" for i in range(500))
    head, tail = log_parts(long)
    assert head.startswith("line 0") and tail.endswith("line 499") and "line 250" not in head + tail


def test_fixes_and_the_rerun_command_reach_the_panel() -> None:
    matrix = merged()
    cell = next(c for c in matrix.cells if c.status is Status.CRASH)
    cell.extra["fixes"] = [{"fix": "optimization_level=0", "status": "pass", "metrics": {}}]
    matrix.meta["cell_test"] = "cases/test_matrix.py::test_cell"
    matrix.meta["args"] = ["cases/", "--rknn-toolkits", "2.2.0", "--rknn-timeout", "60"]
    data = payload(matrix)
    index = matrix.cells.index(cell)
    assert data["details"][index]["fixes"][0]["fix"] == "optimization_level=0"
    rerun = data["details"][index]["rerun"]
    assert rerun.startswith(
        f"pytest 'cases/test_matrix.py::test_cell[{cell.id}]' --rknn-timeout 60"
    )
    assert "--rknn-toolkits=2.2.0" in rerun and rerun.endswith("--rknn-matrix=rknn-rerun.json")


def test_warnings_error_origins_and_fp16_layers_reach_the_panel() -> None:
    matrix = merged()
    failing = next(c for c in matrix.cells if c.status is Status.TOLERANCE_FAIL)
    failing.error_origin = {
        "layer": "/Softmax_output_0",
        "op": "exSoftmax13",
        "cosine": 0.52,
        "input_cosine": 0.9997,
    }
    failing.fp16_layers = [{"name": "/MatMul_output_0", "op": "exMatMul"}]
    passing = next(c for c in matrix.cells if c.status is Status.PASS)
    passing.warning = "silent: KeyError in quant.run: '<path>'"
    details = payload(matrix)["details"]
    notes = dict(details[matrix.cells.index(failing)]["notes"])
    assert notes["where the error starts"] == (
        "exSoftmax13 /Softmax_output_0 (cosine 0.52; its inputs 0.9997)"
    )
    assert notes["kept in float16 (1 layers)"] == "exMatMul /MatMul_output_0"
    (warning,) = details[matrix.cells.index(passing)]["notes"]
    assert warning[1] == passing.warning


def test_toolkit_diffs_what_changed_and_history() -> None:
    matrix = merged()
    earlier = run_matrix("2.3.2", "2026-11-20T07:00:00+00:00", "2026-11-20T07:10:00+00:00")
    history = [dated(earlier, "a.json"), dated(matrix, "b.json")]
    data = payload(matrix, previous=earlier, history=history)
    pair = next(d for d in data["diffs"] if (d["a"], d["b"]) == ("2.2.0", "2.3.2"))
    by_label = {r["label"]: r for r in pair["reports"]}
    assert by_label["2.2.0 → 2.3.2 on rk3588"]["counts"]["fixed"] == 1
    assert data["changed"]["toolkit"] == {"a": "2.2.0", "b": "2.3.2"}
    assert data["changed"]["previous"]["counts"]["new"] == 8
    assert data["history"]["runs"] == ["2026-11-20 07:00", "2026-11-25 06:55"]
    assert 'id="history"' in render(matrix, previous=earlier, history=history)


def test_family_by_kv_heads() -> None:
    assert family({"form": "manual", "num_heads": 8, "num_kv_heads": 8}) == "MHA"
    assert family({"form": "manual", "num_heads": 8, "num_kv_heads": 2}) == "GQA"
    assert family({"form": "manual", "num_heads": 8, "num_kv_heads": 1}) == "MQA"
    assert family({"form": "model", "path": "m.onnx"}) == "model"

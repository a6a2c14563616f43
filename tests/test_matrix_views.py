"""Tests of what is made of matrices: merge, diff and the text and Markdown views."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matrix_support import VARIANTS, changed, make_cell, run_matrix

from pytest_rknn.results.cell import CellRecord as Cell
from pytest_rknn.results.compare import diff, merge
from pytest_rknn.results.matrix import Matrix, MatrixError
from pytest_rknn.verdict.metrics import compute_metrics
from pytest_rknn.views.markdown import to_markdown
from pytest_rknn.views.tally import version_key
from pytest_rknn.views.text import summary_text

# --- merge and diff -----------------------------------------------------------------------------


def test_merge_of_two_per_version_matrices(m232: Matrix, m220: Matrix) -> None:
    merged = merge([m232, m220])
    assert len(merged) == len(m232) + len(m220)
    assert merged.meta["toolkits"] == ["2.3.2", "2.2.0"]
    assert len(merged.meta["toolkit_envs"]) == 2
    assert merged.meta["platforms"] == ["rk3566", "rk3588"]
    assert merged.meta["started"] == "2026-11-25T06:55:00+00:00"
    assert merged.meta["finished"] == "2026-11-25T07:20:00+00:00"
    assert merged.meta["conflicts"] == []
    assert [s["command"] for s in merged.meta["merged_from"]] == [
        "pytest cases/ --rknn-toolkits 2.3.2",
        "pytest cases/ --rknn-toolkits 2.2.0",
    ]
    Matrix.from_dict(json.loads(merged.dumps()))


def test_merge_conflict_keeps_the_later_result_and_records_it(m232: Matrix) -> None:
    rerun = run_matrix("2.3.2", "2026-11-25T08:00:00+00:00", "2026-11-25T08:05:00+00:00")
    flaky = rerun.cells[0]
    rerun.add(
        make_cell(
            flaky.variant, flaky.platform, "2.3.2", "timeout", finished="2026-11-25T08:04:00Z"
        )
    )
    for order in ([m232, rerun], [rerun, m232]):
        merged = merge(order)
        assert len(merged) == len(m232)
        assert merged.get(flaky.key).status == "timeout"
        (conflict,) = merged.meta["conflicts"]
        assert conflict["kept"]["status"] == "timeout"
        assert conflict["dropped"]["status"] == "pass"
        assert conflict["variant_id"] == flaky.variant_id


def test_merge_of_merged_matrices_keeps_history(m232: Matrix, m220: Matrix) -> None:
    m250 = run_matrix("2.5.0", "2026-11-25T07:01:00+00:00", "2026-11-25T07:09:00+00:00")
    twice = merge([merge([m232, m220]), m250])
    assert len(twice.meta["merged_from"]) == 3
    assert twice.meta["toolkits"] == ["2.3.2", "2.2.0", "2.5.0"]


def test_merge_of_shards_has_its_own_toolkit_time_and_no_one_runs_figures(
    m232: Matrix,
) -> None:
    shards = []
    for index, (cells, wall) in enumerate(((m232.cells[:5], 600.0), (m232.cells[5:], 800.0))):
        shard = Matrix(meta={**m232.meta, "command": f"pytest cases/ --rknn-shard {index + 1}/2"})
        for n, cell in enumerate(cells):
            shard.add(replace(cell, timings={**cell.timings, "wall": 1.5 + n}))
        shard.meta.update(
            wall_s=wall, exitstatus=1, complete=index == 0, toolkit_s=shard.toolkit_seconds()
        )
        shards.append(shard)
    merged = merge(shards)
    each = [s.meta["toolkit_s"] for s in shards]
    assert min(each) > 0
    assert merged.meta["toolkit_s"] == pytest.approx(sum(each))
    assert not {"wall_s", "exitstatus", "command"} & set(merged.meta)
    assert merged.meta["complete"] is False
    assert [(s["wall_s"], s["exitstatus"]) for s in merged.meta["merged_from"]] == [
        (600.0, 1),
        (800.0, 1),
    ]
    killed = Matrix(meta={k: v for k, v in shards[0].meta.items() if k != "complete"})
    assert merge([killed, shards[0]]).meta["complete"] is True
    del killed.meta["finished"]
    killed.add(replace(shards[1].cells[0], finished="2026-11-25T09:00:00+00:00"))
    assert merge([killed, shards[0]]).meta["complete"] is False
    assert merge([shards[0], killed]).meta["finished"] == "2026-11-25T09:00:00+00:00"
    killed.meta.update(finished=shards[0].meta["finished"], journal={"path": "m.json.journal"})
    assert merge([killed, shards[0]]).meta["complete"] is False
    alone = merge([shards[0]])
    assert alone.meta["wall_s"] == 600.0
    assert alone.meta["command"] == shards[0].meta["command"]
    assert alone.meta["toolkit_s"] == shards[0].meta["toolkit_s"]


def test_diff_lists_regressions_fixes_and_the_rest(m232: Matrix) -> None:
    passing = [c for c in m232.cells if c.status == "pass"]
    new = changed(m232)
    kinds = {c.kind: c for c in diff(m232, new)}
    assert set(kinds) == {"regression", "fix", "new", "removed"}
    assert kinds["regression"].key == passing[0].key
    assert kinds["fix"].old_status == "tolerance-fail" and kinds["fix"].new_status == "pass"
    assert kinds["removed"].key == passing[1].key
    assert kinds["new"].key[1] == "rk3576"
    assert kinds["regression"].describe().startswith("regression ")
    assert diff(m232, m232) == []


def test_diff_reports_a_different_failure_as_changed(m220: Matrix) -> None:
    crashed = next(c for c in m220.cells if c.status == "crash")
    new = Matrix(meta=m220.meta, cells=m220.cells)
    new.add(make_cell(crashed.variant, crashed.platform, "2.2.0", "oom"))
    (change,) = diff(m220, new)
    assert change.kind == "changed"
    assert change.old_signature == "failed to config argb mode layer"
    assert change.new_signature == "memory cap exceeded"


# --- views --------------------------------------------------------------------------------------


def test_summary_text_shows_the_platform_by_toolkit_table(m232: Matrix, m220: Matrix) -> None:
    text = summary_text(merge([m232, m220]))
    lines = text.splitlines()
    assert lines[0] == "16 cells: 13 pass, 3 fail (crash 1, tolerance-fail 2)"
    header = next(line for line in lines if line.strip().startswith("platform"))
    assert header.split() == ["platform", "2.2.0", "2.3.2"]
    assert next(line for line in lines if line.strip().startswith("rk3566")).split() == [
        "rk3566",
        "4/4",
        "4/4",
    ]
    assert next(line for line in lines if line.strip().startswith("rk3588")).split() == [
        "rk3588",
        "2/4",
        "3/4",
    ]
    signatures = lines[lines.index("most common failure signatures:") + 1 :]
    assert signatures[0].split()[:2] == ["2", "tolerance:"]
    assert "failed to config argb mode layer" in signatures[1]
    assert "[rk3588/2.2.0]" in signatures[1]


def test_summary_separates_quant_modes_and_unsupported(m232: Matrix) -> None:
    m232.add(make_cell(VARIANTS[0], "rv1106", "2.3.2", "unsupported", error="rv1106 needs int8"))
    m232.add(make_cell(VARIANTS[0], "rk3588", "2.3.2", "pass", quant="int8"))
    text = summary_text(m232)
    assert "rk3588 int8" in text and "rv1106 fp16" in text
    assert next(line for line in text.splitlines() if "rv1106" in line).split()[-1] == "unsupported"
    assert "1 unsupported" in text.splitlines()[0]


def test_markdown_report(m232: Matrix, m220: Matrix) -> None:
    text = to_markdown(merge([m232, m220]))
    assert "| platform | 2.2.0 | 2.3.2 |" in text
    assert "| rk3588 | 2/4 | 3/4 |" in text
    assert "## Failure signatures" in text and "`failed to config argb mode layer`" in text
    failing_rows = text.split("## Failing cells")[1].strip().splitlines()[2:]
    assert len(failing_rows) == 3
    for row in (r for r in failing_rows if "| tolerance-fail |" in r):
        cosine, rel_l2 = row.rstrip(" |").rsplit("| ", 1)[1].split(" / ")
        assert 0.0 < float(cosine) < 0.9999 and rel_l2.endswith("%"), row
    assert to_markdown(Matrix()).strip().endswith("No cells.")


def test_versions_sort_numerically() -> None:
    labels = ["2.10.0", "installed", "2.5.0", "2.2.0", "2.3.0b1", "2.3.0"]
    assert sorted(labels, key=version_key) == [
        "2.2.0",
        "2.3.0",
        "2.3.0b1",
        "2.5.0",
        "2.10.0",
        "installed",
    ]


def test_large_matrix_writes_and_loads_in_reasonable_time(tmp_path: Path) -> None:
    template = make_cell(VARIANTS[0], "rk3588", "2.3.2", "pass").to_dict()
    m = Matrix(meta={"started": "2026-11-25T07:00:00+00:00"})
    for i in range(1000):
        m.add(Cell.from_dict({**template, "variant_id": f"manual-q{i}"}))
    started = time.perf_counter()
    m.write(tmp_path / "big.json")
    loaded = Matrix.load(tmp_path / "big.json")
    assert len(loaded) == 1000 and loaded.get(("manual-q999", "rk3588", "2.3.2", "fp16"))
    assert time.perf_counter() - started < 10


def test_a_file_with_nan_literals_is_not_a_matrix(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        '{"schema": "pytest-rknn/matrix", "version": 1, "meta": {"x": NaN}, "cells": []}'
    )
    with pytest.raises(MatrixError, match="holds NaN, which is not JSON"):
        Matrix.load(path)


def test_each_user_model_gets_its_own_line_in_every_summary() -> None:
    from pytest_rknn.views.dashdata import payload

    variant = {"form": "model", "path": "/work/models/my_bert.onnx", "sha256": "ab" * 32}
    y = np.linspace(-1.0, 1.0, 64).reshape(4, 16)
    found = compute_metrics(y, y + np.sin(np.arange(64)).reshape(4, 16) * 0.05).to_dict()
    metrics = {"last_hidden_state": {**found, "index": 0}}
    cells = [
        Cell("model-my_bert-abababab", "rk3588", "2.5.0", "fp16", "pass", variant, metrics=metrics),
        Cell(
            "model-my_bert-abababab",
            "rk3566",
            "2.5.0",
            "fp16",
            "convert-fail",
            variant,
            signature="unsupported op Einsum",
        ),
        Cell("sdpa-x", "rk3588", "2.5.0", "fp16", "pass", {"form": "sdpa"}),
    ]
    matrix = Matrix(meta={"pytest_rknn": "0.1.0"}, cells=cells)
    line = (
        f"my_bert.onnx: 1/2 targets pass; worst cosine {found['cosine']:.5f} "
        "(last_hidden_state, rk3588/2.5.0 fp16); convert-fail 1"
    )
    assert f"your models:\n  {line}" in summary_text(matrix)
    markdown = to_markdown(matrix)
    assert "## Your models" in markdown
    assert f"| `my_bert.onnx` | 1/2 \\(convert-fail 1\\) | {found['cosine']:.5f} |" in markdown
    (model,) = payload(matrix)["models"]
    assert model["line"] == line and model["tone"] == "bad" and model["cells"] == [0, 1]

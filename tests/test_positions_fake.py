"""Mask-aware judging through the whole pipeline on the FAKE toolkit: a user model with a
padded ``attention_mask`` is judged on the rows of real tokens, the left-out rows' metrics are
in the matrix as information, and ``@pytest.mark.rknn(all_positions=True)`` judges them all."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from bert_graphs import bert_like
from fake_support import CELLS, use_fake
from test_calibration_data import sample

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.verdict.judge import output_metrics
from pytest_rknn.views.dashdata import metric_rows, notes_of

EVERY = """
import pytest

@pytest.mark.rknn(all_positions=True)
def test_cell(rknn_cell):
    outcome = rknn_cell.check()
    assert outcome.status == "pass", outcome.message
"""
BASE = (
    "-p",
    "fake_toolkits",
    "--rknn-toolkits=2.5.0",
    "--rknn-platforms=rk3588",
    "--rknn-only",
    "--rknn-model=enc.onnx",
)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    use_fake(monkeypatch)
    onnx.save(bert_like(batch=2, length=8, positions=8, hidden=16), pytester.path / "enc.onnx")
    arrays = sample(0, batch=2, length=8)
    arrays["attention_mask"][1, 5:] = 0
    np.savez(pytester.path / "enc.npz", **arrays)
    return pytester


@pytest.mark.parametrize(("test", "judged"), [(CELLS, True), (EVERY, False)], ids=["kept", "all"])
def test_the_padded_rows_are_left_out_unless_asked(
    suite: pytest.Pytester, test: str, judged: bool
) -> None:
    suite.makepyfile(test_rknn_cells=test)
    suite.runpytest_subprocess(*BASE, "--rknn-matrix=m.json").assert_outcomes(passed=1)
    (cell,) = Matrix.load(suite.path / "m.json").cells
    assert cell.status is Status.PASS
    metrics = output_metrics(cell.metrics, 0)
    assert metrics["index"] == 0
    if judged:
        assert metrics["judged"] == "the 13 of 16 positions attention_mask keeps (output axis 1)"
        assert metrics["left_out"]["cosine"] == pytest.approx(1.0)
        panel = dict(notes_of(cell))
        assert panel["positions judged"].startswith(f"y: {metrics['judged']}; the rest")
        assert panel["bounds"] == "fp16 emulation x 4"
        assert "left_out" not in {row["metric"] for row in metric_rows(cell)}
    else:
        assert "judged" not in metrics and "left_out" not in metrics
        assert metrics["note"] == "every position judged, as asked"

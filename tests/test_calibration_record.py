"""The calibration on record: each quantized cell's ``calibration`` field (source, file,
samples, masked_samples, digest), in the matrix, the dashboard's cell panel and JUnit; a failing
cell whose test input masks positions that no calibration sample masked says so in its reason.

The pipeline, workers, cache and matrix are the real ones; only the toolkit is the FAKE one
(its outputs are onnxruntime's, so a conftest scales the reference to make the cells fail).
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import onnx
import pytest
from bert_graphs import bert_like
from fake_support import CELLS, use_fake
from test_calibration_data import sample, stacked

from pytest_rknn.pipeline.calibration import make_calibration, never_masked, record_of
from pytest_rknn.pipeline.user_models import UserModel
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.views.dashdata import notes_of

OFF = """
from pytest_rknn.pipeline.user_models import UserModel

right = UserModel.reference


def off(self, model, inputs):
    return [r * 1.5 for r in right(self, model, inputs)]


UserModel.reference = off
"""
BASE = (
    "-p",
    "fake_toolkits",
    "--rknn-toolkits=2.5.0",
    "--rknn-platforms=rk3588",
    "--rknn-only",
    "--rknn-model=enc.onnx",
    "--rknn-quant=int8",
    "--rknn-calibration=3",
)


def test_the_record_counts_the_masked_samples_and_finds_the_trap(tmp_path: Path) -> None:
    path = tmp_path / "enc.onnx"
    onnx.save(bert_like(batch=1, length=8, positions=8), path)
    np.savez(tmp_path / "enc.npz", **sample(0, batch=1, length=8, padded=2))
    user = UserModel.load(path, inputs_file=True)
    names = [d.name for d in user.declared]
    test = user.inputs(0)
    generated = make_calibration(user, 0, 6, names, test, tmp_path / "g")
    record = record_of(generated, user, test)
    assert record["source"] == "generated" and record["file"] is None
    assert record["samples"] == 6 and record["masked_samples"] == 4
    assert record["note"] is None, "samples padded by a quarter mask the test's 2 of 8"
    np.savez(tmp_path / "enc.calib.npz", **stacked([sample(i, batch=1, length=8) for i in (1, 2)]))
    ones = UserModel.load(path, inputs_file=True)
    calibration = make_calibration(ones, 0, 6, names, test, tmp_path / "u")
    record = record_of(calibration, ones, test)
    assert record["source"] == "user" and record["file"] == "enc.calib.npz"
    assert record["samples"] == 2 and record["masked_samples"] == 0
    assert record["note"] == (
        "the test input masks positions of attention_mask that no calibration sample masked"
    )
    assert len(record["digest"]) == 64
    unpadded = {**test, "attention_mask": np.ones_like(test["attention_mask"])}
    assert never_masked(calibration, ones, unpadded) == [], "nothing masked, no trap"


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    use_fake(monkeypatch)
    onnx.save(bert_like(batch=1, length=8, positions=8), pytester.path / "enc.onnx")
    np.savez(pytester.path / "enc.npz", **sample(0, batch=1, length=8, padded=2))
    return pytester


def test_a_failing_cell_calibrated_without_masks_says_so(suite: pytest.Pytester) -> None:
    np.savez(
        suite.path / "enc.calib.npz", **stacked([sample(i, batch=1, length=8) for i in (1, 2)])
    )
    suite.makepyfile(test_rknn_cells=CELLS)
    suite.makeconftest(OFF)
    result = suite.runpytest_subprocess(*BASE, "--rknn-matrix=m.json", "--junitxml=j.xml")
    result.assert_outcomes(failed=1)
    (cell,) = Matrix.load(suite.path / "m.json").cells
    assert cell.status is Status.TOLERANCE_FAIL
    assert cell.calibration["source"] == "user" and cell.calibration["masked_samples"] == 0
    assert "no calibration sample masked (calibration: 2 user samples)" in cell.reason
    result.stdout.fnmatch_lines(["*the quantized mask path may clip the padding away*"])
    panel = dict(notes_of(cell))
    assert panel["calibration"].startswith("2 user samples from enc.calib.npz, 0 with masked")
    junit = ElementTree.parse(suite.path / "j.xml").getroot()
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props["rknn.calibration"] == panel["calibration"]


def test_generated_padded_calibration_leaves_no_such_word(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_rknn_cells=CELLS)
    suite.makeconftest(OFF)
    result = suite.runpytest_subprocess(*BASE, "--rknn-matrix=m.json")
    result.assert_outcomes(failed=1)
    (cell,) = Matrix.load(suite.path / "m.json").cells
    assert cell.calibration["source"] == "generated" and cell.calibration["samples"] == 3
    assert cell.calibration["masked_samples"] == 2 and cell.calibration["note"] is None
    assert "calibration sample" not in cell.reason

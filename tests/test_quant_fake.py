"""Quantized cells through the whole pipeline in seconds, on the FAKE toolkit.

The FAKE ``rknn`` (tests/fake_toolkit) checks a calibration dataset as the real toolkit reads
it, writes the hybrid flow's files as the real one does and rejects a float16 name that is not
a tensor, and writes an ``error_analysis.txt`` in the real layout. Only the toolkit is fake: the
calibration sets, the workers, the protocol, the cache and the matrix are the real ones. The
same modes with the real toolkits are in test_quant_toolkit.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_support import use_fake

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status

CELLS = """
import pytest

def test_cell(rknn_cell):
    outcome = rknn_cell.check()
    assert outcome.status == "pass", outcome.message
"""
TIGHT = """
import pytest

@pytest.mark.rknn(max_rel_l2=1e-15, min_cosine=None, max_abs=None, mean_abs=None)
def test_cell(rknn_cell):
    outcome = rknn_cell.check()
    assert outcome.status == "pass", outcome.message
"""
BASE = (
    "-p",
    "fake_toolkits",
    "--rknn-toolkits=2.5.0",
    "--rknn-platforms=rk3588",
    "--rknn-no-curated",
    "--rknn-examples=0",
    "--rknn-variant=manual-b1-h2kv2-q4kv4-d8-causal-f32-bshd",
)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    use_fake(monkeypatch)
    monkeypatch.delenv("FAKE_RKNN_ANALYSIS", raising=False)
    return pytester


def cells(suite: pytest.Pytester, name: str) -> dict[str, object]:
    return {cell.quant: cell for cell in Matrix.load(suite.path / name).cells}


def test_quantized_cells_calibrate_on_n_samples_and_hybrid_names_its_fp16_layers(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(test_rknn_cells=CELLS)
    quant = "--rknn-quant=fp16,int8,int8-kl,hybrid"
    run = suite.runpytest_subprocess(*BASE, quant, "--rknn-calibration=3", "--rknn-matrix=a.json")
    run.assert_outcomes(passed=4)
    found = cells(suite, "a.json")
    assert found["fp16"].fp16_layers is None and found["int8"].fp16_layers is None
    for mode in ("int8", "int8-kl", "hybrid"):
        job = Path(found[mode].artifact).parent
        lines = json.loads((job / "FAKE-dataset.json").read_text())
        assert len(lines) == 3 and all(len(line) == 3 for line in lines)
        test_input = (job / "input0.npy").read_bytes()
        assert all((job / line[0]).read_bytes() != test_input for line in lines)
    assert not (Path(found["fp16"].artifact).parent / "FAKE-dataset.json").exists()
    hybrid = found["hybrid"]
    ops = [layer["op"] for layer in hybrid.fp16_layers]
    assert ops.count("MatMul") == 2 and "Softmax" in ops and "Add" in ops
    kept = json.loads((Path(hybrid.artifact).parent / "FAKE-hybrid.json").read_text())
    assert len(kept) >= len(ops)
    data = json.loads((suite.path / "a.json").read_text())
    by_quant = {c["quant"]: c for c in data["cells"]}
    assert "fp16_layers" not in by_quant["int8"] and by_quant["hybrid"]["fp16_layers"]

    warm = suite.runpytest_subprocess(*BASE, quant, "--rknn-calibration=3", "--rknn-matrix=b.json")
    warm.assert_outcomes(passed=4)
    again = cells(suite, "b.json")
    assert all(cell.cached for cell in again.values())
    assert again["hybrid"].fp16_layers == hybrid.fp16_layers
    more = suite.runpytest_subprocess(*BASE, quant, "--rknn-calibration=4", "--rknn-matrix=c.json")
    more.assert_outcomes(passed=4)
    changed = cells(suite, "c.json")
    assert changed["fp16"].cached
    assert not any(changed[m].cached for m in ("int8", "int8-kl", "hybrid"))


def test_a_tolerance_failure_says_where_its_error_starts(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_rknn_cells=TIGHT)
    result = suite.runpytest_subprocess(*BASE, "--rknn-quant=int8", "--rknn-matrix=t.json")
    result.assert_outcomes(failed=1)
    cell = cells(suite, "t.json")["int8"]
    assert cell.status is Status.TOLERANCE_FAIL
    origin = cell.error_origin
    assert origin["op"] == "Softmax" and origin["cosine"] == pytest.approx(0.5)
    assert origin["input_cosine"] == pytest.approx(0.99999)
    result.stdout.fnmatch_lines(["*the error starts in Softmax * (cosine 0.50000*"])
    warm = suite.runpytest_subprocess(*BASE, "--rknn-quant=int8", "--rknn-matrix=w.json")
    warm.assert_outcomes(failed=1)
    assert cells(suite, "w.json")["int8"].error_origin == origin


@pytest.mark.parametrize(("how", "said"), [("fail", "failed"), ("hang", "timeout")])
def test_an_analysis_that_fails_leaves_the_tolerance_failure_as_it_is(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, said: str
) -> None:
    suite.makepyfile(test_rknn_cells=TIGHT)
    monkeypatch.setenv("FAKE_RKNN_ANALYSIS", how)
    result = suite.runpytest_subprocess(
        *BASE, "--rknn-quant=fp16", "--rknn-timeout=4", "--rknn-matrix=f.json"
    )
    result.assert_outcomes(failed=1)
    cell = cells(suite, "f.json")["fp16"]
    assert cell.status is Status.TOLERANCE_FAIL and cell.signature.startswith("tolerance")
    assert said in cell.error_origin["error"] and set(cell.error_origin) == {"error"}
    result.stdout.fnmatch_lines(["*where the error starts: unknown (accuracy_analysis*"])

"""``--rknn-dims`` through the whole plugin on the FAKE toolkit (only the toolkit is fake).

One cell per model and build mode, its id carrying the dims (``-k``-safe); its one job lists
every shape in ``dynamic_input``, is simulated at each and at one unlisted shape; the cell passes
only when every shape passes and its reason names a shape that did not; a quantized cell
calibrates at its largest shape; a dim no model has is a one-line usage error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from bert_graphs import BERT_INPUTS, bert_like
from fake_support import SELECTION, collected, fake_suite

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.verdict.judge import output_metrics

ARGS = (
    *SELECTION,
    "--rknn-examples=0",
    "--rknn-toolkits=2.3.2",
    "--rknn-platforms=rk3588",
    "--rknn-only",
    "--rknn-model=gen.onnx",
    "--rknn-dims=seq=4|8",
)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    found = fake_suite(pytester, monkeypatch)
    onnx.save(bert_like(batch="batch", length="seq"), found.path / "gen.onnx")
    return found


def only_cell(suite: pytest.Pytester, name: str = "m.json", quant: str = "fp16"):
    (cell,) = [c for c in Matrix.load(suite.path / name).cells if c.quant == quant]
    return cell


def test_one_job_lists_every_shape_and_each_is_judged(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess(*ARGS, "--rknn-quant=fp16", "--rknn-matrix=m.json")
    result.assert_outcomes(passed=1)
    cell = only_cell(suite)
    assert cell.variant_id.endswith("-dyn-seq4_8") and cell.variant["dims"] == {"seq": [4, 8]}
    assert cell.status is Status.PASS and cell.reason == "serves seq 4, 8"
    assert [(s["dims"], s["status"]) for s in cell.shapes] == [
        ({"seq": 4}, "pass"),
        ({"seq": 8}, "pass"),
    ]
    assert cell.shapes[1]["inputs"] == {name: [1, 8] for name in BERT_INPUTS}
    assert output_metrics(cell.shapes[0]["metrics"], 0)["shape"][1] == 4
    assert output_metrics(cell.metrics, 0)["shape"][1] == 8, (
        "the cell's own metrics: its largest shape"
    )
    assert cell.unlisted_shape["dims"] == {"seq": 6}
    assert cell.unlisted_shape["answer"] == "refused"
    assert "[1, 6] is not in" in cell.unlisted_shape["message"]
    identity = json.loads((Path(cell.artifact).parent / "FAKE-identity.json").read_text())
    assert identity["config"]["dynamic_input"] == [[[1, 4]] * 4, [[1, 8]] * 4]
    assert identity["load_onnx"]["input_size_list"] is None, "dynamic_input fixes the shapes"
    ids = collected(suite.runpytest_subprocess(*ARGS, "--collect-only", "-q", "-k", "seq4_8"))
    assert len(ids) == 1 and "dyn-seq4_8" in ids[0]


def test_a_shape_that_fails_fails_the_cell_and_is_named(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_RKNN_FAIL_SHAPE", "[1, 8]")
    result = suite.runpytest_subprocess(*ARGS, "--rknn-quant=fp16", "--rknn-matrix=m.json")
    result.assert_outcomes(failed=1)
    cell = only_cell(suite)
    assert cell.status is Status.RUNTIME_FAIL
    assert cell.reason.startswith("shapes failed: seq 8: runtime-fail")
    assert cell.reason.endswith("; serves seq 4")
    assert [s["status"] for s in cell.shapes] == ["pass", "runtime-fail"]
    assert "inference returned None" in cell.shapes[1]["reason"]


def test_an_unlisted_shape_the_runtime_serves_is_recorded_as_served(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_RKNN_SERVE_UNLISTED", "1")
    result = suite.runpytest_subprocess(*ARGS, "--rknn-quant=fp16", "--rknn-matrix=m.json")
    result.assert_outcomes(passed=1)
    unlisted = only_cell(suite).unlisted_shape
    assert unlisted["answer"] == "served" and "[1, 6" in unlisted["message"]


def test_a_quantized_cell_calibrates_at_its_largest_shape(suite: pytest.Pytester) -> None:
    args = (*ARGS, "--rknn-quant=int8", "--rknn-calibration=2", "--rknn-matrix=m.json")
    suite.runpytest_subprocess(*args).assert_outcomes(passed=1)
    job = Path(only_cell(suite, quant="int8").artifact).parent
    lines = json.loads((job / "FAKE-dataset.json").read_text())
    assert len(lines) == 2
    assert {np.load(job / path).shape for line in lines for path in line} == {(1, 8)}


def test_a_dim_no_model_has_is_a_usage_error_naming_its_free_dims(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess(*ARGS, "--rknn-dims=tokens=4", "--rknn-matrix=m.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --rknn-dims tokens: no --rknn-model has a free dim 'tokens' (their free dims: "
            "batch, seq); name one of those"
        ]
    )


def test_a_second_run_recalls_the_conversion_and_other_lengths_convert_again(
    suite: pytest.Pytester,
) -> None:
    args = (*ARGS, "--rknn-quant=fp16", "-p", "cacheprovider")
    suite.runpytest_subprocess(*args, "--rknn-matrix=a.json").assert_outcomes(passed=1)
    suite.runpytest_subprocess(*args, "--rknn-matrix=b.json").assert_outcomes(passed=1)
    cold, warm = only_cell(suite, "a.json"), only_cell(suite, "b.json")
    assert (cold.cached, warm.cached) == (False, True)
    assert warm.job_id == cold.job_id and warm.shapes == cold.shapes
    assert warm.unlisted_shape == cold.unlisted_shape
    moved_args = [a for a in args if not a.startswith("--rknn-dims")]
    other = suite.runpytest_subprocess(*moved_args, "--rknn-dims=seq=4|12", "--rknn-matrix=c.json")
    other.assert_outcomes(passed=1)
    moved = only_cell(suite, "c.json")
    assert not moved.cached and moved.variant_id.endswith("-dyn-seq4_12")
    assert [s["dims"]["seq"] for s in moved.shapes] == [4, 12]


def test_rknn_convert_serves_the_dims_a_test_names(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_own="""
        def test_served(rknn):
            outcome = rknn.convert("gen.onnx", dims={"seq": [4, 8]})
            assert outcome.status == "pass", outcome.message
            assert [s["dims"] for s in outcome.record.shapes] == [{"seq": 4}, {"seq": 8}]
            assert outcome.record.unlisted_shape["answer"] == "refused"

        def test_unknown_dim(rknn):
            import pytest
            with pytest.raises(ValueError, match="has no free dim tokens .its free dims: ba"):
                rknn.convert("gen.onnx", dims={"tokens": [4]})
        """
    )
    args = [a for a in ARGS if not a.startswith(("--rknn-model", "--rknn-dims", "--rknn-only"))]
    result = suite.runpytest_subprocess(*args, "test_own.py", "--rknn-matrix=m.json")
    result.assert_outcomes(passed=2)


def test_a_conversion_that_fails_fails_every_shape_with_the_toolkits_reason(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_RKNN_MODE", "build-fail")
    result = suite.runpytest_subprocess(*ARGS, "--rknn-quant=fp16", "--rknn-matrix=m.json")
    result.assert_outcomes(failed=1)
    cell = only_cell(suite)
    assert cell.status is Status.CONVERT_FAIL
    assert cell.reason == "build returned -1; so none of seq 4, 8 is served"
    assert cell.signature == "REGTASK bit width exceeds limit"
    assert {(s["status"], s["signature"]) for s in cell.shapes} == {
        ("convert-fail", cell.signature)
    }
    assert cell.unlisted_shape["answer"] == "untried"

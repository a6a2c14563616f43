"""hf cells through the plugin with the real toolkit (2.3.2) and the real exporter.

A whole BERT converts and passes with its attention's peakedness recorded; GPT-2 through
torch.export at opset 17 is the exporter's failure (onnxruntime rejects its ``Split``), skipped
with that reason and never counted against the toolkit; a warm run exports nothing again.
"""

from __future__ import annotations

import json

import pytest

from tests.test_plugin_runs import suite  # noqa: F401 - the fixture

pytestmark = pytest.mark.toolkit

BERT = "hf.bert.sdpa-b1-l1-e64h4kv4-s16-mpad-sharp-ts"
GPT2_DYNAMO = "hf.gpt2.sdpa-b1-l1-e64h4kv4-s16-mpad-sharp-dynamo"


def test_whole_models_convert_and_an_export_failure_is_the_exporters(suite) -> None:  # noqa: F811
    args = [
        "--rknn-toolkits=2.3.2",
        "--rknn-platforms=rk3588",
        "--rknn-only",
        f"--rknn-variant={BERT}",
        f"--rknn-variant={GPT2_DYNAMO}",
        "--rknn-matrix=m.json",
        "-rs",
    ]
    result = suite.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*whole models (hf form)*", "*gpt2*export-fail*", "*export-fail*num_outputs*Split*"]
    )
    cells = {c["variant_id"]: c for c in json.loads((suite.path / "m.json").read_text())["cells"]}
    bert, gpt2 = cells[BERT], cells[GPT2_DYNAMO]
    assert bert["status"] == "pass"
    assert bert["variant"]["form"] == "hf" and bert["variant"]["family"] == "bert"
    assert bert["attention"]["peak"] > 3 * bert["attention"]["uniform"]
    assert bert["attention"]["transformers"] == "5.23.0"
    assert gpt2["status"] == "export-fail"
    assert gpt2["job_id"] is None, "no toolkit job ran for a model the exporter could not make"
    assert "onnxruntime" in gpt2["reason"]

    warm = suite.runpytest_subprocess(*args)
    warm.assert_outcomes(passed=1, skipped=1)
    again = json.loads((suite.path / "m.json").read_text())["cells"]
    assert [c["cached"] for c in again if c["variant_id"] == BERT] == [True]

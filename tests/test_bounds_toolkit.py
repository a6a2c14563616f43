"""The fp16 emulation rule on the real rknn-toolkit2 (2.5.0, rk3588): a broken model still fails.

Three small BERT-like graphs (peaked attention, a padded mask) are converted and simulated by
the real toolkit: the right one, one whose attention mask was dropped and one whose scores are
scaled wrongly. Each toolkit output is judged, with the plugin's own functions, against the
right model's onnxruntime reference under the bounds the float16 emulation of the right model
sets, on the positions its mask keeps: the right model passes and both broken ones fail.
The padded tail repeats the sentence's tokens, so that attention would pick it up unmasked
(with distinct pad tokens this peaked self-attention barely looks at them: rel_l2 0.3 %).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from bert_graphs import bert_like

pytestmark = pytest.mark.toolkit

JUDGE = """
import json

import numpy as np
import onnx

from pytest_rknn.variants.reference import float16_outputs, onnxruntime_outputs
from pytest_rknn.verdict.judge import judge_outputs, measure
from pytest_rknn.verdict.positions import Mask, keep_of, selections
from pytest_rknn.verdict.rules import FLOOR, Judging, emulated


def test_broken_models(rknn):
    inputs = dict(np.load("inputs.npz"))
    right = onnx.load("right.onnx")
    reference = [np.asarray(o, np.float64) for o in onnxruntime_outputs(right, inputs)]
    mask = Mask("attention_mask", "tokens", keep_of("keep", inputs["attention_mask"]))
    chosen = selections([mask], [r.shape for r in reference])
    half = float16_outputs(right, inputs)
    emulation = [measure(r, h, i, chosen[i]) for i, (r, h) in enumerate(zip(reference, half))]
    judging = emulated(Judging(FLOOR, "fp16 emulation x 4", emulate=4.0), emulation)
    found = {"rule": judging.rule, "bounds": judging.bounds.to_dict()}
    for name in ("right", "no_mask", "wrong_scale"):
        model = onnx.load(f"{name}.onnx")
        given = {i.name: inputs[i.name] for i in model.graph.input}
        outcome = rknn.convert(model, platform="rk3588", toolkit="2.5.0", inputs=given)
        assert outcome.status == "pass", outcome.message  # each against its own graph
        verdict = judge_outputs(reference, outcome.outputs, judging.bounds, chosen)
        found[name] = {
            "status": verdict.status.value,
            "cell_rule": outcome.record.bounds_rule,
            "cosine": verdict.metrics["output0"]["cosine"],
            "rel_l2": verdict.metrics["output0"]["rel_l2"],
        }
    with open("found.json", "w") as handle:
        json.dump(found, handle)
"""


def test_a_dropped_mask_and_a_wrong_scale_still_fail_under_the_emulation_rule(
    rknn_pytester: pytest.Pytester, toolkit_python
) -> None:
    toolkit_python("2.5.0")
    shape = {"vocab": 30, "batch": 2, "length": 8, "hidden": 16, "drop": ("token_type_ids",)}
    onnx.save(bert_like(scale=0.5, **shape), rknn_pytester.path / "right.onnx")
    no_mask = {**shape, "drop": ("token_type_ids", "attention_mask")}
    onnx.save(bert_like(scale=0.5, **no_mask), rknn_pytester.path / "no_mask.onnx")
    onnx.save(bert_like(scale=0.125, **shape), rknn_pytester.path / "wrong_scale.onnx")
    mask = np.ones((2, 8), np.int64)
    mask[1, 4:] = 0
    ids = np.random.default_rng(3).integers(0, 30, (2, 8))
    ids[1, 4:] = ids[1, :4]  # a padded tail that repeats the sentence: only the mask hides it
    np.savez(
        rknn_pytester.path / "inputs.npz",
        input_ids=ids,
        attention_mask=mask,
        position_ids=np.tile(np.arange(8), (2, 1)),
    )
    rknn_pytester.makepyfile(test_judge=JUDGE)
    result = rknn_pytester.runpytest_subprocess(
        "--rknn-toolkits=2.5.0", "--rknn-platforms=rk3588", "--rknn-matrix=m.json"
    )
    result.assert_outcomes(passed=1)
    found = json.loads((rknn_pytester.path / "found.json").read_text())
    print(json.dumps(found, indent=1))
    assert found["rule"] == "fp16 emulation x 4"
    assert found["right"]["status"] == "pass" and found["right"]["cell_rule"] == found["rule"]
    assert found["no_mask"]["status"] == "tolerance-fail"
    assert found["wrong_scale"]["status"] == "tolerance-fail"

"""A tiny BERT-like model's inputs on the real rknn-toolkit2 (2.5.0, rk3588, fp16).

Its token ids index a 30-row embedding table and its attention mask becomes the additive bias
``(1 - mask) * -10000``. Random integers 0..7 (what users' models got before) put ids past the
table and mask values of 2..7 that turn the bias into +10000..+60000, an input no model ever
sees (and past float16's range once added to the scores). With role-aware inputs the cell is
judged on ids below 30 and a padded 0/1 mask, and passes. (2.3.2's build of this graph dies
with SIGSEGV in its RKNNSubgraphManager pass, measured 2026-12-01: a finding, not this test's.)
The same model exported with free dims (``batch``, ``seq``) converts in its ``.npz``'s shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from bert_graphs import bert_like
from onnx import TensorProto, helper

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.verdict.judge import output_metrics

pytestmark = pytest.mark.toolkit

DATA = Path(__file__).parent / "data" / "plugin"
VOCAB = 30


def test_a_bert_like_model_passes_on_inputs_of_its_roles(
    rknn_pytester: pytest.Pytester, toolkit_python
) -> None:
    toolkit_python("2.5.0")
    model = bert_like(
        vocab=VOCAB, batch=2, length=8, hidden=16, scale=0.5, drop=("token_type_ids",)
    )
    cell = passing_cell(rknn_pytester, model, "tiny_bert")
    roles = cell.variant["input_roles"]
    assert roles["input_ids"].startswith(f"token-ids below {VOCAB} ")
    assert (roles["attention_mask"], roles["position_ids"]) == ("mask", "position-ids")
    folder = Path(cell.artifact).parent
    names = [i.name for i in model.graph.input]
    fed = {name: np.load(folder / f"input{i}.npy") for i, name in enumerate(names)}
    assert fed["input_ids"].min() >= 0 and fed["input_ids"].max() < VOCAB
    mask = fed["attention_mask"]
    assert set(np.unique(mask)) == {0, 1}, "a padded batch: ones and trailing zeros"
    assert (mask.sum(axis=1) >= 1).all()
    assert (fed["position_ids"] == np.arange(8)).all()
    assert peakedness(model, fed) > 0.5, "a wrong mask or softmax would show"


def test_a_model_exported_with_free_dims_converts_in_the_shapes_of_its_npz(
    rknn_pytester: pytest.Pytester, toolkit_python
) -> None:
    """rknn-toolkit2 refuses to load a graph with free dims unless ``load_onnx`` is given the
    input shapes; the cell passes them (the ``.npz``'s), as a user fixing the shapes does."""
    toolkit_python("2.5.0")
    model = bert_like(
        vocab=VOCAB, batch="batch", length="seq", hidden=16, scale=0.5, drop=("token_type_ids",)
    )
    mask = np.ones((2, 8), np.int64)
    mask[1, 5:] = 0
    arrays = {
        "input_ids": np.random.default_rng(3).integers(0, VOCAB, (2, 8)),
        "attention_mask": mask,
        "position_ids": np.tile(np.arange(8), (2, 1)),
    }
    np.savez(rknn_pytester.path / "dyn_bert.npz", **arrays)
    cell = passing_cell(rknn_pytester, model, "dyn_bert")
    assert cell.variant["inputs"]["input_ids"] == [2, 8], "the .npz's shapes, not 1 for a free dim"
    assert peakedness(model, arrays) > 0.5


def passing_cell(pytester: pytest.Pytester, model: onnx.ModelProto, stem: str) -> CellRecord:
    """The one cell of ``model`` (saved as ``<stem>.onnx``) on 2.5.0 and rk3588, which passes
    with the toolkit's output next to onnxruntime's."""
    onnx.save(model, pytester.path / f"{stem}.onnx")
    pytester.makepyfile(test_rknn_cells=(DATA / "suite_cells.py").read_text())
    result = pytester.runpytest_subprocess(
        "--rknn-toolkits=2.5.0",
        "--rknn-platforms=rk3588",
        "--rknn-only",
        f"--rknn-model={stem}.onnx",
        "--rknn-matrix=m.json",
    )
    (cell,) = Matrix.load(pytester.path / "m.json").cells
    assert cell.status is Status.PASS, f"{cell.status}: {cell.reason}"
    result.assert_outcomes(passed=1)
    assert output_metrics(cell.metrics, 0)["cosine"] > 0.9999
    return cell


def peakedness(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> float:
    """The mean largest attention probability of a score row (1/L when it is uniform)."""
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(
        probe.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    _y, probs = session.run(None, inputs)
    return float(probs.max(axis=-1).mean())

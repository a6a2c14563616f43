"""A user's model with an ``.npz`` beside it, through the whole plugin on the FAKE toolkit.

The cell feeds the toolkit exactly the ``.npz``'s arrays (read back from the job's folder), a
quantized cell calibrates on generated samples instead, a changed ``.npz`` converts again, and
a model whose integer input has no role it can judge is one ``reference-error`` cell among
cells that still run. Only the toolkit is fake (``tests/fake_toolkit``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from bert_graphs import BERT_INPUTS, bert_like
from fake_support import SELECTION, fake_suite
from test_model_inputs import bert_arrays, unknown_model

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status

ARGS = (
    *SELECTION,
    "--rknn-examples=0",
    "--rknn-toolkits=2.3.2",
    "--rknn-platforms=rk3588",
    "--rknn-quant=fp16,int8",
    "--rknn-calibration=3",
    "--rknn-model=enc.onnx",
)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return fake_suite(pytester, monkeypatch)


def by_quant(suite: pytest.Pytester, name: str, stem: str = "enc") -> dict[str, object]:
    cells = Matrix.load(suite.path / name).cells
    return {c.quant: c for c in cells if Path(c.variant["path"]).stem == stem}


def job_inputs(cell) -> list[np.ndarray]:
    folder = Path(cell.artifact).parent
    return [np.load(folder / f"input{i}.npy") for i in range(len(BERT_INPUTS))]


def test_the_npz_is_what_the_toolkit_gets_and_a_changed_one_converts_again(
    suite: pytest.Pytester,
) -> None:
    onnx.save(bert_like(), suite.path / "enc.onnx")
    unknown_model(suite.path / "counter.onnx")
    arrays = bert_arrays()
    np.savez(suite.path / "enc.npz", **arrays)
    result = suite.runpytest_subprocess(*ARGS, "--rknn-model=counter.onnx", "--rknn-matrix=m.json")
    result.assert_outcomes(passed=2, failed=2)
    cold = by_quant(suite, "m.json")
    digest = hashlib.sha256((suite.path / "enc.npz").read_bytes()).hexdigest()
    for cell in cold.values():
        assert cell.status is Status.PASS, cell.reason
        assert cell.variant["inputs_file"]["sha256"] == digest
        assert cell.variant_id.endswith(f"-npz{digest[:8]}")
        for name, got in zip(BERT_INPUTS, job_inputs(cell), strict=True):
            assert np.array_equal(got, arrays[name]) and got.dtype == arrays[name].dtype
    folder = Path(cold["int8"].artifact).parent
    samples = sorted(folder.glob("calib*-0.npy"))
    assert len(samples) == 3, "the int8 cell calibrated on its own samples"
    for sample in samples:
        ids = np.load(sample)
        assert ids.shape == arrays["input_ids"].shape and ids.max() < 50
        assert not np.array_equal(ids, arrays["input_ids"]), "never the test input"
    for cell in by_quant(suite, "m.json", "counter").values():
        assert cell.status is Status.REFERENCE_ERROR
        assert "input 'step'" in cell.reason and "counter.npz" in cell.reason
    assert "INTERNALERROR" not in "\n".join(result.outlines + result.errlines)

    suite.runpytest_subprocess(*ARGS, "--rknn-matrix=warm.json").assert_outcomes(passed=2)
    assert all(cell.cached for cell in by_quant(suite, "warm.json").values())

    arrays["input_ids"] = (arrays["input_ids"] + 7) % 50
    np.savez(suite.path / "enc.npz", **arrays)
    result = suite.runpytest_subprocess(*ARGS, "--rknn-matrix=changed.json")
    result.assert_outcomes(passed=2)
    for quant, cell in by_quant(suite, "changed.json").items():
        assert not cell.cached, "a changed .npz never reuses the old answer"
        assert cell.variant_id != cold[quant].variant_id
        assert np.array_equal(job_inputs(cell)[0], arrays["input_ids"])


def test_a_model_with_free_dims_is_loaded_in_the_shapes_it_is_fed(suite: pytest.Pytester) -> None:
    onnx.save(bert_like(batch="batch", length="seq"), suite.path / "enc.onnx")
    onnx.save(bert_like(batch="batch", length="seq"), suite.path / "gen.onnx")
    onnx.save(bert_like(batch="batch", length=6), suite.path / "batches.onnx")
    arrays = bert_arrays(batch=3, length=5)
    np.savez(suite.path / "enc.npz", **arrays)
    args = [a for a in ARGS if not a.startswith("--rknn-quant")]
    models = ("--rknn-model=gen.onnx", "--rknn-model=batches.onnx")
    result = suite.runpytest_subprocess(*args, *models, "--rknn-matrix=m.json")
    result.assert_outcomes(passed=3)
    notes = [line for line in result.outlines if "fed as 1" in line]
    assert notes == [
        "pytest-rknn: --rknn-model gen.onnx: free dim seq is fed as 1 (no gen.npz beside it), "
        "so its attention sees one position and no mask or scale can fail it; give --rknn-dims "
        "seq=V1|V2 (or save gen.npz) with the lengths it will see"
    ], "said once, at the end, for the model whose length is free and has no .npz"
    for stem, shape in (("enc", [3, 5]), ("gen", [1, 1]), ("batches", [1, 6])):
        (cell,) = by_quant(suite, "m.json", stem).values()
        assert cell.status is Status.PASS, cell.reason
        identity = json.loads((Path(cell.artifact).parent / "FAKE-identity.json").read_text())
        assert identity["load_onnx"] == {
            "inputs": list(BERT_INPUTS),
            "input_size_list": [shape] * len(BERT_INPUTS),
        }, "the fake refuses a free dim, as the real toolkit does, unless load_onnx fixes it"


def test_rknn_convert_warns_when_a_free_length_is_fed_as_1(suite: pytest.Pytester) -> None:
    onnx.save(bert_like(batch="batch", length="seq"), suite.path / "enc.onnx")
    np.savez(suite.path / "given.npz", **bert_arrays(batch=2, length=6))
    suite.makepyfile(
        test_user="""
        import numpy as np

        def test_generated(rknn):
            outcome = rknn.convert("enc.onnx", platform="rk3588", toolkit="2.3.2")
            assert outcome.status == "pass", outcome.message

        def test_given(rknn):
            inputs = dict(np.load("given.npz"))
            outcome = rknn.convert("enc.onnx", platform="rk3588", toolkit="2.3.2", inputs=inputs)
            assert outcome.status == "pass", outcome.message
        """
    )
    result = suite.runpytest_subprocess(*SELECTION, "test_user.py", "--rknn-matrix=m.json")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "test_user.py::test_generated",
            "*UserWarning: rknn.convert(enc.onnx): free dim seq is fed as 1 (no inputs=), so its "
            "attention sees one position and no mask or scale can fail it; pass inputs= with the "
            "lengths it will see",
        ]
    )

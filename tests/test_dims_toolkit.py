"""A user model with a free ``seq`` dim, served at two lengths by the real rknn-toolkit2.

A one-layer self-attention over a token embedding (``input_ids [1, seq]``), its attention
peaked. With ``--rknn-dims seq=16|32`` the cell's one conversion lists both lengths in
``dynamic_input``; the simulator answers each against onnxruntime at that length; the compiler
builds one graph per length, the longer one with more internal memory; and a length that is
not listed (24) is refused at inference, with the toolkit's own message (measured on 2.2.0,
2.3.0 and 2.3.2, rk3588, 2026-12-08).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.verdict.judge import output_metrics

pytestmark = pytest.mark.toolkit

CELLS = """
def test_cell(rknn_cell):
    outcome = rknn_cell.check()
    assert outcome.status == "pass", outcome.message
"""


def free_length_attention(vocab: int = 50, hidden: int = 16) -> onnx.ModelProto:
    """Embedding, then softmax(q k^T) v with q, k, v projections; ``input_ids`` is [1, seq]."""
    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["x"], axis=0),
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "free_length_attention",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "seq", hidden])],
        [
            weight("emb", (vocab, hidden), 1.0),
            weight("wq", (hidden, hidden), 0.5),
            weight("wk", (hidden, hidden), 0.5),
            weight("wv", (hidden, hidden), 0.5),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_a_free_seq_dim_is_served_at_each_listed_length_and_refused_at_another(
    rknn_pytester: pytest.Pytester,
) -> None:
    onnx.save(free_length_attention(), rknn_pytester.path / "attn.onnx")
    rknn_pytester.makepyfile(test_rknn_cells=CELLS)
    result = rknn_pytester.runpytest_subprocess(
        "--rknn-toolkits=2.3.2",
        "--rknn-platforms=rk3588",
        "--rknn-only",
        "--rknn-model=attn.onnx",
        "--rknn-dims=seq=16|32",
        "--rknn-matrix=m.json",
    )
    (cell,) = Matrix.load(rknn_pytester.path / "m.json").cells
    assert cell.status is Status.PASS, f"{cell.status}: {cell.reason}"
    result.assert_outcomes(passed=1)
    assert cell.reason == "serves seq 16, 32" and cell.warning is None
    by_length = {s["dims"]["seq"]: s for s in cell.shapes}
    assert sorted(by_length) == [16, 32]
    for length, shape in by_length.items():
        assert shape["status"] == "pass"
        assert output_metrics(shape["metrics"], 0)["actual_shape"] == [1, length, 16]
        assert output_metrics(shape["metrics"], 0)["cosine"] > 0.999
    assert by_length[32]["memory"]["internal_bytes"] > by_length[16]["memory"]["internal_bytes"]
    assert cell.unlisted_shape == {
        "dims": {"seq": 24},
        "answer": "refused",
        "message": "ValueError: The inputs[0].shape [1, 24] is not in [[1, 32], [1, 16]]!",
    }
    result.stdout.no_fnmatch_line("*fed as 1*")
    folder = Path(cell.artifact).parent
    for i, length in enumerate((16, 32)):
        fed = np.load(folder / f"shape{i}_input0.npy")
        assert fed.shape == (1, length)
        assert peakedness(free_length_attention(), fed) > 0.5, "a wrong softmax would show"


def peakedness(model: onnx.ModelProto, ids: np.ndarray) -> float:
    """The mean largest attention probability of a score row (1/L when it is uniform)."""
    import onnxruntime

    model.graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return float(session.run(["probs"], {"input_ids": ids})[0].max(axis=-1).mean())


def test_an_int8_cell_calibrates_at_its_largest_length_and_serves_both(
    rknn_pytester: pytest.Pytester,
) -> None:
    """The toolkit's MaxShape rule: a quantized build with dynamic_input calibrates at its
    largest shape (its log says so); samples at 32 build a model that serves 16 and 32."""
    onnx.save(free_length_attention(), rknn_pytester.path / "attn.onnx")
    rknn_pytester.makepyfile(test_rknn_cells=CELLS)
    result = rknn_pytester.runpytest_subprocess(
        "--rknn-toolkits=2.3.2",
        "--rknn-platforms=rk3588",
        "--rknn-quant=int8",
        "--rknn-calibration=4",
        "--rknn-only",
        "--rknn-model=attn.onnx",
        "--rknn-dims=seq=16|32",
        "--rknn-matrix=m.json",
    )
    (cell,) = Matrix.load(rknn_pytester.path / "m.json").cells
    assert cell.status is Status.PASS, f"{cell.status}: {cell.reason}"
    result.assert_outcomes(passed=1)
    folder = Path(cell.artifact).parent
    samples = sorted(folder.glob("calib*-0.npy"))
    assert len(samples) == 4 and {np.load(s).shape for s in samples} == {(1, 32)}
    assert "the MaxShape is" in (folder / "toolkit.log").read_text(errors="replace")
    assert [s["status"] for s in cell.shapes] == ["pass", "pass"]
    assert all(output_metrics(s["metrics"], 0)["cosine"] > 0.99 for s in cell.shapes)
    assert cell.unlisted_shape["answer"] == "refused"


def test_an_hf_dynamic_length_row_is_exported_with_a_free_seq_and_serves_each_length(
    rknn_pytester: pytest.Pytester,
) -> None:
    """The ``hf`` form's dynamic-length row: the exporter leaves ``seq`` free, the cell lists
    16 and 32, and each is judged against onnxruntime at its length (inputs drawn as for a
    static row of that length: a right-padded mask)."""
    variant = "hf.gpt2.eager-b1-l1-e64h4kv4-s32-mpad-sharp-ts-dyn16_32"
    rknn_pytester.makepyfile(test_rknn_cells=CELLS)
    result = rknn_pytester.runpytest_subprocess(
        "--rknn-toolkits=2.3.2",
        "--rknn-platforms=rk3588",
        "--rknn-only",
        f"--rknn-variant={variant}",
        "--rknn-matrix=m.json",
    )
    (cell,) = Matrix.load(rknn_pytester.path / "m.json").cells
    assert cell.variant_id == variant
    assert cell.status is Status.PASS, f"{cell.status}: {cell.reason}"
    result.assert_outcomes(passed=1)
    model = onnx.load(Path(cell.artifact).parent.parent.parent / "models" / f"{variant}.onnx")
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == "seq", "exported with the length free"
    assert [s["inputs"]["attention_mask"] for s in cell.shapes] == [[1, 16], [1, 32]]
    assert all(output_metrics(s["metrics"], 0)["cosine"] > 0.999 for s in cell.shapes)
    assert cell.attention["peak"] > 2 * cell.attention["uniform"], "peaked attention"
    assert cell.unlisted_shape["answer"] == "refused"
    result.stdout.fnmatch_lines([f"  {variant} rk3588 2.3.2 fp16: serves seq 16, 32; *"])


def test_the_curated_dynamic_attention_row_serves_each_length_on_both_chips(
    rknn_pytester: pytest.Pytester,
) -> None:
    """The manual form with a free length (ci: 16, 32, 128), on 2.3.2: every length within
    the bounds of the float64 reference, on rk3566 and rk3588, 24 refused."""
    rknn_pytester.makepyfile(test_rknn_cells=CELLS)
    result = rknn_pytester.runpytest_subprocess(
        "--rknn-toolkits=2.3.2",
        "--rknn-platforms=rk3566,rk3588",
        "--rknn-forms=manual",
        "--rknn-examples=0",
        "-k",
        "dyn16_32_128",
        "--rknn-matrix=m.json",
    )
    cells = Matrix.load(rknn_pytester.path / "m.json").cells
    assert len(cells) == 2 and all(c.variant_id.endswith("-dyn16_32_128") for c in cells)
    assert result.parseoutcomes()["passed"] == 2 and "failed" not in result.parseoutcomes()
    for cell in cells:
        assert cell.status is Status.PASS, f"{cell.platform}: {cell.reason}"
        assert [s["dims"]["seq"] for s in cell.shapes] == [16, 32, 128]
        assert all(output_metrics(s["metrics"], 0)["rel_l2"] < 1e-3 for s in cell.shapes)
        assert cell.unlisted_shape["answer"] == "refused"
    again = rknn_pytester.runpytest_subprocess(
        "--rknn-toolkits=2.3.2",
        "--rknn-platforms=rk3588",
        "--rknn-only",
        f"--rknn-variant={cells[0].variant_id}",
        "--rknn-matrix=again.json",
    )
    again.assert_outcomes(passed=1)
    (rerun,) = Matrix.load(rknn_pytester.path / "again.json").cells
    assert rerun.variant_id == cells[0].variant_id and rerun.cached, "the same cell, recalled"

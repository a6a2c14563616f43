"""The parts of the quantization modes, alone: calibration sets, the hybrid layer choice, and the
reading of the toolkit's accuracy_analysis (on a report the real 2.5.0 wrote)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pytest_rknn.pipeline.analysis import describe, find_origin, parse_error_analysis, read_origin
from pytest_rknn.pipeline.calibration import (
    CalibrationError,
    make_calibration,
    sample_seed,
    write_dataset,
)
from pytest_rknn.pipeline.subjects import VariantSubject
from pytest_rknn.pipeline.targets import QUANT_MODES
from pytest_rknn.pipeline.user_models import ProvidedModel, UserModel
from pytest_rknn.toolkit import remote_hybrid
from pytest_rknn.toolkit.protocol import Job, ProtocolError, check_result
from pytest_rknn.variants.forms import build_model
from pytest_rknn.variants.spec import VariantSpec

DATA = Path(__file__).with_name("data")
SHAPE = {"batch": 1, "num_heads": 2, "num_kv_heads": 2, "q_len": 4, "kv_len": 4, "head_dim": 8}
SPEC = VariantSpec(form="manual", **SHAPE)
MHA = VariantSpec(form="mha-block", layout="bshd", **SHAPE)


def test_calibration_samples_share_the_distribution_but_never_the_test_input(tmp_path) -> None:
    subject = VariantSubject(SPEC)
    test = subject.inputs(0)
    calib = make_calibration(subject, 0, 5, ["q", "k", "v"], test, tmp_path / "c")
    assert len(calib) == 5 and 0 not in calib.seeds and len(set(calib.seeds)) == 5
    for paths in calib.samples:
        arrays = [np.load(p) for p in paths]
        assert [a.shape for a in arrays] == [test[n].shape for n in ("q", "k", "v")]
        assert [a.dtype for a in arrays] == [test[n].dtype for n in ("q", "k", "v")]
        assert not np.array_equal(arrays[0], test["q"])
        assert 0.5 < float(np.std(arrays[0])) < 2.0  # unit normal like the test input
    assert len({d for row in calib.digests for d in row}) == 15
    again = make_calibration(subject, 0, 5, ["q", "k", "v"], test, tmp_path / "d")
    assert again.digests == calib.digests  # the same run draws the same set
    other = make_calibration(subject, 1, 5, ["q", "k", "v"], test, tmp_path / "e")
    assert other.digests != calib.digests
    assert sample_seed(0, 0) != sample_seed(0, 1)


def test_the_dataset_list_is_what_the_toolkit_reads(tmp_path) -> None:
    subject = VariantSubject(SPEC)
    calib = make_calibration(subject, 3, 3, ["q", "k", "v"], subject.inputs(3), tmp_path / "c")
    job = tmp_path / "job"
    job.mkdir()
    dataset = write_dataset(calib, job)
    lines = dataset.read_text().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        names = line.split(" ")
        assert len(names) == 3 and all("/" not in n for n in names)
        for j, name in enumerate(names):
            assert np.array_equal(np.load(job / name), np.load(calib.samples[i][j]))


def test_given_inputs_are_never_the_calibration_set(tmp_path) -> None:
    model = build_model(SPEC)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    given = VariantSubject(SPEC).inputs(0)
    subject = ProvidedModel(UserModel.load(path), tuple(given.items()))
    calib = make_calibration(subject, 0, 2, ["q", "k", "v"], given, tmp_path / "c")
    for paths in calib.samples:
        assert not np.array_equal(np.load(paths[0]), given["q"])


def test_inputs_too_poor_to_calibrate_are_refused(tmp_path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.BOOL, [])
    graph = helper.make_graph([helper.make_node("Not", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    subject = UserModel.load(path)
    with pytest.raises(CalibrationError, match="differ from its test input"):
        make_calibration(subject, 0, 4, ["x"], subject.inputs(0), tmp_path / "c")


def test_quant_modes_name_their_algorithm_and_flow() -> None:
    assert dict(QUANT_MODES["int8-kl"].config)["quantized_algorithm"] == "kl_divergence"
    assert dict(QUANT_MODES["int8-mmse"].config)["quantized_algorithm"] == "mmse"
    assert "quantized_algorithm" not in dict(QUANT_MODES["int8"].config)
    assert QUANT_MODES["hybrid"].hybrid and QUANT_MODES["hybrid"].do_quantization
    assert not any(m.hybrid for n, m in QUANT_MODES.items() if n != "hybrid")


def test_the_graph_reader_sees_what_onnx_sees() -> None:
    for spec in (SPEC, MHA):
        model = build_model(spec)
        nodes, initializers = remote_hybrid.read_graph(model.SerializeToString())
        assert [(n.op, n.name, n.inputs, n.outputs) for n in nodes] == [
            (n.op_type, n.name, list(n.input), list(n.output)) for n in model.graph.node
        ]
        assert initializers == {i.name for i in model.graph.initializer}


def _ops(spec: VariantSpec) -> list[str]:
    model = build_model(spec)
    nodes, initializers = remote_hybrid.read_graph(model.SerializeToString())
    return [n.op for n in remote_hybrid.attention_layers(nodes, initializers)]


def test_attention_layers_are_the_attention_and_not_the_projections() -> None:
    manual = _ops(VariantSpec(form="manual", mask="causal", layout="bshd", **SHAPE))
    assert manual.count("MatMul") == 2 and "Softmax" in manual and "Mul" in manual
    assert "Add" in manual  # the causal mask's add, between the matmul and the softmax
    mha = _ops(MHA)
    model = build_model(MHA)
    assert [n.op_type for n in model.graph.node].count("MatMul") == 6
    assert mha.count("MatMul") == 2  # q.k^T and p.v; the four projections stay int8
    assert "Softmax" in mha


def test_the_toolkits_fused_graph_is_read_too() -> None:
    """The graph 2.5.0's step 1 wrote for a causal manual attention: the fused op and its
    layout ops, not the input and output conversions."""
    nodes = [
        remote_hybrid.Node("q_cvt", "exDataConvert", ["q"], ["q_int8"]),
        remote_hybrid.Node("/Reshape", "Reshape", ["q_int8", "shape"], ["/Reshape_output_0"]),
        remote_hybrid.Node("/T#1", "Transpose", ["/Reshape_output_0"], ["qt"]),
        remote_hybrid.Node("k_cvt", "exDataConvert", ["k"], ["kt"]),
        remote_hybrid.Node("/sdpa", "exSDPAttention", ["qt", "kt", "kt", "mask"], ["att"]),
        remote_hybrid.Node("/Transpose_4", "Transpose", ["att"], ["att_t"]),
        remote_hybrid.Node("/Reshape_3", "Reshape", ["att_t", "merge"], ["out_int8"]),
        remote_hybrid.Node("out_cvt", "exDataConvert", ["out_int8"], ["out"]),
    ]
    chosen = remote_hybrid.attention_layers(nodes, {"shape", "merge", "mask"})
    assert [n.name for n in chosen] == ["/Reshape", "/T#1", "/sdpa", "/Transpose_4", "/Reshape_3"]


CONFIG = """custom_quantize_layers: {}
quantize_parameters:
    q:
        qtype: asym
        scale:
        -   7.62951094834821e-06
    '/MatMul_1#1_2sdpa_q_matmul':
        qtype: asym
    att:
        qtype: asym
"""


def test_the_config_is_edited_as_text_and_only_its_layer_section() -> None:
    assert remote_hybrid.config_tensors(CONFIG) == ["q", "/MatMul_1#1_2sdpa_q_matmul", "att"]
    edited = remote_hybrid.with_float16(CONFIG, ["att", "it's"])
    head, rest = edited.split("quantize_parameters:\n", 1)
    assert head == "custom_quantize_layers:\n    'att': float16\n    'it''s': float16\n"
    assert rest == CONFIG.split("quantize_parameters:\n", 1)[1]  # every scale byte-identical
    with pytest.raises(ValueError, match="no tensor"):
        remote_hybrid.with_float16(CONFIG, [])


def test_the_error_starts_where_the_real_analysis_says() -> None:
    """2.5.0's report of an int8 causal attention: q/k/v quantize to 0.99996, the fused
    attention op alone drops to 0.87382."""
    report = DATA / "error_analysis-2.5.0-int8-causal.txt"
    rows = parse_error_analysis(report.read_text())
    assert len(rows) == 16 and rows[0].op == "Input" and rows[-1].name == "out"
    origin = read_origin(report)
    assert origin["op"] == "exSDPAttention" and origin["layer"] == "/MatMul_1_output_0_sdpa"
    assert origin["cosine"] == pytest.approx(0.87382)
    assert origin["input_cosine"] == pytest.approx(0.99996)
    assert "note" not in origin
    text = describe(origin)
    assert text.startswith("the error starts in exSDPAttention /MatMul_1_output_0_sdpa")
    assert "cosine 0.87382" in text


def test_no_single_layer_and_no_layers_are_said_as_such(tmp_path) -> None:
    rows = parse_error_analysis(
        "[Input] x  1.00000 | 0.0   1.00000 | 0.0\n"
        "[Conv] a   0.99950 | 1.0   0.99950 | 1.0\n"
        "[Conv] b   0.99850 | 1.0   0.99900 | 1.0\n"
    )
    origin = find_origin(rows)
    assert origin["layer"] == "b" and "accumulates" in origin["note"]
    assert find_origin(rows[:2] + [rows[2].__class__("Softmax", "s", 0.9, 0.9)])["layer"] == "s"
    assert "error" in find_origin([]) and "error" in find_origin(rows[:1])
    flat = parse_error_analysis(
        "[Input] q  1.00000 | 0.0   1.00000 | 0.0\n"
        "[exSDPAttention] a  0.99990 | 1.0   0.99995 | 1.0\n"
    )
    spread = find_origin(flat)
    assert "layer" not in spread and "spread over the graph" in spread["note"]
    assert describe(spread).startswith("where the error starts: no layer's own error")
    missing = read_origin(tmp_path / "none.txt")
    assert "cannot read" in missing["error"]
    assert describe(missing).startswith("where the error starts: unknown")


def _answer(job: Job, **fields: object) -> dict[str, object]:
    body = {"id": job.id, "failed_phase": None, "outputs": [], **fields}
    return {"op": "result", "id": job.id, "result": body}


def test_the_protocol_checks_the_new_fields(tmp_path) -> None:
    hybrid = Job.create(tmp_path / "m.onnx", "rk3588", tmp_path, hybrid=True, simulate=False)
    layers = [{"name": "att", "op": "exSDPAttention"}]
    assert check_result(_answer(hybrid, fp16_layers=layers), hybrid).fp16_layers == layers
    with pytest.raises(ProtocolError, match="malformed fp16_layers"):
        check_result(_answer(hybrid, fp16_layers=[{"name": 3, "op": "x"}]), hybrid)
    plain = Job.create(tmp_path / "m.onnx", "rk3588", tmp_path, simulate=False)
    with pytest.raises(ProtocolError, match="not hybrid"):
        check_result(_answer(plain, fp16_layers=layers), plain)
    with pytest.raises(ProtocolError, match="not asked for"):
        check_result(_answer(plain, analysis=f"{plain.outdir}/analysis/e.txt"), plain)
    asked = Job.create(tmp_path / "m.onnx", "rk3588", tmp_path, analysis=True, simulate=False)
    report = f"{asked.outdir}/analysis/error_analysis.txt"
    assert check_result(_answer(asked, analysis=report), asked).analysis == report
    with pytest.raises(ProtocolError, match="not asked for"):
        check_result(_answer(asked, analysis="/etc/passwd"), asked)
    with pytest.raises(ProtocolError, match="names no analysis"):
        check_result(_answer(asked), asked)


def test_layers_the_analysis_cannot_compare_are_skipped() -> None:
    """2.5.0's report of an int8 attention with an additive mask holding float32's lowest
    value: the mask's rows read ``q_unknow``; the error starts in the Softmax after it."""
    origin = read_origin(DATA / "error_analysis-2.5.0-int8-additive-mask.txt")
    assert origin["op"] == "exSoftmax13" and origin["layer"] == "/Softmax_output_0"
    assert origin["cosine"] == pytest.approx(0.52537)
    assert origin["input_cosine"] == pytest.approx(0.99976)
    assert "3 layer(s)" in origin["note"]


def test_a_matmul_with_a_constant_scale_is_still_attention() -> None:
    """rk3566's step-1 graph of a causal attention (any version): q.k^T fused with its scale
    into one exMatMul whose third input is a constant, then the mask's Add and exSoftmax13."""
    node = remote_hybrid.Node
    nodes = [
        node("q_cvt", "exDataConvert", ["q"], ["q8"]),
        node("k_cvt", "exDataConvert", ["k"], ["k8"]),
        node("v_cvt", "exDataConvert", ["v"], ["v8"]),
        node("/Mul", "Mul", ["q8", "sqrt_scale"], ["qs"]),
        node("/MatMul#1", "exMatMul", ["k8", "qs", "scale"], ["s"]),
        node("/Add", "Add", ["s", "causal_mask"], ["sm"]),
        node("/Softmax", "exSoftmax13", ["sm"], ["p"]),
        node("/MatMul_1#1", "exMatMul", ["p", "v8"], ["o"]),
        node("/proj", "exMatMul", ["o", "w_o"], ["y"]),
    ]
    chosen = remote_hybrid.attention_layers(nodes, {"scale", "sqrt_scale", "causal_mask", "w_o"})
    assert [n.name for n in chosen] == ["/Mul", "/MatMul#1", "/Add", "/Softmax", "/MatMul_1#1"]

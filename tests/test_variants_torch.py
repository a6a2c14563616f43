"""The torch-sdpa replica against torch's real TorchScript exporter, and the torch-export form.

Needs a python with torch: ``PYTEST_RKNN_TORCH_PYTHON`` (every toolkit environment has
torch). Graphs are compared with ``structure_signature``: the multiset of per-node hashes
of (op type, attributes with constant values, producers of each input in order), so two
graphs are equal when they compute the same operator DAG, whatever the topological order
or value names the exporter chose.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from pytest_rknn.variants import (
    NotBuildable,
    TorchExportError,
    VariantSpec,
    build_model,
    export_many,
    export_with_torch,
    find_torch_python,
    make_inputs,
    onnxruntime_bound,
    onnxruntime_outputs,
    reference_outputs,
)
from pytest_rknn.variants.graph import structure_signature
from pytest_rknn.variants.torch_replica import build_torch_sdpa

# The conftest builds the exporter environment before tests that carry this marker.
pytestmark = pytest.mark.toolkit


def _torch_python() -> Path:
    """$PYTEST_RKNN_TORCH_PYTHON, else the project's exporter environment when it is built."""
    python = find_torch_python()
    if python is None:
        from pytest_rknn.envs import exporter_env

        env = exporter_env()
        if not env.usable:
            pytest.skip(
                "no torch interpreter: run `pytest-rknn envs` (builds the exporter environment) "
                "or set PYTEST_RKNN_TORCH_PYTHON to a python with torch"
            )
        python = env.python
    return python


def _sdpa(**changes: object) -> VariantSpec:
    base = {
        "form": "torch-sdpa",
        "batch": 1,
        "num_heads": 4,
        "num_kv_heads": 4,
        "q_len": 16,
        "kv_len": 16,
        "head_dim": 32,
    }
    return VariantSpec(**{**base, **changes})  # type: ignore[arg-type]


COMPARED = [
    _sdpa(),
    _sdpa(mask="causal"),
    _sdpa(mask="additive", mask_shape="11qk"),
    _sdpa(batch=2, mask="key-padding", mask_shape="b11k"),
    _sdpa(dtype="float16", mask="causal"),
    _sdpa(dtype="float16", mask="key-padding", mask_shape="b1qk", batch=2),
    _sdpa(scale=0.1, mask="causal"),
    _sdpa(num_kv_heads=1, q_len=1, kv_len=64),
    _sdpa(num_kv_heads=2, layout="bshd", mask="causal"),
    _sdpa(layout="bshd", mask="additive", mask_shape="b1qk", dtype="float16"),
    _sdpa(layout="bshd", mask="causal", scale=0.125),
]


def _io(model: onnx.ModelProto) -> list[tuple[str, str]]:
    values = list(model.graph.input) + list(model.graph.output)
    return [(v.name, str(v.type)) for v in values]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> list[onnx.ModelProto]:
    python = _torch_python()
    folder = tmp_path_factory.mktemp("torchscript")
    jobs = [(spec, folder / f"{spec.id}.onnx", "torchscript") for spec in COMPARED]
    outcomes = export_many(jobs, python)
    models = []
    for outcome in outcomes:
        assert not isinstance(outcome, TorchExportError), outcome
        models.append(onnx.load(str(outcome.path)))
    return models


@pytest.mark.parametrize("index", range(len(COMPARED)), ids=[s.id for s in COMPARED])
def test_replica_has_the_exporters_operator_graph(exported, index: int) -> None:
    spec, real = COMPARED[index], exported[index]
    replica = build_torch_sdpa(spec)
    real_ops = Counter(n.op_type for n in real.graph.node)
    replica_ops = Counter(n.op_type for n in replica.graph.node)
    assert replica_ops == real_ops
    assert structure_signature(replica) == structure_signature(real)
    assert _io(replica) == _io(real)
    assert replica.ir_version == real.ir_version
    assert [(o.domain, o.version) for o in replica.opset_import] == [
        (o.domain, o.version) for o in real.opset_import
    ]


def test_signature_tells_graphs_apart(exported) -> None:
    none, causal = exported[0], exported[1]
    assert structure_signature(none) != structure_signature(causal)
    rewired = build_torch_sdpa(COMPARED[0])
    muls = [n for n in rewired.graph.node if n.op_type == "Mul"]
    muls[0].input[0], muls[1].input[0] = muls[1].input[0], muls[0].input[0]
    assert Counter(n.op_type for n in rewired.graph.node) == Counter(
        n.op_type for n in none.graph.node
    )
    assert structure_signature(rewired) != structure_signature(none)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo", "dynamo-opset23"])
def test_torch_export_form_builds_or_says_why(exporter: str, monkeypatch) -> None:
    python = _torch_python()
    monkeypatch.setenv("PYTEST_RKNN_TORCH_PYTHON", str(python))
    spec = _sdpa(form="torch-export", exporter=exporter, mask="causal", num_kv_heads=2)
    try:
        model = build_model(spec)
    except NotBuildable as exc:
        assert exporter != "torchscript", exc
        assert "onnxscript" in str(exc), exc
        return
    assert dict((p.key, p.value) for p in model.metadata_props)["torch"].startswith("2.")
    inputs = make_inputs(spec, 0)
    (got,) = onnxruntime_outputs(model, inputs)
    (want,) = reference_outputs(spec, inputs)
    assert float(np.abs(got - want).max()) <= onnxruntime_bound(spec, inputs)


def test_export_errors_are_one_line(tmp_path) -> None:
    spec = _sdpa()
    with pytest.raises(TorchExportError, match="exporter='onnx' is not one of"):
        export_with_torch(spec, Path("python"), tmp_path / "x.onnx", "onnx")
    with pytest.raises(TorchExportError, match="cannot run /nonexistent/python"):
        export_with_torch(spec, Path("/nonexistent/python"), tmp_path / "x.onnx")


def test_torch_python_env_must_name_an_executable(monkeypatch) -> None:
    monkeypatch.setenv("PYTEST_RKNN_TORCH_PYTHON", "/nonexistent/python3")
    with pytest.raises(TorchExportError, match="is not an executable: point it at a python"):
        find_torch_python()
    monkeypatch.delenv("PYTEST_RKNN_TORCH_PYTHON")
    assert find_torch_python() is None

"""Models nobody here generated, the public ``rknn`` fixture, and ``pytest-rknn merge``.

Real rknn-toolkit2 runs (2.3.2, and 2.5.0 for the merge) of pytester suites: a user's ONNX file
given with ``--rknn-model`` and a model converted from a user's own test both become matrix rows
(``form: "model"``); per-toolkit matrices merge into one, and a corrupt input is named and left
out while the readable ones are still written.
"""

from __future__ import annotations

import hashlib
import re
import sysconfig
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pytest_rknn.envs import default_root
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import STATUSES
from pytest_rknn.verdict.judge import output_metrics

DATA = Path(__file__).parent / "data" / "plugin"
# Resolved now: pytester points HOME at its own folder, which would hide the user cache.
ENVS_ROOT = default_root()
PYTEST_RKNN = Path(sysconfig.get_path("scripts")) / "pytest-rknn"

pytestmark = pytest.mark.toolkit

FIXTURE_TEST = """
import numpy as np
import pytest
from pytest_rknn.verdict.judge import output_metrics
from onnx import TensorProto, helper, numpy_helper


def block():
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32) / 4, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "user_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])],
        [w],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8
    )


@pytest.mark.rknn(max_abs=0.05)
def test_user_block_on_rk3566(rknn):
    outcome = rknn.convert(block(), platform="rk3566", toolkit="2.3.2")
    assert outcome.status == "pass", outcome.message
    assert output_metrics(outcome.record.metrics, 0)["max_abs"] <= 0.05
    assert outcome.record.signature is None
    assert outcome.outputs[0].shape == (1, 4, 16)
"""


def layer_norm_block(path: Path) -> Path:
    """A LayerNorm-like block written by hand with onnx.helper (opset 17, IR version 8)."""
    rng = np.random.default_rng(7)
    weights = [
        numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32) / 6, "w"),
        numpy_helper.from_array(np.full((1,), 1e-5, np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1], keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["var"], axes=[-1], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["centred", "std"], ["normed"]),
        helper.make_node("MatMul", ["normed", "w"], ["proj"]),
        helper.make_node("Relu", ["proj"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "layer_norm_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_user_model_file_becomes_a_matrix_row(rknn_pytester: pytest.Pytester) -> None:
    rknn_pytester.makepyfile(test_rknn_cells=(DATA / "suite_cells.py").read_text())
    model = layer_norm_block(rknn_pytester.path / "layer-norm block.onnx")
    result = rknn_pytester.runpytest_subprocess(
        "--rknn-toolkits=2.3.2",
        "--rknn-platforms=rk3588",
        "--rknn-examples=0",
        "--rknn-no-curated",
        f"--rknn-model={model.name}",
        "--rknn-matrix=m.json",
        "-v",
    )
    (cell,) = Matrix.load(rknn_pytester.path / "m.json").cells
    digest = hashlib.sha256(model.read_bytes()).hexdigest()

    assert cell.variant["form"] == "model"
    assert cell.variant["path"] == str(model.resolve())
    assert cell.variant["sha256"] == digest
    assert cell.variant["inputs"] == {"x": [1, 8, 32]}
    assert cell.variant_id == f"model-layer_norm_block-{digest[:8]}"
    assert (cell.platform, cell.toolkit, cell.quant) == ("rk3588", "2.3.2", "fp16")
    assert cell.status in STATUSES
    assert cell.status != "env-error", cell.reason
    assert cell.timings["wall"] > 0
    outcome = {"pass": "passed", "unsupported": "skipped"}.get(cell.status, "failed")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines([f"test_rknn_cells.py::test_cell[[]{cell.variant_id}-rk3588-*"])
    if cell.status == "pass":
        assert output_metrics(cell.metrics, 0)["cosine"] > 0.99


def test_rknn_fixture_converts_a_users_model_into_the_matrix(
    rknn_pytester: pytest.Pytester,
) -> None:
    rknn_pytester.makepyfile(test_user=FIXTURE_TEST)
    result = rknn_pytester.runpytest_subprocess("--strict-markers", "--rknn-matrix=m.json")
    result.assert_outcomes(passed=1)
    (cell,) = Matrix.load(rknn_pytester.path / "m.json").cells

    assert cell.variant["form"] == "model"
    assert (cell.platform, cell.toolkit, cell.quant, cell.status) == (
        "rk3566",
        "2.3.2",
        "fp16",
        "pass",
    )
    assert output_metrics(cell.metrics, 0)["max_abs"] <= 0.05
    assert cell.peak_rss_mb > 0
    assert re.fullmatch(r"model-user_block-[0-9a-f]{8}", cell.variant_id), cell.variant_id


DEFAULTS_TEST = (
    FIXTURE_TEST.split("@pytest.mark.rknn")[0]
    + """
def test_user_block_with_the_defaults(rknn):
    outcome = rknn.convert(block())
    assert (outcome.record.platform, outcome.record.toolkit) == ("rk3588", "2.5.0")
    assert list(outcome.record.metrics) == ["y"]
    assert outcome.record.metrics["y"]["index"] == 0
"""
)


def test_the_fixture_defaults_to_the_newest_toolkit_and_keeps_its_matrix_in_pytests_cache(
    rknn_pytester: pytest.Pytester, toolkit_python
) -> None:
    toolkit_python("2.5.0")
    rknn_pytester.makepyfile(test_user=DEFAULTS_TEST)
    result = rknn_pytester.runpytest_subprocess("--strict-markers")
    result.assert_outcomes(passed=1)
    assert not list(rknn_pytester.path.glob("rknn-matrix*")), "nothing in the user's project"
    assert "rknn compatibility matrix" not in result.stdout.str()
    (cell,) = Matrix.load(rknn_pytester.path / ".pytest_cache/d/rknn/rknn-matrix.json").cells
    assert (cell.platform, cell.toolkit, cell.status) == ("rk3588", "2.5.0", "pass")
    asked = rknn_pytester.runpytest_subprocess("--rknn-matrix=m.json")
    asked.assert_outcomes(passed=1)
    asked.stdout.fnmatch_lines(["*rknn compatibility matrix*", "matrix: m.json (1 cells)"])


def test_merge_combines_per_toolkit_matrices_and_names_a_corrupt_one(
    rknn_pytester: pytest.Pytester, toolkit_python
) -> None:
    toolkit_python("2.5.0")
    rknn_pytester.makepyfile(test_rknn_cells=(DATA / "suite_cells.py").read_text())
    common = ("--rknn-platforms=rk3566,rk3588", "--rknn-forms=manual", "--rknn-examples=1")
    parts = {}
    for version in ("2.3.2", "2.5.0"):
        path = f"matrices/matrix-{version}.json"
        rknn_pytester.runpytest_subprocess(
            *common, "--rknn-no-curated", f"--rknn-toolkits={version}", f"--rknn-matrix={path}"
        )
        parts[version] = Matrix.load(rknn_pytester.path / path)
        assert {c.toolkit for c in parts[version].cells} == {version}
    (rknn_pytester.path / "matrices" / "broken.json").write_text('{"schema": "pytest-rknn/ma')

    result = rknn_pytester.run(PYTEST_RKNN, "merge", "matrices", "-o", "merged.json")
    assert result.ret == 1
    result.stderr.fnmatch_lines(["pytest-rknn merge: left out *broken.json: *not valid JSON*"])
    merged = Matrix.load(rknn_pytester.path / "merged.json")
    assert merged.meta["toolkits"] == ["2.3.2", "2.5.0"]
    assert {c.key for c in merged.cells} == {c.key for m in parts.values() for c in m.cells}
    for part in parts.values():
        for cell in part.cells:
            assert merged.get(cell.key).status == cell.status
    assert len(merged.meta["merged_from"]) == 2
    result.stdout.fnmatch_lines(["merged 2 matrix file(s): 4 cell(s) -> merged.json"])

    clean = rknn_pytester.run(
        PYTEST_RKNN, "merge", *[f"matrices/matrix-{v}.json" for v in parts], "-o", "clean.json"
    )
    assert clean.ret == 0
    assert len(Matrix.load(rknn_pytester.path / "clean.json")) == 4

"""The matrix from an installed plugin, in a folder that holds no tests of the suite.

``pytest-rknn run ARGS`` is ``pytest --pyargs pytest_rknn.cases ARGS``: the cells ship in the
package, pytest's own options (``-k``, ``-n 2``, ``--lf``) work on them, and the re-run command
a failing cell prints names the installed suite. A run whose options choose cells in a folder
without the suite says where the suite is instead of ending silently with 0 items.
"""

from __future__ import annotations

import shlex
import sysconfig
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pytest_rknn.envs import default_root
from pytest_rknn.results.matrix import Matrix

PYTEST_RKNN = Path(sysconfig.get_path("scripts")) / "pytest-rknn"
ENVS_ROOT = default_root()
HINT = "pytest-rknn: no test here runs the matrix's cells (they ship with the plugin): run *"


def relu_block(path: Path, opset: int = 17, ir_version: int = 8) -> Path:
    """x @ w then Relu, with its graph's output named ``hidden``."""
    w = np.random.default_rng(3).standard_normal((8, 16)).astype(np.float32) / 4
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Relu", ["h"], ["hidden"]),
        ],
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, 4, 16])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version
    )
    onnx.save(model, path)
    return path


def test_pyargs_collects_the_installed_cells_with_k(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "--pyargs", "pytest_rknn.cases", "--co", "-q", "-k", "rk3588 and 2.3.2 and sdpa"
    )
    assert result.ret == 0
    ids = [line for line in result.outlines if "::test_cell[" in line]
    assert ids and all("rk3588-2.3.2" in line and "sdpa" in line for line in ids)


def test_run_subcommand_is_pytest_on_the_installed_cells(pytester: pytest.Pytester) -> None:
    listed = pytester.run(PYTEST_RKNN, "run", "--co", "-q", "-k", "rk3566 and 2.5.0")
    pyargs = pytester.runpytest_subprocess(
        "--pyargs", "pytest_rknn.cases", "--co", "-q", "-k", "rk3566 and 2.5.0"
    )
    cells = [line for line in listed.outlines if "::test_cell[" in line]
    assert listed.ret == 0 and cells
    assert cells == [line for line in pyargs.outlines if "::test_cell[" in line]


def test_cell_options_in_a_folder_without_the_suite_say_where_it_is(
    pytester: pytest.Pytester,
) -> None:
    model = relu_block(pytester.path / "my_block.onnx")
    result = pytester.runpytest_subprocess("--rknn-only", f"--rknn-model={model.name}")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines([HINT])
    plain = pytester.runpytest_subprocess()
    assert "pytest-rknn:" not in plain.stdout.str()


@pytest.mark.toolkit
def test_run_on_a_users_models_with_xdist_then_last_failed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_rknn.envs import ENVS_ENV

    monkeypatch.setenv(ENVS_ENV, str(ENVS_ROOT))
    good = relu_block(pytester.path / "good_block.onnx")
    # No toolkit version reads ONNX opset 23 (FINDINGS.md): a real convert-fail.
    new = relu_block(pytester.path / "opset23_block.onnx", opset=23, ir_version=11)
    args = ["--rknn-only", f"--rknn-model={good.name}", f"--rknn-model={new.name}"]
    args += ["--rknn-toolkits=2.3.2", "--rknn-platforms=rk3588", "--rknn-matrix=m.json"]
    first = pytester.run(PYTEST_RKNN, "run", *args, "-n", "2", "-p", "no:randomly")
    matrix = Matrix.load(pytester.path / "m.json")
    by_model = {cell.variant["path"]: cell for cell in matrix.cells}

    assert by_model[str(good.resolve())].status == "pass", by_model[str(good.resolve())].reason
    assert by_model[str(new.resolve())].status == "convert-fail"
    assert matrix.meta["cell_test"] == "pytest_rknn.cases.test_matrix::test_cell"
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    first.stdout.fnmatch_lines(["*1 failed, 1 passed*"])

    again = pytester.run(PYTEST_RKNN, "run", *args, "--lf", "-p", "no:randomly")
    again.stdout.fnmatch_lines(["*1 failed, 2 deselected*"])
    rerun = next(line for line in again.outlines if line.startswith("re-run: "))
    command = shlex.split(rerun.removeprefix("re-run: "))
    assert command[:3] == [
        "pytest",
        "--pyargs",
        f"pytest_rknn.cases.test_matrix::test_cell[{by_model[str(new.resolve())].id}]",
    ]
    one = pytester.run(Path(sysconfig.get_path("scripts")) / "pytest", *command[1:])
    one.stdout.fnmatch_lines(["*1 failed*"])

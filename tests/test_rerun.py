"""Re-running one cell: ``--rknn-only`` with ``--rknn-variant``, and the one re-run command."""

from __future__ import annotations

import shlex

import pytest
from fake_support import SELECTION, fake_suite
from matrix_support import make_cell

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.variants.spec import VariantSpec
from pytest_rknn.views.text import rerun_command

VARIANT = "manual-b1-h2kv1-q4kv4-d8-none-f32-bhsd"


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return fake_suite(pytester, monkeypatch)


def test_only_runs_just_the_named_variant(suite: pytest.Pytester) -> None:
    assert VariantSpec.from_id(VARIANT).id == VARIANT
    args = [a for a in SELECTION if a != "--rknn-no-curated"]
    result = suite.runpytest_subprocess(
        *args, "--rknn-only", "--rknn-variant", VARIANT, "--rknn-matrix=one.json"
    )
    result.assert_outcomes(passed=4)
    matrix = Matrix.load(suite.path / "one.json")
    assert {c.variant_id for c in matrix.cells} == {VARIANT}
    assert {(c.platform, c.toolkit) for c in matrix.cells} == {
        (p, t) for p in ("rk3566", "rk3588") for t in ("2.3.2", "2.5.0")
    }


def test_only_without_a_variant_is_a_usage_error(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess(*SELECTION, "--rknn-only", "--rknn-matrix=x.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --rknn-only runs only the variants named by*"])


def test_the_cell_rerun_command_runs_that_cell_alone(suite: pytest.Pytester) -> None:
    """The command the dashboard shows for a cell of a matrix built from a wider run."""
    spec = VariantSpec.from_id(VARIANT)
    cell = make_cell(spec.to_dict(), "rk3588", "2.5.0", "pass")
    cell.variant_id = VARIANT
    run_args = [*SELECTION, "--rknn-timeout", "60", "--rknn-matrix", "m.json", "-x"]
    run_args += ["--rknn-shard", "2/2", "--rknn-shard-costs=old.json"]
    command = shlex.split(rerun_command("test_rknn_cells.py", run_args, cell))
    assert command[:2] == ["pytest", "test_rknn_cells.py"]
    assert "m.json" not in command and "-x" not in command
    assert not any(a.startswith("--rknn-shard") or a in ("2/2", "old.json") for a in command)
    assert command[-1] == "--rknn-matrix=rknn-rerun.json"
    assert "--rknn-timeout" in command and "60" in command
    assert "--rknn-forms=manual" not in command and "--rknn-toolkits=2.3.2,2.5.0" not in command
    result = suite.runpytest_subprocess("-p", "fake_toolkits", *command[2:])
    result.assert_outcomes(passed=1)
    (again,) = Matrix.load(suite.path / "rknn-rerun.json").cells
    assert again.key == (VARIANT, "rk3588", "2.5.0", "fp16")


def test_a_rerun_keeps_a_local_wheel_and_pins_a_user_model() -> None:
    cell = make_cell({"form": "model", "path": "/m/enc oder.onnx"}, "rk3566", "2.1.0", "crash")
    args = ["cases/", "--rknn-toolkits", "2.1.0=./tk-2.1.0.whl,2.3.2", "--rknn-html=x.html"]
    args += ["--rknn-shard=1/3"]
    command = shlex.split(rerun_command("cases/", args, cell))
    assert "--rknn-toolkits=2.1.0=./tk-2.1.0.whl" in command
    assert "--rknn-model=/m/enc oder.onnx" in command
    assert not any(a.startswith("--rknn-html") or a.startswith("--rknn-variant") for a in command)
    plain = shlex.split(rerun_command("t.py::test_x", args))
    assert plain == [
        "pytest",
        "t.py::test_x",
        "--rknn-toolkits",
        "2.1.0=./tk-2.1.0.whl,2.3.2",
        "--rknn-matrix=rknn-rerun.json",
    ]

"""Tests of the exporter environment: its recipe, states, command line, and the real one.

The unit tests use temporary roots. The ``toolkit``-marked tests build (or find) the real
exporter environment in the default root and export with all three torch exporters.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from envs_support import cut_network, partial_copy, provision_while_another_builds
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pytest_rknn.cli import main
from pytest_rknn.envs import (
    EnvState,
    ExporterEnv,
    ToolkitEnv,
    default_root,
    exporter_env,
    get_envs,
    provision,
)
from pytest_rknn.envs.recipes import (
    EXPORTER_RECIPE,
    ToolkitRequest,
    TorchSpec,
    exporter_requirements,
)
from pytest_rknn.variants.export_process import shared_exports
from pytest_rknn.variants.spec import EXPORTERS, VariantSpec
from pytest_rknn.variants.torch_export import (
    ExportInfo,
    export_many,
    interpreter_stamp,
)

# A small grouped-query attention for the dynamo exporter (a few seconds per batch).
SMALL_DYNAMO = dict(num_kv_heads=2, q_len=8, kv_len=8, head_dim=16, exporter="dynamo")
# Two dynamo exports of a batch; the second finds the first's registry (and warm-up).
DYNAMO_FIRST = VariantSpec(form="torch-export", batch=1, num_heads=4, **SMALL_DYNAMO)
DYNAMO_LATER = VariantSpec(form="torch-export", batch=2, num_heads=2, mask="causal", **SMALL_DYNAMO)


def hint(root: Path, rebuild: bool = False) -> str:
    """The command an environment under ``root`` (not the default folder) names as its fix."""
    flag = " --rebuild" if rebuild else ""
    return f"run `pytest-rknn envs{flag} --rknn-envs {root} --toolkits none`"


@pytest.fixture(autouse=True)
def _default_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PYTEST_RKNN_TORCH", "PYTEST_RKNN_TORCH_INDEX", "PYTEST_RKNN_TOOLKITS"):
        monkeypatch.delenv(name, raising=False)


def test_requirements_are_the_tables_exact_pins() -> None:
    requirements = [Requirement(text) for text in exporter_requirements()]
    names = [canonicalize_name(req.name) for req in requirements]
    assert names == [
        "onnxscript",
        "onnx-ir",
        "ml-dtypes",
        "onnx",
        "numpy",
        "transformers",
        "huggingface-hub",
        "tokenizers",
        "safetensors",
    ]
    assert all(str(req.specifier).startswith("==") for req in requirements)
    assert "torch" not in names


def test_missing_then_interrupted(tmp_path: Path) -> None:
    env = exporter_env(tmp_path)
    assert env.state is EnvState.MISSING
    assert env.reason == f"not created yet; {hint(tmp_path)}"
    assert env.python == tmp_path / "exporter-cp311" / "bin" / "python"
    assert env.lock_path == tmp_path / ".locks" / "exporter-cp311.lock"
    env.path.mkdir()
    assert env.verify() is EnvState.INCOMPLETE
    row = env.describe()
    assert (row["kind"], row["version"], row["state"], row["onnxscript"]) == (
        "exporter",
        "exporter",
        "incomplete",
        "-",
    )


def test_recipe_follows_the_table_and_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ExporterEnv(tmp_path, TorchSpec())
    same = base.recipe_hash()
    other_torch = ExporterEnv(tmp_path, TorchSpec("torch==2.4.0")).recipe_hash()
    toolkit = ToolkitEnv(ToolkitRequest("2.3.2"), tmp_path, TorchSpec()).recipe_hash()
    pins = {**EXPORTER_RECIPE["pin"], "onnxscript": "==0.7.1"}
    monkeypatch.setitem(EXPORTER_RECIPE, "pin", pins)
    other_pins = base.recipe_hash()
    assert len({same, other_torch, toolkit, other_pins}) == 4
    assert "onnxscript==0.7.1" in exporter_requirements()


def test_a_marker_of_other_pins_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = ExporterEnv(tmp_path, TorchSpec())
    env.path.mkdir()
    env.marker_path.write_text(json.dumps({"recipe_hash": env.recipe_hash(), "smoke": {}}))
    assert env.verify() is EnvState.BROKEN
    assert env.reason.endswith(hint(tmp_path, rebuild=True))
    monkeypatch.setitem(EXPORTER_RECIPE, "pin", {**EXPORTER_RECIPE["pin"], "numpy": "==2.0.2"})
    assert env.verify() is EnvState.STALE
    assert (
        env.reason == f"built by another recipe (torch, pins or Python changed); {hint(tmp_path)}"
    )


def test_a_python_without_torch_fails_the_smoke_export(tmp_path: Path) -> None:
    env = ExporterEnv(tmp_path, TorchSpec())
    env.python.parent.mkdir(parents=True)
    env.python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    env.python.chmod(0o755)
    smoke = env.smoke_test()
    assert smoke["ok"] is False
    assert smoke["detail"].startswith(f"ExportProcessError: torch export with {env.python} failed")
    assert "No module named 'torch'" in smoke["detail"]
    env.marker_path.write_text(
        json.dumps({"recipe_hash": env.recipe_hash(), "dist_info": {}, "smoke": smoke})
    )
    assert env.verify() is EnvState.SMOKE_FAILED
    assert env.reason.startswith("smoke export failed: ExportProcessError: ")
    assert env.reason.endswith(hint(tmp_path, rebuild=True))


def test_get_envs_lists_it_after_the_toolkits(tmp_path: Path) -> None:
    requests = [ToolkitRequest("2.2.0"), ToolkitRequest("2.5.0")]
    envs = get_envs(requests, root=tmp_path / "envs", create=False, exporter=True)
    assert [(env.kind, env.label, env.state) for env in envs] == [
        ("toolkit", "2.2.0", EnvState.MISSING),
        ("toolkit", "2.5.0", EnvState.MISSING),
        ("exporter", "exporter", EnvState.MISSING),
    ]
    assert len(get_envs(requests, root=tmp_path / "envs", create=False)) == 2
    assert not (tmp_path / "envs").exists()


def test_cli_check_shows_the_exporter_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["envs", "--check", "--toolkits", "none", "--rknn-envs", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "onnxscript" in out
    assert f"exporter: missing: not created yet; {hint(tmp_path)}" in out
    assert "0 of 1 environments usable" in out
    argv = ["envs", "--check", "--json", "--toolkits", "2.3.2", "--rknn-envs", str(tmp_path)]
    assert main(argv) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [(row["kind"], row["version"]) for row in rows] == [
        ("toolkit", "2.3.2"),
        ("exporter", "exporter"),
    ]
    assert main([*argv, "--no-exporter"]) == 1
    assert [row["kind"] for row in json.loads(capsys.readouterr().out)] == ["toolkit"]
    assert not any(tmp_path.iterdir())


def test_cli_asked_for_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["envs", "--toolkits", "none", "--no-exporter", "--rknn-envs", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "pytest-rknn envs: error: --toolkits none with --no-exporter names no environment; drop one"
    )


def test_unreachable_registry_fails_it_beside_a_toolkit_env_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cut_network(monkeypatch)
    toolkit, exporter = provision([ToolkitRequest("2.3.2")], root=tmp_path, exporter=True)
    assert (toolkit.kind, exporter.kind) == ("toolkit", "exporter")
    for env in (toolkit, exporter):
        assert env.state is EnvState.FAILED
        assert env.reason.startswith("cannot reach the package registry: ")
        assert f"(log: {tmp_path / 'logs' / env.name}.log)" in env.reason
        assert "\n" not in env.reason
    err = capsys.readouterr().err
    assert "exporter: failed cannot reach the package registry: " in err
    assert "2.3.2: failed cannot reach the package registry: " in err


@pytest.fixture(scope="module")
def real_exporter() -> ExporterEnv:
    """The exporter environment in the default root, built if missing (about a minute)."""
    (env,) = get_envs([], create=True, exporter=True)
    assert isinstance(env, ExporterEnv)
    assert env.state is EnvState.OK, env.reason
    return env


@pytest.mark.toolkit
def test_real_exporter_env_verifies_fast_and_lists_its_pins(real_exporter: ExporterEnv) -> None:
    start = time.perf_counter()
    again = exporter_env()
    seconds = time.perf_counter() - start
    assert again.state is EnvState.OK
    assert seconds < 0.5
    assert again.path == default_root() / "exporter-cp311"
    probe = "import json, sys; from importlib.metadata import version as v; "
    probe += "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    names = ["torch", *EXPORTER_RECIPE["pin"]]
    actual = json.loads(
        subprocess.run(
            [str(again.python), "-I", "-c", probe, *names],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for name, pin in EXPORTER_RECIPE["pin"].items():
        assert f"=={actual[name]}" == pin
    row = again.describe()
    assert (row["torch"], row["onnx"], row["onnxscript"]) == (
        actual["torch"],
        actual["onnx"],
        actual["onnxscript"],
    )
    assert row["smoke"]["ok"] is True


@pytest.mark.toolkit
def test_real_exporter_env_exports_with_every_exporter(
    real_exporter: ExporterEnv, tmp_path: Path
) -> None:
    base = dict(batch=1, num_heads=4, num_kv_heads=2, q_len=8, kv_len=8, head_dim=16)
    specs = [
        VariantSpec(form="torch-export", exporter=name, mask="causal", layout="bshd", **base)
        for name in EXPORTERS
    ]
    jobs = [(spec, tmp_path / f"{spec.id}.onnx", spec.exporter) for spec in specs]
    outcomes = export_many(jobs, real_exporter.python)
    opsets = {}
    for spec, outcome in zip(specs, outcomes, strict=True):
        assert isinstance(outcome, ExportInfo), outcome
        assert outcome.torch_version == real_exporter.describe()["torch"]
        model = onnx.load(str(outcome.path))
        onnx.checker.check_model(model)
        opsets[spec.exporter] = (outcome.opset, model.opset_import[0].version)
    assert opsets == {"torchscript": (17, 17), "dynamo": (17, 17), "dynamo-opset23": (23, 23)}
    where = "import torch, onnxscript; print(torch.__file__); print(onnxscript.__file__)"
    sources = subprocess.run(
        [str(real_exporter.python), "-I", "-B", "-c", where],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # The batch left its imports' bytecode: the next batch imports them in a third of the time.
    assert all(Path(importlib.util.cache_from_source(path)).is_file() for path in sources)
    attention = onnx.load(str(jobs[2][1]))
    assert "Attention" in {node.op_type for node in attention.graph.node}


@pytest.mark.toolkit
def test_a_batchs_later_dynamo_exports_are_the_models_a_fresh_exporter_makes(
    real_exporter: ExporterEnv, tmp_path: Path
) -> None:
    """The batch reuses the operator registry its first dynamo export made."""
    first, later = DYNAMO_FIRST, DYNAMO_LATER
    together = [(s, tmp_path / "batch" / f"{s.id}.onnx", s.exporter) for s in (first, later)]
    alone = [(later, tmp_path / "alone" / f"{later.id}.onnx", later.exporter)]
    for jobs in (together, alone):
        jobs[0][1].parent.mkdir()
        outcomes = export_many(jobs, real_exporter.python)
        assert all(isinstance(outcome, ExportInfo) for outcome in outcomes), outcomes
    assert together[1][1].read_bytes() == alone[0][1].read_bytes()


@pytest.mark.toolkit
def test_a_shared_export_process_makes_the_models_a_process_of_its_own_makes(
    real_exporter: ExporterEnv, tmp_path: Path
) -> None:
    """A run's second batch finds torch imported and torch.export warmed up by the first."""
    scripted = VariantSpec(
        form="torch-export", batch=1, num_heads=2, **{**SMALL_DYNAMO, "exporter": "torchscript"}
    )
    made = {}
    for mode in ("alone", "shared"):
        folder = tmp_path / mode
        folder.mkdir()
        with shared_exports() if mode == "shared" else contextlib.nullcontext():
            for spec in (DYNAMO_FIRST, DYNAMO_LATER, scripted):
                (outcome,) = export_many(
                    [(spec, folder / f"{spec.id}.onnx", spec.exporter)], real_exporter.python
                )
                assert isinstance(outcome, ExportInfo), outcome
        made[mode] = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sum(name.endswith(".onnx") for name in made["alone"]) == 3
    assert made["shared"] == made["alone"]


@pytest.mark.toolkit
def test_provision_waits_for_another_process_building_the_exporter(
    real_exporter: ExporterEnv, tmp_path: Path
) -> None:
    copy = partial_copy(real_exporter, tmp_path)
    assert copy.verify() is EnvState.OK
    envs, waited = provision_while_another_builds(copy, [], exporter=True)
    assert [(env.kind, env.state) for env in envs] == [("exporter", EnvState.OK)]
    assert 0.5 < waited < 20
    assert not (tmp_path / "logs").exists()


def test_a_rebuilt_exporter_environment_exports_again(tmp_path: Path) -> None:
    """A venv's ``bin/python`` links to the base Python, whose file never changes: the stamp of
    its exports follows the link itself and the environment's marker (its packages)."""
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    marker = tmp_path / "env" / "pytest-rknn-env.json"
    marker.write_text('{"packages": {"torch": "2.13.0"}}')
    first = interpreter_stamp(python)
    assert interpreter_stamp(python) == first
    marker.write_text('{"packages": {"torch": "2.14.1"}}')
    other_torch = interpreter_stamp(python)
    python.unlink()
    python.symlink_to(sys.executable)
    os.utime(python, ns=(1, 1), follow_symlinks=False)
    assert len({first, other_torch, interpreter_stamp(python)}) == 3
    assert interpreter_stamp(Path(sys.executable)), "an interpreter of no managed environment"


@pytest.mark.toolkit
def test_an_export_batch_runs_where_the_scripts_folder_is_not_on_sys_path(
    real_exporter: ExporterEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under PYTHONSAFEPATH the scripts cannot import ``export_registry``: no reuse, no failure."""
    monkeypatch.setenv("PYTHONSAFEPATH", "1")
    spec = VariantSpec(form="torch-export", batch=1, num_heads=2, **SMALL_DYNAMO)
    (outcome,) = export_many([(spec, tmp_path / "m.onnx", "dynamo")], real_exporter.python)
    assert isinstance(outcome, ExportInfo), outcome
    onnx.checker.check_model(onnx.load(str(outcome.path)))

"""Unit tests of building environments: pip and uv failures read into one line, the disk check,
and the states of environments that do not exist or never finished."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from envs_support import cut_network

import pytest_rknn.envs.provisioning as envs_module
from pytest_rknn.envs import EnvError, EnvState, ToolkitEnv, check_disk, default_root, get_envs
from pytest_rknn.envs.install import (
    BuildError,
    failure_reason,
    registry_failure,
    run_logged,
)
from pytest_rknn.envs.installers import PipInstaller, UvInstaller, find_uv
from pytest_rknn.envs.pipconf import PipSources
from pytest_rknn.envs.recipes import ToolkitRequest, TorchSpec


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route pip through a proxy port where nothing listens, without retries."""
    cut_network(monkeypatch)


def test_unreachable_registry_is_named_with_the_fix(no_network: None, tmp_path: Path) -> None:
    log = io.StringIO()
    with pytest.raises(BuildError) as info:
        PipInstaller().install(
            Path(sys.executable),
            ["--dry-run", "--no-deps", "rknn-toolkit2==2.3.2"],
            log,
            "pip install rknn-toolkit2",
            pip_log=tmp_path / "pip.log",
        )
    message = str(info.value)
    assert message.startswith("cannot reach the package registry: ")
    assert "(cannot connect to the proxy)" in message
    assert message.endswith("check network/proxy or pip config (pip config list)")
    assert "No matching distribution found for rknn-toolkit2==2.3.2" in log.getvalue()


def _uv_failure(tmp_path: Path, sources: PipSources, flag: str) -> pytest.ExceptionInfo:
    """The BuildError of a ``uv pip install --dry-run FLAG rknn-toolkit2`` that must fail."""
    binary = find_uv()
    assert binary is not None, "uv is a dependency of pytest-rknn: pip install uv"
    uv = UvInstaller(binary, tmp_path / "uv-cache", sources)
    with pytest.raises(BuildError) as info:
        uv.install(
            Path(sys.executable),
            ["--dry-run", flag, "rknn-toolkit2==2.3.2"],
            io.StringIO(),
            "pip install rknn-toolkit2",
        )
    return info


def test_uv_unreachable_registry_is_named_the_same_way(
    no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    info = _uv_failure(tmp_path, PipSources(), "--no-deps")
    assert str(info.value) == (
        "cannot reach the package registry: https://pypi.org/simple/rknn-toolkit2/ (cannot "
        "connect to the proxy); check network/proxy or pip config (pip config list)"
    )
    assert not info.value.no_space


def test_uv_errors_come_back_as_their_first_line(tmp_path: Path) -> None:
    info = _uv_failure(tmp_path, PipSources(find_links=(str(tmp_path),)), "--no-index")
    message = str(info.value)
    assert message.startswith("uv pip install rknn-toolkit2 failed (exit 1): error: ")
    assert "rknn-toolkit2" in message and "\n" not in message


def test_a_real_pip_error_comes_back_as_its_first_error_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-index", "--find-links", str(tmp_path)]
    cmd += ["--dest", str(tmp_path), "rknn-toolkit2==2.3.2"]
    with pytest.raises(BuildError) as info:
        run_logged(cmd, io.StringIO(), "pip download")
    assert str(info.value) == (
        "pip download failed (exit 1): ERROR: Could not find a version that satisfies the "
        "requirement rknn-toolkit2==2.3.2 (from versions: none)"
    )


def test_a_command_that_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="python -m venv could not start"):
        run_logged([str(tmp_path / "no-python"), "-m", "venv"], io.StringIO(), "python -m venv")


def test_classifier_ignores_index_misses_and_spots_a_full_disk() -> None:
    miss = "Could not fetch URL https://download.pytorch.org/whl/cpu/scipy/: 403 Client Error"
    assert registry_failure(miss) is None
    lines = ["ERROR: Could not install packages due to an OSError: [Errno 28] No space left"]
    reason = failure_reason("pip install requirements", 1, lines, None)
    assert reason.startswith("no space left on device during pip install requirements;")
    dns = (
        "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError("
        "'<x at 0x7f>: Failed to establish a new connection: [Errno -2] Name or service not "
        "known')': /simple/onnx/"
    )
    assert registry_failure(dns) == "host name not resolved"


def test_disk_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_disk(tmp_path / "not" / "yet", 0)
    monkeypatch.setattr(envs_module, "ENV_DISK_BYTES", 1 << 60)
    with pytest.raises(EnvError) as info:
        check_disk(tmp_path / "envs", 2)
    message = str(info.value)
    assert message.startswith(f"not enough disk space under {tmp_path / 'envs'}: ")
    assert "for 2 environment(s)" in message
    assert "--rknn-envs" in message


def test_default_root_follows_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RKNN_ENVS", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv("PYTEST_RKNN_ENVS")
    assert default_root().parts[-2:] == ("pytest-rknn", "envs")


def test_missing_and_interrupted_environments(tmp_path: Path) -> None:
    env = ToolkitEnv(ToolkitRequest("2.3.2"), tmp_path, TorchSpec())
    assert env.verify() is EnvState.MISSING
    assert (
        env.reason
        == f"not created yet; run `pytest-rknn envs --rknn-envs {tmp_path} --toolkits 2.3.2`"
    )
    assert env.python == tmp_path / "rknn-2.3.2-cp311" / "bin" / "python"
    env.path.mkdir()
    assert env.verify() is EnvState.INCOMPLETE
    assert "did not finish" in env.reason
    row = env.describe()
    assert (row["version"], row["state"], row["torch"]) == ("2.3.2", "incomplete", "-")


def test_get_envs_without_create_only_looks(tmp_path: Path) -> None:
    root = tmp_path / "envs"
    envs = get_envs([ToolkitRequest("2.2.0"), ToolkitRequest("2.5.0")], root=root, create=False)
    assert [(e.version, e.state) for e in envs] == [
        ("2.2.0", EnvState.MISSING),
        ("2.5.0", EnvState.MISSING),
    ]
    assert not root.exists()


def test_recipe_hash_changes_with_torch_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_RKNN_TORCH", raising=False)
    monkeypatch.delenv("PYTEST_RKNN_TORCH_INDEX", raising=False)
    base = ToolkitEnv(ToolkitRequest("2.3.2"), tmp_path, TorchSpec())
    other_torch = ToolkitEnv(ToolkitRequest("2.3.2"), tmp_path, TorchSpec("torch==2.4.0"))
    index = ToolkitEnv(ToolkitRequest("2.3.2"), tmp_path, TorchSpec(index="https://x/cpu"))
    other_version = ToolkitEnv(ToolkitRequest("2.3.0"), tmp_path, TorchSpec())
    hashes = {e.recipe_hash() for e in (base, other_torch, index, other_version)}
    assert len(hashes) == 4
    assert base.recipe_hash() == ToolkitEnv(ToolkitRequest("2.3.2"), tmp_path).recipe_hash()

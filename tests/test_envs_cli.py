"""Tests of the ``pytest-rknn`` console script and its ``envs`` subcommand."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from envs_support import cut_network

import pytest_rknn.envs.provisioning as envs_module
from pytest_rknn.cli.main import SUBCOMMANDS, Subcommand, main, register
from pytest_rknn.envs import default_root, get_envs
from pytest_rknn.envs.recipes import KNOWN_VERSIONS, ToolkitRequest


@pytest.fixture(autouse=True)
def _default_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PYTEST_RKNN_TORCH", "PYTEST_RKNN_TORCH_INDEX", "PYTEST_RKNN_TOOLKITS"):
        monkeypatch.delenv(name, raising=False)


def test_unknown_version_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["envs", "--toolkits", "2.4.0", "--rknn-envs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pytest-rknn envs: error: unknown rknn-toolkit2 version '2.4.0': ")
    assert "\n" not in err


def test_check_lists_missing_environments_with_the_command_that_makes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["envs", "--check", "--toolkits", "2.3.2,2.5.0", "--rknn-envs", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    for column in ("version", "interpreter", "torch", "onnx", "onnxruntime", "state"):
        assert column in out
    flag = f"--rknn-envs {tmp_path}"
    assert f"2.3.2: missing: not created yet; run `pytest-rknn envs {flag} --toolkits 2.3.2`" in out
    assert (
        f"exporter: missing: not created yet; run `pytest-rknn envs {flag} --toolkits none`" in out
    )
    assert "0 of 3 environments usable" in out
    assert not any(tmp_path.iterdir())


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["envs", "--check", "--json", "--toolkits", "all", "--rknn-envs", str(tmp_path)]
    assert main(argv) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [row["version"] for row in rows] == [*KNOWN_VERSIONS, "exporter"]
    assert {row["state"] for row in rows} == {"missing"}
    assert rows[0]["interpreter"] == str(tmp_path / "rknn-2.2.0-cp311" / "bin" / "python")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--jobs", "0"], "'0' is not a positive whole number"),
        (["--torch", "numpy"], "--torch 'numpy' is neither a pip requirement for torch"),
        (["--torch-index", "pytorch.org/cpu"], "is not a URL"),
    ],
)
def test_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    argv = ["envs", "--check", "--rknn-envs", str(tmp_path), *args]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert expected in capsys.readouterr().err


def test_no_disk_space_stops_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(envs_module, "ENV_DISK_BYTES", 1 << 60)
    assert main(["envs", "--toolkits", "2.3.2", "--rknn-envs", str(tmp_path)]) == 2
    assert "error: not enough disk space under" in capsys.readouterr().err
    assert not (tmp_path / "rknn-2.3.2-cp311").exists()


def test_unreachable_registry_fails_that_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cut_network(monkeypatch)
    assert main(["envs", "--toolkits", "2.3.2", "--rknn-envs", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "2.3.2: failed: cannot reach the package registry: " in out
    assert "check network/proxy or pip config" in out
    assert f"log: {tmp_path / 'logs' / 'rknn-2.3.2-cp311.log'}" in out


def test_no_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "envs" in capsys.readouterr().err


def test_registry_takes_new_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name")

    def run(args: argparse.Namespace) -> int:
        print(f"hello {args.name}")
        return 0

    command = register(Subcommand("hello-test", "say hello", configure, run))
    try:
        assert main(["hello-test", "world"]) == 0
        assert capsys.readouterr().out == "hello world\n"
        with pytest.raises(ValueError, match="registered twice"):
            register(Subcommand("hello-test", "again", configure, run))
    finally:
        SUBCOMMANDS.pop(command.name)


@pytest.mark.toolkit
def test_second_call_of_the_console_script_is_fast() -> None:
    requests = [ToolkitRequest(v) for v in KNOWN_VERSIONS]
    envs = get_envs(requests, create=False, exporter=True)
    if not all(env.usable for env in envs):
        pytest.skip(f"not all environments usable in {default_root()}: pytest-rknn envs")
    script = shutil.which("pytest-rknn")
    cmd = [script] if script else [sys.executable, "-m", "pytest_rknn.cli"]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, "envs", "--toolkits", "all"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seconds < 2.0
    assert f"{len(envs)} of {len(envs)} environments usable" in proc.stdout


def test_cache_key_changes_with_what_decides_the_environments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def key(*args: str) -> str:
        assert main(["envs", "--cache-key", "--rknn-envs", str(tmp_path), *args]) == 0
        out = capsys.readouterr().out.strip()
        assert out.startswith("rknn-envs-") and "\n" not in out
        return out

    base = key("--toolkits", "2.3.2")
    assert key("--toolkits", "2.3.2") == base, "stable"
    assert not list(tmp_path.iterdir()), "builds nothing"
    others = {
        key("--toolkits", "2.5.0"),
        key("--toolkits", "2.3.2,2.5.0"),
        key("--toolkits", "2.3.2", "--no-exporter"),
        key("--toolkits", "2.3.2", "--torch", "torch==2.12.0"),
    }
    monkeypatch.setenv("PYTEST_RKNN_INSTALLER", "pip")
    others.add(key("--toolkits", "2.3.2"))
    assert base not in others and len(others) == 5

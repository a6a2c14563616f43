"""Tests on the real toolkit environments built by ``pytest-rknn envs`` in the default root.

They skip, saying how to create the environments, when none exist. The slow one builds an
environment from a wheel file from scratch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from envs_support import partial_copy, provision_while_another_builds

from pytest_rknn.envs import EnvState, ToolkitEnv, default_root, get_envs, provision
from pytest_rknn.envs.recipes import KNOWN_VERSIONS, ToolkitRequest, TorchSpec

pytestmark = pytest.mark.toolkit


@pytest.fixture(scope="module")
def real_envs() -> list[ToolkitEnv]:
    envs = get_envs([ToolkitRequest(v) for v in KNOWN_VERSIONS], create=False)
    usable = [env for env in envs if env.usable]
    if not usable:
        pytest.skip(f"no toolkit environments in {default_root()}; create them: pytest-rknn envs")
    return usable


def test_second_look_is_fast(real_envs: list[ToolkitEnv]) -> None:
    start = time.perf_counter()
    envs = get_envs([env.request for env in real_envs], create=False)
    again = provision([env.request for env in real_envs])
    seconds = time.perf_counter() - start
    assert all(env.state is EnvState.OK for env in envs + again)
    assert seconds < 2.0


def test_describe_matches_the_packages_in_the_environment(real_envs: list[ToolkitEnv]) -> None:
    probe = (
        "import json; from importlib.metadata import version as v; "
        "print(json.dumps({n: v(n) for n in ('rknn-toolkit2', 'torch', 'onnx', 'onnxruntime')}))"
    )
    for env in real_envs:
        out = subprocess.run(
            [str(env.python), "-I", "-c", probe], capture_output=True, text=True, check=True
        ).stdout
        actual = json.loads(out)
        row = env.describe()
        assert actual["rknn-toolkit2"] == row["version"] == env.version
        assert (row["torch"], row["onnx"], row["onnxruntime"]) == (
            actual["torch"],
            actual["onnx"],
            actual["onnxruntime"],
        )
        assert row["state"] == "ok"
        assert row["smoke"]["ok"] is True
        assert row["interpreter"] == str(env.python)


def test_another_torch_makes_the_environment_stale(real_envs: list[ToolkitEnv]) -> None:
    env = real_envs[0]
    other = ToolkitEnv(env.request, env.root, TorchSpec("torch==2.4.0"))
    assert other.verify() is EnvState.STALE
    assert f"run `pytest-rknn envs --toolkits {env.version}`" in other.reason


def test_vanished_files_make_it_broken(real_envs: list[ToolkitEnv], tmp_path: Path) -> None:
    copy = partial_copy(real_envs[0], tmp_path)
    assert copy.verify() is EnvState.OK
    (copy.path / copy.marker["dist_info"]["rknn-toolkit2"]).unlink()
    assert copy.verify() is EnvState.BROKEN
    assert copy.reason.startswith("rknn-toolkit2 is no longer installed in it; ")
    assert f"pytest-rknn envs --rebuild --rknn-envs {copy.root} --toolkits {copy.version}" in (
        copy.reason
    )
    copy.python.unlink()
    assert copy.verify() is EnvState.BROKEN
    assert f"its interpreter {copy.python} is gone" in copy.reason


def test_provision_waits_for_another_process_building_it(
    real_envs: list[ToolkitEnv], tmp_path: Path
) -> None:
    copy = partial_copy(real_envs[0], tmp_path)
    envs, waited = provision_while_another_builds(copy, [copy.request])
    assert [env.state for env in envs] == [EnvState.OK]
    assert 0.5 < waited < 20
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_build_from_a_wheel_file(tmp_path: Path) -> None:
    download = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--dest"]
    subprocess.run([*download, str(tmp_path / "dl"), "rknn-toolkit2==2.3.2"], check=True)
    wheels = sorted((tmp_path / "dl").glob("rknn_toolkit2-2.3.2-*.whl"))
    request = ToolkitRequest("2.3.2", wheel=wheels[0])
    (env,) = provision([request], root=tmp_path / "envs", jobs=1)
    assert env.state is EnvState.OK, env.reason
    row = env.describe()
    assert row["source"] == "wheel"
    assert row["smoke"]["ok"] is True
    assert row["onnx"] == "1.18.0"
    assert row["installer"].startswith("uv ")

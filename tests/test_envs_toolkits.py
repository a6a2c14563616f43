"""Unit tests of pytest_rknn.envs.recipes: the --toolkits syntax, wheel checks, the recipe table and
the requirement lists it derives from real wheel metadata."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name

from pytest_rknn.envs import EnvState, ToolkitEnv, default_root
from pytest_rknn.envs.recipes import (
    DEFAULT_TORCH,
    KNOWN_VERSIONS,
    RECIPES,
    ToolkitError,
    ToolkitRequest,
    TorchSpec,
    derive_requirements,
    parse_toolkits,
)

# Requires-Dist of the registry's cp311 wheels, captured from their METADATA files.
_COMMON = """\
Requires-Dist: protobuf <=4.25.4,>={protobuf}
Requires-Dist: psutil >=5.9.0
Requires-Dist: ruamel.yaml >=0.17.21
Requires-Dist: scipy >=1.9.3
Requires-Dist: tqdm >=4.64.1
Requires-Dist: opencv-python >=4.5.5.64
Requires-Dist: fast-histogram >=0.11
Requires-Dist: numpy <=1.26.4
Requires-Dist: onnx {onnx}
Requires-Dist: onnxruntime {ort}
Requires-Dist: torch {torch}
"""
METADATA = {
    version: f"Metadata-Version: 2.1\nName: rknn-toolkit2\nVersion: {version}\n"
    + _COMMON.format(**fields)
    for version, fields in {
        "2.2.0": dict(protobuf="4.21.0", onnx="==1.14.1", ort="==1.16.0", torch="<=2.1.0,>=1.13.1"),
        "2.3.0": dict(protobuf="4.21.6", onnx=">=1.10.0", ort=">=1.15.0", torch="<=2.4.0,>=1.10.1"),
        "2.3.2": dict(protobuf="4.21.6", onnx=">=1.16.1", ort=">=1.10.0", torch="<=2.4.0,>=1.10.1"),
        "2.5.0": dict(
            protobuf="4.21.6", onnx="<=1.18.0,>=1.16.1", ort=">=1.17.0", torch="<=2.4.0,>=1.10.1"
        ),
    }.items()
}
HERE_TAG = next(t for t in itertools.islice(sys_tags(), 40) if "manylinux" in t.platform)


def make_wheel(folder: Path, filename: str, metadata: str) -> Path:
    """A wheel-shaped zip holding only METADATA: input for name/tag/metadata checks."""
    path = folder / filename
    dist_info = "-".join(filename.split("-")[:2]) + ".dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{dist_info}/METADATA", metadata)
    return path


def as_dict(requirements: list[str]) -> dict[str, str]:
    parsed = [Requirement(r) for r in requirements]
    return {canonicalize_name(r.name): str(r.specifier) for r in parsed}


def test_versions_in_given_order_and_all_expands_to_the_table() -> None:
    assert [r.version for r in parse_toolkits("2.5.0, 2.2.0")] == ["2.5.0", "2.2.0"]
    assert [r.version for r in parse_toolkits("all")] == list(KNOWN_VERSIONS)
    assert set(KNOWN_VERSIONS) == set(RECIPES) - {"*"}
    assert [r.version for r in parse_toolkits("2.3.2,all")][0] == "2.3.2"
    assert len(parse_toolkits("2.3.2,all")) == len(KNOWN_VERSIONS)


@pytest.mark.parametrize("text", ["2.3", "2.4.0", "latest"])
def test_unknown_version_lists_the_known_ones_and_the_wheel_syntax(text: str) -> None:
    with pytest.raises(ToolkitError) as info:
        parse_toolkits(text)
    message = str(info.value)
    assert f"unknown rknn-toolkit2 version {text!r}" in message
    assert all(v in message for v in KNOWN_VERSIONS)
    assert "VERSION=PATH.whl" in message
    assert "\n" not in message


def test_empty_list_and_pip_syntax_are_errors() -> None:
    with pytest.raises(ToolkitError, match="no toolkit versions given"):
        parse_toolkits(" , ")
    with pytest.raises(ToolkitError, match="give just the version, e.g. '2.3.2'"):
        parse_toolkits("rknn-toolkit2==2.3.2")


@pytest.mark.skipif(importlib.util.find_spec("rknn") is not None, reason="rknn is installed here")
def test_installed_without_a_toolkit_names_the_interpreter() -> None:
    with pytest.raises(ToolkitError) as info:
        parse_toolkits("installed")
    assert sys.executable in str(info.value)
    assert "not importable" in str(info.value)


def test_wheel_of_an_unknown_version_is_accepted(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path, f"rknn_toolkit2-2.1.0-{HERE_TAG}.whl", METADATA["2.3.0"].replace("2.3.0", "2.1.0")
    )
    (request,) = parse_toolkits(f"2.1.0={wheel}")
    assert request == ToolkitRequest("2.1.0", wheel=wheel.resolve())
    assert request.source == "wheel"
    assert str(request) == f"2.1.0={wheel.resolve()}"


def test_wheel_for_another_python_says_which_tag_it_has_and_which_is_needed(
    tmp_path: Path,
) -> None:
    wheel = make_wheel(tmp_path, "rknn_toolkit2-1.6.0-cp38-cp38-linux_x86_64.whl", "")
    with pytest.raises(ToolkitError) as info:
        parse_toolkits(f"1.6.0={wheel}")
    message = str(info.value)
    assert "is built for cp38-cp38-linux_x86_64" in message
    assert str(HERE_TAG) in message


def test_wheel_for_another_architecture(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "rknn_toolkit2-2.3.2-cp311-cp311-linux_aarch64.whl", "")
    with pytest.raises(ToolkitError, match="built for cp311-cp311-linux_aarch64"):
        parse_toolkits(f"2.3.2={wheel}")


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("2.1.0={tmp}/missing.whl", "wheel file not found"),
        ("2.1.0={tmp}/notes.txt", "is not a wheel file"),
        ("two={tmp}/x.whl", "'two' is not a version number"),
    ],
)
def test_bad_wheel_items(tmp_path: Path, item: str, expected: str) -> None:
    with pytest.raises(ToolkitError, match=expected):
        parse_toolkits(item.format(tmp=tmp_path))


def test_wheel_of_another_project_or_version(tmp_path: Path) -> None:
    other = make_wheel(tmp_path, f"rknn_toolkit_lite2-2.3.2-{HERE_TAG}.whl", "")
    with pytest.raises(ToolkitError, match="is a wheel of rknn-toolkit-lite2, not rknn-toolkit2"):
        parse_toolkits(f"2.3.2={other}")
    wheel = make_wheel(tmp_path, f"rknn_toolkit2-2.3.2-{HERE_TAG}.whl", METADATA["2.3.2"])
    with pytest.raises(ToolkitError, match="the wheel is rknn-toolkit2 2.3.2, not 2.3.0; write"):
        parse_toolkits(f"2.3.0={wheel}")


def test_a_version_asked_for_twice_in_two_ways(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, f"rknn_toolkit2-2.3.2-{HERE_TAG}.whl", METADATA["2.3.2"])
    assert parse_toolkits("2.3.2,2.3.2") == [ToolkitRequest("2.3.2")]
    with pytest.raises(ToolkitError, match="toolkit 2.3.2 is asked for twice"):
        parse_toolkits(f"2.3.2,2.3.2={wheel}")


@pytest.mark.parametrize("version", KNOWN_VERSIONS)
def test_requirements_follow_the_wheel_and_the_table(version: str) -> None:
    reqs = as_dict(derive_requirements(version, METADATA[version]))
    assert "torch" not in reqs
    assert "opencv-python" not in reqs
    assert reqs["opencv-python-headless"] == ">=4.5.5.64"
    assert reqs["setuptools"] == "<81"
    assert reqs["numpy"] == "<=1.26.4"
    declared = {
        canonicalize_name(Requirement(line.split(": ", 1)[1]).name)
        for line in METADATA[version].splitlines()
        if line.startswith("Requires-Dist")
    }
    assert declared - {"torch", "opencv-python"} <= set(reqs)


def test_known_pins_per_version() -> None:
    pins = {v: as_dict(derive_requirements(v, METADATA[v])) for v in KNOWN_VERSIONS}
    assert "==1.14.1" in pins["2.2.0"]["onnx"]
    assert "==1.16.0" in pins["2.2.0"]["onnxruntime"]
    for version in ("2.3.0", "2.3.2", "2.5.0"):
        assert pins[version]["onnx"] == "==1.18.0"
    assert pins["2.3.2"]["protobuf"] == "<=4.25.4,>=4.21.6"
    assert pins["2.2.0"]["protobuf"] == "<=4.25.4,>=4.21.0"


def test_unknown_version_gets_the_generic_caps() -> None:
    metadata = METADATA["2.3.0"].replace("2.3.0", "2.1.0")
    reqs = as_dict(derive_requirements("2.1.0", metadata))
    assert reqs["onnx"] == "<=1.18.0,>=1.10.0"
    assert reqs["onnxruntime"] == "<1.20,>=1.15.0"
    assert "torch" not in reqs


def test_markers_for_other_pythons_are_dropped() -> None:
    metadata = METADATA["2.3.2"] + 'Requires-Dist: tomli ; python_version < "3.0"\n'
    assert "tomli" not in as_dict(derive_requirements("2.3.2", metadata))


@pytest.mark.toolkit
@pytest.mark.parametrize("version", KNOWN_VERSIONS)
def test_fixture_metadata_matches_the_real_wheels(version: str) -> None:
    """The METADATA fixtures equal the real wheels' (as installed in the built environments)."""
    env = ToolkitEnv(ToolkitRequest(version), default_root())
    if env.verify() is not EnvState.OK:
        pytest.skip(f"no usable rknn-toolkit2 {version} environment: run `pytest-rknn envs`")
    real = derive_requirements(version, env.installed_metadata())
    assert real == derive_requirements(version, METADATA[version])


def test_torch_spec_defaults_env_and_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_RKNN_TORCH", raising=False)
    monkeypatch.delenv("PYTEST_RKNN_TORCH_INDEX", raising=False)
    assert TorchSpec.resolve() == TorchSpec(DEFAULT_TORCH, None)
    monkeypatch.setenv("PYTEST_RKNN_TORCH", "torch==2.4.0")
    monkeypatch.setenv("PYTEST_RKNN_TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
    spec = TorchSpec.resolve()
    assert spec.pip_args() == [
        "torch==2.4.0",
        "--extra-index-url",
        "https://download.pytorch.org/whl/cpu",
    ]
    assert TorchSpec.resolve("torch>=2").spec == "torch>=2"
    assert spec.key() != TorchSpec.resolve("torch>=2").key()
    with pytest.raises(ToolkitError, match="neither a pip requirement for torch"):
        TorchSpec.resolve("numpy==1.26.4")
    with pytest.raises(ToolkitError, match="is not a URL"):
        TorchSpec.resolve(index="download.pytorch.org")
    with pytest.raises(ToolkitError, match="wheel file not found"):
        TorchSpec.resolve(str(tmp_path / "torch-2.13.0-cp311-cp311-linux_x86_64.whl"))
    wheel = make_wheel(tmp_path, f"torch-2.13.0-{HERE_TAG}.whl", "")
    monkeypatch.delenv("PYTEST_RKNN_TORCH_INDEX")
    assert TorchSpec.resolve(str(wheel)).pip_args() == [str(wheel.resolve())]

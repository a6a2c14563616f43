"""Fixtures shared by the plugin's own tests: real toolkit environments, built before the tests.

When any collected test carries the ``toolkit`` marker, every environment the tests use (the
four registry toolkits and the exporter) is created or verified once, in parallel, before the
first test runs, so that no integration test skips for want of one on a fresh machine.

Hypothesis profiles for the property tests: ``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``)
derandomizes them and keeps no example database; ``dev`` is the default.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings
from matrix_support import run_matrix

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.variants.strategies import register_profiles

pytest_plugins = ["pytester"]

register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

TEST_TOOLKITS = os.environ.get("PYTEST_RKNN_TEST_TOOLKITS", "all")


def _envs_root() -> Path:
    from pytest_rknn.envs import default_root

    return default_root()


# Read now: pytester points HOME elsewhere while its tests run.
ENVS_ROOT = _envs_root()


def pytest_collection_finish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput") or session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("toolkit") for item in session.items):
        return
    from pytest_rknn.envs import get_envs
    from pytest_rknn.envs.recipes import parse_toolkits

    capman = session.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        envs = get_envs(parse_toolkits(TEST_TOOLKITS), root=ENVS_ROOT, create=True, exporter=True)
    broken = [f"{env.label}: {env.reason}" for env in envs if not env.usable]
    if broken:
        pytest.exit("toolkit environments unusable: " + "; ".join(broken), returncode=1)


@pytest.fixture(scope="session")
def toolkit_python() -> Callable[[str], Path]:
    """``toolkit_python("2.3.2")``: the interpreter of that version's environment.

    The environment is created if it is missing (a minute or two); a version that cannot be
    provisioned here fails the test with the environment's own reason.
    """
    from pytest_rknn.envs import get_envs
    from pytest_rknn.envs.recipes import parse_toolkits

    found: dict[str, Path] = {}

    def get(version: str) -> Path:
        if version not in found:
            (env,) = get_envs(parse_toolkits(version), root=ENVS_ROOT, create=True)
            if not env.usable:
                pytest.fail(f"toolkit {version} environment unusable: {env.reason}")
            found[version] = env.python
        return found[version]

    return get


@pytest.fixture
def rknn_pytester(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, toolkit_python
) -> pytest.Pytester:
    """A pytester folder whose runs find the real toolkit environments (2.3.2 ready)."""
    from pytest_rknn.envs import ENVS_ENV

    monkeypatch.setenv(ENVS_ENV, str(ENVS_ROOT))
    toolkit_python("2.3.2")
    return pytester


@pytest.fixture
def m232() -> Matrix:
    """The matrix a CI job of toolkit 2.3.2 writes (``matrix_support.run_matrix``)."""
    return run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00")


@pytest.fixture
def m220() -> Matrix:
    """The matrix a CI job of toolkit 2.2.0 writes, started earlier and finished later."""
    return run_matrix("2.2.0", "2026-11-25T06:55:00+00:00", "2026-11-25T07:20:00+00:00")

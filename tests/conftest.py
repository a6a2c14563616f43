"""Fixtures shared by the plugin's own tests: real toolkit environments on demand."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# The versions the integration tests use; CI builds these with `pytest-rknn envs` first.
TEST_TOOLKITS = tuple(os.environ.get("PYTEST_RKNN_TEST_TOOLKITS", "2.2.0,2.3.2").split(","))


def _envs_root() -> Path:
    from pytest_rknn.envs import default_root

    return default_root()


# Read now: pytester points HOME elsewhere while its tests run.
ENVS_ROOT = _envs_root()


@pytest.fixture(scope="session")
def toolkit_python() -> Callable[[str], Path]:
    """``toolkit_python("2.3.2")``: the interpreter of that version's environment.

    The environment is created if it is missing (a minute or two); a version that cannot be
    provisioned here fails the test with the environment's own reason.
    """
    from pytest_rknn.envs import get_envs
    from pytest_rknn.toolkits import parse_toolkits

    found: dict[str, Path] = {}

    def get(version: str) -> Path:
        if version not in found:
            (env,) = get_envs(parse_toolkits(version), root=ENVS_ROOT, create=True)
            if not env.usable:
                pytest.fail(f"toolkit {version} environment unusable: {env.reason}")
            found[version] = env.python
        return found[version]

    return get

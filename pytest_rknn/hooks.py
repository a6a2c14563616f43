"""Hooks pytest-rknn adds to pytest (registered with ``pytest_addhooks``)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_rknn_make_toolkits(config: pytest.Config, settings: Any) -> Any:
    """Return the :class:`~pytest_rknn.envs.registry.Toolkits` of the run.

    The default implementation provisions real per-version environments. A test of the protocol
    and fault handling returns a fake here (it must say so in its name and its environment
    descriptions); nothing else should.
    """

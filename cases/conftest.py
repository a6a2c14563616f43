"""The compatibility suite's configuration: build the toolkit environments before any cell runs."""

from __future__ import annotations

import pytest

from pytest_rknn.plugin import provision


def pytest_sessionstart(session: pytest.Session) -> None:
    provision(session.config)

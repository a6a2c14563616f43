"""pytest-rknn's pytest plugin: options, ini keys, markers, fixtures and hooks (host side)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "rknn(**options): per-case options for pytest-rknn cells (tolerance bounds...)"
    )

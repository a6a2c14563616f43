"""The ``pytest-rknn`` command: ``run`` (the matrix), ``envs`` (environments), ``merge`` and
``diff`` (matrices)."""

from pytest_rknn.cli.main import main

__all__ = ["main"]

"""The ``run`` subcommand: the compatibility matrix from an installed plugin, in any folder.

``pytest-rknn run ARGS`` is ``pytest --pyargs pytest_rknn.cases ARGS``: every argument goes to
pytest as it is (``-k``, ``-n 2``, ``--lf``, ``--rknn-model my_bert.onnx``), and the exit status
is pytest's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pytest_rknn.cli.main import Subcommand, register

SUITE = "pytest_rknn.cases"


def pytest_args(args: Sequence[str]) -> list[str]:
    """The pytest command line ``pytest-rknn run ARGS`` stands for (without ``pytest``)."""
    return ["--pyargs", SUITE, *args]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pytest_args",
        nargs=argparse.REMAINDER,
        metavar="PYTEST_ARGS",
        help="passed to pytest as they are: -k, -n 2, --lf, --rknn-model PATH, ...",
    )


def run(args: argparse.Namespace) -> int:
    import pytest

    return int(pytest.main(pytest_args(args.pytest_args)))


COMMAND = register(
    Subcommand(
        "run",
        "run the compatibility matrix: pytest --pyargs pytest_rknn.cases [PYTEST_ARGS]",
        _configure,
        run,
    )
)

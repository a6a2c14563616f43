"""The ``run`` subcommand: the compatibility matrix from an installed plugin, in any folder.

``pytest-rknn run ARGS`` is ``pytest --pyargs pytest_rknn.cases ARGS``: every argument goes to
pytest as it is (``-k``, ``-n 2``, ``--lf``, ``--rknn-model my_bert.onnx``), and the exit status
is pytest's. pytest runs in this process's place (``exec``), in a fresh interpreter that has not
imported the plugin yet (pytest rewrites its asserts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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
    command = [sys.executable, "-m", "pytest", *pytest_args(args.pytest_args)]
    sys.stdout.flush()
    if os.name == "posix":
        os.execv(sys.executable, command)
    return subprocess.call(command)


COMMAND = register(
    Subcommand(
        "run",
        "run the compatibility matrix: pytest --pyargs pytest_rknn.cases [PYTEST_ARGS]",
        _configure,
        run,
    )
)

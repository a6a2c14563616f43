"""The ``pytest-rknn`` console script: a registry of subcommands and ``main``.

A subcommand is a :class:`Subcommand` (name, help, a function adding its arguments, a function
running it) passed to :func:`register`. Modules listed in :data:`COMMAND_MODULES` are imported
before parsing so that they can register theirs. Output piped into a reader that stops early
(``| head``) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_rknn.envs import EnvError
from pytest_rknn.envs.recipes import ToolkitError

COMMAND_MODULES: tuple[str, ...] = (
    "pytest_rknn.cli.envs",
    "pytest_rknn.cli.matrix",
    "pytest_rknn.cli.run",
)


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def register(command: Subcommand) -> Subcommand:
    """Make ``command`` available as ``pytest-rknn NAME``."""
    if command.name in SUBCOMMANDS and SUBCOMMANDS[command.name] != command:
        raise ValueError(f"subcommand {command.name!r} is registered twice")
    SUBCOMMANDS[command.name] = command
    return command


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="pytest-rknn", description="Tools around the pytest-rknn compatibility suite."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in SUBCOMMANDS.values():
        command.configure(sub.add_parser(command.name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pytest-rknn``; returns the exit status (2 for a bad argument)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        # pytest's own arguments, even those argparse would take for its own (-h, -k x).
        args = argparse.Namespace(command="run", pytest_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code = SUBCOMMANDS[args.command].run(args)
        sys.stdout.flush()
        return code
    except (ToolkitError, EnvError) as exc:
        print(f"pytest-rknn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pytest-rknn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, and let no flush at exit fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141

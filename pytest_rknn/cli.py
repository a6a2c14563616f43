"""The ``pytest-rknn`` console script: a registry of subcommands, and the ``envs`` subcommand.

A subcommand is a :class:`Subcommand` (name, help, a function adding its arguments, a function
running it) passed to :func:`register`. Modules listed in :data:`COMMAND_MODULES` are imported
before parsing so that they can register theirs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pytest_rknn.envs import ENVS_ENV, EnvError, default_root, get_envs, provision
from pytest_rknn.toolkits import (
    DEFAULT_TORCH,
    TORCH_ENV,
    TORCH_INDEX_ENV,
    ToolkitError,
    TorchSpec,
    parse_toolkits,
)

TOOLKITS_ENV = "PYTEST_RKNN_TOOLKITS"
COMMAND_MODULES: tuple[str, ...] = ("pytest_rknn.reports",)


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def add_toolkit_options(parser: argparse.ArgumentParser) -> None:
    """The options that pick toolkit environments (shared by subcommands that need them)."""
    parser.add_argument(
        "--toolkits",
        default=os.environ.get(TOOLKITS_ENV, "all"),
        metavar="LIST",
        help="comma-separated toolkit versions: 2.2.0,2.3.0,2.3.2,2.5.0, 'all' (every registry "
        "version), 'installed' (the toolkit in this Python) or VERSION=PATH.whl for a wheel "
        f"file (e.g. a GitHub-only release); default: ${TOOLKITS_ENV} or 'all'; "
        "`pytest-rknn envs --toolkits none` makes no toolkit environment",
    )
    parser.add_argument(
        "--rknn-envs",
        metavar="DIR",
        default=None,
        help=f"folder holding the environments; default: ${ENVS_ENV} or the user cache folder",
    )
    parser.add_argument(
        "--torch",
        metavar="SPEC",
        default=None,
        help="how torch is installed in each environment (the toolkit imports it at load): a "
        f"pip requirement or a path to a torch wheel; default: ${TORCH_ENV} or {DEFAULT_TORCH!r}",
    )
    parser.add_argument(
        "--torch-index",
        metavar="URL",
        default=None,
        help="extra package index for torch; on an ordinary machine use "
        "https://download.pytorch.org/whl/cpu to get the small CPU build instead of the CUDA "
        f"one; default: ${TORCH_INDEX_ENV} or none",
    )


def _configure_envs(parser: argparse.ArgumentParser) -> None:
    add_toolkit_options(parser)
    parser.add_argument(
        "--exporter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the exporter environment: torch with onnxscript, for the torch-export form's "
        "dynamo exporters (default: yes); `--toolkits none` makes only that one",
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the environments even if they work"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only verify, build nothing (exit 1 if any environment is not usable)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=4,
        metavar="N",
        help="environments built at once (default 4)",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")


ENV_COLUMNS = ("version", "interpreter", "torch", "onnx", "onnxruntime", "onnxscript", "state")


def _print_env_table(rows: list[dict[str, Any]], root: Path, seconds: float) -> None:
    out = Console()
    if not out.is_terminal:
        out = Console(width=max(out.width, 160))
    table = Table(title=f"pytest-rknn environments in {root}")
    for column in ENV_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = [str(row.get(column, "-")) for column in ENV_COLUMNS]
        if row["state"] != "ok":
            cells[-1] = f"[red]{row['state']}[/]"
        table.add_row(*cells)
    out.print(table)
    for row in rows:
        if row["state"] != "ok":
            out.print(f"{row['version']}: {row['state']}: {row['reason']}", highlight=False)
    usable = sum(row["state"] == "ok" for row in rows)
    out.print(f"{usable} of {len(rows)} environments usable ({seconds:.1f} s)", highlight=False)


def _run_envs(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    none = args.toolkits.strip() == "none"
    requests = [] if none else parse_toolkits(args.toolkits)
    if none and not args.exporter:
        raise ToolkitError("--toolkits none with --no-exporter names no environment; drop one")
    torch = TorchSpec.resolve(args.torch, args.torch_index)
    root = Path(args.rknn_envs).expanduser() if args.rknn_envs else default_root()
    if args.check:
        envs = get_envs(requests, root=root, create=False, torch=torch, exporter=args.exporter)
    else:
        envs = provision(
            requests,
            root=root,
            jobs=args.jobs,
            rebuild=args.rebuild,
            torch=torch,
            exporter=args.exporter,
        )
    rows = [env.describe() for env in envs]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_env_table(rows, root, time.perf_counter() - start)
    return 0 if all(env.usable for env in envs) else 1


register(
    Subcommand(
        "envs",
        "create or verify one environment per rknn-toolkit2 version and the torch exporter's "
        "environment, and list them",
        _configure_envs,
        _run_envs,
    )
)


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
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return SUBCOMMANDS[args.command].run(args)
    except (ToolkitError, EnvError) as exc:
        print(f"pytest-rknn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pytest-rknn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run as a script this file is a second module object; subcommands register in the first.
    from pytest_rknn.cli import main as _main

    sys.exit(_main())

"""The ``envs`` subcommand: create or verify the toolkit environments, and list them."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pytest_rknn.cli.main import Subcommand, register
from pytest_rknn.envs import ENVS_ENV, default_root, get_envs, provision
from pytest_rknn.envs.exporter import ExporterEnv
from pytest_rknn.envs.installers import INSTALLER_ENV
from pytest_rknn.envs.recipes import (
    DEFAULT_TORCH,
    TORCH_ENV,
    TORCH_INDEX_ENV,
    ToolkitError,
    TorchSpec,
    parse_toolkits,
)
from pytest_rknn.envs.toolkit import ToolkitEnv

TOOLKITS_ENV = "PYTEST_RKNN_TOOLKITS"


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
        default=None,
        help="also the exporter environment: torch with onnxscript, for the torch-export form's "
        "dynamo exporters (default: yes; rebuilt by --rebuild only when named); "
        "`--toolkits none` makes only that one",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the named toolkits' environments even if they work (the exporter's only "
        "with --exporter or --toolkits none); refused while a running suite uses one",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only verify, build nothing (exit 1 if any environment is not usable)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=5,
        metavar="N",
        help="environments built at once (default 5: four toolkits and the exporter)",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument(
        "--cache-key",
        action="store_true",
        help="only print a key of what decides the environments' contents (recipes, a local "
        "wheel's sha256, torch, Python, machine, installer code), e.g. for a CI cache; "
        "builds and verifies nothing",
    )


ENV_COLUMNS = (
    "version",
    "interpreter",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "installer",
    "state",
)


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


def cache_key(envs: list[Any]) -> str:
    """``rknn-envs-<hash>``: changes whenever anything that decides what the environments hold
    changes (each one's recipe, the machine, and the code that installs them)."""
    code = Path(__file__).resolve().parent.parent / "envs"
    sources = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(code.glob("*.py"))
    }
    data = {
        "recipes": [env.recipe() for env in envs],
        "machine": platform.machine(),
        "system": platform.system(),
        "code": sources,
        "installer": os.environ.get(INSTALLER_ENV, "auto"),
    }
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return f"rknn-envs-{digest[:24]}"


def _run_envs(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    none = args.toolkits.strip() == "none"
    requests = [] if none else parse_toolkits(args.toolkits)
    named_exporter = bool(args.exporter) or none
    args.exporter = args.exporter is not False
    if none and not args.exporter:
        raise ToolkitError("--toolkits none with --no-exporter names no environment; drop one")
    torch = TorchSpec.resolve(args.torch, args.torch_index)
    root = Path(args.rknn_envs).expanduser() if args.rknn_envs else default_root()
    if args.cache_key:
        envs = [ToolkitEnv(request, root, torch) for request in requests]
        print(cache_key([*envs, *([ExporterEnv(root, torch)] if args.exporter else [])]))
        return 0
    if args.check:
        envs = get_envs(requests, root=root, create=False, torch=torch, exporter=args.exporter)
    else:
        envs = provision(
            requests,
            root=root,
            jobs=args.jobs,
            rebuild=_rebuilt(args, requests, named_exporter),
            torch=torch,
            exporter=args.exporter,
        )
    rows = [env.describe() for env in envs]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_env_table(rows, root, time.perf_counter() - start)
    return 0 if all(env.usable for env in envs) else 1


def _rebuilt(args: argparse.Namespace, requests: list, named_exporter: bool) -> set[str]:
    """The labels ``--rebuild`` rebuilds: the toolkits named, and the exporter only when it
    was asked for (``--exporter``, or ``--toolkits none``)."""
    if not args.rebuild:
        return set()
    labels = {request.version for request in requests}
    return labels | ({"exporter"} if named_exporter else set())


register(
    Subcommand(
        "envs",
        "create or verify one environment per rknn-toolkit2 version and the torch exporter's "
        "environment, and list them",
        _configure_envs,
        _run_envs,
    )
)

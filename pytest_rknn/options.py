"""The suite's options as pytest sees them: flags, ini keys, defaults and help.

:func:`add_options` registers every ``--rknn-*`` flag with its ini key (pytest's documented
way); :func:`rknn_args` picks a command line's ``--rknn-*`` options (for re-run commands).
:mod:`pytest_rknn.settings` validates the values.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pytest_rknn.pipeline.targets import DEFAULT_PLATFORMS

# name -> (ini type, default, help). Defaults are ini defaults; the flag overrides.
OPTIONS: dict[str, tuple[str, str, str]] = {
    "toolkits": (
        "string",
        "all",
        "toolkit versions: all (every registry version), 2.2.0,2.3.2, installed, VERSION=PATH.whl",
    ),
    "platforms": ("string", ",".join(DEFAULT_PLATFORMS), "target platforms, e.g. rk3566,rk3588"),
    "quant": (
        "string",
        "fp16",
        "quantization modes: fp16, int8, int8-mmse, int8-kl, hybrid (comma-separated)",
    ),
    "calibration": ("string", "8", "calibration samples of each quantized cell (int8*, hybrid)"),
    "calibration_data": (
        "string",
        "",
        "calibrate every --rknn-model on these samples: a .npz (a leading sample axis) or a "
        "folder of .npz",
    ),
    "fp16_bounds": (
        "string",
        "emulation",
        "fp16 bounds: emulation (4 x the error float16 itself makes on the model, never "
        "tighter than the fixed defaults; emulation:K for another factor) or fixed",
    ),
    "examples": ("string", "16", "how many hypothesis-drawn variants besides the curated ones"),
    "seed": ("string", "0", "seed of the variant draw and of the inputs"),
    "profile": ("string", "ci", "size profile of drawn variants: ci (small) or full (long seqs)"),
    "forms": ("string", "", "only these graph forms (comma-separated); empty = all"),
    "matrix": ("string", "rknn-matrix.json", "where to write the compatibility matrix JSON"),
    "html": ("string", "", "also write the HTML dashboard of the matrix to this path"),
    "markdown": (
        "string",
        "",
        "also write the Markdown summary to this path ($GITHUB_STEP_SUMMARY gets it anyway)",
    ),
    "baseline": ("string", "", "a previous matrix: its failing cells become strict xfails"),
    "timeout": ("string", "300", "seconds one conversion may take before its worker is killed"),
    "max_memory": ("string", "8G", "memory one conversion may use before its worker is killed"),
    "envs": ("string", "", "folder of the toolkit environments (default: user cache dir)"),
    "curated": ("bool", "true", "include the curated variants"),
    "shard": ("string", "", "run only shard K of N (e.g. 2/4): a fixed, cost-balanced part"),
    "require_npu": (
        "string",
        "",
        "fail a passing cell with ops on the CPU: attention (no attention op) or all (no op)",
    ),
    "shard_costs": (
        "string",
        "",
        "an earlier run's matrix: balance --rknn-shard on the seconds its cells took",
    ),
}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("rknn", "rknn-toolkit2 compatibility suite")
    for name, (kind, default, help_text) in OPTIONS.items():
        flag = "--rknn-" + name.replace("_", "-")
        ini = "rknn_" + name
        if kind == "bool":
            group.addoption(flag, dest=ini, default=None, action="store_true", help=help_text)
            group.addoption(
                "--rknn-no-" + name.replace("_", "-"),
                dest=ini,
                action="store_false",
                help=f"do not {help_text}",
            )
        else:
            group.addoption(flag, dest=ini, default=None, help=f"{help_text} (default: {default})")
        parser.addini(
            ini, help=help_text, type=kind, default=default == "true" if kind == "bool" else default
        )
    for name, metavar, help_text in (
        ("model", "PATH", "an ONNX model of your own to put in the matrix (repeatable)"),
        (
            "config",
            "KEY=VALUE",
            "a toolkit config() option for every cell; KEY=V1|V2 fans out (repeatable)",
        ),
        (
            "dims",
            "NAME=V1|V2",
            "serve a model's free dim at these lengths: one cell, every length listed in "
            "dynamic_input, each simulated (repeatable)",
        ),
        ("variant", "ID", "add this variant (an id from a matrix or --rknn-explore) (repeatable)"),
    ):
        group.addoption(
            f"--rknn-{name}",
            dest=f"rknn_{name}",
            action="append",
            default=[],
            metavar=metavar,
            help=help_text,
        )
    group.addoption(
        "--rknn-advise",
        dest="rknn_advise",
        action="store_true",
        help="for each failing cell, try the known fixes as real conversions and record them",
    )
    group.addoption(
        "--rknn-no-cache",
        dest="rknn_no_cache",
        action="store_true",
        help="convert every cell again instead of reusing cached results",
    )
    group.addoption(
        "--rknn-only",
        dest="rknn_only",
        action="store_true",
        help="run only the variants and models named by --rknn-variant / --rknn-model "
        "(no curated variants, no draws)",
    )
    group.addoption(
        "--rknn-explore",
        dest="rknn_explore",
        action="store_true",
        help="search the variant space for failing variants and shrink them to minimal ones",
    )
    parser.addini(
        "rknn_explore_examples",
        "how many variants --rknn-explore may try per (platform, toolkit, quant)",
        default="60",
    )
    parser.addini(
        "rknn_config",
        "toolkit config() options for every cell, one KEY=VALUE (or KEY=V1|V2) per line",
        type="linelist",
        default=[],
    )
    parser.addini(
        "rknn_dims",
        "lengths to serve a model's free dims at, one NAME=V1|V2 per line",
        type="linelist",
        default=[],
    )
    parser.addini("rknn_bounds_fp16", "tolerance bounds for fp16 cells, e.g. max_abs=0.01 ...")
    parser.addini("rknn_bounds_int8", "tolerance bounds for int8 cells, e.g. min_cosine=0.99")


_FLAGS = {"--rknn-" + n.replace("_", "-") for n, (kind, _, _) in OPTIONS.items() if kind == "bool"}
_FLAGS |= {f.replace("--rknn-", "--rknn-no-") for f in _FLAGS}
_FLAGS |= {"--rknn-no-cache", "--rknn-explore", "--rknn-only", "--rknn-advise"}


def rknn_args(args: Sequence[str]) -> list[str]:
    """The ``--rknn-*`` options among a command line's arguments, with their values."""
    kept: list[str] = []
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("--rknn-"):
            continue
        kept.append(arg)
        if "=" not in arg and arg not in _FLAGS:
            value = next(rest, None)
            if value is not None:
                kept.append(value)
    return kept

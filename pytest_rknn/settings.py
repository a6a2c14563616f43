"""The suite's options, validated: one :class:`Settings` per run.

Every option has a flag and an ini key of the same name (``--rknn-seed`` / ``rknn_seed``); the
flag wins. :mod:`pytest_rknn.options` registers them the documented way, :class:`Settings` holds
the parsed values, and a bad value is a one-line ``pytest.UsageError`` that names the fix.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from pytest_rknn.envs.recipes import ToolkitError, ToolkitRequest, parse_toolkits
from pytest_rknn.pipeline.build_config import ConfigError, build_modes, parse_entries
from pytest_rknn.pipeline.dims import Dims, DimsError, applying, free_dims, parse_dims
from pytest_rknn.pipeline.dynamic_variants import DynamicVariant, variant_from_id
from pytest_rknn.pipeline.shard import MeasuredCosts, Shard, ShardError
from pytest_rknn.pipeline.targets import (
    PlatformError,
    parse_platforms,
    parse_quant,
)
from pytest_rknn.pipeline.user_models import ModelError, UserModel
from pytest_rknn.toolkit.protocol import MIN_MEMORY, Limits, parse_size
from pytest_rknn.variants.families import FORM as HF_FORM
from pytest_rknn.variants.families import FamilySpec
from pytest_rknn.variants.spec import FORMS, SpecError, VariantSpec
from pytest_rknn.verdict.placement import REQUIREMENTS
from pytest_rknn.verdict.tolerance import Bounds

PROFILES = ("ci", "full")


def _value(config: pytest.Config, name: str) -> Any:
    ini = "rknn_" + name
    flag = config.getoption(ini)
    return config.getini(ini) if flag is None else flag


def _int(config: pytest.Config, name: str, minimum: int = 0) -> int:
    text = str(_value(config, name))
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise pytest.UsageError(f"--rknn-{name} {text!r}: expected a whole number >= {minimum}")
    return value


def _path(text: str, flag: str) -> Path:
    """``text`` as a path, if it can be shown and stored: a name that is not UTF-8 (bytes
    Python keeps as surrogates) is a usage error, before any file is made."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise pytest.UsageError(
            f"{flag} {shown}: the path is not valid UTF-8 (the matrix and its views store "
            "paths as UTF-8 text): rename it, or give another path"
        ) from None
    return Path(text).expanduser()


def _writable(path: Path, flag: str) -> Path:
    """``path`` if a file can be written there, else a usage error naming the fix."""
    if path.is_dir():
        raise pytest.UsageError(f"{flag} {path} is a folder: give a file path, e.g. {path}/m.json")
    parent = path.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise pytest.UsageError(f"{flag} {path}: cannot create {parent} ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise pytest.UsageError(f"{flag} {path}: {parent} is not writable; choose another path")
    return path


def _limits(config: pytest.Config) -> Limits:
    text = str(_value(config, "max_memory"))
    try:
        max_memory = parse_size(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--rknn-max-memory: {exc}") from None
    if max_memory < MIN_MEMORY:
        raise pytest.UsageError(
            f"--rknn-max-memory {text!r} is below {MIN_MEMORY >> 20}M, the least a toolkit "
            "worker needs to import rknn-toolkit2 (measured by bench/worker_memory.py): give "
            f"at least {MIN_MEMORY >> 20}M, e.g. 8G"
        )
    text = str(_value(config, "timeout"))
    try:
        timeout = float(text)
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise pytest.UsageError(
            f"--rknn-timeout {text!r}: expected a finite number of seconds > 0, e.g. 300"
        )
    return Limits(timeout=timeout, max_memory=max_memory)


def _page(path: Path) -> Path:
    """``path`` if the dashboard may go there: nothing there yet, or an earlier page."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as handle:
            head = handle.read(512).lstrip().lower()
        if not head.startswith((b"<!doctype html", b"<html")):
            raise pytest.UsageError(
                f"--rknn-html {path} exists and is not an HTML page (a matrix?): give the "
                "dashboard its own path, e.g. rknn-matrix.html"
            )
    return path


def _distinct(
    matrix: Path, html: Path | None, baseline: Path | None, markdown: Path | None = None
) -> None:
    """Refuse an output path that would overwrite another input or output of the run."""
    named = [("--rknn-baseline", baseline), ("--rknn-matrix", matrix), ("--rknn-html", html)]
    named.append(("--rknn-markdown", markdown))
    seen: dict[Path, str] = {}
    for flag, path in named:
        if path is None:
            continue
        resolved = path.expanduser().resolve()
        if resolved in seen:
            raise pytest.UsageError(
                f"{flag} {path} is the same file as {seen[resolved]}: give each its own path"
            )
        seen[resolved] = flag


def _bounds(config: pytest.Config) -> dict[str, str]:
    """The ini tolerance bounds by family, checked now (not in every cell): nan, inf, -1, an
    unknown name are a usage error."""
    bounds = {}
    for family in ("fp16", "int8"):
        text = str(config.getini(f"rknn_bounds_{family}") or "")
        try:
            Bounds.from_ini(text, base=Bounds.for_mode(family))
        except ValueError as exc:
            raise pytest.UsageError(f"rknn_bounds_{family} {text!r}: {exc}") from None
        bounds[family] = text
    return bounds


def _fp16_rule(config: pytest.Config) -> float | None:
    """``--rknn-fp16-bounds``: the factor of the emulation rule, or None for fixed bounds."""
    text = str(_value(config, "fp16_bounds") or "").strip().lower()
    if text == "fixed":
        return None
    name, _, factor = text.partition(":")
    try:
        k = float(factor) if factor else 4.0
    except ValueError:
        k = math.nan
    if name != "emulation" or not (math.isfinite(k) and k >= 1):
        raise pytest.UsageError(
            f"--rknn-fp16-bounds {text!r}: use emulation, emulation:K (a factor K >= 1, e.g. "
            "emulation:8) or fixed"
        )
    return k


def _shard(config: pytest.Config) -> Shard | None:
    text = str(_value(config, "shard") or "").strip()
    if not text:
        return None
    if config.getoption("rknn_explore"):
        raise pytest.UsageError(
            "--rknn-shard cuts the matrix's cells; --rknn-explore has none: drop one of them"
        )
    try:
        return Shard.parse(text)
    except ShardError as exc:
        raise pytest.UsageError(str(exc)) from None


def _shard_costs(config: pytest.Config, shard: Shard | None) -> MeasuredCosts | None:
    text = str(_value(config, "shard_costs") or "").strip()
    if not text:
        return None
    if shard is None:
        raise pytest.UsageError(
            f"--rknn-shard-costs {text}: it balances --rknn-shard K/N; add --rknn-shard or drop it"
        )
    try:
        return MeasuredCosts.load(_path(text, "--rknn-shard-costs"))
    except ShardError as exc:
        raise pytest.UsageError(str(exc)) from None


def _require_npu(config: pytest.Config) -> str | None:
    text = str(_value(config, "require_npu") or "").strip().lower()
    if not text or text == "none":
        return None
    if text not in REQUIREMENTS:
        raise pytest.UsageError(
            f"--rknn-require-npu {text!r}: use attention (no attention op on the CPU) or all "
            "(no op on the CPU), or leave it out to record placement only"
        )
    return text


def _calibration_data(config: pytest.Config) -> Path | None:
    """``--rknn-calibration-data``: a path that exists, for a run that names models."""
    text = str(_value(config, "calibration_data") or "").strip()
    if not text:
        return None
    if not config.getoption("rknn_model"):
        raise pytest.UsageError(
            f"--rknn-calibration-data {text}: it calibrates the models named by --rknn-model; "
            "add one or drop it"
        )
    path = _path(text, "--rknn-calibration-data")
    if not path.exists():
        raise pytest.UsageError(
            f"--rknn-calibration-data {text}: no such file or folder; give a .npz of stacked "
            "samples or a folder of .npz"
        )
    return path.resolve()


def _dims(config: pytest.Config, models: list[UserModel]) -> Dims:
    """``--rknn-dims`` (and ini ``rknn_dims``), each name a free dim of a ``--rknn-model``."""
    entries = [*config.getini("rknn_dims"), *config.getoption("rknn_dims")]
    try:
        dims = parse_dims(entries)
    except DimsError as exc:
        raise pytest.UsageError(str(exc)) from None
    if dims and not models:
        raise pytest.UsageError(
            "--rknn-dims serves the free dims of --rknn-model models: give one with "
            "--rknn-model PATH (or pass dims= to rknn.convert in a test)"
        )
    for name, _values in dims:
        if not any(applying(((name, (1,)),), m.declared) for m in models):
            free = sorted({d for m in models for d in free_dims(m.declared)})
            raise pytest.UsageError(
                f"--rknn-dims {name}: no --rknn-model has a free dim {name!r} (their free dims: "
                f"{', '.join(free) or 'none'}); name one of those"
            )
    return dims


def _matrix_asked(config: pytest.Config, html: Path | None, markdown: Path | None) -> bool:
    from pytest_rknn.options import OPTIONS

    named = config.getoption("rknn_matrix") is not None
    moved = str(config.getini("rknn_matrix")) != OPTIONS["matrix"][1]
    return named or moved or html is not None or markdown is not None


@dataclass(frozen=True)
class Settings:
    """The validated rknn options of one pytest run."""

    toolkits: tuple[ToolkitRequest, ...]
    platforms: tuple[str, ...]
    quant: tuple[str, ...]
    examples: int
    seed: int
    profile: str
    forms: tuple[str, ...]
    matrix: Path
    html: Path | None
    baseline: Path | None
    limits: Limits
    envs_root: Path | None
    curated: bool
    models: tuple[UserModel, ...] = ()
    variants: tuple[VariantSpec | FamilySpec | DynamicVariant, ...] = ()
    use_cache: bool = True
    explore: bool = False
    explore_examples: int = 60
    only: bool = False
    advise: bool = False
    markdown: Path | None = None
    bounds: dict[str, str] = field(default_factory=dict)
    shard: Shard | None = None
    shard_costs: MeasuredCosts | None = None
    calibration: int = 8
    require_npu: str | None = None
    fp16_emulation: float | None = 4.0
    dims: Dims = ()
    # Whether the run asked for a matrix file (--rknn-matrix, rknn_matrix, --rknn-html or
    # --rknn-markdown): without it, the rknn fixture's conversions go to pytest's cache folder.
    matrix_asked: bool = True

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        try:
            toolkits = tuple(parse_toolkits(str(_value(config, "toolkits"))))
            platforms = parse_platforms(str(_value(config, "platforms")))
            quant = parse_quant(str(_value(config, "quant")))
            entries = [*config.getini("rknn_config"), *config.getoption("rknn_config")]
            quant = build_modes(quant, parse_entries(entries))
        except (ToolkitError, PlatformError, ConfigError) as exc:
            raise pytest.UsageError(str(exc)) from None
        profile = str(_value(config, "profile"))
        if profile not in PROFILES:
            raise pytest.UsageError(f"--rknn-profile {profile!r}: use one of {', '.join(PROFILES)}")
        limits = _limits(config)
        matrix = _writable(_path(str(_value(config, "matrix")), "--rknn-matrix"), "--rknn-matrix")
        models = []
        calibration_data = _calibration_data(config)
        for text in config.getoption("rknn_model"):
            path = _path(text, "--rknn-model")
            if path.is_dir():
                raise pytest.UsageError(
                    f"--rknn-model {text} is a folder: give the path of an .onnx file in it"
                )
            if not path.exists():
                raise pytest.UsageError(
                    f"--rknn-model {text}: no such file; give an ONNX model path"
                )
            try:
                models.append(
                    UserModel.load(
                        path.resolve(),
                        inputs_file=True,
                        memory=limits.max_memory,
                        calibration=calibration_data,
                    )
                )
            except ModelError as exc:
                raise pytest.UsageError(str(exc)) from None
        dims = _dims(config, models)
        if dims:
            models = [replace(m, dims=applying(dims, m.declared)) for m in models]
        baseline_text = str(_value(config, "baseline") or "")
        baseline = _path(baseline_text, "--rknn-baseline") if baseline_text else None
        if baseline is not None and not baseline.exists():
            raise pytest.UsageError(
                f"--rknn-baseline {baseline_text}: no such file; give an earlier run's matrix JSON"
            )
        envs_text = str(_value(config, "envs") or os.environ.get("PYTEST_RKNN_ENVS", ""))
        if envs_text:
            _path(envs_text, "--rknn-envs")
        forms = tuple(f.strip() for f in str(_value(config, "forms")).split(",") if f.strip())
        known_forms = (*FORMS, HF_FORM)
        unknown = [f for f in forms if f not in known_forms]
        if unknown:
            raise pytest.UsageError(
                f"unknown form {', '.join(unknown)} in --rknn-forms: use {', '.join(known_forms)}"
            )
        try:
            variants = tuple(variant_from_id(v) for v in config.getoption("rknn_variant"))
        except SpecError as exc:
            raise pytest.UsageError(f"--rknn-variant: {exc}") from None
        only = bool(config.getoption("rknn_only"))
        if only and not (variants or models):
            raise pytest.UsageError(
                "--rknn-only runs only the variants named by --rknn-variant ID or --rknn-model "
                "PATH: name at least one"
            )
        explore_examples = str(config.getini("rknn_explore_examples"))
        if not explore_examples.isdigit() or int(explore_examples) < 1:
            raise pytest.UsageError(
                f"rknn_explore_examples {explore_examples!r}: expected a whole number >= 1"
            )
        if matrix.exists() and not matrix.is_file():
            raise pytest.UsageError(
                f"--rknn-matrix {matrix} is not a regular file (a device or a pipe): a run keeps "
                "its journal and lock beside the matrix; give a file path, e.g. rknn-matrix.json"
            )
        html_text = str(_value(config, "html") or "")
        html = _writable(_path(html_text, "--rknn-html"), "--rknn-html") if html_text else None
        markdown_text = str(_value(config, "markdown") or "")
        markdown = (
            _writable(_path(markdown_text, "--rknn-markdown"), "--rknn-markdown")
            if markdown_text
            else None
        )
        _distinct(matrix, html, baseline, markdown)
        if html is not None:
            _page(html)
        shard = _shard(config)
        return cls(
            toolkits=toolkits,
            platforms=platforms,
            quant=quant,
            examples=_int(config, "examples"),
            seed=_int(config, "seed"),
            profile=profile,
            forms=forms,
            matrix=matrix,
            html=html,
            baseline=baseline,
            limits=limits,
            envs_root=Path(envs_text).expanduser() if envs_text else None,
            curated=bool(_value(config, "curated")),
            models=tuple(models),
            variants=variants,
            explore_examples=int(explore_examples),
            use_cache=not config.getoption("rknn_no_cache"),
            explore=bool(config.getoption("rknn_explore")),
            only=only,
            advise=bool(config.getoption("rknn_advise")),
            markdown=markdown,
            bounds=_bounds(config),
            shard=shard,
            shard_costs=_shard_costs(config, shard),
            calibration=_int(config, "calibration", minimum=1),
            require_npu=_require_npu(config),
            fp16_emulation=_fp16_rule(config),
            dims=dims,
            matrix_asked=_matrix_asked(config, html, markdown),
        )

    @property
    def toolkit_names(self) -> tuple[str, ...]:
        return tuple(r.version for r in self.toolkits)

    @property
    def newest_toolkit(self) -> str:
        """The newest version of the run's toolkits (``rknn.convert``'s default)."""
        from packaging.version import InvalidVersion, Version

        def key(name: str) -> tuple[int, Version | str]:
            try:
                return (1, Version(name))
            except InvalidVersion:
                return (0, name)

        return max(self.toolkit_names, key=key)

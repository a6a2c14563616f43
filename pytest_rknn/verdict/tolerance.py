"""Numerical tolerance: how far the toolkit's outputs are from the reference, and the verdict.

This module owns the bounds that the metrics of :mod:`pytest_rknn.verdict.metrics` are held to
(``Bounds``, with defaults per quantization mode and ini/marker overrides), the check
(``check``) and the text a failing cell shows (``format_report``).

Default bounds are relative to the reference, so that they hold for attention outputs of order
0.05 and for hidden states of order 10 alike; absolute bounds (``max_abs``, ``mean_abs``) are
checked only when a user sets them. They come from conversions measured on this machine:

- fp16: the default matrix of 2026-12-01 (248 cells, toolkits 2.2.0-2.5.0 on rk3566/rk3588, every
  graph form, 2..2048 tokens, reference RMS 0.05..0.9; 192 cells converted and ran): rel_l2
  2.0e-4 .. 9.0e-4 (median 4.9e-4, i.e. fp16 rounding), 1 − cosine ≤ 3.1e-7, max_abs_rms
  1.0e-3 .. 1.7e-2 (median 3.9e-3), mean_abs_rms 1.2e-4 .. 6.4e-4. Bounds, with 5-8x headroom
  over the worst cell: rel_l2 ≤ 0.5 %, cosine ≥ 0.9999, max_abs_rms ≤ 0.1 (no element off by
  more than a tenth of the output's RMS), mean_abs_rms ≤ 5e-3. max_rel is unchecked: it is
  dominated by near-zero outputs.
- w8a8 on rk3588 (2.3.2, 4 calibration samples): rel_l2 2.6 % .. 13 % (2048 tokens), cosine
  ≥ 0.991, max_abs up to 0.14. Bounds: cosine ≥ 0.98, rel_l2 ≤ 20 %.
- hybrid: between the two, cosine ≥ 0.99 and rel_l2 ≤ 10 % (measured 2026-12-01 on the curated
  variants, every toolkit and both chips: the worst passing cell at rel_l2 2.1 %). The seed report's
  "about 5 % loss is acceptable unquantized" is far looser than what fp16 really achieves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pytest_rknn.verdict.metrics import Metrics, json_float

# ---------------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------------

# Relative bounds first: they are the defaults; the absolute ones are for users who ask.
_BOUND_METRIC = {
    "min_cosine": ("cosine", ">="),
    "max_rel_l2": ("rel_l2", "<="),
    "max_abs_rms": ("max_abs_rms", "<="),
    "mean_abs_rms": ("mean_abs_rms", "<="),
    "max_rel": ("max_rel", "<="),
    "max_abs": ("max_abs", "<="),
    "mean_abs": ("mean_abs", "<="),
}
# metric -> (the bound that limits it, comparison): how views show a metric against its bound.
BOUND_OF_METRIC: dict[str, tuple[str, str]] = {
    metric: (bound, op) for bound, (metric, op) in _BOUND_METRIC.items()
}
_QUANT_ALIASES = {"w8a8": "int8", "i8": "int8", "float16": "fp16", "fp": "fp16"}


@dataclass(frozen=True)
class Bounds:
    """Limits per metric; ``None`` leaves a metric unchecked.

    The defaults are relative to the reference (cosine, relative L2, errors in units of the
    reference's RMS); ``max_abs`` and ``mean_abs`` are absolute and unchecked unless asked for.
    """

    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    min_cosine: float | None = None
    max_rel_l2: float | None = None
    max_abs_rms: float | None = None
    mean_abs_rms: float | None = None

    @classmethod
    def for_mode(cls, quant: str) -> Bounds:
        """The default bounds of a quantization mode.

        ``fp16``, ``int8`` (alias ``w8a8``; variants such as ``int8-mmse`` share its bounds) and
        ``hybrid`` (``hybrid-...``).
        """
        name = quant.strip().lower().split("+", 1)[0]
        family = _QUANT_ALIASES.get(name, name.split("-", 1)[0])
        family = _QUANT_ALIASES.get(family, family)
        if family not in DEFAULT_BOUNDS:
            known = ", ".join(sorted({*DEFAULT_BOUNDS, *_QUANT_ALIASES}))
            raise ValueError(
                f"no default tolerance bounds for quantization mode {quant!r}: use one of {known}"
                " (or a variant such as int8-mmse)"
            )
        return DEFAULT_BOUNDS[family]

    def replace(self, **overrides: float | str | None) -> Bounds:
        """A copy with some bounds changed; values may be numbers, ``"5%"`` or ``None``."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(
                f"unknown tolerance bound(s) {unknown}: use {', '.join(sorted(names))}"
            )
        parsed = {key: _parse_bound(key, value) for key, value in overrides.items()}
        return replace(self, **parsed)

    @classmethod
    def from_ini(cls, value: str | Sequence[str], base: Bounds | None = None) -> Bounds:
        """Bounds from an ini value such as ``"max_abs=5e-3, min_cosine=0.999, max_rel=none"``.

        Entries are ``name=value`` separated by commas, whitespace or new lines (a pytest
        ``linelist`` is accepted too); ``none``/``off`` unchecks a bound, ``2%`` means 0.02.
        Bounds not named keep their value in ``base`` (default: all unchecked).
        """
        text = value if isinstance(value, str) else " ".join(value)
        text = re.sub(r"\s*=\s*", "=", text)
        overrides: dict[str, str] = {}
        for item in filter(None, re.split(r"[\s,;]+", text.strip())):
            name, sep, raw = item.partition("=")
            if not sep or not name or not raw:
                raise ValueError(
                    f"tolerance entry {item!r} is not name=value: write e.g. "
                    f"'max_abs=1e-2 min_cosine=0.9999'"
                )
            overrides[name.strip()] = raw.strip()
        return (base or cls()).replace(**overrides)

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready."""
        return asdict(self)


def _parse_bound(name: str, value: float | str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip().lower()
        if text in ("none", "off", "unchecked", ""):
            return None
        scale = 0.01 if text.endswith("%") else 1.0
        try:
            number = float(text.rstrip("%")) * scale
        except ValueError:
            raise ValueError(
                f"tolerance bound {name}={value!r} is not a number: write e.g. {name}=1e-3, "
                f"{name}=2% or {name}=none"
            ) from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"tolerance bound {name}={value!r} must be a finite number >= 0")
    if name == "min_cosine" and number > 1:
        raise ValueError(f"tolerance bound min_cosine={value!r} must be at most 1")
    return number


DEFAULT_BOUNDS: dict[str, Bounds] = {
    "fp16": Bounds(min_cosine=0.9999, max_rel_l2=5e-3, max_abs_rms=0.1, mean_abs_rms=5e-3),
    "int8": Bounds(min_cosine=0.98, max_rel_l2=0.2),
    "hybrid": Bounds(min_cosine=0.99, max_rel_l2=0.1),
}

# ---------------------------------------------------------------------------------------------
# Check and report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One metric of one output outside its bound (``metric == "error"``: not comparable)."""

    output: str
    metric: str
    value: float | None
    bound: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        data = asdict(self)
        data["value"] = json_float(self.value)
        return data


def _named(metrics: Mapping[str, Metrics] | Sequence[Metrics]) -> list[tuple[str, Metrics]]:
    if isinstance(metrics, Mapping):
        return list(metrics.items())
    return [(f"output{i}", m) for i, m in enumerate(metrics)]


def _within(value: float, op: str, bound: float) -> bool:
    return value <= bound if op == "<=" else value >= bound


def check(
    metrics_per_output: Mapping[str, Metrics] | Sequence[Metrics], bounds: Bounds
) -> list[Violation]:
    """Every bound an output breaks; an empty list means within tolerance."""
    violations: list[Violation] = []
    for name, metrics in _named(metrics_per_output):
        if metrics.error:
            violations.append(Violation(name, "error", None, None, metrics.error))
        for bound_name, (metric, op) in _BOUND_METRIC.items():
            bound = getattr(bounds, bound_name)
            value = getattr(metrics, metric)
            if bound is None:
                continue
            if value is None and metrics.error:
                continue
            if value is None or math.isnan(value):
                message = f"{name}: {metric} unavailable (bound {op} {bound:g})"
            elif not _within(value, op, bound):
                message = (
                    f"{name}: {metric} {_fmt(metric, value)} breaks {op} {_fmt(metric, bound)} "
                    f"({_how_far(metric, value, bound)})"
                )
            else:
                continue
            violations.append(Violation(name, metric, value, bound, message))
    return violations


def violation_signature(violations: Iterable[Violation]) -> str:
    """A stable signature for a tolerance failure: the metrics broken, in a fixed order."""
    order = ["error", *[metric for metric, _ in _BOUND_METRIC.values()]]
    broken = {v.metric for v in violations}
    names = [m for m in order if m in broken]
    return "tolerance: " + ", ".join(names) if names else "tolerance exceeded"


def _how_far(metric: str, value: float, bound: float) -> str:
    """By how much a value misses its bound, in the terms people use for that metric."""
    if metric == "cosine":
        allowed, got = 1.0 - bound, 1.0 - value
        if allowed <= 0.0:
            return f"1 - cosine is {got:.3g}, none allowed"
        return f"1 - cosine is {got / allowed:.3g}x the allowed {allowed:.3g}"
    if bound == 0.0 or math.isinf(value):
        return f"{value:.3g} where {bound:g} is allowed"
    return f"{value / bound:.3g}x the bound"


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "rel_l2":
        return f"{value * 100:.4g}%"
    if metric == "cosine":
        return f"{value:.7f}"
    return f"{value:.3e}"


def format_report(
    metrics_per_output: Mapping[str, Metrics] | Sequence[Metrics], bounds: Bounds
) -> str:
    """Every metric of every output against its bound, and the worst element of each output."""
    lines: list[str] = []
    broken = {(v.output, v.metric) for v in check(metrics_per_output, bounds)}
    for name, metrics in _named(metrics_per_output):
        failed = any(out == name for out, _ in broken)
        lines.append(f"output {name} {metrics.shape}: {'FAIL' if failed else 'ok'}")
        if metrics.error:
            lines.append(f"  error: {metrics.error}")
        if metrics.note:
            lines.append(f"  note: {metrics.note}")
        if metrics.judged:
            lines.append(f"  judged on {metrics.judged}")
        if metrics.left_out:
            cosine, rel_l2 = (metrics.left_out.get(k) for k in ("cosine", "rel_l2"))
            lines.append(
                "  left out (information only): "
                f"cosine {_fmt('cosine', None if cosine is None else float(cosine))}, "
                f"rel_l2 {_fmt('rel_l2', None if rel_l2 is None else float(rel_l2))}"
            )
        for bound_name, (metric, op) in _BOUND_METRIC.items():
            bound = getattr(bounds, bound_name)
            value = getattr(metrics, metric)
            limit = "(unchecked)" if bound is None else f"{op} {_fmt(metric, bound)}"
            if (name, metric) in broken:
                verdict = "FAIL"
            elif bound is None or value is None:
                verdict = "-"
            else:
                verdict = "ok"
            lines.append(f"  {metric:<9} {_fmt(metric, value):>13}  {limit:<16} {verdict}")
        if metrics.worst_index is not None:
            ref, act = metrics.worst_reference, metrics.worst_actual
            delta = abs(act - ref) if ref is not None and act is not None else float("nan")
            lines.append(
                f"  worst element {metrics.worst_index}: reference {ref:.6g}, "
                f"actual {act:.6g} (|diff| {delta:.3e})"
            )
    return "\n".join(lines)

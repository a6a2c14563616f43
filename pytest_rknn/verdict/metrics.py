"""Accuracy metrics of one output against its reference (``Metrics``, ``compute_metrics``).

Metrics, for reference ``y`` and actual ``ŷ`` (computed in float64):

- ``max_abs`` = max |ŷ − y|, ``mean_abs`` = mean |ŷ − y|;
- ``max_rel`` = max |ŷ − y| / max(|y|, ε) with ε = ``rel_floor`` · max|y| (default 1e-3, floor
  1e-12): a relative error that does not explode where the reference crosses zero;
- ``cosine`` = ⟨y, ŷ⟩ / (‖y‖ ‖ŷ‖) (1.0 when both are zero, 0.0 when only one is);
- ``rel_l2`` = ‖ŷ − y‖ / ‖y‖, the relative error people quote in percent;
- ``ref_rms`` = RMS of y, the output's scale; ``max_abs_rms`` = max_abs / ref_rms and
  ``mean_abs_rms`` = mean_abs / ref_rms, the absolute errors in units of that scale (an error
  of 1e-2 is noise on hidden states of order 10 and a disaster on probabilities of order 1e-3);
- the worst element (largest |ŷ − y|): its index and both values.

``compute_metrics(..., keep=mask)`` measures only the elements where ``mask`` (broadcast to the
output's shape) is True: the positions an attention mask keeps
(:mod:`~pytest_rknn.verdict.positions`); a value outside them is never an error. ``index`` is the
output's position, ``judged`` says which positions were measured (None: all) and ``left_out``
holds the metrics of the others, information only.

:mod:`pytest_rknn.verdict.tolerance` holds them to bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

DEFAULT_REL_FLOOR = 1e-3
_TINY = 1e-12


def json_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _from_json_float(value: float | str | None) -> float | None:
    return None if value is None else float(value)


_FLOAT_METRICS = (
    "max_abs",
    "mean_abs",
    "max_rel",
    "cosine",
    "rel_l2",
    "ref_rms",
    "max_abs_rms",
    "mean_abs_rms",
)


_OPTIONAL = ("index", "judged", "left_out")


@dataclass(frozen=True)
class Metrics:
    """Accuracy of one output. ``error`` is set when the output cannot be compared cleanly."""

    shape: tuple[int, ...]
    actual_shape: tuple[int, ...]
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    rel_l2: float | None = None
    ref_rms: float | None = None
    max_abs_rms: float | None = None
    mean_abs_rms: float | None = None
    worst_index: tuple[int, ...] | None = None
    worst_reference: float | None = None
    worst_actual: float | None = None
    rel_floor: float = DEFAULT_REL_FLOOR
    error: str | None = None
    note: str | None = None
    index: int | None = None
    judged: str | None = None
    left_out: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists, non-finite floats become ``"nan"``/``"inf"``;
        ``index``, ``judged`` and ``left_out`` only when set."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key in _OPTIONAL and value is None:
                continue
            if isinstance(value, tuple):
                out[key] = list(value)
            elif isinstance(value, float):
                out[key] = json_float(value)
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        """Inverse of ``to_dict``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"metrics have unknown fields {unknown}: expected a subset of {sorted(known)}"
            )
        values: dict[str, Any] = dict(data)
        for key in ("shape", "actual_shape", "worst_index"):
            if values.get(key) is not None:
                values[key] = tuple(int(v) for v in values[key])
        for key in _FLOAT_METRICS:
            values[key] = _from_json_float(values.get(key))
        for key in ("worst_reference", "worst_actual"):
            values[key] = _from_json_float(values.get(key))
        return cls(**values)


def _aligned(reference: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """``actual`` in the reference's shape, and a note when a reshape was needed."""
    if actual.shape == reference.shape:
        return actual, None
    if actual.size == reference.size and np.squeeze(actual).shape == np.squeeze(reference).shape:
        note = f"actual shape {actual.shape} compared as reference shape {reference.shape}"
        return actual.reshape(reference.shape), note
    return None, None


def _nonfinite_message(name: str, array: np.ndarray) -> str | None:
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    return (
        f"{name} has {n_nan} NaN and {n_inf} Inf of {array.size} values "
        f"(first at index {first}: {array[first]})"
    )


def _scaled(error: float, scale: float) -> float:
    if scale > 0.0:
        return error / scale
    return 0.0 if error == 0.0 else math.inf


def compute_metrics(
    reference: np.ndarray,
    actual: np.ndarray,
    rel_floor: float = DEFAULT_REL_FLOOR,
    keep: np.ndarray | None = None,
) -> Metrics:
    """Compare one output with its reference (only where ``keep`` is True, when given). Never
    raises for bad data; sets ``error``."""
    ref = np.asarray(reference)
    act = np.asarray(actual)
    ref_shape = tuple(int(n) for n in ref.shape)
    act_shape = tuple(int(n) for n in act.shape)
    aligned, note = _aligned(ref, act)
    if aligned is None:
        return Metrics(
            ref_shape,
            act_shape,
            rel_floor=rel_floor,
            error=f"shape mismatch: reference {ref_shape}, actual {act_shape}",
        )
    if ref.size == 0:
        return Metrics(ref_shape, act_shape, rel_floor=rel_floor, error="empty output", note=note)

    y = ref.astype(np.float64)
    y_hat = aligned.astype(np.float64)
    chosen = None
    if keep is not None:
        chosen = np.broadcast_to(np.asarray(keep, dtype=bool), y.shape)
        if not chosen.any():
            return Metrics(ref_shape, act_shape, rel_floor=rel_floor, error="no position judged")
        # Values outside the judged positions are no one's business, NaN or not.
        y = np.where(chosen, y, 0.0)
        y_hat = np.where(chosen, y_hat, 0.0)
    problems = [
        m for m in (_nonfinite_message("reference", y), _nonfinite_message("actual", y_hat)) if m
    ]
    finite = np.isfinite(y) & np.isfinite(y_hat)
    if chosen is not None:
        finite &= chosen
    if not finite.any():
        return Metrics(ref_shape, act_shape, rel_floor=rel_floor, error="; ".join(problems))

    diff = np.where(finite, np.abs(y_hat - y), -1.0)
    worst_flat = int(np.argmax(~np.isfinite(y) | ~np.isfinite(y_hat))) if problems else None
    if worst_flat is None:
        worst_flat = int(np.argmax(diff))
    diff = np.maximum(diff, 0.0)
    worst = tuple(int(i) for i in np.unravel_index(worst_flat, y.shape))

    yf, df = y[finite], diff[finite]
    floor = max(rel_floor * float(np.abs(yf).max()), _TINY)
    ref_norm = float(np.linalg.norm(yf))
    act_norm = float(np.linalg.norm(y_hat[finite]))
    diff_norm = float(np.linalg.norm(df))
    if ref_norm == 0.0 and act_norm == 0.0:
        cosine = 1.0
    elif ref_norm == 0.0 or act_norm == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.dot(yf, y_hat[finite]) / (ref_norm * act_norm))
    rel_l2 = diff_norm / ref_norm if ref_norm > 0.0 else (0.0 if diff_norm == 0.0 else math.inf)
    max_abs, mean_abs = float(df.max()), float(df.mean())
    rms = ref_norm / math.sqrt(yf.size)
    return Metrics(
        shape=ref_shape,
        actual_shape=act_shape,
        max_abs=max_abs,
        mean_abs=mean_abs,
        ref_rms=rms,
        max_abs_rms=_scaled(max_abs, rms),
        mean_abs_rms=_scaled(mean_abs, rms),
        max_rel=float((df / np.maximum(np.abs(yf), floor)).max()),
        cosine=cosine,
        rel_l2=rel_l2,
        worst_index=worst,
        worst_reference=float(y[worst]),
        worst_actual=float(y_hat[worst]),
        rel_floor=rel_floor,
        error="; ".join(problems) or None,
        note=note,
    )

"""Which rule makes a cell's bounds, and on which positions its outputs are judged.

:class:`Judging` is what a pytest item hands the pipeline for a cell: the ``bounds``, the
``rule`` that made them (recorded as the cell's ``bounds_rule``) and whether every output
position is judged (``all_positions``: the ``rknn`` marker's or ``rknn.convert``'s; by default
only the positions an attention mask keeps, see :mod:`.positions`). The rules:

- ``fp16 emulation x 4`` (fp16 cells, the default): the same model is run once more on the host
  in float16 (:func:`~pytest_rknn.variants.reference.float16_outputs`); its error against the
  reference is what float16 arithmetic alone does to this model, and the toolkit's error is
  bounded at ``k`` (4) times it: rel_l2, max_abs_rms and mean_abs_rms at ``k`` x the
  emulation's, 1 - cosine at ``k``² x the emulation's (1 - cosine grows as the square of a small
  relative error). :data:`FLOOR` (the fixed fp16 defaults, which the attention cores were
  measured under) is the least each bound allows, so the rule only loosens a bound where
  float16 itself errs more than the cores do (a whole decoder layer); :data:`CEILING` (the
  hybrid defaults) is the most it allows, so that a model float16 cannot compute at all is not
  waved through. An emulation that cannot run, or gives non-finite values on the judged
  positions, leaves the fixed defaults, and the rule says why;
- ``fixed fp16 defaults`` (``--rknn-fp16-bounds fixed``), ``ini rknn_bounds_fp16`` / ``ini
  rknn_bounds_int8`` (the ini keys, fixed), ``default int8`` / ``default hybrid``;
- ``marker``: the ``rknn`` marker set bounds (over whichever rule made the others).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_rknn.verdict.metrics import Metrics
from pytest_rknn.verdict.tolerance import DEFAULT_BOUNDS, Bounds

DEFAULT_K = 4.0
FLOOR = DEFAULT_BOUNDS["fp16"]
CEILING = Bounds(min_cosine=0.99, max_rel_l2=0.1, max_abs_rms=1.0, mean_abs_rms=0.1)


@dataclass(frozen=True)
class Judging:
    """A cell's bounds, the rule that made them, and the positions judged. ``emulate`` (k)
    asks for the fp16 emulation rule, ``overrides`` are the marker's bounds laid over it."""

    bounds: Bounds
    rule: str
    all_positions: bool = False
    emulate: float | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> dict[str, object]:
        """What a stored judgement depends on, besides the outputs and the reference."""
        return {"bounds": self.bounds.to_dict(), "all_positions": self.all_positions}


def emulation_rule(k: float) -> str:
    return f"fp16 emulation x {k:g}"


def _worst(metrics: Sequence[Metrics], name: str) -> float:
    values = [getattr(m, name) for m in metrics]
    return max(float(v) for v in values if v is not None)


def emulated(judging: Judging, emulation: Sequence[Metrics] | str) -> Judging:
    """``judging`` (of the emulation rule) with its bounds set from the emulation's metrics
    against the reference (one per output, on the judged positions), or from the fixed
    defaults when ``emulation`` is the reason there are none."""
    k = judging.emulate or DEFAULT_K
    rule = emulation_rule(k)
    failed = emulation if isinstance(emulation, str) else None
    if failed is None:
        broken = [m.error for m in emulation if m.error or m.rel_l2 is None or m.cosine is None]
        failed = f"its outputs are unusable ({broken[0]})" if broken else None
    if failed is not None or not emulation:
        bounds = FLOOR
        rule = f"fixed fp16 defaults (no fp16 emulation: {failed or 'no outputs'})"
    else:
        e_rel = _worst(emulation, "rel_l2")
        e_cos = max(1.0 - float(m.cosine) for m in emulation if m.cosine is not None)
        e_max = _worst(emulation, "max_abs_rms")
        e_mean = _worst(emulation, "mean_abs_rms")
        wanted = {
            "max_rel_l2": k * e_rel,
            "min_cosine": 1.0 - k * k * max(e_cos, 0.0),
            "max_abs_rms": k * e_max,
            "mean_abs_rms": k * e_mean,
        }
        values: dict[str, float] = {}
        capped = False
        for name, value in wanted.items():
            floor, ceiling = getattr(FLOOR, name), getattr(CEILING, name)
            if name == "min_cosine":
                chosen = min(floor, value)
                capped |= chosen < ceiling
                values[name] = max(chosen, ceiling)
            else:
                chosen = max(floor, value)
                capped |= chosen > ceiling
                values[name] = min(chosen, ceiling)
        bounds = FLOOR.replace(**values)
        if capped:
            rule += " (capped at the hybrid bounds)"
    if judging.overrides:
        bounds = bounds.replace(**judging.overrides)
        rule = "marker"
    return Judging(bounds, rule, judging.all_positions)

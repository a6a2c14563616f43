"""Where a cell's verdict is made: from the toolkit's answer and the reference to a status.

:func:`judge_outputs` holds the simulator's outputs against the reference under the cell's
bounds, on the positions each output is judged on (:mod:`.positions`: what the attention mask
keeps), with the metrics of the positions left out recorded as information (``pass`` or
``tolerance-fail``, with every metric); :func:`judge_failure` turns an answer
without outputs (a toolkit call that failed, or a worker that died) into its status and error
signature. Both return a :class:`Verdict`; the pipeline puts it into the cell's record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pytest_rknn.results.status import Status
from pytest_rknn.verdict import signatures
from pytest_rknn.verdict.metrics import Metrics, compute_metrics
from pytest_rknn.verdict.positions import Selection
from pytest_rknn.verdict.tolerance import Bounds, check, format_report, violation_signature


@dataclass
class Verdict:
    """A status with what explains it: signature, reason, metrics and the tolerance report."""

    status: Status
    signature: str | None = None
    reason: str | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: str = ""


def measure(
    reference: np.ndarray, actual: np.ndarray, index: int, selection: Selection | None
) -> Metrics:
    """One output's metrics on its judged positions, with those of the rest as ``left_out``."""
    selection = selection or Selection()
    found = compute_metrics(reference, actual, keep=selection.keep)
    left_out = None
    if selection.keep is not None:
        rest = compute_metrics(reference, actual, keep=~selection.keep)
        left_out = {
            key: value
            for key, value in rest.to_dict().items()
            if key in ("cosine", "rel_l2", "max_abs", "max_abs_rms", "mean_abs_rms", "error")
        }
        left_out["note"] = "positions the mask leaves out: information only, not judged"
    notes = [n for n in (found.note, selection.note) if n]
    return replace(
        found,
        index=index,
        judged=selection.judged,
        left_out=left_out,
        note="; ".join(notes) or None,
    )


def output_keys(names: Sequence[str], count: int) -> list[str]:
    """The keys of ``count`` outputs' metrics: the graph's output names (``last_hidden_state``),
    or ``output<i>`` when the names are missing, empty or not unique."""
    names = [str(n) for n in names]
    if len(names) == count and all(names) and len(set(names)) == count:
        return names
    return [f"output{i}" for i in range(count)]


def output_metrics(metrics: Mapping[str, Mapping[str, Any]], index: int) -> Mapping[str, Any]:
    """The metrics of the output at ``index``: by their ``index`` field, or keyed
    ``output<index>`` (matrices written before outputs were keyed by name)."""
    for values in metrics.values():
        if values.get("index") == index:
            return values
    return metrics[f"output{index}"]


def judge_outputs(
    reference: list[np.ndarray],
    outputs: list[np.ndarray],
    bounds: Bounds,
    selections: list[Selection] | None = None,
    names: Sequence[str] = (),
) -> Verdict:
    """``pass`` when every output is within ``bounds`` of its reference on its judged
    positions (``selections``, one per output; None: all), else tolerance-fail.

    The metrics are keyed by the graph's output ``names`` (:func:`output_keys`), each with its
    position as ``index``."""
    if len(outputs) != len(reference):
        text = f"the simulator returned {len(outputs)} outputs, the reference has {len(reference)}"
        return Verdict(Status.TOLERANCE_FAIL, "tolerance: output count", text, report=text)
    chosen = selections or [Selection()] * len(reference)
    keys = output_keys(names, len(reference))
    metrics = {
        key: measure(ref, np.asarray(out), i, chosen[i])
        for i, (key, ref, out) in enumerate(zip(keys, reference, outputs, strict=True))
    }
    violations = check(metrics, bounds)
    report = format_report(metrics, bounds)
    data = {name: {**m.to_dict(), "index": i} for i, (name, m) in enumerate(metrics.items())}
    if not violations:
        return Verdict(Status.PASS, metrics=data, report=report)
    signature = violation_signature(violations)
    reason = "; ".join(v.message for v in violations[:3])
    return Verdict(Status.TOLERANCE_FAIL, signature, reason, data, report)


def judge_failure(status: Status, log: str, error: str | None) -> Verdict:
    """The verdict of an answer that has no outputs to judge (``status`` is already known)."""
    return Verdict(status, signatures.classify(log, error, status), error)

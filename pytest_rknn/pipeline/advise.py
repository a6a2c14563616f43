"""The advisor: which known fix turns a failing cell green (``--rknn-advise``).

For a cell that failed (``convert-fail``, ``runtime-fail``, ``tolerance-fail``, ``crash``, and
under ``--rknn-require-npu`` ``cpu-fallback``: ops that should run on the NPU run on the CPU)
:func:`candidate_fixes` lists a bounded set of known fixes, each a variation of the cell (other
toolkit options, another form of the same attention, another quantization); :func:`advise` runs
each as a real conversion through the same pipeline and toolkit worker and returns the cell's
``fixes``: one entry per fix with its status, signature, key metrics and placement (without
the layer table: whether the fix keeps the attention on the NPU). A fix that the toolkit
version would refuse (an option its ``config()`` does not accept) is reported as ``rejected``
without a conversion: rejected is not "tried and did not work".

The fixes, in the order they are tried:

- ``disable_rules`` with the fusion rule the toolkit's log names or suggests;
- the same attention as the manual MatMul-Softmax-MatMul decomposition (generated variants of
  another form), and for torch exports the other exporter (dynamo at opset 17 instead of opset
  23, TorchScript instead of dynamo and back);
- ``optimization_level`` 0 and 2 instead of the default 3, ``enable_flash_attention`` flipped;
- for an int8 tolerance failure: ``hybrid`` (attention in fp16) and ``quantized_method`` layer
  instead of channel.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_rknn.pipeline.build_config import mode_name, rejected_by, split_mode
from pytest_rknn.pipeline.plan import CellSpec
from pytest_rknn.pipeline.subjects import subject_of
from pytest_rknn.pipeline.targets import QUANT_MODES
from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.status import FIX_REJECTED, Status
from pytest_rknn.variants.families import FamilySpec
from pytest_rknn.variants.spec import SpecError

ADVISED: frozenset[Status] = frozenset(
    {
        Status.CONVERT_FAIL,
        Status.RUNTIME_FAIL,
        Status.TOLERANCE_FAIL,
        Status.CPU_FALLBACK,
        Status.CRASH,
    }
)
_SUGGESTED_RULE = re.compile(r"disable_rules=\[\s*['\"](?P<rule>\w+)['\"]")
_RULE_IN_SIGNATURE = re.compile(r"in fusion rule (?P<rule>\w+)")
_OTHER_EXPORTER = {"dynamo-opset23": "dynamo", "dynamo": "torchscript", "torchscript": "dynamo"}
_KEY_METRICS = ("cosine", "rel_l2", "max_abs_rms")


@dataclass(frozen=True)
class Fix:
    """One known fix for a cell: its name and the cell that tries it."""

    name: str
    cell: CellSpec


def _rules(record: CellRecord) -> list[str]:
    found = [m["rule"] for m in _SUGGESTED_RULE.finditer(record.log_excerpt or "")]
    found += [m["rule"] for m in _RULE_IN_SIGNATURE.finditer(record.signature or "")]
    return list(dict.fromkeys(found))


def _with_options(cell: CellSpec, **options: Any) -> CellSpec:
    quant, own = split_mode(cell.quant)
    return dataclasses.replace(cell, quant=mode_name(quant, {**own, **options}))


def _other_forms(cell: CellSpec) -> list[tuple[str, CellSpec]]:
    spec = getattr(cell.subject, "spec", None)
    if spec is None:
        return []
    tries: list[tuple[str, dict[str, Any]]] = []
    if isinstance(spec, FamilySpec):
        other_attn = "sdpa" if spec.attn == "eager" else "eager"
        tries.append((f"attn_implementation {other_attn}", {"attn": other_attn}))
        other = "dynamo" if spec.exporter == "torchscript" else "torchscript"
        tries.append((f"exporter {other}", {"exporter": other}))
    elif spec.form != "manual":
        tries.append(("manual decomposition", {"form": "manual", "exporter": ""}))
    if getattr(spec, "form", "") == "torch-export" and spec.exporter in _OTHER_EXPORTER:
        other = _OTHER_EXPORTER[spec.exporter]
        tries.append((f"exporter {other}", {"exporter": other}))
    found = []
    for name, changes in tries:
        try:
            subject = subject_of(dataclasses.replace(spec, **changes))
        except SpecError:
            continue
        found.append((name, dataclasses.replace(cell, subject=subject)))
    return found


def candidate_fixes(cell: CellSpec, record: CellRecord) -> list[Fix]:
    """The known fixes worth trying for ``cell``, whose run ended in ``record``."""
    if record.status not in ADVISED:
        return []
    quant, own = split_mode(cell.quant)
    fixes = [
        Fix(f"disable_rules={rule}", _with_options(cell, disable_rules=[rule]))
        for rule in _rules(record)
    ]
    fixes += [Fix(name, variant) for name, variant in _other_forms(cell)]
    for level in (0, 2):
        if own.get("optimization_level", 3) != level:
            variant = _with_options(cell, optimization_level=level)
            fixes.append(Fix(f"optimization_level={level}", variant))
    flash = not own.get("enable_flash_attention", False)
    fixes.append(
        Fix(
            f"enable_flash_attention={'true' if flash else 'false'}",
            _with_options(cell, enable_flash_attention=flash),
        )
    )
    if record.status is Status.TOLERANCE_FAIL and QUANT_MODES[quant].do_quantization:
        if "hybrid" in QUANT_MODES and quant != "hybrid":
            fixes.append(Fix("hybrid", dataclasses.replace(cell, quant=mode_name("hybrid", own))))
        if own.get("quantized_method", "channel") == "channel":
            layer = _with_options(cell, quantized_method="layer")
            fixes.append(Fix("quantized_method=layer", layer))
    return fixes


def _summary(outcome_record: CellRecord) -> dict[str, Any]:
    metrics = {
        name: {k: m[k] for k in (*_KEY_METRICS, "index") if k in m}
        for name, m in (outcome_record.metrics or {}).items()
    }
    summary = {
        "status": outcome_record.status.value,
        "signature": outcome_record.signature,
        "reason": outcome_record.reason,
        "metrics": metrics,
    }
    placement = outcome_record.placement
    if placement is not None:
        summary["placement"] = {k: v for k, v in placement.items() if k != "layers"}
    return summary


def advise(
    cell: CellSpec, record: CellRecord, run: Callable[[CellSpec], CellRecord]
) -> list[dict[str, Any]]:
    """The cell's ``fixes``: each candidate tried with ``run`` (a real conversion), or
    ``rejected`` when the toolkit version's ``config()`` would refuse it."""
    fixes = []
    for fix in candidate_fixes(cell, record):
        refused = rejected_by(fix.cell.toolkit, fix.cell.quant)
        if refused:
            entry = {"status": FIX_REJECTED, "signature": None, "reason": refused, "metrics": {}}
            fixes.append({"fix": fix.name, **entry})
            continue
        fixes.append({"fix": fix.name, **_summary(run(fix.cell))})
    return fixes

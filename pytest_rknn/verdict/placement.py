"""Where the compiler puts a model's ops: the build log's layer table, read into ``placement``.

With ``RKNN(verbose=True)`` every rknn-toolkit2 version prints, during ``build``, a
``Network Layer Information Table`` (one row per op: ``ID OpType DataType Target InputShape
OutputShape Cycles(DDR/NPU/Total) RW(KB) FullName``, ``Target`` ``NPU`` or ``CPU``) and then the
lines ``Total Internal Memory Size: ...KB`` and ``Total Weight Memory Size: ...KB``. This module
owns reading them (:func:`read_placement`), the rule that marks the ops of the attention itself
(:func:`mark_attention`) and the questions the verdict and the views ask of a cell's placement
(:func:`attention_on_npu`, :func:`broken_requirement`).

What it records, and the rules (see ``docs/placement.md``):

- the last table of the log is the model's (a hybrid build may print several);
- ``InputOperator``/``OutputOperator`` rows (always ``CPU``) are left out of every count;
- ``fused`` lists the toolkit's own kernels (op types ``ex...``: ``exSDPAttention``,
  ``exMatMul``, ``exSoftmax13``), each once, in table order;
- cycle sums count only ops the compiler gave an estimate for (a non-zero total), and say how
  many; no time is invented;
- a table that cannot be read gives ``{"error": why}``, never a guess.

The attention rule: an op whose type names attention (``exSDPAttention``, any ``*Attention*``
or ``*SDPA*``) is attention; so is every op from the last ``MatMul``-type op before a
``Softmax``-type op to the first one after it, in table order (the QK product, the mask path
that lands between them, the softmax, a NaN guard, the PV product). Its limits: the table's
order is the compiler's schedule, not the graph, so an unrelated op scheduled between the QK
and PV products is counted too; a QK product the compiler turned into another op type (a
``Conv``) is not found, and then the region starts at the Softmax itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

TITLE = "Network Layer Information Table"
ENDPOINTS = frozenset({"InputOperator", "OutputOperator"})
TARGETS = frozenset({"NPU", "CPU"})
REQUIREMENTS = ("attention", "all")
"""What ``--rknn-require-npu`` may ask: no attention op on the CPU, or no op at all."""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PREFIX = re.compile(r"^(?:[DIWEF] )?(?:RKNN: )?(?:\[\d\d:\d\d:\d\d(?:\.\d+)?\]\s?)?")
_ROW = re.compile(
    r"^(?P<id>\d+)\s+(?P<op>\S+)\s+(?P<dtype>\S+)\s+(?P<target>\S+)\s+(?P<inputs>\S+)\s+"
    r"(?P<output>\S+)\s+(?P<ddr>\d+)/(?P<npu>\d+)/(?P<total>\d+)\s+(?P<rw>\S+)(?:\s+(?P<name>.*))?$"
)
_MEMORY = re.compile(
    r"Total (?P<kind>Internal|Weight) Memory Size:\s*(?P<value>[\d.]+)\s*(?P<unit>[KMG]?B)\b"
)
_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
_ATTENTION_OP = re.compile(r"attention|sdpa", re.IGNORECASE)
_SOFTMAX_OP = re.compile(r"softmax", re.IGNORECASE)
_MATMUL_OP = re.compile(r"matmul", re.IGNORECASE)
_CUT = re.compile(r"^\[\.\.\. \d+ bytes cut \.\.\.\]$")


class PlacementError(ValueError):
    """The layer table is there but cannot be read."""


def _lines(text: str) -> list[str]:
    return [_PREFIX.sub("", _ANSI.sub("", line), count=1).rstrip() for line in text.split("\n")]


def _bytes(value: str, unit: str) -> int:
    return round(float(value) * _UNITS[unit])


def _row(line: str) -> dict[str, Any]:
    match = _ROW.match(line.strip())
    if match is None:
        raise PlacementError(f"a layer table row cannot be read: {line.strip()[:120]!r}")
    if match["target"] not in TARGETS:
        raise PlacementError(f"unknown target {match['target']!r} in row {match['id']}")
    name = (match["name"] or "").strip()
    return {
        "id": int(match["id"]),
        "op": match["op"],
        "dtype": match["dtype"],
        "target": match["target"],
        "inputs": match["inputs"],
        "output": match["output"],
        "name": name.split(":", 1)[1] if name.startswith(match["op"] + ":") else name,
        "cycles": (int(match["ddr"]), int(match["npu"]), int(match["total"])),
    }


def _table(lines: list[str], title: int) -> list[dict[str, Any]]:
    """The rows of the table whose title is at ``lines[title]``."""
    header = next(
        (i for i in range(title + 1, min(title + 6, len(lines))) if lines[i].startswith("ID ")),
        None,
    )
    if header is None or "Target" not in lines[header] or "OpType" not in lines[header]:
        raise PlacementError("the layer table has no 'ID OpType ... Target' header line")
    rows = []
    for line in lines[header + 1 :]:
        stripped = line.strip()
        if not stripped:
            continue
        if set(stripped) <= {"-", "+"}:
            if rows:
                return rows
            continue
        if _CUT.match(stripped):
            raise PlacementError("the log was cut inside the layer table")
        if not stripped[0].isdigit():
            break
        rows.append(_row(stripped))
    if not rows:
        raise PlacementError("the layer table has no rows")
    raise PlacementError("the layer table does not end (the log stops inside it)")


def mark_attention(rows: list[dict[str, Any]]) -> None:
    """Set ``attention`` on each row (see the module docstring for the rule)."""
    for row in rows:
        row["attention"] = bool(_ATTENTION_OP.search(row["op"]))
    for i, row in enumerate(rows):
        if not _SOFTMAX_OP.search(row["op"]):
            continue
        start = i
        for j in range(i - 1, -1, -1):
            if _SOFTMAX_OP.search(rows[j]["op"]):
                break
            if _MATMUL_OP.search(rows[j]["op"]):
                start = j
                break
        end = i
        for k in range(i + 1, len(rows)):
            if _SOFTMAX_OP.search(rows[k]["op"]):
                break
            if _MATMUL_OP.search(rows[k]["op"]):
                end = k
                break
        for r in rows[start : end + 1]:
            r["attention"] = True


def read_placement(log: str, model_bytes: int | None = None) -> dict[str, Any]:
    """The placement a build log shows, or ``{"error": why}``.

    ``model_bytes`` is the exported ``.rknn`` file's size (None when there is none).
    """
    lines = _lines(log)
    titles = [i for i, line in enumerate(lines) if line.strip() == TITLE]
    if not titles:
        return {"error": f"the build's log has no {TITLE!r} (was the toolkit verbose?)"}
    try:
        every = _table(lines, titles[-1])
    except PlacementError as exc:
        return {"error": str(exc)}
    memory: dict[str, int | None] = {"internal_bytes": None, "weight_bytes": None}
    for line in lines[titles[-1] :]:
        found = _MEMORY.search(line)
        if found:
            key = "internal_bytes" if found["kind"] == "Internal" else "weight_bytes"
            memory[key] = _bytes(found["value"], found["unit"])
    rows = [r for r in every if r["op"] not in ENDPOINTS]
    mark_attention(rows)
    estimated = [r["cycles"] for r in rows if r["cycles"][2] > 0]
    dtypes: dict[str, int] = {}
    for r in rows:
        dtypes[r["dtype"]] = dtypes.get(r["dtype"], 0) + 1
    return {
        "npu_ops": sum(r["target"] == "NPU" for r in rows),
        "cpu_ops": sum(r["target"] == "CPU" for r in rows),
        "attention_ops": sum(r["attention"] for r in rows),
        "cpu": [
            {"op": r["op"], "name": r["name"], "attention": r["attention"]}
            for r in rows
            if r["target"] == "CPU"
        ],
        "fused": list(dict.fromkeys(r["op"] for r in rows if r["op"].startswith("ex"))),
        "dtypes": dtypes,
        "memory": {**memory, "model_bytes": model_bytes},
        "cycles": {
            "ddr": sum(c[0] for c in estimated),
            "npu": sum(c[1] for c in estimated),
            "total": sum(c[2] for c in estimated),
            "ops_with_estimate": len(estimated),
        },
        "layers": [
            {k: r[k] for k in ("id", "op", "dtype", "target", "inputs", "output", "name")}
            | {"attention": r["attention"]}
            for r in rows
        ],
        "tables": len(titles),
    }


def read_placement_file(path: str | Path, model_bytes: int | None = None) -> dict[str, Any]:
    """:func:`read_placement` of a job's whole log file (not the excerpt the host keeps)."""
    try:
        text = Path(path).read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        return {"error": f"the build's log cannot be read: {exc}"}
    return read_placement(text.replace("\r\n", "\n"), model_bytes)


def attention_on_npu(placement: dict[str, Any] | None) -> bool | None:
    """Whether no attention op runs on the CPU (None: no placement, or it could not be read,
    or the table shows no attention op at all)."""
    if not placement or "error" in placement or not placement.get("attention_ops"):
        return None
    return not any(op.get("attention") for op in placement.get("cpu", []))


def placement_class(placement: dict[str, Any] | None) -> str | None:
    """``attention-on-cpu``, ``some-on-cpu`` or ``all-on-npu`` (None: nothing to tell)."""
    if not placement or "error" in placement:
        return None
    if any(op.get("attention") for op in placement.get("cpu", [])):
        return "attention-on-cpu"
    return "some-on-cpu" if placement.get("cpu_ops") else "all-on-npu"


def broken_requirement(placement: dict[str, Any], require: str) -> list[str]:
    """The CPU ops that break ``require`` (``attention`` or ``all``), as ``op name`` strings."""
    if require not in REQUIREMENTS:
        raise ValueError(f"npu={require!r}: use one of {', '.join(REQUIREMENTS)}")
    ops = [op for op in placement.get("cpu", []) if require == "all" or op.get("attention")]
    return [f"{op['op']} {op.get('name') or ''}".strip() for op in ops]

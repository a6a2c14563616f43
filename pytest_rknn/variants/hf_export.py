"""Exporting ``hf`` variants: the host's side of ``hf_export_script.py``.

:func:`export_families` sends a batch of (spec, inputs) jobs to the exporter environment's
python in one subprocess (one torch and transformers import for all) and returns, per job,
what it made (:class:`FamilyExport`: the ONNX file, torch's eager output on the same inputs,
how peaked the attention was) or the exporter's error. The exporter environment pins
``transformers`` (:data:`~pytest_rknn.envs.recipes.EXPORTER_RECIPE`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..verdict.logtext import normalise
from .export_process import TorchExportError, run_export_script
from .families import MEL_BINS, PATCH, VOCAB, FamilySpec
from .forms import NotBuildable
from .reference import onnxruntime_outputs

_SCRIPT = Path(__file__).with_name("hf_export_script.py")
CROSS_CHECK_REL_L2 = 1e-4
"""Largest relative L2 distance between onnxruntime on the export and torch eager (both
float32; good exports measure about 1e-7)."""


class ExportFailed(Exception):
    """The exporter could not make a faithful ONNX model of the subject."""

    def __init__(self, signature: str, reason: str) -> None:
        super().__init__(reason)
        self.signature = signature
        self.reason = reason


def _ort_cause(message: str) -> str:
    """The part of an onnxruntime load error that says what is wrong (``Error ...`` at the end
    of an invalid-graph message), without the file path."""
    if ", Error " in message:
        return message.rsplit(", Error ", 1)[1]
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : |Load model from \S+ failed:", "", message)


def cross_check(model_path: Path, inputs: dict[str, np.ndarray], eager: np.ndarray) -> None:
    """Raise :class:`ExportFailed` unless onnxruntime runs the export and agrees with torch."""
    try:
        got = onnxruntime_outputs(Path(model_path), inputs)[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportFailed(
            f"onnxruntime rejects the export: {normalise(_ort_cause(first), 80)}",
            f"onnxruntime cannot load or run the exported graph: {first[:600]}",
        ) from None
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(eager, dtype=np.float64)
    if got.shape != want.shape:
        raise ExportFailed(
            "export output shape differs from torch",
            f"the export's output has shape {got.shape}, torch's eager output {want.shape}",
        )
    scale = float(np.linalg.norm(want)) or 1.0
    rel = float(np.linalg.norm(got - want)) / scale
    if not np.isfinite(got).all() or not rel <= CROSS_CHECK_REL_L2:
        raise ExportFailed(
            "onnxruntime disagrees with torch eager",
            f"onnxruntime on the export and torch eager differ: rel_l2 {rel:.3g} > "
            f"{CROSS_CHECK_REL_L2:g} (an export problem, not the toolkit's)",
        )


@dataclass(frozen=True)
class FamilyExport:
    """One exported model: its ONNX file, torch's eager output on the export's inputs, and
    the attention's peakedness (``peak`` and the ``uniform`` figure, or None)."""

    path: Path
    eager: Path
    attention: dict[str, Any] | None
    torch_version: str
    transformers_version: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """What a cell records: the attention's peakedness and the exporter's versions."""
        found = self.attention or {}
        return {
            "peak": found.get("peak"),
            "uniform": found.get("uniform"),
            "torch": self.torch_version,
            "transformers": self.transformers_version,
            "export_seconds": self.seconds,
        }


def script_spec(spec: FamilySpec) -> dict[str, Any]:
    """The spec as the script reads it: its fields plus what the host derives from them."""
    return {
        **spec.to_dict(),
        "vocab": VOCAB,
        "patch": PATCH,
        "mel_bins": MEL_BINS,
        "weights_seed": spec.weights_seed,
        "input_names": list(spec.input_shapes()),
    }


def export_families(
    jobs: Sequence[tuple[FamilySpec, dict[str, np.ndarray], Path]],
    python: Path,
    timeout: float = 900.0,
    dynamic_seq: bool = False,
) -> list[FamilyExport | TorchExportError]:
    """Export ``(spec, inputs, out.onnx)`` jobs; per job its export or the error saying why
    it failed. ``ExportProcessError`` only when the interpreter itself fails; NotBuildable when
    it has no transformers. ``dynamic_seq`` (and a spec with ``lengths``) leaves the token
    inputs' length free (``seq``; TorchScript exports)."""
    payload = []
    for spec, inputs, out in jobs:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        given = out.with_suffix(".inputs.npz")
        np.savez(given, **inputs)
        payload.append(
            {
                "spec": {**script_spec(spec), "dynamic_seq": dynamic_seq or bool(spec.lengths)},
                "inputs": str(given),
                "out": str(out),
                "eager": str(out.with_suffix(".eager.npz")),
            }
        )
    results = run_export_script(_SCRIPT, payload, python, timeout)
    if any(r.get("transformers_version") == "missing" for r in results):
        raise NotBuildable(
            f"{python} cannot import transformers, which the hf form needs: run "
            "`pytest-rknn envs --rebuild --toolkits none` (the exporter environment has it) or "
            "point PYTEST_RKNN_TORCH_PYTHON at a python with torch and transformers"
        )
    outcomes: list[FamilyExport | TorchExportError] = []
    for (spec, _inputs, out), job, result in zip(jobs, payload, results, strict=True):
        Path(job["inputs"]).unlink(missing_ok=True)
        if "error" in result:
            outcomes.append(
                TorchExportError(
                    f"{spec.exporter} export of {spec.id}: {result['error']}",
                    machine=bool(result.get("machine")),
                )
            )
            continue
        outcomes.append(
            FamilyExport(
                path=Path(out),
                eager=Path(job["eager"]),
                attention=result.get("attention"),
                torch_version=str(result.get("torch_version")),
                transformers_version=str(result.get("transformers_version")),
                seconds=float(result.get("seconds", 0.0)),
            )
        )
    return outcomes


def read_export(path: Path) -> FamilyExport:
    """A finished export recorded beside its ONNX file (``.json``, as ``to_dict`` wrote it);
    ``ValueError`` or ``KeyError`` when the record or either file is missing or damaged."""
    meta = json.loads(path.with_suffix(".json").read_text())
    eager = path.with_suffix(".eager.npz")
    if not (path.is_file() and eager.is_file()):
        raise ValueError(f"{path.name}: the export's files are incomplete")
    return FamilyExport(
        path=path,
        eager=eager,
        attention={"peak": meta["peak"], "uniform": meta["uniform"]},
        torch_version=str(meta["torch"]),
        transformers_version=str(meta["transformers"]),
        seconds=float(meta["export_seconds"]),
    )

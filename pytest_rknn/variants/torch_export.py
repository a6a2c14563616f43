"""Running the real torch exporter in another interpreter (torch is not a host dependency).

``find_torch_python()`` resolves the interpreter; ``export_with_torch()`` runs
``torch_export_script.py`` there in a subprocess with a timeout and returns what it made.

Exporters and what they need (measured with torch 2.13.0+cpu, onnx 1.18.0):

- ``torchscript``: ``dynamo=False``, opset 17, IR 8: torch alone.
- ``dynamo``: ``dynamo=True`` (torch.export), opset 17, IR 10: also needs ``onnxscript``,
  which the project's exporter environment has (``pytest-rknn envs`` builds it; the pins are
  ``envs.recipes.EXPORTER_RECIPE``). Toolkit environments have torch but no onnxscript.
- ``dynamo-opset23``: as ``dynamo`` at opset 23, where torch emits one ``Attention`` node.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .export_process import TorchExportError, run_export_script
from .spec import EXPORTERS, VariantSpec

TORCH_PYTHON_ENV = "PYTEST_RKNN_TORCH_PYTHON"
_SCRIPT = Path(__file__).with_name("torch_export_script.py")


@dataclass(frozen=True)
class ExportInfo:
    """What one export produced."""

    path: Path
    torch_version: str
    exporter: str
    opset: int
    seconds: float


def find_torch_python() -> Path | None:
    """The interpreter to run torch with: ``$PYTEST_RKNN_TORCH_PYTHON`` if set, else None.

    A set variable that names no executable is an error rather than a silent fallback.
    """
    value = os.environ.get(TORCH_PYTHON_ENV, "").strip()
    if not value:
        return None
    resolved = shutil.which(value)
    if resolved is None:
        raise TorchExportError(
            f"{TORCH_PYTHON_ENV}={value!r} is not an executable: point it at a python with torch"
        )
    return Path(resolved)


def require_python(find: Callable[[], Path | None], missing: str) -> Path:
    """The exporter interpreter ``find()`` names; ``NotBuildable`` with ``missing`` (the fix)
    when there is none, or with the reason when the named one is unusable."""
    from .forms import NotBuildable

    try:
        python = find()
    except TorchExportError as exc:
        raise NotBuildable(str(exc)) from None
    if python is None:
        raise NotBuildable(missing)
    return python


def interpreter_stamp(python: Path) -> str:
    """What tells one exporter interpreter's exports from another's: its path, when its own
    file was made (a venv's ``bin/python`` is a link made anew with the venv, while the file it
    links to is the base Python's and never changes), and the content of the marker beside a
    managed environment (its packages: rebuilt with another torch, it exports again)."""
    from pytest_rknn.envs.base import MARKER

    made = python.lstat().st_mtime_ns
    marker = python.parent.parent / MARKER
    try:
        packages = hashlib.sha256(marker.read_bytes()).hexdigest()[:16]
    except OSError:
        packages = "-"
    return f"{python}:{made}:{packages}"


def _check_job(spec: VariantSpec, exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise TorchExportError(
            f"exporter={exporter!r} is not one of {', '.join(map(repr, EXPORTERS))}"
        )
    if spec.form == "mha-block":
        raise TorchExportError("form='mha-block' has no torch module here: export an sdpa spec")


def export_many(
    jobs: Sequence[tuple[VariantSpec, Path, str]],
    python: Path,
    timeout: float = 600.0,
) -> list[ExportInfo | TorchExportError]:
    """Export several ``(spec, out_path, exporter)`` jobs with one torch import.

    Returns, per job and in order, its ``ExportInfo`` or the ``TorchExportError`` saying why
    that job failed; raises ``ExportProcessError`` only when the interpreter itself fails.
    """
    for spec, _, exporter in jobs:
        _check_job(spec, exporter)
    payload = []
    for spec, out_path, exporter in jobs:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        payload.append({"spec": spec.to_dict(), "out": str(out_path), "exporter": exporter})
    results = run_export_script(_SCRIPT, payload, python, timeout)
    outcomes: list[ExportInfo | TorchExportError] = []
    for (spec, out_path, exporter), result in zip(jobs, results, strict=True):
        if "error" in result:
            outcomes.append(
                TorchExportError(
                    f"torch export ({exporter}) of {spec.id}: {result['error']}",
                    machine=bool(result.get("machine")),
                )
            )
            continue
        outcomes.append(
            ExportInfo(
                path=Path(out_path),
                torch_version=result["torch_version"],
                exporter=exporter,
                opset=int(result["opset"]),
                seconds=float(result["seconds"]),
            )
        )
    return outcomes


def export_with_torch(
    spec: VariantSpec,
    python: Path,
    out_path: Path,
    exporter: str = "torchscript",
    timeout: float = 300.0,
) -> ExportInfo:
    """Export ``spec``'s torch module to ``out_path`` with ``python``'s torch and ``exporter``.

    The module is ``F.scaled_dot_product_attention`` with the spec's shapes, mask, scale,
    dtype and layout, whatever the spec's form (``mha-block`` excepted). Raises
    ``TorchExportError`` with the cause (e.g. ``onnxscript`` missing for ``dynamo``).
    """
    (outcome,) = export_many([(spec, Path(out_path), exporter)], python, timeout=timeout)
    if isinstance(outcome, TorchExportError):
        raise outcome
    return outcome

"""The exporter environment: torch with what its torch.export-based ONNX exporter needs.

Owns :class:`ExporterEnv`, a :class:`~pytest_rknn.envs.base.ManagedEnv` next to the toolkit
environments (``<root>/exporter-cp311``) holding torch (the same :class:`TorchSpec`) and the
pins of :data:`~pytest_rknn.envs.recipes.EXPORTER_RECIPE` (onnxscript, onnx-ir, ml_dtypes, onnx,
numpy). Toolkit environments keep the toolkits' own pins; this one is the interpreter for the
``torch-export`` form (``PYTEST_RKNN_TORCH_PYTHON``). Its smoke run exports one small spec
with every exporter through :func:`~pytest_rknn.variants.torch_export.export_many` and
checks that each model loads, passes the ONNX checker and computes attention in onnxruntime.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import IO, Any

from pytest_rknn.envs.base import RECIPE_SCHEMA, ManagedEnv, Phase, py_tag, python_version
from pytest_rknn.envs.recipes import EXPORTER_RECIPE, exporter_requirements

EXPORT_SMOKE_TIMEOUT = 300.0
SMOKE_SPEC = dict(
    form="torch-export", batch=1, num_heads=2, num_kv_heads=1, q_len=4, kv_len=4, head_dim=8
)


class ExporterEnv(ManagedEnv):
    """The torch interpreter for the ``torch-export`` form, with all three exporters working."""

    kind = "exporter"
    shown_packages = ("torch", "onnx", "onnxscript")
    smoke_name = "smoke export"

    @property
    def label(self) -> str:
        return "exporter"

    @property
    def name(self) -> str:
        return f"exporter-{py_tag()}"

    def recipe(self) -> dict[str, Any]:
        return {
            "schema": RECIPE_SCHEMA,
            "kind": self.kind,
            "python": python_version(),
            "table": EXPORTER_RECIPE,
            "torch": self.torch.key(),
        }

    def hint(self, rebuild: bool = False) -> str:
        flag = " --rebuild" if rebuild else ""
        return f"run `pytest-rknn envs{flag}{self.root_flag()} --toolkits none`"

    def _install(self, log: IO[str], report: Phase) -> tuple[list[str], dict[str, Any]]:
        self.fresh_venv(log, report)
        requirements = exporter_requirements()
        report("installing torch and the exporter's packages")
        self.pip_install(
            [*requirements, *self.torch.pip_args()], log, "pip install exporter packages", report
        )
        info = self.check_packages(report, ("torch", *EXPORTER_RECIPE["pin"]))
        return requirements, info

    def _smoke(self, workdir: Path) -> dict[str, Any]:
        return smoke_export(self.python, workdir)


def _smoke_families(python: Path, folder: Path) -> list[str]:
    """Export a tiny transformers BERT and check it against torch; what went wrong, if any."""
    from pytest_rknn.variants.families import FamilySpec, family_inputs
    from pytest_rknn.variants.hf_export import ExportFailed, cross_check, export_families

    spec = FamilySpec(family="bert", hidden=16, heads=2, kv_heads=2, seq_len=4, mask="pad")
    inputs = family_inputs(spec, 0)
    (outcome,) = export_families(
        [(spec, inputs, folder / f"{spec.id}.onnx")], python, timeout=EXPORT_SMOKE_TIMEOUT
    )
    if isinstance(outcome, Exception):
        return [f"hf: {outcome}"]
    try:
        import numpy as np

        with np.load(outcome.eager) as data:
            cross_check(outcome.path, inputs, data["out"])
    except ExportFailed as exc:
        return [f"hf: {exc.reason}"]
    return []


def smoke_export(python: Path, workdir: Path | None = None) -> dict[str, Any]:
    """Export :data:`SMOKE_SPEC` with every exporter using ``python``'s torch and check each
    model: loads, passes ``onnx.checker``, matches the float64 reference in onnxruntime."""
    import onnx

    from pytest_rknn.variants.inputs import make_inputs
    from pytest_rknn.variants.reference import (
        onnxruntime_bound,
        onnxruntime_outputs,
        reference_outputs,
    )
    from pytest_rknn.variants.spec import EXPORTERS, VariantSpec
    from pytest_rknn.variants.torch_export import export_many

    start = time.perf_counter()
    specs = [VariantSpec(**SMOKE_SPEC, mask="causal", exporter=name) for name in EXPORTERS]
    worst = 0.0
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rknn-export-smoke-", dir=workdir) as tmp:
        jobs = [(spec, Path(tmp) / f"{spec.id}.onnx", spec.exporter) for spec in specs]
        outcomes = export_many(jobs, python, timeout=EXPORT_SMOKE_TIMEOUT)
        torch_version = "?"
        for spec, outcome in zip(specs, outcomes, strict=True):
            if isinstance(outcome, Exception):
                failures.append(str(outcome))
                continue
            torch_version = outcome.torch_version
            model = onnx.load(str(outcome.path))
            onnx.checker.check_model(model)
            inputs = make_inputs(spec, 0)
            (got,) = onnxruntime_outputs(model, inputs)
            (want,) = reference_outputs(spec, inputs)
            error = float(abs(got.astype("float64") - want).max())
            if error > onnxruntime_bound(spec, inputs):
                failures.append(f"{spec.exporter}: onnxruntime max-abs error {error:.3g}")
            worst = max(worst, error)
        failures += _smoke_families(python, Path(tmp))
    seconds = round(time.perf_counter() - start, 2)
    if failures:
        return {"ok": False, "detail": "; ".join(failures), "seconds": seconds}
    detail = (
        f"{', '.join(EXPORTERS)} and a transformers BERT exported with torch {torch_version}; "
        f"onnxruntime max-abs error {worst:.1e}"
    )
    return {"ok": True, "detail": detail, "seconds": seconds}

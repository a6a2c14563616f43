"""Matrices as runs write them, for the tests of the matrix and of its views.

:func:`make_cell` makes a cell with a real signature and real metrics; :func:`run_matrix` the
matrix one CI job (one toolkit version) writes; :func:`changed` a later run of it with one
regression, one fix, one removed and one new cell. The fixtures ``m232`` and ``m220``
(``tests/conftest.py``) are two such jobs' matrices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pytest_rknn.results.cell import CellRecord as Cell
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.verdict.metrics import compute_metrics
from pytest_rknn.verdict.signatures import classify
from pytest_rknn.verdict.tolerance import Bounds

LOGS = Path(__file__).parent / "data" / "logs"
VARIANTS = [
    {"form": "manual", "batch": 1, "num_heads": 8, "q_len": 128, "kv_len": 128, "head_dim": 64},
    {"form": "torch-sdpa", "batch": 1, "num_heads": 4, "q_len": 1, "kv_len": 256, "head_dim": 64},
    {"form": "mha-block", "batch": 2, "num_heads": 8, "q_len": 64, "kv_len": 64, "head_dim": 32},
    {"form": "model", "path": "/data/models/encoder.onnx", "sha256": "3f1c"},
]


def vid(spec: dict[str, Any]) -> str:
    return "-".join(f"{k}{v}" for k, v in spec.items() if k not in ("path", "sha256"))


def make_cell(spec: dict[str, Any], platform: str, toolkit: str, status: str, **kw: Any) -> Cell:
    """A cell as a run records it, with a real signature and real metrics."""
    log = kw.pop("log", "")
    metrics = {}
    if status in ("pass", "tolerance-fail"):
        rng = np.random.default_rng(len(platform) + len(toolkit))
        y = rng.standard_normal((1, 4, 16, 32))
        noise = 3e-4 if status == "pass" else 0.2
        metrics["output0"] = compute_metrics(y, y + rng.standard_normal(y.shape) * noise).to_dict()
    error = "tolerance: rel_l2, max_abs" if status == "tolerance-fail" else kw.pop("error", None)
    return Cell(
        variant_id=vid(spec),
        variant=spec,
        platform=platform,
        toolkit=toolkit,
        quant=kw.pop("quant", "fp16"),
        status=status,
        signature=classify(log, error, status),
        reason=error,
        metrics=metrics,
        bounds=Bounds.for_mode("fp16").to_dict(),
        timings={"load": 0.05, "build": 0.21, "export": 0.01, "init": 0.02, "inference": 0.03},
        peak_rss_mb=612.5,
        log_excerpt=log[-400:] or None,
        **kw,
    )


def run_matrix(toolkit: str, started: str, finished: str) -> Matrix:
    """The matrix one CI job (one toolkit version) writes."""
    regtask = (LOGS / "issue_rknn-llm_417_regtask.txt").read_text()
    argb = (LOGS / "issue_rockchip-rknn-toolkit2_272_argb.txt").read_text()
    meta = {
        "pytest_rknn": "0.1.0",
        "started": started,
        "finished": finished,
        "host": {"name": f"ci-{toolkit}", "cpus": 2},
        "command": f"pytest cases/ --rknn-toolkits {toolkit}",
        "seed": 1234,
        "profile": "ci",
        "platforms": ["rk3566", "rk3588"],
        "quant": ["fp16"],
        "toolkits": [toolkit],
        "toolkit_envs": [{"version": toolkit, "python": "/envs/" + toolkit + "/bin/python"}],
    }
    m = Matrix(meta=meta)
    for spec in VARIANTS:
        m.add(make_cell(spec, "rk3566", toolkit, "pass", finished=finished))
        if spec["form"] == "torch-sdpa" and toolkit == "2.2.0":
            m.add(
                make_cell(spec, "rk3588", toolkit, "crash", log=regtask + argb, finished=finished)
            )
        elif spec["form"] == "mha-block":
            m.add(make_cell(spec, "rk3588", toolkit, "tolerance-fail", finished=finished))
        else:
            m.add(make_cell(spec, "rk3588", toolkit, "pass", finished=finished))
    return m


def changed(old: Matrix) -> Matrix:
    """``old`` with one regression, one fix, one removed and one new cell (toolkit 2.3.2)."""
    passing = [c for c in old.cells if c.status == "pass"]
    failing = next(c for c in old.cells if c.status == "tolerance-fail")
    new = Matrix(meta=old.meta, cells=[c for c in old.cells if c.key != passing[1].key])
    new.add(make_cell(passing[0].variant, passing[0].platform, "2.3.2", "convert-fail"))
    new.add(make_cell(failing.variant, failing.platform, "2.3.2", "pass"))
    new.add(make_cell(VARIANTS[0], "rk3576", "2.3.2", "pass"))
    return new

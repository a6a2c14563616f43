"""The smoke conversion that proves a toolkit environment really converts and simulates.

A tiny attention graph (MatMul, scale, Softmax, MatMul) goes through a real worker for rk3588 in
fp16, and the simulator's output is compared with a float64 numpy reference.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from pytest_rknn.toolkit.protocol import Job, Limits
from pytest_rknn.toolkit.supervisor import ToolkitWorker

SHAPE = (1, 2, 8, 16)
TOLERANCE = 1e-2


@dataclass(frozen=True)
class SmokeResult:
    ok: bool
    detail: str
    seconds: float


def tiny_attention(path: Path, shape: tuple[int, int, int, int] = SHAPE) -> Path:
    """Write the smoke graph: softmax(q @ kᵀ * d^-0.5) @ v on (batch, heads, seq, dim) inputs."""
    names = ("q", "k", "v")
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in names]
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [shape[-1] ** -0.5])
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["out"]),
    ]
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "smoke_attention", inputs, [output], [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) * q.shape[-1] ** -0.5
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs @ v


def smoke_convert(
    python: Path, workdir: Path | None = None, timeout: float = 180.0, version: str = "smoke"
) -> SmokeResult:
    """Convert and simulate the smoke graph with the interpreter ``python`` of ``version``."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rknn-smoke-", dir=workdir) as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(3)]
        job = Job.create(tiny_attention(root / "smoke.onnx"), "rk3588", root / "job", arrays)
        worker = ToolkitWorker(
            python=Path(python),
            version=version,
            workdir=root,
            limits=Limits(timeout=timeout, startup_timeout=timeout, max_memory=6 << 30),
        )
        try:
            result = worker.run(job)
        finally:
            worker.stop()
        seconds = round(time.perf_counter() - start, 2)
        if not result.ok:
            last = [ln for ln in result.log.splitlines() if ln.strip()][-1:]
            status = result.status.value if result.status else "failed"
            why = result.error or status
            return SmokeResult(
                False, f"{status}: {why}" + (f" ({last[0]})" if last else ""), seconds
            )
        outputs = result.load_outputs()
        if len(outputs) != 1 or outputs[0].size != int(np.prod(SHAPE)):
            return SmokeResult(False, f"unexpected outputs {[o.shape for o in outputs]}", seconds)
        err = float(np.abs(outputs[0].reshape(SHAPE) - _reference(*arrays)).max())
        if err > TOLERANCE:
            return SmokeResult(False, f"simulator max-abs error {err:.3g} > {TOLERANCE}", seconds)
        return SmokeResult(
            True, f"rk3588 fp16 converted and simulated, max-abs error {err:.1e}", seconds
        )

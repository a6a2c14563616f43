"""Opset-17 models load, check and run under a toolkit environment's older onnx/onnxruntime.

Toolkit environments hold onnx 1.14.1 / onnxruntime 1.16.0 (2.2.0) and onnx 1.18.0 /
onnxruntime 1.19.2 (2.3.x, 2.5.0); both ends are tried.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import pytest

from pytest_rknn.variants import (
    build_model,
    draw_variants,
    make_inputs,
    onnxruntime_bound,
    reference_outputs,
)

OLD_SIDE_SCRIPT = """
import json, sys, numpy as np, onnx, onnxruntime as ort
for path in sys.argv[1:]:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = dict(np.load(path[: -len(".onnx")] + ".npz"))
    (out,) = session.run(None, feeds)
    np.save(path[: -len(".onnx")] + ".out.npy", out)
print(json.dumps({"onnx": onnx.__version__, "onnxruntime": ort.__version__}))
"""


@pytest.mark.toolkit
@pytest.mark.parametrize("version", ["2.2.0", "2.3.2"])
def test_opset17_models_run_in_a_toolkit_environment(tmp_path, toolkit_python, version) -> None:
    python = toolkit_python(version)
    specs = draw_variants(40, 9, forms=("torch-sdpa", "manual", "mha-block"))
    paths = []
    for spec in specs:
        path = tmp_path / f"{spec.id}.onnx"
        onnx.save(build_model(spec), str(path))
        np.savez(tmp_path / f"{spec.id}.npz", **make_inputs(spec, 0))
        paths.append(str(path))
    done = subprocess.run(
        [str(python), "-c", OLD_SIDE_SCRIPT, *paths], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    versions = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(versions) == {"onnx", "onnxruntime"}
    for spec in specs:
        inputs = make_inputs(spec, 0)
        got = np.load(tmp_path / f"{spec.id}.out.npy")
        (want,) = reference_outputs(spec, inputs)
        assert float(np.abs(got - want).max()) <= onnxruntime_bound(spec, inputs), spec.id

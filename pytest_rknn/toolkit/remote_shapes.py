"""The worker's part of a job built with ``dynamic_input``: one inference per listed shape.

Imported by ``remote.py`` (inside a toolkit environment: standard library, numpy and rknn only)
after ``init_runtime``. For each listed shape it runs ``inference`` on that shape's inputs and
saves the outputs as ``shape<i>_output<j>.npy`` in the job's folder; a shape the runtime refuses
or fails is that shape's error, and the next shape still runs. Then it feeds the job's
``probe_inputs``, a shape that is not listed, and says how the runtime answered:
``refused`` (it raised or returned nothing; its message kept) or ``served`` (it returned
outputs, which are not kept: nothing judges them).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

PROBE_LOG = "probe.log"
"""In a job's folder: what the toolkit printed while answering the unlisted shape (kept out of
the job's log, where its refusal would read as an error the toolkit survived)."""


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    kind = type(exc).__name__
    return (last if last.startswith(f"{kind}:") else f"{kind}: {last}")[:400]


@contextlib.contextmanager
def _printing_to(path: str):
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def infer_each(job: dict, rknn: object, step, result: dict) -> None:
    """Fill ``result``'s ``shape_outputs``, ``shape_errors``, ``shape_seconds`` and
    ``unlisted``; ``outputs`` are the first served shape's (``failed_phase`` ``inference``
    when no shape is served)."""
    import numpy as np

    outdir = job["outdir"]
    result["shape_outputs"] = []
    result["shape_errors"] = []
    result["shape_seconds"] = []
    for i, paths in enumerate(job.get("shape_inputs") or []):
        arrays = [np.load(p, allow_pickle=False) for p in paths]
        start = time.perf_counter()
        saved: list[str] = []
        error = None
        try:
            outputs = step(
                "inference", rknn.inference, inputs=arrays, data_format=["nchw"] * len(arrays)
            )
        except Exception as exc:  # noqa: BLE001 - the runtime's answer for this shape
            outputs, error = None, _last_line(exc)
            print(f"inference of shape {i} raised {error}")
        if outputs is None and error is None:
            error = "inference returned None"
        for j, out in enumerate(outputs or []):
            path = os.path.join(outdir, f"shape{i}_output{j}.npy")
            np.save(path, np.asarray(out))
            saved.append(path)
        result["shape_outputs"].append(saved)
        result["shape_errors"].append(error)
        result["shape_seconds"].append(round(time.perf_counter() - start, 6))
    probe = job.get("probe_inputs") or []
    if probe:
        arrays = [np.load(p, allow_pickle=False) for p in probe]
        print(f"the unlisted shape: see {PROBE_LOG}")
        try:
            with _printing_to(os.path.join(outdir, PROBE_LOG)):
                outputs = step(
                    "inference", rknn.inference, inputs=arrays, data_format=["nchw"] * len(arrays)
                )
        except Exception as exc:  # noqa: BLE001 - the answer is what is recorded
            result["unlisted"] = {"answer": "refused", "message": _last_line(exc)}
        else:
            if outputs is None:
                result["unlisted"] = {"answer": "refused", "message": "inference returned None"}
            else:
                shapes = [list(np.asarray(o).shape) for o in outputs]
                result["unlisted"] = {"answer": "served", "message": f"outputs of shapes {shapes}"}
    # The listed shapes' inferences, not the last call's (the unlisted shape's).
    result["timings"]["inference"] = round(sum(result["shape_seconds"]), 6)
    served = [paths for paths in result["shape_outputs"] if paths]
    result["returncodes"]["inference"] = 0 if served else -1
    if served:
        result["outputs"] = list(served[0])
    else:
        result["failed_phase"] = "inference"
        result["error"] = next((e for e in result["shape_errors"] if e), "no shape was served")

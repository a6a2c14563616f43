"""Jobs in forks of a worker that imported the toolkit once, and never converts itself.

Used by ``remote.py`` inside a toolkit environment (it imports this file from its own folder),
so it imports only the standard library (numpy, onnx and the toolkit inside a throwaway fork).

:func:`run_forked` runs one job in a fork: every job starts from the same clean state (the
toolkit imported, nothing converted), for a few milliseconds instead of a new import, and a job
that kills its process costs only its fork. The fork writes the job's ``result`` to the host
itself; :func:`ended` says how a fork that did not ended, in the host's words. A worker whose
host is gone (the jobs channel hung up: pytest killed) :func:`abandon`-s its job at once, fork
and all, rather than convert on with no memory cap and no timeout (:func:`watch_host` does the
same for a worker that converts in its own process). Before the
worker's ``ready``, :func:`warm_imports` imports what the toolkit imports lazily on its first
conversion, learnt from a throwaway fork that converts a two-node graph
(:func:`first_conversion`, with :data:`WARMUP_VARIABLE` set), so that the forks do not each
import it again.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

WARM_TIMEOUT = 60.0
WARMUP_VARIABLE = "PYTEST_RKNN_WARMUP"
"""Set (to ``1``) in the throwaway fork only: its conversion is no job."""


def ended(status: int) -> str:
    """How a fork ended, in the words the host uses for a worker that dies mid-job."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"worker died with {name}"
    return f"worker exited with code {os.WEXITSTATUS(status)} in the middle of a job"


def first_conversion(rknn_cls: type, folder: str) -> None:
    """Convert and simulate a MatMul + Softmax graph (what any first job would touch)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    weight = np.linspace(-1, 1, 4 * 16 * 8, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Softmax", ["m"], ["y"], axis=-1),
        ],
        "warm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor("w", TensorProto.FLOAT, [1, 4, 16, 8], weight)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = os.path.join(folder, "warm.onnx")
    onnx.save(model, path)
    rknn = rknn_cls(verbose=False)
    rknn.config(target_platform="rk3588")
    built = rknn.load_onnx(path) == 0 and rknn.build(do_quantization=False) == 0
    if built and rknn.init_runtime() == 0:
        rknn.inference(inputs=[np.ones((1, 4, 8, 16), np.float32)], data_format=["nchw"])
    rknn.release()


def warm_imports(rknn_cls: type, timeout: float = WARM_TIMEOUT) -> int:
    """Import here what a first conversion imports (this process still converts nothing): the
    number of modules a throwaway fork named; 0 if it named none or took over ``timeout``."""
    names_r, names_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(names_r)
            os.environ[WARMUP_VARIABLE] = "1"
            before = set(sys.modules)
            with tempfile.TemporaryDirectory() as folder:
                first_conversion(rknn_cls, folder)
            os.write(names_w, json.dumps(sorted(set(sys.modules) - before)).encode())
        finally:
            os._exit(0)
    os.close(names_w)
    data, deadline = b"", time.monotonic() + timeout
    with os.fdopen(names_r, "rb", buffering=0) as fh:
        while select.select([fh], [], [], max(deadline - time.monotonic(), 0))[0]:
            chunk = fh.read(1 << 16)
            if not chunk:
                break
            data += chunk
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            data = b""
    os.waitpid(pid, 0)
    try:
        names = json.loads(data) if data else []
    except ValueError:
        return 0
    for name in names:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    return len(names)


def abandon(fork: int | None = None) -> None:
    """End this worker's job for good: its host is gone, so nobody will read the result, cap
    the job's memory or time it. A worker that leads its session (the host starts each in a
    session of its own) kills its process group: itself, the job's fork and whatever that
    started; any other (e.g. one a shell started as a pipeline's first process, which leads a
    group holding the rest of the pipeline) kills ``fork`` and exits."""
    if os.getsid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    if fork is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(fork, signal.SIGKILL)
    os._exit(4)


def watch_host(host_fd: int) -> None:
    """Block until the host's end of ``host_fd`` (the jobs channel) is closed, then
    :func:`abandon`: for a worker that converts in its own process (a thread runs this)."""
    poller = select.poll()
    poller.register(host_fd, 0)  # a hang-up or an error is always reported
    while not poller.poll():
        pass
    abandon()


def run_forked(
    job_id: str, work: Callable[[], dict], send: Callable[[dict], None], host_fd: int | None = None
) -> str | None:
    """Run ``work`` (one job) in a fork that sends the job's ``result`` itself: None once it
    has, else how the fork ended. When the host's end of ``host_fd`` (the jobs channel) closes
    meanwhile, the host is gone: the job is :func:`abandon`-ed."""
    sent_r, sent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(sent_r)
            send({"op": "result", "id": job_id, "result": work()})
            os.write(sent_w, b"sent")
            code = 0
        except BaseException:  # noqa: BLE001 - the host hears of it as a fork that died
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(sent_w)
    poller = select.poll()
    poller.register(sent_r, select.POLLIN)
    if host_fd is not None:
        poller.register(host_fd, 0)
    said = b""
    try:
        while True:
            events = dict(poller.poll())
            if host_fd in events:
                abandon(pid)
            chunk = os.read(sent_r, 64) if sent_r in events else b""
            if sent_r in events and not chunk:
                break
            said += chunk
    finally:
        os.close(sent_r)
    _, status = os.waitpid(pid, 0)
    return None if said == b"sent" else ended(status)

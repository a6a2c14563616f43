"""The toolkit-side worker: runs inside one rknn-toolkit2 environment, converts jobs one by one.

This file is executed as a script by a toolkit environment's interpreter (``python remote.py
--jobs FD --results FD``); it is never imported by the host. It imports only the standard
library, numpy and rknn. Jobs and results travel as JSON lines over two inherited pipe file
descriptors, never over stdout: the toolkit prints there (Python and C++ alike), and each job's
stdout/stderr are redirected at the file-descriptor level into that job's log file.

The conversation (checked on the host by ``protocol.py``): ``hello`` -> ``ready`` (the same
protocol number and nonce), then ``job`` -> ``result`` naming the job's id, until ``exit``.
With ``"fork": true`` in the hello, this process imports the toolkit once and never converts:
each job runs in a fork of it (``remote_fork.py`` beside this file), which writes the ``result``
itself; a fork that dies first is reported by this process as ``died`` with how it ended. A
toolkit that leaves a thread running after its import gets no forks (``"fork": false`` in the
ready).
A job runs in its own folder (a verbose build writes debug graphs into the current folder: they
are removed after the job) through
``config -> load_onnx -> build -> export_rknn -> init_runtime -> inference`` and its
result names the call that failed (``failed_phase``), or none; ``load_onnx`` gets the job's
``input_names`` and ``input_size_list`` when the host sent them (a graph with free dims). While
a call runs, its name is in the job folder's ``toolkit-call`` file, for the host to read if the
process dies in it. What that means for the cell is decided on the host. A ``hybrid`` job
builds through the toolkit's hybrid flow instead of ``build`` (``remote_hybrid.py`` beside this
file: ``hybrid_quantization_step1`` in the job's folder, the attention layers set to float16 in
its config, ``hybrid_quantization_step2``) and names those layers in ``fp16_layers``. An
``analysis`` job builds the same way, then runs ``accuracy_analysis`` on the job's inputs instead
of exporting and simulating, and names the file of its per-layer errors in ``analysis``.
A job with ``shape_inputs`` (built with ``dynamic_input``) is simulated once per listed shape
and once at ``probe_inputs``, a shape not listed (``remote_shapes.py`` beside this file).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import json
import os
import sys
import threading
import time
import traceback

PROTOCOL = 5
ANALYSIS_DIR = "analysis"
CALL_FILE = "toolkit-call"
"""In a job's folder: the name of the toolkit call under way (empty between calls), so that the
host can tell in which call a process that died was."""


def _vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_hwm() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


class _Redirect:
    """Point fds 1 and 2 (and so every C++ and Python write) at a log file for one job."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> _Redirect:
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])


def run_job(job: dict, rknn_cls: type) -> dict:
    import numpy as np

    result: dict = {
        "id": job["id"],
        "failed_phase": None,
        "returncodes": {},
        "timings": {},
        "outputs": [],
        "artifact": None,
        "error": None,
        "fp16_layers": None,
        "analysis": None,
    }
    outdir = job["outdir"]
    os.makedirs(outdir, exist_ok=True)
    _reset_hwm()
    rknn = None
    phase = "create"

    call_file = os.path.join(os.path.abspath(outdir), CALL_FILE)

    def note_call(name: str) -> None:
        # Only a hint for the host: a file that cannot be written (a full disk) must not fail
        # the call, and is removed rather than left naming another call.
        try:
            with open(call_file, "w") as fh:
                fh.write(name)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(call_file)

    def step(name: str, fn, *args, **kwargs):
        nonlocal phase
        phase = name
        note_call(name)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            result["timings"][name] = round(time.perf_counter() - start, 6)
            note_call("")

    def failed(name: str, ret: object) -> bool:
        result["returncodes"][name] = ret if isinstance(ret, int) else 0
        if ret not in (0, None):
            result["failed_phase"] = name
            result["error"] = f"{name} returned {ret}"
            return True
        return False

    try:
        rknn = step("create", rknn_cls, verbose=bool(job.get("verbose", False)))
        config = dict(job.get("config") or {})
        config["target_platform"] = job["platform"]
        if failed("config", step("config", rknn.config, **config)):
            return result
        # A graph with free dims gets the shapes of the inputs it is fed, as a user fixes them.
        sizes = job.get("input_size_list") or []
        fixed = {"inputs": job.get("input_names"), "input_size_list": sizes} if sizes else {}
        if failed("load_onnx", step("load_onnx", rknn.load_onnx, model=job["onnx"], **fixed)):
            return result
        if job.get("hybrid"):
            # Step 2 refuses an object that loaded a model: it gets a fresh one, released at
            # the end like the first would have been (which goes right after step 1).
            first, rknn = rknn, None

            def adopt(second: object) -> None:
                nonlocal rknn
                rknn = second

            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import remote_hybrid

            if not remote_hybrid.build(job, first, rknn_cls, config, step, failed, result, adopt):
                return result
        else:
            ret = step(
                "build",
                rknn.build,
                do_quantization=bool(job.get("do_quantization", False)),
                dataset=job.get("dataset"),
            )
            if failed("build", ret):
                return result
        if job.get("analysis"):
            snapshot = os.path.join(outdir, ANALYSIS_DIR)
            ret = step(
                "accuracy_analysis",
                rknn.accuracy_analysis,
                inputs=list(job.get("inputs", [])),
                output_dir=snapshot,
                target=None,
            )
            if failed("accuracy_analysis", ret):
                return result
            report = os.path.join(snapshot, "error_analysis.txt")
            if not os.path.isfile(report):
                result["failed_phase"] = "accuracy_analysis"
                result["error"] = f"accuracy_analysis wrote no {report}"
                return result
            result["analysis"] = report
            return result
        artifact = os.path.join(outdir, "model.rknn")
        if failed("export_rknn", step("export_rknn", rknn.export_rknn, artifact)):
            return result
        result["artifact"] = artifact
        if not job.get("simulate", True):
            return result
        if failed("init_runtime", step("init_runtime", rknn.init_runtime)):
            return result
        if job.get("shape_inputs"):
            # Built with dynamic_input: one inference per listed shape, and one not listed.
            import remote_shapes

            remote_shapes.infer_each(job, rknn, step, result)
            return result
        arrays = [np.load(p, allow_pickle=False) for p in job.get("inputs", [])]
        # inference() reads 4-D arrays as NHWC unless told otherwise; ours are in the model's
        # layout. The toolkit wants one format string per input whatever its rank.
        outputs = step(
            "inference", rknn.inference, inputs=arrays, data_format=["nchw"] * len(arrays)
        )
        if outputs is None:
            failed("inference", -1)
            return result
        result["returncodes"]["inference"] = 0
        for i, out in enumerate(outputs):
            path = os.path.join(outdir, f"output{i}.npy")
            np.save(path, np.asarray(out))
            result["outputs"].append(path)
    except BaseException as exc:  # noqa: BLE001 - every toolkit failure becomes a result
        result["failed_phase"] = phase
        # The toolkit re-raises with a whole traceback as the message; the log keeps it all.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        result["error"] = f"{type(exc).__name__} in {phase}: {lines[-1] if lines else ''}"
        result["outputs"] = []
        if "Traceback" in str(exc):
            # The toolkit logged this traceback itself and re-raised it as the message.
            print(f"{type(exc).__name__} raised from {phase} (its traceback is above)")
        else:
            traceback.print_exc()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    finally:
        if rknn is not None:
            try:
                rknn.release()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
        result["peak_rss_mb"] = _vm_hwm_mb()
    return result


def _read(jobs) -> dict | None:
    line = jobs.readline()
    if not line:
        return None
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"not a message: {line[:80]!r}")
    return message


DEBUG_DUMPS = "check[0-9]*_*.onnx"
"""What a verbose build writes into the current folder (the graph after each optimisation
pass): nobody reads them, so they go into the job's folder and are removed after the job."""


def _absolute(job: dict) -> dict:
    paths = {k: os.path.abspath(job[k]) for k in ("onnx", "outdir", "log") if job.get(k)}
    if job.get("dataset"):
        paths["dataset"] = os.path.abspath(job["dataset"])
    inputs = [os.path.abspath(p) for p in job.get("inputs", [])]
    return {**job, **paths, "inputs": inputs}


def _logged(job: dict, rknn_cls: type) -> dict:
    job = _absolute(job)
    os.makedirs(job["outdir"], exist_ok=True)
    saved = os.getcwd()
    os.chdir(job["outdir"])
    try:
        with _Redirect(job["log"]):
            return run_job(job, rknn_cls)
    finally:
        os.chdir(saved)
        for dump in glob.glob(os.path.join(job["outdir"], DEBUG_DUMPS)):
            with contextlib.suppress(OSError):
                os.unlink(dump)


def serve(jobs_fd: int, results_fd: int) -> int:
    jobs = os.fdopen(jobs_fd, "r", encoding="utf-8")
    results = os.fdopen(results_fd, "w", encoding="utf-8")

    def send(message: dict) -> None:
        results.write(json.dumps(message) + "\n")
        results.flush()

    hello = _read(jobs)
    if hello is None or hello.get("op") != "hello":
        print(f"remote: expected hello, got {hello!r}", file=sys.stderr)
        return 2
    ready = {"op": "ready", "protocol": PROTOCOL, "nonce": hello.get("nonce"), "pid": os.getpid()}
    if hello.get("protocol") != PROTOCOL:
        send({**ready, "ok": False, "error": f"host speaks protocol {hello.get('protocol')!r}"})
        return 2
    fork = bool(hello.get("fork")) and hasattr(os, "fork")
    start = time.perf_counter()
    try:
        from rknn.api import RKNN
    except BaseException as exc:  # noqa: BLE001 - reported to the host as env-error
        send({**ready, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        traceback.print_exc()
        return 3
    try:
        from importlib.metadata import version

        toolkit = version("rknn-toolkit2")
    except Exception:  # noqa: BLE001
        toolkit = None
    import_s = round(time.perf_counter() - start, 3)
    # A fork holds only the forking thread: with others running, jobs stay in this process.
    fork = fork and threading.active_count() == 1
    import remote_fork

    if fork:
        warmed = remote_fork.warm_imports(RKNN)
    else:
        threading.Thread(target=remote_fork.watch_host, args=(jobs_fd,), daemon=True).start()
        warmed = 0
    send(
        {
            **ready,
            "ok": True,
            "toolkit": toolkit,
            "python": sys.version.split()[0],
            "import_s": import_s,
            "fork": fork,
            "warm_modules": warmed,
            "warm_s": round(time.perf_counter() - start - import_s, 3),
        }
    )
    while True:
        message = _read(jobs)
        if message is None or message.get("op") == "exit":
            return 0
        if message.get("op") != "job" or not isinstance(message.get("job"), dict):
            print(f"remote: unexpected message {str(message)[:200]}", file=sys.stderr)
            return 2
        job = message["job"]
        if fork:
            work = functools.partial(_logged, job, RKNN)
            died = remote_fork.run_forked(job["id"], work, send, host_fd=jobs_fd)
            if died is not None:
                send({"op": "died", "id": job["id"], "detail": died})
            continue
        send({"op": "result", "id": job["id"], "result": _logged(job, RKNN)})


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, required=True, help="fd to read JSON-line jobs from")
    parser.add_argument("--results", type=int, required=True, help="fd to write results to")
    args = parser.parse_args(argv)
    return serve(args.jobs, args.results)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The interpreter's teardown of an imported toolkit (torch and all) takes half a second and
    # does nothing the host needs: every job's answer has been sent.
    os._exit(code)

"""Run export scripts one batch after another in one interpreter; run by the exporter's python.

Standalone like the export scripts it runs (the standard library only). A run makes its torch
exports and then its hf exports: run as ``python SCRIPT JOBS RESULTS`` each, both batches import
torch and warm up torch.export anew (5 CPU seconds of the 17 the two cost, measured with torch
2.13). Here the second batch finds them imported. Usage::

    python export_server.py

Each line on stdin is one batch, ``{"script": path, "argv": [jobs, results], "log": path}``:
the script runs as ``__main__`` with that ``sys.argv`` (what it writes to its files, and the
names torch records in a model, are those of a run of its own), its stdout and stderr go to
``log``, and one line ``{"code": exit code}`` answers on stdout. The server ends at the end of
its stdin, or with the batch that interrupts it (Ctrl-C: as a process of the batch's own would).
"""

import json
import os
import runpy
import sys
import traceback


def run_batch(request, answer):
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    saved = os.dup(1), os.dup(2)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.argv = [request["script"], *request["argv"]]
    try:
        runpy.run_path(request["script"], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - the batch's failure is its answer
        traceback.print_exc()
        if not isinstance(exc, Exception):
            raise
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
    answer.write(json.dumps({"code": code}) + "\n")
    answer.flush()


def main():
    answer = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    for line in sys.stdin:
        if line.strip():
            run_batch(json.loads(line), answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())

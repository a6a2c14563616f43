"""Run export scripts one batch after another in one interpreter; run by the exporter's python.

Standalone like the export scripts it runs (the standard library only). A run makes its torch
exports and then its hf exports: run as ``python SCRIPT JOBS RESULTS`` each, both batches import
torch and warm up torch.export anew (5 CPU seconds of the 17 the two cost, measured with torch
2.13). Here the second batch finds them imported. Usage::

    python export_server.py

Each line on stdin is one batch, ``{"script": path, "argv": [jobs, results], "log": path}``:
the script runs as ``__main__`` with that ``sys.argv`` (what it writes to its files, and the
names torch records in a model, are those of a run of its own), its stdout and stderr go to
``log``, its stdin is /dev/null, and one line ``{"code": exit code}`` answers on stdout (the
requests and answers go through copies of the server's stdin and stdout that nothing the batch
starts inherits). What a batch changes in the interpreter's state (working folder, environment,
``sys.path``, streams, warning filters, signal handlers) is undone before the next. The server
ends at the end of its stdin, or with the batch that interrupts it (Ctrl-C: as a process of the
batch's own would); when the host hangs up in the middle of a batch (killed), at once.
"""

import contextlib
import json
import os
import runpy
import select
import signal
import sys
import threading
import traceback
import warnings

_RESTORED_SIGNALS = ("SIGINT", "SIGTERM", "SIGALRM", "SIGHUP")


class _Batch:
    """What a batch may change and the next one must not see: the working folder, the
    environment, ``sys.path`` and ``sys.argv``, the standard streams, warning filters, signal
    handlers and a pending alarm."""

    def __enter__(self):
        self.cwd = os.getcwd()
        self.environ = dict(os.environ)
        self.path, self.argv = list(sys.path), list(sys.argv)
        self.streams = sys.stdin, sys.stdout, sys.stderr
        self.filters = list(warnings.filters)
        self.signals = {
            name: signal.getsignal(getattr(signal, name))
            for name in _RESTORED_SIGNALS
            if hasattr(signal, name)
        }
        return self

    def __exit__(self, *exc):
        if hasattr(signal, "alarm"):
            signal.alarm(0)
        for name, handler in self.signals.items():
            if handler is not None:
                signal.signal(getattr(signal, name), handler)
        warnings.filters[:] = self.filters
        sys.stdin, sys.stdout, sys.stderr = self.streams
        sys.path[:], sys.argv[:] = self.path, self.argv
        os.environ.clear()
        os.environ.update(self.environ)
        os.chdir(self.cwd)
        return False


def run_batch(request):
    """Run one batch; its exit code."""
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    saved = os.dup(1), os.dup(2)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        with _Batch():
            sys.argv = [request["script"], *request["argv"]]
            try:
                runpy.run_path(request["script"], run_name="__main__")
                code = 0
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:  # as the interpreter does: the message on stderr, code 1
                    print(exc.code, file=sys.stderr)
                    code = 1
            except BaseException as exc:  # noqa: BLE001 - the batch's failure is its answer
                traceback.print_exc()
                if not isinstance(exc, Exception):
                    raise
                code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
    return code


class _Host:
    """Whether the host hung up, and whether a batch is running: the host closes the requests
    channel between batches to stop the server (it then ends at the end of its input), and
    only a killed host closes it in the middle of one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.gone = self.busy = False

    def watch(self, fd):
        """Wait until the host's end of ``fd`` closes; in the middle of a batch, end the
        server, batch and all: no export runs on with nobody to read it or time it."""
        poller = select.poll()
        poller.register(fd, 0)  # a hang-up or an error is always reported
        while not poller.poll():
            pass
        with self.lock:
            self.gone = True
            if self.busy:
                os._exit(3)

    def start_batch(self):
        """False once the host is gone (the batch is not run)."""
        with self.lock:
            self.busy = not self.gone
            return self.busy

    def end_batch(self):
        with self.lock:
            self.busy = False


def main():
    # The requests and answers travel on copies of stdin and stdout that no program a batch
    # starts inherits; the batches themselves get /dev/null, as a process of their own would.
    requests = os.fdopen(os.dup(0), "r")
    answer = os.fdopen(os.dup(1), "w")
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY)):
        devnull = os.open(os.devnull, mode)
        os.dup2(devnull, fd)
        os.close(devnull)
    host = _Host()
    threading.Thread(target=host.watch, args=(requests.fileno(),), daemon=True).start()
    for line in requests:
        if not line.strip():
            continue
        if not host.start_batch():
            break
        try:
            code = run_batch(json.loads(line))
        finally:
            host.end_batch()
        answer.write(json.dumps({"code": code}) + "\n")
        answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

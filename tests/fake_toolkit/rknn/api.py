"""FAKE ``rknn.api.RKNN``: behaves as ``FAKE_RKNN_MODE`` says, to exercise the worker's faults.

Modes: ok (echo inputs back as outputs), noise (print to Python stdout and the C-level fd 1),
build-fail (build returns -1 after a traceback-like log), raise (build raises IndexError),
crash (the process kills itself during build), hang (build sleeps), hog (build allocates memory),
runtime-fail (init_runtime returns -1).
"""

import os
import signal
import sys
import time

import numpy as np

MODE = os.environ.get("FAKE_RKNN_MODE", "ok")
if MODE == "import-error":
    raise ImportError("fake toolkit told to fail its import")


class RKNN:
    def __init__(self, verbose=False):
        self.platform = None

    def config(self, target_platform=None, **kwargs):
        self.platform = target_platform
        return 0

    def load_onnx(self, model, **kwargs):
        return 0 if os.path.exists(model) else -1

    def build(self, do_quantization=True, dataset=None, **kwargs):
        mode = os.environ.get("FAKE_RKNN_MODE", "ok")
        if mode == "noise":
            print('{"op": "result", "result": "this is toolkit noise, not protocol"}')
            os.write(1, b"E RKNN: C-level noise on fd 1\n")
            os.write(2, b"E RKNN: C-level noise on fd 2\n")
        elif mode == "build-fail":
            print("E RKNN: [00:00:00.000] REGTASK: The bit width of field value exceeds the limit")
            return -1
        elif mode == "raise":
            raise IndexError("list index out of range")
        elif mode == "crash":
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGSEGV)
        elif mode == "hang":
            time.sleep(3600)
        elif mode == "hog":
            hog = []
            while True:
                hog.append(np.ones(64 << 20, dtype=np.uint8))
                time.sleep(0.01)
        return 0

    def export_rknn(self, path, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"FAKE-RKNN")
        return 0

    def init_runtime(self, target=None, **kwargs):
        return -1 if os.environ.get("FAKE_RKNN_MODE") == "runtime-fail" else 0

    def inference(self, inputs, data_format=None, **kwargs):
        return [np.asarray(a) * 2 for a in inputs]

    def release(self):
        pass

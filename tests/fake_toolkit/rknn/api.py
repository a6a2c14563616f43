"""FAKE ``rknn.api.RKNN`` for tests of the worker protocol, the fault handling and the pipeline.

It is not rknn-toolkit2 and never stands in for it in a real matrix. ``FAKE_RKNN_MODE`` says how
it behaves; ``FAKE_RKNN_MODE=by-platform:rk3588=build-fail`` picks a mode per target platform
(``simulate`` for the platforms it does not name).

Modes:
- ok: outputs are the inputs doubled (protocol round trips);
- simulate: outputs computed by onnxruntime from the model (a "converted" model that is right);
- noise: print protocol-looking text to Python stdout and the C-level fds 1 and 2;
- env: print the worker's environment variable names into the log;
- build-fail: build returns -1 after a REGTASK line; raise: build raises IndexError;
- runtime-fail: init_runtime returns -1;
- rule-fail: build fails in the fusion rule ``fuse_fake`` unless config(disable_rules=[...])
  names it;
- silent: build succeeds after one of its threads died with an exception (use silent+simulate);
- crash: the process kills itself (SIGSEGV) during build, every time; crash-once: the same
  only while the file ``FAKE_RKNN_ONCE`` names does not exist (it creates it first), then as the
  mode after the ``+`` (``crash-once+simulate``); abort: dies of SIGABRT during build, after
  printing an error line;
- hang: build sleeps; hog: build allocates memory; import-hog: the import touches
  ``FAKE_RKNN_HOG_MB`` (800) MiB and waits 3 s (a worker over the memory cap at rest);
- ansi-fail: build fails after an error line full of terminal escapes;
- slow: build sleeps ``FAKE_RKNN_DELAY`` seconds (default 0.5), then as simulate (so that a run
  can be interrupted halfway);
- garbage, extra-line, huge-line, forged-id: write to the worker's results channel from inside
  the toolkit (a line that is not JSON, a result for another job, a line with no end, a result
  naming another job id) before the real answer; late-line: an unasked-for line on that channel
  0.2 s after build (usually after the answer).

Quantized builds: ``build(do_quantization=True)`` and ``hybrid_quantization_step1`` check their
dataset as the real toolkit reads it (one line per sample, ``.npy`` paths relative to the list's
folder, the same number of inputs per line) and return -1 for a bad one; the dataset's lines are
written to ``FAKE-dataset.json`` beside the list. The hybrid flow writes ``<model>.model`` (the
ONNX model itself: an ONNX ModelProto like the real one), ``<model>.data`` and
``<model>.quantization.cfg`` (every tensor of the graph) into the CWD. Step 2, as the real one,
refuses an object that loaded a model and a ``custom_quantize_layers`` name that is not a tensor
("Invalid operands name"); it writes the float16 tensors to ``FAKE-hybrid.json``.
``accuracy_analysis`` writes an ``error_analysis.txt`` in the real layout, one row per node, the
first Softmax's own error large; ``FAKE_RKNN_ANALYSIS`` = ``fail`` (returns -1) or ``hang``
(sleeps) makes it fail.

With ``FAKE_RKNN_IMPORT_THREAD`` set, the import leaves a thread running (as a toolkit with a
thread pool would). ``MODE+simulate`` (e.g. ``late-line+simulate``) behaves as MODE in
``build`` and as simulate in ``inference``. The worker's warm-up conversion
(``PYTEST_RKNN_WARMUP`` set) is no job: it behaves as ok whatever the mode, and leaves no mark.

In every mode, ``build`` first drops a file named ``<time>-<pid>-<platform>-<mode>`` into the
folder ``FAKE_RKNN_MARKS`` names, if any (tests wait for it to know a job is under way, and which
process runs it; with ``FAKE_RKNN_GATE`` set, the job that makes ``FAKE_RKNN_GATE_AT`` marks
and every later one then wait until the file ``FAKE_RKNN_GATE`` names exists), and
``export_rknn`` writes ``FAKE-identity.json`` (the platform, model and other ``config()``
options the job was given, and the shapes ``load_onnx`` was given) beside the artifact, so that
a test can tell which job's folder a result came from.

``load_onnx``, as the real one, raises ValueError for an ONNX graph with a free input dim (a
``dim_param`` or no dim at all) unless ``inputs`` and ``input_size_list`` fix every input's
shape or ``config(dynamic_input=...)`` lists shapes. With ``dynamic_input``, ``inference``
raises ValueError (the real one's message) for a shape not listed, unless
``FAKE_RKNN_SERVE_UNLISTED`` is set, and returns None for the shape (its first input's, as
``str(list)``) that ``FAKE_RKNN_FAIL_SHAPE`` names.
"""

import json
import os
import signal
import sys
import threading
import time

import numpy as np

MODE = os.environ.get("FAKE_RKNN_MODE", "ok")
if MODE == "import-error":
    raise ImportError("fake toolkit told to fail its import")
if MODE.startswith("import-hog"):
    # Touch FAKE_RKNN_HOG_MB (default 800) MiB while importing, as a toolkit bigger than the
    # memory cap would, and wait for the host's watch to see it.
    _HOG = np.ones(int(os.environ.get("FAKE_RKNN_HOG_MB", "800")) << 20, dtype=np.uint8)
    time.sleep(3.0)
if os.environ.get("FAKE_RKNN_IMPORT_THREAD"):
    threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="fake-pool").start()


def _results_fd():
    argv = sys.argv
    return int(argv[argv.index("--results") + 1])


def _channel(data: bytes) -> None:
    fd = _results_fd()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _quantize_layer():
    raise KeyError("/MatMul_output_0")


def _mode(platform):
    if os.environ.get("PYTEST_RKNN_WARMUP"):
        return "warm-up"
    mode = os.environ.get("FAKE_RKNN_MODE", "ok")
    if mode.startswith("by-platform:"):
        table = dict(item.split("=", 1) for item in mode.split(":", 1)[1].split(","))
        return table.get(platform, "simulate")
    return mode


def _check_dataset(dataset):
    """The dataset's lines, or an error string (as the real toolkit would refuse it)."""
    if not dataset or not os.path.isfile(dataset):
        return f"dataset {dataset!r} does not exist"
    folder = os.path.dirname(os.path.abspath(dataset))
    with open(dataset) as fh:
        lines = [line.split() for line in fh if line.strip()]
    if not lines or len({len(line) for line in lines}) != 1:
        return f"dataset {dataset} has no lines or lines of different lengths"
    for line in lines:
        for name in line:
            try:
                np.load(os.path.join(folder, name), allow_pickle=False)
            except (OSError, ValueError) as exc:
                return f"dataset entry {name}: {exc}"
    with open(os.path.join(folder, "FAKE-dataset.json"), "w") as fh:
        json.dump(lines, fh)
    return lines


def _tensors(model):
    import onnx

    graph = onnx.load(model).graph
    return [o for node in graph.node for o in node.output]


TABLE = os.path.join(
    os.path.dirname(__file__), "..", "..", "data", "placement", "2.5.0-rk3588-fp16-sdpa-causal.log"
)
"""A real toolkit's layer table and memory lines, which a verbose build of the FAKE toolkit
prints as the real one prints its own (what the host parses into a cell's placement)."""


def _print_table() -> None:
    with open(TABLE) as fh:
        lines = fh.read().splitlines()
    start = next(i for i, line in enumerate(lines) if "Network Layer Information Table" in line)
    print("\n".join(lines[start:]))


class RKNN:
    def __init__(self, verbose=False):
        self.verbose = verbose
        self.platform = None
        self.model = None
        self.options = {}

    def config(self, target_platform=None, **kwargs):
        self.platform = target_platform
        self.options = kwargs
        return 0

    def load_onnx(self, model, inputs=None, input_size_list=None, **kwargs):
        self.model = model
        self.sizes = {"inputs": inputs, "input_size_list": input_size_list}
        if not os.path.exists(model):
            return -1
        import onnx

        try:
            graph = onnx.load(model).graph
        except Exception:  # noqa: BLE001 - protocol tests load files that are no ONNX
            return 0
        initializers = {i.name for i in graph.initializer}
        declared = [i for i in graph.input if i.name not in initializers]
        for value in declared:
            dims = value.type.tensor_type.shape.dim
            free = any(not d.HasField("dim_value") for d in dims)
            if free and not input_size_list and not self.options.get("dynamic_input"):
                shape = [
                    d.dim_param or "?" if not d.HasField("dim_value") else d.dim_value for d in dims
                ]
                raise ValueError(
                    f"The input shape {shape} of '{value.name}' is not support! Please set the "
                    "'inputs' / 'input_size_list' parameters of 'rknn.load_onnx', or set the "
                    "'dyanmic_input' parameter of 'rknn.config' to fix the input shape!"
                )
        if input_size_list and (
            list(inputs or []) != [v.name for v in declared]
            or len(input_size_list) != len(declared)
        ):
            print(f"E load_onnx: inputs {inputs} do not match the graph's {len(declared)} inputs")
            return -1
        return 0

    def hybrid_quantization_step1(self, dataset="dataset.txt", proposal=False, **kwargs):
        lines = _check_dataset(dataset)
        if isinstance(lines, str):
            print(f"E hybrid_quantization_step1: {lines}")
            return -1
        stem = os.path.splitext(os.path.basename(self.model))[0]
        with open(self.model, "rb") as src, open(f"{stem}.model", "wb") as dst:
            dst.write(src.read())
        with open(f"{stem}.data", "w") as fh:
            fh.write(os.path.abspath(self.model))
        with open(f"{stem}.quantization.cfg", "w") as fh:
            fh.write("custom_quantize_layers: {}\nquantize_parameters:\n")
            for name in _tensors(self.model):
                fh.write(f"    {name}:\n        qtype: asym\n        dtype: int8\n")
        return 0

    def hybrid_quantization_step2(self, model_input, data_input, model_quantization_cfg):
        if self.model is not None:  # as the real one: step 2 wants an object of its own
            print("E hybrid_quantization_step2: The model already exists. Do not call 'load_onnx'")
            return -1
        with open(data_input) as fh:
            self.model = fh.read().strip()
        known = set(_tensors(self.model))
        fp16 = []
        with open(model_quantization_cfg) as fh:
            text = fh.read()
        block = text.split("custom_quantize_layers:", 1)[1].split("quantize_parameters:", 1)[0]
        for line in block.splitlines():
            if line.strip() and line.strip() != "{}":
                name = line.rsplit(":", 1)[0].strip().strip("'")
                if name not in known:
                    print(f"E hybrid_quantization_step2: Invalid operands name '{name}'")
                    raise ValueError(f"Invalid operands name '{name}' in custom_quantize_layers!")
                fp16.append(name)
        with open(os.path.join(os.path.dirname(model_input), "FAKE-hybrid.json"), "w") as fh:
            json.dump(fp16, fh)
        if self.verbose:
            _print_table()
        return 0

    def accuracy_analysis(self, inputs, output_dir="./snapshot", target=None, device_id=None):
        how = os.environ.get("FAKE_RKNN_ANALYSIS", "")
        if how == "fail":
            print("E accuracy_analysis: told to fail")
            return -1
        if how == "hang":
            time.sleep(3600)
        import onnx

        os.makedirs(output_dir, exist_ok=True)
        rows, hit = [], False
        for node in onnx.load(self.model).graph.node:
            single = 0.99999
            if node.op_type == "Softmax" and not hit:
                single, hit = 0.5, True
            entire = 0.5 if hit else 0.99999
            rows.append(
                f"[{node.op_type}] {node.output[0]}   {entire:.5f} | 1.0   {single:.5f} | 1.0"
            )
        with open(os.path.join(output_dir, "error_analysis.txt"), "w") as fh:
            fh.write("# FAKE simulator_error\nlayer_name   simulator_error\n-----\n")
            fh.write("\n".join(rows) + "\n")
        return 0

    def build(self, do_quantization=True, dataset=None, **kwargs):
        mode = _mode(self.platform).split("+")[0]
        if do_quantization:
            lines = _check_dataset(dataset)
            if isinstance(lines, str):
                print(f"E build: {lines}")
                return -1
        marks = os.environ.get("FAKE_RKNN_MARKS")
        if marks and mode != "warm-up":
            name = f"{time.time_ns()}-{os.getpid()}-{self.platform}-{mode}"
            with open(os.path.join(marks, name), "w") as fh:
                fh.write(str(self.model))
            gate = os.environ.get("FAKE_RKNN_GATE")
            if gate and len(os.listdir(marks)) >= int(os.environ.get("FAKE_RKNN_GATE_AT", "1")):
                while not os.path.exists(gate):
                    time.sleep(0.02)
        if mode == "noise":
            print('{"op": "result", "result": "this is toolkit noise, not protocol"}')
            os.write(1, b"E RKNN: C-level noise on fd 1\n")
            os.write(2, b"E RKNN: C-level noise on fd 2\n")
        elif mode == "env":
            print("ENV " + " ".join(sorted(os.environ)))
        elif mode == "build-fail":
            print("E RKNN: [00:00:00.000] REGTASK: The bit width of field value exceeds the limit")
            return -1
        elif mode == "ansi-fail":
            print("\x1b[31mE build: \x1b]0;title\x07The \x1b[1mbit\x1b[0m width exceeds\x1b[0m")
            return -1
        elif mode == "raise":
            raise IndexError("list index out of range")
        elif mode == "crash" or (
            mode == "crash-once" and not os.path.exists(os.environ["FAKE_RKNN_ONCE"])
        ):
            if mode == "crash-once":
                open(os.environ["FAKE_RKNN_ONCE"], "w").close()
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGSEGV)
        elif mode == "abort":
            print("E RKNN: [00:00:00.000] invalid tensor malloc size, target: CPU, size: 0")
            sys.stdout.flush()
            os.abort()
        elif mode == "hang":
            time.sleep(3600)
        elif mode == "slow":
            time.sleep(float(os.environ.get("FAKE_RKNN_DELAY", "0.5")))
        elif mode == "hog":
            hog = []
            while True:
                hog.append(np.ones(64 << 20, dtype=np.uint8))
                time.sleep(0.01)
        elif mode == "garbage":
            _channel(b"this line is not JSON\n")
        elif mode == "extra-line":
            other = {"id": "someone-else", "failed_phase": None, "outputs": []}
            line = {"op": "result", "id": "someone-else", "result": other}
            _channel((json.dumps(line) + "\n").encode())
        elif mode == "forged-id":
            job = os.path.basename(os.path.dirname(os.readlink("/proc/self/fd/1")))
            forged = {"id": job + "-forged", "failed_phase": None, "outputs": []}
            _channel((json.dumps({"op": "result", "id": job, "result": forged}) + "\n").encode())
        elif mode == "huge-line":
            _channel(b"[" * (6 << 20))
        elif mode == "rule-fail" and "fuse_fake" not in self.options.get("disable_rules", []):
            # What 2.3.x prints when a fusion rule breaks (tests/data/logs/issue_..._256_...).
            print("W build: Show op fuse match nodes:\nRule: fuse_fake\nSubgraph:")
            print(
                "W You can add disable_rules=['fuse_fake'] in rknn.config() to temporarily "
                "disable the error rule!"
            )
            print("E build: Traceback (most recent call last):")
            print(
                '  File "rknn/api/graph_optimizer.py", line 2108, in rknn.api.graph_optimizer'
                ".GraphOptimizer.fuse_fake"
            )
            print("KeyError: '/Softmax_output_0'")
            return -1
        elif mode == "silent":
            # What a toolkit thread that dies does: Python prints its traceback, build succeeds.
            worker = threading.Thread(target=_quantize_layer, name="quant-worker")
            worker.start()
            worker.join()
        elif mode == "late-line":
            timer = threading.Timer(0.2, _channel, args=(b'{"op": "pong"}\n',))
            timer.daemon = True
            timer.start()
        if self.verbose:
            _print_table()
        return 0

    def export_rknn(self, path, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"FAKE-RKNN")
        identity = os.path.join(os.path.dirname(path), "FAKE-identity.json")
        with open(identity + ".tmp", "w") as fh:
            json.dump(
                {
                    "platform": self.platform,
                    "model": str(self.model),
                    "config": self.options,
                    "load_onnx": getattr(self, "sizes", None),
                },
                fh,
            )
        os.replace(identity + ".tmp", identity)
        return 0

    def init_runtime(self, target=None, **kwargs):
        return -1 if _mode(self.platform) == "runtime-fail" else 0

    def inference(self, inputs, data_format=None, **kwargs):
        mode = _mode(self.platform)
        listed = self.options.get("dynamic_input")
        if listed:
            shapes = [list(np.asarray(a).shape) for a in inputs]
            if shapes not in listed and not os.environ.get("FAKE_RKNN_SERVE_UNLISTED"):
                raise ValueError(
                    f"The inputs[0].shape {shapes[0]} is not in {[s[0] for s in listed]}!"
                )
            if str(shapes[0]) == os.environ.get("FAKE_RKNN_FAIL_SHAPE"):
                print(f"E inference: FAKE cannot run shape {shapes[0]}")
                return None
        if mode in ("simulate", "slow") or mode.endswith("+simulate"):
            import onnx
            import onnxruntime

            model = onnx.load(self.model)
            names = [i.name for i in model.graph.input]
            session = onnxruntime.InferenceSession(
                model.SerializeToString(), providers=["CPUExecutionProvider"]
            )
            return session.run(None, dict(zip(names, inputs, strict=True)))
        return [np.asarray(a) * 2 for a in inputs]

    def release(self):
        pass

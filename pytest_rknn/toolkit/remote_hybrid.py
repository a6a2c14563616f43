"""A hybrid build: its two steps, and the layers it keeps in float16 (from the toolkit's files).

Used by ``remote.py`` inside a toolkit environment (it imports this file from its own folder),
so it imports only the standard library. The host imports it too (tests).

``hybrid_quantization_step1`` writes ``<model>.model`` (the graph after the toolkit's fusions, an
ONNX ``ModelProto``), ``<model>.data`` and ``<model>.quantization.cfg`` (YAML: an empty
``custom_quantize_layers: {}``, then ``quantize_parameters:`` with one entry per tensor).
``custom_quantize_layers`` maps *tensor* names (the toolkit calls them operands; a node name is
rejected with "Invalid operands name") to a dtype; a tensor set to ``float16`` makes the layer
that produces it compute in float16. Measured with 2.5.0 on a single attention: setting only the
fused attention op's output leaves most of the int8 error (the int8 layout ops around it still
re-quantize); setting the attention and the layout ops around it gives fp16's accuracy.

:func:`attention_layers` picks the attention subgraph of that graph: MatMuls of two activations
(neither operand an initializer), Softmax, the fused attention ops (``exSDPAttention`` and any
op named ``*attention*``/``*sdpa*``), the ops between them (scale, mask), the pure layout ops
(Transpose, Reshape, ...) that feed only them or read only them, and the constant scalings
(Mul/Div by a constant) that feed only them. Weighted ops (projections,
convolutions) and the graph's input/output conversions stay int8.
:func:`with_float16` writes the config with those tensors set to ``float16``, editing the text
only: the toolkit compares every saved scale with its own, so a YAML round trip that rewrites a
float breaks step 2.
:func:`build` runs the whole flow for one job of ``remote.py``: step 1 in the job's folder, the
config edited, step 2 on a fresh RKNN object.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

LAYOUT_OPS = frozenset(
    {
        "transpose",
        "reshape",
        "squeeze",
        "unsqueeze",
        "flatten",
        "expand",
        "tile",
        "concat",
        "split",
        "slice",
        "gather",
        "identity",
    }
)
WEIGHTED_OPS = ("matmul", "gemm", "conv")
# A constant scaling of q or k (torch's SDPA export multiplies both by sqrt(scale)).
SCALE_OPS = frozenset({"mul", "div"})
# What hybrid_quantization_step1 writes into the CWD: <model>.<ext> for each.
STEP1_FILES = ("model", "data", "quantization.cfg")


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


# --- a minimal protobuf reader: the fields of ModelProto/GraphProto/NodeProto we need --------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def _fields(data: bytes):
    """(field number, wire type, value) of one message; LEN values as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def read_graph(data: bytes) -> tuple[list[Node], set[str]]:
    """The nodes and the initializer names of a serialized ONNX ``ModelProto``."""
    graph = next((v for n, w, v in _fields(data) if n == 7 and w == 2), None)
    if graph is None:
        raise ValueError("no graph in the model file")
    nodes: list[Node] = []
    initializers: set[str] = set()
    for number, wire, value in _fields(graph):
        if wire != 2:
            continue
        if number == 1:
            node = Node("", "")
            for n, w, v in _fields(value):
                if w != 2:
                    continue
                text = v.decode("utf-8", "replace")
                if n == 1:
                    node.inputs.append(text)
                elif n == 2:
                    node.outputs.append(text)
                elif n == 3:
                    node.name = text
                elif n == 4:
                    node.op = text
            nodes.append(node)
        elif number == 5:
            for n, w, v in _fields(value):
                if n == 8 and w == 2:
                    initializers.add(v.decode("utf-8", "replace"))
    return nodes, initializers


# --- the attention subgraph -------------------------------------------------------------------


def _kind(op: str) -> str:
    low = op.lower()
    return low[2:] if low.startswith("ex") else low


def _weighted(node: Node, initializers: set[str]) -> bool:
    """A projection or convolution: one of its two operands is a constant. (rk3566's fused
    ``exMatMul`` of q and k takes the attention's scale as a constant third input: that one is
    not a weight.)"""
    return any(w in _kind(node.op) for w in WEIGHTED_OPS) and any(
        i in initializers for i in node.inputs[:2]
    )


def _scaling(node: Node, initializers: set[str]) -> bool:
    """A Mul/Div of one activation by a constant."""
    return len(node.inputs) == 2 and sum(i in initializers for i in node.inputs) == 1


def _core(node: Node, initializers: set[str]) -> bool:
    kind = _kind(node.op)
    if "softmax" in kind or "attention" in kind or "sdpa" in kind:
        return True
    return "matmul" in kind and not _weighted(node, initializers)


def attention_layers(nodes: list[Node], initializers: set[str]) -> list[Node]:
    """The nodes of the attention subgraph, in graph order (see the module's docstring)."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.outputs}
    consumers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, node in enumerate(nodes):
        for name in node.inputs:
            if name in producer:
                consumers[producer[name]].append(i)
    core = {i for i, node in enumerate(nodes) if _core(node, initializers)}

    def passable(i: int) -> bool:
        return not _weighted(nodes[i], initializers) and "dataconvert" not in _kind(nodes[i].op)

    def reach(start: set[int], step) -> set[int]:
        seen, todo = set(start), list(start)
        while todo:
            for j in step(todo.pop()):
                if j not in seen and passable(j):
                    seen.add(j)
                    todo.append(j)
        return seen

    def parents(i: int) -> list[int]:
        return [producer[n] for n in nodes[i].inputs if n in producer]

    chosen = core | (reach(core, lambda i: consumers[i]) & reach(core, parents))
    grown = True
    while grown:
        grown = False
        for i, node in enumerate(nodes):
            if i in chosen or _kind(node.op) not in LAYOUT_OPS | SCALE_OPS:
                continue
            feeds_only = consumers[i] and all(j in chosen for j in consumers[i])
            reads_only = parents(i) and all(j in chosen for j in parents(i))
            if _kind(node.op) in SCALE_OPS and not _scaling(node, initializers):
                continue
            if feeds_only or reads_only:
                chosen.add(i)
                grown = True
    return [nodes[i] for i in sorted(chosen)]


# --- the quantization config -------------------------------------------------------------------

_SECTION = re.compile(r"^custom_quantize_layers:.*?(?=^\S)", re.MULTILINE | re.DOTALL)


def config_tensors(text: str) -> list[str]:
    """The tensor names under ``quantize_parameters:`` of a quantization config."""
    names: list[str] = []
    inside = False
    for line in text.splitlines():
        if line and not line[0].isspace():
            inside = line.startswith("quantize_parameters:")
            continue
        match = re.match(r"^ {4}(\S.*):\s*$", line) if inside else None
        if match:
            name = match.group(1)
            if len(name) > 1 and name[0] == name[-1] and name[0] in "'\"":
                name = name[1:-1].replace("''", "'") if name[0] == "'" else name[1:-1]
            names.append(name)
    return names


def with_float16(text: str, tensors: list[str]) -> str:
    """The config ``text`` with ``custom_quantize_layers`` mapping ``tensors`` to float16."""
    if not tensors:
        raise ValueError("no tensor to keep in float16")
    entries = "".join("    '" + t.replace("'", "''") + "': float16\n" for t in tensors)
    block = "custom_quantize_layers:\n" + entries
    if not _SECTION.search(text):
        raise ValueError("the quantization config has no custom_quantize_layers section")
    return _SECTION.sub(lambda _m: block, text, count=1)


def choose(model: bytes, config: str) -> tuple[list[Node], list[str]]:
    """The attention nodes of a step-1 model and the config tensors they produce."""
    nodes, initializers = read_graph(model)
    known = set(config_tensors(config))
    layers = [
        n for n in attention_layers(nodes, initializers) if any(o in known for o in n.outputs)
    ]
    tensors = [o for n in layers for o in n.outputs if o in known]
    return layers, list(dict.fromkeys(tensors))


class _Cwd:
    """Run in ``path`` (step 1 of the hybrid flow writes its files into the CWD)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.saved = os.getcwd()
        os.chdir(self.path)

    def __exit__(self, *exc: object) -> None:
        os.chdir(self.saved)


def build(job: dict, rknn, rknn_cls: type, config: dict, step, failed, result: dict, adopt) -> bool:
    """Step 1 in the job's folder (``rknn`` is released after it), the attention layers to
    float16, then step 2 on a new RKNN object configured like the first (handed to ``adopt``
    as soon as it exists); False when a step failed."""
    outdir = job["outdir"]
    try:
        with _Cwd(outdir):
            ret = step(
                "hybrid_quantization_step1",
                rknn.hybrid_quantization_step1,
                dataset=job.get("dataset"),
                proposal=False,
            )
    finally:
        # Its files hold all step 2 needs: free the first object's memory before the second.
        rknn.release()
    if failed("hybrid_quantization_step1", ret):
        return False
    stem = os.path.splitext(os.path.basename(job["onnx"]))[0]
    model, data, cfg = (os.path.join(outdir, f"{stem}.{ext}") for ext in STEP1_FILES)
    missing = [p for p in (model, data, cfg) if not os.path.isfile(p)]
    if missing:
        result["failed_phase"] = "hybrid_quantization_step1"
        result["error"] = f"hybrid_quantization_step1 wrote no {', '.join(missing)}"
        return False
    try:
        with open(model, "rb") as fh, open(cfg, encoding="utf-8") as ch:
            text = ch.read()
            layers, tensors = choose(fh.read(), text)
    except (OSError, ValueError) as exc:
        result["failed_phase"] = "hybrid_config"
        result["error"] = f"hybrid: cannot read step 1's files: {type(exc).__name__}: {exc}"
        return False
    result["fp16_layers"] = [{"name": n.name, "op": n.op} for n in layers]
    if not tensors:
        result["failed_phase"] = "hybrid_config"
        result["error"] = (
            "hybrid: no attention layer (a MatMul of two activations, Softmax, a fused attention "
            f"op) in the toolkit's graph {os.path.basename(model)}: nothing to keep in float16"
        )
        return False
    edited = os.path.join(outdir, f"{stem}.hybrid.cfg")
    with open(edited, "w", encoding="utf-8") as fh:
        fh.write(with_float16(text, tensors))
    print(f"hybrid: float16 tensors {tensors}")
    second = step("step2_create", rknn_cls, verbose=bool(job.get("verbose", False)))
    adopt(second)
    if failed("step2_config", step("step2_config", second.config, **config)):
        return False
    ret = step(
        "hybrid_quantization_step2",
        second.hybrid_quantization_step2,
        model_input=model,
        data_input=data,
        model_quantization_cfg=edited,
    )
    return not failed("hybrid_quantization_step2", ret)

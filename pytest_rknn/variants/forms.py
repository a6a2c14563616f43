"""ONNX graph forms of a variant: ``build_model(spec)`` for every form the spec names.

Forms (opset 17, IR 8 so that onnxruntime 1.16+ and onnx 1.14+ load them, except
``onnx-attention``: opset 23, IR 11):

- ``torch-sdpa``: replica of torch's TorchScript exporter output (``torch_replica``);
- ``manual``: the decomposition vendors recommend: MatMul, constant scale Mul, mask Add
  (causal mask as a constant initializer, a boolean mask turned additive with ``Where``),
  Softmax, MatMul; grouped kv heads repeated with Unsqueeze/Expand/Reshape;
- ``onnx-attention``: one ONNX ``Attention`` node (4-D inputs for ``bhsd``, 3-D with
  ``q_num_heads``/``kv_num_heads`` for ``bshd``);
- ``mha-block``: a whole attention layer, Q/K/V/O projections (MatMul + bias Add, seeded
  constant weights from ``mha_weights``), head split, the ``manual`` core, head merge;
- ``torch-export``: the real torch exporter's output, made by a torch interpreter.

A form the installed software cannot build raises ``NotBuildable`` with the reason: the
variant is then reported as unsupported, never dropped.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from .graph import ELEM_TYPE, NP_DTYPE, GraphBuilder, add_qkv_inputs
from .spec import VariantSpec
from .torch_replica import build_torch_sdpa


class NotBuildable(Exception):
    """The installed onnx / onnxruntime / torch cannot build this form; ``str()`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _i64(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _split_heads(g: GraphBuilder, x: str, name: str, spec: VariantSpec) -> str:
    length = spec.q_len if name == "q" else spec.kv_len
    heads = spec.num_heads if name == "q" else spec.num_kv_heads
    shape = g.initializer(f"shape_{name}_split", _i64([spec.batch, length, heads, spec.head_dim]))
    return g.node("Transpose", [g.node("Reshape", [x, shape])], perm=[0, 2, 1, 3])


def _merge_heads(g: GraphBuilder, x: str, spec: VariantSpec, output: str | None) -> str:
    merged = g.node("Transpose", [x], perm=[0, 2, 1, 3])
    shape = g.initializer(
        "shape_merge", _i64([spec.batch, spec.q_len, spec.num_heads * spec.head_dim])
    )
    return g.node("Reshape", [merged, shape], output=output)


def _repeat_kv(g: GraphBuilder, x: str, spec: VariantSpec, name: str) -> str:
    b, hkv, lk, d = spec.batch, spec.num_kv_heads, spec.kv_len, spec.head_dim
    axes = g.initializer(f"axes_{name}", _i64([2]))
    expand = g.initializer(f"expand_{name}", _i64([b, hkv, spec.kv_groups, lk, d]))
    flat = g.initializer(f"shape_{name}_repeat", _i64([b, spec.num_heads, lk, d]))
    return g.node("Reshape", [g.node("Expand", [g.node("Unsqueeze", [x, axes]), expand]), flat])


def _manual_core(
    g: GraphBuilder, spec: VariantSpec, q: str, k: str, v: str, mask: str | None, output: str | None
) -> str:
    """MatMul, constant scale, mask Add, Softmax, MatMul on (B, H, L, D) tensors."""
    dtype = NP_DTYPE[spec.dtype]
    if spec.kv_groups > 1:
        k = _repeat_kv(g, k, spec, "k")
        v = _repeat_kv(g, v, spec, "v")
    scores = g.node("MatMul", [q, g.node("Transpose", [k], perm=[0, 1, 3, 2])])
    scale = g.initializer("scale", np.array(spec.effective_scale, dtype=dtype))
    scores = g.node("Mul", [scores, scale])
    lowest = np.finfo(dtype).min
    if spec.mask == "causal":
        allowed = np.tril(np.ones((spec.q_len, spec.kv_len), dtype=bool))
        bias = g.initializer("causal_mask", np.where(allowed, 0, lowest).astype(dtype))
        scores = g.node("Add", [scores, bias])
    elif spec.mask == "key-padding":
        assert mask is not None
        zero = g.initializer("mask_zero", np.array(0, dtype=dtype))
        neg = g.initializer("mask_lowest", np.array(lowest, dtype=dtype))
        scores = g.node("Add", [scores, g.node("Where", [mask, zero, neg])])
    elif spec.mask == "additive":
        assert mask is not None
        scores = g.node("Add", [scores, mask])
    weights = g.node("Softmax", [scores], axis=-1)
    return g.node("MatMul", [weights, v], output=output)


def build_manual(spec: VariantSpec) -> onnx.ModelProto:
    g = GraphBuilder()
    q, k, v, mask = add_qkv_inputs(g, spec)
    bshd = spec.layout == "bshd"
    if bshd:
        q, k, v = (_split_heads(g, x, n, spec) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    out = _manual_core(g, spec, q, k, v, mask, output=None if bshd else "out")
    if bshd:
        _merge_heads(g, out, spec, output="out")
    return g.model("out", ELEM_TYPE[spec.dtype], spec.output_shape(), opset=17)


def mha_weights(spec: VariantSpec) -> dict[str, np.ndarray]:
    """The ``mha-block`` projection weights, seeded from the spec id, in the model's dtype.

    ``w_*`` are ``(in, out)`` matrices (``x @ w + b``), drawn uniform in
    ``±1/sqrt(in)`` like ``torch.nn.Linear``'s default initialisation.
    """
    seed = int.from_bytes(hashlib.sha256(spec.id.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    embed = spec.num_heads * spec.head_dim
    kv_out = spec.num_kv_heads * spec.head_dim
    dims = {"q": (embed, embed), "k": (embed, kv_out), "v": (embed, kv_out), "o": (embed, embed)}
    weights: dict[str, np.ndarray] = {}
    for name, (fan_in, fan_out) in dims.items():
        bound = 1.0 / np.sqrt(fan_in)
        weights[f"w_{name}"] = rng.uniform(-bound, bound, (fan_in, fan_out))
        weights[f"b_{name}"] = rng.uniform(-bound, bound, (fan_out,))
    dtype = NP_DTYPE[spec.dtype]
    return {name: w.astype(dtype) for name, w in weights.items()}


def build_mha_block(spec: VariantSpec) -> onnx.ModelProto:
    g = GraphBuilder()
    q, k, v, mask = add_qkv_inputs(g, spec)
    weights = {name: g.initializer(name, w) for name, w in mha_weights(spec).items()}

    def project(x: str, name: str) -> str:
        return g.node("Add", [g.node("MatMul", [x, weights[f"w_{name}"]]), weights[f"b_{name}"]])

    q, k, v = (_split_heads(g, project(x, n), n, spec) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    attended = _manual_core(g, spec, q, k, v, mask, output=None)
    merged = _merge_heads(g, attended, spec, output=None)
    g.node("Add", [g.node("MatMul", [merged, weights["w_o"]]), weights["b_o"]], output="out")
    return g.model("out", ELEM_TYPE[spec.dtype], spec.output_shape(), opset=17)


@functools.lru_cache(maxsize=1)
def onnx_attention_unavailable() -> str | None:
    """Why the ONNX ``Attention`` operator cannot be built and run here, or None if it can."""
    try:
        onnx.defs.get_schema("Attention", 23, "")
    except onnx.defs.SchemaError:
        return f"onnx {onnx.__version__} has no Attention operator (opset 23): needs onnx>=1.18"
    import onnxruntime

    elem = onnx.TensorProto.FLOAT
    probe = helper.make_model(
        helper.make_graph(
            [helper.make_node("Attention", ["q", "k", "v"], ["y"])],
            "probe",
            [helper.make_tensor_value_info(n, elem, [1, 1, 2, 4]) for n in "qkv"],
            [helper.make_tensor_value_info("y", elem, [1, 1, 2, 4])],
        ),
        opset_imports=[helper.make_opsetid("", 23)],
        ir_version=11,
    )
    try:
        onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any load failure means "cannot run here"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (
            f"onnxruntime {onnxruntime.__version__} cannot run Attention (opset 23): {first[:160]}"
        )
    return None


def build_onnx_attention(spec: VariantSpec) -> onnx.ModelProto:
    reason = onnx_attention_unavailable()
    if reason:
        raise NotBuildable(reason)
    g = GraphBuilder()
    q, k, v, mask = add_qkv_inputs(g, spec)
    attrs: dict[str, object] = {"is_causal": int(spec.mask == "causal")}
    if spec.scale is not None:
        attrs["scale"] = spec.scale
    if spec.layout == "bshd":
        attrs["q_num_heads"] = spec.num_heads
        attrs["kv_num_heads"] = spec.num_kv_heads
    inputs = [q, k, v] + ([mask] if mask else [])
    g.node("Attention", inputs, output="out", **attrs)
    return g.model("out", ELEM_TYPE[spec.dtype], spec.output_shape(), opset=23)


def build_torch_export(spec: VariantSpec) -> onnx.ModelProto:
    from .torch_export import TorchExportError, export_with_torch, find_torch_python

    python = find_torch_python()
    if python is None:
        raise NotBuildable(
            "no torch interpreter: set PYTEST_RKNN_TORCH_PYTHON to a python that imports torch"
        )
    with tempfile.TemporaryDirectory(prefix="rknn-torch-export-") as tmp:
        out = Path(tmp) / f"{spec.id}.onnx"
        try:
            info = export_with_torch(spec, python, out, spec.exporter)
        except TorchExportError as exc:
            raise NotBuildable(str(exc)) from None
        model = onnx.load(str(info.path))
    helper.set_model_props(model, {**_props(model), "torch": info.torch_version})
    return model


_BUILDERS = {
    "torch-sdpa": build_torch_sdpa,
    "manual": build_manual,
    "onnx-attention": build_onnx_attention,
    "mha-block": build_mha_block,
    "torch-export": build_torch_export,
}


def build_model(spec: VariantSpec) -> onnx.ModelProto:
    """The ONNX model of ``spec``'s form; raises ``NotBuildable`` where it cannot be built.

    The model's ``metadata_props`` carry ``pytest_rknn.variant`` = ``spec.id``.
    """
    model = _BUILDERS[spec.form](spec)
    helper.set_model_props(model, {**_props(model), "pytest_rknn.variant": spec.id})
    return model


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}

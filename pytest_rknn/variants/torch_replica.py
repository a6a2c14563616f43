"""The ``torch-sdpa`` form: a node-for-node replica of torch's TorchScript exporter output.

It replicates ``torch.onnx.export(..., dynamo=False, opset_version=17)`` (torch 2.13) of the
module in ``torch_export_script.py``: ``F.scaled_dot_product_attention`` as lowered by
``symbolic_opset14`` plus the casts its type promotion inserts, Hugging Face style
``repeat_kv`` for grouped kv heads, and the ``bshd`` head split/merge. Node names, node
order, ``Constant`` nodes (one per use, as the exporter duplicates them) and the exporter's
quirks are kept: a float16 model with a causal or boolean mask computes the softmax in
float32 and returns a float32 output, because the exporter's mask constants are float32; a
``bshd`` key's ``transpose(1, 2)`` is fused into the score transpose (perm ``0, 2, 3, 1``).

Checked against torch 2.13.0's exporter on 464 specs (drawn and hand-picked): equal node
lists (names, op types, inputs, outputs, in order), constants, inputs and outputs.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from .graph import ELEM_TYPE, NP_DTYPE, GraphBuilder, add_qkv_inputs
from .spec import VariantSpec

_FLOAT = onnx.TensorProto.FLOAT
TORCH_PRODUCER = ("pytorch", "2.13.0")
_INT64_MAX = np.iinfo(np.int64).max


def _i64(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _f32(value: float) -> np.ndarray:
    return np.array([value], dtype=np.float32)


def split_heads(g: GraphBuilder, x: str, shape: tuple[int, ...], transpose: bool = True) -> str:
    reshaped = g.node("Reshape", [x, g.const(_i64(list(shape)))], allowzero=0)
    return g.node("Transpose", [reshaped], perm=[0, 2, 1, 3]) if transpose else reshaped


def repeat_kv(g: GraphBuilder, x: str, spec: VariantSpec) -> str:
    """``x[:, :, None].expand(B, Hkv, groups, Lk, D).reshape(B, H, Lk, D)`` as exported."""
    b, hkv, lk, d = spec.batch, spec.num_kv_heads, spec.kv_len, spec.head_dim
    expanded = _i64([b, hkv, spec.kv_groups, lk, d])
    unsqueezed = g.node("Unsqueeze", [x, g.const(_i64([2]))])
    ones = g.node(
        "ConstantOfShape",
        [g.const(_i64([5]))],
        value=onnx.numpy_helper.from_array(_i64([1])),
    )
    minus_ones = g.node("Mul", [ones, g.const(np.array(-1, dtype=np.int64))])
    is_minus_one = g.node("Equal", [g.const(expanded), minus_ones])
    target = g.node("Where", [is_minus_one, ones, g.const(expanded)])
    out = g.node("Expand", [unsqueezed, target])
    return g.node("Reshape", [out, g.const(_i64([b, spec.num_heads, lk, d]))], allowzero=0)


def _attention_scale(g: GraphBuilder, q: str, elem: int) -> str:
    last = g.node("Slice", [g.node("Shape", [q]), g.const(_i64([-1])), g.const(_i64([_INT64_MAX]))])
    embedding = g.node("Sqrt", [g.node("Cast", [last], to=elem)])
    one = g.const(_f32(1.0))
    if elem != _FLOAT:
        embedding = g.node("Cast", [embedding], to=_FLOAT)
    return g.node("Cast", [g.node("Div", [one, embedding])], to=elem)


def _causal_mask(g: GraphBuilder, q: str, k: str) -> str:
    q_shape, k_shape = g.node("Shape", [q]), g.node("Shape", [k])
    last, second_last = g.const(_i64([-1])), g.const(_i64([-2]))
    target = g.node("Slice", [q_shape, second_last, last])
    source = g.node("Slice", [k_shape, second_last, last])
    size = g.node("Concat", [target, source], axis=0)
    ones = g.node("Expand", [g.const(_f32(1.0)), size])
    lower = g.node("Trilu", [ones], upper=0)
    is_zero = g.node("Equal", [lower, g.const(_f32(0.0))])
    return g.node("Where", [is_zero, g.const(_f32(-math.inf)), g.const(_f32(0.0))])


def sdpa(
    g: GraphBuilder,
    spec: VariantSpec,
    q: str,
    k: str,
    v: str,
    mask: str | None,
    output: str | None = None,
    k_unsplit: str | None = None,
) -> tuple[str, int]:
    """Emit the lowered SDPA; returns its output name and ONNX element type.

    ``k_unsplit``: the ``(B, S, H, D)`` key before its ``transpose(1, 2)``. The exporter's
    peephole pass fuses that transpose into the key's ``transpose(-2, -1)``, which then
    reads ``k_unsplit`` with perm ``(0, 2, 3, 1)``; ``k`` is still used by the causal mask.
    """
    elem = ELEM_TYPE[spec.dtype]
    promoted = elem != _FLOAT and spec.mask in ("causal", "key-padding")
    runtime_scale = _attention_scale(g, q, elem) if spec.scale is None else None
    causal = _causal_mask(g, q, k) if spec.mask == "causal" else None
    if k_unsplit is None:
        k_t = g.node("Transpose", [k], perm=[0, 1, 3, 2])
    else:
        k_t = g.node("Transpose", [k_unsplit], perm=[0, 2, 3, 1])
    if runtime_scale is not None:
        q_scaled = g.node("Mul", [q, g.node("Sqrt", [runtime_scale])])
        k_scaled = g.node("Mul", [k_t, g.node("Sqrt", [runtime_scale])])
    else:
        root = np.array(math.sqrt(spec.effective_scale), dtype=NP_DTYPE[spec.dtype])
        q_scaled = g.node("Mul", [q, g.const(root)])
        k_scaled = g.node("Mul", [k_t, g.const(root)])
    scores = g.node("MatMul", [q_scaled, k_scaled])
    if spec.mask == "key-padding":
        assert mask is not None
        additive = g.node("Where", [mask, g.const(_f32(0.0)), g.const(_f32(-math.inf))])
    else:
        additive = causal if causal is not None else mask
    if additive is not None:
        if promoted:
            scores = g.node("Cast", [scores], to=_FLOAT)
        scores = g.node("Add", [scores, additive])
    weights = g.node("Softmax", [scores], axis=-1)
    if spec.mask == "key-padding":
        is_nan = g.node("IsNaN", [weights])
        weights = g.node("Where", [is_nan, g.const(_f32(0.0)), weights])
    if promoted:
        v = g.node("Cast", [v], to=_FLOAT)
    return g.node("MatMul", [weights, v], output=output), (_FLOAT if promoted else elem)


def build_torch_sdpa(spec: VariantSpec) -> onnx.ModelProto:
    """The ``torch-sdpa`` form of ``spec`` (opset 17)."""
    g = GraphBuilder()
    q, k, v, mask = add_qkv_inputs(g, spec)
    b, h, hkv, d = spec.batch, spec.num_heads, spec.num_kv_heads, spec.head_dim
    bshd = spec.layout == "bshd"
    k_unsplit = None
    if bshd:
        q = split_heads(g, q, (b, spec.q_len, h, d))
        if spec.kv_groups == 1:
            k_unsplit = split_heads(g, k, (b, spec.kv_len, hkv, d), transpose=False)
            if spec.mask == "causal":
                k = g.node("Transpose", [k_unsplit], perm=[0, 2, 1, 3])
        else:
            k = split_heads(g, k, (b, spec.kv_len, hkv, d))
        v = split_heads(g, v, (b, spec.kv_len, hkv, d))
    if spec.kv_groups > 1:
        k = repeat_kv(g, k, spec)
        v = repeat_kv(g, v, spec)
    out = None if bshd else "out"
    attended, out_elem = sdpa(g, spec, q, k, v, mask, output=out, k_unsplit=k_unsplit)
    if bshd:
        merged = g.node("Transpose", [attended], perm=[0, 2, 1, 3])
        g.node(
            "Reshape", [merged, g.const(_i64([b, spec.q_len, h * d]))], output="out", allowzero=0
        )
    return g.model("out", out_elem, spec.output_shape(), opset=17, producer=TORCH_PRODUCER)

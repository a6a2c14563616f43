"""A small ONNX graph builder that names nodes the way torch's TorchScript exporter does.

Node ``/Op``, ``/Op_1``, ... with outputs ``/Op_output_0``, ``/Op_1_output_0``: the replica of
torch's graph then matches the exporter's names too, and the other forms read the same in
Netron and in toolkit logs. Constants are ``Constant`` nodes (as torch emits them) or
initializers (as hand-built and framework-converted graphs often carry them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .spec import VariantSpec

ELEM_TYPE = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16}
NP_DTYPE = {"float32": np.float32, "float16": np.float16}
IR_VERSION_FOR_OPSET = {17: 8, 23: 11}


class GraphBuilder:
    """Accumulates nodes, initializers and graph inputs of one model."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._counts: Counter[str] = Counter()

    def input(self, name: str, elem_type: int, shape: Sequence[int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def node(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs) -> str:
        count = self._counts[op_type]
        self._counts[op_type] += 1
        name = f"/{op_type}" if count == 0 else f"/{op_type}_{count}"
        out = output or f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def const(self, value: np.ndarray) -> str:
        """A ``Constant`` node holding ``value`` (dtype and shape kept as given)."""
        return self.node("Constant", [], value=numpy_helper.from_array(np.asarray(value)))

    def initializer(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name=name))
        return name

    def model(
        self,
        output: str,
        out_elem_type: int,
        out_shape: Sequence[int],
        opset: int,
        producer: tuple[str, str] = ("pytest-rknn", ""),
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "main_graph",
            self.inputs,
            [helper.make_tensor_value_info(output, out_elem_type, list(out_shape))],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            ir_version=IR_VERSION_FOR_OPSET[opset],
            producer_name=producer[0],
            producer_version=producer[1],
        )
        return model


def add_qkv_inputs(builder: GraphBuilder, spec: VariantSpec) -> tuple[str, str, str, str | None]:
    """Declare q, k, v (and the mask when it is an input) with the spec's static shapes."""
    shapes = spec.input_shapes()
    elem = ELEM_TYPE[spec.dtype]
    q, k, v = (builder.input(n, elem, shapes[n]) for n in ("q", "k", "v"))
    mask = None
    if spec.mask_is_input:
        mask_elem = onnx.TensorProto.BOOL if spec.mask == "key-padding" else elem
        mask = builder.input("mask", mask_elem, shapes["mask"])
    return q, k, v, mask


def _attribute_key(attr: onnx.AttributeProto) -> str:
    value = helper.get_attribute_value(attr)
    if isinstance(value, onnx.TensorProto):
        array = numpy_helper.to_array(value)
        return f"{attr.name}={array.dtype}{list(array.shape)}:{array.tobytes().hex()}"
    return f"{attr.name}={value!r}"


def structure_signature(model: onnx.ModelProto) -> Counter[str]:
    """A multiset of per-node structural hashes, independent of node order and names.

    Each node's key hashes its op type, attributes (constant values included) and, in input
    order, the keys of the nodes producing its inputs (graph inputs by name, initializers by
    value): two graphs have equal signatures when they compute the same DAG of operators,
    whatever topological order or value names their producers chose.
    """
    import hashlib

    producers: dict[str, onnx.NodeProto] = {o: n for n in model.graph.node for o in n.output}
    initializers = {t.name: t for t in model.graph.initializer}
    memo: dict[int, str] = {}

    def value_key(name: str) -> str:
        if name == "":
            return "<absent>"
        if name in producers:
            node = producers[name]
            return f"{node_key(node)}#{list(node.output).index(name)}"
        if name in initializers:
            array = numpy_helper.to_array(initializers[name])
            return f"init:{array.dtype}{list(array.shape)}:{array.tobytes().hex()}"
        return f"input:{name}"

    def node_key(node: onnx.NodeProto) -> str:
        if id(node) not in memo:
            attrs = ",".join(sorted(_attribute_key(a) for a in node.attribute))
            inputs = ",".join(value_key(i) for i in node.input)
            text = f"{node.domain}::{node.op_type}[{attrs}]({inputs})"
            memo[id(node)] = hashlib.sha256(text.encode()).hexdigest()[:16]
        return memo[id(node)]

    return Counter(f"{n.op_type}:{node_key(n)}" for n in model.graph.node)

"""What a user's ONNX model declares about its inputs, and values that fit each input's role.

Random integers are nonsense for the integer inputs of real models: token ids must index their
embedding table, attention masks are 0/1 (transformers turns ``1 - mask`` into a large negative
bias, so a mask of 7 overflows), position ids are a range. This module owns two things:

- :func:`declared_inputs`: each graph input that is not an initializer, with its element type
  and its dims as declared (a free dim is its name or None; generated arrays use 1 for it);
- :func:`judge_roles` / :func:`make_values`: the role of each input, judged from its name and
  the graph, and deterministic values for it.

Roles of integer and bool inputs (float inputs are unit normal, whatever their name):

- ``token-ids`` (``input_ids``, ``decoder_input_ids``, ``*token*ids``, ``tokens``): uniform
  below the rows of the embedding table they index: a ``Gather`` on a constant table (or one
  behind ``DequantizeLinear``), reached through ``Cast``/``Unsqueeze``/``Reshape``/...; or
  ``OneHot``'s depth. No table found: 0 and 1 (:data:`FALLBACK_VOCAB`), which any table holds.
- ``mask`` (``*mask*``, or the graph: ``Sub(1, mask)``, ``Equal``, ``Not``, ``Where``'s
  condition): ones. With a static batch of 2 or more rows, a padded batch: row 0 stays whole
  and each other row keeps a prefix of 1..L-1 ones, then zeros.
- ``position-ids`` (``position_ids``, ``pos_ids``): ``0..L-1`` along the last axis, broadcast
  over the others (an error when their table has fewer than L rows).
- ``token-type-ids`` (``token_type_ids``, ``segment_ids``, ``*type_ids``): zeros.
- ``indices`` (any other name whose values index a constant table): uniform below its rows.
- ``unknown`` (anything else): no values; :class:`InputRoleError` asks for real inputs.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

NUMPY_TYPES: dict[int, type] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}
# Token ids whose embedding table cannot be found: 0 and 1 index every table of 2 or more rows.
FALLBACK_VOCAB = 2
# Ops that pass an input's values on unchanged (only their layout or type changes).
_PASS = frozenset(
    {
        "Cast",
        "CastLike",
        "Unsqueeze",
        "Squeeze",
        "Reshape",
        "Flatten",
        "Identity",
        "Expand",
        "Transpose",
        "Slice",
        "Tile",
    }
)
_MASK_OPS = frozenset({"Equal", "Not", "And", "Or", "Xor"})
_NAME_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("token-type-ids", re.compile(r"token_?type|segment|type_?ids?$")),
    ("position-ids", re.compile(r"position|(^|_)pos_?ids?$")),
    ("token-ids", re.compile(r"(^|_)(input|token)s?_?ids?$|token.*ids?$|^tokens?$|^ids$")),
    ("mask", re.compile(r"mask")),
)


class InputRoleError(ValueError):
    """An input gets no generated values (its role is unknown, or its values cannot fit)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"input {name!r} {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class DeclaredInput:
    """A graph input as declared: ``dims`` holds ints, and a free dim's name (or None)."""

    name: str
    elem: int
    dims: tuple[int | str | None, ...]
    ranked: bool = True

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(NUMPY_TYPES[self.elem])

    @property
    def fixed(self) -> bool:
        """Whether every dim is declared (no free dim, a known rank)."""
        return self.ranked and all(isinstance(d, int) for d in self.dims)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of generated values: free dims become 1."""
        return tuple(d if isinstance(d, int) else 1 for d in self.dims)

    def describe(self) -> str:
        """``int64 (batch, 8)``: the type and dims as the graph declares them."""
        if not self.ranked:
            return f"{self.dtype.name} of any shape"
        dims = ", ".join(str(d) if d is not None else "?" for d in self.dims)
        return f"{self.dtype.name} ({dims}{',' if len(self.dims) == 1 else ''})"


@dataclass(frozen=True)
class Role:
    """An input's role; ``high`` bounds its values (table rows), ``table`` names the table."""

    kind: str
    high: int | None = None
    table: str | None = None

    def describe(self) -> str:
        if self.kind in ("token-ids", "indices"):
            where = f"the rows of {self.table!r}" if self.table else "no table found"
            return f"{self.kind} below {self.high} ({where})"
        return self.kind


def declared_inputs(model: onnx.ModelProto) -> list[DeclaredInput]:
    """The graph's inputs that are not initializers; KeyError-free: an element type without a
    numpy counterpart is kept (``dtype`` then raises KeyError; check :data:`NUMPY_TYPES`)."""
    initializers = {i.name for i in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims: list[int | str | None] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        ranked = tensor.HasField("shape")
        found.append(DeclaredInput(value.name, tensor.elem_type, tuple(dims), ranked))
    return found


class _Graph:
    """The consumers of each tensor and the constant tensors' shapes and values."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, i))
            for name in node.output:
                self.producer[name] = node
        self.constants: dict[str, onnx.TensorProto] = {i.name: i for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                        self.constants[node.output[0]] = attr.t

    def constant(self, name: str) -> onnx.TensorProto | None:
        """The constant behind ``name``, through Identity/Cast/DequantizeLinear."""
        for _ in range(8):
            if name in self.constants:
                return self.constants[name]
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Identity", "Cast", "DequantizeLinear"):
                return None
            name = node.input[0]
        return None

    def value(self, name: str) -> np.ndarray | None:
        tensor = self.constant(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def uses(self, name: str) -> list[tuple[onnx.NodeProto, int]]:
        """Every (node, input index) that reads ``name``'s values, through pass-through ops."""
        found, seen, todo = [], {name}, deque([name])
        while todo:
            for node, index in self.consumers.get(todo.popleft(), []):
                if node.op_type in _PASS and index == 0:
                    for out in node.output:
                        if out not in seen:
                            seen.add(out)
                            todo.append(out)
                else:
                    found.append((node, index))
        return found

    def table(self, name: str) -> tuple[int, str] | None:
        """The fewest rows of the constant tables ``name`` indexes (Gather, OneHot's depth)."""
        rows: list[tuple[int, str]] = []
        for node, index in self.uses(name):
            if node.op_type == "Gather" and index == 1:
                data = self.constant(node.input[0])
                if data is None or not data.dims:
                    continue
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                rows.append((int(data.dims[axis % len(data.dims)]), node.input[0]))
            elif node.op_type == "OneHot" and index == 0 and len(node.input) > 1:
                depth = self.value(node.input[1])
                if depth is not None and depth.size == 1:
                    rows.append((int(depth.reshape(-1)[0]), node.input[1]))
        return min(rows) if rows else None

    def is_mask(self, name: str) -> bool:
        """Whether the graph uses ``name`` as a 0/1 mask: ``1 - mask``, a comparison, a logical
        op or the condition of a ``Where``."""
        for node, index in self.uses(name):
            if node.op_type in _MASK_OPS or (node.op_type == "Where" and index == 0):
                return True
            if node.op_type == "Sub" and index == 1:
                one = self.value(node.input[0])
                if one is not None and one.size == 1 and float(one.reshape(-1)[0]) == 1.0:
                    return True
        return False


def _name_role(name: str) -> str | None:
    text = re.sub(r"[^a-z0-9]+", "_", name.lower())
    for kind, rule in _NAME_RULES:
        if rule.search(text):
            return kind
    return None


def judge_roles(model: onnx.ModelProto, inputs: Iterable[DeclaredInput]) -> dict[str, Role]:
    """The role of each of ``inputs`` (see the module's table)."""
    graph = _Graph(model)
    roles = {}
    for declared in inputs:
        dtype = declared.dtype
        if np.issubdtype(dtype, np.floating):
            roles[declared.name] = Role("float")
            continue
        kind = _name_role(declared.name)
        if dtype == np.bool_:
            mask = kind == "mask" or graph.is_mask(declared.name)
            roles[declared.name] = Role("mask" if mask else "unknown")
            continue
        found = graph.table(declared.name)
        high, table = found if found else (None, None)
        if kind == "token-ids" and high is None:
            high = FALLBACK_VOCAB
        if kind is None:
            if graph.is_mask(declared.name):
                kind = "mask"
            elif high is not None:
                kind = "indices"
            else:
                kind = "unknown"
        roles[declared.name] = Role(kind, high, table)
    return roles


def _padded(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Ones, with rows 1.. of the first axis cut to a prefix of 1..L-1 along the last axis."""
    keep = np.ones(shape, dtype=bool)
    if len(shape) < 2 or shape[0] < 2 or shape[-1] < 2:
        return keep
    lengths = rng.integers(1, shape[-1], size=shape[0] - 1)
    for row, length in enumerate(lengths, start=1):
        keep[row, ..., int(length) :] = False
    return keep


def make_values(
    declared: DeclaredInput,
    role: Role,
    rng: np.random.Generator,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Values of ``declared`` (of ``shape``, default its declared shape) for ``role``;
    InputRoleError when there are none to give."""
    shape = declared.shape if shape is None else shape
    dtype = declared.dtype
    kind = role.kind
    if kind == "float":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "unknown":
        kind_text = "bool" if dtype == np.bool_ else "integer"
        raise InputRoleError(
            declared.name,
            f"is {kind_text} and its role cannot be told from its name or the graph "
            "(token ids, attention mask, position or token type ids, indices of a table)",
        )
    if kind == "mask":
        return _padded(rng, shape).astype(dtype)
    if kind == "token-type-ids":
        return np.zeros(shape, dtype=dtype)
    if kind == "position-ids":
        length = shape[-1] if shape else 1
        if role.high is not None and length > role.high:
            raise InputRoleError(
                declared.name,
                f"holds {length} positions but its table {role.table!r} has {role.high} rows",
            )
        return np.broadcast_to(np.arange(length), shape).astype(dtype)
    high = int(role.high or FALLBACK_VOCAB)
    if np.issubdtype(dtype, np.integer):
        high = min(high, int(np.iinfo(dtype).max) + 1)
    return rng.integers(0, high, shape).astype(dtype)


def generate_inputs(
    inputs: Iterable[DeclaredInput],
    roles: Mapping[str, Role],
    seed: int,
    salt: int = 0,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Every input's values for ``seed`` (``shapes`` overrides the declared shapes)."""
    rng = np.random.default_rng([seed, salt])
    shapes = shapes or {}
    return {d.name: make_values(d, roles[d.name], rng, shapes.get(d.name)) for d in inputs}

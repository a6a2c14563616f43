"""A generated attention variant with a free sequence length: the attention forms' dynamic row.

:class:`DynamicVariant` is the ``manual`` form (MatMul, scale, Softmax, MatMul on
``(B, H, L, D)`` tensors, no mask, as many kv heads as heads) with the length axis of ``q``,
``k``, ``v`` and the output left free as ``seq``, served at ``lengths`` (self-attention:
``q_len = kv_len``) as one dynamic cell (:mod:`.dynamic_run`). Only that form qualifies: the
others hold the lengths in constants (head splits, repeated kv heads, a causal bias) that a
free axis would contradict. Inputs and the float64 reference at each length are those of the
static variant of that length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from pytest_rknn.pipeline import dims as dims_axis
from pytest_rknn.pipeline.input_roles import DeclaredInput
from pytest_rknn.variants.families import FamilySpec, spec_from_id
from pytest_rknn.variants.forms import build_model
from pytest_rknn.variants.inputs import make_inputs
from pytest_rknn.variants.reference import reference_outputs
from pytest_rknn.variants.spec import SpecError, VariantSpec
from pytest_rknn.variants.strategies import estimate_memory_bytes

DYNAMIC_LENGTHS: dict[str, tuple[int, ...]] = {"ci": (16, 32, 128), "full": (16, 64, 128, 256, 512)}
"""The lengths of the curated dynamic attention row, per ``--rknn-profile``."""
_AXIS = 2
_DYNAMIC_ID = re.compile(r"(?P<spec>.+)-dyn(?P<lengths>\d+(?:_\d+)*)")


@dataclass(frozen=True)
class DynamicVariant:
    """A ``manual`` attention variant (``spec``, at its longest length) served at ``lengths``."""

    spec: VariantSpec
    lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        s = self.spec
        if (s.form, s.layout, s.mask, s.num_kv_heads) != ("manual", "bhsd", "none", s.num_heads):
            raise SpecError(
                "a dynamic-length variant is the manual form, bhsd, no mask, kv heads = heads"
            )
        if list(self.lengths) != sorted(set(self.lengths)) or not self.lengths:
            raise SpecError(f"lengths={self.lengths!r} must be ascending and distinct")
        if (s.q_len, s.kv_len) != (self.lengths[-1], self.lengths[-1]):
            raise SpecError("the spec's q_len and kv_len must be the longest length")

    @property
    def id(self) -> str:
        return f"{self.spec.id}-dyn{'_'.join(map(str, self.lengths))}"

    @property
    def dims(self) -> dims_axis.Dims:
        return (("seq", self.lengths),)

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), "lengths": list(self.lengths)}

    def at(self, length: int) -> VariantSpec:
        """The static variant of one length."""
        return self.spec.replace(q_len=length, kv_len=length)

    def _declared(self) -> list[DeclaredInput]:
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(self.spec.dtype))
        found = []
        for name, shape in self.spec.input_shapes().items():
            dims = tuple("seq" if axis == _AXIS else d for axis, d in enumerate(shape))
            found.append(DeclaredInput(name, elem, dims))
        return found

    def build(self) -> onnx.ModelProto:
        model = build_model(self.spec)
        for value in [*model.graph.input, *model.graph.output]:
            dim = value.type.tensor_type.shape.dim[_AXIS]
            dim.ClearField("dim_value")
            dim.dim_param = "seq"
        onnx.checker.check_model(model)
        return model

    def shape_sets(self) -> list[dims_axis.ShapeSet]:
        return dims_axis.shape_sets(self.dims, self._declared())

    def unlisted_set(self) -> dims_axis.ShapeSet:
        return dims_axis.unlisted(self.dims, self._declared())

    def inputs_at(self, seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        return make_inputs(self.at(shapes["q"][_AXIS]), seed)

    def inputs(self, seed: int) -> dict[str, np.ndarray]:
        return make_inputs(self.spec, seed)

    def sample(self, seed: int) -> dict[str, np.ndarray]:
        """A calibration sample, at the longest length (the toolkit's MaxShape)."""
        return make_inputs(self.spec, seed)

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list:
        return reference_outputs(self.at(int(inputs["q"].shape[_AXIS])), inputs)

    def host_bytes(self) -> int:
        return sum(2 * estimate_memory_bytes(self.at(n)) for n in self.lengths)


def variant_from_id(text: str) -> VariantSpec | FamilySpec | DynamicVariant:
    """The variant an id names: a dynamic-length attention row (``...-dyn16_32``) or what
    :func:`~pytest_rknn.variants.families.spec_from_id` reads (SpecError when none)."""
    match = _DYNAMIC_ID.fullmatch(text.strip())
    if match is None or text.strip().startswith("hf."):
        return spec_from_id(text)
    lengths = tuple(int(v) for v in match.group("lengths").split("_"))
    return DynamicVariant(VariantSpec.from_id(match.group("spec")), lengths)


def curated_dynamic_variant(profile: str) -> DynamicVariant:
    """The curated dynamic attention row: 4 heads of 32, one batch, at the profile's lengths."""
    lengths = DYNAMIC_LENGTHS.get(profile, DYNAMIC_LENGTHS["ci"])
    spec = VariantSpec(
        form="manual",
        batch=1,
        num_heads=4,
        num_kv_heads=4,
        q_len=lengths[-1],
        kv_len=lengths[-1],
        head_dim=32,
    )
    return DynamicVariant(spec, lengths)

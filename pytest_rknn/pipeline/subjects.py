"""What a matrix row converts: a generated attention variant or a tiny whole model of a
transformer family (the ``hf`` form); a user's own ONNX model is in
:mod:`~pytest_rknn.pipeline.user_models`.

All answer the same questions: a stable id, a JSON description, the ONNX model, deterministic
inputs for a seed, and the reference outputs the simulator is judged against (float64 numpy for
attention variants, onnxruntime for whole models; an hf model's export is also checked against
torch's own output, see :mod:`~pytest_rknn.pipeline.family_exports`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx

from pytest_rknn.pipeline import dims as dims_axis
from pytest_rknn.pipeline.input_roles import (
    DeclaredInput,
)
from pytest_rknn.variants.families import FamilySpec, family_inputs
from pytest_rknn.variants.forms import NotBuildable, build_model
from pytest_rknn.variants.inputs import kept_lengths, make_inputs
from pytest_rknn.variants.reference import onnxruntime_outputs, reference_outputs
from pytest_rknn.variants.spec import VariantSpec
from pytest_rknn.variants.strategies import estimate_memory_bytes


class Subject(Protocol):
    @property
    def id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def build(self) -> onnx.ModelProto: ...

    def inputs(self, seed: int) -> dict[str, np.ndarray]: ...

    def sample(self, seed: int, index: int = 0) -> dict[str, np.ndarray]: ...

    def mask_inputs(self) -> dict[str, tuple[str, str]]: ...

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list: ...

    def host_bytes(self) -> int: ...


@dataclass(frozen=True)
class _Generated:
    """A subject made from a spec: its id and description are the spec's."""

    spec: Any

    @property
    def id(self) -> str:
        return self.spec.id

    def to_dict(self) -> dict[str, Any]:
        return self.spec.to_dict()


@dataclass(frozen=True)
class VariantSubject(_Generated):
    """A generated attention variant (see :mod:`pytest_rknn.variants`)."""

    spec: VariantSpec

    def build(self) -> onnx.ModelProto:
        return build_model(self.spec)

    def inputs(self, seed: int) -> dict[str, np.ndarray]:
        return make_inputs(self.spec, seed)

    def sample(self, seed: int, index: int = 0) -> dict[str, np.ndarray]:
        """Calibration sample ``index``: drawn like :meth:`inputs`, its mask padded like
        traffic (:func:`~pytest_rknn.variants.inputs.kept_lengths`)."""
        return make_inputs(self.spec, seed, sample=index)

    def mask_inputs(self) -> dict[str, tuple[str, str]]:
        """The ``mask`` input, if any: a score mask (:mod:`~pytest_rknn.verdict.positions`)."""
        if not self.spec.mask_is_input:
            return {}
        return {"mask": ("keep" if self.spec.mask == "key-padding" else "additive", "scores")}

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list:
        return reference_outputs(self.spec, inputs)

    def host_bytes(self) -> int:
        """What making the inputs and the float64 reference allocates, roughly."""
        return 2 * estimate_memory_bytes(self.spec)


@dataclass(frozen=True)
class FamilySubject(_Generated):
    """A tiny model of a transformer family, exported by torch in the exporter environment."""

    spec: FamilySpec

    def build(self) -> onnx.ModelProto:
        raise NotBuildable("an hf model is made by the exporter: see pipeline.family_exports")

    def inputs(self, seed: int) -> dict[str, np.ndarray]:
        """The inputs (the export's example ones too): a dynamic-length row's at its shortest
        length, shorter than its position tables, so that the trace cannot bake the length in
        (exported at its longest, measured 2026-12-08, a BERT's embeddings kept that length
        as a constant and the graph refused every shorter one)."""
        if self.spec.lengths:
            return self.inputs_at(seed, {"input_ids": (self.spec.batch, self.spec.lengths[0])})
        return family_inputs(self.spec, seed)

    def sample(self, seed: int, index: int = 0) -> dict[str, np.ndarray]:
        """Calibration sample ``index``: drawn like a static row (a dynamic-length row's at its
        longest length, the toolkit's MaxShape, which a quantized build calibrates at), its
        attention mask (even an all-ones one) padded like traffic."""
        arrays = family_inputs(self.spec, seed)
        mask = arrays.get("attention_mask")
        if mask is not None:
            arrays["attention_mask"] = traffic_mask(mask.shape, index).astype(mask.dtype)
        return arrays

    def mask_inputs(self) -> dict[str, tuple[str, str]]:
        """``attention_mask`` (1 = a real token), when the model takes one."""
        return {} if self.spec.mask == "none" else {"attention_mask": ("keep", "tokens")}

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list:
        return [np.asarray(o, dtype=np.float64) for o in onnxruntime_outputs(model, inputs)]

    def host_bytes(self) -> int:
        return self.spec.host_bytes()

    @property
    def dims(self) -> dims_axis.Dims:
        return self.spec.dims

    def _declared(self) -> list[DeclaredInput]:
        """The token inputs with their length free (``seq``), as a dynamic row exports them."""
        return [
            DeclaredInput(name, onnx.TensorProto.INT64, (shape[0], "seq"))
            for name, shape in self.spec.input_shapes().items()
        ]

    def shape_sets(self) -> list[dims_axis.ShapeSet]:
        """The lengths a dynamic-length row is served at (none for a static row)."""
        return dims_axis.shape_sets(self.spec.dims, self._declared()) if self.spec.dims else []

    def unlisted_set(self) -> dims_axis.ShapeSet:
        return dims_axis.unlisted(self.spec.dims, self._declared())

    def inputs_at(self, seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """The family's inputs at one length (drawn as for a static row of that length)."""
        length = next(iter(shapes.values()))[-1]
        return family_inputs(self.spec.replace(seq_len=length, lengths=()), seed)


def traffic_mask(shape: tuple[int, ...], index: int) -> np.ndarray:
    """A 0/1 keep-mask of ``shape`` for calibration sample ``index``: each row of the first
    axis keeps a prefix along the last axis, padded by none, a quarter or a half of it
    (:func:`~pytest_rknn.variants.inputs.kept_lengths`)."""
    if not shape:
        return np.ones(shape, dtype=bool)
    rows = shape[0] if len(shape) > 1 else 1
    lengths = kept_lengths(rows, shape[-1], index)
    keep = np.arange(shape[-1]) < lengths.reshape((rows,) + (1,) * (len(shape) - 1))
    return np.broadcast_to(keep, shape).copy()


def subject_of(spec: VariantSpec | FamilySpec) -> VariantSubject | FamilySubject:
    """The subject of a generated spec, whichever kind it is."""
    if isinstance(spec, FamilySpec):
        return FamilySubject(spec)
    return VariantSubject(spec)

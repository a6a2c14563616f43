"""The attention variant spec: one frozen, hashable description of an attention operator.

This module owns the vocabulary of the variant space (forms, masks, mask shapes, dtypes,
layouts, exporters), the validation of a spec, its JSON round trip and its stable id.

Shapes, per layout (``E = num_heads * head_dim``, ``Ekv = num_kv_heads * head_dim``):

- ``bhsd``: q ``(B, H, Lq, D)``, k and v ``(B, Hkv, Lk, D)``, output ``(B, H, Lq, D)``;
- ``bshd``: packed hidden states as a real layer holds them, q ``(B, Lq, E)``, k and v
  ``(B, Lk, Ekv)``, output ``(B, Lq, E)``; the graph splits heads (Reshape to
  ``(B, L, H, D)`` + Transpose) and merges them back (Transpose + Reshape). ``mha-block``
  always takes ``(B, L, E)`` hidden states (k and v too) and so only accepts ``bshd``.

Masks follow torch's ``scaled_dot_product_attention``: a boolean mask is True where a key
takes part; an additive mask is added to the scaled scores; ``causal`` is the lower
triangle of a square ``Lq == Lk`` score matrix. Mask shapes name the dimensions they keep,
the others being 1: ``qk`` is ``(Lq, Lk)``, ``11qk`` ``(1, 1, Lq, Lk)``, ``b1qk``
``(B, 1, Lq, Lk)``, ``bhqk`` ``(B, H, Lq, Lk)``, ``b11k`` ``(B, 1, 1, Lk)``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

FORMS: tuple[str, ...] = ("torch-sdpa", "manual", "onnx-attention", "mha-block", "torch-export")
MASKS: tuple[str, ...] = ("none", "causal", "key-padding", "additive")
MASK_SHAPES: dict[str, tuple[str, ...]] = {
    "none": ("",),
    "causal": ("",),
    "key-padding": ("b11k", "b1qk"),
    "additive": ("11qk", "b1qk", "bhqk", "b11k", "qk"),
}
DTYPES: tuple[str, ...] = ("float32", "float16")
LAYOUTS: tuple[str, ...] = ("bhsd", "bshd")
EXPORTERS: tuple[str, ...] = ("torchscript", "dynamo", "dynamo-opset23")

_FORM_TOKENS = {
    "torch-sdpa": "sdpa",
    "manual": "manual",
    "onnx-attention": "attn",
    "mha-block": "mha",
}
_EXPORTER_TOKENS = {"torchscript": "tx.ts", "dynamo": "tx.dynamo", "dynamo-opset23": "tx.dynamo23"}
_MASK_TOKENS = {"none": "none", "causal": "causal", "key-padding": "kpad", "additive": "add"}
_DTYPE_TOKENS = {"float32": "f32", "float16": "f16"}
_ID = re.compile(
    r"(?P<form>sdpa|manual|attn|mha|tx\.ts|tx\.dynamo|tx\.dynamo23)"
    r"-b(?P<b>\d+)-h(?P<h>\d+)kv(?P<kv>\d+)-q(?P<q>\d+)kv(?P<k>\d+)"
    r"-d(?P<d>\d+)(?:s(?P<scale>[0-9.eEmp]+|inf))?"
    r"-(?P<mask>none|causal|kpad|add)(?:\.(?P<mask_shape>[bhqk1]+))?"
    r"-(?P<dtype>f32|f16)-(?P<layout>bhsd|bshd)"
)
_INT_FIELDS = ("batch", "num_heads", "num_kv_heads", "q_len", "kv_len", "head_dim")


class SpecError(ValueError):
    """An invalid variant spec; the message is one line naming the problem and the fix."""


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{field}={value!r} is not one of {', '.join(map(repr, allowed))}")


@dataclass(frozen=True)
class VariantSpec:
    """One attention variant; see the module docstring for shapes and mask semantics."""

    form: str
    batch: int
    num_heads: int
    num_kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    mask: str = "none"
    mask_shape: str = ""
    dtype: str = "float32"
    scale: float | None = None
    layout: str = "bhsd"
    exporter: str = ""

    def __post_init__(self) -> None:
        _choice("form", self.form, FORMS)
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name}={value!r} must be a positive int")
        _choice("mask", self.mask, MASKS)
        _choice(f"mask_shape for mask={self.mask!r}", self.mask_shape, MASK_SHAPES[self.mask])
        _choice("dtype", self.dtype, DTYPES)
        _choice("layout", self.layout, LAYOUTS)
        self._check_relations()

    def _check_relations(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise SpecError(
                f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads} "
                "(grouped-query attention shares each kv head by a whole number of q heads)"
            )
        if self.mask == "causal" and self.q_len != self.kv_len:
            raise SpecError(
                f"mask='causal' needs q_len == kv_len (got {self.q_len} and {self.kv_len}): "
                "use 'none' for decode against a cache or an additive mask for other alignments"
            )
        if self.scale is not None:
            if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
                raise SpecError(f"scale={self.scale!r} must be a float or None (1/sqrt(head_dim))")
            if not (math.isfinite(self.scale) and self.scale > 0):
                raise SpecError(f"scale={self.scale!r} must be a finite float > 0, or None")
            object.__setattr__(self, "scale", float(self.scale))
        if self.form == "mha-block" and self.layout != "bshd":
            raise SpecError("form='mha-block' takes (B, L, E) hidden states: use layout='bshd'")
        if self.form == "torch-export":
            _choice("exporter for form='torch-export'", self.exporter, EXPORTERS)
        elif self.exporter:
            raise SpecError(
                f"exporter={self.exporter!r} applies only to form='torch-export': leave it empty"
            )

    @property
    def kv_groups(self) -> int:
        """How many q heads share one kv head (1 = multi-head, num_heads = multi-query)."""
        return self.num_heads // self.num_kv_heads

    @property
    def effective_scale(self) -> float:
        """The softmax scale actually applied: the explicit one or 1/sqrt(head_dim)."""
        return self.scale if self.scale is not None else 1.0 / math.sqrt(self.head_dim)

    @property
    def mask_is_input(self) -> bool:
        """Whether the model takes the mask as a fourth input named ``mask``."""
        return self.mask in ("key-padding", "additive")

    @property
    def id(self) -> str:
        """A readable id derived from the spec alone, safe for ``pytest -k`` and file names.

        Fields are joined by ``-`` and never contain one, the first (form) and last (layout)
        tokens are never a proper suffix / prefix of another, so no id is a substring of
        another id.
        """
        form = _EXPORTER_TOKENS[self.exporter] if self.form == "torch-export" else None
        head = f"d{self.head_dim}"
        if self.scale is not None:
            head += "s" + repr(self.scale).replace("-", "m").replace("+", "p")
        mask = _MASK_TOKENS[self.mask] + (f".{self.mask_shape}" if self.mask_shape else "")
        return "-".join(
            (
                form or _FORM_TOKENS[self.form],
                f"b{self.batch}",
                f"h{self.num_heads}kv{self.num_kv_heads}",
                f"q{self.q_len}kv{self.kv_len}",
                head,
                mask,
                _DTYPE_TOKENS[self.dtype],
                self.layout,
            )
        )

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Static shapes of the model inputs, in input order (q, k, v[, mask])."""
        b, h, hkv, d = self.batch, self.num_heads, self.num_kv_heads, self.head_dim
        if self.layout == "bshd":
            shapes = {
                "q": (b, self.q_len, h * d),
                "k": (b, self.kv_len, hkv * d),
                "v": (b, self.kv_len, hkv * d),
            }
            if self.form == "mha-block":
                shapes["k"] = shapes["v"] = (b, self.kv_len, h * d)
        else:
            shapes = {
                "q": (b, h, self.q_len, d),
                "k": (b, hkv, self.kv_len, d),
                "v": (b, hkv, self.kv_len, d),
            }
        if self.mask_is_input:
            shapes["mask"] = self.mask_dims()
        return shapes

    def mask_dims(self) -> tuple[int, ...]:
        """The shape of the mask input, from ``mask_shape``."""
        sizes = {"b": self.batch, "h": self.num_heads, "q": self.q_len, "k": self.kv_len}
        return tuple(sizes.get(c, 1) for c in self.mask_shape)

    def output_shape(self) -> tuple[int, ...]:
        """Static shape of the model output."""
        if self.layout == "bshd":
            return (self.batch, self.q_len, self.num_heads * self.head_dim)
        return (self.batch, self.num_heads, self.q_len, self.head_dim)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; ``VariantSpec.from_dict(spec.to_dict()) == spec``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantSpec:
        """Rebuild a spec from ``to_dict()`` output; unknown keys are an error."""
        if not isinstance(data, dict):
            raise SpecError(f"a variant spec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"unknown variant spec key(s) {', '.join(unknown)}: expected some of "
                f"{', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise SpecError(f"incomplete variant spec: {exc}") from None

    @classmethod
    def from_id(cls, text: str) -> VariantSpec:
        """The spec an id stands for: ``VariantSpec.from_id(spec.id) == spec``."""
        match = _ID.fullmatch(text.strip())
        if match is None:
            raise SpecError(
                f"{text!r} is not a variant id: expected e.g. "
                "'sdpa-b1-h8kv8-q64kv64-d64-causal-f16-bhsd' (see a matrix's variant_id)"
            )
        g = match.groupdict()
        exporter = {v: k for k, v in _EXPORTER_TOKENS.items()}.get(g["form"], "")
        form = "torch-export" if exporter else {v: k for k, v in _FORM_TOKENS.items()}[g["form"]]
        scale = None
        if g["scale"] is not None:
            scale = float(g["scale"].replace("m", "-").replace("p", "+"))
        return cls(
            form=form,
            batch=int(g["b"]),
            num_heads=int(g["h"]),
            num_kv_heads=int(g["kv"]),
            q_len=int(g["q"]),
            kv_len=int(g["k"]),
            head_dim=int(g["d"]),
            mask={v: k for k, v in _MASK_TOKENS.items()}[g["mask"]],
            mask_shape=g["mask_shape"] or "",
            dtype={v: k for k, v in _DTYPE_TOKENS.items()}[g["dtype"]],
            scale=scale,
            layout=g["layout"],
            exporter=exporter,
        )

    def replace(self, **changes: Any) -> VariantSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

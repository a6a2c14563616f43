"""Whole-model variants: tiny transformer models of real families, built from a config.

This module owns the ``hf`` form's vocabulary (families, attention implementations, mask
kinds, initialisations, exporters), :class:`FamilySpec` (one frozen, validated description
with a stable id that round-trips) and the host's deterministic inputs for a spec.

A spec names a ``transformers`` config, never a checkpoint: the model is built with random
weights seeded from the spec (the same weights for its ``eager`` and ``sdpa`` rows), in the
project's exporter environment (:mod:`~pytest_rknn.variants.hf_export`). Families and what
their graph holds around the attention:

- ``bert``: token + position + token-type embeddings, an additive mask built from
  ``attention_mask`` inside the graph, post-LayerNorm encoder layers;
- ``vit``: a Conv patch embedding of ``pixel_values`` plus a CLS token (``seq_len`` patches
  on a square grid, so ``seq_len + 1`` tokens), no mask;
- ``whisper``: the encoder alone, two Convs over ``input_features`` (``2 * seq_len`` mel
  frames), sinusoidal positions, pre-LayerNorm, no mask;
- ``llama``: a decoder with grouped-query attention (``kv_heads`` may divide ``heads``),
  rotary position embeddings, RMSNorm, and the causal mask built inside the graph;
- ``gpt2``: a decoder with a fused QKV projection split into heads (``Conv1D``), learned
  positions, causal masking inside the graph;
- ``t5``: the encoder alone, relative position buckets, RMS-style LayerNorm, unscaled scores.

Inputs: token ids are uniform below :data:`VOCAB` (the embedding table's size); an attention
mask is all ones (``ones``) or keeps a random prefix of at least half the tokens per batch row,
right-padded with zeros (``pad``): the first row is whole when there are several, the last
always padded; pixel values and mel features
are unit normal. ``init="sharp"`` widens the initializer range so that attention is peaked
rather than near uniform (each cell records how peaked it was).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .spec import SpecError, VariantSpec

FORM = "hf"
FAMILIES: tuple[str, ...] = ("bert", "vit", "whisper", "llama", "gpt2", "t5")
ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa")
FAMILY_MASKS: tuple[str, ...] = ("none", "ones", "pad")
INITS: tuple[str, ...] = ("default", "sharp")
FAMILY_EXPORTERS: tuple[str, ...] = ("torchscript", "dynamo")

VOCAB = 128
MEL_BINS = 16
PATCH = 4
TEXT_FAMILIES: frozenset[str] = frozenset({"bert", "llama", "gpt2", "t5"})
GQA_FAMILIES: frozenset[str] = frozenset({"llama"})

_EXPORTER_TOKENS = {"torchscript": "ts", "dynamo": "dynamo"}
_ID = re.compile(
    r"hf\.(?P<family>[a-z0-9]+)\.(?P<attn>eager|sdpa)-b(?P<batch>\d+)-l(?P<layers>\d+)"
    r"-e(?P<hidden>\d+)h(?P<heads>\d+)kv(?P<kv>\d+)-s(?P<seq>\d+)-m(?P<mask>none|ones|pad)"
    r"-(?P<init>default|sharp)-(?P<exporter>ts|dynamo)(?:-dyn(?P<lengths>\d+(?:_\d+)*))?"
)
_INT_FIELDS = ("batch", "layers", "hidden", "heads", "kv_heads", "seq_len")


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{field}={value!r} is not one of {', '.join(map(repr, allowed))}")


@dataclass(frozen=True)
class FamilySpec:
    """One tiny model of a transformer family; see the module docstring."""

    family: str
    attn: str = "sdpa"
    batch: int = 1
    layers: int = 1
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 4
    seq_len: int = 16
    mask: str = "none"
    init: str = "sharp"
    exporter: str = "torchscript"
    lengths: tuple[int, ...] = ()
    """A dynamic-length row: exported with a free ``seq`` axis and served at these lengths
    (``--rknn-dims``' cell); its ``seq_len``, the export's and the inputs' length, is the
    largest."""

    def __post_init__(self) -> None:
        if isinstance(self.lengths, list):
            object.__setattr__(self, "lengths", tuple(self.lengths))
        _choice("family", self.family, FAMILIES)
        _choice("attn", self.attn, ATTN_IMPLEMENTATIONS)
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name}={value!r} must be a positive int")
        _choice("mask", self.mask, FAMILY_MASKS)
        _choice("init", self.init, INITS)
        _choice("exporter", self.exporter, FAMILY_EXPORTERS)
        self._check_relations()

    def _check_relations(self) -> None:
        if self.layers > 4:
            raise SpecError(f"layers={self.layers} is more than 4: the hf form builds tiny models")
        if self.hidden % self.heads:
            raise SpecError(f"hidden={self.hidden} must be a multiple of heads={self.heads}")
        if self.family == "llama" and self.head_dim % 2:
            raise SpecError(
                f"llama's rotary embedding needs an even head dim (hidden/heads = {self.head_dim})"
            )
        if self.heads % self.kv_heads:
            raise SpecError(f"kv_heads={self.kv_heads} must divide heads={self.heads}")
        if self.kv_heads != self.heads and self.family not in GQA_FAMILIES:
            raise SpecError(
                f"family={self.family!r} has no grouped-query attention: set kv_heads=heads "
                f"({self.heads}) or use {', '.join(sorted(GQA_FAMILIES))}"
            )
        if self.mask != "none" and self.family not in TEXT_FAMILIES:
            raise SpecError(
                f"family={self.family!r} takes no attention mask: use mask='none' "
                f"(masks apply to {', '.join(sorted(TEXT_FAMILIES))})"
            )
        if self.lengths:
            self._check_lengths()
        if self.family == "vit" and math.isqrt(self.seq_len) ** 2 != self.seq_len:
            raise SpecError(
                f"vit's seq_len={self.seq_len} must be a square (patches on a square grid)"
            )

    def _check_lengths(self) -> None:
        values = self.lengths
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
            raise SpecError(f"lengths={values!r} must be positive ints")
        if list(values) != sorted(set(values)) or len(values) > 8:
            raise SpecError(f"lengths={values!r} must be ascending, distinct, at most 8")
        if self.family not in TEXT_FAMILIES or self.exporter != "torchscript":
            raise SpecError(
                "dynamic lengths are for the text families exported by TorchScript "
                f"({', '.join(sorted(TEXT_FAMILIES))})"
            )
        if self.seq_len != values[-1]:
            raise SpecError(f"seq_len={self.seq_len} must be the largest of lengths={values}")

    @property
    def dims(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """The free dims a dynamic-length row is served at (``()``: a static row)."""
        return (("seq", self.lengths),) if self.lengths else ()

    @property
    def form(self) -> str:
        return FORM

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def id(self) -> str:
        """A readable id, ``-k`` safe, unique to the spec (``hf.`` starts no other form's id)."""
        return (
            f"hf.{self.family}.{self.attn}-b{self.batch}-l{self.layers}"
            f"-e{self.hidden}h{self.heads}kv{self.kv_heads}-s{self.seq_len}-m{self.mask}"
            f"-{self.init}-{_EXPORTER_TOKENS[self.exporter]}"
            + (f"-dyn{'_'.join(map(str, self.lengths))}" if self.lengths else "")
        )

    @property
    def weights_key(self) -> str:
        """What the weights and inputs are seeded from: the id without the attention
        implementation and the exporter, so that the eager and sdpa rows (and both exports)
        of one config hold the same model on the same inputs and differ by the graph alone."""
        return dataclasses.replace(self, attn="eager", exporter="torchscript").id

    @property
    def weights_seed(self) -> int:
        """The torch seed of the weights (see :attr:`weights_key`)."""
        return int.from_bytes(hashlib.sha256(self.weights_key.encode()).digest()[:4], "little")

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """The model's inputs, in order, with their static shapes."""
        b = self.batch
        if self.family == "vit":
            side = PATCH * math.isqrt(self.seq_len)
            return {"pixel_values": (b, 3, side, side)}
        if self.family == "whisper":
            return {"input_features": (b, MEL_BINS, 2 * self.seq_len)}
        shapes = {"input_ids": (b, self.seq_len)}
        if self.mask != "none":
            shapes["attention_mask"] = (b, self.seq_len)
        return shapes

    @property
    def tokens(self) -> int:
        """How many positions attention runs over (ViT adds its CLS token)."""
        return self.seq_len + 1 if self.family == "vit" else self.seq_len

    def host_bytes(self) -> int:
        """What the inputs, the reference run and the attention probabilities take, roughly."""
        scores = self.batch * self.heads * self.tokens * self.tokens * 8 * self.layers
        hidden = self.batch * self.tokens * self.hidden * 8 * 16
        inputs = sum(math.prod(s) * 8 for s in self.input_shapes().values())
        return scores + hidden + inputs

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types with ``form: "hf"``; ``FamilySpec.from_dict`` reads it back."""
        found = {"form": FORM, **dataclasses.asdict(self)}
        found["lengths"] = list(self.lengths)
        if not self.lengths:
            del found["lengths"]
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FamilySpec:
        if not isinstance(data, dict) or data.get("form") != FORM:
            raise SpecError(f"not an hf spec (form must be {FORM!r}): {data!r:.120}")
        values = {k: v for k, v in data.items() if k != "form"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(
                f"unknown hf spec key(s) {', '.join(unknown)}: expected some of "
                f"{', '.join(sorted(known))}"
            )
        try:
            return cls(**values)
        except TypeError as exc:
            raise SpecError(f"incomplete hf spec: {exc}") from None

    @classmethod
    def from_id(cls, text: str) -> FamilySpec:
        """The spec an id stands for: ``FamilySpec.from_id(spec.id) == spec``."""
        match = _ID.fullmatch(text.strip())
        if match is None:
            raise SpecError(
                f"{text!r} is not an hf variant id: expected e.g. "
                "'hf.bert.sdpa-b1-l1-e64h4kv4-s16-mpad-sharp-ts' (see a matrix's variant_id)"
            )
        g = match.groupdict()
        exporter = {v: k for k, v in _EXPORTER_TOKENS.items()}[g["exporter"]]
        return cls(
            family=g["family"],
            attn=g["attn"],
            batch=int(g["batch"]),
            layers=int(g["layers"]),
            hidden=int(g["hidden"]),
            heads=int(g["heads"]),
            kv_heads=int(g["kv"]),
            seq_len=int(g["seq"]),
            mask=g["mask"],
            init=g["init"],
            exporter=exporter,
            lengths=tuple(int(v) for v in g["lengths"].split("_")) if g["lengths"] else (),
        )

    def replace(self, **changes: Any) -> FamilySpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def spec_from_id(text: str) -> VariantSpec | FamilySpec:
    """The spec a variant id names, of whichever form (``SpecError`` when it names none)."""
    if text.strip().startswith("hf."):
        return FamilySpec.from_id(text)
    return VariantSpec.from_id(text)


def family_inputs(spec: FamilySpec, seed: int) -> dict[str, np.ndarray]:
    """The model's inputs for ``seed``, deterministic per (weights_key, seed) on every machine."""
    digest = hashlib.sha256(f"{spec.weights_key}|{seed}|hf".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "little"))
    arrays: dict[str, np.ndarray] = {}
    for name, shape in spec.input_shapes().items():
        if name == "input_ids":
            arrays[name] = rng.integers(0, VOCAB, shape, dtype=np.int64)
        elif name == "attention_mask":
            arrays[name] = _attention_mask(rng, spec)
        else:
            arrays[name] = rng.standard_normal(shape).astype(np.float32)
    return arrays


def _attention_mask(rng: np.random.Generator, spec: FamilySpec) -> np.ndarray:
    b, length = spec.batch, spec.seq_len
    if spec.mask == "ones":
        return np.ones((b, length), dtype=np.int64)
    lengths = rng.integers(max(1, -(-length // 2)), length + 1, size=b)
    if b > 1:
        lengths[0] = length
    if length > 1:
        lengths[-1] = min(lengths[-1], length - 1)
    return (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)

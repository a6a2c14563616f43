"""Which positions an attention mask keeps, and which of a cell's output positions are judged.

A subject says which of its inputs are masks (``mask_inputs()``: name -> ``(kind, layout)``):
``kind`` ``keep`` (1/True = attend, transformers' and torch SDPA's convention) or ``additive``
(a bias added to the scores; a position is masked where the bias is -1e4 or lower), ``layout``
``tokens`` (one entry per token: ``(batch, seq)``, a padding mask) or ``scores`` (one per score:
``(..., q, k)``, an attention core's mask). :func:`masks_of` reads them from a cell's inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# An additive mask value at or below this masks its position (-10000 in BERT, the dtype's
# lowest value in torch, -inf).
MASKED_BIAS = -1e4


@dataclass(frozen=True)
class Mask:
    """A mask input: ``keep`` is True where a token (``tokens``) or a score (``scores``) takes
    part."""

    name: str
    layout: str
    keep: np.ndarray

    @property
    def padded(self) -> bool:
        """Whether the mask leaves any position out."""
        return not bool(self.keep.all())

    def rows(self) -> np.ndarray:
        """``(batch, seq)``: whether each token (``tokens``) or each query row (``scores``: a
        row with at least one key) takes part."""
        if self.layout == "tokens":
            return self.keep.reshape(self.keep.shape[0], -1) if self.keep.ndim > 1 else self.keep
        rows = self.keep.any(axis=-1)
        if rows.ndim == 1:
            return rows[None, :]
        return rows.reshape(rows.shape[0], -1, rows.shape[-1]).any(axis=1)


def keep_of(kind: str, array: np.ndarray) -> np.ndarray:
    """Where a mask of ``kind`` (``keep`` or ``additive``) lets a position take part."""
    values = np.asarray(array)
    if kind == "additive":
        return ~(values.astype(np.float64) <= MASKED_BIAS)
    return values.astype(bool)


def masks_of(subject: Any, inputs: Mapping[str, np.ndarray]) -> list[Mask]:
    """The mask inputs of ``subject`` among ``inputs``."""
    found = []
    declared = getattr(subject, "mask_inputs", None)
    for name, (kind, layout) in (declared() if declared else {}).items():
        if name in inputs:
            found.append(Mask(name, layout, keep_of(kind, inputs[name])))
    return found

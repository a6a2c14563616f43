"""Which positions an attention mask keeps, and which of a cell's output positions are judged.

A subject says which of its inputs are masks (``mask_inputs()``: name -> ``(kind, layout)``):
``kind`` ``keep`` (1/True = attend, transformers' and torch SDPA's convention) or ``additive``
(a bias added to the scores; a position is masked where the bias is -1e4 or lower), ``layout``
``tokens`` (one entry per token: ``(batch, seq)``, a padding mask) or ``scores`` (one per score:
``(..., q, k)``, an attention core's mask). :func:`masks_of` reads them from a cell's inputs.

:func:`selections` decides, for each output, the positions its verdict is judged on:

- a token mask with padding: the rows of real tokens, along the output axis whose length is
  the mask's sequence length (axis 0 is the batch when it has the mask's batch size);
- a score mask: the query rows with at least one key kept (a row whose every key is masked is
  never judged: torch zeroes it, the toolkit does not, and no one reads it);
- the axis is told from the shapes alone: when no axis, or more than one, has the mask's length
  (or two masks claim the output), every position is judged and the selection says so;
- ``every=True`` (the ``rknn`` marker's or ``rknn.convert``'s ``all_positions=True``) judges
  every position of a token mask's padding too (fully masked query rows still stay out).
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


@dataclass(frozen=True)
class Selection:
    """The positions of one output that are judged: ``keep`` (broadcastable to the output's
    shape; None: all), ``judged`` (which, in words) and ``note`` (why all, when it could not
    be told)."""

    keep: np.ndarray | None = None
    judged: str | None = None
    note: str | None = None


def _rows(masks: list[Mask], every: bool) -> list[tuple[str, np.ndarray]]:
    """(name, (batch, seq) rows judged) of each mask that leaves a row out."""
    found = []
    for m in masks:
        if m.layout == "tokens" and every:
            continue
        rows = m.rows()
        if rows.ndim == 1:
            rows = rows[None, :]
        if not rows.all() and rows.any(axis=-1).all():
            found.append((m.name, rows))
    return found


def _select(shape: tuple[int, ...], rows: list[tuple[str, np.ndarray]]) -> Selection:
    matches = []
    for name, kept in rows:
        batch, length = kept.shape
        first = 1 if len(shape) >= 2 and shape[0] == batch else 0
        if first == 0 and batch != 1:
            continue
        axes = [a for a in range(first, len(shape)) if shape[a] == length]
        if axes:
            matches.append((name, kept, first, axes))
    names = ", ".join(name for name, _ in rows)
    lengths = sorted({int(kept.shape[1]) for _, kept in rows})
    if not matches:
        return Selection(
            note=f"no axis of length {'/'.join(map(str, lengths))} (the positions of {names}): "
            "every position judged"
        )
    if len(matches) > 1 or len(matches[0][3]) > 1:
        axes = sorted({a for *_, found in matches for a in found})
        return Selection(
            note=f"the axis of {names} cannot be told from the shapes (axes "
            f"{', '.join(map(str, axes))} fit): every position judged"
        )
    name, kept, first, (axis,) = matches[0]
    view = [1] * len(shape)
    if first:
        view[0] = kept.shape[0]
    view[axis] = kept.shape[1]
    judged = f"the {int(kept.sum())} of {kept.size} positions {name} keeps (output axis {axis})"
    return Selection(kept.reshape(view), judged)


def selections(
    masks: list[Mask], shapes: list[tuple[int, ...]], every: bool = False
) -> list[Selection]:
    """The judged positions of each output of ``shapes`` under ``masks`` (see the module)."""
    rows = _rows(masks, every)
    if not rows:
        note = "every position judged, as asked" if every and any(m.padded for m in masks) else None
        return [Selection(note=note) for _ in shapes]
    return [_select(tuple(shape), rows) for shape in shapes]

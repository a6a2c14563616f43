"""Which rule makes a cell's bounds, and on which positions its outputs are judged.

:class:`Judging` is what a pytest item hands the pipeline for a cell: the ``bounds``, the
``rule`` that made them (recorded as the cell's ``bounds_rule``: ``default int8``, ``ini
rknn_bounds_fp16``, ``marker``, ...) and whether every output position is judged
(``all_positions``: the ``rknn`` marker's or ``rknn.convert``'s ``all_positions=True``; by
default only the positions an attention mask keeps, see :mod:`.positions`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_rknn.verdict.tolerance import Bounds


@dataclass(frozen=True)
class Judging:
    """A cell's bounds, the rule that made them, and the positions judged."""

    bounds: Bounds
    rule: str
    all_positions: bool = False

    def key(self) -> dict[str, object]:
        """What a stored judgement depends on, besides the outputs and the reference."""
        return {"bounds": self.bounds.to_dict(), "all_positions": self.all_positions}

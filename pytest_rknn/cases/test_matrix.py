"""The compatibility matrix: one test item per (variant, platform, toolkit, quant) cell.

The plugin parametrizes ``rknn_cell`` from the ``--rknn-*`` options (curated variants, hypothesis
draws, ``--rknn-model`` files); each item converts its variant with the real toolkit, simulates it,
and compares the result with the float64 reference. Select cells with ``-k``, e.g.
``pytest-rknn run -k "rk3588 and 2.2.0"`` (``pytest cases/ ...`` in a clone).
"""

from __future__ import annotations


def test_cell(rknn_cell):
    outcome = rknn_cell.check()
    assert outcome.status == "pass", outcome.message

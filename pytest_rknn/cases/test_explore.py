"""``pytest-rknn run --rknn-explore``: one search per (platform, toolkit, quant) target.

``pytest cases/ --rknn-explore`` in a clone.

Hypothesis looks for a variant that fails the target and shrinks it to a minimal one; the item
fails with that variant's id, status, signature and a command that re-runs just that cell. The
items are deselected in an ordinary matrix run.
"""

from __future__ import annotations


def test_explore(rknn_explore):
    assert rknn_explore.check() is None

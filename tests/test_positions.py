"""Mask-aware comparison: outputs are judged on the positions the attention mask keeps.

A token mask with padding keeps the rows of real tokens, along the output axis of the mask's
length (told from the shapes); the left-out positions' metrics are recorded as information; an
axis that cannot be told means every position is judged, and the metrics say so; a query row
whose every key is masked is never judged; ``all_positions`` judges the padding too.
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_rknn.results.status import Status
from pytest_rknn.verdict.judge import judge_outputs
from pytest_rknn.verdict.metrics import Metrics
from pytest_rknn.verdict.positions import Mask, keep_of, selections
from pytest_rknn.verdict.tolerance import Bounds

FP16 = Bounds.for_mode("fp16")


def token_mask(batch: int, length: int, kept: list[int]) -> Mask:
    keep = np.arange(length)[None, :] < np.array(kept)[:, None]
    return Mask("attention_mask", "tokens", keep)


def hidden_states(seed: int = 0, shape: tuple[int, ...] = (2, 8, 16)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def test_padded_rows_are_left_out_and_recorded_as_information() -> None:
    mask = token_mask(2, 8, [8, 6])
    reference = hidden_states()
    actual = reference * (1 + 1e-5)
    actual[1, 6:] = 0.0  # the toolkit zeroes padded rows (or gets them wrong): no one reads them
    (chosen,) = selections([mask], [reference.shape])
    assert chosen.judged == "the 14 of 16 positions attention_mask keeps (output axis 1)"
    verdict = judge_outputs([reference], [actual], FP16, [chosen])
    assert verdict.status is Status.PASS, verdict.reason
    metrics = verdict.metrics["output0"]
    assert metrics["index"] == 0 and metrics["judged"] == chosen.judged
    assert metrics["cosine"] > 0.99999
    assert metrics["left_out"]["cosine"] == pytest.approx(0.0, abs=1e-12)
    assert "information only" in metrics["left_out"]["note"]
    assert Metrics.from_dict(metrics).left_out == metrics["left_out"], "it round-trips"
    every = selections([mask], [reference.shape], every=True)
    verdict = judge_outputs([reference], [actual], FP16, every)
    assert verdict.status is Status.TOLERANCE_FAIL, "all_positions judges the padding too"
    assert verdict.metrics["output0"]["note"] == "every position judged, as asked"


def test_a_nan_in_a_left_out_row_is_no_error() -> None:
    mask = token_mask(1, 4, [3])
    reference = hidden_states(shape=(1, 4, 8))
    actual = reference.copy()
    reference[0, 3] = np.nan  # torch's guard of a fully masked row, as exported
    verdict = judge_outputs([reference], [actual], FP16, selections([mask], [reference.shape]))
    assert verdict.status is Status.PASS and verdict.metrics["output0"].get("error") is None


def test_a_real_error_on_a_kept_row_still_fails() -> None:
    mask = token_mask(2, 8, [8, 5])
    reference = hidden_states()
    actual = reference.copy()
    actual[1, 2] += 0.5
    verdict = judge_outputs([reference], [actual], FP16, selections([mask], [reference.shape]))
    assert verdict.status is Status.TOLERANCE_FAIL
    assert verdict.metrics["output0"]["worst_index"][:2] == [1, 2]


@pytest.mark.parametrize(
    ("shape", "judged", "note"),
    [
        ((2, 8, 16), "the 13 of 16 positions attention_mask keeps (output axis 1)", None),
        ((2, 16, 8), "the 13 of 16 positions attention_mask keeps (output axis 2)", None),
        ((2, 4, 8, 8), None, "cannot be told from the shapes (axes 2, 3 fit)"),
        ((2, 16), None, "no axis of length 8"),
        ((8, 16), None, "no axis of length 8"),
    ],
    ids=["seq-first", "seq-last", "two-axes", "pooled", "no-batch"],
)
def test_the_axis_is_told_from_the_shapes_or_everything_is_judged(
    shape: tuple[int, ...], judged: str | None, note: str | None
) -> None:
    (chosen,) = selections([token_mask(2, 8, [8, 5])], [shape])
    assert chosen.judged == judged
    assert (chosen.note is None) if note is None else (note in chosen.note)
    assert (chosen.keep is None) == (judged is None)


def test_a_mask_of_ones_changes_nothing() -> None:
    (chosen,) = selections([token_mask(1, 8, [8])], [(1, 8, 16)])
    assert chosen.keep is None and chosen.judged is None and chosen.note is None


def test_a_fully_masked_query_row_of_a_score_mask_is_never_judged() -> None:
    bias = np.zeros((1, 1, 4, 4), np.float32)
    bias[0, 0, 0, :] = np.finfo(np.float32).min  # query 0 sees no key (a sliding window's edge)
    bias[0, 0, 2, 3] = -1e9
    mask = Mask("mask", "scores", keep_of("additive", bias))
    (chosen,) = selections([mask], [(1, 2, 4, 8)], every=True)
    assert chosen.judged == "the 3 of 4 positions mask keeps (output axis 2)"
    assert chosen.keep.reshape(-1).tolist() == [False, True, True, True]
    partial = Mask("mask", "scores", keep_of("keep", np.array([[[[1, 1, 0, 0]]]], bool)))
    assert selections([partial], [(1, 2, 4, 8)])[0].keep is None, "no row is fully masked"

"""Generated calibration that looks like real traffic: masks padded by none, a quarter and a
half of their positions across the samples (even at batch 1 and even when the test input is
all ones), for whole models' token masks and the attention forms' key-padding and additive
masks alike; token ids across the vocabulary, position ids a range. No toolkit runs here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from bert_graphs import BERT_INPUTS, bert_like

from pytest_rknn.pipeline.calibration import make_calibration
from pytest_rknn.pipeline.subjects import FamilySubject, VariantSubject
from pytest_rknn.pipeline.user_models import UserModel
from pytest_rknn.variants.families import FamilySpec
from pytest_rknn.variants.inputs import kept_lengths
from pytest_rknn.variants.spec import VariantSpec


def samples(calibration, names: list[str]) -> list[dict[str, np.ndarray]]:
    return [
        {n: np.load(p) for n, p in zip(names, paths, strict=True)} for paths in calibration.samples
    ]


def test_the_padding_cycles_none_a_quarter_a_half() -> None:
    assert kept_lengths(1, 32, 0).tolist() == [32]
    assert kept_lengths(1, 32, 1).tolist() == [24]
    assert kept_lengths(1, 32, 2).tolist() == [16]
    assert kept_lengths(3, 32, 1).tolist() == [24, 16, 32], "rows of a batch differ too"
    assert kept_lengths(1, 1, 2).tolist() == [1], "never a row without a kept position"


def test_a_batch_of_one_user_model_calibrates_on_padded_masks(tmp_path: Path) -> None:
    path = tmp_path / "enc.onnx"
    onnx.save(bert_like(vocab=40, batch=1, length=32, positions=32), path)
    user = UserModel.load(path)
    assert user.inputs(0)["attention_mask"].all(), "the test input of batch 1 is all ones"
    names = list(BERT_INPUTS)
    got = samples(make_calibration(user, 0, 6, names, user.inputs(0), tmp_path / "c"), names)
    assert [int(s["attention_mask"].sum()) for s in got] == [32, 24, 16, 32, 24, 16]
    for s in got:
        mask = s["attention_mask"][0]
        kept = int(mask.sum())
        assert mask[:kept].all() and not mask[kept:].any(), "a right-padded prefix"
        assert s["input_ids"].max() < 40 and len(np.unique(s["input_ids"])) > 10
        assert (s["position_ids"] == np.arange(32)).all()


def test_the_attention_forms_masks_vary_the_same_way(tmp_path: Path) -> None:
    shape = {"batch": 1, "num_heads": 2, "num_kv_heads": 2, "q_len": 8, "kv_len": 8}
    for mask, dims in (("key-padding", "b11k"), ("additive", "b1qk")):
        spec = VariantSpec(form="manual", head_dim=8, mask=mask, mask_shape=dims, **shape)
        subject = VariantSubject(spec)
        names = ["q", "k", "v", "mask"]
        calibration = make_calibration(subject, 0, 3, names, subject.inputs(0), tmp_path / mask)
        got = samples(calibration, names)
        for sample, kept in zip(got, (8, 6, 4), strict=True):
            m = sample["mask"].reshape(-1, 8)
            allowed = m if mask == "key-padding" else m > np.finfo(m.dtype).min
            assert (allowed.sum(axis=-1) == kept).all(), (mask, kept)
            if mask == "additive":
                assert np.std(m[:, :kept]) > 0.3, "the bias stays a N(0, 1) bias"


def test_an_hf_models_mask_is_padded_even_when_its_test_mask_is_all_ones() -> None:
    spec = FamilySpec("bert", batch=1, hidden=32, heads=4, kv_heads=4, seq_len=16, mask="ones")
    subject = FamilySubject(spec)
    assert subject.inputs(0)["attention_mask"].all()
    sums = [int(subject.sample(7, i)["attention_mask"].sum()) for i in range(3)]
    assert sums == [16, 12, 8]

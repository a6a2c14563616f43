"""References are made once for all the processes that share pytest's cache (xdist workers)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cache_support import FolderCache

from pytest_rknn.pipeline.cache import REFERENCES_DIR, ResultCache
from pytest_rknn.pipeline.materials import Materials
from pytest_rknn.pipeline.subjects import VariantSubject
from pytest_rknn.variants.reference import reference_outputs
from pytest_rknn.variants.spec import VariantSpec

SUBJECT = VariantSubject(
    VariantSpec(form="manual", batch=1, num_heads=2, num_kv_heads=2, q_len=8, kv_len=8, head_dim=16)
)


def test_two_processes_make_one_reference_and_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real = Materials._make_reference

    def slow_make(subject, model, inputs):
        made.append(threading.current_thread().name)
        time.sleep(0.3)
        return real(subject, model, inputs)

    monkeypatch.setattr(Materials, "_make_reference", staticmethod(slow_make))
    shared = ResultCache(FolderCache(tmp_path / "cache"))
    subject = SUBJECT
    got: dict[str, list[np.ndarray]] = {}

    def worker(name: str) -> None:
        # One Materials each, as each xdist worker has its own: only the cache is shared.
        materials = Materials(tmp_path / name, 0, 2**30, lambda: None, tmp_path / "e", shared)
        built, inputs = materials.model(subject), materials.inputs(subject)
        got[name] = materials.reference(subject, built, inputs)

    threads = [threading.Thread(target=worker, args=(n,), name=n) for n in ("gw0", "gw1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1, made
    want = reference_outputs(subject.spec, subject.inputs(0))
    for name in ("gw0", "gw1"):
        assert len(got[name]) == 1 and np.array_equal(got[name][0], want[0])


def test_a_cache_where_no_lock_can_be_made_still_gives_the_reference(tmp_path: Path) -> None:
    shared = ResultCache(FolderCache(tmp_path / "cache"))
    subject = SUBJECT
    materials = Materials(tmp_path / "w", 0, 2**30, lambda: None, tmp_path / "e", shared)
    built, inputs = materials.model(subject), materials.inputs(subject)
    key = materials.reference_key(subject, built, inputs)
    blocked = tmp_path / "cache" / "d" / REFERENCES_DIR / f"{key}.lock"
    blocked.mkdir(parents=True)  # the lock's path is taken: no lock file can be opened there
    (got,) = materials.reference(subject, built, inputs)
    assert np.array_equal(got, reference_outputs(subject.spec, inputs)[0])

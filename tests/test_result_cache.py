"""The result cache gives back only what it stored for a key, checked whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from cache_support import FolderCache

from pytest_rknn.pipeline import cache as result_cache
from pytest_rknn.pipeline.cache import Conversion, ResultCache

KEY = "k" * 16


def _stored(tmp_path: Path) -> tuple[ResultCache, np.ndarray]:
    cache = ResultCache(FolderCache(tmp_path / "cache"))
    output = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    cache.put(KEY, Conversion(job_id="j1", status=None, outputs=[output], toolkit="2.3.2"))
    return cache, output


def test_stored_outputs_come_back_as_stored(tmp_path: Path) -> None:
    cache, output = _stored(tmp_path)
    found = cache.get(KEY)
    assert found is not None and found.cached and found.job_id == "j1"
    np.testing.assert_array_equal(found.outputs[0], output)


def test_outputs_replaced_after_their_check_are_not_the_ones_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run replacing the file between the digest check and the load (the same key,
    another conversion) must not put its array under the checked digest."""
    cache, output = _stored(tmp_path)
    files = list((tmp_path / "cache").rglob("output0.npy"))
    assert len(files) == 1
    real_sha256 = hashlib.sha256

    def sha256_then_replace(data: bytes = b""):
        digest = real_sha256(data)
        np.save(files[0], np.full((2, 3, 4), 7.0, dtype=np.float32))
        return digest

    monkeypatch.setattr(result_cache.hashlib, "sha256", sha256_then_replace)
    found = cache.get(KEY)
    assert found is not None
    np.testing.assert_array_equal(found.outputs[0], output)


def test_a_damaged_output_file_is_no_stored_answer(tmp_path: Path) -> None:
    cache, _ = _stored(tmp_path)
    (file,) = (tmp_path / "cache").rglob("output0.npy")
    file.write_bytes(file.read_bytes()[:-4] + b"\0\0\0\1")
    assert cache.get(KEY) is None

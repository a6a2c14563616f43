"""The prefetcher's scheduling: which workers it spawns, and when (no toolkit: a recording pool)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from pytest_rknn.pipeline.prefetch import Prefetcher


@dataclass(frozen=True)
class _Cell:
    key: str
    toolkit: str
    slow: bool = False


class _RecordingPool:
    """Stands in for the WorkerPool: records prestarts; a worker is up as soon as spawned."""

    def __init__(self) -> None:
        self.prestarted: list[str] = []

    def starting(self) -> list[str]:
        return []

    def prestart(self, version: str) -> bool:
        self.prestarted.append(version)
        return True


def _wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class _ComingUpPool(_RecordingPool):
    """The last worker spawned is coming up until ``up`` is set (then the next may spawn)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = threading.Event()

    def prestart(self, version: str) -> bool:
        self.up.clear()
        return super().prestart(version)

    def starting(self) -> list[str]:
        return [] if self.up.is_set() or not self.prestarted else self.prestarted[-1:]


def test_a_probe_that_waits_does_not_hold_up_the_next_worker() -> None:
    # The walk has asked for 2.3.0 and 2.3.2 and then waits in a probe (a model the exporter
    # makes); 2.3.0's worker comes up meanwhile, and 2.3.2's is spawned without the walk.
    release = threading.Event()
    cells = [
        _Cell("a", "2.2.0"),
        _Cell("b", "2.3.0"),
        _Cell("c", "2.3.2"),
        _Cell("d", "2.2.0", slow=True),
    ]
    probed: list[str] = []

    def probe(cell: _Cell) -> bool:
        probed.append(cell.key)
        if cell.slow:
            release.wait(10)
        return True

    pool = _ComingUpPool()
    prefetcher = Prefetcher(cells, pool, probe=probe, warm=lambda cell: None)  # type: ignore[arg-type]
    prefetcher.start(cells[0], own_version="2.2.0")
    try:
        assert _wait_for(lambda: probed == ["b", "c", "d"])
        assert pool.prestarted == ["2.3.0"]
        pool.up.set()
        assert _wait_for(lambda: pool.prestarted == ["2.3.0", "2.3.2"])
        assert not release.is_set()
    finally:
        release.set()
        prefetcher.close()
    assert "2.2.0" not in pool.prestarted
    assert prefetcher.errors == []


def test_one_worker_comes_up_at_a_time() -> None:
    cells = [_Cell("a", "2.2.0"), _Cell("b", "2.3.0"), _Cell("c", "2.3.2")]
    pool = _ComingUpPool()
    prefetcher = Prefetcher(cells, pool, probe=lambda cell: True, warm=lambda cell: None)  # type: ignore[arg-type]
    prefetcher.start(cells[0], own_version="2.2.0")
    try:
        assert _wait_for(lambda: pool.prestarted == ["2.3.0"])
        time.sleep(0.3)
        assert pool.prestarted == ["2.3.0"]
        pool.up.set()
        assert _wait_for(lambda: pool.prestarted == ["2.3.0", "2.3.2"])
    finally:
        prefetcher.close()
    assert all(not t.is_alive() for t in prefetcher._threads)

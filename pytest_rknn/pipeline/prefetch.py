"""Getting the next cells ready while the toolkit works on the current one.

Owns :class:`Prefetcher`: once a process's first cell misses the cache (a cold run; a warm
run never starts it), a background thread walks the cells this process will run next, in
their order, and for each one whose conversion is not cached makes its model, inputs and
reference (the :class:`~pytest_rknn.pipeline.materials.Materials` of the session, which
make each once) and notes its toolkit version; the versions' workers are spawned one at a
time in the order the cells need them (:meth:`~pytest_rknn.toolkit.pool.WorkerPool.prestart`),
so that a toolkit imports while another converts (by a thread of their own: a walk that waits
for an export does not hold them up). Another thread makes the run's exports as soon as the
prefetcher starts. Nothing here decides a result: a value made ahead is the value the cell
would have made itself, and any failure is left for the cell to meet again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_rknn.pipeline.plan import CellSpec
    from pytest_rknn.toolkit.pool import WorkerPool

# How often the walk checks whether a spawned worker has come up (to spawn the next one).
_STARTING_POLL = 0.1


class Prefetcher:
    """Warms ``cells`` (this process's, in run order) ahead of the cell running now.

    ``probe(cell)`` makes what the cell needs and says whether it needs a toolkit job (its
    conversion is not cached); ``warm(cell)`` makes its reference; ``exports()`` makes the
    torch exports. ``mine(current, cell)`` says whether ``cell`` is run by this process after
    ``current`` (under pytest-xdist: in the same scheduling group).
    """

    def __init__(
        self,
        cells: Sequence[CellSpec],
        pool: WorkerPool,
        probe: Callable[[CellSpec], bool],
        warm: Callable[[CellSpec], None],
        exports: Callable[[], None] | None = None,
        mine: Callable[[CellSpec, CellSpec], bool] | None = None,
    ) -> None:
        self.cells = list(cells)
        self.index = {cell.key: i for i, cell in enumerate(self.cells)}
        self.pool = pool
        self.probe = probe
        self.warm = warm
        self.exports = exports
        self.mine = mine or (lambda current, cell: True)
        self.position = -1
        self.current: CellSpec | None = None
        self.wanted: list[str] = []
        self.spawned: set[str] = set()
        self._versions = threading.Lock()
        self._walked = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def running(self, cell: CellSpec) -> None:
        """Say which cell runs now (the walk skips what is behind it)."""
        self.current = cell
        self.position = max(self.position, self.index.get(cell.key, self.position))

    def start(self, cell: CellSpec, own_version: str | None = None) -> None:
        """Start warming the cells after ``cell`` (its own worker, ``own_version``, is being
        started by the cell itself)."""
        if self.started:
            return
        self.running(cell)
        if own_version is not None:
            self.spawned.add(own_version)
        targets = [("rknn-prefetch", self._walk), ("rknn-spawn", self._spawn)]
        if self.exports is not None:
            targets.append(("rknn-exports", self._export))
        for name, target in targets:
            thread = threading.Thread(target=self._guard(target), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # noqa: BLE001 - the cells meet any real fault themselves
                self.errors.append(f"{type(exc).__name__}: {exc}")

        return run

    def _export(self) -> None:
        assert self.exports is not None
        self.exports()

    def _walk(self) -> None:
        try:
            i = self.position
            while not self._stop.is_set():
                i = max(i + 1, self.position + 1)
                if i >= len(self.cells):
                    break
                cell, current = self.cells[i], self.current
                if current is not None and not self.mine(current, cell):
                    continue
                if self.probe(cell):
                    with self._versions:
                        if cell.toolkit not in self.spawned and cell.toolkit not in self.wanted:
                            self.wanted.append(cell.toolkit)
                    self.warm(cell)
        finally:
            self._walked.set()

    def _spawn(self) -> None:
        """Spawn the wanted versions' workers in turn until the walk is done and none is left."""
        while not self._stop.is_set():
            walked = self._walked.is_set()
            if not self._spawn_next() and walked and not self.wanted:
                break
            self._stop.wait(_STARTING_POLL)

    def _spawn_next(self) -> bool:
        """Spawn the first wanted version's worker unless one is still coming up."""
        if not self.wanted or self.pool.starting():
            return False
        with self._versions:
            version = self.wanted.pop(0)
            self.spawned.add(version)
        self.pool.prestart(version)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Stop the walk and wait for the threads (an export under way finishes first)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

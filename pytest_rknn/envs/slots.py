"""Machine-wide slots for smoke runs, shared by threads and processes.

A smoke run imports a toolkit (or torch) and converts (or exports) a tiny model: it is
CPU-bound and single-threaded. :func:`smoke_slot` lets :data:`SMOKE_SLOTS` of them run at once
on the machine (one per core, at most two), whoever started them: a thread holds a semaphore
slot of its process and one of the file locks ``<root>/.locks/smoke-<i>.lock``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

SMOKE_SLOTS = max(1, min(2, os.cpu_count() or 1))
_IN_PROCESS = threading.Semaphore(SMOKE_SLOTS)


@contextlib.contextmanager
def smoke_slot(locks: Path) -> Iterator[None]:
    """Hold one of :data:`SMOKE_SLOTS` smoke slots (file locks in ``locks``) while inside."""
    locks.mkdir(parents=True, exist_ok=True)
    slots = [FileLock(locks / f"smoke-{i}.lock") for i in range(SMOKE_SLOTS)]
    with _IN_PROCESS:
        while True:
            for lock in slots:
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                try:
                    yield
                finally:
                    lock.release()
                return
            time.sleep(0.2)

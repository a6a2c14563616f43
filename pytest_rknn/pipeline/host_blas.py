"""The host's BLAS while a cold run converts: one thread.

The host's own numbers (inputs, references, metrics) are small products. With the BLAS's
default of one thread per core, its second thread spins on ``sched_yield`` after each of them,
on a core that a toolkit conversion or the exporter needs: 3.5 to 4.6 of the host's 14 CPU
seconds in a cold run of the default matrix (perf), for no gain in wall time, and under ``-n 2``
the toolkits pay for it. A :class:`BlasLimit` holds this process's BLAS libraries at one
thread (through threadpoolctl) until :meth:`BlasLimit.restore`. One thread sums in another
order: of the default matrix's metrics, 88 cells' moved in their last bit, no status did.
"""

from __future__ import annotations

from typing import Any


class BlasLimit:
    """This process's BLAS at one thread, until :meth:`restore` (idempotent)."""

    def __init__(self) -> None:
        import threadpoolctl

        self._limits: Any = threadpoolctl.threadpool_limits(limits=1, user_api="blas")

    def restore(self) -> None:
        """The BLAS threads this process had before."""
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None

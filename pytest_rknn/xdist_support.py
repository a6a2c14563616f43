"""pytest-rknn under pytest-xdist: which xdist worker runs which cells.

Owns :class:`XdistHooks` (registered by the plugin): with ``-n N`` (``--dist load``) cells go
to xdist workers in units of whole toolkits (:mod:`~pytest_rknn.pipeline.schedule`), so that
each toolkit's worker is started by as few xdist workers as may be; other ``--dist`` modes are
xdist's own. :func:`mine` tells an xdist worker's prefetcher which later cells are its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_rknn.pipeline.plan import CellSpec


def mine(config: pytest.Config, cells: list[CellSpec]) -> Any:
    """Under pytest-xdist with the plugin's scheduling, whether a cell is in the same unit as
    the one running now (so run by this process); None: every later cell is this process's."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    if config.getvalue("dist") != "load":
        return lambda current, cell: current.toolkit == cell.toolkit
    from pytest_rknn.pipeline.schedule import unit_names

    names = unit_names(cells, int(workerinput.get("workercount", 1)))
    return lambda current, cell: names.get(current.id) == names.get(cell.id)


class XdistHooks:
    """The controller's scheduling hook (``cells()``: the run's cells)."""

    def __init__(self, cells: Callable[[], Sequence[CellSpec]]) -> None:
        self.cells = cells

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """``-n N`` (``--dist load``): cells go to xdist workers in units of whole toolkits
        (:mod:`~pytest_rknn.pipeline.schedule`); other ``--dist`` modes are xdist's own."""
        if config.getvalue("dist") != "load":
            return None
        from pytest_rknn.pipeline.schedule import make_scheduling

        return make_scheduling(config, log, self.cells)

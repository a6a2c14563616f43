"""The per-process state of a run: settings, toolkit environments, workers, materials, cache.

Each pytest process (the only one, or each xdist worker) has one :class:`RknnSession`, made on
the first cell it runs and closed at the end of the session (its workers stopped). Given the
cells the process will run (:meth:`RknnSession.plan`), its first cache miss starts the
:class:`~pytest_rknn.pipeline.prefetch.Prefetcher` on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_rknn.envs.registry import Toolkits
from pytest_rknn.pipeline import host_blas
from pytest_rknn.pipeline.cache import ResultCache
from pytest_rknn.pipeline.materials import Materials
from pytest_rknn.pipeline.prefetch import Prefetcher
from pytest_rknn.toolkit.pool import WorkerPool
from pytest_rknn.variants.families import FamilySpec
from pytest_rknn.variants.spec import VariantSpec

if TYPE_CHECKING:
    from pytest_rknn.pipeline.plan import CellSpec
    from pytest_rknn.settings import Settings


@dataclass
class RknnSession:
    """What one pytest process needs to run cells."""

    settings: Settings
    workdir: Path
    toolkits: Toolkits
    cache: ResultCache
    materials: Materials = field(init=False)
    pool: WorkerPool = field(init=False)
    prefetcher: Prefetcher | None = field(init=False, default=None)
    blas: host_blas.BlasLimit | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.pool = WorkerPool(self.workdir, self.settings.limits)
        self.materials = Materials(
            workdir=self.workdir,
            seed=self.settings.seed,
            max_bytes=self.settings.limits.max_memory,
            torch_python=self.toolkits.torch_python,
            cache=self.cache,
            export_root=self.cache.folder("pytest-rknn-exports") or self.workdir / "exports",
        )

    @classmethod
    def create(
        cls,
        settings: Settings,
        workdir: Path,
        toolkits: Toolkits,
        pytest_cache: Any | None,
        export_specs: list[VariantSpec | FamilySpec],
    ) -> RknnSession:
        """``export_specs``: the run's specs whose models the exporter makes (exported in
        batches, the first time any of them is needed)."""
        cache = ResultCache(pytest_cache, enabled=settings.use_cache)
        session = cls(settings, workdir, toolkits, cache)
        families = [s for s in export_specs if isinstance(s, FamilySpec)]
        session.materials.export_specs = [s for s in export_specs if s not in families]
        session.materials.family_specs = families
        return session

    def python_for(self, version: str) -> tuple[Path | None, str | None]:
        """The interpreter of a usable environment (registered with the pool), or why not."""
        python, why = self.toolkits.python(version)
        if python is not None:
            self.pool.add(version, python, self.toolkits.worker_env(version))
        return python, why

    def plan(
        self,
        cells: Sequence[CellSpec],
        mine: Callable[[CellSpec, CellSpec], bool] | None = None,
    ) -> None:
        """The cells this process will run, in order (``mine``: see the prefetcher)."""
        from pytest_rknn.pipeline import run

        exports = None
        if any(c.needs_exporter for c in cells):
            exports = self.materials.prepare_exports
        self.prefetcher = Prefetcher(
            cells,
            self.pool,
            probe=lambda cell: run.needs_job(cell, self),
            warm=lambda cell: run.warm_reference(cell, self),
            exports=exports,
            mine=mine,
        )

    def running(self, cell: CellSpec) -> None:
        """``cell`` runs now."""
        if self.prefetcher is not None:
            self.prefetcher.running(cell)

    def missed(self, cell: CellSpec) -> None:
        """``cell``'s conversion is not cached: its worker is about to be needed, and so,
        probably, the next cells' workers, models and references. From now until
        :meth:`close`, the host's BLAS runs one thread (:mod:`.host_blas`)."""
        if self.blas is None:
            self.blas = host_blas.BlasLimit()
        if self.prefetcher is not None and not self.prefetcher.started:
            self.prefetcher.start(cell, own_version=cell.toolkit)

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.pool.close()
        if self.blas is not None:
            self.blas.restore()

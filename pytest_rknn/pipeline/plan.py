"""Which cells a run has: curated and drawn variants and user models, crossed with the targets.

The list is a pure function of the settings (same seed, same cells, in the same order, in every
process), which is what lets pytest-xdist's workers agree with each other on the collection.
With ``--rknn-shard K/N`` it is shard K's part of that list (:mod:`~pytest_rknn.pipeline.shard`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_rknn.pipeline.shard import select
from pytest_rknn.pipeline.subjects import Subject, VariantSubject
from pytest_rknn.variants.curated import curated_cases
from pytest_rknn.variants.strategies import draw_variants

if TYPE_CHECKING:
    from pytest_rknn.settings import Settings


@dataclass(frozen=True)
class CellSpec:
    """Where a subject is converted: the coordinates of one matrix cell."""

    subject: Subject
    platform: str
    toolkit: str
    quant: str

    @property
    def id(self) -> str:
        return f"{self.subject.id}-{self.platform}-{self.toolkit}-{self.quant}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.subject.id, self.platform, self.toolkit, self.quant)

    @property
    def needs_exporter(self) -> bool:
        """Whether building the subject's model runs the torch exporter."""
        return _exported(self.subject)


def subjects(settings: Settings) -> list[Subject]:
    """Named variants, curated ones, then drawn ones, then user models; each id once
    (``--rknn-only``: the named variants and user models alone)."""
    forms = settings.forms or None
    specs = list(settings.variants)
    if settings.curated and not settings.only:
        specs += [c.spec for c in curated_cases() if forms is None or c.spec.form in forms]
    if settings.examples and not settings.only:
        specs += draw_variants(settings.examples, settings.seed, settings.profile, forms=forms)
    found: dict[str, Subject] = {}
    for spec in specs:
        found.setdefault(spec.id, VariantSubject(spec))
    for model in settings.models:
        found.setdefault(model.id, model)
    return list(found.values())


def build_cells(settings: Settings) -> list[CellSpec]:
    """Every cell of the run (only its shard's with ``--rknn-shard``), toolkit by toolkit:
    one toolkit's worker is needed at a time (the next ones start while it works), a
    pytest-xdist worker given one toolkit's cells finds them together, and within a toolkit
    the subjects whose model the torch exporter makes come last (it runs meanwhile)."""
    found = subjects(settings)
    ordered = [s for s in found if not _exported(s)] + [s for s in found if _exported(s)]
    cells = [
        CellSpec(subject, platform, toolkit, quant)
        for toolkit in settings.toolkit_names
        for subject in ordered
        for platform in settings.platforms
        for quant in settings.quant
    ]
    return select(cells, settings.shard)


def _exported(subject: Subject) -> bool:
    spec = getattr(subject, "spec", None)
    return spec is not None and spec.form == "torch-export"

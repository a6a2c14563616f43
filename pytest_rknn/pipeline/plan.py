"""Which cells a run has: curated and drawn variants and user models, crossed with the targets.

The list is a pure function of the settings (same seed, same cells, in the same order, in every
process), which is what lets pytest-xdist's workers agree with each other on the collection.
With ``--rknn-shard K/N`` it is shard K's part of that list (:mod:`~pytest_rknn.pipeline.shard`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_rknn.pipeline.dynamic_variants import DynamicVariant, curated_dynamic_variant
from pytest_rknn.pipeline.shard import select
from pytest_rknn.pipeline.subjects import Subject, subject_of
from pytest_rknn.variants.curated import curated_cases, curated_families
from pytest_rknn.variants.families import FORM as HF_FORM
from pytest_rknn.variants.family_strategies import draw_families
from pytest_rknn.variants.strategies import draw_variants

if TYPE_CHECKING:
    from pytest_rknn.settings import Settings


EXPORTER_FORMS: frozenset[str] = frozenset({"torch-export", HF_FORM})
"""The forms whose models the exporter environment makes."""

HF_DRAWS_PER_CORE_DRAW = 8
"""With other forms in the run, one hf draw per this many ``--rknn-examples``."""


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
    """Named variants, curated ones, then drawn ones, then the curated dynamic-length attention
    row (:mod:`.dynamic_variants`), then user models; each id once (``--rknn-only``: the named
    variants and user models alone).

    Whole models (the ``hf`` form) come after the attention variants: their curated rows, then
    ``--rknn-examples`` draws when hf is the only form asked for, else one per
    :data:`HF_DRAWS_PER_CORE_DRAW`."""
    forms = settings.forms or None
    cores = [f for f in forms if f != HF_FORM] if forms else None
    families = forms is None or HF_FORM in forms
    specs: list = list(settings.variants)
    if not settings.only:
        if settings.curated and cores != []:
            specs += [c.spec for c in curated_cases() if cores is None or c.spec.form in cores]
        if settings.examples and cores != []:
            specs += draw_variants(settings.examples, settings.seed, settings.profile, cores)
        if settings.curated and families:
            specs += [c.spec for c in curated_families(settings.profile)]
        if settings.examples and families:
            n = settings.examples if cores == [] else settings.examples // HF_DRAWS_PER_CORE_DRAW
            specs += draw_families(n, settings.seed, settings.profile)
    found: dict[str, Subject] = {}
    for spec in specs:
        found.setdefault(spec.id, spec if isinstance(spec, DynamicVariant) else subject_of(spec))
    if not settings.only and settings.curated and (cores is None or "manual" in cores):
        row = curated_dynamic_variant(settings.profile)
        found.setdefault(row.id, row)
    for model in settings.models:
        found.setdefault(model.id, model)
    return list(found.values())


def build_cells(settings: Settings) -> list[CellSpec]:
    """Every cell of the run (only its shard's with ``--rknn-shard``), toolkit by toolkit:
    one toolkit's worker is needed at a time (the next ones start while it works) and a
    pytest-xdist worker given one toolkit's cells finds them together. The subjects whose
    model the torch exporter makes come after all the others, toolkit by toolkit again: the
    exporter's batches (tens of seconds) run while every toolkit converts the rest, instead of
    holding up the first toolkit's cells."""
    found = subjects(settings)
    passes = ([s for s in found if not _exported(s)], [s for s in found if _exported(s)])
    cells = [
        CellSpec(subject, platform, toolkit, quant)
        for group in passes
        for toolkit in settings.toolkit_names
        for subject in group
        for platform in settings.platforms
        for quant in settings.quant
    ]
    return select(cells, settings.shard, settings.shard_costs)


def _exported(subject: Subject) -> bool:
    spec = getattr(subject, "spec", None)
    return spec is not None and spec.form in EXPORTER_FORMS

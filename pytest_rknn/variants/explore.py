"""Search and shrink: find the minimal variant for which a predicate holds ("fails").

``find_minimal`` hands ``generated_specs`` (attention variants, whole models, or both, by
``forms``) to hypothesis, treats ``predicate(spec) is True``
as a failure, lets hypothesis shrink it, and returns the minimal spec it reports. Nothing is
written to an example database. The caller prints the spec's id and how to re-run it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from .families import FamilySpec
from .family_strategies import generated_specs
from .spec import FORMS, VariantSpec


class _Found(Exception):
    """Raised inside the search when the predicate holds, so that hypothesis shrinks it."""


def find_minimal(
    predicate: Callable[[VariantSpec | FamilySpec], bool],
    *,
    profile: str = "ci",
    seed: int = 0,
    max_examples: int = 200,
    forms: Sequence[str] | None = None,
) -> VariantSpec | FamilySpec | None:
    """The minimal spec (in hypothesis' shrink order) for which ``predicate`` is True.

    Returns None when none of ``max_examples`` generated specs satisfies it. An exception
    raised by the predicate propagates (after hypothesis has shrunk it too); a predicate
    that answers differently for the same spec makes hypothesis raise ``Flaky``.
    """
    if max_examples < 1:
        raise ValueError(f"max_examples={max_examples} must be >= 1")
    hits: list[VariantSpec | FamilySpec] = []

    @hypothesis_seed(seed)
    @settings(
        database=None,
        max_examples=max_examples,
        deadline=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
    )
    @given(generated_specs(profile, forms or FORMS))
    def search(spec: VariantSpec | FamilySpec) -> None:
        if predicate(spec):
            hits.append(spec)
            raise _Found(spec.id)

    try:
        search()
    except _Found:
        return hits[-1]
    return None

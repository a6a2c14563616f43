"""Search and shrink: find the minimal variant for which a predicate holds ("fails").

``find_minimal`` hands ``variant_specs`` to hypothesis, treats ``predicate(spec) is True``
as a failure, lets hypothesis shrink it, and returns the minimal spec it reports. Nothing is
written to an example database. The caller prints the spec's id and how to re-run it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from .spec import VariantSpec
from .strategies import variant_specs


class _Found(Exception):
    """Raised inside the search when the predicate holds, so that hypothesis shrinks it."""


def find_minimal(
    predicate: Callable[[VariantSpec], bool],
    *,
    profile: str = "ci",
    seed: int = 0,
    max_examples: int = 200,
    forms: Sequence[str] | None = None,
) -> VariantSpec | None:
    """The minimal spec (in hypothesis' shrink order) for which ``predicate`` is True.

    Returns None when none of ``max_examples`` generated specs satisfies it. An exception
    raised by the predicate propagates (after hypothesis has shrunk it too); a predicate
    that answers differently for the same spec makes hypothesis raise ``Flaky``.
    """
    if max_examples < 1:
        raise ValueError(f"max_examples={max_examples} must be >= 1")
    hits: list[VariantSpec] = []

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
    @given(variant_specs(profile, forms))
    def search(spec: VariantSpec) -> None:
        if predicate(spec):
            hits.append(spec)
            raise _Found(spec.id)

    try:
        search()
    except _Found:
        return hits[-1]
    return None

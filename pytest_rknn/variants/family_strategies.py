"""Hypothesis strategies and deterministic draws over the ``hf`` form's configs.

Like :mod:`~pytest_rknn.variants.strategies`, each piece is a choice program
(``choose_family_spec``) run either by hypothesis (``family_specs``: search and shrinking, the
simplest value of every choice first: BERT, eager, batch 1, one layer, the smallest width, no
mask, default init, TorchScript) or by a SHA-256 stream (``draw_families``: the same list in
every process). ``generated_specs(profile, forms)`` composes them with ``variant_specs`` for a
search over several forms at once.

Size profiles: ``ci`` keeps models tiny (hidden 32-64, up to 4 heads, 32 tokens); ``full``
goes to hidden 256, 8 heads and 256 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from .families import (
    ATTN_IMPLEMENTATIONS,
    FAMILIES,
    FAMILY_EXPORTERS,
    FAMILY_MASKS,
    FORM,
    GQA_FAMILIES,
    INITS,
    TEXT_FAMILIES,
    FamilySpec,
)
from .strategies import Choose, HashStream, variant_specs


@dataclass(frozen=True)
class FamilySize:
    """Bounds of one size profile for whole models."""

    hidden: tuple[int, ...]
    heads: tuple[int, ...]
    seq_lens: tuple[int, ...]
    square_lens: tuple[int, ...]
    batches: tuple[int, ...]


FAMILY_PROFILES: dict[str, FamilySize] = {
    "ci": FamilySize(
        hidden=(32, 48, 64),
        heads=(1, 2, 4),
        seq_lens=(4, 8, 16, 32),
        square_lens=(4, 9, 16),
        batches=(1, 2),
    ),
    "full": FamilySize(
        hidden=(32, 64, 128, 256),
        heads=(1, 2, 4, 8),
        seq_lens=(8, 16, 64, 128, 256),
        square_lens=(4, 16, 64, 196),
        batches=(1, 2, 4),
    ),
}


def _size(profile: str) -> FamilySize:
    if profile not in FAMILY_PROFILES:
        raise ValueError(
            f"profile={profile!r} is not one of {', '.join(map(repr, FAMILY_PROFILES))}"
        )
    return FAMILY_PROFILES[profile]


def choose_family_spec(
    choose: Choose, size: FamilySize, families: Sequence[str] = FAMILIES
) -> FamilySpec:
    """One valid spec; every call makes the same choices in the same order."""
    family = choose(families)
    attn = choose(ATTN_IMPLEMENTATIONS)
    batch = choose(size.batches)
    layers = choose((1, 2))
    heads = choose(size.heads)
    hidden = choose([h for h in size.hidden if h % heads == 0 and (h // heads) % 2 == 0])
    kv_options = [k for k in range(heads, 0, -1) if heads % k == 0]
    kv_heads = choose(kv_options)
    if family not in GQA_FAMILIES:
        kv_heads = heads
    seq_len = choose(size.square_lens if family == "vit" else size.seq_lens)
    mask = choose(FAMILY_MASKS)
    if family not in TEXT_FAMILIES:
        mask = "none"
    return FamilySpec(
        family=family,
        attn=attn,
        batch=batch,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        seq_len=seq_len,
        mask=mask,
        init=choose(INITS),
        exporter=choose(FAMILY_EXPORTERS),
    )


@st.composite
def _family_spec(draw: st.DrawFn, size: FamilySize) -> FamilySpec:
    return choose_family_spec(lambda options: draw(st.sampled_from(list(options))), size)


def family_specs(profile: str = "ci") -> st.SearchStrategy[FamilySpec]:
    """Valid ``FamilySpec`` values of a size profile."""
    return _family_spec(_size(profile))


def generated_specs(profile: str, forms: Sequence[str]) -> st.SearchStrategy:
    """Specs of every form in ``forms``: attention cores, whole models (``hf``), or both."""
    cores = [f for f in forms if f != FORM]
    parts = [variant_specs(profile, cores)] if cores else []
    if FORM in forms:
        parts.append(family_specs(profile))
    if not parts:
        raise ValueError("forms must name at least one form")
    return st.one_of(parts)


def draw_families(n: int, seed: int, profile: str = "ci") -> list[FamilySpec]:
    """``n`` distinct hf specs, the same for the same arguments in any process; families take
    turns so that a small ``n`` still spreads over them."""
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    size = _size(profile)
    found: dict[str, FamilySpec] = {}
    for attempt in range(50 * n):
        if len(found) >= n:
            break
        stream = HashStream(f"{seed}:{profile}:hf:{attempt}")
        wanted = FAMILIES[len(found) % len(FAMILIES)]
        spec = choose_family_spec(stream, size, [wanted])
        found.setdefault(spec.id, spec)
    return list(found.values())

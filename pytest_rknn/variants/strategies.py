"""Hypothesis strategies over the variant space, size profiles, and deterministic draws.

Strategies are small and composable (``head_configs``, ``lengths``, ``masks``, ...) and
``variant_specs(profile, forms)`` composes them into valid ``VariantSpec`` values only.
Every choice lists its simplest value first, so hypothesis shrinks towards batch 1, one
head, short sequences, the smallest head dim, no mask, float32, default scale, ``bhsd``.

Size profiles (not to be confused with hypothesis *settings* profiles, see
``register_profiles``):

- ``ci``: sequences up to 128, at most 8 heads and head dim 128, batch <= 2: every variant
  converts in well under a second;
- ``full``: sequences up to 16384, 32 heads, head dim 256, batch 4, under a memory budget
  (``estimate_memory_bytes`` <= 8 GiB) enforced by construction, not by filtering.

Each piece is a *choice program* (``choose_*``) written once against a ``choose(options)``
callable: ``variant_specs`` runs it with hypothesis' ``sampled_from`` (search, shrinking),
``draw_variants(n, seed, profile, forms)`` with a SHA-256 stream (a plain list, the same in
every process), so both walk exactly the same space.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from .spec import DTYPES, EXPORTERS, FORMS, LAYOUTS, MASK_SHAPES, MASKS, VariantSpec

T = TypeVar("T")

HOST_FORMS: tuple[str, ...] = tuple(f for f in FORMS if f != "torch-export")


@dataclass(frozen=True)
class SizeProfile:
    """Bounds of one size profile."""

    name: str
    batches: tuple[int, ...]
    heads: tuple[int, ...]
    head_dims: tuple[int, ...]
    lengths: tuple[int, ...]
    max_memory_bytes: int


PROFILES: dict[str, SizeProfile] = {
    "ci": SizeProfile(
        name="ci",
        batches=(1, 2),
        heads=(1, 2, 4, 8),
        head_dims=(8, 16, 24, 32, 40, 48, 64, 80, 96, 100, 112, 128),
        lengths=(1, 2, 3, 7, 8, 16, 17, 31, 32, 50, 64, 77, 96, 100, 127, 128),
        max_memory_bytes=256 * 2**20,
    ),
    "full": SizeProfile(
        name="full",
        batches=(1, 2, 4),
        heads=(1, 2, 4, 6, 8, 12, 16, 20, 32),
        head_dims=(16, 32, 48, 64, 72, 80, 96, 112, 128, 160, 192, 256),
        lengths=(1, 16, 64, 77, 128, 196, 256, 384, 512, 577, 1024, 1500, 2048, 4096, 8192, 16384),
        max_memory_bytes=8 * 2**30,
    ),
}

EXPLICIT_SCALES: tuple[float, ...] = (1.0, 0.5, 0.125, 0.1, 0.0625, 0.05)


def estimate_memory_bytes(spec: VariantSpec) -> int:
    """Rough peak working set of one float inference of the spec's graph, in bytes.

    Inputs and output, three score-sized tensors (scores, masked scores, softmax; kept in
    float32 where the exporter promotes float16), a constant causal mask where the form
    holds one, and the ``mha-block`` weights. Toolkits can need far more (FINDINGS: RSS
    past 19 GB converting one 8192-long head with toolkit 2.2.0).
    """
    elem = 2 if spec.dtype == "float16" else 4
    io = sum(_volume(s) for s in spec.input_shapes().values()) + _volume(spec.output_shape())
    score_elem = 4 if spec.form in ("torch-sdpa", "torch-export") else elem
    scores = spec.batch * spec.num_heads * spec.q_len * spec.kv_len * score_elem * 3
    constant = spec.q_len * spec.kv_len * elem if spec.mask == "causal" else 0
    embed = spec.num_heads * spec.head_dim
    weights = 4 * embed * embed * elem if spec.form == "mha-block" else 0
    return io * elem + scores + constant + weights


def _volume(shape: Sequence[int]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _profile(profile: str) -> SizeProfile:
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not one of {', '.join(map(repr, PROFILES))}")
    return PROFILES[profile]


def _forms(forms: Sequence[str] | None) -> tuple[str, ...]:
    chosen = tuple(forms) if forms is not None else FORMS
    unknown = [f for f in chosen if f not in FORMS]
    if unknown or not chosen:
        raise ValueError(
            f"forms={list(chosen)!r} must be a non-empty subset of {', '.join(map(repr, FORMS))}"
        )
    return chosen


Choose = Callable[[Sequence[T]], T]


def choose_head_config(choose: Choose, heads: Sequence[int]) -> tuple[int, int]:
    """(num_heads, num_kv_heads), kv heads a divisor of heads, all heads (MHA) first."""
    num_heads = choose(sorted(heads))
    return num_heads, choose([d for d in range(num_heads, 0, -1) if num_heads % d == 0])


def choose_lengths(choose: Choose, choices: Sequence[int]) -> tuple[int, int]:
    """(q_len, kv_len) of a self-attention, a single-token decode or a cross-attention."""
    ordered = sorted(choices)
    kind = choose(("self", "decode", "cross"))
    kv_len = choose(ordered)
    other = choose([n for n in ordered if n != kv_len] or ordered)
    if kind == "cross" and other != kv_len:
        return other, kv_len
    if kind == "decode":
        return 1, kv_len
    return kv_len, kv_len


def choose_mask(
    choose: Choose, q_len: int, kv_len: int, attention_op: bool = False
) -> tuple[str, str]:
    """(mask, mask_shape); a causal draw on unequal lengths becomes no mask."""
    kind = choose(MASKS)
    if kind == "causal" and q_len != kv_len:
        kind = "none"
    shapes = [s for s in MASK_SHAPES[kind] if not (attention_op and s and "q" not in s)]
    return kind, choose(shapes)


def choose_scale(choose: Choose) -> float | None:
    """None (1/sqrt(head_dim)) half the time, else one of ``EXPLICIT_SCALES``."""
    explicit = choose((False, True))
    value = choose(EXPLICIT_SCALES)
    return value if explicit else None


def choose_spec(choose: Choose, size: SizeProfile, forms: Sequence[str]) -> VariantSpec:
    """One spec; every call makes the same number of choices in the same order, which lets
    hypothesis shrink any one of them without shifting the others."""
    form = choose(forms)
    exporter = choose(EXPORTERS)
    q_len, kv_len = choose_lengths(choose, size.lengths)
    fitting = [h for h in size.heads if _fits(size, form, 1, h, q_len, kv_len)] or [1]
    num_heads, num_kv_heads = choose_head_config(choose, fitting)
    batches = [b for b in size.batches if _fits(size, form, b, num_heads, q_len, kv_len)]
    batch = choose(batches or [1])
    head_dim = choose(size.head_dims)
    attention_op = form == "onnx-attention" or (
        form == "torch-export" and exporter == "dynamo-opset23"
    )
    mask, mask_shape = choose_mask(choose, q_len, kv_len, attention_op)
    dtype = choose(DTYPES)
    scale = choose_scale(choose)
    layout = choose(LAYOUTS)
    return VariantSpec(
        form=form,
        batch=batch,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        q_len=q_len,
        kv_len=kv_len,
        head_dim=head_dim,
        mask=mask,
        mask_shape=mask_shape,
        dtype=dtype,
        scale=scale,
        layout="bshd" if form == "mha-block" else layout,
        exporter=exporter if form == "torch-export" else "",
    )


def _fits(size: SizeProfile, form: str, batch: int, heads: int, q_len: int, kv_len: int) -> bool:
    """Whether every spec with these sizes fits the profile's memory budget, whatever its
    head dim, mask or dtype (the worst cases: largest head dim, a score-sized mask)."""
    probe = VariantSpec(
        form="manual" if form == "torch-export" else form,
        batch=batch,
        num_heads=heads,
        num_kv_heads=heads,
        q_len=q_len,
        kv_len=kv_len,
        head_dim=max(size.head_dims),
        mask="additive",
        mask_shape="bhqk",
        layout="bshd",
    )
    worst = estimate_memory_bytes(probe)
    if q_len == kv_len:
        worst = max(worst, estimate_memory_bytes(probe.replace(mask="causal", mask_shape="")))
    return worst <= size.max_memory_bytes


def _as_strategy(program: Callable[..., T], *args: object) -> st.SearchStrategy[T]:
    @st.composite
    def build(draw: st.DrawFn) -> T:
        return program(lambda options: draw(st.sampled_from(list(options))), *args)

    return build()


def head_configs(heads: Sequence[int]) -> st.SearchStrategy[tuple[int, int]]:
    """(num_heads, num_kv_heads): multi-head, grouped-query or multi-query."""
    return _as_strategy(choose_head_config, heads)


def lengths(choices: Sequence[int]) -> st.SearchStrategy[tuple[int, int]]:
    """(q_len, kv_len): self-attention, single-token decode, or cross-attention."""
    return _as_strategy(choose_lengths, choices)


def masks(
    q_len: int, kv_len: int, attention_op: bool = False
) -> st.SearchStrategy[tuple[str, str]]:
    """(mask, mask_shape) valid for the lengths (causal only when q_len == kv_len).

    onnxruntime (checked with 1.32) rejects an ``Attention`` mask without a query axis,
    so graphs holding the ONNX ``Attention`` operator (``attention_op``: the
    ``onnx-attention`` form, torch's ``dynamo-opset23`` export) draw none: a ``b11k`` mask
    there is buildable but has no host reference run.
    """
    return _as_strategy(choose_mask, q_len, kv_len, attention_op)


def scales() -> st.SearchStrategy[float | None]:
    """None (1/sqrt(head_dim)) or an explicit scale of the kind real models pass."""
    return _as_strategy(choose_scale)


def variant_specs(
    profile: str = "ci", forms: Sequence[str] | None = None
) -> st.SearchStrategy[VariantSpec]:
    """Valid ``VariantSpec`` values of ``forms`` (default: all ``FORMS``) in a size profile.

    Pass ``forms=HOST_FORMS`` to leave out ``torch-export``, which needs a torch interpreter.
    """
    return _as_strategy(choose_spec, _profile(profile), _forms(forms))


class HashStream:
    """Choices from SHA-256 of (seed, counter): the same on every Python, numpy, hypothesis."""

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self._counter = 0

    def __call__(self, options: Sequence[T]) -> T:
        options = list(options)
        digest = hashlib.sha256(f"{self._seed}:{self._counter}".encode()).digest()
        self._counter += 1
        return options[int.from_bytes(digest[:8], "little") % len(options)]


def draw_variants(
    n: int, seed: int, profile: str = "ci", forms: Sequence[str] | None = None
) -> list[VariantSpec]:
    """``n`` distinct variants, the same list for the same arguments in any process.

    Forms (default: all ``FORMS``) take turns, round-robin in the order given, so a small
    ``n`` covers them all.
    The draws make the same choices as ``variant_specs`` but from a SHA-256 stream rather
    than hypothesis' engine, whose draws depend on its version and on the constants of the
    local modules loaded in the process: the list is then stable across machines, toolkit
    environments, xdist workers and library upgrades.
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    size = _profile(profile)
    chosen = _forms(forms)
    pools: list[list[VariantSpec]] = []
    per_form = -(-n // len(chosen))
    for form in chosen:
        choose = HashStream(f"{seed}:{profile}:{form}")
        found: dict[str, VariantSpec] = {}
        for _ in range(per_form * 50):
            if len(found) >= per_form:
                break
            spec = choose_spec(choose, size, [form])
            found.setdefault(spec.id, spec)
        pools.append(list(found.values()))
    drawn = [pool[i] for i in range(per_form) for pool in pools if i < len(pool)]
    return drawn[:n]


def register_profiles() -> None:
    """Register hypothesis settings profiles ``dev`` and ``ci`` for the variant properties.

    ``dev``: 100 examples, printing blobs to reproduce. ``ci``: 500 examples, derandomized
    (the same examples on every run), no example database. Neither has a deadline: a model
    build and an onnxruntime run vary too much in time for one. Load one with
    ``--hypothesis-profile=ci`` or ``settings.load_profile("ci")``.
    """
    common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    settings.register_profile("dev", max_examples=100, print_blob=True, **common)
    settings.register_profile(
        "ci", max_examples=500, derandomize=True, database=None, print_blob=True, **common
    )

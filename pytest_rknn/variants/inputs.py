"""Deterministic model inputs for a variant: ``make_inputs(spec, seed, dist)``.

The generator is seeded from ``(spec.id, seed, dist)`` through SHA-256, so the arrays are the
same in every process and on every machine with the same numpy (numpy does not promise its
``Generator`` streams across versions): generate them on the host and ship them to the
toolkit side rather than regenerating them there.

Distributions of q, k and v (cast to the model's dtype at the end):

- ``normal``: unit normal;
- ``layernorm``: post-LayerNorm-like activations: each row of the last axis normalised to
  zero mean and unit variance, then a per-channel gain in [0.5, 1.5] and bias N(0, 0.1²),
  with a few outlier channels of gain 8 as large language models show;
- ``large``: normal with standard deviation 8: scores reach the thousands before scaling
  and stress a float16 softmax.

Masks: a boolean key-padding mask keeps a random-length prefix of at least one key per
batch row (True = attend); an additive mask is a N(0, 1) bias with the same padding written
as the dtype's lowest finite value. No score row is ever fully masked.

Calibration samples pad like real traffic instead (``make_inputs(..., sample=i)``): row ``r``
of sample ``i`` pads ``PADDING[(i + r) % 3]`` of its keys (none, a quarter, a half), so that
even a batch of one sees masked keys in some samples and none in others
(:func:`kept_lengths`, shared with the whole models' calibration).
"""

from __future__ import annotations

import hashlib

import numpy as np

from .graph import NP_DTYPE
from .spec import VariantSpec

DISTRIBUTIONS: tuple[str, ...] = ("normal", "layernorm", "large")
PADDING: tuple[float, ...] = (0.0, 0.25, 0.5)


def kept_lengths(rows: int, length: int, sample: int) -> np.ndarray:
    """How many leading positions each of ``rows`` keeps in calibration sample ``sample``:
    ``length`` less ``PADDING[(sample + row) % 3]`` of it, at least one."""
    pads = [PADDING[(sample + row) % len(PADDING)] for row in range(rows)]
    return np.array([max(1, length - int(pad * length)) for pad in pads], dtype=np.int64)


def _rng(spec: VariantSpec, seed: int, dist: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{spec.id}|{seed}|{dist}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _activations(rng: np.random.Generator, shape: tuple[int, ...], dist: str) -> np.ndarray:
    x = rng.standard_normal(shape)
    if dist == "large":
        return x * 8.0
    if dist == "layernorm":
        x = (x - x.mean(axis=-1, keepdims=True)) / (x.std(axis=-1, keepdims=True) + 1e-5)
        channels = shape[-1]
        gain = rng.uniform(0.5, 1.5, channels)
        outliers = rng.choice(channels, size=max(1, channels // 64), replace=False)
        gain[outliers] = 8.0
        return x * gain + rng.normal(0.0, 0.1, channels)
    return x


def _mask(rng: np.random.Generator, spec: VariantSpec, sample: int | None) -> np.ndarray:
    dims = spec.mask_dims()
    dims4 = (1,) * (4 - len(dims)) + dims
    rows = dims4[0]
    lengths = rng.integers(1, spec.kv_len + 1, size=rows)
    if sample is not None:
        lengths = kept_lengths(rows, spec.kv_len, sample)
    allowed = np.arange(spec.kv_len)[None, :] < lengths[:, None]
    allowed = np.broadcast_to(allowed.reshape(rows, 1, 1, spec.kv_len), dims4).reshape(dims)
    if spec.mask == "key-padding":
        return np.ascontiguousarray(allowed)
    dtype = NP_DTYPE[spec.dtype]
    bias = rng.standard_normal(dims)
    return np.where(allowed, bias, np.finfo(dtype).min).astype(dtype)


def make_inputs(
    spec: VariantSpec, seed: int, dist: str = "normal", sample: int | None = None
) -> dict[str, np.ndarray]:
    """Inputs named as the model's (q, k, v[, mask]), deterministic per (spec.id, seed, dist);
    ``sample``: calibration sample ``sample``'s (its mask padded like traffic, see above)."""
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist={dist!r} is not one of {', '.join(map(repr, DISTRIBUTIONS))}")
    rng = _rng(spec, seed, dist)
    dtype = NP_DTYPE[spec.dtype]
    shapes = spec.input_shapes()
    arrays = {n: _activations(rng, shapes[n], dist).astype(dtype) for n in ("q", "k", "v")}
    if spec.mask_is_input:
        arrays["mask"] = _mask(rng, spec, sample)
    return arrays

"""The Rockchip targets the suite knows, and the quantization modes a cell can use.

The platform names are the ones rknn-toolkit2 2.x accepts as ``target_platform`` (read from the
toolkit's own platform table). Platforms whose NPU has no float path reject a non-quantized build:
their fp16 cells are ``unsupported`` rather than run.
"""

from __future__ import annotations

from dataclasses import dataclass

PLATFORMS: tuple[str, ...] = (
    "rk2118",
    "rk3562",
    "rk3566",
    "rk3568",
    "rk3576",
    "rk3588",
    "rv1103",
    "rv1103b",
    "rv1106",
    "rv1106b",
    "rv1126b",
)
DEFAULT_PLATFORMS: tuple[str, ...] = ("rk3566", "rk3588")
# build(do_quantization=False) answers "Current target_platform(rv1106) not support
# do_quantization = False!" on these (measured with 2.3.2).
REQUIRES_QUANTIZATION: frozenset[str] = frozenset({"rv1103", "rv1103b", "rv1106", "rv1106b"})


@dataclass(frozen=True)
class QuantMode:
    """How a cell is built: the toolkit's build/config options for one ``--rknn-quant`` name.

    ``hybrid``: int8 through the toolkit's hybrid flow (``hybrid_quantization_step1``, the
    attention layers set to float16 in its quantization config, ``hybrid_quantization_step2``)
    instead of ``build``.
    """

    name: str
    do_quantization: bool
    config: tuple[tuple[str, str], ...] = ()
    hybrid: bool = False


W8A8 = (("quantized_dtype", "w8a8"),)
QUANT_MODES: dict[str, QuantMode] = {
    "fp16": QuantMode("fp16", False, (("float_dtype", "float16"),)),
    "int8": QuantMode("int8", True, W8A8),
    "int8-mmse": QuantMode("int8-mmse", True, (*W8A8, ("quantized_algorithm", "mmse"))),
    "int8-kl": QuantMode("int8-kl", True, (*W8A8, ("quantized_algorithm", "kl_divergence"))),
    "hybrid": QuantMode("hybrid", True, W8A8, hybrid=True),
}


class PlatformError(ValueError):
    """An unknown platform or quantization mode; the message lists the known ones."""


def parse_platforms(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    if not names:
        raise PlatformError("--rknn-platforms is empty: name at least one, e.g. rk3566,rk3588")
    unknown = [p for p in names if p not in PLATFORMS]
    if unknown:
        raise PlatformError(
            f"unknown platform {', '.join(unknown)!s}: rknn-toolkit2 accepts {', '.join(PLATFORMS)}"
        )
    return names


def parse_quant(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(q.strip().lower() for q in text.split(",") if q.strip()))
    unknown = [q for q in names if q.split("+", 1)[0] not in QUANT_MODES]
    if unknown or not names:
        raise PlatformError(
            f"unknown quantization mode {', '.join(unknown) or '(none)'}: "
            f"use one or more of {', '.join(QUANT_MODES)}"
        )
    return names


def base_quant(mode: str) -> str:
    """The quantization mode of a build mode name (``fp16+optimization_level:2`` -> ``fp16``)."""
    return mode.split("+", 1)[0]


def unsupported_reason(platform: str, quant: str) -> str | None:
    """Why a (platform, quant) pair cannot apply, or None."""
    if platform in REQUIRES_QUANTIZATION and not QUANT_MODES[base_quant(quant)].do_quantization:
        return f"{platform} has no float path: it needs a quantized build (use --rknn-quant int8)"
    return None

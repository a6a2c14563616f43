"""Toolkit ``config()`` options as a matrix axis: ``--rknn-config KEY=VALUE`` and build modes.

A cell's ``quant`` is its *build mode*: the quantization mode, then each extra ``config()``
option as ``+key:value`` (sorted by key), e.g. ``fp16+optimization_level:2`` or
``fp16+disable_rules:fuse_a/fuse_b``. The name is readable, safe in ``-k`` expressions and ids,
and reads back as the same mode (``--rknn-quant fp16+optimization_level:2`` is the same cell as
``--rknn-quant fp16 --rknn-config optimization_level=2``), so re-run commands and merged
matrices keep working.

``--rknn-config KEY=V1|V2`` fans out: every combination of the values given becomes one mode per
quantization mode. Keys are checked against :data:`CONFIG_KEYS`, what each toolkit version's
``config()`` accepts (read from its ``Valid input is [...]`` answer): a key no version accepts
is a usage error; a key that one version lacks makes that version's cells ``unsupported``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ConfigValue = bool | int | float | str | list[str]

_COMMON = [
    "mean_values",
    "std_values",
    "quantized_dtype",
    "quantized_algorithm",
    "quantized_method",
    "quantized_hybrid_level",
    "target_platform",
    "quant_img_RGB2BGR",
    "float_dtype",
    "optimization_level",
    "custom_string",
    "remove_weight",
    "compress_weight",
    "inputs_yuv_fmt",
    "single_core_mode",
    "dynamic_input",
    "model_pruning",
    "op_target",
    "quantize_weight",
    "remove_reshape",
    "sparse_infer",
    "enable_flash_attention",
    "output_optimize",
    "set_op_attr",
    "sram_prefer",
    "check_data",
]
_V230 = (*_COMMON, "nbuf_prefer", "disable_rules")
_V232 = (
    *_V230,
    "auto_hybrid_cos_thresh",
    "auto_hybrid_euc_thresh",
    "stream_op",
    "enable_rnn_loop",
)
# What RKNN().config() of each version accepts (its "Valid input is [...]" list, 2026-12-01).
CONFIG_KEYS: dict[str, frozenset[str]] = {
    "2.2.0": frozenset(_COMMON),
    "2.3.0": frozenset(_V230),
    "2.3.2": frozenset(_V232),
    "2.5.0": frozenset(
        (
            *_V232,
            "mini_rknn",
            "memory_plan_strategy",
            "compute_order",
            "compiler_control_file",
            "enable_const_share",
            "enable_core0_only_mode",
            "disable_first_conv",
        )
    ),
}
KNOWN_KEYS: frozenset[str] = frozenset().union(*CONFIG_KEYS.values())
# Set by other axes: the platform and the quantization mode own them.
RESERVED: dict[str, str] = {
    "target_platform": "--rknn-platforms",
    "float_dtype": "--rknn-quant",
    "quantized_dtype": "--rknn-quant",
    "quantized_algorithm": "--rknn-quant",
}
# Options whose value is a list of names (written a/b in a mode name, ["a", "b"] or a/b here).
LIST_KEYS: frozenset[str] = frozenset({"disable_rules"})
_TOKEN = re.compile(r"^[A-Za-z0-9_.\-/]+$")


class ConfigError(ValueError):
    """A ``--rknn-config`` entry or a build mode name that cannot be used; names the fix."""


def _parse_value(key: str, text: str) -> ConfigValue:
    text = text.strip()
    if key in LIST_KEYS:
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise ConfigError(
                    f"--rknn-config {key}={text}: not a JSON list; write {key}=rule_a/rule_b"
                ) from None
        else:
            items = [part for part in text.split("/") if part]
        if not items or not all(isinstance(i, str) and _TOKEN.match(i) for i in items):
            raise ConfigError(f"--rknn-config {key}={text}: give rule names, e.g. {key}=fuse_a")
        return list(items)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if not text or not _TOKEN.match(text):
        raise ConfigError(
            f"--rknn-config {key}={text!r}: a value is a number, true/false, or a name of "
            "letters, digits and _ . - /"
        )
    return text


def _render(value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "/".join(value)
    return str(value)


def check_key(key: str) -> None:
    """A usage error for a key that no known toolkit version accepts, or another axis owns."""
    if key in RESERVED:
        raise ConfigError(f"--rknn-config {key}: set by {RESERVED[key]}, not by --rknn-config")
    if key not in KNOWN_KEYS:
        close = sorted(k for k in KNOWN_KEYS if k[:4] == key[:4] or key in k)
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        raise ConfigError(
            f"--rknn-config {key}: no rknn-toolkit2 version's config() accepts it{hint}; "
            f"known keys: {', '.join(sorted(KNOWN_KEYS - set(RESERVED)))}"
        )


def parse_entries(entries: Iterable[str]) -> list[dict[str, ConfigValue]]:
    """Every combination of ``KEY=V1|V2`` entries (``[{}]`` for none), keys checked."""
    axes: dict[str, list[ConfigValue]] = {}
    for entry in entries:
        key, sep, raw = entry.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(
                f"--rknn-config {entry!r}: write KEY=VALUE, or KEY=V1|V2 to fan out "
                "(e.g. optimization_level=2|3)"
            )
        check_key(key)
        if key in axes:
            raise ConfigError(f"--rknn-config {key} given twice: write {key}=V1|V2 once")
        values = [_parse_value(key, v) for v in raw.split("|")]
        axes[key] = list({json.dumps(v): v for v in values}.values())
    keys = sorted(axes)
    combos = itertools.product(*(axes[k] for k in keys))
    return [dict(zip(keys, combo, strict=True)) for combo in combos]


def mode_name(quant: str, config: Mapping[str, ConfigValue]) -> str:
    """``quant`` with each config option appended as ``+key:value``, sorted by key."""
    return quant + "".join(f"+{k}:{_render(config[k])}" for k in sorted(config))


def split_mode(name: str) -> tuple[str, dict[str, ConfigValue]]:
    """The quantization mode and the extra config options of a build mode name."""
    quant, *options = name.split("+")
    config: dict[str, ConfigValue] = {}
    for option in options:
        key, sep, raw = option.partition(":")
        if not sep:
            raise ConfigError(
                f"build mode {name!r}: {option!r} is not key:value (e.g. fp16+optimization_level:2)"
            )
        check_key(key)
        config[key] = _parse_value(key, raw)
    return quant, config


def build_modes(quants: Sequence[str], configs: Sequence[Mapping[str, ConfigValue]]) -> tuple:
    """Every (quantization mode x config combination) as a build mode name, in order; options
    that a mode names itself (``fp16+optimization_level:2``) win over the combinations."""
    names = []
    for quant in quants:
        base, own = split_mode(quant)
        for config in configs:
            names.append(mode_name(base, {**config, **own}))
    return tuple(dict.fromkeys(names))


def rejected_by(toolkit: str, mode: str) -> str | None:
    """Why ``toolkit``'s config() would refuse the mode's options (None: it accepts them, or
    the version is not in the table and its own answer will tell)."""
    keys = CONFIG_KEYS.get(toolkit)
    if keys is None:
        return None
    missing = sorted(set(split_mode(mode)[1]) - keys)
    if not missing:
        return None
    return f"rknn-toolkit2 {toolkit}'s config() does not accept {', '.join(missing)}"


def config_of(mode: str) -> dict[str, Any]:
    """The extra ``config()`` keyword arguments of a build mode."""
    return dict(split_mode(mode)[1])

"""``--rknn-config``: toolkit config() options as a matrix axis, and build mode names."""

from __future__ import annotations

import pytest

from pytest_rknn.pipeline.build_config import (
    CONFIG_KEYS,
    ConfigError,
    build_modes,
    config_of,
    mode_name,
    parse_entries,
    rejected_by,
    split_mode,
)
from pytest_rknn.verdict.tolerance import Bounds


def test_fan_out_gives_every_combination_per_quant_mode() -> None:
    configs = parse_entries(["optimization_level=2|3", "enable_flash_attention=true|false"])
    assert len(configs) == 4
    modes = build_modes(("fp16", "int8"), configs)
    assert len(modes) == 8 and len(set(modes)) == 8
    assert modes[0] == "fp16+enable_flash_attention:true+optimization_level:2"
    assert config_of(modes[0]) == {"enable_flash_attention": True, "optimization_level": 2}
    assert build_modes(("fp16",), parse_entries([])) == ("fp16",)


@pytest.mark.parametrize(
    "config",
    [
        {"optimization_level": 0},
        {"disable_rules": ["fuse_two_gather", "fuse_exmatmul_add"]},
        {"enable_flash_attention": False, "single_core_mode": True},
        {"compute_order": "WidthFirst"},
    ],
)
def test_a_mode_name_reads_back_as_the_same_mode(config: dict) -> None:
    name = mode_name("fp16", config)
    assert split_mode(name) == ("fp16", config)
    assert all(c.isalnum() or c in "+:_./-" for c in name), "-k and id safe"
    assert build_modes((name,), parse_entries([])) == (name,)


def test_a_modes_own_option_wins_over_the_fan_out() -> None:
    # A re-run command names the cell's mode; the ini's fan-out must not add cells to it.
    fanned = parse_entries(["optimization_level=2|3"])
    assert build_modes(("fp16+optimization_level:2",), fanned) == ("fp16+optimization_level:2",)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("optimisation_level=2", "no rknn-toolkit2 version's config() accepts it (did you mean"),
        ("target_platform=rk3588", "set by --rknn-platforms"),
        ("quantized_algorithm=mmse", "set by --rknn-quant"),
        ("optimization_level", "write KEY=VALUE"),
        ("optimization_level=", "write KEY=VALUE"),
        ("disable_rules=[1]", "give rule names"),
        ("disable_rules=[oops", "not a JSON list"),
        ("compute_order=a b", "a value is a number, true/false, or a name"),
    ],
)
def test_a_bad_entry_is_one_line_naming_the_fix(entry: str, says: str) -> None:
    with pytest.raises(ConfigError, match="^--rknn-config ") as info:
        parse_entries([entry])
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        parse_entries(["optimization_level=2", "optimization_level=3"])


def test_a_version_that_lacks_a_key_rejects_the_mode() -> None:
    mode = mode_name("fp16", {"disable_rules": ["fuse_a"]})
    assert (
        rejected_by("2.2.0", mode) == "rknn-toolkit2 2.2.0's config() does not accept disable_rules"
    )
    assert rejected_by("2.3.0", mode) is None and rejected_by("2.5.0", mode) is None
    assert rejected_by("1.6.0", mode) is None, "unknown versions answer for themselves"
    assert "disable_rules" not in CONFIG_KEYS["2.2.0"] and "mini_rknn" in CONFIG_KEYS["2.5.0"]


def test_bounds_of_a_build_mode_are_its_quantization_modes() -> None:
    assert Bounds.for_mode("fp16+optimization_level:2") == Bounds.for_mode("fp16")
    assert Bounds.for_mode("int8-mmse+optimization_level:0") == Bounds.for_mode("int8")

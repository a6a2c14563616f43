"""The documentation builds, and it names every option that exists and none that does not.

``mkdocs build --strict`` (the ``docs/`` folder, ``mkdocs.yml``) runs here, so a broken link or
a page missing from the navigation fails the tests. Every ``--rknn-*`` flag and ``rknn_*`` ini
key pytest lists in ``--help`` must be on ``docs/options.md``, and no page may name a flag that
is not registered; every option of each ``pytest-rknn`` subcommand must be in its section of
``docs/cli.md``, and that section may name no other.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_rknn.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FLAG = re.compile(r"--rknn-[a-z0-9]+(?:-[a-z0-9]+)*")
INI = re.compile(r"`(rknn_[a-z0-9_]+)`")
LONG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*|-[a-zA-Z])(?![\w-])")


def mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[dev]'")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d"]
    return subprocess.run([*command, str(site)], capture_output=True, text=True, timeout=120)


def test_the_docs_build_in_strict_mode(tmp_path: Path) -> None:
    built = mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "options" / "index.html").is_file()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "options.md", "a", encoding="utf-8") as page:
        page.write("\nSee [the old page](bounds-and-tolerances.md).\n")
    built = mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert "bounds-and-tolerances.md" in built.stderr


def registered(pytester: pytest.Pytester) -> tuple[set[str], set[str]]:
    """The ``--rknn-*`` flags and ``rknn_*`` ini keys pytest's ``--help`` lists."""
    shown = pytester.runpytest_subprocess("--help").stdout.lines
    flags = {m for line in shown if line.lstrip().startswith("--rknn-") for m in FLAG.findall(line)}
    inis = {line.split()[0] for line in shown if re.match(r"^\s+rknn_[a-z0-9_]+\s", line)}
    return flags, inis


def option_problems(flags: set[str], inis: set[str], options_page: str, pages: str) -> list[str]:
    """What the docs miss (registered, not on the options page) and what they name that is not
    registered (stale)."""
    problems = [
        f"missing from docs/options.md: {f}"
        for f in sorted(flags - set(FLAG.findall(options_page)))
    ]
    problems += [
        f"missing from docs/options.md: {k}" for k in sorted(inis - set(INI.findall(options_page)))
    ]
    problems += [f"stale (not registered): {f}" for f in sorted(set(FLAG.findall(pages)) - flags)]
    problems += [f"stale ini key: {k}" for k in sorted(set(INI.findall(options_page)) - inis)]
    return problems


def _pages() -> str:
    return "\n".join(
        p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *DOCS.glob("*.md")]
    )


def test_every_option_and_ini_key_is_documented_and_none_is_stale(
    pytester: pytest.Pytester,
) -> None:
    flags, inis = registered(pytester)
    assert "--rknn-model" in flags and "rknn_bounds_fp16" in inis  # the help was read
    options_page = (DOCS / "options.md").read_text(encoding="utf-8")
    assert option_problems(flags, inis, options_page, _pages()) == []


def test_a_stale_or_missing_option_name_is_reported(pytester: pytest.Pytester) -> None:
    flags, inis = registered(pytester)
    options_page = (DOCS / "options.md").read_text(encoding="utf-8")
    renamed = options_page.replace("--rknn-max-memory", "--rknn-memory-cap")
    renamed = renamed.replace("`rknn_seed`", "`rknn_random_seed`")
    assert option_problems(flags, inis, renamed, renamed) == [
        "missing from docs/options.md: --rknn-max-memory",
        "missing from docs/options.md: rknn_seed",
        "stale (not registered): --rknn-memory-cap",
        "stale ini key: rknn_random_seed",
    ]


def _subcommands() -> dict[str, set[str]]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {
        name: {o for a in command._actions for o in a.option_strings} - {"-h", "--help"}
        for name, command in sub.choices.items()
    }


def _section(text: str, name: str) -> str:
    found = re.search(rf"^## pytest-rknn {name}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert found is not None, f"docs/cli.md has no section '## pytest-rknn {name}'"
    return found.group(1)


def test_every_subcommand_option_is_documented_and_none_is_stale() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    problems = []
    for name, options in _subcommands().items():
        section = _section(text, name)
        named = set(LONG.findall(section))
        problems += [f"{name}: missing {o}" for o in sorted(options - named)]
        if name != "run":  # run passes pytest's own options through
            problems += [f"{name}: stale {o}" for o in sorted(named - options)]
    assert problems == []

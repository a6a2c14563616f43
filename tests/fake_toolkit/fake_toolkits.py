"""FAKE toolkit environments: a pytest plugin for tests of the pipeline and its fault handling.

Loaded with ``-p fake_toolkits`` (``tests/fake_toolkit`` on ``PYTHONPATH``), it answers the
plugin's ``pytest_rknn_make_toolkits`` hook with :class:`FakeToolkits`: every toolkit version
runs the FAKE ``rknn`` of ``tests/fake_toolkit/rknn`` in this interpreter, no environment is
built, and the matrix's environment descriptions say ``FAKE``. Nothing here stands in for
rknn-toolkit2 in a real matrix.

``FAKE_RKNN_MODE`` sets the fake's behaviour for every version (see ``rknn/api.py``);
``FAKE_RKNN_MODES="2.3.2=simulate;2.5.0=by-platform:rk3588=crash"`` sets it per version;
``FAKE_RKNN_BROKEN=2.2.0`` makes a version's environment unusable (env-error).
``FAKE_RKNN_DELAY``, ``FAKE_RKNN_GATE(_AT)``, ``FAKE_RKNN_MARKS``, ``FAKE_RKNN_ANALYSIS``,
``FAKE_RKNN_ONCE``, ``FAKE_RKNN_FAIL_SHAPE`` and ``FAKE_RKNN_SERVE_UNLISTED`` are passed on to
the workers (see ``rknn/api.py``).
``FAKE_RKNN_TORCH_PYTHON`` names the exporter interpreter (a test's FAKE one); else there is none.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FAKE_DIR = Path(__file__).resolve().parent


def _modes() -> dict[str, str]:
    text = os.environ.get("FAKE_RKNN_MODES", "")
    return dict(item.split("=", 1) for item in text.split(";") if "=" in item)


class FakeToolkits:
    """Toolkit "environments" that are this interpreter with the FAKE rknn on its path."""

    def __init__(self, versions: Iterable[str]) -> None:
        self.versions = list(versions)
        self.described: list[dict[str, Any]] = []
        self.provisioned: list[str] = []

    def mode(self, version: str) -> str:
        return _modes().get(version, os.environ.get("FAKE_RKNN_MODE", "simulate"))

    def broken(self, version: str) -> bool:
        return version in os.environ.get("FAKE_RKNN_BROKEN", "").split(",")

    def provision(self, versions: Iterable[str], exporter: bool) -> list[Any]:
        self.provisioned = list(versions)
        self.described = [
            {"kind": "FAKE toolkit", "version": v, "source": "FAKE", "mode": self.mode(v)}
            for v in self.provisioned
        ]
        return []

    def python(self, version: str) -> tuple[Path | None, str | None]:
        if self.broken(version):
            return None, f"toolkit {version} environment is broken: FAKE_RKNN_BROKEN says so"
        return Path(sys.executable), None

    def identity(self, version: str) -> dict[str, Any] | None:
        if self.broken(version):
            return None
        return {"kind": "FAKE", "version": version, "mode": self.mode(version)}

    def worker_env(self, version: str) -> dict[str, str]:
        env = {"PYTHONPATH": str(FAKE_DIR), "FAKE_RKNN_MODE": self.mode(version)}
        passed = ("DELAY", "GATE", "GATE_AT", "MARKS", "ANALYSIS", "ONCE")
        for name in (*passed, "FAIL_SHAPE", "SERVE_UNLISTED"):
            name = f"FAKE_RKNN_{name}"
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def torch_python(self) -> Path | None:
        named = os.environ.get("FAKE_RKNN_TORCH_PYTHON")  # a FAKE exporter interpreter
        return Path(named) if named else None


def pytest_rknn_make_toolkits(config: Any, settings: Any) -> FakeToolkits:
    return FakeToolkits(settings.toolkit_names)

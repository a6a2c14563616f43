"""Which rknn-toolkit2 versions the suite knows, and how each must be installed to really work.

Owns the recipe tables (the registry versions and the pins each needs beyond what its wheel
declares; the exporter environment's pins), the ``--toolkits`` syntax (``2.2.0,2.3.0``,
``all``, ``installed``, ``VERSION=PATH.whl``), checks of user-supplied wheel files, how torch
is supplied (:class:`TorchSpec`), and the derivation of a version's requirement list from its
wheel metadata.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import importlib.util
import itertools
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import sys_tags
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

DIST = "rknn-toolkit2"
DEFAULT_TORCH = "torch==2.13.0"
TORCH_ENV = "PYTEST_RKNN_TORCH"
TORCH_INDEX_ENV = "PYTEST_RKNN_TORCH_INDEX"

# "*" applies to every version, including wheels of versions not listed here; a version's own
# entry is applied on top. "pin" replaces the declared specifier, "cap" narrows it.
RECIPES: dict[str, dict[str, Any]] = {
    "*": {
        # `from rknn.api import RKNN` imports torch; the declared ranges resolve to multi-GB
        # CUDA builds, so torch comes from TorchSpec instead.
        "supplied": ["torch"],
        # opencv-python needs a GUI libGL at import.
        "replace": {"opencv-python": "opencv-python-headless"},
        # onnx 1.19 removed onnx.mapping, which load_onnx uses.
        "cap": {"onnx": "<=1.18.0", "onnxruntime": "<1.20"},
        # RKNN() needs pkg_resources.
        "add": ["setuptools<81"],
    },
    "2.2.0": {"pin": {}},
    "2.3.0": {"pin": {"onnx": "==1.18.0"}},
    "2.3.2": {"pin": {"onnx": "==1.18.0"}},
    "2.5.0": {"pin": {"onnx": "==1.18.0"}},
}

KNOWN_VERSIONS: tuple[str, ...] = tuple(v for v in RECIPES if v != "*")

# The exporter environment: torch (from TorchSpec) plus what `torch.onnx.export(dynamo=True)`
# needs, pinned to versions measured together with torch 2.13.0+cpu on all three exporters of
# pytest_rknn.variants.torch_export, and transformers for the hf form's models (built from
# configs, never downloaded), measured on every family of pytest_rknn.variants.families. It is
# free of the toolkits' caps (numpy<=1.26.4, onnx<=1.18.0): onnx is the host's, so models are
# written by the onnx that reads them.
EXPORTER_RECIPE: dict[str, Any] = {
    "pin": {
        "onnxscript": "==0.7.2",
        "onnx-ir": "==1.1.0",
        "ml-dtypes": "==0.6.0",
        "onnx": "==1.23.2",
        "numpy": "==2.4.6",
        "transformers": "==5.23.0",
        "huggingface-hub": "==2.4.0",
        "tokenizers": "==0.23.3",
        "safetensors": "==0.8.0",
    },
}


class ToolkitError(ValueError):
    """A bad ``--toolkits``/``--torch`` value or wheel file; the message names the fix."""


@dataclass(frozen=True)
class ToolkitRequest:
    """One toolkit the user asked for: a registry version, a wheel file, or the installed one."""

    version: str
    wheel: Path | None = None
    installed: bool = False

    @property
    def source(self) -> str:
        if self.installed:
            return "installed"
        return "wheel" if self.wheel else "registry"

    def __str__(self) -> str:
        if self.installed:
            return "installed"
        return f"{self.version}={self.wheel}" if self.wheel else self.version


def recipe_entry(version: str) -> dict[str, Any]:
    """The merged table entry for ``version`` (generic rules only for an unknown version)."""
    base = RECIPES["*"]
    own = RECIPES.get(version, {})
    return {
        "supplied": list(base["supplied"]),
        "replace": dict(base["replace"]),
        "cap": dict(base["cap"]),
        "pin": dict(own.get("pin", {})),
        "add": list(base["add"]) + list(own.get("add", [])),
    }


def exporter_requirements() -> list[str]:
    """The exporter environment's pinned requirements (torch excluded: :class:`TorchSpec`)."""
    return [f"{name}{spec}" for name, spec in EXPORTER_RECIPE["pin"].items()]


def _known_hint() -> str:
    return (
        f"known versions: {', '.join(KNOWN_VERSIONS)}, 'all' or 'installed'; "
        "for another release give VERSION=PATH.whl"
    )


def parse_toolkits(text: str) -> list[ToolkitRequest]:
    """Parse a ``--toolkits`` value into requests, one per toolkit version, in the given order."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ToolkitError(f"no toolkit versions given; {_known_hint()}")
    requests: list[ToolkitRequest] = []
    for item in items:
        if item == "all":
            requests.extend(ToolkitRequest(v) for v in KNOWN_VERSIONS)
        elif item == "installed":
            requests.append(installed_request())
        elif "==" in item:
            raise ToolkitError(
                f"{item!r}: give just the version, e.g. {item.rpartition('==')[2]!r}; "
                + _known_hint()
            )
        elif "=" in item:
            version, _, path = item.partition("=")
            version = _check_version_text(version.strip(), item)
            requests.append(ToolkitRequest(version, wheel=check_wheel(path.strip(), version, item)))
        elif item in KNOWN_VERSIONS:
            requests.append(ToolkitRequest(item))
        else:
            raise ToolkitError(f"unknown rknn-toolkit2 version {item!r}: {_known_hint()}")
    unique: dict[str, ToolkitRequest] = {}
    for request in requests:
        seen = unique.setdefault(request.version, request)
        if seen != request:
            raise ToolkitError(
                f"toolkit {request.version} is asked for twice ({seen} and {request}); "
                "name each version once"
            )
    return list(unique.values())


def _check_version_text(version: str, item: str) -> str:
    try:
        Version(version)
    except InvalidVersion:
        raise ToolkitError(
            f"{item!r}: {version!r} is not a version number; write VERSION=PATH.whl, "
            "e.g. 2.1.0=rknn_toolkit2-2.1.0-cp311-cp311-linux_x86_64.whl"
        ) from None
    return version


def installed_request() -> ToolkitRequest:
    """The toolkit importable in this interpreter, found without importing it."""
    try:
        version = importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None or importlib.util.find_spec("rknn") is None:
        raise ToolkitError(
            f"'installed': rknn-toolkit2 is not importable in {sys.executable}; install it "
            f"there or name versions to provision ({', '.join(KNOWN_VERSIONS)})"
        )
    return ToolkitRequest(version, installed=True)


def _wanted_tag() -> str:
    tags = list(itertools.islice(sys_tags(), 40))
    best = next((t for t in tags if t.platform.startswith("manylinux")), tags[0])
    return str(best)


def _check_wheel_file(path_text: str, item: str, project: str) -> tuple[Path, Version]:
    path = Path(path_text).expanduser()
    if not path.name.endswith(".whl"):
        raise ToolkitError(f"{item!r}: {path} is not a wheel file (.whl); give a path to a .whl")
    if not path.is_file():
        raise ToolkitError(f"wheel file not found: {path} (in {item!r}); check the path")
    try:
        name, version, _build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise ToolkitError(f"{item!r}: {path.name} is not a valid wheel file name: {exc}") from None
    if name != canonicalize_name(project):
        raise ToolkitError(f"{item!r}: {path.name} is a wheel of {name}, not {project}")
    if not tags & set(sys_tags()):
        have = ", ".join(sorted(str(t) for t in tags))
        raise ToolkitError(
            f"{path.name} is built for {have}, but this Python "
            f"({sys.implementation.name} {sys.version_info.major}.{sys.version_info.minor}) "
            f"needs a wheel tagged like {_wanted_tag()}; get the wheel for this Python and machine"
        )
    if not zipfile.is_zipfile(path):
        raise ToolkitError(f"{path} is not a valid wheel (not a zip archive); download it again")
    return path.resolve(), version


def check_wheel(path_text: str, version: str, item: str | None = None) -> Path:
    """Check that ``path_text`` is an rknn-toolkit2 ``version`` wheel this Python can install."""
    item = item or f"{version}={path_text}"
    path, wheel_version = _check_wheel_file(path_text, item, DIST)
    if wheel_version != Version(version):
        raise ToolkitError(
            f"{item!r}: the wheel is rknn-toolkit2 {wheel_version}, not {version}; "
            f"write {wheel_version}={path_text}"
        )
    return path


def derive_requirements(version: str, metadata: str) -> list[str]:
    """The requirements to install next to toolkit ``version`` (torch excluded).

    Starts from the wheel's own ``Requires-Dist`` and applies the recipe table: supplied
    packages dropped, replacements, per-version pins, generic caps, additions.
    """
    entry = recipe_entry(version)
    supplied = {canonicalize_name(n) for n in entry["supplied"]}
    replace = {canonicalize_name(k): v for k, v in entry["replace"].items()}
    pins = {canonicalize_name(k): v for k, v in entry["pin"].items()}
    caps = {canonicalize_name(k): v for k, v in entry["cap"].items()}
    message = email.parser.Parser().parsestr(metadata, headersonly=True)
    out: list[str] = []
    for line in message.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in supplied:
            continue
        name = replace.get(name, name)
        if name in pins:
            spec = SpecifierSet(pins[name])
        else:
            spec = req.specifier & SpecifierSet(caps.get(name, ""))
        out.append(f"{name}{spec}")
    out.extend(entry["add"])
    return out


@dataclass(frozen=True)
class TorchSpec:
    """How torch gets into a toolkit environment: a pip requirement or a wheel, and an index."""

    spec: str = DEFAULT_TORCH
    index: str | None = None

    @classmethod
    def resolve(cls, spec: str | None = None, index: str | None = None) -> TorchSpec:
        """From explicit values, else ``PYTEST_RKNN_TORCH``/``PYTEST_RKNN_TORCH_INDEX``, else
        the default; validated."""
        spec = (spec or os.environ.get(TORCH_ENV) or DEFAULT_TORCH).strip()
        index = (index or os.environ.get(TORCH_INDEX_ENV) or "").strip() or None
        if spec.endswith(".whl"):
            path, _ = _check_wheel_file(spec, f"--torch {spec}", "torch")
            spec = str(path)
        else:
            try:
                req = Requirement(spec)
            except InvalidRequirement:
                req = None
            if req is None or canonicalize_name(req.name) != "torch":
                raise ToolkitError(
                    f"--torch {spec!r} is neither a pip requirement for torch nor a path to a "
                    f"torch wheel; e.g. --torch {DEFAULT_TORCH!r} or --torch PATH/torch-...whl"
                )
        if index is not None and urlparse(index).scheme not in ("http", "https", "file"):
            raise ToolkitError(
                f"--torch-index {index!r} is not a URL; e.g. "
                "--torch-index https://download.pytorch.org/whl/cpu"
            )
        return cls(spec, index)

    def pip_args(self) -> list[str]:
        """Arguments for ``pip install`` that bring in torch."""
        args = [self.spec]
        if self.index:
            args += ["--extra-index-url", self.index]
        return args

    def key(self) -> dict[str, Any]:
        """What about this spec decides the environment's contents (for the recipe hash)."""
        key: dict[str, Any] = {"spec": self.spec, "index": self.index}
        path = Path(self.spec)
        if self.spec.endswith(".whl") and path.is_file():
            stat = path.stat()
            key["wheel"] = [stat.st_size, stat.st_mtime_ns]
        return key

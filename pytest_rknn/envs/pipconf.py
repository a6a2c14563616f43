"""Where pip finds packages on this machine, read as pip reads it, for an installer that is not.

``uv`` does not read pip's configuration. A machine whose CPU torch wheel lies in a local
folder that only pip's ``find-links`` names (or whose registry mirror only pip's ``index-url``
names) would make uv resolve torch from the public registry: a multi-GB CUDA build. Owns
:class:`PipSources` (index, extra indexes, find-links, constraints, certificate, proxy,
timeout) and :func:`pip_sources`, which reads them from pip's configuration files and
``PIP_*`` variables in pip's own order: global files (``$XDG_CONFIG_DIRS/pip/pip.conf``,
``/etc/pip.conf``), then user files (``~/.pip/pip.conf``, ``~/.config/pip/pip.conf``; skipped
when ``PIP_CONFIG_FILE`` names a file), then ``PIP_CONFIG_FILE``; in each, ``[global]`` then
``[install]``; ``PIP_<NAME>`` variables last. The last value found wins.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

KEYS = (
    "index-url",
    "extra-index-url",
    "find-links",
    "no-index",
    "constraint",
    "cert",
    "proxy",
    "timeout",
    "default-timeout",
    "trusted-host",
)
_SECTIONS = ("global", "install")


@dataclass(frozen=True)
class PipSources:
    """The package sources and transport settings pip would use for ``pip install``."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    constraints: tuple[str, ...] = ()
    cert: str | None = None
    proxy: str | None = None
    timeout: str | None = None
    trusted_hosts: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=(), compare=False)

    def uv_args(self) -> list[str]:
        """The same sources as ``uv pip install`` arguments (pip merges every index's
        candidates and takes the best version: uv's ``unsafe-best-match``)."""
        args = ["--index-strategy", "unsafe-best-match"]
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for path in self.constraints:
            args += ["--constraint", path]
        for host in self.trusted_hosts:
            args += ["--allow-insecure-host", host]
        return args

    def uv_environment(self) -> dict[str, str]:
        """Variables that give uv pip's certificate, proxy and timeout (unless already set)."""
        env: dict[str, str] = {}
        if self.cert and not os.environ.get("SSL_CERT_FILE"):
            env["SSL_CERT_FILE"] = self.cert
        if self.proxy:
            for name in ("HTTPS_PROXY", "HTTP_PROXY"):
                if not (os.environ.get(name) or os.environ.get(name.lower())):
                    env[name] = self.proxy
        if self.timeout and not os.environ.get("UV_HTTP_TIMEOUT"):
            env["UV_HTTP_TIMEOUT"] = self.timeout
        return env

    def describe(self) -> dict[str, object]:
        """What goes into an environment's marker: where its packages could come from."""
        return {
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls),
            "find_links": list(self.find_links),
            "no_index": self.no_index,
            "constraints": list(self.constraints),
        }


def config_files(environ: dict[str, str] | None = None) -> list[Path]:
    """pip's configuration files in the order pip reads them (later ones override)."""
    environ = dict(os.environ if environ is None else environ)
    named = environ.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    if not (named and Path(named).exists()):
        home = Path(environ.get("HOME") or Path.home())
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        files += [home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
    if named:
        files.append(Path(named))
    return files


def _read(files: list[Path]) -> tuple[dict[str, str], list[str]]:
    values: dict[str, dict[str, str]] = {section: {} for section in _SECTIONS}
    read: list[str] = []
    for path in files:
        parser = configparser.RawConfigParser()
        try:
            if not parser.read(path, encoding="utf-8"):
                continue
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        read.append(str(path))
        for section in _SECTIONS:
            if parser.has_section(section):
                for key, value in parser.items(section):
                    values[section][key.lower().replace("_", "-")] = value
    merged = {**values["global"], **values["install"]}
    return merged, read


def pip_sources(environ: dict[str, str] | None = None) -> PipSources:
    """What pip would use for ``pip install`` here, from its files and ``PIP_*`` variables."""
    environ = dict(os.environ if environ is None else environ)
    merged, read = _read(config_files(environ))
    for key in KEYS:
        value = environ.get("PIP_" + key.upper().replace("-", "_"))
        if value is not None:
            merged[key] = value

    def many(key: str) -> tuple[str, ...]:
        return tuple(merged.get(key, "").split())

    def one(key: str) -> str | None:
        return merged.get(key, "").strip() or None

    no_index = (one("no-index") or "").lower() in ("1", "true", "yes", "on")
    return PipSources(
        index_url=one("index-url"),
        extra_index_urls=many("extra-index-url"),
        find_links=many("find-links"),
        no_index=no_index,
        constraints=many("constraint"),
        cert=one("cert"),
        proxy=one("proxy"),
        timeout=one("timeout") or one("default-timeout"),
        trusted_hosts=many("trusted-host"),
        files=tuple(read),
    )

"""The toolkit environments of one run, as the cell pipeline sees them.

:class:`Toolkits` answers the pipeline's questions about environments without it knowing how
they are built: provision the ones a run needs (before its cells, with progress), the
interpreter of a usable environment (or why there is none), an environment's identity (part of
every cached conversion's key), the torch interpreter for the exporter, and a description of
each for the matrix. Every environment it hands out is held for the rest of the process
(:mod:`~pytest_rknn.envs.in_use`): no rebuild replaces it under the run, so the identity it
read is the identity of what converts every later cell. The plugin makes it through its
``pytest_rknn_make_toolkits`` hook, so a test of the protocol and fault handling can put a fake
toolkit in its place.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_rknn.envs.base import EnvState, ManagedEnv
from pytest_rknn.envs.in_use import WAIT_FOR_BUILD, UseLock
from pytest_rknn.envs.provisioning import exporter_env, get_envs
from pytest_rknn.envs.recipes import ToolkitRequest
from pytest_rknn.envs.toolkit import ToolkitEnv
from pytest_rknn.variants.torch_export import find_torch_python


class Toolkits:
    """The run's toolkit environments under one root (``None``: the default root)."""

    def __init__(self, requests: Iterable[ToolkitRequest], root: Path | None) -> None:
        self.requests = {r.version: r for r in requests}
        self.root = root
        self._envs: dict[str, ToolkitEnv] = {}
        self._identities: dict[str, dict[str, Any]] = {}
        self._holds: dict[str, UseLock] = {}
        self.described: list[dict[str, Any]] = []

    def request(self, version: str) -> ToolkitRequest:
        return self.requests.get(version) or ToolkitRequest(version)

    def provision(self, versions: Iterable[str], exporter: bool) -> list[ManagedEnv]:
        """Create or verify the environments of ``versions`` (and the exporter's) now."""
        requests = [self.request(v) for v in dict.fromkeys(versions)]
        envs = get_envs(requests, root=self.root, create=True, exporter=exporter)
        for env in envs:
            if isinstance(env, ToolkitEnv):
                self._envs[env.version] = env
        self.described = [env.describe() for env in envs]
        return envs

    def env(self, version: str, create: bool = False) -> ToolkitEnv:
        """The environment of ``version``; with ``create``, built if missing or stale."""
        env = self._envs.get(version)
        if env is None or (create and env.verify() != EnvState.OK):
            hold = self._holds.pop(version, None)
            if hold is not None:  # our own hold must not keep its repair out
                hold.release()
                self._identities.pop(version, None)
            (env,) = get_envs([self.request(version)], root=self.root, create=create)
            assert isinstance(env, ToolkitEnv)
            self._envs[version] = env
        return env

    def python(self, version: str) -> tuple[Path | None, str | None]:
        """The interpreter of a usable environment, or None and why it is not usable."""
        env = self.env(version, create=True)
        why = self._held(env)
        if why is not None:
            return None, why
        return env.python, None

    def _held(self, env: ManagedEnv) -> str | None:
        """Hold ``env`` for this run (a rebuild waits until the run ends; a rebuild under way
        is waited for), then verify it; why it is not usable, or None."""
        hold = self._holds.get(env.label)
        if hold is None:
            hold = UseLock(env.use_path)
            if not hold.acquire():
                return (
                    f"{env.kind} {env.label} environment is being rebuilt by another process "
                    f"and was not done within {WAIT_FOR_BUILD:.0f} s: run again when it is"
                )
            self._holds[env.label] = hold
        state = env.verify()
        if state != EnvState.OK:
            return f"{env.kind} {env.label} environment is {state.value}: {env.reason}"
        return None

    def identity(self, version: str) -> dict[str, Any] | None:
        """The identity of a usable environment (None when it is not usable); read once per
        process, after the environment is held: no rebuild changes it under the run."""
        if version not in self._identities:
            env = self.env(version)
            if self._held(env) is not None:
                return None
            self._identities[version] = env.identity()
        return self._identities[version]

    def worker_env(self, version: str) -> dict[str, str]:
        """Variables a worker of ``version`` needs beyond the allow-listed host ones."""
        return {}

    def torch_python(self) -> Path | None:
        """Who runs the torch exporter: ``$PYTEST_RKNN_TORCH_PYTHON``, else the exporter
        environment, else a toolkit environment's torch (no onnxscript: ``torchscript`` only).
        """
        named = find_torch_python()
        if named is not None:
            return named
        exporter = exporter_env(self.root)
        if exporter.usable and self._held(exporter) is None:
            return exporter.python
        for version in self.requests:
            env = self.env(version)
            if self._held(env) is None:
                return env.python
        return None

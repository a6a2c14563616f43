"""Environments the suite builds for itself: one per toolkit version, and the torch exporter's.

``base`` (what every managed environment shares), ``toolkit`` and ``exporter`` (the two kinds),
``recipes`` (which versions exist and what each needs), ``installers`` (uv with one shared
hard-linked cache, or pip), ``pipconf`` (pip's configured sources, handed to uv), ``install``
(running installer steps, their failures in one line), ``slots`` (machine-wide smoke slots),
``smoke`` (the conversion that proves a toolkit environment) and ``provisioning`` (build them).
"""

from pytest_rknn.envs.base import (
    ENVS_ENV,
    REBUILT_AUTOMATICALLY,
    EnvState,
    ManagedEnv,
    default_root,
)
from pytest_rknn.envs.exporter import ExporterEnv
from pytest_rknn.envs.provisioning import (
    EnvError,
    check_disk,
    exporter_env,
    get_envs,
    provision,
)
from pytest_rknn.envs.toolkit import ToolkitEnv

__all__ = [
    "ENVS_ENV",
    "EnvError",
    "EnvState",
    "ExporterEnv",
    "ManagedEnv",
    "REBUILT_AUTOMATICALLY",
    "ToolkitEnv",
    "check_disk",
    "default_root",
    "exporter_env",
    "get_envs",
    "provision",
]

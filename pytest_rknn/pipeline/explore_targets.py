"""The items of ``--rknn-explore``: one (platform, toolkit, quant) target each.

A module of its own so that collecting them imports nothing of the search
(:mod:`~pytest_rknn.pipeline.explore`, hypothesis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_rknn.settings import Settings


@dataclass(frozen=True)
class ExploreTarget:
    platform: str
    toolkit: str
    quant: str

    @property
    def id(self) -> str:
        return f"{self.platform}-{self.toolkit}-{self.quant}"


def explore_targets(settings: Settings) -> list[ExploreTarget]:
    return [
        ExploreTarget(platform, toolkit, quant)
        for toolkit in settings.toolkit_names
        for platform in settings.platforms
        for quant in settings.quant
    ]
